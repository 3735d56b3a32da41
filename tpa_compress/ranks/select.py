"""The rank step of convert: each (layer, target)'s rank from the recipe's rank spec.

`layer_ranks` settles what one layer decides alone (fixed, auto, energy) and lists the
`budget` candidates; `spend_budget` then spreads the recipe's byte budget over every
candidate at once, so it needs every layer's spectrum first (convert/stream.py makes a
spectrum pass for it). `full_width` names the chosen ranks that would cache no less
than the original: those targets are kept exact.
"""

from __future__ import annotations

import math

from ..errors import TPAError
from ..layout import K_SCALE_BYTES, Component, LayerLayout, cache_bytes, original_layouts
from ..threads import fixed_threads
from . import Candidate, budget_ranks, energy_rank

# A rank budget is a fraction of the bf16 original's cache, spent as if every entry were bf16:
# the ranks do not depend on the cache format, which then shrinks every entry by its own
# factor (so `balanced` with an int4 cache keeps balanced's ranks; docs/recipes.md).
BUDGET_DTYPE = "bf16"


def layer_ranks(cfg, recipe, rules: list[dict], methods: dict, i: int, inp) -> tuple[dict, list[Candidate]]:
    """({(i, t): rank} for layer i's fixed / auto / energy targets, [its budget candidates]).
    `inp`: layer i's LayerInputs (read only for spectra)."""
    ranks, cands = {}, []
    for (j, t), m in methods.items():
        if j != i:
            continue
        spec = rules[i][t].rank
        if spec.kind == "fixed":
            ranks[(i, t)] = int(spec.value)
        elif spec.kind == "auto":
            ranks[(i, t)] = m.max_rank(cfg)
        else:
            with fixed_threads():
                spectrum = m.spectrum(inp, t)
            if spectrum is None:
                raise TPAError(
                    f"{recipe.source}: layer {i} {t}: method {m.name} has no spectrum, so "
                    f"rank '{spec.kind}' cannot apply; give a fixed rank"
                )
            # the method's own step and the recipe's rank_limits: multiples of both, capped
            lim = recipe.rank_limits
            step = math.lcm(m.rank_step(cfg), lim.multiple)
            hi = min(len(spectrum), m.max_rank(cfg), lim.cap(t) or len(spectrum)) // step * step
            if hi < step:
                raise TPAError(
                    f"{recipe.source}: layer {i} {t}: rank_limits ({lim.describe(t)}) leave "
                    f"{m.name} no rank on this model (its ranks: multiples of "
                    f"{m.rank_step(cfg)} up to {min(len(spectrum), m.max_rank(cfg))})"
                )
            if spec.kind == "energy":
                ranks[(i, t)] = min(energy_rank(spectrum, spec.value, step), hi)
            else:
                lay = LayerLayout(
                    Component("latent", cfg.num_kv_heads, cfg.head_dim, 1),
                    Component("latent", cfg.num_kv_heads, cfg.head_dim, 1),
                    cfg.window(i),
                    BUDGET_DTYPE,
                )
                held = lay.tokens_held(recipe.budget.context)
                per = lay.bytes_per_token() / 2 * held
                cands.append(Candidate((i, t), spectrum, per, step, hi, step))
    return ranks, cands


def spend_budget(cfg, recipe, ranks: dict, cands: list[Candidate], weigh=None) -> dict:
    """The budget candidates' ranks, given every other target's `ranks`. `weigh(chosen)`,
    when given, returns per-candidate weights measured at the first allocation
    (`budget: {by: kl}`), and the budget is spent again with them."""
    left = budget_left(cfg, recipe, ranks, {c.key for c in cands})
    chosen = budget_ranks(cands, left)
    if weigh is not None:
        chosen = budget_ranks(cands, left, weigh(chosen))
    return chosen


def full_width(cfg, rules: list[dict], methods: dict, ranks: dict) -> dict:
    """{(i, t): why} for chosen (energy / budget) ranks at the method's full width: such a
    factorization caches no fewer values than the original and decodes slower (a rebuild;
    K also a norm factor), so the target is kept exact."""
    return {
        key: f"{methods[key].name} {rules[key[0]][key[1]].rank.kind} chose the full width {r}"
        for key, r in ranks.items()
        if rules[key[0]][key[1]].rank.kind in ("energy", "budget")
        and methods[key].name != "identity"
        and r >= methods[key].max_rank(cfg)
    }


def budget_left(cfg, recipe, ranks: dict, budgeted: set) -> float:
    """Bytes (priced in BUDGET_DTYPE) the budget leaves for `budgeted` components at the budget's context, after
    every other component: kept ones at full size, fixed/energy ones priced as latents
    of their rank (their real kind is known only after factorizing), and the QK-norm
    factors every latent K of a QK-norm model caches (layout.k_scale_for)."""
    ctx = recipe.budget.context
    total = recipe.budget.fraction * cache_bytes(original_layouts(cfg, BUDGET_DTYPE), ctx)
    for i in range(cfg.num_layers):
        for t in ("k", "v"):
            if t == "k" and cfg.qk_norm and recipe.k_scale and ((i, t) in budgeted or (i, t) in ranks):
                total -= K_SCALE_BYTES * cfg.num_kv_heads * LayerLayout.tokens_held_in(cfg.window(i), ctx)
            if (i, t) in budgeted:
                continue
            c = (
                Component("latent", cfg.num_kv_heads, cfg.head_dim, ranks[(i, t)])
                if (i, t) in ranks
                else Component("full", cfg.num_kv_heads, cfg.head_dim)
            )
            lay = LayerLayout(c, c, cfg.window(i), BUDGET_DTYPE)
            total -= lay.bytes_per_token() / 2 * lay.tokens_held(ctx)
    return total
