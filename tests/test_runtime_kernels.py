"""The Triton decode-attention kernels (runtime/kernels.py) vs the torch tile path, and
the runner's kernel decode path vs the reference forward.

Runs on CUDA (pytest --device cuda, the GPU machine) or, where triton is installed but
there is no GPU, in triton's CPU interpreter; skipped where triton is absent (the CPU
venv: the runner then never takes this path).
"""

import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_runtime_sink import DEVICE, GPU, check_steps, prompts_of, runner_for, sink_model
from tiny import orthonormal_blocks, random_state, tiny_config
from tpa_compress.layout import Component, LayerLayout
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model
from tpa_compress.runtime import attention as A
from tpa_compress.runtime import cuda_decode, kernels
from tpa_compress.runtime.cache import dequantize_kv, quantize

pytestmark = [pytest.mark.skipif(not kernels.available(), reason="triton is not installed"), pytest.mark.interpreter]

KINDS = [("latent", "latent"), ("latent", "full"), ("full", "latent"), ("full", "full")]
# The decode-path tests' model off the GPU: two layers (Gemma 3: one sliding, one global),
# the same kernel paths as six layers take at a third of the interpreter's time; the GPU
# runs all six.
INTERPRETED = {} if GPU else {"num_layers": 2}


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("kk,vk", KINDS)
@pytest.mark.parametrize("family,layer,sink", [("gemma3", 5, 1), ("gemma3", 0, 2), ("llama", 3, 0)])
def test_kernel_equals_torch_tiles(family, layer, sink, kk, vk, dtype):
    kernel_vs_tiles(family, layer, sink, kk, vk, dtype)


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("kk,vk", KINDS)
@pytest.mark.parametrize("quant", ["fp8", "int8"])
def test_kernel_one_byte_cache_equals_torch_tiles(quant, kk, vk, dtype):
    """fp8 / int8 cache entries dequantized on load = the torch tiles over the
    dequantized entries."""
    kernel_vs_tiles("gemma3", 5, 1, kk, vk, dtype, quant)


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("kk", ["latent", "full"])
@pytest.mark.parametrize("family,layer,sink", [("gemma3", 5, 1), ("gemma3", 0, 2), ("llama", 3, 0)])
def test_kernel_latent_v_up_projected_per_chunk(family, layer, sink, kk, dtype):
    kernel_vs_tiles(family, layer, sink, kk, "latent", dtype, latent_combine=False)


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("rv,rv_block", [(20, 32), (20, 16), (40, 16), (48, 16), (32, 32)])
def test_kernel_latent_combine_in_slices(rv, rv_block, dtype):
    """The combine merges a latent V in slices of rv_block columns (the last one partial
    at 20 and 40, one whole slice at 32), two chunk states per load; each equals the torch
    tiles."""
    kernel_vs_tiles("gemma3", 5, 1, "latent", "latent", dtype, rv=rv, combine_rv_block=rv_block)


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("ds", [16, 32])
@pytest.mark.parametrize("family,layer,sink", [("gemma3", 5, 1), ("llama", 3, 0)])
def test_kernel_latent_k_slices_in_a_loop(family, layer, sink, ds, dtype):
    """ds_dynamic: the latent K rebuilt slice by slice in a (not unrolled) loop."""
    kernel_vs_tiles(family, layer, sink, "latent", "latent", dtype, ds_dynamic=True, ds=ds)


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize(
    "layer,sink,ds_dynamic,orthonormal",
    [(5, 1, False, "blocks"), (0, 2, True, "blocks"), (5, 1, False, "blocks, bias off the span")],
)
def test_kernel_norm_from_latent(layer, sink, ds_dynamic, orthonormal, dtype):
    """A latent K whose per-head basis is orthonormal (per_head_svd's blocks here): the
    kernel takes the QK-norm's sum of squares from z, and matches the torch tiles; with
    the bias off the basis' span (activation_svd's form) the shift e is 0 and skipped."""
    kern = kernel_vs_tiles(
        "gemma3", layer, sink, "latent", "latent", dtype, orthonormal=orthonormal, ds_dynamic=ds_dynamic
    )
    assert kern.norm_z
    if dtype == torch.float32:  # in bf16 the rounded U^T b is no longer 0: e stays, exact anyway
        assert kern.has_e == ("off" not in orthonormal)


