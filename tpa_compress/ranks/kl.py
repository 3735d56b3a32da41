"""Rank budgets by measured effect on the model's output (`budget: {by: kl}`).

The error budget treats a unit of relative error alike in every component. Here each
component's unit is priced by what it does to the final logits: at the rank the error
budget gives it (the operating point), the component alone is factorized and swapped
into the model, and the mean token KL(original || swapped) over a few calibration
windows, divided by the relative error energy it leaves (its spectrum's tail), is its
weight: KL ≈ weight × error energy, to first order around that point. The budget is
then spent again with those weights (ranks.budget_ranks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def final_hidden(model, windows: torch.Tensor) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [model(w[None].to(device))[0] for w in windows]


@torch.no_grad()
def mean_kl(model, windows: torch.Tensor, ref_hidden: list[torch.Tensor], chunk: int = 128) -> float:
    """Mean per-token KL(reference || model) of the next-token distributions; logits are
    formed in chunks of rows (a 262k vocabulary never needs T x vocab floats at once)."""
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for w, ref in zip(windows, ref_hidden):
        h = model(w[None].to(device))[0]
        for s in range(0, h.shape[0], chunk):
            lp = F.log_softmax(model.logits(h[s : s + chunk]).float(), -1)
            lr = F.log_softmax(model.logits(ref[s : s + chunk]).float(), -1)
            total += float((lr.exp() * (lr - lp)).sum())
            n += lp.shape[0]
    return total / max(n, 1)


def kl_weights(model, windows: torch.Tensor, probes: dict, tails: dict) -> dict:
    """{key: KL per unit of relative error energy}. `probes[key]` is (module, projection
    name, factorized projection): swapped in alone, measured, swapped back. `tails[key]`
    is the relative error energy the probe leaves. A probe that leaves no error (full
    rank) gets the mean weight of the others."""
    ref = final_hidden(model, windows)
    out = {}
    for key, (attn, name, proj) in probes.items():
        old = getattr(attn, name)
        setattr(attn, name, proj)
        try:
            kl = mean_kl(model, windows, ref)
        finally:
            setattr(attn, name, old)
        out[key] = kl / tails[key] if tails[key] > 1e-9 else None
    known = [v for v in out.values() if v is not None]
    fill = sum(known) / len(known) if known else 1.0
    out = {k: (fill if v is None else v) for k, v in out.items()}
    # A KL at float noise (it can come out slightly negative) must not stop the greedy
    # budget from spending on that component: weights are floored at 1e-3 of the largest.
    top = max(out.values(), default=0.0)
    if top <= 0:
        return {k: 1.0 for k in out}
    return {k: max(v, 1e-3 * top) for k, v in out.items()}


def probe_weights(model, recipe, cands, chosen: dict, methods: dict, inputs: dict, fit_w) -> dict:
    """kl_weights with each budgeted component factorized alone at its error-budget rank
    (`chosen`) as the probe; needs the whole model (convert's whole-model path)."""
    from ..methods.layers import make_proj
    from ..threads import fixed_threads

    probes, tails = {}, {}
    for c in cands:
        i, t = c.key
        m, r = methods[c.key], chosen[c.key]
        with fixed_threads():
            fz = m.factorize(inputs[i], t, r)
        proj = make_proj(model.cfg.hidden_size, fz.component, recipe.sink_tokens)
        state = {k: v.to(torch.float32) for k, v in fz.tensors.items()}
        if recipe.sink_tokens:
            state["sink.weight"] = inputs[i].weight(t).to(torch.float32)
        proj.load_state_dict(state)
        attn = model.layers[i].self_attn
        probes[c.key] = (attn, f"{t}_proj", proj.to(next(model.parameters()).device))
        s = c.spectrum.double().clamp_min(0)
        tails[c.key] = float(s[r:].sum() / s.sum().clamp_min(1e-300))
    return kl_weights(model, fit_w[: recipe.budget.kl_windows], probes, tails)
