"""Stream calibration text through the model and collect, per layer, statistics of
the attention input x (the normed hidden state that K, V and Q are projected from).

Every K/V projection is linear in x, so the second moment of x determines the
covariance of K and V for any candidate factorization: one pass serves all methods.
A fixed, evenly spaced sample of x rows is also kept for methods that fit non-linear
forms (contextual TPA) and for held-out error measurement.

With the moments, the queries' second moment is also accumulated per KV group: q as
attention sees it (after QK-norm) but before RoPE, summed over the group's query heads,
for methods that weight the K fit by what the scores q.k do with it (score_aware_svd).
`windows=n` also keeps the first n whole windows of x (every position, sink included),
for methods that refit against a layer's real attention output (attn_refit).

Only the layers asked for are measured, and the forward pass stops at the input of the
last of them (a recipe that converts layers 5, 11 and 17 runs 17 of 18 blocks).
Moments accumulate in float64 on the model's device; the results are on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerStats:
    n: int
    sum_x: torch.Tensor | None  # (d,) float64; None when collected with moments=False
    xtx: torch.Tensor | None  # (d, d) float64, sum of x x^T; None when moments=False
    sample: torch.Tensor  # (m, d) float32 rows of x
    qtq: torch.Tensor | None = None  # (kv, D, D) float64, sum over tokens and each group's heads of q q^T
    windows: torch.Tensor | None = None  # (n, T, d) float32 whole windows of x, when asked for

    @property
    def query_moment(self) -> torch.Tensor:
        """(kv, D, D): E[q q^T] per token, summed over each KV group's query heads
        (q after QK-norm, before RoPE)."""
        return self.qtq / self.n

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


class _Stop(Exception):
    """Raised by the hook once the last wanted layer is measured: the rest of the
    forward pass would be wasted."""


class StatsCollector:
    """Accumulates LayerStats from each layer's input hidden states, window by window.

    `add(i, block, h, w)` takes layer i's input h (1, T, d) for window w (windows in
    order); `pop(i)` returns layer i's LayerStats (on the CPU) and forgets it. A layer's
    buffers exist from its first `add` to its `pop`, so a caller that walks the layers
    one at a time (convert/stream.py) holds one layer's statistics at a time. The
    whole-model pass (`collect_stats`) and the streaming pass share this code, so both
    give the same bits."""

    def __init__(
        self,
        cfg,
        n_windows: int,
        seq_len: int,
        sample_rows: int = 4096,
        moments: bool = True,
        skip: int = 0,
        windows_kept: int = 0,
    ):
        self.cfg, self.moments, self.seq_len = cfg, moments, seq_len
        self.skip = min(skip, seq_len - 1)
        self.per_window = seq_len - self.skip
        n_tokens = n_windows * self.per_window
        # Evenly spaced rows of the flattened (N*(T-skip)) token stream: deterministic, no RNG.
        self.keep = torch.linspace(0, n_tokens - 1, min(sample_rows, n_tokens)).round().long()
        self.n_kept = min(windows_kept, n_windows)
        self.stats: dict[int, LayerStats] = {}
        self.acc = {}  # layer -> (sum_x, xtx, qtq) on the hidden states' device, float64

    def add(self, i: int, block, h: torch.Tensor, w: int) -> None:
        cfg, d = self.cfg, self.cfg.hidden_size
        if i not in self.stats:
            self.stats[i] = LayerStats(0, None, None, torch.zeros(len(self.keep), d))
            if self.n_kept:
                self.stats[i].windows = torch.zeros(self.n_kept, self.seq_len, d)
        s = self.stats[i]
        offset = w * self.per_window
        if w < self.n_kept:
            s.windows[w] = block.input_layernorm(h)[0].float().cpu()
        x = block.input_layernorm(h)[0, self.skip :].float()  # (T - skip, d)
        s.n += x.shape[0]
        if self.moments:
            xd = x.double()
            if i not in self.acc:
                D = cfg.head_dim
                self.acc[i] = (
                    torch.zeros(d, dtype=torch.float64, device=x.device),
                    torch.zeros(d, d, dtype=torch.float64, device=x.device),
                    torch.zeros(cfg.num_kv_heads, D, D, dtype=torch.float64, device=x.device),
                )
            sx, xtx, qtq = self.acc[i]
            sx += xd.sum(0)
            xtx += xd.T @ xd
            qtq += _query_moment(block.self_attn, x)
        keep = self.keep
        sel = (keep >= offset) & (keep < offset + x.shape[0])
        if bool(sel.any()):
            s.sample[sel] = x[(keep[sel] - offset).to(x.device)].cpu()

    def pop(self, i: int) -> LayerStats:
        s = self.stats.pop(i)
        if i in self.acc:
            sx, xtx, qtq = self.acc.pop(i)
            s.sum_x, s.xtx, s.qtq = sx.cpu(), xtx.cpu(), qtq.cpu()
        return s


@torch.no_grad()
def collect_stats(
    model,
    windows: torch.Tensor,
    sample_rows: int = 4096,
    progress=None,
    device: str | torch.device | None = None,
    layers=None,
    moments: bool = True,
    skip: int = 0,
    windows_kept: int = 0,
) -> list[LayerStats | None]:
    """Run `windows` (N, T) through `model`; return one LayerStats per layer.

    `layers`: the layer indices to measure (None: all); the others get None. When given,
    the forward pass stops at the input of the last of them (None runs every block,
    for callers that hook the blocks themselves).
    `moments`: accumulate sum_x / xtx (False: only the row sample, e.g. held-out rows).
    `device`: where the windows go (default: the model's device).
    `skip`: leave out the first `skip` positions of every window (the sink tokens a
    converted layer keeps exact: a factorization never sees them, so they must not
    pull its basis; the BOS sink is an outlier).
    `windows_kept`: keep the first that many windows of x whole (LayerStats.windows).
    """
    cfg = model.cfg
    want = sorted(set(range(cfg.num_layers) if layers is None else layers))
    out: list[LayerStats | None] = [None] * cfg.num_layers
    if not want:
        return out
    if device is None:
        device = next(model.parameters()).device
    col = StatsCollector(cfg, windows.shape[0], windows.shape[1], sample_rows, moments, skip, windows_kept)
    wanted = set(want)
    last = want[-1] if layers is not None else None
    w = 0

    def hook(i, block, h):
        if i not in wanted:
            return
        col.add(i, block, h, w)
        if i == last:
            raise _Stop

    for w in range(windows.shape[0]):
        try:
            model(windows[w : w + 1].to(device), hooks=hook)
        except _Stop:
            pass
        if progress is not None:
            progress(w + 1, windows.shape[0])
    for i in want:
        if i in col.stats:
            out[i] = col.pop(i)
    return out


def _query_moment(attn, x: torch.Tensor) -> torch.Tensor:
    """(kv, D, D) float64 sum of q q^T over the rows of x and each KV group's heads, q after
    the QK-norm (when the model has one) and before RoPE."""
    q = attn.q_proj(x.to(attn.q_proj.weight.dtype)).float()
    q = q.view(x.shape[0], attn.n_heads, attn.head_dim)
    if attn.qk_norm:
        q = attn.q_norm(q)
    g = attn.n_heads // attn.n_kv
    q = q.double().view(x.shape[0], attn.n_kv, g, attn.head_dim).transpose(0, 1).flatten(1, 2)
    return q.transpose(1, 2) @ q
