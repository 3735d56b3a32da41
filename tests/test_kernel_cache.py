"""The on-disk cache of NVRTC-built kernels (runtime/kernel_cache.py): a second build of the
same source loads the stored binary instead of compiling; another source or option is
another entry. Keys need no GPU; building needs CUDA (TPA_TEST_DEVICE=cuda)."""

import pytest
import torch

from test_runtime_sink import GPU
from tpa_compress.runtime import kernel_cache

SRC = r"""
extern "C" __global__ void add_one(float* p, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] += 1.0f;
}
"""


def test_keys_follow_source_name_target_and_options(monkeypatch, tmp_path):
    k = kernel_cache.key(SRC, "add_one", "90", ("-std=c++17",))
    assert k == kernel_cache.key(SRC, "add_one", "90", ("-std=c++17",))
    assert (
        len(
            {
                k,
                kernel_cache.key(SRC + " ", "add_one", "90", ("-std=c++17",)),
                kernel_cache.key(SRC, "add_one", "90a", ("-std=c++17",)),
                kernel_cache.key(SRC, "add_one", "90", ()),
            }
        )
        == 4
    )
    monkeypatch.setenv("TPA_KERNEL_CACHE", str(tmp_path))
    assert kernel_cache.cache_dir() == tmp_path
    monkeypatch.setenv("TPA_KERNEL_CACHE", "0")
    assert kernel_cache.cache_dir() is None


def test_keys_follow_included_headers(tmp_path):
    """The key covers the text of every header the source includes from the include dirs,
    followed through the headers (an edit to one rebuilds), and not what it does not include."""
    (tmp_path / "a.cuh").write_text('#include "b.cuh"\n#include <cuda_fp16.h>\n')
    (tmp_path / "b.cuh").write_text('#include "a.cuh"\n__device__ float one() { return 1.f; }\n')
    (tmp_path / "c.cuh").write_text("unused\n")
    src = '#include "a.cuh"\n#include "missing.cuh"\n' + SRC
    found = kernel_cache.headers(src, (tmp_path,))
    assert [h.split("\0")[0] for h in found] == ["a.cuh", "b.cuh"]
    before = kernel_cache.key(src, "add_one", "90", (), found)
    (tmp_path / "c.cuh").write_text("changed\n")
    assert kernel_cache.key(src, "add_one", "90", (), kernel_cache.headers(src, (tmp_path,))) == before
    (tmp_path / "b.cuh").write_text('#include "a.cuh"\n__device__ float one() { return 2.f; }\n')
    assert kernel_cache.key(src, "add_one", "90", (), kernel_cache.headers(src, (tmp_path,))) != before
    assert kernel_cache.key(src, "add_one", "90", ("-DRK=64",), found) != before


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
def test_second_build_loads_from_disk(monkeypatch, tmp_path):
    import torch.cuda._utils as cu

    monkeypatch.setenv("TPA_KERNEL_CACHE", str(tmp_path))
    x = torch.zeros(300, device="cuda")
    kernel_cache.compile_kernel(SRC, "add_one")(grid=(2, 1, 1), block=(256, 1, 1), args=[x, 300])
    assert len(list(tmp_path.glob("*.bin"))) == 1

    def no_compiler(*a, **k):
        raise AssertionError("compiled again")

    monkeypatch.setattr(cu, "_nvrtc_compile", no_compiler)
    kernel_cache.compile_kernel(SRC, "add_one")(grid=(2, 1, 1), block=(256, 1, 1), args=[x, 300])
    torch.cuda.synchronize()
    assert torch.equal(x, torch.full_like(x, 2.0))
