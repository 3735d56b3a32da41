"""`tpa-compress analyze`: what can be compressed, at what cost, and what cannot,
measured before any conversion.

`analyze(...)` returns one JSON-able document (schema: docs/analyze.md); report.py
renders it as a terminal summary, report.md, report.json and PNG plots. Stages:
weights.py (weight spectra), activations.py (K/V activation spectra and head mode,
one streamed pass), geometry.py (Q/K operators), costs.py (KV-cache table, priced by
layout.cache_bytes), findings.py (what it means).
"""

from __future__ import annotations

import time

import torch

from .costs import cost_table, layer_type_table
from .findings import energy_kept, findings
from .spectra import ENERGY_LEVELS

SCHEMA = "tpa-compress.analyze"
SCHEMA_VERSION = 1


def _norm(e: torch.Tensor) -> list[float]:
    """A spectrum as fractions of its total, 4 significant digits (keeps report.json small)."""
    e = e.double().clamp_min(0)
    return [float(f"{x:.4g}") for x in (e / e.sum().clamp_min(1e-300)).tolist()]


def _strip(d: dict, key: str = "energy") -> dict:
    return {k: v for k, v in d.items() if k != key}


def model_section(ckpt, cfg) -> dict:
    return {
        "name": cfg.name or str(ckpt.path),
        "path": str(ckpt.path),
        "format": ckpt.format,
        "family": cfg.family,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "layer_types": list(cfg.layer_types),
        "sliding_window": cfg.sliding_window,
        "qk_norm": cfg.qk_norm,
        "converted": bool((ckpt.extra or {}).get("tpa")),
        "n_params": cfg.n_params(),
        "fp32_bytes": 4 * cfg.n_params(),
    }


def analyze(
    ckpt,
    model,
    windows: torch.Tensor | None,
    contexts: list[int],
    batch: int,
    calibration: dict | None = None,
    stage=None,
    device: str = "cpu",
) -> dict:
    """Run every stage; `stage(name, total)` returns a progress callback (i, n) or None."""
    from ..methods.layers import layout_of_model
    from .activations import activation_spectra
    from .geometry import qk_geometry
    from .weights import weight_spectra

    cfg = model.cfg
    stage = stage or (lambda name, total: None)
    timing = {}
    t = time.time()
    w = weight_spectra(model, stage("weight spectra", cfg.num_layers))
    timing["weights"] = time.time() - t
    acts = None
    if windows is not None:
        t = time.time()
        acts = activation_spectra(model, windows, stage("activations", windows.shape[0]), device=device)
        timing["activations"] = time.time() - t
    t = time.time()
    geo = qk_geometry(model, progress=stage("Q/K geometry", cfg.num_layers + cfg.num_heads))
    timing["geometry"] = time.time() - t

    converted = layout_of_model(model) if (ckpt.extra or {}).get("tpa") else None
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": model_section(ckpt, cfg),
        "settings": {
            "contexts": list(contexts),
            "batch": batch,
            "calibration": calibration,
            "energy_levels": list(ENERGY_LEVELS),
            "geometry_topk": geo["topk"] if geo else None,
        },
        "cache": {
            "layer_types": layer_type_table(cfg, contexts, batch),
            "candidates": cost_table(cfg, contexts, batch, converted),
        },
        "weights": [
            {"layer": i, "type": cfg.layer_types[i], **{m: (_strip(s) if s else None) for m, s in lay.items()}}
            for i, lay in enumerate(w)
        ],
        "activations": None if acts is None else [{k: v for k, v in a.items() if k != "spectra"} for a in acts],
        "geometry": None
        if geo is None
        else {
            "topk": geo["topk"],
            "layers": geo["layers"],
            "cosine": [[[round(float(x), 6) for x in row] for row in m] for m in geo["cosine"]],
            "overlap": [[[round(float(x), 6) for x in row] for row in m] for m in geo["overlap"]],
        },
        "spectra": {
            "weights": {m: [(_norm(lay[m]["energy"]) if lay[m] else None) for lay in w] for m in "qkvo"},
            "activations": None
            if acts is None
            else {
                k: [(_norm(a["spectra"][k]) if k in a["spectra"] else None) for a in acts]
                for k in ("k_pre", "k_post", "v", "v_out")
            },
        },
        "timing": {"seconds": {k: round(v, 2) for k, v in timing.items()}},
    }
    for row in doc["cache"]["candidates"]:
        row["energy_kept"] = energy_kept(doc, row)
    doc["findings"] = findings(doc)
    return doc
