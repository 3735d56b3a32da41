"""Qwen2.5-Coder-0.5B-Instruct (the embedded `qwen2.5-coder-0.5b`, Q/K/V biases, 2 KV heads)
on its real weights: the tokenizer equals transformers' Qwen2Tokenizer on the file's own
vocabulary and merges, Qwen2 adds no BOS, and exact conversions stay exact (the biases
survive identity K and a full-rank latent V with an exact sink token).
The forward pass vs transformers is in test_reference_real.py."""

import pytest
import torch

from tiny import recipe
from tpa_compress.convert import convert
from tpa_compress.data import default_eval_files, read_texts
from tpa_compress.errors import TPAError
from tpa_compress.load import load_model
from tpa_compress.load.default import split_model_path
from tpa_compress.models import build_model

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def qwen():
    try:
        path = split_model_path("qwen2.5-coder-0.5b")
    except TPAError as e:  # chunk packages not installed
        pytest.skip(str(e))
    return load_model(path)


def test_tokenizer_matches_transformers_and_adds_no_bos(qwen):
    transformers = pytest.importorskip("transformers")
    from tpa_compress.load.gguf_reader import GGUFFile

    r = GGUFFile(qwen.path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    ref = transformers.Qwen2Tokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    text = read_texts(default_eval_files())[:40000]
    samples = [text, "def f(x):\n    return x**2  # 中文 12345\r\n\n\t  café"]
    for s in samples:
        assert qwen.tokenizer.encode(s, add_bos=False) == ref(s, add_special_tokens=False)["input_ids"]
    assert qwen.tokenizer.add_bos is False  # Qwen2: no BOS; the eval windows start on text
    assert qwen.tokenizer.encode("hi") == qwen.tokenizer.encode("hi", add_bos=False)


def test_exact_conversion_keeps_the_biases(qwen):
    cfg = qwen.config
    assert (cfg.family, cfg.num_kv_heads, cfg.attention_bias) == ("qwen2", 2, True)
    model = build_model(qwen)
    ids = torch.tensor([qwen.tokenizer.encode(read_texts(default_eval_files()))[:96]])
    with torch.no_grad():
        ref = model.logits(model(ids)).log_softmax(-1)
    rec = recipe(
        [{"select": "all", "k": {"method": "identity"}, "v": {"method": "activation_svd", "rank": cfg.kv_size}}],
        sink_tokens=1,
    )
    rec.calibration.tokens, rec.calibration.seq_len, rec.calibration.heldout_tokens = 1024, 256, 256
    res, _ = convert(qwen, model, rec, eval_model=False, log=lambda m: None)
    assert all(lay.k.kind == "tpa_fixed" and lay.v.kind == "latent" and lay.sink == 1 for lay in res.layouts)
    with torch.no_grad():
        got = model.logits(model(ids)).log_softmax(-1)
    diff = (got - ref).abs().max().item()
    print(f"max |Δ log-prob| identity K + full-rank V: {diff:.2e}")
    assert diff < 1e-3
