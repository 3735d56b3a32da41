"""The speed/memory changes of convert keep its numbers: a layer subset of calibration
(with the early stop) equals the full pass on those layers, the written folder is the
same whether the original tensors come from the model or the checkpoint, and the thread
count does not change the bytes."""

import hashlib

import pytest
import torch

from tiny import recipe, tiny_ckpt
from tpa_compress.calibrate import collect_stats
from tpa_compress.convert import convert, cpu_threads, output_tensors, write_output
from tpa_compress.errors import TPAError
from tpa_compress.models import build_model

SVD = [
    {
        "select": {"layers": "1,3"},
        "k": {"method": "activation_svd", "rank": 12},
        "v": {"method": "activation_svd", "rank": 8},
    }
]


def test_layer_subset_stats_equal_full_pass():
    ck = tiny_ckpt("gemma3")
    model = build_model(ck)
    win = torch.randint(3, 90, (5, 32), generator=torch.Generator().manual_seed(2))
    full = collect_stats(model, win, sample_rows=50)
    calls = []
    block3 = model.layers[3].forward
    model.layers[3].forward = lambda *a, **k: calls.append(1) or block3(*a, **k)
    part = collect_stats(model, win, sample_rows=50, layers=[3, 1])
    assert calls == []  # stopped at layer 3's input: block 3 never ran
    held = collect_stats(model, win, sample_rows=50, layers=[1], moments=False)
    for i in range(ck.config.num_layers):
        if i not in (1, 3):
            assert part[i] is None
            continue
        assert part[i].n == full[i].n
        assert torch.equal(part[i].sum_x, full[i].sum_x) and torch.equal(part[i].xtx, full[i].xtx)
        assert torch.equal(part[i].sample, full[i].sample)
    assert held[1].xtx is None and held[1].sum_x is None and torch.equal(held[1].sample, full[1].sample)


def test_output_from_model_equals_output_from_checkpoint(tmp_path):
    ck = tiny_ckpt("gemma3")
    model = build_model(ck)
    res, t = convert(ck, model, recipe(SVD), eval_model=False, log=lambda m: None)
    a = output_tensors(ck, t, res.layouts)
    b = output_tensors(ck, t, res.layouts, model)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k] is not b[k] for k in a)  # b really took the model's tensors
    write_output(tmp_path / "a", ck, recipe(SVD), res, t, force=False)
    write_output(tmp_path / "b", ck, recipe(SVD), res, t, force=False, model=model)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_thread_count_does_not_change_the_bytes(tmp_path):
    old = torch.get_num_threads()
    digests = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            ck = tiny_ckpt("llama")
            res, t = convert(ck, build_model(ck), recipe(SVD), eval_model=True, log=lambda m: None)
            write_output(tmp_path / f"o{n}", ck, recipe(SVD), res, t, force=False)
            digests.append(
                (
                    hashlib.sha256((tmp_path / f"o{n}" / "model.safetensors").read_bytes()).hexdigest(),
                    {k: p["after"]["perplexity"] for k, p in res.perplexity.items()},
                )
            )
    finally:
        torch.set_num_threads(old)
    assert digests[0] == digests[1]


def test_cpu_threads():
    import os

    assert 1 <= cpu_threads("auto") <= (os.cpu_count() or 1)
    assert cpu_threads("3") == 3 and cpu_threads(2) == 2
    for bad in ("0", "-1", "many"):
        with pytest.raises(TPAError, match=f"--threads '{bad}' is not valid; valid: auto or a positive integer"):
            cpu_threads(bad)
