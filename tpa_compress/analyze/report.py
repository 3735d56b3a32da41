"""Render a report document: report.json (machines), report.md (people), terminal tables.

Tables are built once (`tables`) and rendered twice (markdown, rich) so the terminal
and the file never disagree. The JSON schema is documented in docs/analyze.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..save import write_text_atomic
from .plots import write_plots

NAMES = {"k_pre": "K pre-norm", "k_post": "K post-norm", "v": "V", "v_out": "V·o_proj"}


def _mib(b: float) -> str:
    return f"{b / 2**30:,.2f} GiB" if b >= 2**30 else f"{b / 2**20:,.2f} MiB"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ranks(s: dict | None) -> str:
    return "–" if not s else "/".join(str(v) for v in s["energy_ranks"].values())


def dumps(obj, indent: int = 0) -> str:
    """JSON with one line per field but flat lists of numbers on one line: readable,
    diffable, and a third of `indent=1`'s size for the spectra."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not all(x is None or isinstance(x, (int, float, str)) for x in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "))


def _shown_candidates(doc) -> list[dict]:
    """bf16 rows of every candidate, plus the quantized original and half-rank latent."""
    D = doc["model"]["num_kv_heads"] * doc["model"]["head_dim"]
    extra = {"original", f"latent_kv_r{max(1, D // 2)}"}
    return [
        r
        for r in doc["cache"]["candidates"]
        if r["cache_dtype"] == "bf16" or r["name"] in extra or r["name"] == "as_converted"
    ]


