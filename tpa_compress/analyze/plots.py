"""PNG plots of a report document (matplotlib, Agg backend: no display needed).

Every plot reads only the report document, so report.json alone can redraw them.
Layers are coloured by depth; global (full-attention) layers are drawn thick.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import cm  # noqa: E402

from ..layout import cache_bytes  # noqa: E402

ACT_TITLES = {
    "k_pre": "K, pre-norm (what a K latent keeps)",
    "k_post": "K after QK-norm",
    "v": "V",
    "v_out": "V through o_proj (output-aware)",
}
W_TITLES = {"q": "W_Q", "k": "W_K", "v": "W_V", "o": "W_O"}


def _layer_style(doc, i, n):
    glob = doc["model"]["layer_types"][i] == "global"
    return dict(color=cm.viridis(i / max(1, n - 1)), lw=2.0 if glob else 0.8, alpha=1.0 if glob else 0.7)


def _panel_grid(doc, spectra: dict, titles: dict, cumulative: bool, path: Path, suptitle: str):
    keys = [k for k in titles if spectra.get(k) and any(s is not None for s in spectra[k])]
    if not keys:
        return None
    fig, axes = plt.subplots(1 if len(keys) <= 2 else 2, 2, figsize=(11, 4 if len(keys) <= 2 else 7.5), squeeze=False)
    fig.subplots_adjust(hspace=0.38, wspace=0.25, right=0.86, top=0.9 if len(keys) > 2 else 0.85)
    for ax, k in zip(axes.flat, keys):
        n = len(spectra[k])
        for i, s in enumerate(spectra[k]):
            if s is None:
                continue
            y, acc = s, 0.0
            if cumulative:
                y = []
                for x in s:
                    acc += x
                    y.append(acc)
            ax.plot(range(1, len(y) + 1), y, **_layer_style(doc, i, n))
        if cumulative:
            for lv in doc["settings"]["energy_levels"]:
                ax.axhline(lv, color="grey", ls=":", lw=0.8)
            ax.set_ylabel("energy kept")
            ax.set_ylim(0, 1.01)
        else:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1e-7)  # zeroed QK-norm gains give ~1e-20 tails that hide the rest
            ax.set_ylabel("fraction of energy")
        ax.set_xlabel("rank")
        ax.set_title(titles[k], fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    _colorbar(fig, axes, len(doc["model"]["layer_types"]))
    fig.suptitle(suptitle, fontsize=11)
    return _save(fig, path)


def _colorbar(fig, axes, n):
    sm = cm.ScalarMappable(cmap="viridis", norm=matplotlib.colors.Normalize(0, n - 1))
    fig.colorbar(sm, cax=fig.add_axes([0.89, 0.15, 0.015, 0.7]), label="layer (thick: global)")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)  # fixed layouts: bbox "tight" doubles the (slow) log-axis layout
    plt.close(fig)
    return path


def ranks_by_layer(doc, path: Path):
    lv = "0.95"
    fig, ax = plt.subplots(figsize=(10, 4))
    x = list(range(doc["model"]["num_layers"]))
    for i, t in enumerate(doc["model"]["layer_types"]):
        if t == "global":
            ax.axvspan(i - 0.5, i + 0.5, color="0.9")
    for m, style in (("k", "C0"), ("v", "C1")):
        ys = [w[m]["layer"]["energy_ranks"][lv] if w.get(m) else None for w in doc["weights"]]
        ax.plot(x, ys, "--", color=style, marker="s", ms=3, label=f"W_{m.upper()} weights")
    if doc.get("activations"):
        for k, style in (("k_pre", "C0"), ("k_post", "C2"), ("v", "C1"), ("v_out", "C3")):
            ys = [a[k]["energy_ranks"][lv] if k in a else None for a in doc["activations"]]
            if any(y is not None for y in ys):
                ax.plot(x, ys, "-", color=style, marker="o", ms=3, label=f"{ACT_TITLES[k].split(' (')[0]} activations")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("layer (shaded: global)")
    ax.set_ylabel("rank for 95% energy")
    ax.set_ylim(0, doc["model"]["num_kv_heads"] * doc["model"]["head_dim"] * 1.05)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title("Rank needed for 95% energy: weights vs real activations", fontsize=11)
    return _save(fig, path)


def kv_bytes_vs_context(doc, path: Path):
    """Cache bytes vs context per layout, re-priced on a context grid with cache_bytes."""
    from .costs import candidates

    m, batch = doc["model"], doc["settings"]["batch"]
    cfg = _cfg(doc)
    lo, hi = min(doc["settings"]["contexts"]), max(doc["settings"]["contexts"])
    grid = [2**p for p in range(4, 40) if lo / 2 <= 2**p <= hi * 2]
    grid = sorted(set(grid) | set(doc["settings"]["contexts"]))
    fig, ax = plt.subplots(figsize=(9, 5))
    flagged = {r["name"] for r in doc["cache"]["candidates"] if r["flag"]}
    shown = [(c, "bf16") for c in candidates(cfg) if c.name not in flagged] + [
        (candidates(cfg)[0], "fp8"),
        (candidates(cfg)[0], "int8"),
    ]
    for j, (c, dt) in enumerate(shown):
        ys = [cache_bytes(c.layouts(cfg, dt), ctx, batch) / 2**20 for ctx in grid]
        orig = c.name == "original"
        ax.plot(
            grid,
            ys,
            "-" if dt == "bf16" else ":",
            lw=2.2 if orig else 1.2,
            label=f"{c.label} [{dt}]",
            color={"bf16": "k", "fp8": "0.45", "int8": "0.7"}[dt] if orig else f"C{j % 10}",
        )
    for ctx in doc["settings"]["contexts"]:
        ax.axvline(ctx, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(f"KV cache, MiB (batch {batch})")
    ax.set_title(f"{m['name']}: KV cache vs context (window-aware)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _cfg(doc):
    """The ModelConfig fields the pricing needs, rebuilt from the report."""
    from ..config import ModelConfig

    m = doc["model"]
    return ModelConfig(
        family=m["family"],
        vocab_size=1,
        hidden_size=m["hidden_size"],
        num_layers=m["num_layers"],
        num_heads=m["num_heads"],
        num_kv_heads=m["num_kv_heads"],
        head_dim=m["head_dim"],
        intermediate_size=1,
        rms_norm_eps=1e-6,
        rope_theta=1.0,
        max_position_embeddings=1,
        sliding_window=m["sliding_window"],
        layer_types=m["layer_types"],
    )


def qk_geometry(doc, path: Path):
    """Cross-layer cosine of the score operators and top-k direction overlap, diagonal
    (always 1) masked so the colour scale shows the off-diagonal structure."""
    import numpy as np

    geo = doc.get("geometry")
    if not geo or len(geo["layers"]) < 2:
        return None
    H = len(geo["cosine"])
    show = list(range(min(H, 4)))
    fig, axes = plt.subplots(2, len(show), figsize=(3.0 * len(show) + 1.2, 6.4), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.88, wspace=0.3, hspace=0.35)
    for r, (key, name, cmap) in enumerate(
        (("cosine", "cosine of W_Kᵀ S W_Q", "RdBu_r"), ("overlap", f"top-{geo['topk']} Q-direction overlap", "magma"))
    ):
        mats = [np.array(geo[key][h], dtype=float) for h in show]
        for m in mats:
            np.fill_diagonal(m, np.nan)
        vmax = max(float(np.nanmax(np.abs(m))) for m in mats) or 1.0
        for j, (h, m) in enumerate(zip(show, mats)):
            im = axes[r, j].imshow(m, vmin=-vmax if r == 0 else 0, vmax=vmax, cmap=cmap)
            axes[r, j].set_title(f"head {h}: {name}", fontsize=8)
            axes[r, j].set_xlabel("layer", fontsize=8)
        axes[r, 0].set_ylabel("layer")
        fig.colorbar(im, cax=fig.add_axes([0.9, 0.55 - 0.45 * r, 0.012, 0.33]))
    fig.suptitle(
        "Cross-layer Q/K geometry, diagonal masked" + (f" (first 4 of {H} query heads)" if H > 4 else ""), fontsize=11
    )
    return _save(fig, path)


def head_mode(doc, path: Path):
    acts = doc.get("activations")
    kv = doc["model"]["num_kv_heads"]
    if not acts or kv == 1 or not any(a.get("head_mode") for a in acts):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    x = [a["layer"] for a in acts if a.get("head_mode")]
    for ax, t in zip(axes[0], "kv"):
        for R in range(1, kv):
            for mode, ls in (("fixed", "--"), ("contextual", "-")):
                ax.plot(
                    x,
                    [a["head_mode"][t][mode][R - 1] for a in acts if a.get("head_mode")],
                    ls,
                    color=f"C{R - 1}",
                    marker="o",
                    ms=3,
                    label=f"R = {R}, {mode}",
                )
        ax.set_title(f"{t.upper()}: head-mode energy kept with R of {kv} terms", fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(doc: dict, out: Path) -> list[Path]:
    made = []
    sp = doc["spectra"]
    if sp.get("activations"):
        made.append(
            _panel_grid(
                doc,
                sp["activations"],
                ACT_TITLES,
                False,
                out / "activation_spectra.png",
                "Activation spectra per layer (eigenvalues of the covariance, as fractions)",
            )
        )
        made.append(
            _panel_grid(
                doc,
                sp["activations"],
                ACT_TITLES,
                True,
                out / "activation_energy.png",
                "Activation energy kept vs rank (dotted: 90/95/99%)",
            )
        )
    made.append(
        _panel_grid(
            doc,
            sp["weights"],
            W_TITLES,
            False,
            out / "weight_spectra.png",
            "Weight singular spectra per layer (σ², as fractions)",
        )
    )
    made.append(
        _panel_grid(
            doc,
            sp["weights"],
            W_TITLES,
            True,
            out / "weight_energy.png",
            "Weight energy kept vs rank (dotted: 90/95/99%)",
        )
    )
    made.append(ranks_by_layer(doc, out / "ranks_by_layer.png"))
    made.append(kv_bytes_vs_context(doc, out / "kv_bytes_vs_context.png"))
    made.append(qk_geometry(doc, out / "qk_geometry.png"))
    made.append(head_mode(doc, out / "head_mode.png"))
    return [p for p in made if p is not None]
