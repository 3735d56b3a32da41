"""convert on tiny random models: identity is exact, outputs reload and run, bad recipes fail clearly."""

import hashlib

import pytest
import torch

from tiny import logp, recipe, tiny_ckpt
from tpa_compress.calibrate import collect_stats
from tpa_compress.convert import convert, write_output
from tpa_compress.errors import TPAError
from tpa_compress.layout import cache_bytes, original_layouts
from tpa_compress.load import load_model
from tpa_compress.methods import LayerInputs, get_method
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model
from tpa_compress.ranks import Candidate, budget_ranks, energy_rank


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_identity_is_exact_and_round_trips(tmp_path, family):
    ck = tiny_ckpt(family)
    ref = logp(build_model(ck))
    model = build_model(ck)
    rec = recipe([{"select": "all", "k": {"method": "identity"}, "v": {"method": "identity"}}])
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    assert all(lay.k.kind == "tpa_fixed" and lay.k.rank == ck.config.num_kv_heads for lay in res.layouts)
    assert (logp(model) - ref).abs().max() < 1e-5
    write_output(tmp_path / "out", ck, rec, res, tensors, force=False)
    back = load_model(tmp_path / "out")
    assert back.extra["tpa"]["layers"][0]["k"]["kind"] == "tpa_fixed"
    assert (logp(build_model(back)) - ref).abs().max() < 1e-5
    assert res.totals["32768"]["ratio"] == pytest.approx(1.0)


def test_activation_svd_full_rank_is_exact_and_error_falls_with_rank():
    ck = tiny_ckpt("llama")
    model = build_model(ck)
    ref = logp(model)
    full = ck.config.kv_size
    errs = []
    for r in (8, 16, full):
        m = build_model(ck)
        rec = recipe(
            [
                {
                    "select": "all",
                    "k": {"method": "activation_svd", "rank": r},
                    "v": {"method": "activation_svd", "rank": r},
                }
            ]
        )
        res, _ = convert(ck, m, rec, eval_model=False, log=lambda m: None)
        errs.append(max(L.v["heldout_rel_error"] for L in res.layers))
        if r == full:
            assert (logp(m) - ref).abs().max() < 1e-4
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5


def test_output_aware_v_beats_plain_pca_through_o_proj():
    ck = tiny_ckpt("llama")
    model = build_model(ck)
    win = torch.randint(3, 90, (8, 32), generator=torch.Generator().manual_seed(2))
    st = collect_stats(model, win)
    a = model.layers[1].self_attn
    inp = LayerInputs(
        ck.config,
        1,
        a.q_proj.weight.double(),
        a.k_proj.weight.double(),
        a.v_proj.weight.double(),
        a.o_proj.weight.double(),
        st[1],
    )
    from tpa_compress.convert import activation_errors

    errs = {}
    for aware in (True, False):
        fz = get_method("activation_svd")({"output_aware": aware}).factorize(inp, "v", 6)
        proj = make_proj(ck.config.hidden_size, fz.component)
        proj.load_state_dict({k: v.float() for k, v in fz.tensors.items()})
        errs[aware] = activation_errors(ck.config, inp, proj, "v", st[1].sample)
    assert errs[True] < errs[False]


