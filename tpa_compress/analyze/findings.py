"""What the measurements mean for a user: energy each candidate layout keeps, and the
plain-language findings at the top of the report. Reads only the report document."""

from __future__ import annotations


def _kept(cum: list[float], rank: int) -> float:
    """Cumulative-energy list (index r-1 = energy kept at rank r) at `rank`."""
    return 1.0 if rank >= len(cum) else cum[rank - 1]


def _cum(norm_spectrum: list[float]) -> list[float]:
    out, s = [], 0.0
    for x in norm_spectrum:
        s += x
        out.append(s)
    return out


def energy_kept(doc: dict, row: dict) -> dict | None:
    """{"k": {"mean", "min"}, "v": ...}: activation energy a candidate keeps, per layer it
    touches. Latents: centred PCA (K pre-norm, V through o_proj, mean kept as bias);
    TPA: head-mode energy (fixed or contextual). None without activations."""
    acts, sp = doc.get("activations"), doc.get("spectra", {}).get("activations")
    if not acts or row["k"] is None:
        return None
    kv = doc["model"]["num_kv_heads"]
    out = {}
    for t, spec_name in (("k", "k_pre"), ("v", "v_out")):
        comp = row[t]
        vals = []
        for a in acts:
            if row["scope"] == "global" and a["type"] != "global":
                continue
            if comp["kind"] == "full":
                vals.append(1.0)
            elif comp["kind"] == "latent":
                if sp[spec_name][a["layer"]] is None:
                    continue
                vals.append(_kept(_cum(sp[spec_name][a["layer"]]), comp["rank"]))
            elif kv == 1:  # one head: any R >= 1 reproduces it exactly
                vals.append(1.0)
            elif a.get("head_mode"):
                mode = "fixed" if comp["kind"] == "tpa_fixed" else "contextual"
                vals.append(_kept(a["head_mode"][t][mode], comp["rank"]))
        if vals:
            out[t] = {"mean": round(sum(vals) / len(vals), 6), "min": round(min(vals), 6)}
    return out or None


def _row(doc, name, dtype="bf16"):
    return next((r for r in doc["cache"]["candidates"] if r["name"] == name and r["cache_dtype"] == dtype), None)


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def findings(doc: dict) -> list[str]:
    """The report's plain-language findings, in reading order; each part adds only what the document measured."""
    return [
        *_where_the_bytes_are(doc),
        *_head_mode(doc),
        *_feature_mode(doc),
        *_quantization(doc),
        *_flagged(doc),
        *_geometry(doc),
    ]


def _biggest_context(doc: dict) -> str:
    return str(max(doc["settings"]["contexts"]))


def _where_the_bytes_are(doc: dict) -> list[str]:
    """The global layers' share of the original cache, when layer types differ."""
    types = doc["cache"]["layer_types"]
    glob = next((r for r in types if r["type"] == "global"), None)
    if not glob or len(types) <= 1:
        return []
    big = _biggest_context(doc)
    win = next(r["window"] for r in types if r["type"] == "sliding")
    return [
        f"Where the bytes are: at {int(big):,} tokens the {glob['layers']} global layers hold "
        f"{100 * glob['share'][big]:.1f}% of the original KV cache (sliding layers hold at most "
        f"{win} tokens). Compression spent on global layers is worth the most."
    ]


def _head_mode(doc: dict) -> list[str]:
    """What head-mode TPA can save: nothing with one KV head, else the energy R = heads - 1 keeps."""
    kv = doc["model"]["num_kv_heads"]
    if kv == 1:
        return [
            "Head mode: one KV head, so head-mode TPA cannot compress: fixed R = 1 is the original "
            "cache, and contextual TPA caches a and b, which is always larger (flagged in the table)."
        ]
    if not doc.get("activations"):
        return []
    hm = [a["head_mode"] for a in doc["activations"] if a.get("head_mode")]
    R = kv - 1
    f = {t: _mean([h[t]["fixed"][R - 1] for h in hm]) for t in "kv"}
    c = {t: _mean([h[t]["contextual"][R - 1] for h in hm]) for t in "kv"}
    return [
        f"Head mode ({kv} KV heads): a fixed head factor of rank {R} keeps {100 * f['k']:.1f}% of K "
        f"and {100 * f['v']:.1f}% of V energy (mean over layers); contextual factors keep "
        f"{100 * c['k']:.1f}% / {100 * c['v']:.1f}%. The closer fixed is to {100 * R / kv:.0f}% "
        "(R/heads), the more independent the heads are and the less head-mode TPA can save."
    ]


