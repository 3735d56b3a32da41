"""Issue 31's remaining points: outputs saved in bfloat16 by default and scored as saved,
output files and window lengths checked before the work, a default `eval` sized for a
laptop that says what it scores, and report.md's next steps."""

from __future__ import annotations

import json
import os
import struct

import pytest

from checks import assert_one_line_error
from tiny import CharTok, recipe, tiny_ckpt
from tpa_compress.convert import _eval, convert, write_output
from tpa_compress.data import eval_domains
from tpa_compress.load import load_model
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe

LOSSY = [{"select": "all", "k": {"method": "activation_svd", "rank": 4}, "v": {"method": "activation_svd", "rank": 4}}]


def safetensors_dtypes(path) -> set[str]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8 : 8 + n])
    return {v["dtype"] for k, v in head.items() if k != "__metadata__"}


# ------------------------------------------------------------------ outputs sized like their input


def test_weight_dtype_defaults_to_bfloat16_and_float32_stays_selectable():
    assert parse_recipe({"layers": LOSSY}).weight_dtype == "bfloat16"
    assert parse_recipe({"layers": LOSSY, "weight_dtype": "float32"}).weight_dtype == "float32"


def test_folder_is_saved_in_bfloat16_and_the_after_eval_scores_it_as_saved(tmp_path):
    ck = tiny_ckpt("gemma3")
    sizes = {}
    for wd in ("bfloat16", "float32"):
        rec = recipe(LOSSY, weight_dtype=wd)
        model = build_model(ck)
        res, tensors = convert(ck, model, rec, eval_model=True, log=lambda m: None)
        write_output(tmp_path / wd, ck, rec, res, tensors, force=False, model=model)
        st = tmp_path / wd / "model.safetensors"
        sizes[wd] = st.stat().st_size
        assert safetensors_dtypes(st) == {"BF16" if wd == "bfloat16" else "F32"}
        # the report's "after" is the folder as it loads (float32 compute over the saved weights)
        back = build_model(load_model(tmp_path / wd))
        again = _eval(back, CharTok(), rec, None, "reloaded")
        for name, p in res.perplexity.items():
            assert p["after"]["perplexity"] == pytest.approx(again[name]["perplexity"], rel=1e-6), (wd, name)
        report = json.loads((tmp_path / wd / "report.json").read_text())
        assert report["weight_dtype"] == wd
    assert sizes["bfloat16"] < 0.55 * sizes["float32"]
    assert "rounded to bfloat16" in (tmp_path / "bfloat16" / "report.md").read_text()


# ------------------------------------------------------------------ next steps in report.md


def test_report_ends_with_next_steps_naming_the_folder(tmp_path):
    ck = tiny_ckpt("llama")
    rec = recipe(LOSSY)
    res, tensors = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    out = tmp_path / "my out"
    write_output(out, ck, rec, res, tensors, force=False)
    md = (out / "report.md").read_text()
    tail = md[md.index("## Next steps") :]
    assert f"tpa-compress generate '{out}' --prompt" in tail
    assert f"tpa-compress validate '{out}'" in tail
    assert f"AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True)" in tail
    assert "docs/compatibility.md" in tail
    assert md.index("## Per layer") < md.index("## Next steps")


# ------------------------------------------------------------------ checked before the work


@pytest.mark.parametrize("command", ["eval", "validate"])
def test_json_where_nothing_can_be_written_is_refused_first(cli_run, monkeypatch, tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # the model does not exist: the --json check comes first, so the error names --json
    model = tmp_path / "absent-model"
    code, _, err = cli_run(command, model, "--json", blocker / "r.json")
    assert_one_line_error(code, err, "--json", "r.json", "cannot write there")
    code, _, err = cli_run(command, model, "--json", tmp_path)
    assert_one_line_error(code, err, "--json", "is a folder")
    ro = tmp_path / "readonly"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(ro)) else real_access(p, m, **k))
    ro.mkdir()
    code, _, err = cli_run(command, model, "--json", ro / "r.json")
    assert_one_line_error(code, err, "--json", "readonly/r.json", "cannot write there")
    assert not (ro / "r.json").exists()


