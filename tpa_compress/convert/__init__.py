"""The conversion pipeline: plan -> calibrate -> pick ranks -> convert each layer -> heal -> evaluate -> write.

Each step is its own module:
- plan.py                  the recipe checked against the model, one method per (layer, target)
- calibrate/windows.py     the calibration text as fit and held-out token windows
- calibrate/__init__.py    per-layer statistics of the attention input (StatsCollector)
- ranks/select.py          fixed / auto / energy ranks per layer, then the byte budget across layers
- convert/layer.py         one layer factorized, measured on held-out rows, priced
- heal.py                  optional training of the new factors (the whole model)
- convert/evaluate.py      optional perplexity before / after (the whole model)
- convert/output.py        the output folder, written atomically
`convert` (here) runs them on a whole model in memory, as healing, `--eval` and
`budget: {by: kl}` need; convert/stream.py runs the same steps one layer at a time,
with memory that does not grow with the model, and writes the same bytes.
"""

from __future__ import annotations

import time

import torch

from ..calibrate import collect_stats
from ..calibrate.windows import HELDOUT_ROWS, _files, _windows, calibration_windows  # noqa: F401 (re-exported)
from ..errors import TPAError  # noqa: F401 (re-exported)
from ..heal import heal as heal_stage
from ..heal import prepare as prepare_heal
from ..methods.layers import set_k_scale
from ..ranks.select import BUDGET_DTYPE, layer_ranks, spend_budget  # noqa: F401
from ..ranks.select import full_width as full_width_targets
from ..threads import cpu_threads, fixed_threads  # noqa: F401 (re-exported)
from .evaluate import _eval, eval_after, perplexity_change, round_to_saved  # noqa: F401 (re-exported)
from .layer import LayerReport, activation_errors, block_inputs, conversion_notes, convert_layer, layer_inputs  # noqa: F401
from .output import REPORT_CONTEXTS, default_out_dir, kv_totals, output_tensors, report_dict, write_output  # noqa: F401
from .plan import Plan, plan_conversion, refuse_converted  # noqa: F401
from .result import ConversionResult


def convert(ckpt, model, recipe, progress=None, eval_model=True, log=print) -> tuple[ConversionResult, dict]:
    """Convert `model` in place; returns (result, new tensors by canonical name)."""
    t0 = time.time()
    cfg = model.cfg
    plan = plan_conversion(ckpt, recipe)
    tok = ckpt.tokenizer
    heal_data = prepare_heal(model, tok, recipe, plan.converted)  # checks the heal text before any work

    stats, heldout, fit_w = calibrate(ckpt, model, recipe, plan, progress, log)
    ppl_before = _eval(model, tok, recipe, progress, "eval before") if eval_model else None
    inputs = {i: layer_inputs(model, i, stats[i] if stats else None) for i in plan.converted}
    ranks, full_width = choose_ranks(model, recipe, plan, inputs, fit_w, log)

    new_tensors: dict[str, torch.Tensor] = {}
    layers = []
    bar = progress and progress("factorize")
    done = [0]

    def tick():
        done[0] += 1
        if bar:
            bar(done[0], len(plan.methods))

    device = next(model.parameters()).device
    for i in range(cfg.num_layers):
        lc = convert_layer(
            cfg,
            recipe,
            i,
            inputs.get(i),
            plan.methods,
            ranks,
            full_width,
            heldout[i].sample if heldout and heldout[i] else None,
            log,
            tick,
        )
        attn = model.layers[i].self_attn
        for t, proj in lc.projs.items():
            setattr(attn, f"{t}_proj", proj.to(device))
        set_k_scale(attn.k_proj, lc.layout.k_scale)
        new_tensors.update(lc.tensors)
        layers.append(lc)

    notes = conversion_notes(full_width, layers, log)
    healed = heal_data and heal_stage(
        model,
        heal_data,
        recipe.weight_dtype,
        progress,
        log,
        evaluate=((lambda: _eval(model, tok, recipe, progress, "eval before heal")) if eval_model else None),
    )
    if healed:
        new_tensors.update(healed.tensors)
    round_to_saved(model, getattr(torch, recipe.weight_dtype))
    ppl_after = eval_after(model, tok, recipe, progress) if eval_model else None
    layouts = [lc.layout for lc in layers]
    return ConversionResult(
        layouts,
        [lc.report for lc in layers],
        kv_totals(cfg, recipe, layouts),
        perplexity_change(ppl_before, ppl_after),
        time.time() - t0,
        notes,
        healed.report if healed else {},
    ), new_tensors


def calibrate(ckpt, model, recipe, plan: Plan, progress, log):
    """(fit statistics per layer or None, held-out row samples per layer or None, fit windows)."""
    stats = heldout = fit_w = None
    if not (plan.needs_stats or plan.methods):
        return stats, heldout, fit_w
    fit_w, held_w = calibration_windows(ckpt.tokenizer, recipe, ckpt.path)
    if plan.needs_stats:
        log(
            f"calibrating on {fit_w.numel()} tokens ({fit_w.shape[0]} x {recipe.calibration.seq_len}), "
            f"{held_w.numel()} held-out"
        )
        stats = collect_stats(
            model,
            fit_w,
            progress=progress and progress("calibrate"),
            layers=plan.converted,
            skip=recipe.sink_tokens,
            windows_kept=max((m.windows_kept for m in plan.methods.values()), default=0),
        )
    else:  # nothing is fitted (identity): the held-out rows only measure the errors
        log(f"no method fits statistics; {held_w.numel()} held-out tokens measure the errors")
    if held_w.shape[0]:  # held-out rows only serve the error measurement: no moments
        heldout = collect_stats(
            model, held_w, sample_rows=HELDOUT_ROWS, layers=plan.converted, moments=False, skip=recipe.sink_tokens
        )
    return stats, heldout, fit_w


def choose_ranks(model, recipe, plan: Plan, inputs: dict, fit_w, log) -> tuple[dict, dict]:
    """(rank per (layer, target), the targets kept exact because their chosen rank is the
    full width: removed from plan.methods)."""
    cfg = model.cfg
    ranks, cands = {}, []
    for i in plan.converted:
        r, c = layer_ranks(cfg, recipe, plan.rules, plan.methods, i, inputs[i])
        ranks.update(r)
        cands += c
    if cands:
        weigh = None
        if recipe.budget.by == "kl":
            log(f"budget by kl: measuring {len(cands)} components' effect on the logits")
            weigh = lambda chosen: _kl_weights(model, recipe, cands, chosen, plan.methods, inputs, fit_w)  # noqa: E731
        ranks.update(spend_budget(cfg, recipe, ranks, cands, weigh))
    return ranks, drop_full_width(cfg, plan, ranks)


def _kl_weights(model, recipe, cands, chosen: dict, methods: dict, inputs: dict, fit_w) -> dict:
    from ..ranks.kl import probe_weights

    return probe_weights(model, recipe, cands, chosen, methods, inputs, fit_w)


def drop_full_width(cfg, plan: Plan, ranks: dict) -> dict:
    full_width = full_width_targets(cfg, plan.rules, plan.methods, ranks)
    for key in full_width:
        del plan.methods[key]
    return full_width
