"""Spectra of the real K and V activations, from one streamed pass over calibration text.

K (pre-norm) and V are linear in the attention input x, so their covariances follow
exactly from the second moment of x that `calibrate.collect_stats` accumulates: no K/V
rows are kept. Only what is not linear in x is accumulated from the forward pass
itself, with forward hooks on the model's own modules (nothing is recomputed):
- K after the QK-norm (Gemma): its mean and second moment;
- the contextual head mode: per token, the eigenvalues of K_t K_tᵀ (kv_heads ×
  kv_heads), whose top-R sum is what R contextual rank-1 terms can reproduce.
Per layer the state is a few small matrices; the pass holds one window's activations,
and skips the last block's attention and MLP (only that block's input is analysed).
"""

from __future__ import annotations

import torch
from torch import nn

from ..calibrate import collect_stats
from ..evaluate.perplexity import interleaved_windows
from ..methods import LayerInputs, get_method
from ..methods.layers import effective_weight
from .spectra import eig_energy, summarize


def calibration_windows(tok, texts: list[str], tokens: int, seq_len: int, source: str) -> torch.Tensor:
    """BOS-led windows when the tokenizer adds BOS (as Gemma is trained), alternating
    between the texts (one per file: the default mix is both domains), like convert."""
    bos = tok.bos_id if tok.add_bos else None
    streams = [tok.encode(t, add_bos=False) for t in texts]
    return interleaved_windows(streams, seq_len, bos, max(1, tokens // seq_len), source=source)


class _Accumulator:
    """Forward hooks on k_proj / k_norm / v_proj of every layer."""

    def __init__(self, model):
        cfg = self.cfg = model.cfg
        self.kv, self.D = cfg.num_kv_heads, cfg.head_dim
        n = cfg.num_layers
        z = lambda *s: [torch.zeros(*s, dtype=torch.float64) for _ in range(n)]  # noqa: E731
        self.post_n, self.post_sum, self.post_xtx = [0] * n, z(cfg.kv_size), z(cfg.kv_size, cfg.kv_size)
        self.ctx = {"k": z(self.kv), "v": z(self.kv)}  # summed per-token head-mode eigenvalues
        self.handles = []
        for i, block in enumerate(model.layers):
            a = block.self_attn
            if getattr(a, "qk_norm", False):
                self.handles.append(a.k_norm.register_forward_hook(self._post(i)))
            if self.kv > 1:
                for t in ("k", "v"):
                    self.handles.append(getattr(a, f"{t}_proj").register_forward_hook(self._heads(i, t)))

    def _post(self, i):
        def hook(mod, args, out):  # out: (B, kv, T, D) normed K, before RoPE
            k = out.detach().transpose(1, 2).reshape(-1, self.cfg.kv_size).float()
            self.post_n[i] += k.shape[0]
            self.post_sum[i] += k.sum(0).double().cpu()
            # fp32 within a window, fp64 across windows: accurate, and 2x cheaper than fp64
            self.post_xtx[i] += (k.T @ k).double().cpu()

        return hook

    def _heads(self, i, t):
        def hook(mod, args, out):  # out: (B, T, kv*D)
            z = out.detach().reshape(-1, self.kv, self.D).double()
            ev = torch.linalg.eigvalsh(z @ z.transpose(1, 2)).flip(-1).clamp_min(0)
            self.ctx[t][i] += ev.sum(0).cpu()

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


class _LastLayerKV(nn.Module):
    """Stands in for the last block during the pass: only its input and K/V projections
    are analysed, so its attention and MLP (1/num_layers of the pass) are skipped."""

    def __init__(self, block):
        super().__init__()
        self.input_layernorm, self.self_attn = block.input_layernorm, block.self_attn

    def forward(self, h, attn):
        a, x = self.self_attn, self.input_layernorm(h)
        k = a.k_proj(x)  # calling the modules fires the accumulator's hooks
        if getattr(a, "qk_norm", False):
            a.k_norm(a.split_heads(k, a.n_kv))
        a.v_proj(x)
        return h


def _cumulative(energy: torch.Tensor) -> list[float]:
    e = energy.double().clamp_min(0)
    return [round(float(x), 6) for x in (e.cumsum(0) / e.sum().clamp_min(1e-300))]


def _head_gram(w: torch.Tensor, m2: torch.Tensor, kv: int, D: int) -> torch.Tensor:
    """Σ_t K_t K_tᵀ / n (kv × kv) from the second moment of x: the fixed head mode."""
    wh = w.double().view(kv, D, -1)
    full = torch.einsum("adi,ij,bdj->ab", wh, m2, wh)
    return (full + full.T) / 2


def _affine(stats, proj, w: torch.Tensor):
    """([W | b], E[x̃ x̃ᵀ], E[x̃]) with x̃ = [x; 1]: the moments of W x + b, what the cache
    holds. b: a plain Linear projection's bias (Qwen2), else zero (a factorized projection
    keeps only its linear part here)."""
    b = proj.bias if isinstance(proj, torch.nn.Linear) and proj.bias is not None else None
    col = torch.zeros(w.shape[0], 1, dtype=torch.float64) if b is None else b.detach().double()[:, None]
    mu = stats.mean.double()
    m2 = stats.second_moment.double()
    one = torch.ones(1, dtype=torch.float64)
    m2 = torch.cat([torch.cat([m2, mu[:, None]], 1), torch.cat([mu, one])[None]], 0)
    return torch.cat([w.double(), col], 1), m2, torch.cat([mu, one])


@torch.no_grad()
def activation_spectra(model, windows: torch.Tensor, progress=None, device: str = "cpu") -> list[dict]:
    """Per layer: summaries and spectra of K pre-norm, K post-norm, V, V through o_proj,
    and the head mode of K and V (fixed vs contextual), from one pass over `windows`."""
    cfg = model.cfg
    acc = _Accumulator(model)
    last = model.layers[-1]
    model.layers[-1] = _LastLayerKV(last)
    try:
        stats = collect_stats(model, windows, sample_rows=0, progress=progress, device=device)
    finally:
        model.layers[-1] = last
        acc.remove()
    pca = get_method("activation_svd")
    k_and_vout, v_raw = pca({}), pca({"output_aware": False})
    out = []
    for i, block in enumerate(model.layers):
        a = block.self_attn
        w = {t: effective_weight(getattr(a, f"{t}_proj"), cfg.hidden_size) for t in "qkvo"}
        rec = {"layer": i, "type": cfg.layer_types[i], "tokens": stats[i].n}
        spectra = {}
        if w["k"] is not None and w["v"] is not None:
            inp = LayerInputs(cfg, i, w["q"].double(), w["k"].double(), w["v"].double(), w["o"].double(), stats[i])
            spectra["k_pre"] = k_and_vout.spectrum(inp, "k")
            spectra["v"] = v_raw.spectrum(inp, "v")
            spectra["v_out"] = k_and_vout.spectrum(inp, "v")
            for t in ("k", "v"):
                wb, m2, mean = _affine(stats[i], getattr(a, f"{t}_proj"), inp.weight(t))
                mu = wb @ mean
                second = float(torch.einsum("ri,ij,rj->", wb, m2, wb))
                rec[f"{t}_mean_energy_fraction"] = round(float(mu @ mu) / max(second, 1e-300), 6)
                if acc.kv > 1:
                    rec.setdefault("head_mode", {})[t] = {
                        "fixed": _cumulative(eig_energy(_head_gram(wb, m2, acc.kv, acc.D))),
                        "contextual": _cumulative(acc.ctx[t][i]),
                    }
        if acc.post_n[i]:
            n = acc.post_n[i]
            mu = acc.post_sum[i] / n
            spectra["k_post"] = eig_energy(acc.post_xtx[i] / n - torch.outer(mu, mu))
        rec.update({name: summarize(e) for name, e in spectra.items()})
        rec["spectra"] = spectra
        out.append(rec)
    return out
