"""Exact sink tokens: the first `sink_tokens` positions of a converted layer keep the
original K/V, in the reference forward, in the saved folder and in the cache price."""

import pytest
import torch

from tiny import recipe, tiny_ckpt
from tpa_compress.calibrate import collect_stats
from tpa_compress.convert import convert, write_output
from tpa_compress.errors import TPAError
from tpa_compress.layout import Component, LayerLayout, cache_bytes
from tpa_compress.load import load_model
from tpa_compress.models import build_model

LOSSY = [{"select": "all", "k": {"method": "activation_svd", "rank": 4}, "v": {"method": "activation_svd", "rank": 4}}]


def _kv_at(model, ids):
    """Pre-norm K and V of layer 0 for `ids`, as the attention block computes them."""
    blk = model.layers[0]
    x = blk.input_layernorm(model.embed(ids))
    return blk.self_attn.k_proj(x), blk.self_attn.v_proj(x)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_sink_positions_exact_and_saved(tmp_path, family):
    ck = tiny_ckpt(family)
    orig = build_model(ck)
    conv = build_model(ck)
    res, tensors = convert(ck, conv, recipe(LOSSY, sink_tokens=1), eval_model=False, log=lambda m: None)
    assert all(lay.sink == 1 for lay in res.layouts)
    ids = torch.tensor([[2, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        (k0, v0), (k1, v1) = _kv_at(orig, ids), _kv_at(conv, ids)
    torch.testing.assert_close(k1[:, 0], k0[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v1[:, 0], v0[:, 0], rtol=1e-5, atol=1e-6)
    assert (k1[:, 1:] - k0[:, 1:]).abs().max() > 1e-3  # rank 4 of 32 is lossy elsewhere
    write_output(tmp_path / "out", ck, recipe(LOSSY, sink_tokens=1), res, tensors, force=False)
    back = build_model(load_model(tmp_path / "out"))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), conv(ids), rtol=1e-5, atol=1e-5)
    assert "model.layers.0.self_attn.k_proj.sink.weight" in tensors


def test_sink_zero_and_bad_values():
    ck = tiny_ckpt("gemma3")
    conv = build_model(ck)
    res, _ = convert(ck, conv, recipe(LOSSY, sink_tokens=0), eval_model=False, log=lambda m: None)
    assert all(lay.sink == 0 for lay in res.layouts)
    for bad in (-1, "one", True):
        with pytest.raises(TPAError, match="sink_tokens"):
            recipe(LOSSY, sink_tokens=bad)


def test_sink_priced_once_per_layer():
    full = Component("full", 2, 16)
    lat = Component("latent", 2, 16, 8)
    plain = LayerLayout(lat, full, None, "bf16")
    sunk = LayerLayout(lat, full, None, "bf16", sink=2)
    # exact K and V of the sink tokens (the full V too: no gather per step): 2 tokens x
    # (32 + 32) values x 2 bytes; a layer with nothing factorized has no sink buffer
    assert cache_bytes([sunk], 100) - cache_bytes([plain], 100) == 2 * 64 * 2
    assert LayerLayout.from_dict(sunk.to_dict()) == sunk
    assert LayerLayout(full, full, None, "bf16", sink=2).sink_bytes() == 0


def test_stats_skip_leading_positions():
    ck = tiny_ckpt("llama")
    model = build_model(ck)
    w = torch.randint(3, 90, (3, 10), generator=torch.Generator().manual_seed(0))
    a = collect_stats(model, w, skip=0)[0]
    b = collect_stats(model, w, skip=1)[0]
    assert a.n == 30 and b.n == 27
    with torch.no_grad():  # layer 0's input at position 0 depends on that token only
        x0 = model.layers[0].input_layernorm(model.embed(w[:, :1]))[:, 0].double()
    torch.testing.assert_close(a.sum_x - b.sum_x, x0.sum(0))
    torch.testing.assert_close(a.xtx - b.xtx, x0.T @ x0)