def test_conversion_is_deterministic(tmp_path):
    digests = []
    for run in range(2):
        ck = tiny_ckpt("gemma3")
        rec = recipe(
            [
                {
                    "select": {"type": "global"},
                    "k": {"method": "activation_svd", "rank": 12},
                    "v": {"method": "per_head_svd", "rank": 8},
                }
            ],
            seed=7,
        )
        res, t = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
        write_output(tmp_path / f"o{run}", ck, rec, res, t, force=False)
        digests.append(hashlib.sha256((tmp_path / f"o{run}" / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_refuses_non_empty_output_and_input_overwrite(tmp_path):
    ck = tiny_ckpt("llama")
    rec = recipe([{"select": "all", "v": {"method": "identity"}}])
    res, t = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    with pytest.raises(TPAError, match="not empty; pass --force"):
        write_output(tmp_path / "o", ck, rec, res, t, force=False)
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"
    ck.path = str(tmp_path / "o" / "model.gguf")
    with pytest.raises(TPAError, match="overwrite the input"):
        write_output(tmp_path / "o", ck, rec, res, t, force=True)


@pytest.mark.parametrize(
    "layers,needle",
    [
        ([{"select": "all", "k": {"methd": "identity"}}], "unknown key 'methd'; valid: method, params, rank"),
        ([{"select": "all", "k": {"method": "svd"}}], "unknown method 'svd'; valid:"),
        ([{"select": {"type": "local"}, "k": {"method": "identity"}}], "'local' is not valid; valid: sliding, global"),
        ([{"select": "all", "v": {"method": "activation_svd", "rank": {"energy": 1.5}}}], "0 < energy <= 1"),
        ([{"select": "all", "v": {"method": "activation_svd", "rank": "budget"}}], "no top-level 'budget'"),
        ([{"select": "all", "v": {"method": "activation_svd", "params": {"whiten": 1}}}], "unknown parameter 'whiten'"),
    ],
)
def test_bad_recipes(layers, needle):
    with pytest.raises(TPAError, match=".*" + needle.replace("(", r"\(").replace("'", "'")):
        recipe(layers)


def test_rank_out_of_range_for_model():
    ck = tiny_ckpt("llama")
    rec = recipe([{"select": "all", "v": {"method": "activation_svd", "rank": 999}}])
    with pytest.raises(TPAError, match="rank 999 out of range .* valid: 1..32"):
        convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)


def test_energy_rank_matches_direct_svd():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 6, generator=g) @ torch.randn(6, 40, generator=g)  # rank 6
    s2 = torch.linalg.svdvals(a.double()) ** 2
    assert energy_rank(s2, 0.999999) == 6
    frac = s2.cumsum(0) / s2.sum()
    assert energy_rank(s2, 0.9) == int((frac < 0.9).sum()) + 1


def test_budget_spends_where_error_falls_fastest():
    flat = torch.ones(16)
    steep = torch.tensor([10.0] + [0.01] * 15)
    c = [Candidate((0, "k"), flat, 1.0, 1, 16), Candidate((1, "k"), steep, 1.0, 1, 16)]
    r = budget_ranks(c, 10)
    assert r[(1, "k")] == 1 and r[(0, "k")] == 9
    with pytest.raises(TPAError, match="below the minimum"):
        budget_ranks(c, 1)


def test_cache_bytes_window_aware_gemma3_1b():
    from tpa_compress.load.ckpt import variant_config

    cfg = variant_config("1b")
    lay = original_layouts(cfg, "bf16")
    per_token = 2 * 256 * 2  # K + V, 1 KV head, head_dim 256, bf16
    glob, slide = cfg.layer_types.count("global"), cfg.layer_types.count("sliding")
    assert (glob, slide) == (4, 22)
    assert cache_bytes(lay, 32768) == per_token * (4 * 32768 + 22 * 512)
    assert cache_bytes(lay, 100, batch=3) == 3 * per_token * 26 * 100


def test_energy_ranks_respect_method_rank_step():
    ck = tiny_ckpt("llama")  # kv_heads = 2
    rec = recipe(
        [
            {
                "select": "all",
                "k": {"method": "per_head_svd", "rank": {"energy": 0.9}},
                "v": {"method": "tucker_shared", "rank": {"energy": 0.9}},
            }
        ]
    )
    res, _ = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    for lay in res.layouts:
        assert lay.k.rank % 2 == 0 and lay.v.rank % 2 == 0


def test_convert_heldout_error_is_convert_measurement():
    ck = tiny_ckpt("gemma3", num_kv_heads=2, num_heads=4)
    rec = recipe([{"select": {"layers": "0"}, "k": {"method": "activation_svd", "rank": 8}}])
    model = build_model(ck)
    res, _ = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    k = res.layers[0].k
    assert k["method"] == "activation_svd" and 0 < k["heldout_rel_error"] < 1


def test_rank_limits_bound_energy_and_budget_ranks():
    ck = tiny_ckpt("llama")  # kv_size 32
    rec = recipe(
        [
            {
                "select": "all",
                "k": {"method": "activation_svd", "rank": {"energy": 0.9999}},
                "v": {"method": "activation_svd", "rank": "budget"},
            }
        ],
        budget={"fraction": 0.6, "context": 64},
        rank_limits={"multiple": 8, "max": 16},
    )
    res, _ = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    ks = [lay.k.rank for lay in res.layouts]
    vs = [lay.v.rank for lay in res.layouts]
    assert all(r == 16 for r in ks), ks  # 99.99% energy wants more than the cap
    assert all(r % 8 == 0 and 8 <= r <= 16 for r in vs), vs
    free = recipe([{"select": "all", "k": {"method": "activation_svd", "rank": {"energy": 0.9999}}}])
    res, _ = convert(ck, build_model(ck), free, eval_model=False, log=lambda m: None)
    assert any(lay.k.rank > 16 for lay in res.layouts)  # so the cap above did something


@pytest.mark.parametrize(
    "limits,rank,needle",
    [
        ({"multiple": 16}, 24, "rank 24 is outside rank_limits; valid: a multiple of 16"),
        ({"multiple": 8, "max": 16}, 24, "rank 24 is outside rank_limits; valid: a multiple of 8 up to 16"),
        ({"multiple": 8, "max": {"v": 16}}, 24, None),  # the cap is V's: K 24 is fine
    ],
)
def test_fixed_rank_outside_rank_limits(limits, rank, needle):
    ck = tiny_ckpt("llama")
    rec = recipe([{"select": "all", "k": {"method": "activation_svd", "rank": rank}}], rank_limits=limits)
    if needle is None:
        convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
        return
    with pytest.raises(TPAError, match=needle):
        convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)


