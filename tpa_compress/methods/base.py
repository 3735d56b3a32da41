"""What a method receives and returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..calibrate import LayerStats
from ..config import ModelConfig
from ..errors import TPAError
from ..layout import Component


@dataclass
class LayerInputs:
    """One layer's attention weights (float64, HF layout (out, in)) and statistics.

    b_k / b_v: the K / V biases of families that have them (Qwen2), else None. A method
    factorizes the linear part W x only; `carry_bias` adds b to its result."""

    cfg: ModelConfig
    layer: int
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    stats: LayerStats | None = None
    b_k: torch.Tensor | None = None
    b_v: torch.Tensor | None = None
    k_norm_gain: torch.Tensor | None = None  # (D,) the QK-norm's gain on K (None: no QK-norm)
    q_norm_gain: torch.Tensor | None = None  # (D,) the QK-norm's gain on Q (None: no QK-norm)

    def weight(self, target: str) -> torch.Tensor:
        return self.w_k if target == "k" else self.w_v

    def bias(self, target: str) -> torch.Tensor | None:
        return self.b_k if target == "k" else self.b_v

    def v_output_metric(self) -> torch.Tensor:
        """(kv*D, kv*D) block-diagonal metric sum_h W_O,h^T W_O,h over each KV group's
        query heads: V error weighted by what o_proj does with it."""
        c = self.cfg
        D, g = c.head_dim, c.num_heads // c.num_kv_heads
        wo = self.w_o.view(c.hidden_size, c.num_heads, D)
        m = torch.zeros(c.kv_size, c.kv_size, dtype=self.w_o.dtype)
        for kv in range(c.num_kv_heads):
            blk = sum(wo[:, h].T @ wo[:, h] for h in range(kv * g, (kv + 1) * g))
            m[kv * D : (kv + 1) * D, kv * D : (kv + 1) * D] = blk
        return m


def sqrt_pair(m: torch.Tensor, ridge: float, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M^{1/2}, M^{-1/2}) of a PSD metric that is block-diagonal in blocks of `block` rows
    (one per KV head), after a ridge of `ridge` x its mean diagonal. Each block is
    decomposed alone (a batched eigh: 8 heads of 256 cost 1/64 of one 2048-wide eigh);
    eigenvalues are floored at 1e-12 of the largest over all blocks."""
    n = m.shape[0]
    heads = n // block
    m = m + ridge * m.diagonal().mean() * torch.eye(n, dtype=m.dtype)
    blocks = torch.stack([m[h * block : (h + 1) * block, h * block : (h + 1) * block] for h in range(heads)])
    evals, evecs = torch.linalg.eigh(blocks)
    evals = evals.clamp_min(evals.max() * 1e-12)
    root = (evecs * evals.sqrt()[:, None, :]) @ evecs.transpose(1, 2)
    inv = (evecs / evals.sqrt()[:, None, :]) @ evecs.transpose(1, 2)
    return torch.block_diag(*root), torch.block_diag(*inv)


def block_diag_matmul(m: torch.Tensor, x: torch.Tensor, block: int) -> torch.Tensor:
    """m @ x for a block-diagonal m (blocks of `block` rows, as `sqrt_pair` returns), one
    block at a time: the zero blocks cost no products."""
    return torch.cat([m[i : i + block, i : i + block] @ x[i : i + block] for i in range(0, m.shape[0], block)])


@dataclass
class Factorization:
    component: Component
    tensors: dict[str, torch.Tensor]  # names relative to the projection module
    info: dict = field(default_factory=dict)  # e.g. fit error, for the report


def carry_bias(fz: Factorization, inp: LayerInputs, target: str) -> Factorization:
    """`fz` with the original projection's bias added to its own `bias` tensor.

    Every factorized kind computes f(x) + bias (methods/layers.py) and every method fits
    f to W x, the linear part; the original map is W x + b with b constant, so adding b
    to the output bias carries it exactly, whatever the method. No-op without a bias."""
    b = inp.bias(target)
    if b is None:
        return fz
    tensors = dict(fz.tensors)
    tensors["bias"] = tensors["bias"] + b.to(tensors["bias"].dtype)
    return dataclasses.replace(fz, tensors=tensors)


class Method:
    """Base class. Subclasses set `Params` (a dataclass) and implement `factorize`."""

    name = "?"
    needs_calibration = False
    windows_kept = 0  # whole calibration windows of x the method reads (LayerStats.windows)

    @dataclass
    class Params:
        pass

    def __init__(self, params: dict | None = None, seed: int = 0, where: str = "method"):
        self.params = parse_params(self.Params, params or {}, f"{where} {self.name}")
        self.seed = seed

    def spectrum(self, inp: LayerInputs, target: str) -> torch.Tensor | None:
        """Energy captured by each successive rank (descending), or None if the
        method has no such spectrum (then only fixed ranks apply)."""
        return None

    def max_rank(self, cfg: ModelConfig) -> int:
        return cfg.kv_size

    def rank_step(self, cfg: ModelConfig) -> int:
        """Ranks this method can realise come in multiples of this (energy/budget round up to it)."""
        return 1

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        raise NotImplementedError


def parse_params(cls, given: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TPAError(f"{where}: unknown parameter {unknown[0]!r}; valid: {', '.join(names) or '(none)'}")
    return cls(**given)
