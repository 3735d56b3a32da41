"""tpa-compress: convert transformer LLMs to TPA / low-rank factorized attention, measured."""

import os

# OpenMP threads that busy-wait make LAPACK calls pathological when the cores are shared
# with any other process: measured on 2 cores, torch.linalg.eigvalsh of a 512 x 512 matrix
# took 10-14 s with the default policy and 0.034 s with PASSIVE, matmul speed unchanged.
# It only takes effect if set before torch is first imported, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
