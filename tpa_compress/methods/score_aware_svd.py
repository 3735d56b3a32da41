"""score_aware_svd — activation PCA whose K error is measured as the attention scores see it.

Factorizes: K or V of one layer, as `activation_svd` does (rank-r latent c = Pᵀ L W (x - μ),
rebuilt as μ_out + L⁻¹ P c, the mean kept as a bias), with a different metric L² for K:
what changes a score q·k is the error of k along the directions the queries take.

- Queries: M_h = E_Δ[R_Δ E[q qᵀ] R_Δᵀ] per KV head h, where E[q qᵀ] is the calibrated
  second moment of the group's queries after QK-norm and before RoPE, summed over its
  query heads (calibrate: `LayerStats.query_moment`), and R_Δ is the RoPE rotation by a
  relative offset Δ = query position - key position (q_rot·k_rot = (R_Δ q)·k): RoPE
  pairs that turn many times over the offsets average to isotropic 2×2 blocks, slow
  ones keep the queries' structure. Δ is drawn log-uniformly from [0, max_offset]
  (`offsets` draws, seeded: attention mass sits mostly on near keys).
- QK-norm, linearised: k_normed ≈ g ⊙ k / rms(k), so a pre-norm error δk moves the score
  by (R_Δ q)ᵀ diag(g) δk s_h, with s_h = 1/sqrt(E‖k_h‖²/D) the typical inverse rms of
  head h (from the calibrated moments). Without a QK-norm, g = 1 and s_h = 1.
- K metric: block-diagonal A_h = s_h² diag(g) M_h diag(g), plus `ridge` × its mean
  diagonal (keeps L invertible, and keeps some weight on directions the calibration
  queries never took); L = A^{1/2}.
- V: unchanged from `activation_svd` (output-aware through o_proj by default).

Parameters:
- max_offset (int, default 4096): the largest relative offset Δ averaged over.
- offsets (int, default 256): how many offsets are drawn (seeded by the recipe seed).
- ridge (float, default 1e-3): relative regulariser of both metrics.
- output_aware (bool, default true): the o_proj metric for V.

YAML:
    layers:
      - select: {type: global}
        k: {method: score_aware_svd, rank: budget}
        v: {method: score_aware_svd, rank: budget}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TPAError
from ..models.common import rope_inv_freq
from . import register
from .activation_svd import ActivationSVD
from .base import sqrt_pair


@register("score_aware_svd")
class ScoreAwareSVD(ActivationSVD):
    needs_calibration = True

    @dataclass
    class Params:
        max_offset: int = 4096
        offsets: int = 256
        ridge: float = 1e-3
        output_aware: bool = True

    def __init__(self, params=None, seed: int = 0, where: str = "method"):
        super().__init__(params, seed, where)
        p = self.params
        if p.max_offset < 0 or p.offsets < 1 or p.ridge < 0:
            raise TPAError(
                f"{where} {self.name}: max_offset >= 0, offsets >= 1 and ridge >= 0 are "
                f"required; got max_offset={p.max_offset}, offsets={p.offsets}, ridge={p.ridge}"
            )

    def _metric(self, inp, target: str):
        if target == "v":
            return super()._metric(inp, target)
        if inp.stats is None or inp.stats.qtq is None:
            raise TPAError(f"layer {inp.layer}: score_aware_svd needs calibration data with query moments")
        return sqrt_pair(self.score_metric(inp), self.params.ridge, inp.cfg.head_dim)

    def score_metric(self, inp) -> torch.Tensor:
        """(kv*D, kv*D) block-diagonal metric of pre-norm K errors as the scores see them."""
        c = inp.cfg
        D = c.head_dim
        rot = self.rotations(c.head_dim, c.rope_base(inp.layer), c.rope_scale(inp.layer))
        gain = inp.k_norm_gain if inp.k_norm_gain is not None else torch.ones(D, dtype=torch.float64)
        k_moment = inp.w_k @ inp.stats.second_moment @ inp.w_k.T
        out = torch.zeros(c.kv_size, c.kv_size, dtype=torch.float64)
        for h in range(c.num_kv_heads):
            sl = slice(h * D, (h + 1) * D)
            m = (rot @ inp.stats.query_moment[h].double() @ rot.transpose(1, 2)).mean(0)
            inv_rms2 = 1.0 if inp.k_norm_gain is None else D / float(k_moment[sl, sl].trace())
            out[sl, sl] = inv_rms2 * gain[:, None] * m * gain[None, :]
        return (out + out.T) / 2

    def offset_sample(self) -> torch.Tensor:
        """(offsets,) whole relative offsets Δ, log-uniform on [0, max_offset], seeded."""
        g = torch.Generator().manual_seed(self.seed)
        u = torch.rand(self.params.offsets, generator=g, dtype=torch.float64)
        return (torch.exp(u * math.log1p(self.params.max_offset)) - 1).round()

    def rotations(self, head_dim: int, base: float, scale: float) -> torch.Tensor:
        """(offsets, D, D) RoPE rotations R_Δ (half-split layout) for the seeded offsets."""
        delta = self.offset_sample()
        ang = (delta[:, None] / scale) * rope_inv_freq(head_dim, base).double()
        cos, sin = ang.cos(), ang.sin()
        half = head_dim // 2
        r = torch.zeros(len(delta), head_dim, head_dim, dtype=torch.float64)
        idx = torch.arange(half)
        # (R x)_i = x_i cos - x_{i+half} sin ; (R x)_{i+half} = x_{i+half} cos + x_i sin
        r[:, idx, idx] = cos
        r[:, idx, idx + half] = -sin
        r[:, idx + half, idx + half] = cos
        r[:, idx + half, idx] = sin
        return r
