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


def probe_hidden(model, windows: torch.Tensor, attn, name: str, proj) -> list[torch.Tensor]:
    """final_hidden with attn.<name> swapped for `proj`, swapped back afterwards."""
    old = getattr(attn, name)
    setattr(attn, name, proj)
    try:
        return final_hidden(model, windows)
    finally:
        setattr(attn, name, old)


@torch.no_grad()
def mean_kls(model, ref_hidden: list[torch.Tensor], hidden: dict, chunk: int = 128) -> dict:
    """{key: mean per-token KL(reference || model with that key's probe)} of the next-token
    distributions, from each run's final hidden states (`hidden[key]`, one per window). The
    reference's log-probabilities are formed once per chunk of rows and shared by every probe;
    logits are formed in chunks (a 262k vocabulary never needs T x vocab floats at once)."""
    total, n = dict.fromkeys(hidden, 0.0), 0
    for w, ref in enumerate(ref_hidden):
        for s in range(0, ref.shape[0], chunk):
            lr = F.log_softmax(model.logits(ref[s : s + chunk]).float(), -1)
            pr = lr.exp()
            for key, h in hidden.items():
                lp = F.log_softmax(model.logits(h[w][s : s + chunk]).float(), -1)
                total[key] += float((pr * (lr - lp)).sum())
            n += lr.shape[0]
    return {key: t / max(n, 1) for key, t in total.items()}


def kl_weights(model, windows: torch.Tensor, probes: dict, tails: dict) -> dict:
    """{key: KL per unit of relative error energy}. `probes[key]` is (module, projection
    name, factorized projection): swapped in alone, run over the windows, swapped back.
    `tails[key]` is the relative error energy the probe leaves. A probe that leaves no error
    (full rank) gets the mean weight of the others."""
    ref = final_hidden(model, windows)
    hidden = {key: probe_hidden(model, windows, *probe) for key, probe in probes.items()}
    kls = mean_kls(model, ref, hidden)
    out = {key: kls[key] / tails[key] if tails[key] > 1e-9 else None for key in probes}
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
