"""The Triton latent-K score kernel (runtime/kernels.py) vs the torch rebuild, and the
runner's fused decode path vs the reference forward.

Runs on CUDA (TPA_TEST_DEVICE=cuda, the GPU machine) or, where triton is installed but
there is no GPU, in triton's CPU interpreter; skipped where triton is absent (the CPU
venv: the runner then never takes this path).
"""
import pytest
import torch

from test_runtime_sink import DEVICE, GPU, check_steps, prompts_of, runner_for, sink_model
from tiny import random_state, tiny_config
from tpa_compress.layout import Component, LayerLayout
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model

from tpa_compress.runtime import attention as A
from tpa_compress.runtime import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="triton is not installed")


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if GPU else []))
@pytest.mark.parametrize("family,layer,sink", [("gemma3", 5, 1), ("gemma3", 0, 2), ("llama", 3, 0)])
def test_scores_equal_torch_rebuild(family, layer, sink, dtype):
    """Head dim 64, rank 24 (padded to 32 inside), 2 query heads per KV head; ring
    positions with pads, empty slots, sinks, and a window (gemma3 layer 0)."""
    cfg = tiny_config(family, head_dim=64, num_kv_heads=2, num_heads=4)
    model = build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 1)), None, "", "m"))
    attn = model.layers[layer].self_attn
    g = torch.Generator().manual_seed(0)
    c = Component("latent", 2, 64, 24)
    attn.k_proj = make_proj(cfg.hidden_size, c, sink)
    with torch.no_grad():
        for p in attn.k_proj.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    attn = attn.to(DEVICE, dtype)
    b, t = 3, 150
    kc = torch.randn(b, t, 24, generator=g).to(DEVICE, dtype)
    k_pos = torch.stack([torch.arange(t) - 7, torch.arange(t) + 40, torch.arange(t)]).int()
    k_pos[2, 100:] = 2**30  # never written
    k_pos = k_pos.to(DEVICE)
    q_pos = torch.tensor([[120], [160], [99]], device=DEVICE)
    q = torch.randn(b, 4, 1, 64, generator=g).to(DEVICE, dtype)
    got = kernels.LatentKScores(attn, sink)(q, kc, k_pos, q_pos)
    lay = LayerLayout(c, c, attn.window, sink=sink)
    base, scale = cfg.rope_base(layer), cfg.rope_scale(layer)
    with torch.no_grad():
        k = A.keys(attn, lay, kc.float(), k_pos, base, scale) if dtype == torch.float32 else \
            A.keys(attn.float(), lay, kc.float(), k_pos, base, scale)
    ref = (q.float().view(b, 2, 2, 64) @ k.float().transpose(-1, -2)) * attn.scale
    ok = A.allowed(q_pos, k_pos, attn.window, sink)[:, None]
    ref = ref.masked_fill(~ok, float("-inf"))
    assert torch.equal(torch.isinf(got), torch.isinf(ref))  # the same keys masked
    fin = ~torch.isinf(ref)
    assert fin.any(-1).all()
    tol = 1e-3 if dtype == torch.float32 else 0.05 * ref[fin].abs().max().item()
    assert (got[fin] - ref[fin]).abs().max().item() < tol


CASES = [("gemma3", "latent_kv", 2), ("gemma3", "latent_k_only", 0), ("llama", "latent_kv", 1),
         ("llama", "latent_k_only", 2)]


@pytest.mark.parametrize("family,kind,sink", CASES)
def test_fused_decode_path_equals_reference(family, kind, sink):
    model = sink_model(family, kind, sink)
    prompts = prompts_of([13, 1, 20])
    r = runner_for(model, prompts, 10, fused=True)
    assert sorted(r.kscores) == list(range(6))  # every layer takes the kernel path
    check_steps(model, prompts, 10, r)
