"""Converted folders in transformers: the modeling code each folder carries (modeling_tpa.py)
gives our log-probs and our Runner's greedy tokens with `trust_remote_code=True`, and
transformers refuses the folder without it; the tokenizer adds BOS exactly as ours does.

Folders come from the real pipeline (convert + write_output: latent K/V with a sink,
the identity conversion, no converted layer) and, for every factorized kind, from models
with random factors and random sink weights unrelated to them (a sink row computed by the
factors, or a factorized row computed by the sink, changes the output). Sequences are
longer than the tiny Gemma's 8-token window, and a left-padded batch checks that sinks
follow each sequence's own positions in prefill and in cached decoding.
"""

from pathlib import Path

import pytest
import torch

from test_runtime_sink import sink_model
from tiers import as_one, each
from tiny import char_tokenizer, random_state, recipe, tiny_config
from tpa_compress.convert import convert, write_output
from tpa_compress.layout import layouts_to_config, original_layouts
from tpa_compress.load import load_model
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import layout_of_model
from tpa_compress.models import build_model
from tpa_compress.models.transformer import _canonical
from tpa_compress.runtime import Runner
from tpa_compress.save import save_hf_folder

transformers = pytest.importorskip("transformers")

FAMILIES = ["gemma3", "llama", "qwen2"]
PACKAGE = Path(__file__).resolve().parents[1] / "tpa_compress"
TOL = 1e-4
IDS = torch.randint(4, 33, (2, 21), generator=torch.Generator().manual_seed(0))
RULES = {
    "latent_sink": [
        {"select": "all", "k": {"method": "activation_svd", "rank": 6}, "v": {"method": "activation_svd", "rank": 5}}
    ],
    "identity": [{"select": "all", "k": {"method": "identity"}, "v": {"method": "identity"}}],
}


def pipeline_folder(path, family, case):
    """A folder as `tpa-compress convert` writes it (vocabulary: the char tokenizer's)."""
    tok = char_tokenizer()
    cfg = tiny_config(family, vocab_size=tok.vocab_size)
    ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), tok, "", "memory")
    if case == "unconverted":  # every layer keeps its original K/V
        path.mkdir()
        save_hf_folder(path, cfg, random_state(cfg, 3), tok, {"tpa": layouts_to_config(original_layouts(cfg))})
        return path
    model = build_model(ck)
    rec = recipe(RULES[case], sink_tokens=1 if case == "latent_sink" else 0)
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    write_output(path, ck, rec, res, tensors, force=False)
    return path


def random_kind_folder(path, family, kind, sink):
    """Every layer factorized as `kind`, random factors and sink weights."""
    model = sink_model(family, kind, sink)
    tensors = {_canonical(n): p for n, p in model.state_dict().items()}
    tpa = layouts_to_config(layout_of_model(model))
    save_hf_folder(path, model.cfg, tensors, extra_config={"tpa": tpa})
    return path


def hf_model(folder):
    m = transformers.AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32)
    m.generation_config.eos_token_id = None  # compare fixed-length continuations
    return m.eval()


@torch.no_grad()
def check_logprobs(folder, ids=IDS):
    ours = build_model(load_model(folder))
    a = ours.logits(ours(ids)).log_softmax(-1)
    b = hf_model(folder)(ids).logits.log_softmax(-1)
    assert (a - b).abs().max().item() <= TOL


@torch.no_grad()
def check_generate(folder, lengths=(13, 4), new=10):
    """transformers' greedy `generate` on a left-padded batch: the tokens of our Runner, and
    each step's log-probs equal to our no-cache forward of that sequence alone."""
    ours = build_model(load_model(folder))
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(4, 33, (n,), generator=g).tolist() for n in lengths]
    runner = Runner(ours, len(prompts), max(lengths) + new, compile=False)
    runner.eos = -1
    want = runner.generate(prompts, new, stop_at_eos=False).tokens
    longest = max(lengths)
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    mask = (torch.arange(longest) >= torch.tensor([longest - n for n in lengths])[:, None]).long()
    out = hf_model(folder).generate(
        ids,
        attention_mask=mask,
        max_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    got = out.sequences[:, longest:].tolist()
    assert got == want
    steps = torch.stack(out.logits, 1).log_softmax(-1)
    for b, p in enumerate(prompts):
        ref = ours.logits(ours(torch.tensor([p + got[b]])))[0].log_softmax(-1)
        assert (steps[b] - ref[len(p) - 1 : len(p) - 1 + new]).abs().max().item() <= TOL


@pytest.fixture(scope="module", params=as_one(each(FAMILIES, ["latent_sink", "identity", "unconverted"])))
def folder(request, tmp_path_factory):
    family, case = request.param
    return pipeline_folder(tmp_path_factory.mktemp(case) / "out", family, case)


def test_converted_folder_logprobs_match(folder):
    check_logprobs(folder)


def test_converted_folder_generate_matches_runner(folder):
    check_generate(folder)


@pytest.mark.parametrize(
    "sink,kind,family", each([0, 2], ["latent_kv", "latent_v_only", "tpa_fixed", "tpa_contextual"], FAMILIES)
)
def test_every_kind_and_sink(tmp_path, family, kind, sink):
    folder = random_kind_folder(tmp_path, family, kind, sink)
    check_logprobs(folder)
    check_generate(folder, lengths=(13, 1), new=8)  # a 1-token prompt: decode writes its 2nd sink row


def test_folder_layout(folder):
    import json

    d = json.loads((folder / "config.json").read_text())
    family = load_model(folder).config.family
    assert d["model_type"] == "tpa_" + family
    assert d["auto_map"]["AutoModelForCausalLM"] == "modeling_tpa." + d["architectures"][0]
    assert (folder / "modeling_tpa.py").is_file()
    src = (folder / "modeling_tpa.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "torch", "transformers"}  # loads without tpa-compress


def test_refused_without_trust_remote_code(folder, monkeypatch):
    with pytest.raises(ValueError, match="(?s)contains custom code which must be executed.*trust_remote_code=True"):
        transformers.AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False)
    with pytest.raises(ValueError, match="contains custom code"):
        transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    # No argument: transformers asks on a terminal, then refuses; with the prompt off (its
    # CI setting) it refuses at once.
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "TIME_OUT_REMOTE_CODE", 0)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        transformers.AutoModelForCausalLM.from_pretrained(str(folder))


