"""tucker_shared — TensorLLM-style Tucker decomposition of a layer's stacked KV heads, factors shared across heads.

Factorizes: the K or V weights of one layer as a 3-way tensor W (kv_heads x head_dim x
hidden), W ≈ G ×_head U_H ×_dim U_D ×_hidden U_X (tensorly `partial_tucker`: HOSVD
init, then HOOI; deterministic), with one feature factor U_D (head_dim x r_d) and one
hidden factor U_X shared by all heads. The cached value per token is the core applied
to x, so the result is a `latent` Component:
- no head compression: rank = kv_heads * r_d, r_d = rank // kv_heads (floored; a rank
  below kv_heads is refused). up.weight = blockdiag(U_D, ..., U_D) (head h's rows
  h*dim..(h+1)*dim, columns h*r_d..(h+1)*r_d); down.weight = per-head core times the
  shared hidden factor (head h's block: G_h U_Xᵀ, rows h*r_d..(h+1)*r_d).
- head_rank R < kv_heads: the head mode is compressed too, W_h ≈ Σ_r U_H[h,r] C_r.
  r_d = min(head_dim, rank // R). With r_d = head_dim (feature mode kept whole) this is
  exactly the `tpa_fixed` form: head_factor = U_Hᵀ (R x heads), b.weight = C_r stacked
  (R*dim x hidden), R * head_dim values cached. With r_d < head_dim the feature mode
  cannot be cached by tpa_fixed (it caches whole b_r), so the result is a `latent` of
  rank R * r_d with up.weight = U_H ⊗ U_D (Kronecker; rows h*dim+d, columns r*r_d+j).
bias is zero (the fit is on the uncentred second moment, so no mean is split off).

Calibration (whiten, default true): the hidden mode is multiplied by S = M^{1/2}
(M: second moment of the attention input, plus a relative ridge) before decomposing
and by S⁻¹ after, so the fit minimises the error of W x on real activations, not of the
raw weights. whiten: false is the weight-only TensorLLM decomposition (no calibration).

spectrum(): only for the plain latent (no head_rank, no hidden_rank): then the error
at rank kv_heads*j is exactly the discarded tail of the eigenvalues λ of Σ_h T_h T_hᵀ
(T_h = W_h S), so each λ_j is given kv_heads times as λ_j / kv_heads (energy at rank
kv_heads*j = Σ_{i<=j} λ_i). Otherwise None (give a fixed rank).

Parameters:
- whiten (bool, default true): fit in activation space (needs calibration data).
- head_rank (int, default none): compress the head mode to R < kv_heads too.
- hidden_rank (int, default none): rank of the shared hidden factor U_X; none = the
  lossless min(hidden, R*r_d). Smaller values only add error (the cache is unchanged);
  they exist to compare with TensorLLM's parameter compression.
- ridge (float, default 1e-6): relative regulariser of M (keeps S invertible).
- n_iter (int, default 100): HOOI iterations.

YAML:
    layers:
      - select: {type: global}
        v: {method: tucker_shared, rank: 256}
        k: {method: tucker_shared, rank: 256, params: {head_rank: 2}}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TPAError
from ..layout import Component
from . import register
from .base import Factorization, LayerInputs, Method


@register("tucker_shared")
class TuckerShared(Method):
    @dataclass
    class Params:
        whiten: bool = True
        head_rank: int | None = None
        hidden_rank: int | None = None
        ridge: float = 1e-6
        n_iter: int = 100

    @property
    def needs_calibration(self) -> bool:  # per instance: only when whitening
        return bool(self.params.whiten)

    def _head_rank(self, cfg, where: str = "") -> int:
        R = self.params.head_rank
        if R is None:
            return cfg.num_kv_heads
        if not 1 <= R <= cfg.num_kv_heads:
            raise TPAError(f"{where}tucker_shared head_rank {R} out of range; valid: 1..{cfg.num_kv_heads}")
        return R

    def max_rank(self, cfg):
        return self._head_rank(cfg) * cfg.head_dim

    def rank_step(self, cfg):
        return self._head_rank(cfg)  # r_d per head (or per head-mode factor) is shared

    def _whitener(self, inp: LayerInputs, target: str):
        """(S, S⁻¹) with S = M^{1/2}, or identities when not whitening."""
        n = inp.cfg.hidden_size
        if not self.params.whiten:
            eye = torch.eye(n, dtype=torch.float64)
            return eye, eye
        if inp.stats is None:
            raise TPAError(
                f"layer {inp.layer} {target}: tucker_shared with whiten: true needs calibration "
                "data (or set whiten: false)"
            )
        m = inp.stats.second_moment.double()
        m = (m + m.T) / 2
        m = m + self.params.ridge * m.diagonal().mean().clamp_min(1e-30) * torch.eye(n, dtype=m.dtype)
        ev, vec = torch.linalg.eigh(m)
        ev = ev.clamp_min(ev.max() * 1e-14)
        return (vec * ev.sqrt()) @ vec.T, (vec / ev.sqrt()) @ vec.T

    def _tensor(self, inp: LayerInputs, target: str):
        c = inp.cfg
        s, s_inv = self._whitener(inp, target)
        w = inp.weight(target).double().view(c.num_kv_heads, c.head_dim, c.hidden_size)
        return w @ s, s_inv  # T_h = W_h S

    def spectrum(self, inp: LayerInputs, target: str):
        c = inp.cfg
        if self._head_rank(c) < c.num_kv_heads or self.params.hidden_rank is not None:
            return None
        t, _ = self._tensor(inp, target)
        gram = torch.einsum("hdx,hex->de", t, t)
        ev = torch.linalg.eigvalsh((gram + gram.T) / 2).flip(0).clamp_min(0)
        return (ev / c.num_kv_heads).repeat_interleave(c.num_kv_heads)

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        import tensorly as tl
        from tensorly.decomposition import partial_tucker

        c = inp.cfg
        H, D, X = c.num_kv_heads, c.head_dim, c.hidden_size
        where = f"layer {inp.layer} {target}: "
        R = self._head_rank(c, where)
        if rank < R:
            raise TPAError(
                f"{where}tucker_shared rank {rank} is below {R} (one feature direction per "
                f"{'head' if R == H else 'head factor'}); valid: {R}..{R * D}"
            )
        r_d = min(D, rank // R)
        r_x = min(X, R * r_d)
        if self.params.hidden_rank is not None:
            if not 1 <= self.params.hidden_rank <= r_x:
                raise TPAError(
                    f"{where}tucker_shared hidden_rank {self.params.hidden_rank} out of range; valid: 1..{r_x}"
                )
            r_x = self.params.hidden_rank
        t, s_inv = self._tensor(inp, target)
        compress_heads = R < H
        modes = [0, 1, 2] if compress_heads else [1, 2]
        ranks = [R, r_d, r_x] if compress_heads else [r_d, r_x]
        prev = tl.get_backend()
        tl.set_backend("numpy")
        try:
            (core, factors), _ = partial_tucker(
                t.numpy(),
                rank=ranks,
                modes=modes,
                init="svd",
                n_iter_max=self.params.n_iter,
                tol=1e-12,
                random_state=self.seed,
            )
        finally:
            tl.set_backend(prev)
        core = torch.from_numpy(np.ascontiguousarray(core))
        factors = [torch.from_numpy(np.ascontiguousarray(f)) for f in factors]
        u_h = factors[0] if compress_heads else torch.eye(H, dtype=torch.float64)
        u_d, u_x = factors[-2], factors[-1]
        # down: core (R, r_d, r_x) through U_X and back out of the whitened space.
        down = torch.einsum("rjk,xk->rjx", core, u_x).reshape(R * r_d, X) @ s_inv
        up = torch.kron(u_h, u_d)  # (H*D, R*r_d): rows h*D+d, cols r*r_d+j
        bias = torch.zeros(H * D, dtype=torch.float64)
        info = {"r_d": r_d, "hidden_rank": r_x, "whiten": bool(self.params.whiten)}
        if rank != R * r_d:
            info["rank_requested"] = rank
        if compress_heads and r_d == D:
            b = torch.einsum("dj,rjx->rdx", u_d, down.view(R, r_d, X)).reshape(R * D, X)
            return Factorization(
                Component("tpa_fixed", H, D, R), {"b.weight": b, "head_factor": u_h.T.contiguous(), "bias": bias}, info
            )
        return Factorization(
            Component("latent", H, D, R * r_d), {"down.weight": down.contiguous(), "up.weight": up, "bias": bias}, info
        )
