"""`analyze`: spectra vs direct SVD, the cache table vs hand-computed bytes, activation
and geometry numbers vs brute force on tiny models, the command on every loader format."""

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from tiny import char_tokenizer, random_state, tiny_config, write_ckpt, write_gguf
from tpa_compress.analyze import analyze
from tpa_compress.analyze.activations import activation_spectra
from tpa_compress.analyze.cli import analyze_cmd, parse_contexts
from tpa_compress.analyze.costs import cost_table, layer_type_table
from tpa_compress.analyze.geometry import head_operator, qk_geometry
from tpa_compress.analyze.spectra import effective_rank, energy_kept, energy_ranks, svd_energy
from tpa_compress.errors import TPAError
from tpa_compress.load.ckpt import variant_config
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.models import build_model
from tpa_compress.save import save_hf_folder

MiB = 2**20


def known_rank(m, n, sv, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, len(sv), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, len(sv), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sv, dtype=torch.float64)) @ v.T


# ----------------------------------------------------------------------------- spectra
@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
def test_energy_ranks_match_direct_svd(shape):
    sv = [10.0, 6.0, 3.0, 2.0, 1.0, 0.5, 0.1]  # rank 7, energies 100, 36, 9, 4, 1, .25, .01
    w = known_rank(*shape, sv)
    e = svd_energy(w)
    torch.testing.assert_close(e[:7], torch.linalg.svdvals(w).pow(2)[:7], rtol=1e-10, atol=1e-10)
    assert float(e[7:].abs().max()) < 1e-9
    total = sum(s * s for s in sv)
    cum = torch.tensor([s * s for s in sv]).cumsum(0) / total
    want = {f"{lv:g}": int((cum < lv - 1e-12).sum()) + 1 for lv in (0.9, 0.95, 0.99)}
    assert energy_ranks(e) == want == {"0.9": 2, "0.95": 3, "0.99": 4}
    assert energy_ranks(e, (0.9999,))["0.9999"] == 6
    assert energy_kept(e, 2) == pytest.approx(136 / total)


def test_effective_rank_bounds():
    assert effective_rank(torch.tensor([4.0, 0, 0])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(9)) == pytest.approx(9.0)
    assert 1 < effective_rank(torch.tensor([9.0, 1.0])) < 2


# ----------------------------------------------------------------------------- cache table
def row(rows, name, dtype="bf16"):
    return next(r for r in rows if r["name"] == name and r["cache_dtype"] == dtype)


def test_cache_table_gemma3_1b_hand_computed():
    cfg = variant_config("1b")  # 26 layers, 1 KV head x 256, window 512, 5 sliding : 1 global
    rows = cost_table(cfg, [4096, 32768], batch=1)
    per_tok = 2 * 256 * 2  # K + V, bf16
    o = row(rows, "original")
    assert o["bytes_per_token_per_layer"] == {"global": per_tok, "sliding": per_tok}
    assert o["total_bytes"]["32768"] == 4 * 32768 * per_tok + 22 * 512 * per_tok == 145_752_064
    assert o["total_bytes"]["4096"] == 4 * 4096 * per_tok + 22 * 512 * per_tok == 28_311_552
    i8 = row(rows, "original", "int8")  # one byte per value + a 2-byte scale per token and component
    assert i8["total_bytes"]["32768"] == (4 * 32768 + 22 * 512) * (2 * 256 + 2 * 2)
    assert row(rows, "original", "fp8")["ratio_vs_original_bf16"]["32768"] == 0.5
    lat = row(rows, "latent_kv_r128")  # + the latent K's fp32 norm factor (QK-norm), 4 bytes a token
    assert lat["total_bytes"]["32768"] == (4 * 32768 + 22 * 512) * (2 * 128 * 2 + 4)
    glob = row(rows, "latent_kv_r128_global")
    assert glob["total_bytes"]["32768"] == 4 * 32768 * (512 + 4) + 22 * 512 * per_tok
    ctx = row(rows, "tpa_contextual_R1")  # caches a (1) and b (256) per rank: 257 > 256 values
    assert ctx["flag"] == "larger" and "one KV head" in ctx["reasons"][0]
    assert ctx["total_bytes"]["4096"] == (4 * 4096 + 22 * 512) * 2 * 257 * 2
    assert row(rows, "tpa_contextual_R2", "int8")["flag"] == "larger"
    assert row(rows, "tpa_fixed_R1")["flag"] == "no_saving"
    assert lat["flag"] is None and o["flag"] is None


