"""Quality is reported per bundled domain (python-docs, prose): `eval`, `convert --eval`
(console, report.json, report.md) and `validate` (metrics and the gate per domain)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tpa_compress import cli
from tpa_compress.data import eval_domains
from tpa_compress.evaluate.validate import Thresholds, ValidationResult, domain_failures

DOMAINS = list(eval_domains())


@pytest.fixture(scope="module")
def converted(model_dir, tmp_path_factory):
    """A lossy conversion made by `convert --eval` with the default data."""
    root = tmp_path_factory.mktemp("conv")
    rec = root / "r.yaml"
    rec.write_text(
        yaml.safe_dump(
            {
                "calibration": {"files": ["default"], "tokens": 256, "seq_len": 32, "heldout_tokens": 64},
                "eval": {"files": ["default"], "seq_len": 32, "max_windows": 2},
                "layers": [
                    {
                        "select": "all",
                        "k": {"method": "activation_svd", "rank": 4},
                        "v": {"method": "activation_svd", "rank": 4},
                    }
                ],
            }
        )
    )
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(
            sys,
            "argv",
            [
                "tpa-compress",
                "convert",
                str(model_dir),
                "--recipe",
                str(rec),
                "--out",
                str(root / "out"),
                "--eval",
                "--device",
                "cpu",
            ],
        )
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 0
    finally:
        mp.undo()
    return root / "out"


def test_eval_default_prints_one_row_per_domain(cli_run, model_dir, tmp_path):
    js = tmp_path / "e.json"
    code, out, err = cli_run("eval", model_dir, "--seq-len", 32, "--max-windows", 2, "--json", js)
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if any(f"│ {d} " in ln for d in DOMAINS)]
    assert len(rows) == 2 and all(d in out for d in DOMAINS)
    doc = json.loads(js.read_text())
    assert list(doc["domains"]) == DOMAINS
    for d in DOMAINS:
        assert doc["domains"][d]["windows"] == 2 and doc["domains"][d]["tokens"] == 2 * 31
        assert doc["domains"][d]["data"] == [str(f) for f in eval_domains()[d]]
    assert doc["domains"]["python-docs"]["perplexity"] != doc["domains"]["prose"]["perplexity"]
    assert "perplexity" not in doc  # no top-level number that could be read as "the" quality


def test_eval_data_scores_that_file_alone(cli_run, model_dir, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    js = tmp_path / "e.json"
    code, out, err = cli_run("eval", model_dir, "--data", text, "--seq-len", 32, "--max-windows", 2, "--json", js)
    assert code == 0, err
    assert "mine.txt" in out and not any(d in out for d in DOMAINS)
    doc = json.loads(js.read_text())
    assert list(doc["domains"]) == ["mine.txt"] and doc["windows"] == 2 and doc["data"] == [str(text)]


def test_convert_eval_reports_both_domains(converted):
    rep = json.loads((converted / "report.json").read_text())
    assert list(rep["perplexity"]) == DOMAINS
    for d in DOMAINS:
        p = rep["perplexity"][d]
        assert p["before"]["windows"] == p["after"]["windows"] == 2
        assert p["delta_pct"] == pytest.approx(100 * (p["after"]["perplexity"] / p["before"]["perplexity"] - 1))
    md = (converted / "report.md").read_text()
    for d in DOMAINS:
        p = rep["perplexity"][d]
        assert (
            f"| {d} | {p['before']['perplexity']:.4f} | {p['after']['perplexity']:.4f} | {p['delta_pct']:+.2f}% |" in md
        )


def test_convert_eval_explicit_file_is_one_text(cli_run, model_dir, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("a rose is a rose is a rose, said she. " * 40)
    rec = tmp_path / "r.yaml"
    rec.write_text(
        yaml.safe_dump(
            {
                "calibration": {"tokens": 128, "seq_len": 32, "heldout_tokens": 0},
                "eval": {"files": [str(text)], "seq_len": 32, "max_windows": 2},
                "layers": [
                    {
                        "select": "all",
                        "k": {"method": "activation_svd", "rank": 4},
                        "v": {"method": "activation_svd", "rank": 4},
                    }
                ],
            }
        )
    )
    code, out, err = cli_run(
        "convert", model_dir, "--recipe", rec, "--out", tmp_path / "o", "--eval", "--device", "cpu"
    )
    assert code == 0, err
    assert list(json.loads((tmp_path / "o" / "report.json").read_text())["perplexity"]) == ["held.txt"]
    assert "held.txt" in out and "prose" not in out


def _res(kl, top1):
    return ValidationResult(
        layers=[],
        kl_mean=kl,
        kl_max=kl,
        top1=top1,
        ppl_reference=10.0,
        ppl_converted=10.0,
        nll_reference=2.3,
        nll_converted=2.3,
        tokens=10,
        windows=1,
        seq_len=11,
    )


def test_gate_applies_to_each_domain():
    t = Thresholds(max_kl=0.05, min_top1=0.9)
    good, bad = _res(0.041, 0.907), _res(0.080, 0.847)  # issue 28's two texts
    assert domain_failures({"python-docs": good, "prose": good}, t) == []
    missed = domain_failures({"python-docs": good, "prose": bad}, t)
    assert len(missed) == 2 and all(m.startswith("prose: ") for m in missed)
    assert "--max-kl" in missed[0] and "--min-top1" in missed[1]


def test_validate_gates_per_domain(cli_run, converted, model_dir, tmp_path):
    args = ["validate", converted, "--reference", model_dir, "--seq-len", 32, "--max-windows", 2, "--device", "cpu"]
    js = tmp_path / "v.json"
    code, out, err = cli_run(*args, "--json", js)
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert doc["schema_version"] == 2 and list(doc["domains"]) == DOMAINS and "kl_mean" not in doc
    kl = {d: doc["domains"][d]["kl_mean"] for d in DOMAINS}
    assert kl["python-docs"] != kl["prose"] and min(kl.values()) > 0
    for d in DOMAINS:
        assert f"per-layer relative error on {d}" in out
    # a gate between the two domains' KL: passes on one, fails on the other -> the model fails
    worse = max(kl, key=kl.get)
    gate = (kl["python-docs"] + kl["prose"]) / 2
    code, out, err = cli_run(*args, "--max-kl", repr(gate), "--json", js)
    assert code == 1
    doc = json.loads(js.read_text())
    assert doc["passed"] is False and len(doc["failures"]) == 1 and doc["failures"][0].startswith(f"{worse}: ")
    assert {d: doc["domains"][d]["passed"] for d in DOMAINS} == {d: d != worse for d in DOMAINS}
    assert f"validation failed: {worse}: mean KL" in " ".join(err.split())
    code, out, err = cli_run(*args, "--max-kl", repr(max(kl.values()) * 1.01))
    assert code == 0 and "validation passed" in out
