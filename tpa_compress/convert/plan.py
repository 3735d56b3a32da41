"""What a conversion will do, decided from the recipe and the model's config before any work."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TPAError
from ..methods import get_method
from ..recipe import validate_for_model


@dataclass
class Plan:
    rules: list[dict]  # per layer: target -> LayerRule
    methods: dict  # (layer, target) -> Method instance (seeded)
    needs_stats: bool  # some method or rank step reads calibration statistics
    converted: list[int]  # layers with a method: the only ones calibrated and measured


def plan_conversion(ckpt, recipe) -> Plan:
    """Check the recipe against the model, seed torch, and instantiate each target's method."""
    cfg = ckpt.config
    refuse_converted(ckpt)
    validate_for_model(recipe, cfg)
    torch.manual_seed(recipe.seed)
    rules = [recipe.rules_for(cfg, i) for i in range(cfg.num_layers)]
    methods = {
        (i, t): get_method(r.method)(r.params, seed=recipe.seed + 1000 * i + (t == "v"))
        for i, rs in enumerate(rules)
        for t, r in rs.items()
    }
    needs_stats = any(m.needs_calibration for m in methods.values()) or any(
        r.rank.kind in ("energy", "budget") for rs in rules for r in rs.values()
    )
    return Plan(rules, methods, needs_stats, sorted({i for i, _ in methods}))


def refuse_converted(ckpt) -> None:
    """A converted folder as input: its factorized layers have no original K/V weight to
    fit, so conversion starts from the original model."""
    from ..layout import layouts_from_config

    tpa = (ckpt.extra or {}).get("tpa")
    if not tpa:
        return
    done = [i for i, lay in enumerate(layouts_from_config(tpa)) if lay.k.kind != "full" or lay.v.kind != "full"]
    if done:
        src = (ckpt.extra.get("tpa_source") or {}).get("model")
        raise TPAError(
            f"{ckpt.path}: already converted (layers {', '.join(map(str, done))} factorized); "
            f"convert the original model{f' ({src})' if src else ''} instead"
        )
