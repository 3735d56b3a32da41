"""Stream calibration text through the model and collect, per layer, statistics of
the attention input x (the normed hidden state that K, V and Q are projected from).

Every K/V projection is linear in x, so the second moment of x determines the
covariance of K and V for any candidate factorization: one pass serves all methods.
A fixed, evenly spaced sample of x rows is also kept for methods that fit non-linear
forms (contextual TPA) and for held-out error measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerStats:
    n: int
    sum_x: torch.Tensor  # (d,) float64
    xtx: torch.Tensor  # (d, d) float64, sum of x x^T
    sample: torch.Tensor  # (m, d) float32 rows of x

    @property
    def mean(self) -> torch.Tensor:
        return self.sum_x / self.n

    @property
    def second_moment(self) -> torch.Tensor:
        return self.xtx / self.n

    @property
    def covariance(self) -> torch.Tensor:
        mu = self.mean
        return self.second_moment - torch.outer(mu, mu)


@torch.no_grad()
def collect_stats(model, windows: torch.Tensor, sample_rows: int = 4096, progress=None,
                  device: str = "cpu") -> list[LayerStats]:
    """Run `windows` (N, T) through `model`; return one LayerStats per layer."""
    cfg = model.cfg
    d = cfg.hidden_size
    n_tokens = windows.numel()
    # Evenly spaced rows of the flattened (N*T) token stream: deterministic, no RNG.
    keep = torch.linspace(0, n_tokens - 1, min(sample_rows, n_tokens)).round().long()
    stats = [LayerStats(0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64),
                        torch.zeros(len(keep), d)) for _ in range(cfg.num_layers)]
    offset = 0

    def hook(i, block, h):
        x = block.input_layernorm(h)[0].float().cpu()  # (T, d)
        s = stats[i]
        xd = x.double()
        s.n += x.shape[0]
        s.sum_x += xd.sum(0)
        s.xtx += xd.T @ xd
        sel = (keep >= offset) & (keep < offset + x.shape[0])
        s.sample[sel] = x[keep[sel] - offset]

    for w in range(windows.shape[0]):
        model(windows[w:w + 1].to(device), hooks=hook)
        offset += windows.shape[1]
        if progress is not None:
            progress(w + 1, windows.shape[0])
    return stats