def test_eval_seq_len_beyond_the_models_positions_is_an_error(cli_run, model_dir):
    code, _, err = cli_run("eval", model_dir, "--seq-len", 300, "--device", "cpu")
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("loaded "))
    assert_one_line_error(code, err, "--seq-len 300", "asks for 300 positions", "supports at most 256", "orig")


def test_validate_seq_len_beyond_the_models_positions_is_an_error(cli_run, model_dir, tmp_path):
    code, _, err = cli_run("validate", model_dir, "--reference", model_dir, "--seq-len", 300, "--device", "cpu")
    assert_one_line_error(code, err, "--seq-len 300", "supports at most 256")


# ------------------------------------------------------------------ a default eval sized for a laptop


def test_eval_default_caps_windows_per_domain_and_says_what_it_scores(cli_run, model_dir, tmp_path):
    from tpa_compress.cli import DEFAULT_EVAL_WINDOWS

    js = tmp_path / "e.json"
    code, out, err = cli_run("eval", model_dir, "--seq-len", 32, "--json", js, "--device", "cpu")
    assert code == 0, err
    doc = json.loads(js.read_text())
    for d in eval_domains():
        assert doc["domains"][d]["windows"] == DEFAULT_EVAL_WINDOWS
        assert f"{d}: {DEFAULT_EVAL_WINDOWS} windows × 32 tokens" in " ".join(err.split())
    assert "--max-windows" in err  # how to score more


# ------------------------------------------------------------------ convert's faults, through the CLI


def _recipe_file(tmp_path, select):
    import yaml

    p = tmp_path / "r.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "calibration": {"tokens": 64, "seq_len": 32, "heldout_tokens": 0},
                "layers": [{"select": select, "v": {"method": "activation_svd", "rank": 4}}],
            }
        )
    )
    return p


@pytest.mark.parametrize(
    "select, needles",
    [
        ({"pattern": "9?"}, ["layers[0].select.pattern '9?' matches no layer", "layers 0..5"]),
        ({"layers": "0-99"}, ["layers[0].select.layers names layer 6..99", "valid: 0..5"]),
        ({"layers": "50-60"}, ["names layer 50..60"]),
    ],
)
def test_convert_selector_missing_the_model_fails_before_calibration(cli_run, tmp_path, model_dir, select, needles):
    code, _, err = cli_run(
        "convert", model_dir, "--recipe", _recipe_file(tmp_path, select), "--out", tmp_path / "out", "--device", "cpu"
    )
    err = "\n".join(ln for ln in err.splitlines() if not (ln.startswith("loaded ") or ln.endswith(" CPU thread(s)")))
    assert_one_line_error(code, err, "r.yaml", *needles)
    assert not (tmp_path / "out").exists()


def test_convert_out_that_is_a_file_is_refused_even_with_force(cli_run, tmp_path, model_dir):
    f = tmp_path / "out"
    f.write_text("keep me")
    code, _, err = cli_run("convert", model_dir, "--recipe", _recipe_file(tmp_path, "all"), "--out", f, "--force")
    assert_one_line_error(code, err, "out", "is a file, not a folder")
    assert f.read_text() == "keep me"


def test_eval_float16_overflow_is_an_error_not_a_nan_perplexity(cli_run, tmp_path):
    from tiny import char_tokenizer, random_state, tiny_config
    from tpa_compress.save import save_hf_folder

    cfg = tiny_config("gemma3")
    state = random_state(cfg, 3)
    state["model.embed_tokens.weight"].fill_(3e4)  # x sqrt(hidden) overflows float16
    (tmp_path / "m").mkdir()
    save_hf_folder(tmp_path / "m", cfg, state, char_tokenizer())
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 20)
    code, _, err = cli_run(
        "eval", tmp_path / "m", "--dtype", "float16", "--seq-len", 32, "--data", text, "--device", "cpu"
    )
    err = "\n".join(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert code == 2 and "inf/nan logits in float16" in err, err
