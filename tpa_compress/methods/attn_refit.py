"""attn_refit — a PCA latent refitted against the layer's real attention output.

Factorizes: K or V of one layer as a `latent` (down, up, bias), in two steps:
1. the closed-form start of `base` (`score_aware_svd` or `activation_svd`, default
   parameters) at the given rank;
2. Adam on down, up and bias so that the layer's attention output, through o_proj,
   matches the original's on whole calibration windows (LayerStats.windows): real
   queries (QK-norm, RoPE), real softmax with the layer's scale, causal mask and sliding
   window, the other of K / V exact, and the first `sink` positions exact as the runtime
   keeps them (recipe `sink_tokens`). Loss: ‖O' - O‖² / ‖O‖² over all positions.
   The last `heldout` kept windows are not trained on: the factors with the lowest
   loss on them (checked every `check_every` steps, the start included) are returned,
   so a refit never ends worse than its start on held-out windows.
Learning rates are relative: each tensor's step size is `lr` × its starting RMS.
Deterministic for a fixed seed on the CPU (convert runs methods on one thread).

Parameters:
- base (str, default score_aware_svd): the closed-form start.
- windows (int, default 8): whole calibration windows kept for the refit (calibrate).
- heldout (int, default 2): of those, the ones used only to pick the best step.
- steps (int, default 150), lr (float, default 0.003), check_every (int, default 10).
- sink (int, default 1): leading positions left exact (match the recipe's sink_tokens).

YAML:
    layers:
      - select: {type: global}
        k: {method: attn_refit, rank: budget, params: {steps: 150}}
        v: {method: attn_refit, rank: budget}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import TPAError
from ..models.common import apply_rope, attention_mask, rms_norm, rope_cos_sin
from . import get_method, register
from .base import Factorization, LayerInputs, Method

BASES = ("score_aware_svd", "activation_svd")


@register("attn_refit")
class AttnRefit(Method):
    needs_calibration = True

    @dataclass
    class Params:
        base: str = "score_aware_svd"
        windows: int = 8
        heldout: int = 2
        steps: int = 150
        lr: float = 0.003
        check_every: int = 10
        sink: int = 1

    def __init__(self, params=None, seed: int = 0, where: str = "method"):
        super().__init__(params, seed, where)
        p = self.params
        if p.base not in BASES:
            raise TPAError(f"{where} {self.name}: base {p.base!r} is not valid; valid: {', '.join(BASES)}")
        if not 1 <= p.heldout < p.windows or p.steps < 0 or p.lr <= 0 or p.check_every < 1 or p.sink < 0:
            raise TPAError(
                f"{where} {self.name}: need 1 <= heldout < windows, steps >= 0, lr > 0, "
                f"check_every >= 1, sink >= 0; got {p}"
            )
        self.base = get_method(p.base)(None, seed=seed, where=where)
        self.windows_kept = p.windows

    def spectrum(self, inp, target):
        return self.base.spectrum(inp, target)

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        start = self.base.factorize(inp, target, rank)
        x = inp.stats.windows if inp.stats is not None else None
        if x is None or x.shape[0] <= self.params.heldout:
            raise TPAError(
                f"layer {inp.layer}: attn_refit needs more than {self.params.heldout} whole "
                "calibration windows (calibration.tokens / seq_len too small)"
            )
        att = _LayerAttention(inp, x.shape[1])
        n_fit = x.shape[0] - self.params.heldout
        x_fit, x_held = att.prepare(x[:n_fit]), att.prepare(x[n_fit:])
        with torch.no_grad():
            ref_fit, ref_held = att.exact(x_fit), att.exact(x_held)
        params = {k: v.float().clone().requires_grad_(True) for k, v in start.tensors.items()}
        lrs = [self.params.lr * float(p.detach().pow(2).mean().sqrt().clamp_min(1e-12)) for p in params.values()]
        opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params.values(), lrs)])

        def loss(xs, ref):
            return (att.replaced(xs, target, params, self.params.sink) - ref).pow(2).sum() / ref.pow(2).sum()

        with torch.no_grad():
            start_loss = float(loss(x_held, ref_held))
        best, best_loss = {k: v.detach().clone() for k, v in params.items()}, start_loss
        for step in range(1, self.params.steps + 1):
            opt.zero_grad()
            loss(x_fit, ref_fit).backward()
            opt.step()
            if step % self.params.check_every == 0 or step == self.params.steps:
                with torch.no_grad():
                    held = float(loss(x_held, ref_held))
                if held < best_loss:
                    best, best_loss = {k: v.detach().clone() for k, v in params.items()}, held
        info = {**start.info, "refit_heldout_loss": best_loss, "start_heldout_loss": start_loss}
        return Factorization(start.component, {k: v.double() for k, v in best.items()}, info)


class _LayerAttention:
    """One layer's attention, from whole windows of its input x to the o_proj output,
    with K or V replaced by a latent (down, up, bias) after the sink positions. What
    does not depend on the factors (queries, the exact other target) is computed once
    per set of windows (`prepare`)."""

    def __init__(self, inp: LayerInputs, T: int):
        c = self.cfg = inp.cfg
        f = lambda t: None if t is None else t.float()  # noqa: E731
        self.wq, self.wk, self.wv, self.wo = f(inp.w_q), f(inp.w_k), f(inp.w_v), f(inp.w_o)
        self.q_gain, self.k_gain = f(inp.q_norm_gain), f(inp.k_norm_gain)
        pos = torch.arange(T)
        self.cos, self.sin = rope_cos_sin(pos, c.head_dim, c.rope_base(inp.layer), c.rope_scale(inp.layer))
        w = c.window(inp.layer)
        self.mask = attention_mask(pos, pos, w) if w is not None and w < T else None

    def heads(self, y, n):
        b, t, _ = y.shape
        return y.view(b, t, n, self.cfg.head_dim).transpose(1, 2)

    def finish_k(self, k_pre):
        k = self.heads(k_pre, self.cfg.num_kv_heads)
        if self.k_gain is not None:
            k = rms_norm(k, self.k_gain, self.cfg.rms_norm_eps)
        return apply_rope(k, self.cos, self.sin)

    @torch.no_grad()
    def prepare(self, x) -> dict:
        c = self.cfg
        q = self.heads(x @ self.wq.T, c.num_heads)
        if self.q_gain is not None:
            q = rms_norm(q, self.q_gain, c.rms_norm_eps)
        return {
            "x": x,
            "q": apply_rope(q, self.cos, self.sin),
            "k": self.finish_k(x @ self.wk.T),
            "v": self.heads(x @ self.wv.T, c.num_kv_heads),
        }

    def attend(self, pre: dict, k, v):
        c = self.cfg
        o = F.scaled_dot_product_attention(
            pre["q"],
            k,
            v,
            attn_mask=self.mask,
            is_causal=self.mask is None,
            scale=c.attn_scale,
            enable_gqa=c.num_heads != c.num_kv_heads,
        )
        return o.transpose(1, 2).flatten(2) @ self.wo.T

    def exact(self, pre: dict):
        return self.attend(pre, pre["k"], pre["v"])

    def replaced(self, pre: dict, target: str, p: dict, sink: int):
        x = pre["x"]
        w = self.wk if target == "k" else self.wv
        y = (x @ p["down.weight"].T) @ p["up.weight"].T + p["bias"]
        if sink:
            y = torch.cat([x[:, :sink] @ w.T, y[:, sink:]], dim=1)
        if target == "k":
            return self.attend(pre, self.finish_k(y), pre["v"])
        return self.attend(pre, pre["k"], self.heads(y, self.cfg.num_kv_heads))