@pytest.mark.parametrize("quant", ["fp8", "int8"])
def test_kernel_norm_from_latent_one_byte_cache(quant):
    """The norm from z also over one-byte latents (dequantized on load)."""
    dtype = torch.bfloat16 if GPU else torch.float32
    kern = kernel_vs_tiles("gemma3", 5, 1, "latent", "latent", dtype, quant, orthonormal="blocks")
    assert kern.norm_z


def test_norm_from_latent_refuses_a_non_diagonal_gram():
    u = torch.randn(64, 24)
    assert kernels.norm_from_latent(u, torch.zeros(64), torch.ones(64), 1, 64) is None
    q = torch.linalg.qr(u)[0]
    gz, bb, uw, bw = kernels.norm_from_latent(q, torch.ones(64), torch.full((64,), 2.0), 1, 64)
    z = torch.randn(5, 24)
    want = ((z @ q.T + 1) ** 2).sum(-1)
    got = (gz[0, 0] * (z + gz[0, 1]) ** 2).sum(-1) + bb[0]
    assert torch.allclose(got, want, rtol=1e-4) and torch.allclose(uw, 2 * q)
    assert torch.allclose(bw, torch.full((64,), 2.0))


def kernel_vs_tiles(
    family,
    layer,
    sink,
    kk,
    vk,
    dtype,
    quant=None,
    orthonormal=False,
    d=64,
    rk=24,
    rv=20,
    heads=4,
    t=150,
    k_scale=False,
    wslot=None,
    backend="triton",
    cuda_build=cuda_decode.CudaBuild(),
    pdl=None,
    **tuning,
):
    """Head dim 64, K rank 24 and V rank 20 (padded inside), 2 query heads per KV head;
    ring positions with pads, empty slots, sinks, a window (gemma3 layer 0), and more
    keys than one chunk (several partial states to combine); t cache slots (from 700 the
    queries follow every slot of sequences 0 and 1, so every tile counts). orthonormal: K's up-
    projection is per-head orthonormal blocks (per_head_svd's form), rk / 2 columns each.
    wslot: a decode step's write: a first call sees the cache without it, then column wslot
    gets a new, visible, heavy entry and the call that passes wslot must read it (and equal the
    same call without wslot bit for bit). backend, cuda_build, pdl: DecodeAttention's; the
    other keywords: TritonTuning fields (over block_t 32 and combine_block 2)."""
    cfg = tiny_config(family, head_dim=d, num_kv_heads=2, num_heads=heads)
    model = build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 1)), None, "", "m"))
    attn = model.layers[layer].self_attn
    g = torch.Generator().manual_seed(0)
    comp = {"k": Component(kk, 2, d, rk), "v": Component(vk, 2, d, rv)}
    for name in ("k", "v"):
        if comp[name].kind == "latent":
            proj = make_proj(cfg.hidden_size, comp[name], sink)
            with torch.no_grad():
                for p in proj.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            setattr(attn, f"{name}_proj", proj)
    if orthonormal:
        up = orthonormal_blocks(2, d, rk, g)
        with torch.no_grad():
            attn.k_proj.up.weight.copy_(up)
            if "off" in orthonormal:
                b = attn.k_proj.bias
                b.copy_(b - up @ (up.T @ b))
    lay = LayerLayout(comp["k"], comp["v"], attn.window, sink=sink)
    sink = A.sink_of(lay)
    attn = attn.to(DEVICE, dtype)
    b = 3
    kc = torch.randn(b, t, lay.k.values_per_token, generator=g).to(DEVICE, dtype)
    vc = torch.randn(b, t, lay.v.values_per_token, generator=g).to(DEVICE, dtype)
    scale = None
    if quant:  # the kernel reads the one-byte entries, the reference their dequantized values
        nk = kc.shape[-1]
        qz, scale = quantize(torch.cat([kc, vc], -1), quant, nk)
        kc, vc = qz[..., :nk], qz[..., nk:]
    k_pos = torch.stack([torch.arange(t) - 7, torch.arange(t) + 40, torch.arange(t)]).int()
    k_pos[2, 100:] = 2**30  # never written
    k_pos = k_pos.to(DEVICE)
    q_pos = torch.tensor([[120], [160], [99]] if t < 700 else [[t], [t + 45], [99]], device=DEVICE)
    q = torch.randn(b, heads, 1, d, generator=g).to(DEVICE, dtype)
    tile = None
    if sink:
        tile = tuple(torch.randn(b, 2, sink, d, generator=g).to(DEVICE, dtype) for _ in range(2))
    # merged over several blocks of chunk states (combine_block 2)
    tuning = kernels.TritonTuning(**{"block_t": 32, "combine_block": 2, **tuning})
    kern = kernels.DecodeAttention(attn, lay, sink, backend=backend, tuning=tuning, cuda_build=cuda_build, pdl=pdl)
    kern.n_sm = 16  # several chunks per (sequence, head) even here
    assert kern.chunks(b, t)[1] > 2
    # k_scale: each key's QK-norm factor handed in as a cache holding it would (latent K)
    ksc = A.key_scales(kc, A.key_scale_terms(attn)) if k_scale else None
    got = kern(q, kc, vc, k_pos, q_pos, tile, scale, k_scale=ksc)
    if wslot is not None:
        kc[:, wslot] = torch.randn(kc[:, wslot].shape, generator=g).to(DEVICE, dtype)
        vc[:, wslot] = 20 * torch.randn(vc[:, wslot].shape, generator=g).to(DEVICE, dtype)
        k_pos[:, wslot] = q_pos[:, 0].int()
        ksc = A.key_scales(kc, A.key_scale_terms(attn)) if k_scale else None
        got = kern(q, kc, vc, k_pos, q_pos, tile, scale, k_scale=ksc, wslot=torch.tensor([wslot], device=DEVICE))
        assert torch.equal(got, kern(q, kc, vc, k_pos, q_pos, tile, scale, k_scale=ksc))
    if quant:
        kc, vc = dequantize_kv(kc, vc, scale, dtype)
    ref_attn = attn if dtype == torch.float32 else attn.float()
    with torch.no_grad():
        ref = A.attend_tiles(
            ref_attn,
            lay,
            q.float(),
            q_pos,
            [(kc.float(), vc.float(), k_pos)],
            sink=None if tile is None else tuple(x.float() for x in tile),
        )
    ref = ref.transpose(1, 2).reshape(b, 1, -1)
    tol = 2e-4 if dtype == torch.float32 else 0.03 * ref.abs().max().item()
    assert (got.float() - ref).abs().max().item() < tol
    return kern


