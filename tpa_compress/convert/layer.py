"""One layer's conversion: its weights in, its factorized K/V projections, layout and report out.

`convert_layer` touches no model: it takes the layer's LayerInputs (weights and
calibration statistics) and returns the new projections (float32 holding the values of
the recipe's weight_dtype: what will be saved), their tensors by canonical name, the
layer's layout and its report row. The whole-model path installs the projections in the
model; the streaming path (stream.py) writes the tensors and drops the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import TPAError
from ..layout import Component, LayerLayout, k_scale_for, shrink_check
from ..methods import LayerInputs, carry_bias
from ..methods.layers import effective_weight, make_proj
from ..runtime import fast_path_supports
from ..threads import fixed_threads


@dataclass
class LayerReport:
    layer: int
    type: str
    k: dict
    v: dict
    bytes_per_token: float


@dataclass
class LayerConversion:
    layout: LayerLayout
    report: LayerReport
    projs: dict = field(default_factory=dict)  # "k"/"v" -> the factorized module (CPU, float32)
    tensors: dict = field(default_factory=dict)  # canonical name -> tensor, for the output folder
    off_kernel: str | None = None  # "i (rk/rv)" when the Hopper decode kernel does not take the ranks


def block_inputs(cfg, i: int, block, stats) -> LayerInputs:
    """One layer's weights as float64 on the CPU (methods run there, whatever the model's device)."""
    a = block.self_attn
    w = lambda m: m.weight.detach().to("cpu", torch.float64)  # noqa: E731
    b = lambda m: None if m.bias is None else m.bias.detach().to("cpu", torch.float64)  # noqa: E731
    gain = lambda n: n.gain().detach().to("cpu", torch.float64) if a.qk_norm else None  # noqa: E731
    return LayerInputs(
        cfg,
        i,
        w(a.q_proj),
        w(a.k_proj),
        w(a.v_proj),
        w(a.o_proj),
        stats,
        b_k=b(a.k_proj),
        b_v=b(a.v_proj),
        k_norm_gain=gain(getattr(a, "k_norm", None)),
        q_norm_gain=gain(getattr(a, "q_norm", None)),
    )


def layer_inputs(model, i: int, stats) -> LayerInputs:
    return block_inputs(model.cfg, i, model.layers[i], stats)


def activation_errors(model_cfg, inp: LayerInputs, proj: torch.nn.Module, target: str, x: torch.Tensor) -> float:
    """Relative error on held-out attention inputs x: K pre-norm; V as o_proj sees it."""
    with torch.no_grad():
        w = inp.weight(target).to(x.dtype)
        ref = x @ w.T
        if inp.bias(target) is not None:
            ref = ref + inp.bias(target).to(x.dtype)
        got = proj.factorized(x).to(x.dtype)  # held-out rows are not positions: no sink
        err = got - ref
        if target == "v":
            c = model_cfg
            g = c.num_heads // c.num_kv_heads
            # expand each KV head to its query heads, then through o_proj
            expand = lambda t: t.view(-1, c.num_kv_heads, c.head_dim).repeat_interleave(g, 1).flatten(1)  # noqa: E731
            wo = inp.w_o.to(x.dtype)
            ref, err = expand(ref) @ wo.T, expand(err) @ wo.T
        return float(err.norm() / ref.norm().clamp_min(1e-30))


def weight_error(inp: LayerInputs, proj, t: str) -> float | None:
    """||W_eff - W|| / ||W|| for projections that are linear in x (all but contextual)."""
    w_eff = effective_weight(proj, inp.cfg.hidden_size)
    if w_eff is None:
        return None
    w = inp.weight(t)
    return float((w_eff.double() - w).norm() / w.norm())


def convert_layer(
    cfg,
    recipe,
    i: int,
    inp: LayerInputs | None,
    methods: dict,
    ranks: dict,
    full_width: dict,
    heldout_sample: torch.Tensor | None,
    log=print,
    on_target=None,
) -> LayerConversion:
    """Factorize layer i's K and V as `methods` / `ranks` say (a target without a method is
    kept), measure each on the held-out rows, and price the layer's layout.
    `on_target()` is called after each factorized target (a progress bar)."""
    wdtype = getattr(torch, recipe.weight_dtype)
    comps, info, projs, tensors = {}, {}, {}, {}
    # The first sink_tokens positions keep the exact projection (layout.py says why);
    # not needed where every factorized part is the exact identity.
    sink = (
        recipe.sink_tokens if any((i, t) in methods and methods[(i, t)].name != "identity" for t in ("k", "v")) else 0
    )
    for t in ("k", "v"):
        if (i, t) not in methods:
            comps[t], info[t] = Component("full", cfg.num_kv_heads, cfg.head_dim), {"method": "keep", "rank": None}
            if (i, t) in full_width:
                info[t]["note"] = full_width[(i, t)] + "; kept exact"
            continue
        m = methods[(i, t)]
        with fixed_threads():
            fz = carry_bias(m.factorize(inp, t, ranks[(i, t)]), inp, t)
        why = shrink_check(fz.component)
        if why and m.name != "identity":
            log(f"warning: layer {i} {t}: {why}")
        proj = make_proj(cfg.hidden_size, fz.component, sink, cfg.attention_bias)
        state = {k: v.to(torch.float32) for k, v in fz.tensors.items()}
        if sink:
            state["sink.weight"] = inp.weight(t).to(torch.float32)
            if cfg.attention_bias:
                state["sink.bias"] = inp.bias(t).to(torch.float32)
        try:
            proj.load_state_dict(state)
        except RuntimeError as e:
            raise TPAError(f"method {m.name} produced tensors that do not fit {fz.component}: {e}") from e
        proj = proj.to(wdtype).to(torch.float32)  # measure what will be saved
        for k, v in proj.state_dict().items():
            tensors[f"model.layers.{i}.self_attn.{t}_proj.{k}"] = v
        comps[t], projs[t] = fz.component, proj
        err = activation_errors(cfg, inp, proj, t, heldout_sample) if heldout_sample is not None else None
        # The method's own diagnostics first; convert's held-out measurement (separate
        # windows, V through o_proj) is the one the report compares, so it wins.
        info[t] = {
            **fz.info,
            "method": m.name,
            "kind": fz.component.kind,
            "rank": fz.component.rank,
            "heldout_rel_error": err,
            "weight_rel_error": weight_error(inp, proj, t),
        }
        if on_target:
            on_target()
    lay = LayerLayout(
        comps["k"],
        comps["v"],
        cfg.window(i),
        recipe.cache_dtype,
        sink,
        k_scale=recipe.k_scale and k_scale_for(cfg, comps["k"]),
    )
    return LayerConversion(
        lay,
        LayerReport(i, cfg.layer_types[i], info["k"], info["v"], lay.bytes_per_token()),
        projs,
        tensors,
        off_kernel(cfg, recipe, i, comps),
    )


def off_kernel(cfg, recipe, i: int, comps: dict) -> str | None:
    """The Hopper kernel serves latent K + V of head dim 256 over a bf16 cache only, and
    not every rank pair: "i (rk/rv)" for a layer it could serve but whose ranks it does not take."""
    if (
        comps["k"].kind == comps["v"].kind == "latent"
        and cfg.head_dim == 256
        and recipe.cache_dtype == "bf16"
        and not fast_path_supports(
            cfg.head_dim, cfg.num_heads // cfg.num_kv_heads, comps["k"].rank, comps["v"].rank, "bf16"
        )
    ):
        return f"{i} ({comps['k'].rank}/{comps['v'].rank})"
    return None


OFF_KERNEL_NOTE = (
    "not ranks the Hopper decode kernel takes "
    "(multiples of 16; K at most 128, V 128 or as far as its shared memory holds: K 112 "
    "with V 160, K 96 with V 192); on the GPU these decode in Triton, slower at long "
    "context. rank_limits: {multiple: 16, max: {k: 112, v: 160}} chooses ranks it takes "
    "(docs/methods.md)"
)


def conversion_notes(full_width: dict, layers: list[LayerConversion], log) -> list[str]:
    """The report's notes: targets kept exact at a full-width rank, ranks off the GPU kernel."""
    notes = [f"layer {i} {t}: {why}; kept exact" for (i, t), why in sorted(full_width.items())]
    off = [lc.off_kernel for lc in layers if lc.off_kernel]
    if off:
        notes.append(f"layer (K/V rank) {', '.join(off)}: {OFF_KERNEL_NOTE}")
        log("note: " + notes[-1])
    return notes
