"""Sampling on the device: greedy, temperature, top-k, top-p; no host sync, graph-safe."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TPAError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut

    def __post_init__(self):
        if not (self.temperature >= 0.0 and self.temperature < float("inf")):
            raise TPAError(f"--temperature {self.temperature} is not valid; valid: 0 (greedy) or a positive number")
        if not 0.0 < self.top_p <= 1.0:
            raise TPAError(f"--top-p {self.top_p} is not valid; valid: 0 < p <= 1")
        if self.top_k < 0:
            raise TPAError(f"--top-k {self.top_k} is not valid; valid: 0 (off) or a positive integer")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def sample(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids."""
    if p.greedy:
        return logits.argmax(-1)
    x = logits.float() / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.top_p < 1.0:
        srt, idx = torch.sort(x, dim=-1, descending=True)
        probs = srt.softmax(-1)
        # drop a token when the ones before it already reach top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= p.top_p
        x = torch.full_like(x, float("-inf")).scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
    probs = x.softmax(-1)
    # Gumbel-style race (argmax of p / Exp(1)) samples from probs without a host sync
    return (probs / torch.empty_like(probs).exponential_(1.0)).argmax(-1)