CASES = [
    ("gemma3", "latent_kv", 2),
    ("gemma3", "latent_k_only", 0),
    ("llama", "latent_kv", 1),
    ("llama", "latent_k_only", 2),
    ("gemma3", "latent_v_only", 1),
    ("gemma3", "original", 0),
]


@pytest.mark.parametrize("family,kind,sink", CASES)
def test_kernel_decode_path_equals_reference(family, kind, sink):
    model = sink_model(family, kind, sink, **INTERPRETED)
    prompts = prompts_of([13, 1, 20])
    r = runner_for(model, prompts, 10, attention="cuda")
    assert sorted(r.kernels) == list(range(model.cfg.num_layers))  # every layer takes the kernel path
    check_steps(model, prompts, 10, r)


@pytest.mark.parametrize("options", [dict(latent_combine=False), dict(block_t=16, num_warps=2, per_sm=1)])
@pytest.mark.parametrize("family,kind,sink", [("gemma3", "latent_kv", 2), ("llama", "latent_kv", 1)])
def test_kernel_decode_path_with_other_tuning(family, kind, sink, options):
    """Triton tuning through the runner (DecodeOptions.tuning): the per-chunk V
    up-projection, another tile shape (a 1-token prompt: position 0 sees only the sink)."""
    model = sink_model(family, kind, sink, **INTERPRETED)
    prompts = prompts_of([13, 1, 20])
    tuning = kernels.TritonTuning(**options)
    r = runner_for(model, prompts, 10, attention="cuda", tuning=tuning)
    assert len(r.kernels) == model.cfg.num_layers
    assert all(k.tuning == tuning for k in r.kernels.values())
    check_steps(model, prompts, 10, r)


