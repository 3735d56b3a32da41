"""Real converted Gemma 3 270M folders in transformers (trust_remote_code), CPU, fp32.

A converted folder (V latent rank 64 on the global layers, sink 1) and an identity
folder: transformers' logits equal ours within 1e-4 over 600 tokens of held-out text
(longer than the 512-token window), and transformers' tokenizer of the folder starts
with BOS and gives our ids; SmolLM2's adds none, as its original.
"""

import pytest
import torch

from tpa_compress.convert import convert, write_output
from tpa_compress.data import default_eval_files, read_texts
from tpa_compress.load import load_model
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe

pytestmark = pytest.mark.real
transformers = pytest.importorskip("transformers")

RECIPES = {
    "latent_v_global": {
        "calibration": {"tokens": 2048, "seq_len": 256, "heldout_tokens": 0},
        "sink_tokens": 1,
        "layers": [{"select": {"type": "global"}, "v": {"method": "activation_svd", "rank": 64}}],
    },
    "identity": {"layers": [{"select": "all", "k": {"method": "identity"}, "v": {"method": "identity"}}]},
}


@pytest.fixture(scope="module")
def source():
    try:
        return load_model("gemma3-270m")
    except Exception as e:  # model package not installed
        pytest.skip(str(e))


@pytest.fixture(scope="module", params=list(RECIPES))
def folder(request, source, tmp_path_factory):
    rec = parse_recipe(RECIPES[request.param], f"{request.param}.yaml")
    model = build_model(source)
    res, tensors = convert(source, model, rec, eval_model=False, log=lambda m: None)
    out = tmp_path_factory.mktemp(request.param) / "out"
    write_output(out, source, rec, res, tensors, force=False)
    return out


@torch.no_grad()
def test_logits_match_ours(folder):
    ck = load_model(folder)
    ids = torch.tensor([ck.tokenizer.encode(read_texts(default_eval_files()), add_bos=True)[:600]])
    ours = build_model(ck)
    a = ours.logits(ours(ids))
    del ours
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), trust_remote_code=True, dtype=torch.float32
    ).eval()
    b = theirs(ids).logits
    diff = (a - b).abs().max().item()
    print(f"{folder.parent.name}: max |Δ logit| over {ids.shape[1]} tokens = {diff:.3e}")
    assert diff <= 1e-4


def test_tokenizer_starts_with_bos(folder):
    tok = load_model(folder).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    text = "The capital of France is"
    assert theirs(text).input_ids[0] == tok.bos_id == 2
    assert theirs(text).input_ids == tok.encode(text)


def test_smollm2_tokenizer_adds_no_bos_as_its_original(tmp_path):
    """SmolLM2 is not trained with BOS (its GGUF says add_bos_token false; its HF tokenizer adds
    none): transformers' tokenizer of what we save adds none either."""
    try:
        tok = load_model("smollm2-135m").tokenizer
    except Exception as e:  # model package not installed
        pytest.skip(str(e))
    tok.save(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in ["The capital of France is", "<|im_start|>user\nhi<|im_end|>"]:
        assert theirs(text).input_ids == tok.encode(text)
    assert tok.add_bos is False and theirs("Hi").input_ids[0] != tok.bos_id
