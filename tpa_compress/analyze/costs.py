"""KV-cache cost of the original model and of candidate layouts, priced only by
`layout.cache_bytes` (window-aware: a sliding layer holds at most its window).

A candidate is a K and a V Component applied to every layer (or to the global layers
only), in one cache dtype. Candidates that cannot shrink the cache (any contextual TPA
on a one-KV-head model, for instance) are kept and flagged, with `shrink_check`'s reason:
showing what does not work is part of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..layout import Component, LayerLayout, cache_bytes, k_scale_for, original_layouts, shrink_check

CACHE_DTYPES = ("bf16", "fp8", "int8")


@dataclass(frozen=True)
class Candidate:
    name: str  # stable id, e.g. "latent_kv_r128" (report.json key)
    label: str
    k: Component
    v: Component
    scope: str = "all"  # "all" | "global" (sliding layers keep the original K/V)

    def layouts(self, cfg: ModelConfig, cache_dtype: str) -> list[LayerLayout]:
        full = Component("full", cfg.num_kv_heads, cfg.head_dim)
        out = []
        for i in range(cfg.num_layers):
            hit = self.scope == "all" or cfg.window(i) is None
            k = self.k if hit else full
            out.append(LayerLayout(k, self.v if hit else full, cfg.window(i), cache_dtype, k_scale=k_scale_for(cfg, k)))
        return out


def candidates(cfg: ModelConfig) -> list[Candidate]:
    kv, D = cfg.num_kv_heads, cfg.head_dim
    n = kv * D
    full = Component("full", kv, D)
    c = [Candidate("original", "original", full, full)]
    for R in sorted({1, max(1, kv // 2), max(1, kv - 1)}):
        comp = Component("tpa_fixed", kv, D, R)
        c.append(Candidate(f"tpa_fixed_R{R}", f"TPA fixed, R={R}", comp, comp))
    for R in (1, 2):  # R = 2 is the TPA paper's T6 setting for K and V
        comp = Component("tpa_contextual", kv, D, R)
        c.append(Candidate(f"tpa_contextual_R{R}", f"TPA contextual, R={R}", comp, comp))
    for frac in (3, 2, 1):  # latent ranks at 3/4, 1/2, 1/4 of kv_heads * head_dim
        r = max(1, n * frac // 4)
        comp = Component("latent", kv, D, r)
        c.append(Candidate(f"latent_kv_r{r}", f"latent K+V, r={r}", comp, comp))
    half = Component("latent", kv, D, max(1, n // 2))
    c.append(Candidate(f"latent_v_r{half.rank}", f"latent V only, r={half.rank}", full, half))
    if any(w is not None for w in map(cfg.window, range(cfg.num_layers))):
        c.append(
            Candidate(
                f"latent_kv_r{half.rank}_global",
                f"latent K+V, r={half.rank}, global layers",
                half,
                half,
                scope="global",
            )
        )
    return c


def price(cfg: ModelConfig, lays: list[LayerLayout], contexts: list[int], batch: int) -> dict:
    """Bytes of one layout at each context, its ratios to the original, and its flag."""
    dt = lays[0].cache_dtype
    base = {d: original_layouts(cfg, d) for d in ("bf16", dt)}
    per_type = {}
    for t in sorted(set(cfg.layer_types)):
        vals = sorted({lay.bytes_per_token() for lay, lt in zip(lays, cfg.layer_types) if lt == t})
        per_type[t] = vals[0] if len(vals) == 1 else vals
    totals, vs_bf16, vs_same = {}, {}, {}
    for ctx in contexts:
        b = cache_bytes(lays, ctx, batch)
        totals[str(ctx)] = b
        vs_bf16[str(ctx)] = b / cache_bytes(base["bf16"], ctx, batch)
        vs_same[str(ctx)] = b / cache_bytes(base[dt], ctx, batch)
    reasons = sorted({why for lay in lays for comp in (lay.k, lay.v) if (why := shrink_check(comp))})
    worst = max(vs_same.values())
    flag = "larger" if worst > 1 + 1e-12 else ("no_saving" if reasons and worst >= 1 - 1e-12 else None)
    return {
        "bytes_per_token_per_layer": per_type,
        "bytes_per_token_all_layers": sum(lay.bytes_per_token() for lay in lays),
        "total_bytes": totals,
        "ratio_vs_original_bf16": vs_bf16,
        "ratio_vs_original_same_dtype": vs_same,
        "flag": flag,
        "reasons": reasons,
    }


def cost_table(
    cfg: ModelConfig, contexts: list[int], batch: int, converted: list[LayerLayout] | None = None
) -> list[dict]:
    """Every candidate in every cache dtype (and the model's own layout, if converted)."""
    rows = []
    if converted:
        rows.append(
            {
                "name": "as_converted",
                "label": "this model's own (converted) layout",
                "cache_dtype": converted[0].cache_dtype,
                "scope": "per_layer",
                "k": None,
                "v": None,
                **price(cfg, converted, contexts, batch),
            }
        )
    for cand in candidates(cfg):
        for dt in CACHE_DTYPES:
            rows.append(
                {
                    "name": cand.name,
                    "label": cand.label,
                    "cache_dtype": dt,
                    "scope": cand.scope,
                    "k": {"kind": cand.k.kind, "rank": cand.k.rank},
                    "v": {"kind": cand.v.kind, "rank": cand.v.rank},
                    **price(cfg, cand.layouts(cfg, dt), contexts, batch),
                }
            )
    return rows


def layer_type_table(cfg: ModelConfig, contexts: list[int], batch: int, cache_dtype: str = "bf16") -> list[dict]:
    """Where the original cache's bytes are: one row per layer type."""
    lays = original_layouts(cfg, cache_dtype)
    total = {ctx: cache_bytes(lays, ctx, batch) for ctx in contexts}
    rows = []
    for t in sorted(set(cfg.layer_types), key=lambda t: t != "global"):
        sel = [lay for lay, lt in zip(lays, cfg.layer_types) if lt == t]
        b = {str(ctx): cache_bytes(sel, ctx, batch) for ctx in contexts}
        rows.append(
            {
                "type": t,
                "layers": len(sel),
                "window": sel[0].window,
                "bytes_per_token_per_layer": sel[0].bytes_per_token(),
                "tokens_held": {str(ctx): sel[0].tokens_held(ctx) for ctx in contexts},
                "bytes": b,
                "share": {str(ctx): b[str(ctx)] / total[ctx] for ctx in contexts},
            }
        )
    return rows