def test_chunks_fill_one_wave():
    """At most per_sm programs per SM (H100: 132 SMs) and every key in exactly one chunk,
    for batches 1..64 and cache sizes 1..32K: rounding the chunk count up gave batch 16
    272 programs for 264 slots, a second wave that cost ~1.7x."""
    model = sink_model("gemma3", "latent_kv", 1)
    attn = model.layers[5].self_attn
    kern = kernels.DecodeAttention(attn, LayerLayout(*(Component("latent", 2, 16, 8),) * 2, None, sink=1), 1)
    kern.n_sm = 132
    for b in (1, 2, 3, 8, 16, 31, 32, 33, 64):
        for t in (1, 31, 32, 512, 4096, 32768):
            chunk, n = kern.chunks(b, t)
            assert chunk % kern.tuning.block_t == 0 and (n - 1) * chunk < t <= n * chunk
            slots = kern.tuning.per_sm * kern.n_sm
            assert n * b * kern.kv <= max(slots, b * kern.kv)  # one wave (or one chunk each)
            if t >= 32768 and b * kern.kv <= slots // 2:
                assert n * b * kern.kv > slots // 2  # and the GPU is not left half idle


@pytest.mark.parametrize("family,sink,entries", [("gemma3", 1, False), ("gemma3", 0, False), ("gemma3", 1, True)])
def test_kernel_decode_path_norm_from_latent(family, sink, entries):
    """Latent K with per-head orthonormal blocks (per_head_svd's form; 2 KV heads x 16,
    rank 12): the runner's kernels take the QK-norm from z, and decode still equals the
    reference forward. entries: the Triton entries kernel writes z and its norm factors."""
    model = sink_model(family, "latent_kv", sink, **INTERPRETED)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in model.layers:
            up = blk.self_attn.k_proj.up.weight  # (2 * 16, 12)
            up.copy_(orthonormal_blocks(2, 16, 12, g).to(up.dtype))
    prompts = prompts_of([13, 1, 20])
    r = runner_for(model, prompts, 10, attention="cuda", entries="kernel" if entries else None)
    assert len(r.kernels) == model.cfg.num_layers and all(k.norm_z for k in r.kernels.values())
    if entries:
        assert len(r.entry_kernels) == model.cfg.num_layers and all(k.k_scale for k in r.entry_kernels.values())
    check_steps(model, prompts, 10, r)