@pytest.mark.parametrize(
    "limits,needle",
    [
        ({"multipl": 16}, "rank_limits: unknown key 'multipl'; valid: max, multiple"),
        ({"multiple": 0}, "rank_limits.multiple: 0 is not valid; expected an integer >= 1"),
        ({"multiple": 16, "max": 8}, r"rank_limits.max \(k\) 8 is below rank_limits.multiple 16"),
        ({"max": {"k": 8, "q": 8}}, "rank_limits.max: unknown key 'q'; valid: k, v"),
        ({"max": {"v": 0}}, "rank_limits.max.v: 0 is not valid"),
    ],
)
def test_bad_rank_limits(limits, needle):
    with pytest.raises(TPAError, match=needle):
        recipe([{"select": "all", "k": {"method": "identity"}}], rank_limits=limits)


def test_chosen_full_width_rank_keeps_the_original(tmp_path):
    ck = tiny_ckpt("gemma3", num_kv_heads=2, num_heads=4)
    rec = recipe(
        [
            {
                "select": "all",
                "k": {"method": "activation_svd", "rank": "budget"},
                "v": {"method": "activation_svd", "rank": {"energy": 1.0}},
            }
        ],
        budget={"fraction": 1.0, "context": 64},
        k_scale=False,
    )  # (the factors cost bytes)
    model = build_model(ck)
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    for lay, rep in zip(res.layouts, res.layers, strict=True):
        assert lay.k.kind == lay.v.kind == "full" and not lay.k_scale and lay.sink == 0
        assert rep.k["method"] == "keep" and "chose the full width" in rep.k["note"]
    assert res.notes[0] == "layer 0 k: activation_svd budget chose the full width 32; kept exact"
    assert not tensors
    assert torch.equal(logp(model), logp(build_model(ck)))
    write_output(tmp_path / "o", ck, rec, res, tensors, force=False, model=model)
    assert (
        "## Notes\n\n- layer 0 k: activation_svd budget chose the full width 32; kept exact\n"
        in (tmp_path / "o" / "report.md").read_text()
    )


