"""Q/K geometry: each query head's bilinear score operator g = W_Kᵀ S W_Q (hidden × hidden),
compared within and across layers, without ever forming a hidden × hidden matrix.

S = diag(s_q ∘ s_k) holds the QK-norm gains (Gemma, 1 + w); the per-token RMS scaling
and RoPE (a relative rotation) are left out, so this is the geometry at distance 0 up
to a positive scalar per token. W_K is the KV head the query head reads (GQA groups).

Every quantity comes from head_dim-sized factors (float64):
- singular values of g: thin QRs W_Kᵀ = Q_k R_k, (S W_Q)ᵀ = Q_q R_q, then
  g = Q_k (R_k R_qᵀ) Q_qᵀ, so svd(R_k R_qᵀ) gives σ(g) and the Q-side principal
  directions Q_q V (the input directions the head's queries read most);
- signed eigenvalues of the symmetric part (g + gᵀ)/2 = ½ Xᵀ J X with X = [S W_Q; W_K],
  J = [[0, I], [I, 0]]: with Xᵀ = Q R, they are those of ½ R J Rᵀ (2·head_dim square);
- cross-layer Gram <g_L, g_L'>_F = tr((W_K,L W_K,L'ᵀ)(S W_Q,L' (S W_Q,L)ᵀ)), head_dim ×
  head_dim blocks, computed one layer row at a time.
"""

from __future__ import annotations

import torch

from ..methods.layers import effective_weight
from .spectra import summarize

TOPK = 8


def _factors(model):
    """Per layer: (W_Q per query head scaled by the QK-norm gains, W_K per KV head); fp32
    views of the model's own weights where possible (no hidden-sized copies in fp64)."""
    cfg = model.cfg
    D = cfg.head_dim
    qs, ks = [], []
    for block in model.layers:
        a = block.self_attn
        wq = a.q_proj.weight.detach().float().view(cfg.num_heads, D, -1)
        wk = effective_weight(a.k_proj, cfg.hidden_size)
        if wk is None:  # contextual TPA K: no fixed operator to analyse
            return None
        wk = wk.float().view(cfg.num_kv_heads, D, -1)
        if getattr(a, "qk_norm", False):
            s = (a.q_norm.offset + a.q_norm.weight.detach()) * (a.k_norm.offset + a.k_norm.weight.detach())
            wq = wq * s[None, :, None]
        qs.append(wq)
        ks.append(wk)
    return qs, ks


def head_operator(wq: torch.Tensor, wk: torch.Tensor, topk: int = TOPK, rk: torch.Tensor | None = None) -> dict:
    """Spectrum, Q-side principal directions and signed symmetric eigenvalues of
    g = wkᵀ wq, from wq, wk of shape (head_dim, hidden); `rk`: R of wkᵀ's QR if known
    (query heads of one GQA group share it)."""
    wq, wk = wq.double(), wk.double()
    D = wq.shape[0]
    rk = torch.linalg.qr(wk.T)[1] if rk is None else rk
    qq, rq = torch.linalg.qr(wq.T)
    u, s, vh = torch.linalg.svd(rk @ rq.T)
    dirs = qq @ vh.T[:, :topk]  # (hidden, topk), orthonormal
    x = torch.cat([wq, wk])  # (2D, hidden)
    _, r = torch.linalg.qr(x.T)
    j = torch.zeros(2 * D, 2 * D, dtype=x.dtype)
    j[:D, D:] = j[D:, :D] = torch.eye(D, dtype=x.dtype)
    m = r @ j @ r.T
    sym = torch.linalg.eigvalsh((m + m.T) / 4)  # ½ R J Rᵀ, symmetrised against round-off
    sym = sym[sym.abs().argsort(descending=True)]
    pos, tot = float(sym.clamp_min(0).sum()), float(sym.abs().sum())
    return {"energy": s.pow(2), "dirs": dirs, "sym_eigs": sym, "positive_fraction": pos / tot if tot > 0 else 0.0}


def _grams(stack_k: torch.Tensor, stacks_q: list[torch.Tensor], D: int) -> list[torch.Tensor]:
    """G[L, L'] = Σ (K_L K_L'ᵀ) ∘ (Q_L Q_L'ᵀ) over head_dim blocks, for each query head of
    one KV group (the K products are shared); one layer row at a time (memory head_dim ×
    layers·head_dim), upper triangle mirrored. Big products in fp32, sums in fp64."""
    n = stack_k.shape[0] // D
    k32 = stack_k.float()
    gs = [torch.zeros(n, n, dtype=torch.float64) for _ in stacks_q]
    for a in range(n):
        kk = (k32[a * D : (a + 1) * D] @ k32[a * D :].T).double()
        for g, sq in zip(gs, stacks_q):
            q32 = sq.float()
            prod = kk * (q32[a * D : (a + 1) * D] @ q32[a * D :].T).double()
            row = prod.view(D, n - a, D).sum((0, 2))
            g[a, a:] = row
            g[a:, a] = row
    return gs


@torch.no_grad()
def qk_geometry(model, topk: int = TOPK, progress=None) -> dict | None:
    cfg = model.cfg
    H, D, L = cfg.num_heads, cfg.head_dim, cfg.num_layers
    group = H // cfg.num_kv_heads
    f = _factors(model)
    if f is None:
        return None
    qs, ks = f
    topk = min(topk, D)
    per_layer, dirs = [], torch.zeros(L, H, cfg.hidden_size, topk)
    for i in range(L):
        heads = []
        rks = [torch.linalg.qr(k.double().T)[1] for k in ks[i]]
        for h in range(H):
            op = head_operator(qs[i][h], ks[i][h // group], topk, rks[h // group])
            dirs[i, h] = op["dirs"]
            heads.append(
                {
                    **summarize(op["energy"]),
                    "fro_norm": float(op["energy"].sum().sqrt()),
                    "positive_fraction": round(op["positive_fraction"], 6),
                    "top_signed_eigs": [float(x) for x in op["sym_eigs"][:4]],
                }
            )
        per_layer.append({"layer": i, "type": cfg.layer_types[i], "heads": heads})
        if progress:
            progress(i + 1, L + H)
    grams = []
    for kv in range(cfg.num_kv_heads):
        heads = range(kv * group, (kv + 1) * group)
        grams += _grams(
            torch.cat([ks[i][kv] for i in range(L)]), [torch.cat([qs[i][h] for i in range(L)]) for h in heads], D
        )
        if progress:
            progress(L + heads[-1] + 1, L + H)
    cos, overlap = [], []
    for h, g in enumerate(grams):
        d = g.diagonal().clamp_min(1e-300).sqrt()
        cos.append(g / torch.outer(d, d))
        # subspace overlap of the top-k Q-side directions: ||P_Lᵀ P_L'||²_F / k in [0, 1]
        p = dirs[:, h].double()  # (L, hidden, k)
        overlap.append(torch.einsum("aik,bil->abkl", p, p).pow(2).sum((2, 3)) / topk)
    return {"topk": topk, "layers": per_layer, "cosine": torch.stack(cos), "overlap": torch.stack(overlap)}