def test_cuda_kernel_choice_and_sources(monkeypatch):
    """Which CUDA decode kernel a layer takes (wg on Hopper only, warp elsewhere, tile for V
    ranks above 128 the wg kernel's shared memory cannot hold), and that the wg kernel's buffers
    fit a Hopper program's shared memory at the largest ranks it serves (tests/test_cuda_sources.py:
    their sources). CPU: nothing is compiled (tests/test_cuda_decode.py runs them on the GPU)."""
    build = cuda_decode.CudaBuild()  # kernel "wg", the default
    monkeypatch.setattr(cuda_decode, "hopper", lambda *a: True)
    assert [cuda_decode.kind_for(rv, 128, build) for rv in (16, 96, 128, 256)] == ["wg", "wg", "wg", "tile"]
    # V above 128 where the buffers fit (K 112 with V 160, K 64 with V 256), else tile
    shapes = ((112, 160), (128, 144), (96, 192), (96, 208), (64, 256))
    assert [cuda_decode.kind_for(rv, rk, build) for rk, rv in shapes] == ["wg", "tile", "wg", "tile", "wg"]
    assert cuda_decode.block_for(128, 128, 4, 100, build) == 128
    # the other builds: "warp" wherever V's rank is at most 128, "tile" everywhere
    assert [cuda_decode.kind_for(rv, 128, cuda_decode.CudaBuild(kernel="warp")) for rv in (96, 256)] == ["warp", "tile"]
    assert cuda_decode.kind_for(96, 128, cuda_decode.CudaBuild(kernel="tile")) == "tile"
    monkeypatch.setattr(cuda_decode, "hopper", lambda *a: False)
    assert cuda_decode.kind_for(128, 128, build) == "warp"
    assert cuda_decode.smem_bytes(128, 128, 8, 128, 8, "wg") <= 227 * 1024


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc: the GPU machine's tests build with NVRTC")
@pytest.mark.parametrize("kind,rk,rv", [("wg", 96, 160), ("warp", 128, 128), ("tile", 128, 256)])
def test_cuda_kernel_sources_compile(kind, rk, rv, tmp_path):
    """Each CUDA kernel, its headers from runtime/cuda/ and its sizes as -D options, compiles
    for Hopper with nvcc where this machine has it (no GPU needed): an edit to runtime/cuda/ is
    checked before a GPU runs it."""
    wg = kind == "wg"
    opts = cuda_decode.build_options(rk, rv, 4, 1, 128, 8, kind, 4, False, wg, (rk + rv, rk + rv) if wg else (0, 0))
    f = tmp_path / f"{kind}.cu"
    f.write_text(cuda_decode.source(kind))  # (elsewhere than its folder: the headers come by -I)
    out = subprocess.run(
        ["nvcc", *opts, f"-I{cuda_decode.CUDA_DIR}", f"-arch=sm_90{'a' if wg else ''}", "-cubin", str(f)]
        + ["-o", str(tmp_path / "k.cubin")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("rk,kv", [(128, 1), (64, 2)])
def test_wg_images_are_what_the_prologue_wrote(rk, kv):
    """wg_images (vectorized) equals the shared memory a prologue that copies piece by
    piece would build, replayed here copy by copy from the kernel's index expressions (U: thread = dim
    row, 16-byte pieces; the bias block; the pair tables)."""
    g = torch.Generator().manual_seed(0)
    d = 256
    up = (torch.randn(kv * d, rk, generator=g) * 0.2).to(torch.bfloat16)
    bias = torch.randn(kv * d, generator=g)
    invf = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    rscale = 8.0
    img, tab = cuda_decode.wg_images(up, bias, invf, rscale, kv)
    sbou = (rk // 8 + 2) * 128
    # the kernel's row order: dims 0-63, 128-191 (a RoPE pair's halves in one 128-row half), 64-127, 192-255
    rows = [*range(64), *range(128, 192), *range(64, 128), *range(192, 256)]
    assert cuda_decode.WG_ROWS.tolist() == rows
    idx = torch.tensor([h * d + i for h in range(kv) for i in rows])
    up, bias = up[idx], bias[idx]
    raw = up.view(torch.int16).numpy().astype("<i2").tobytes()
    for h in range(kv):
        want = bytearray(32 * sbou)
        for tid in range(256):
            # cp16a(su + (tid >> 3) * SBOU + kb8 * 128 + (tid & 7) * 16, ku + (h D + tid) RK + kb8 8)
            for kb8 in range(rk // 8):
                dst = (tid >> 3) * sbou + kb8 * 128 + (tid & 7) * 16
                src = ((h * d + tid) * rk + kb8 * 8) * 2
                want[dst : dst + 16] = raw[src : src + 16]
            bf = bias[h * d + tid].item()
            hi = torch.tensor(bf).to(torch.bfloat16)
            lo = torch.tensor(bf - hi.float().item()).to(torch.bfloat16)
            row = (tid >> 3) * sbou + (rk // 8) * 128 + (tid & 7) * 16
            want[row : row + 4] = hi.view(torch.int16).numpy().tobytes() + lo.view(torch.int16).numpy().tobytes()
        assert bytes(img[h].numpy()) == bytes(want)
    inv = torch.tensor(1.0 / rscale, dtype=torch.float32)
    h2 = lambda a, b: torch.tensor([a, b], dtype=torch.float32).to(torch.float16).numpy().tobytes()  # noqa: E731
    want = bytearray()
    for i in range(64):  # pp[tid] = (f0, f1, packh(cos 8 f0, cos 8 f1), packh(sin .., sin ..))
        f0, f1 = (invf[2 * i] * inv).item(), (invf[2 * i + 1] * inv).item()
        want += struct.pack("<ff", f0, f1) + h2(math.cos(8 * f0), math.cos(8 * f1))
        want += h2(math.sin(8 * f0), math.sin(8 * f1))
    for o in range(8):  # to[o][pr2] = (packh(cos o f0, cos o f1), packh(sin .., sin ..)); rows of 68
        for pr2 in range(68):
            if pr2 >= 64:
                want += bytes(8)
                continue
            a0 = ((o * invf[2 * pr2]) * inv).item()
            a1 = ((o * invf[2 * pr2 + 1]) * inv).item()
            want += h2(math.cos(a0), math.cos(a1)) + h2(math.sin(a0), math.sin(a1))
    got = bytes(tab.numpy())
    assert len(got) == len(want) == 64 * 16 + 8 * 68 * 8
    # the frequencies exact; the f16 cos / sin within one rounding step (fp32 torch vs double here)
    gi, wi = torch.frombuffer(bytearray(got), dtype=torch.int32), torch.frombuffer(bytearray(want), dtype=torch.int32)
    assert torch.equal(gi[:256].view(64, 4)[:, :2], wi[:256].view(64, 4)[:, :2])
    half = lambda w: torch.cat([w[:256].view(64, 4)[:, 2:].reshape(-1), w[256:]]).view(torch.float16).float()  # noqa: E731
    assert (half(gi) - half(wi)).abs().max() <= 1e-3


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize(
    "kk,vk,ortho",
    [
        ("full", "full", False),
        ("latent", "latent", True),
        ("latent", "full", True),
        ("full", "latent", False),
        ("latent", "latent", False),
    ],
)
@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_entries_kernel_equals_compiled_entries(family, kk, vk, ortho, dtype):
    """One Triton kernel after the Q/K/V matmul (entries_kernel.py) gives the q, the cache row
    and a latent K's norm factors of `attention.entries_written` (the compiled path it
    replaces), at the step's slot and nowhere else; a latent K whose norm factors need U
    (not the "diag" form) is not served."""
    from tpa_compress.runtime.entries_kernel import EntriesKernel

    d, b, cap, slot = 64, 3, 9, 5
    cfg = tiny_config(family, head_dim=d, num_kv_heads=2, num_heads=4)
    model = build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 1)), None, "", "m"))
    attn = model.layers[3].self_attn
    g = torch.Generator().manual_seed(0)
    comp = {"k": Component(kk, 2, d, 24), "v": Component(vk, 2, d, 20)}
    for name in ("k", "v"):
        if comp[name].kind == "latent":
            proj = make_proj(cfg.hidden_size, comp[name], 0)
            with torch.no_grad():
                for p in proj.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            setattr(attn, f"{name}_proj", proj)
    if ortho:
        with torch.no_grad():
            attn.k_proj.up.weight.copy_(orthonormal_blocks(2, d, 24, g))
    lay = LayerLayout(comp["k"], comp["v"], attn.window, k_scale=kk == "latent" and attn.qk_norm)
    attn = attn.to(DEVICE, dtype)
    terms = A.key_scale_terms(attn) if lay.k_scale else None
    if not EntriesKernel.serves(attn, lay, dtype, terms):
        assert terms[0] == "up" and not ortho
        return
    w = A.fused_qkv_weight(attn, lay)
    x = torch.randn(b, 1, cfg.hidden_size, generator=g).to(DEVICE, dtype)
    cos, sin = model.rope(3, torch.tensor([[7], [30], [2]]), dtype)
    cos, sin = cos.to(DEVICE), sin.to(DEVICE)
    nkv = lay.k.values_per_token + lay.v.values_per_token
    bufs = [torch.zeros(b, cap, nkv, dtype=dtype, device=DEVICE) for _ in range(2)]
    ks = [torch.ones(b, cap, 2, device=DEVICE) if terms else None for _ in range(2)]
    slots = torch.tensor([slot], device=DEVICE)
    with torch.no_grad():
        want = A.entries_written(attn, lay, w, x, cos, sin, bufs[0], slots, ks[0], terms)
        got = EntriesKernel(attn, lay, terms)(x @ w.T, cos, sin, bufs[1], slots, ks[1])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert got.shape == want.shape == (b, 4, 1, d)
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=tol)
    assert torch.allclose(bufs[1].float(), bufs[0].float(), atol=tol, rtol=tol)
    assert bufs[1][:, slot].abs().amax() > 0 and bufs[1][:, torch.arange(cap) != slot].abs().amax() == 0
    if terms:
        assert torch.allclose(ks[1], ks[0], rtol=1e-5)
        assert not torch.equal(ks[1][:, slot], torch.ones(b, 2, device=DEVICE))