def test_cache_table_gemma3_270m_and_batch():
    cfg = variant_config("270m")  # 18 layers: 3 global, 15 sliding
    types = {r["type"]: r for r in layer_type_table(cfg, [32768], batch=1)}
    assert types["global"]["bytes"]["32768"] == 3 * 32768 * 1024
    assert types["sliding"]["bytes"]["32768"] == 15 * 512 * 1024
    assert types["sliding"]["tokens_held"]["32768"] == 512
    assert types["global"]["share"]["32768"] == pytest.approx(100_663_296 / 108_527_616)
    o = row(cost_table(cfg, [32768], batch=4), "original")
    assert o["total_bytes"]["32768"] == 4 * 108_527_616 and o["total_bytes"]["32768"] / MiB == 4 * 103.5


def test_contexts_parse_and_reject():
    assert parse_contexts("4096, 32k,4096") == [4096, 32768]
    for bad in ("", "abc", "0", "4096,-1", "1.5k", "4096,,8"):
        with pytest.raises(TPAError, match="--context"):
            parse_contexts(bad)


# ----------------------------------------------------------------------------- tiny models
def tiny(family="gemma3", **over):
    cfg = tiny_config(family, **over)
    return Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 5)), None, "", "memory")


WINDOWS = torch.randint(3, 90, (3, 24), generator=torch.Generator().manual_seed(2))


def captured(model):
    """Every layer's K (pre- and post-norm) and V rows, by brute force."""
    got = {}

    def hook(i, block, h):
        a = block.self_attn
        x = block.input_layernorm(h).reshape(-1, h.shape[-1])
        k = a.k_proj(x)
        kn = a.k_norm(k.view(-1, a.n_kv, a.head_dim)).reshape(k.shape) if a.qk_norm else None
        for name, t in (("k", k), ("kn", kn), ("v", a.v_proj(x))):
            if t is not None:
                got.setdefault((i, name), []).append(t.double())

    with torch.no_grad():
        for w in WINDOWS:
            model(w[None], hooks=hook)
    return {key: torch.cat(v) for key, v in got.items()}


def cov_energy(z):
    z = z - z.mean(0)
    return torch.linalg.eigvalsh(z.T @ z / z.shape[0]).flip(0).clamp_min(0)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_activation_spectra_match_brute_force(family):
    model = build_model(tiny(family, num_kv_heads=2))
    acts = activation_spectra(model, WINDOWS)
    ref = captured(model)
    for i, a in enumerate(acts):
        for name, key in (("k_pre", "k"), ("v", "v"), ("k_post", "kn")):
            if (i, key) not in ref:
                assert name not in a["spectra"]
                continue
            e = cov_energy(ref[(i, key)])
            torch.testing.assert_close(a["spectra"][name], e, rtol=1e-4, atol=1e-6 * float(e[0]))
            assert a[name]["energy_ranks"] == energy_ranks(e)
        # head mode: per-token SVD of the (kv x head_dim) K matrix vs the streamed sums
        k = ref[(i, "k")].view(-1, 2, tiny_config(family).head_dim)
        s2 = torch.linalg.svdvals(k).pow(2).sum(0)
        assert a["head_mode"]["k"]["contextual"][0] == pytest.approx(float(s2[0] / s2.sum()), rel=1e-5)
        m = torch.einsum("thd,tgd->hg", k, k)
        ev = torch.linalg.eigvalsh(m).flip(0)
        assert a["head_mode"]["k"]["fixed"][0] == pytest.approx(float(ev[0] / ev.sum()), rel=1e-5)
        assert a["head_mode"]["k"]["fixed"][0] <= a["head_mode"]["k"]["contextual"][0] + 1e-9