def tables(doc: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(key, title, header, rows) per table; a table whose measurements the document lacks is left out."""
    made = (
        _layer_types_table(doc),
        _candidates_table(doc),
        _activations_table(doc),
        _head_mode_table(doc),
        _weights_table(doc),
        _geometry_table(doc),
    )
    return [t for t in made if t is not None]


def _contexts(doc: dict) -> list[str]:
    return [str(c) for c in doc["settings"]["contexts"]]


def _layer_types_table(doc: dict):
    """The original cache's bytes by layer type at each context."""
    ctx = _contexts(doc)
    rows = [
        [r["type"], str(r["layers"]), str(r["window"] or "–"), f"{r['bytes_per_token_per_layer']:g}"]
        + [f"{r['tokens_held'][c]:,} tok, {_mib(r['bytes'][c])} ({100 * r['share'][c]:.1f}%)" for c in ctx]
        for r in doc["cache"]["layer_types"]
    ]
    return (
        "layer_types",
        f"Original KV cache by layer type (bf16, batch {doc['settings']['batch']})",
        ["layers", "count", "window", "bytes/token/layer"] + [f"at {int(c):,} tokens" for c in ctx],
        rows,
    )


def _candidates_table(doc: dict):
    """Each shown candidate layout's cache size and the energy it keeps."""
    ctx = _contexts(doc)
    rows = []
    for r in _shown_candidates(doc):
        e = r.get("energy_kept") or {}
        rows.append(
            [r["label"], r["cache_dtype"], f"{r['bytes_per_token_all_layers']:,.0f}"]
            + [f"{_mib(r['total_bytes'][c])} ({r['ratio_vs_original_bf16'][c]:.3f}×)" for c in ctx]
            + [
                _pct(e.get("k", {}).get("mean")),
                _pct(e.get("v", {}).get("mean")),
                {"larger": "LARGER", "no_saving": "no saving", None: ""}[r["flag"]],
            ]
        )
    return (
        "candidates",
        "Candidate layouts (× = vs original bf16; B/token: all layers; energy kept: mean over the layers touched)",
        ["layout", "cache", "B/token"] + [f"at {int(c):,} tokens" for c in ctx] + ["K energy", "V energy", "flag"],
        rows,
    )


def _activations_table(doc: dict):
    """Activation energy ranks per layer; None without activation measurements."""
    if not doc.get("activations"):
        return None
    m = doc["model"]
    rows, names = [], {k: v for k, v in NAMES.items() if k != "k_post" or m["qk_norm"]}
    for a in doc["activations"]:
        rows.append(
            [str(a["layer"]), a["type"]]
            + [_ranks(a.get(k)) for k in names]
            + [f"{a[k]['effective_rank']:.0f}" if a.get(k) else "–" for k in ("k_pre", "v_out")]
            + [_pct(a.get("k_mean_energy_fraction"))]
        )
    return (
        "activations",
        f"Activation energy ranks at 90/95/99% (of {m['num_kv_heads'] * m['head_dim']})"
        f", {doc['settings']['calibration']['tokens']:,} calibration tokens",
        ["layer", "type"] + list(names.values()) + ["eff. rank K", "eff. rank V·o", "K mean energy"],
        rows,
    )


def _head_mode_table(doc: dict):
    """Energy kept by R rank-1 head terms, fixed vs contextual; None without activations or with one KV head."""
    if not doc.get("activations") or doc["model"]["num_kv_heads"] <= 1:
        return None
    kv = doc["model"]["num_kv_heads"]
    rows = [
        [str(a["layer"])]
        + [
            f"{_pct(a['head_mode'][t]['fixed'][R - 1])} / {_pct(a['head_mode'][t]['contextual'][R - 1])}"
            for t in "kv"
            for R in range(1, kv)
        ]
        for a in doc["activations"]
        if a.get("head_mode")
    ]
    return (
        "head_mode",
        f"Head mode: energy kept by R of {kv} rank-1 terms, fixed / contextual head factor",
        ["layer"] + [f"{t.upper()} R={R}" for t in "kv" for R in range(1, kv)],
        rows,
    )


def _weights_table(doc: dict):
    """Each projection's 95% energy rank, whole and per head."""
    rows = []
    for w in doc["weights"]:
        row = [str(w["layer"]), w["type"]]
        for k in "qkvo":
            s = w.get(k)
            if not s:
                row.append("–")
                continue
            hr = [h["energy_ranks"]["0.95"] for h in s["heads"]]
            row.append(f"{s['layer']['energy_ranks']['0.95']} (heads {min(hr)}–{max(hr)})")
        rows.append(row)
    return (
        "weights",
        "Weight energy ranks at 95%: whole matrix (per-head range)",
        ["layer", "type", "W_Q", "W_K", "W_V", "W_O"],
        rows,
    )


def _geometry_table(doc: dict):
    """Q/K geometry per layer; None without geometry measurements."""
    geo = doc.get("geometry")
    if not geo:
        return None
    rows = []
    L = len(geo["layers"])
    for lay in geo["layers"]:
        i = lay["layer"]
        hs = lay["heads"]
        nxt = (sum(geo["cosine"][h][i][i + 1] for h in range(len(hs))) / len(hs)) if i + 1 < L else None
        rows.append(
            [
                str(i),
                lay["type"],
                " ".join(f"{h['fro_norm']:.3g}" for h in hs),
                " ".join(str(h["energy_ranks"]["0.95"]) for h in hs),
                " ".join(f"{100 * h['positive_fraction']:.0f}%" for h in hs),
                "–" if nxt is None else f"{nxt:.3f}",
            ]
        )
    return (
        "geometry",
        "Q/K geometry per query head: g = W_Kᵀ S W_Q",
        ["layer", "type", "‖g‖_F", "95% rank of g", "positive part", "cos(g, next layer)"],
        rows,
    )


def _md_table(title, head, rows) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


PLOT_NOTES = {
    "kv_bytes_vs_context.png": "KV-cache bytes vs context length per layout (flagged layouts left out).",
    "activation_spectra.png": "Activation spectra per layer.",
    "activation_energy.png": "Activation energy kept vs rank.",
    "ranks_by_layer.png": "Rank for 95% energy per layer: weights (dashed) vs activations (solid).",
    "head_mode.png": "Head-mode energy kept: fixed vs contextual head factors.",
    "weight_spectra.png": "Weight singular spectra per layer.",
    "weight_energy.png": "Weight energy kept vs rank.",
    "qk_geometry.png": "Cross-layer Q/K operator similarity and principal-direction overlap.",
}


PLOTS_AFTER = {
    "candidates": ["kv_bytes_vs_context.png"],
    "activations": ["activation_spectra.png", "activation_energy.png", "ranks_by_layer.png"],
    "head_mode": ["head_mode.png"],
    "weights": ["weight_spectra.png", "weight_energy.png"],
    "geometry": ["qk_geometry.png"],
}


def markdown(doc: dict, plots: list[Path], command: str | None = None) -> str:
    m, cal = doc["model"], doc["settings"]["calibration"]
    types = doc["model"]["layer_types"]
    lines = [f"# KV-cache analysis: {m['name']}", ""]
    if command:
        lines += [f"Regenerate: `{command}`", ""]
    split = (
        f"{types.count('sliding')} sliding, window {m['sliding_window']}; {types.count('global')} global"
        if "sliding" in types
        else "all global"
    )
    kv = f"{m['num_kv_heads']} KV head{'s' if m['num_kv_heads'] > 1 else ''}"
    lines += [
        f"- Model: {m['family']}, {m['num_layers']} layers ({split}), {m['num_heads']} query heads, "
        f"{kv} × head_dim {m['head_dim']}, hidden {m['hidden_size']}, "
        f"{m['n_params'] / 1e6:.0f}M parameters ({m['format']}).",
        "- Calibration: "
        + (
            f"{cal['tokens']:,} tokens ({cal['windows']} windows × {cal['seq_len']}, "
            f"{'BOS-led' if cal['bos'] else 'no BOS'}) from {', '.join(cal['files'])}."
            if cal
            else "none (no tokenizer): activation sections skipped."
        ),
        f"- Contexts priced: {', '.join(f'{c:,}' for c in doc['settings']['contexts'])} tokens, "
        f"batch {doc['settings']['batch']}. Machine-readable: `report.json` (schema in docs/analyze.md).",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {f}" for f in doc["findings"]] + [""]
    names = {p.name for p in plots}
    for key, title, head, rows in tables(doc):
        lines.append(_md_table(title, head, rows))
        for name in PLOTS_AFTER.get(key, []):
            if name in names:
                lines += [f"![{PLOT_NOTES[name]}]({name})", "", f"*{PLOT_NOTES[name]}*", ""]
    flagged = [r for r in doc["cache"]["candidates"] if r["flag"] and r["cache_dtype"] == "bf16"]
    if flagged:
        lines += (
            ["### Flagged layouts", ""]
            + [f"- **{r['label']}** ({r['flag']}): {'; '.join(r['reasons'])}" for r in flagged]
            + [""]
        )
    lines += [
        "## How these numbers are computed",
        "",
        "- Energy ranks: smallest r whose top-r spectrum keeps 90/95/99% of the total (the rule "
        "convert's `rank: {energy: f}` uses). Effective rank: exp(entropy of σ/Σσ).",
        "- Activation spectra: eigenvalues of the covariance of K (pre-norm) and V on the calibration "
        "text (mean removed: a latent keeps it as a bias); V·o_proj weights V's error by what o_proj does "
        "with it (metric Σ_h W_O,hᵀ W_O,h), the view that predicts perplexity. K post-norm: after the "
        "QK-norm, before RoPE.",
        "- Head mode: energy of the kv_heads × head_dim matrix K_t of each token kept by R rank-1 terms; "
        "fixed: one head factor for all tokens (PCA of the head mode); contextual: per token (its top-R "
        "singular values), the most contextual TPA can keep. Uncentred.",
        "- Cache bytes: `layout.cache_bytes` (window-aware; int8 adds one fp16 scale per token and "
        "component; a latent K on a QK-norm model adds its cached fp32 norm factor per KV head).",
        "",
    ]
    return "\n".join(lines)


def write_report(doc: dict, out: Path, command: str | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(doc, out)
    write_text_atomic(out / "report.json", dumps(doc) + "\n")
    write_text_atomic(out / "report.md", markdown(doc, plots, command))
    return [out / "report.json", out / "report.md", *plots]


def print_summary(doc: dict, console, skip: tuple[str, ...] = ("weights", "geometry")) -> None:
    """The terminal view: the tables a user acts on (weights and geometry are in report.md)."""
    from rich.table import Table

    for key, title, head, rows in tables(doc):
        if key in skip:
            continue
        t = Table(title=title, title_justify="left", show_lines=False)
        for h in head:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        console.print(t)
    console.print("[bold]Findings[/bold]")
    for f in doc["findings"]:
        console.print(f"• {f}", highlight=False)