@pytest.mark.parametrize("n,k", [(640, 1024), (640, 2048), (1536, 640), (4096, 640), (7, 33)])
@pytest.mark.parametrize("rows", [1, 2])
def test_gemv_equals_torch_matmul(n, k, rows):
    """The decode step's matmul for a row or two (gemv.py) vs torch's, bf16 on the GPU;
    more rows than gemv.MAX_ROWS go to torch's."""
    from tpa_compress.runtime import gemv

    g = torch.Generator().manual_seed(n + k)
    dtype = torch.bfloat16 if GPU else torch.float32
    x = torch.randn(rows, 1, k, generator=g).to(DEVICE, dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(DEVICE, dtype)
    got = gemv.gemv(x, w)
    want = x.float() @ w.float().T
    assert got.shape == (rows, 1, n) and got.dtype == dtype
    assert (got.float() - want).abs().max() < (2e-2 if GPU else 1e-5)
    bn, k1, k2 = gemv.tiles(n, k, 132)
    assert bn * 132 <= max(n, 132) and k1 + k2 >= k > k1 - (k2 == 0)  # a wave covers the SMs; W's rows whole


@pytest.mark.parametrize("traced", [False, True])
def test_gemv_serves_few_rows_and_the_shapes_it_wins_on(monkeypatch, traced):
    """gemv.linear (a direct launch) and gemv.traced_linear (the custom op): the kernel for at
    most MAX_ROWS rows and W within MAX_N x MAX_K (where it measured faster than cuBLAS),
    torch's matmul for anything else."""
    from tpa_compress.runtime import gemv

    took = []
    monkeypatch.setattr(gemv, "gemv", lambda x, w: took.append(("op", w.shape)) or torch.nn.functional.linear(x, w))
    monkeypatch.setattr(
        gemv, "gemv_launch", lambda x, w: took.append(("launch", w.shape)) or torch.nn.functional.linear(x, w)
    )
    fn = gemv.traced_linear if traced else gemv.linear
    for rows, n, k, want in (
        (1, 640, 2048, True),
        (gemv.MAX_ROWS, 4096, 640, True),
        (gemv.MAX_ROWS + 1, 640, 64, False),
        (1, gemv.MAX_N + 1, 64, False),
        (1, 64, gemv.MAX_K + 1, False),
    ):
        took.clear()
        fn(torch.ones(rows, 1, k), torch.ones(n, k))
        assert took == ([("op" if traced else "launch", (n, k))] if want else []), (rows, n, k)


@pytest.mark.parametrize("family,kind", [("gemma3", "original"), ("llama", "latent_kv")])
def test_kernel_decode_path_with_gemv(family, kind):
    """Batch 1 and 2 (gemv.MAX_ROWS): the decode step's matmuls through gemv.py, the
    entries kernel after the Q/K/V one; greedy tokens and logits still equal the reference."""
    model = sink_model(family, kind, 0, layers=[] if kind == "original" else None, **INTERPRETED)
    for lengths in ([11], [13, 4]):
        prompts = prompts_of(lengths)
        r = runner_for(model, prompts, 8, attention="cuda", entries="kernel", gemv=True)
        assert r.mm is not torch.nn.functional.linear and len(r.entry_kernels) == model.cfg.num_layers
        check_steps(model, prompts, 8, r)


@pytest.mark.parametrize("gelu", [True, False])
@pytest.mark.parametrize("rows", [1, 2])
def test_gemv_with_the_gated_activation_in_its_prologue(gelu, rows):
    """The down projection straight from the gate|up output (gemv.glu_linear) = the
    activation, the product and the matmul done apart (gemv.torch_glu_linear)."""
    from tpa_compress.runtime import gemv

    g = torch.Generator().manual_seed(rows)
    dtype = torch.bfloat16 if GPU else torch.float32
    gu = (2 * torch.randn(rows, 1, 2 * 2048, generator=g)).to(DEVICE, dtype)
    w = (torch.randn(640, 2048, generator=g) / 2048**0.5).to(DEVICE, dtype)
    want = gemv.torch_glu_linear(gu, w, gelu)
    for got in (gemv.glu_linear(gu, w, gelu), gemv.traced_glu_linear(gu, w, gelu)):
        assert got.shape == want.shape == (rows, 1, 640)
        assert (got.float() - want.float()).abs().max() < (3e-2 if GPU else 1e-5)


def test_uncompiled_step_imports_no_torch_compile():
    """A batch-1 step with gemv and without torch.compile launches its kernels directly: a
    custom op's first call would import torch.compile's stack (seconds of a CUDA start-up)."""
    code = (
        "import sys\n"
        "import run_options\n"
        f"run_options.DEVICE, run_options.GPU = {DEVICE!r}, {GPU!r}\n"
        "from test_runtime_sink import prompts_of, runner_for, sink_model\n"
        "model = sink_model('gemma3', 'original', 0, layers=[], num_layers=2)\n"
        "r = runner_for(model, prompts_of([5]), 3, attention='cuda', entries='kernel', gemv=True)\n"
        "r.generate(prompts_of([5]), 3)\n"
        "print('torch._dynamo' in sys.modules, r.mm.__name__)\n"
    )
    here = Path(__file__).parent
    path = [str(here.parent), str(here), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    out = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["False", "linear"], out.stdout + out.stderr[-2000:]
