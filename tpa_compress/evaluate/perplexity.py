"""Token-level perplexity over non-overlapping windows (the Palu / CARE / TransMLA protocol).

The text is tokenized once, as one stream. It is cut into non-overlapping windows of
`seq_len` tokens. With `bos` (default for Gemma, whose tokenizer adds BOS) each window
is BOS followed by the next `seq_len - 1` stream tokens; without it, the window is
`seq_len` stream tokens. Either way every window scores `seq_len - 1` predictions,
and perplexity = exp(total NLL / total predicted tokens).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch

from ..errors import TPAError, non_finite_error


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens scored
    windows: int
    seq_len: int
    bos: bool

    def to_dict(self) -> dict:
        return asdict(self)


def check_window_args(seq_len: int, max_windows: int | None = None) -> None:
    """The --seq-len / --max-windows checks every command that cuts windows shares."""
    if seq_len < 2:
        raise TPAError(f"--seq-len {seq_len} is too small; it must be at least 2")
    if max_windows is not None and max_windows < 1:
        raise TPAError(f"--max-windows {max_windows} must be at least 1")


def make_windows(
    ids: list[int], seq_len: int, bos_id: int | None, max_windows: int | None, source: str = "text"
) -> torch.Tensor:
    body = seq_len - 1 if bos_id is not None else seq_len
    n = len(ids) // body
    if n == 0:
        raise TPAError(
            f"{source}: {len(ids)} tokens is too short for one window of {seq_len} "
            f"tokens; give more text or a smaller --seq-len"
        )
    if max_windows is not None:
        n = min(n, max_windows)
    w = torch.tensor(ids[: n * body], dtype=torch.long).view(n, body)
    if bos_id is not None:
        w = torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), w], dim=1)
    return w


def interleaved_windows(
    streams: list[list[int]], seq_len: int, bos_id: int | None, max_windows: int | None, source: str = "text"
) -> torch.Tensor:
    """Windows of several token streams (one per file), alternating between them: window 0
    of each stream, then window 1 of each, ... until `max_windows`, so any budget draws
    evenly from every stream (a stream that runs out leaves the rest to the others). Each
    stream is cut as `make_windows` cuts one; a stream too short for a window gives none
    (when all are, they are cut as one stream). One stream gives `make_windows`' windows."""
    body = seq_len - 1 if bos_id is not None else seq_len
    cut = [make_windows(ids, seq_len, bos_id, max_windows, source) for ids in streams if len(ids) >= body]
    if not cut:  # every stream too short: cut them as one (or say it is too short)
        return make_windows([t for ids in streams for t in ids], seq_len, bos_id, max_windows, source)
    order = [w[i] for i in range(max(w.shape[0] for w in cut)) for w in cut if i < w.shape[0]]
    return torch.stack(order[:max_windows] if max_windows is not None else order)


def window_nll(model, window: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Per-position NLL (T-1,) of one window (T,), computing logits in chunks so that
    a 262k-entry vocabulary never needs T x vocab floats at once (128 rows: 134 MB of
    logits + as much for the log-softmax, for Gemma's 262k vocabulary)."""
    hidden = model(window[None])[0, :-1]
    targets = window[1:]
    out = []
    for s in range(0, hidden.shape[0], chunk):
        logits = model.logits(hidden[s : s + chunk]).float()
        out.append(
            torch.nn.functional.cross_entropy(logits, targets[s : s + chunk].to(logits.device), reduction="none")
        )
    return torch.cat(out)


@torch.no_grad()
def perplexity(
    model, windows: torch.Tensor, bos: bool, progress=None, device="cpu", cache: str | None = None
) -> PerplexityResult:
    """`cache`: a cache spec ("int4", "int8", ...): every prediction reads keys and values as
    decoding through that cache would (evaluate/simulate.py), in one forward per window."""
    from .simulate import simulated_cache

    total, count = 0.0, 0
    with simulated_cache(model, cache) if cache is not None else contextlib.nullcontext():
        for i in range(windows.shape[0]):
            nll = window_nll(model, windows[i].to(device))
            total += float(nll.double().sum())
            count += nll.numel()
            if not math.isfinite(total):
                raise non_finite_error(next(model.parameters()).dtype)
            if progress is not None:
                progress(i + 1, windows.shape[0], math.exp(total / count))
    return PerplexityResult(math.exp(total / count), total / count, count, windows.shape[0], windows.shape[1], bos)