def test_plain_folder_still_loads_without_remote_code(tmp_path):
    """A folder that is not a conversion (no `tpa` section) stays a plain transformers model."""
    cfg = tiny_config("gemma3")
    save_hf_folder(tmp_path, cfg, random_state(cfg, 1))
    assert not (tmp_path / "modeling_tpa.py").exists()
    m = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
    assert type(m).__name__ == "Gemma3ForCausalLM"


def test_tokenizer_adds_bos_as_ours(folder):
    tok = load_model(folder).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    for text in ["the cat sat", "", "a, b."]:
        assert theirs(text).input_ids == tok.encode(text)
    assert theirs("the cat").input_ids[0] == tok.bos_id == 2


def test_save_pretrained_keeps_the_code(folder, tmp_path):
    """A folder re-saved by transformers carries modeling_tpa.py and the `tpa` section: both
    transformers and our loader read it back to the same model."""
    hf_model(folder).save_pretrained(tmp_path)
    assert (tmp_path / "modeling_tpa.py").is_file()
    check_logprobs(tmp_path)


@torch.no_grad()
def test_bf16_folder_loads_in_bf16(tmp_path):
    """A folder written in bfloat16 (recipe weight_dtype) loads in bfloat16 by default and runs
    the factorized projections in it: log-probs as ours in bfloat16 (its rounding allowed)."""
    tok = char_tokenizer()
    cfg = tiny_config("gemma3", vocab_size=tok.vocab_size)
    ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), tok, "", "memory")
    rec = recipe(RULES["latent_sink"], sink_tokens=1, weight_dtype="bfloat16")
    res, tensors = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    write_output(tmp_path / "out", ck, rec, res, tensors, force=False)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), trust_remote_code=True)
    assert {p.dtype for p in theirs.parameters()} == {torch.bfloat16}
    ours = build_model(load_model(tmp_path / "out"), dtype=torch.bfloat16)
    a = ours.logits(ours(IDS)).float().log_softmax(-1)
    b = theirs(IDS).logits.float().log_softmax(-1)
    assert (a - b).abs().max().item() <= 1e-2


@pytest.fixture
def mistral_family():
    """A family no file of the package knows: Llama's forward under transformers' Mistral
    classes (the same computation with no sliding window), registered for one test."""
    from tpa_compress.models.family import FAMILIES, register
    from tpa_compress.models.llama import Llama

    @register("toymistral")
    class ToyMistral(Llama):
        hf_model_type = "mistral"
        hf_class = "MistralForCausalLM"

        def hf_extra(self, cfg):
            return {**super().hf_extra(cfg), "sliding_window": None}

    yield FAMILIES["toymistral"]
    del FAMILIES["toymistral"]


def test_a_new_family_needs_no_modeling_code(mistral_family, tmp_path):
    """A family registered elsewhere gets a folder transformers loads: its classes are
    rendered into the folder's modeling_tpa.py (the shipped file names no family)."""
    folder = pipeline_folder(tmp_path / "out", "toymistral", "latent_sink")
    src = (folder / "modeling_tpa.py").read_text()
    assert "class TPAMistralForCausalLM(_TPAModel, transformers.MistralForCausalLM):" in src
    assert "TPAMistral" not in (PACKAGE / "save" / "modeling_tpa.py").read_text()
    m = hf_model(folder)
    assert type(m).__name__ == "TPAMistralForCausalLM" and m.config.model_type == "tpa_toymistral"
    assert type(m.config).__mro__[1] is transformers.MistralConfig
    assert load_model(folder).config.family == "toymistral"
    check_logprobs(folder)
    check_generate(folder)