def test_geometry_matches_materialised_operators():
    model = build_model(tiny("gemma3"))
    cfg = model.cfg
    geo = qk_geometry(model, topk=4)
    D, group = cfg.head_dim, cfg.num_heads // cfg.num_kv_heads
    ops = {}
    for i, b in enumerate(model.layers):
        a = b.self_attn
        s = (1 + a.q_norm.weight) * (1 + a.k_norm.weight)
        for h in range(cfg.num_heads):
            wq = a.q_proj.weight[h * D : (h + 1) * D].double() * s.double()[:, None]
            wk = a.k_proj.weight[(h // group) * D : (h // group + 1) * D].double()
            ops[i, h] = g = wk.T @ wq  # hidden x hidden: fine at hidden 32
            op = head_operator(wq, wk, topk=4)
            sv = torch.linalg.svdvals(g)
            torch.testing.assert_close(op["energy"], sv[:D].pow(2), rtol=1e-8, atol=1e-10)
            # the Q-side directions are g's top right singular vectors: |g p| = sigma
            torch.testing.assert_close((g @ op["dirs"]).norm(dim=0), sv[:4], rtol=1e-8, atol=1e-10)
            sym = torch.linalg.eigvalsh((g + g.T) / 2)
            sym = sym[sym.abs().argsort(descending=True)][: 2 * D]
            torch.testing.assert_close(op["sym_eigs"], sym, rtol=1e-7, atol=1e-9)
            assert geo["layers"][i]["heads"][h]["fro_norm"] == pytest.approx(float(g.norm()), rel=1e-6)
    for h in range(cfg.num_heads):
        for i in range(cfg.num_layers):
            for j in range(cfg.num_layers):
                want = (ops[i, h] * ops[j, h]).sum() / (ops[i, h].norm() * ops[j, h].norm())
                assert float(geo["cosine"][h][i, j]) == pytest.approx(float(want), abs=1e-5)
        assert torch.allclose(geo["overlap"][h].diagonal(), torch.ones(cfg.num_layers, dtype=torch.float64))


# ----------------------------------------------------------------------------- the command
def cli(args):
    app = typer.Typer()
    app.command("analyze")(analyze_cmd)
    app.command("noop")(lambda: None)
    return CliRunner().invoke(app, ["analyze", *args])


@pytest.mark.slow  # drawing the eight plots; the fast tier runs analyze in test_tokenizer_option.py
def test_command_full_report_on_hf_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    cfg = tiny_config("gemma3")
    (tmp_path / "m").mkdir()
    save_hf_folder(tmp_path / "m", cfg, random_state(cfg, 1), char_tokenizer())
    out = tmp_path / "rep"
    res = cli(
        [
            str(tmp_path / "m"),
            "--out",
            str(out),
            "--calib-tokens",
            "256",
            "--seq-len",
            "32",
            "--context",
            "64,1k",
            "--batch",
            "2",
        ]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "report.json").read_text())
    assert doc["schema"] == "tpa-compress.analyze" and doc["schema_version"] == 1
    assert doc["settings"]["contexts"] == [64, 1024] and doc["settings"]["calibration"]["tokens"] == 256
    assert set(doc["activations"][0]) >= {"k_pre", "k_post", "v", "v_out", "head_mode"}
    assert {p.name for p in out.glob("*.png")} == {
        "activation_spectra.png",
        "activation_energy.png",
        "weight_spectra.png",
        "weight_energy.png",
        "ranks_by_layer.png",
        "kv_bytes_vs_context.png",
        "qk_geometry.png",
        "head_mode.png",
    }
    md = (out / "report.md").read_text()
    assert "## Findings" in md and "![" in md and "LARGER" in md
    assert "Candidate layouts" in res.output
    # into a pipe or a log the tables keep their numbers whole (rich's 80 columns cut them)
    assert "…" not in res.output and "(1.000×)" in res.output, res.output


@pytest.mark.parametrize("fmt", ["gguf", "ckpt"])
def test_command_runs_on_other_formats_without_tokenizer(tmp_path, monkeypatch, fmt):
    cfg = tiny_config("gemma3" if fmt == "ckpt" else "llama")
    path = (
        write_gguf(tmp_path / "m.gguf", cfg, random_state(cfg))
        if fmt == "gguf"
        else write_ckpt(tmp_path / "m.ckpt", cfg, random_state(cfg))
    )
    args = [str(path), "--out", str(tmp_path / "rep")]
    monkeypatch.setattr("tpa_compress.analyze.report.write_plots", lambda doc, out: [])  # drawn above
    if fmt == "ckpt":
        import tpa_compress.load.ckpt as ckmod  # a tiny config is not a published variant

        monkeypatch.setitem(ckmod.VARIANTS, "tiny", {k: getattr(cfg, k) for k in ckmod.VARIANTS["270m"]})
        args += ["--variant", "tiny"]
    res = cli(args)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["activations"] is None and doc["geometry"] and doc["weights"][0]["k"]
    res = cli(args + ["--data", str(tmp_path / "rep" / "report.md")])  # text, but no tokenizer
    assert res.exit_code != 0 and "needs a tokenizer" in str(res.exception)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--context", "4096,abc"], "--context"),
        (["--context", "0"], "--context"),
        (["--batch", "0"], "--batch"),
        (["--seq-len", "1"], "--seq-len"),
        (["--calib-tokens", "8", "--seq-len", "16"], "--calib-tokens"),
        (["--data", "/nonexistent/x.txt"], "not found"),
    ],
)
def test_command_bad_arguments_fail_before_loading(args, msg):
    res = cli(["/nonexistent/model.gguf", *args])  # the model is never opened
    assert isinstance(res.exception, TPAError) and msg in str(res.exception)
    assert "\n" not in str(res.exception)


