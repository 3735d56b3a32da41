"""Perplexity through the KV cache: what a cache dtype (or layout) costs in quality.

`perplexity` runs the no-cache forward, which never builds a cache, so it cannot see the
cache dtype. Here the cached runner prefills each window's first token and then is fed
the window's true tokens one decode step at a time (teacher forcing), so every
prediction after the first reads its keys and values back from a cache stored in
`cache_dtype`. Same windows and token accounting as `perplexity` (seq_len - 1
predictions per window); with an fp32 cache the result equals the forward's.
"""

from __future__ import annotations

import math

import torch

from ..runtime import Runner, SamplingParams
from .perplexity import PerplexityResult


@torch.no_grad()
def forced_steps(model, windows: torch.Tensor, cache_dtype: str, prefix: int = 1):
    """Yield (j, log-probs (B, vocab) fp32 of position j) for j = prefix..L-1 of the
    windows (B, L), decoded as one batch: position `prefix` from prefill, the rest from
    decode steps that read the cache."""
    b, n = windows.shape
    r = Runner(model, b, n, cache_dtype=cache_dtype)
    r.eos = -1  # no EOS forcing: every step's logits are the model's
    p = SamplingParams()
    r.prepare(p)  # CUDA: capture the decode graph
    yield prefix, r.prefill(windows[:, :prefix].tolist(), p).float().log_softmax(-1)
    toks = windows.to(r.device)
    for j in range(prefix, n - 1):
        r.tok.copy_(toks[:, j])  # the true token, not the sampled one
        r.step(p)
        yield j + 1, r.last_logits.float().log_softmax(-1)


def cached_perplexity(model, windows: torch.Tensor, bos: bool, cache_dtype: str, progress=None) -> PerplexityResult:
    """progress(step, steps, running perplexity) after each position."""
    total, count = 0.0, 0
    steps = windows.shape[1] - 1
    for j, lp in forced_steps(model, windows, cache_dtype):
        tgt = windows[:, j].to(lp.device)
        total += float(-lp.gather(-1, tgt[:, None]).double().sum())
        count += tgt.numel()
        if progress is not None:
            progress(j, steps, math.exp(total / count))
    return PerplexityResult(math.exp(total / count), total / count, count, windows.shape[0], windows.shape[1], bos)