@pytest.mark.parametrize("rk,rv,noted", [(24, 40, True), (128, 144, True), (32, 48, False), (96, 192, False)])
def test_convert_notes_ranks_the_gpu_kernel_does_not_take(rk, rv, noted):
    ck = tiny_ckpt("gemma3", head_dim=256, num_kv_heads=1, num_heads=4)
    rec = recipe(
        [
            {
                "select": {"type": "global"},
                "k": {"method": "activation_svd", "rank": rk},
                "v": {"method": "activation_svd", "rank": rv},
            }
        ]
    )
    logs = []
    res, _ = convert(ck, build_model(ck), rec, eval_model=False, log=logs.append)
    assert [n for n in res.notes if "Hopper" in n] == [m[len("note: ") :] for m in logs if "Hopper" in m]
    notes = [m for m in logs if "not ranks the Hopper decode kernel takes" in m]
    assert (
        len(notes) == 1
        and notes[0].startswith(f"note: layer (K/V rank) 5 ({rk}/{rv}): not ranks the Hopper decode kernel takes")
    ) == noted, logs


@pytest.mark.parametrize("cache_dtype", ["int8", "fp8", "fp16"])
def test_no_kernel_rank_note_where_the_kernel_cannot_run(cache_dtype):
    """The Hopper kernel decodes bf16 caches only: other caches decode in Triton anyway."""
    ck = tiny_ckpt("gemma3", head_dim=256, num_kv_heads=1, num_heads=4)
    rec = recipe(
        [
            {
                "select": {"type": "global"},
                "k": {"method": "activation_svd", "rank": 24},
                "v": {"method": "activation_svd", "rank": 40},
            }
        ],
        cache_dtype=cache_dtype,
    )
    res, _ = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    assert not [n for n in res.notes if "Hopper" in n]


def test_rank_limits_max_per_target():
    ck = tiny_ckpt("llama")
    rec = recipe(
        [
            {
                "select": "all",
                "k": {"method": "activation_svd", "rank": {"energy": 0.9999}},
                "v": {"method": "activation_svd", "rank": {"energy": 0.9}},
            }
        ],
        rank_limits={"multiple": 8, "max": {"k": 8}},
    )
    res, _ = convert(ck, build_model(ck), rec, eval_model=False, log=lambda m: None)
    assert all(lay.k.rank == 8 for lay in res.layouts)
    assert any(lay.v.kind == "latent" and lay.v.rank > 8 for lay in res.layouts)
    assert all(lay.v.rank % 8 == 0 for lay in res.layouts if lay.v.kind == "latent")


def test_converting_a_converted_folder_is_refused_before_calibration(tmp_path):
    ck = tiny_ckpt("gemma3")
    model = build_model(ck)
    rec = recipe([{"select": {"type": "global"}, "v": {"method": "activation_svd", "rank": 8}}])
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    write_output(tmp_path / "out", ck, rec, res, tensors, force=False)
    back = load_model(tmp_path / "out")
    again = build_model(back)
    again.layers[0].self_attn.register_forward_hook(lambda *a: pytest.fail("calibration ran"))
    glob = [i for i, t in enumerate(ck.config.layer_types) if t == "global"]
    with pytest.raises(TPAError, match=f"already converted \\(layers {', '.join(map(str, glob))} factorized\\)"):
        convert(back, again, rec, eval_model=False, log=lambda m: None)


def test_budget_ranks_do_not_depend_on_the_cache_format_and_ratio_is_vs_bf16():
    ck = tiny_ckpt("gemma3")
    rules = [
        {
            "select": "all",
            "k": {"method": "activation_svd", "rank": "budget"},
            "v": {"method": "activation_svd", "rank": "budget"},
        }
    ]
    got = {}
    for cd in ("bf16", "int4"):
        res, _ = convert(
            ck,
            build_model(ck),
            recipe(
                rules,
                budget={"fraction": 0.5, "context": 64},
                cache_dtype=cd if cd == "bf16" else "int4:group=4,recent=4",
            ),
            eval_model=cd == "int4",
            log=lambda m: None,
        )
        got[cd] = res
    assert [(lay.k.rank, lay.v.rank) for lay in got["bf16"].layouts] == [
        (lay.k.rank, lay.v.rank) for lay in got["int4"].layouts
    ]
    bf, q = got["bf16"].totals["32768"], got["int4"].totals["32768"]
    assert bf["original_bytes"] == q["original_bytes"]  # both against the bf16 original
    assert q["ratio"] < bf["ratio"]  # the quantized cache shows in the ratio
    assert set(got["int4"].perplexity) and all(p["after"]["perplexity"] > 0 for p in got["int4"].perplexity.values())