def test_converted_model_prices_its_own_layout(tmp_path):
    from tpa_compress.convert import convert, write_output
    from tpa_compress.recipe import parse_recipe

    cfg = tiny_config("llama")
    ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), char_tokenizer(), "", "memory")
    rec = parse_recipe(
        {
            "calibration": {"tokens": 128, "seq_len": 32, "heldout_tokens": 0},
            "layers": [
                {
                    "select": "all",
                    "k": {"method": "activation_svd", "rank": 8},
                    "v": {"method": "activation_svd", "rank": 8},
                }
            ],
        },
        "t.yaml",
    )
    model = build_model(ck)
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    write_output(tmp_path / "conv", ck, rec, res, tensors, force=False)
    from tpa_compress.load import load_model

    conv = load_model(tmp_path / "conv")
    net = build_model(conv)
    doc = analyze(conv, net, WINDOWS, [64], 1)
    own = doc["cache"]["candidates"][0]
    # rank 8 of kv*D = 32 values per token, plus one exact sink token of 32 per layer
    # (K and V alike): (64 * 8 + 32) / (64 * 32)
    assert own["name"] == "as_converted"
    assert own["ratio_vs_original_bf16"]["64"] == pytest.approx((64 * 8 + 32) / (64 * 32))
    assert doc["weights"][0]["k"]["layer"]["energy_ranks"]["0.99"] <= 8  # rank-8 latent, probed
    assert doc["activations"][0]["k_pre"]["energy_ranks"]["0.99"] <= 8


def test_cache_table_equals_runtime_allocation(tmp_path):
    """analyze's prediction vs the bytes the generate runtime really allocates: the
    original model, and a converted one (latents + exact sink token)."""
    from tpa_compress.convert import convert
    from tpa_compress.recipe import parse_recipe
    from tpa_compress.runtime.runner import Runner

    cfg = tiny_config("gemma3", sliding_window=16)
    ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), char_tokenizer(), "", "memory")
    net = build_model(ck)
    doc = analyze(ck, net, None, [40], 3)
    orig = next(c for c in doc["cache"]["candidates"] if c["name"] == "original" and c["cache_dtype"] == "bf16")
    assert orig["total_bytes"]["40"] == Runner(net, batch=3, max_len=40, cache_dtype="bf16").cache.kv_bytes
    rec = parse_recipe(
        {
            "calibration": {"tokens": 128, "seq_len": 32, "heldout_tokens": 0},
            "layers": [
                {
                    "select": {"type": "global"},
                    "k": {"method": "activation_svd", "rank": 8},
                    "v": {"method": "activation_svd", "rank": 5},
                }
            ],
        },
        "t.yaml",
    )
    convert(ck, net, rec, eval_model=False, log=lambda m: None)
    ck.extra = {"tpa": True}
    doc = analyze(ck, net, None, [40], 3)
    own = doc["cache"]["candidates"][0]
    assert own["name"] == "as_converted"
    assert own["total_bytes"]["40"] == Runner(net, batch=3, max_len=40, cache_dtype="bf16").cache.kv_bytes
    assert own["total_bytes"]["40"] < orig["total_bytes"]["40"]
