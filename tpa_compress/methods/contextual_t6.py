"""contextual_t6 — contextual TPA (the T6 form) fitted by gradient descent to real K/V activations.

Factorizes: pre-norm K (= W_k x) or V of one layer as
    k(x) ≈ Σ_r a_r(x) ⊗ b_r(x) + bias,   a_r(x) = W_a^r x ∈ R^heads,  b_r(x) = W_b^r x ∈ R^dim,
a `tpa_contextual` Component caching R * (heads + dim) values per token (the TPA 1/R
scale is folded into the factors). Tensors: a.weight (R*heads, hidden), row r*heads+h;
b.weight (R*dim, hidden), row r*dim+d; bias (heads*dim).

Fit: full-batch Adam on the mean squared error over the calibration sample of attention
inputs (stats.sample), first 80% of rows (`fit_rel_error`), last 20% held out
(`heldout_rel_error`); relative errors are ||ŷ - y||_F / ||y||_F. x and y are rescaled to
unit RMS for the fit (folded back after), and the best iterate on the fit rows is kept
(never worse than the init). No random draws: the result is deterministic.

Init (closed form, no random draws): a shrinking layout has R < kv_heads (R*(heads+dim)
< heads*dim forces it), so GQA itself (R = kv_heads, one-hot a) is never a candidate;
the start is the best *fixed* head factor instead: U = the top-R activation-space PCA of
the heads (the tpa_fixed optimum), b_r = Σ_h U[h, r] W_h x and a_r = U[:, r] (uᵀx), where
u makes uᵀx ≈ 1 by least squares on the sample (a(x) = W_a x has no constant term;
real attention inputs have near-constant directions, and when x has an exactly constant
feature and W's head mode has rank R the init is already exact).

Refuses (TPAError) any rank whose cache does not shrink: R * (heads + dim) >= heads * dim,
which is every rank on a one-KV-head model.

Parameters:
- steps (int, default 300): Adam iterations (0 = the init only).
- lr (float, default 0.01): Adam learning rate (on the unit-RMS scale), cosine-decayed.
- dtype ("float32" or "float64", default float32), device (default "cpu").

YAML:
    layers:
      - select: {type: global}
        k: {method: contextual_t6, rank: 2, params: {steps: 500}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TPAError
from ..layout import Component, shrink_check
from . import register
from .base import Factorization, LayerInputs, Method


def t6_apply(x, a_w, b_w, bias, heads: int, dim: int):
    """k(x) for rows x (m, hidden): Σ_r (W_a^r x) ⊗ (W_b^r x) + bias, flattened to heads*dim."""
    a = (x @ a_w.T).unflatten(-1, (-1, heads))
    b = (x @ b_w.T).unflatten(-1, (-1, dim))
    return torch.einsum("mrh,mrd->mhd", a, b).flatten(1) + bias


def _rel(pred, y) -> float:
    return float((pred - y).norm() / y.norm().clamp_min(1e-30))


@register("contextual_t6")
class ContextualT6(Method):
    needs_calibration = True

    @dataclass
    class Params:
        steps: int = 300
        lr: float = 0.01
        dtype: str = "float32"
        device: str = "cpu"

    @staticmethod
    def _init(x, w, R):
        """Initial (A, B) on the unit-RMS scale; x (n, X) and w (H, D, X) already scaled; R < H."""
        H, D, X = w.shape
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype)
        u = torch.linalg.lstsq(x, ones, rcond=1e-10, driver="gelsd").solution[:, 0]  # min-norm
        kx = torch.einsum("hdx,nx->hnd", w, x).reshape(H, -1)
        ev, vec = torch.linalg.eigh(kx @ kx.T)
        U = vec[:, ev.argsort(descending=True)[:R]]  # (H, R)
        A = torch.einsum("hr,x->rhx", U, u).reshape(R * H, X)
        B = torch.einsum("hr,hdx->rdx", U, w).reshape(R * D, X)
        return A, B

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        c = inp.cfg
        H, D, X, R = c.num_kv_heads, c.head_dim, c.hidden_size, rank
        where = f"layer {inp.layer} {target}: contextual_t6"
        if not 1 <= R <= c.kv_size:
            raise TPAError(f"{where} rank {R} out of range; valid: 1..{c.kv_size}")
        comp = Component("tpa_contextual", H, D, R)
        why = shrink_check(comp)
        if why:
            raise TPAError(f"{where} rank {R} refused: {why}")
        if inp.stats is None:
            raise TPAError(f"{where} needs calibration data")
        p = self.params
        if p.dtype not in ("float32", "float64"):
            raise TPAError(f"{where}: dtype {p.dtype!r} is not valid; valid: float32, float64")
        if p.device.startswith("cuda") and not torch.cuda.is_available():
            raise TPAError(f"{where}: device {p.device!r} is not available here")

        x_all = inp.stats.sample.double()
        m = x_all.shape[0]
        n_held = max(1, round(0.2 * m))
        if m - n_held < 2:
            raise TPAError(f"{where} needs at least 3 calibration sample rows, got {m}")
        w = inp.weight(target).double()
        y_all = x_all @ w.T
        x, y = x_all[: m - n_held], y_all[: m - n_held]
        sx = x.pow(2).mean().sqrt().clamp_min(1e-30)
        sy = y.pow(2).mean().sqrt().clamp_min(1e-30)
        xs, ys = x / sx, y / sy
        ws = (w * (sx / sy)).view(H, D, X)

        A0, B0 = self._init(xs, ws, R)
        bias0 = (ys - t6_apply(xs, A0, B0, 0.0, H, D)).mean(0)
        init_err = _rel(t6_apply(xs, A0, B0, bias0, H, D), ys)

        dt = getattr(torch, p.dtype)
        xt, yt = xs.to(p.device, dt), ys.to(p.device, dt)
        params = [t.clone().to(p.device, dt).requires_grad_(True) for t in (A0, B0, bias0)]
        best = (float("inf"), [t.detach().clone() for t in params])
        if p.steps > 0:
            opt = torch.optim.Adam(params, lr=p.lr)
            for step in range(p.steps + 1):
                loss = (t6_apply(xt, *params, H, D) - yt).pow(2).mean()
                if loss.item() < best[0]:
                    best = (loss.item(), [t.detach().clone() for t in params])
                if step == p.steps:
                    break
                for g in opt.param_groups:
                    g["lr"] = p.lr * 0.5 * (1 + math.cos(math.pi * step / p.steps))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        A, B, bias = (t.double().cpu() for t in best[1])

        # Back to the model's scale: a and b each take sqrt(sy)/sx, the bias takes sy.
        f = sy.sqrt() / sx
        a_w, b_w, bias = A * f, B * f, bias * sy
        fit = _rel(t6_apply(x, a_w, b_w, bias, H, D), y)
        held = _rel(t6_apply(x_all[m - n_held :], a_w, b_w, bias, H, D), y_all[m - n_held :])
        return Factorization(
            comp,
            {"a.weight": a_w, "b.weight": b_w, "bias": bias},
            {"fit_rel_error": fit, "heldout_rel_error": held, "init_rel_error": init_err, "steps": p.steps},
        )