def _feature_mode(doc: dict) -> list[str]:
    """Activation ranks, what a half-size latent keeps (all layers and global only), weights vs
    activations, and the mean K vector; nothing without activation measurements."""
    acts = doc.get("activations")
    if not acts:
        return []
    m, ctx = doc["model"], doc["settings"]["contexts"]
    big = _biggest_context(doc)
    out = []
    D = m["num_kv_heads"] * m["head_dim"]
    r95 = {k: [a[k]["energy_ranks"]["0.95"] for a in acts if k in a] for k in ("k_pre", "k_post", "v", "v_out")}
    names = {"k_pre": "K (pre-norm)", "k_post": "K (after QK-norm)", "v": "V", "v_out": "V through o_proj"}
    parts = [f"{names[k]} {_mean(v):.0f} (range {min(v)}–{max(v)})" for k, v in r95.items() if v]
    out.append(
        f"Feature mode: dimensions needed for 95% of the activation energy, of {D}, mean over "
        f"layers: " + "; ".join(parts) + "."
    )
    half = _row(doc, f"latent_kv_r{max(1, D // 2)}")
    if half and half.get("energy_kept"):
        e = half["energy_kept"]
        out.append(
            f"A latent of rank {D // 2} (half the cache) keeps {100 * e['k']['mean']:.1f}% of K and "
            f"{100 * e['v']['mean']:.1f}% of V-through-o_proj energy (worst layer "
            f"{100 * e['k']['min']:.1f}% / {100 * e['v']['min']:.1f}%)."
        )
    glob_only = _row(doc, f"latent_kv_r{max(1, D // 2)}_global")
    if glob_only:
        ratio = glob_only["ratio_vs_original_bf16"]
        out.append(
            f"The same latent on the global layers only: {ratio[big]:.3f}× the original cache at "
            f"{int(big):,} tokens ({ratio[str(min(ctx))]:.3f}× at {min(ctx):,}), with every sliding "
            "layer left exact."
        )
    w95 = [w["v"]["layer"]["energy_ranks"]["0.95"] for w in doc["weights"] if w.get("v")]
    if w95 and r95["v_out"]:
        out.append(
            f"Weights vs activations: W_V's singular spectrum reaches 95% at rank {_mean(w95):.0f} "
            f"(mean), the real V-through-o_proj activations at {_mean(r95['v_out']):.0f}: weight "
            "spectra alone misjudge what a latent keeps (the primer measured weight-SVD V at rank "
            "128 as catastrophic)."
        )
    mef = [a["k_mean_energy_fraction"] for a in acts if "k_mean_energy_fraction" in a]
    if mef:
        out.append(
            f"The mean K vector carries {100 * _mean(mef):.1f}% of K's second moment (mean over "
            "layers): keeping it as a bias, as convert does, spends no rank on it."
        )
    return out


def _quantization(doc: dict) -> list[str]:
    """What int8 and fp8 alone do to the original cache."""
    i8, f8 = _row(doc, "original", "int8"), _row(doc, "original", "fp8")
    if not (i8 and f8):
        return []
    big = _biggest_context(doc)
    return [
        f"Cache quantization is orthogonal: int8 (per-token scales) stores the original cache in "
        f"{i8['ratio_vs_original_bf16'][big]:.3f}× the bf16 bytes, fp8 in "
        f"{f8['ratio_vs_original_bf16'][big]:.3f}×; it multiplies "
        "with any layout below and is the baseline every factorization must beat."
    ]


def _flagged(doc: dict) -> list[str]:
    """The candidate layouts larger than the original."""
    flagged = sorted({r["label"] for r in doc["cache"]["candidates"] if r["flag"] == "larger"})
    return ["Larger than the original (flagged, do not use): " + "; ".join(flagged) + "."] if flagged else []


def _geometry(doc: dict) -> list[str]:
    """How alike adjacent layers' score operators are and how positive they are; needs two layers."""
    geo = doc.get("geometry")
    if not (geo and geo["layers"] and len(geo["layers"]) > 1):
        return []
    cos = geo["cosine"]
    adj = [cos[h][i][i + 1] for h in range(len(cos)) for i in range(len(cos[h]) - 1)]
    pos = [hd["positive_fraction"] for lay in geo["layers"] for hd in lay["heads"]]
    return [
        f"Q/K geometry: the score operators W_Kᵀ W_Q of adjacent layers have cosine similarity "
        f"{_mean(adj):.3f} on average (1 = same operator); the symmetric parts are "
        f"{100 * _mean(pos):.0f}% positive on average (100% = a head scores like with like)."
    ]
