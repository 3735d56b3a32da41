"""CPU thread counts: how many the forward passes use, and the fixed count the methods'
linear algebra runs on (so the output bytes do not depend on either)."""

from __future__ import annotations

import contextlib

import torch

from .errors import TPAError


def cpu_threads(spec: str | int = "auto") -> int:
    """Intra-op CPU threads for conversion: a positive integer, or "auto": every core.

    Measured on the 2-core machine (Gemma 3 270M, one 512-token forward): idle, 2 threads
    0.89 s vs 1 thread 1.42 s; with one core busy with another job, 1.54-1.64 s vs 1.43 s.
    That small penalty holds because tpa_compress sets OMP_WAIT_POLICY=PASSIVE before
    torch loads; with busy-waiting OpenMP threads the same loaded case took 9 s, which is
    why `--threads 1` exists for heavily shared machines. Results do not depend on the
    count: the forward pass and matmuls give the same bits on any count, and the methods'
    eigh / SVD run on one thread (`fixed_threads`), so converted files are byte-identical.
    """
    import os

    if spec == "auto":
        return os.cpu_count() or 1
    try:
        n = int(spec)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TPAError(f"--threads {spec!r} is not valid; valid: auto or a positive integer")
    return n


@contextlib.contextmanager
def fixed_threads(n: int = 1):
    """Run the methods' linear algebra on a fixed thread count: LAPACK's eigh gives
    last-bit different vectors on 1 and 2 threads (matmuls and the forward pass do not),
    and the output bytes must not depend on --threads or the machine's load."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
