"""Attention computed from what the cache stores (see layout.py for the kinds).

- K full:   the cache holds attention-ready K; nothing to rebuild.
- K other:  rebuilt per tile of keys (decode -> QK-norm -> RoPE at the cached
            positions) inside the attention step; the tiles are merged with an online
            softmax, so no K for the whole context ever exists at once.
- V full:   probabilities times V.
- V latent: probabilities times the latent z (shared by all KV heads), then the
            per-KV-head up-projection; its bias passes through (probabilities sum to 1).
- V tpa_*:  rebuilt per tile with `decode`.

Shapes: B batch, H query heads, kv KV heads, g = H / kv, C queries, T keys.
Queries are grouped by KV head, (B, kv, g, C, D), so grouped-query attention needs
no copies of K/V. Masks come from positions: pads have negative positions and only
see themselves (so every row has a key and nothing is NaN), empty slots are EMPTY.

Sink tokens (sink_of(lay) > 0): positions 0..sink-1 of each sequence are masked out of
the factorized cache and attend from exact K/V instead (`sink_state`, one more tiny
tile, kept in the full head dim); `combine` merges it with the factorized part's
online-softmax state at the end, after the latent V's up-projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layout import LayerLayout
from ..models.common import rope_cos_sin
from .kernels import norm_from_latent


def sink_of(lay: LayerLayout) -> int:
    """Leading positions this layer reads from the exact sink buffer (0: none)."""
    return lay.sink_held


def allowed(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None, sink: int = 0) -> torch.Tensor:
    """(B, C, T) bool: causal, within the window, never a pad (except a pad itself), and
    never a sink position (0 <= pos < sink: those come from the exact sink tile)."""
    d = q_pos[:, :, None].long() - k_pos[:, None, :].long()
    kp = k_pos[:, None, :]
    ok = (d >= 0) & ((kp >= 0) | (d == 0))
    if window is not None:
        ok = ok & (d < window)
    if sink:
        ok = ok & ((kp < 0) | (kp >= sink))
    return ok


def new_entries(attn, lay: LayerLayout, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Queries (B, H, C, D) and the cache entries (B, C, values) of the new tokens x."""
    q = attn.prepare_q(x, cos, sin)
    if lay.k.kind == "full":
        k = attn.prepare_k(attn.k_proj(x), cos, sin).transpose(1, 2).flatten(2)
    else:
        k = attn.k_proj.encode(x)
    v = attn.v_proj(x) if lay.v.kind == "full" else attn.v_proj.encode(x)
    return q, k, v


def encode_weight(proj, kind: str) -> torch.Tensor:
    """The linear map x -> cache entry (pre-norm K for `full`): every kind's encode is linear."""
    if kind == "full":
        return proj.weight
    if kind == "latent":
        return proj.down.weight
    if kind == "tpa_fixed":
        return proj.b.weight
    return torch.cat([proj.a.weight, proj.b.weight])


def fused_qkv_weight(attn, lay: LayerLayout) -> torch.Tensor:
    """[W_q; W_k-encode; W_v-encode]: one matmul for the three projections of a decode step."""
    return torch.cat(
        [attn.q_proj.weight, encode_weight(attn.k_proj, lay.k.kind), encode_weight(attn.v_proj, lay.v.kind)]
    ).contiguous()


def fused_qkv_bias(attn, lay: LayerLayout) -> torch.Tensor | None:
    """The bias of the fused matmul's output (a family with Q/K/V biases, Qwen2): Q's, a
    full K's / V's; zeros for an encoder (a factorized kind adds its bias in `decode`,
    after the cache). None where the projections have no bias."""
    if attn.q_proj.bias is None:
        return None
    parts = [attn.q_proj.bias]
    for proj, c in ((attn.k_proj, lay.k), (attn.v_proj, lay.v)):
        parts.append(proj.bias if c.kind == "full" else attn.q_proj.bias.new_zeros(c.values_per_token))
    return torch.cat(parts).contiguous()


def exact_sink_entries(attn, lay: LayerLayout, x, cos, sin):
    """Exact K (B, kv, T, D; normed, rotated at cos/sin) and V (B, kv, T, D) of x, through
    the original projection a factorized module keeps as `.sink`."""
    kp = attn.k_proj if lay.k.kind == "full" else attn.k_proj.sink
    vp = attn.v_proj if lay.v.kind == "full" else attn.v_proj.sink
    return attn.prepare_k(kp(x), cos, sin), attn.split_heads(vp(x), attn.n_kv)


def new_entries_fused(attn, lay: LayerLayout, w_qkv: torch.Tensor, x, cos, sin, b_qkv=None):
    """`new_entries` with the projections as one matmul (the CUDA decode path); returns
    q and the K|V entries side by side (B, C, k values + v values), one cache write.
    b_qkv: `fused_qkv_bias` (None: no biases)."""
    nk, nv = lay.k.values_per_token, lay.v.values_per_token
    y = x @ w_qkv.T
    if b_qkv is not None:
        y = y + b_qkv
    q_pre, k, v = y.split([attn.n_heads * attn.head_dim, nk, nv], dim=-1)
    q = attn.finish_q(q_pre, cos, sin)
    if lay.k.kind == "full":
        k = attn.prepare_k(k, cos, sin).transpose(1, 2).flatten(2)
    return q, torch.cat([k, v], dim=-1)


def key_scale_terms(attn, tol: float = 4e-3) -> tuple:
    """What a latent K's norm factors are computed from: ("diag", g and e (kv, 2, r), const
    (kv,), eps, head dim) where each head's Gram matrix U_h^T U_h is diagonal up to tol (its
    off-diagonal part's spectral norm over the largest g: an orthonormal K basis rounded to
    bf16 is ~1e-3), so |U_h z + b_h|^2 = sum_r g_r (z_r + e_r)^2 + const_h
    (kernels.norm_from_latent) is a pointwise sum over z that fuses into the projection's
    epilogue (no matmul); else ("up", U, bias in fp32, eps, KV heads)."""
    kp, kv = attn.k_proj, attn.n_kv
    up, bias = kp.up.weight.detach().float(), kp.bias.detach().float()
    u = up.view(kv, -1, up.shape[1])
    gram = u.transpose(1, 2) @ u
    g = gram.diagonal(dim1=1, dim2=2)
    off = torch.linalg.matrix_norm(gram - torch.diag_embed(g), 2).amax()
    ones = torch.ones(u.shape[1], device=up.device)
    z_norm = norm_from_latent(up, bias, ones, kv, u.shape[1]) if off <= tol * g.amax() else None
    if z_norm is not None:
        return "diag", z_norm[0], z_norm[1], attn.k_norm.eps, u.shape[1]
    return "up", up, bias, attn.k_norm.eps, kv


def key_scales(z: torch.Tensor, terms, step: int = 2048) -> torch.Tensor:
    """A latent K's QK-norm factor per entry and KV head, 1 / rms(U z + b), (B, T, KV) fp32,
    from z as the cache stores it: what a k_scale cache keeps beside z (layout.py). In
    slices of `step` entries (bounded fp32 scratch for a whole prompt)."""
    out = []
    for i in range(0, z.shape[1], step):
        x = z[:, i : i + step].float()
        if terms[0] == "diag":
            _, gz, const, eps, d = terms
            sq = (gz[:, 0] * (x[..., None, :] + gz[:, 1]).square()).sum(-1) + const
            out.append(torch.rsqrt(sq / d + eps))
        else:
            _, up, bias, eps, kv = terms
            out.append(torch.rsqrt((x @ up.T + bias).unflatten(-1, (kv, -1)).pow(2).mean(-1) + eps))
    return torch.cat(out, 1)


def write_entries(kv_buf, slots, kv, nk: int, ks_buf=None, ks_terms=None) -> None:
    """Store a plain (not one-byte) cache's new entries (B, n, k values | v values) at
    `slots`, and a k_scale layout's norm factors from z as stored (LayerCache.write_kv's
    plain path). The compiled decode step calls it inside its entries function, where the
    writes and the factors fuse into the projection's epilogue kernel (no launch of their own)."""
    kv = kv.to(kv_buf.dtype)
    kv_buf.index_copy_(1, slots, kv)
    if ks_buf is not None:
        ks_buf.index_copy_(1, slots, key_scales(kv[..., :nk], ks_terms))


def entries_written(
    attn, lay: LayerLayout, w_qkv: torch.Tensor, x, cos, sin, kv_buf, slots, ks_buf=None, ks_terms=None, b_qkv=None
):
    """`new_entries_fused` and the cache write in one function (compiled as one: the CUDA
    decode step of a plain cache); returns q."""
    q, kv = new_entries_fused(attn, lay, w_qkv, x, cos, sin, b_qkv)
    write_entries(kv_buf, slots, kv, lay.k.values_per_token, ks_buf, ks_terms)
    return q


def keys(attn, lay: LayerLayout, kz: torch.Tensor, k_pos: torch.Tensor, base: float, scale: float):
    """Cache entries (B, T, values) -> attention-ready K (B, kv, T, D), rotated at k_pos."""
    b, t, _ = kz.shape
    if lay.k.kind == "full":
        return kz.view(b, t, attn.n_kv, attn.head_dim).transpose(1, 2)
    w = attn.q_proj.weight.dtype
    cos, sin = rope_cos_sin(k_pos, attn.head_dim, base, scale, w)
    return attn.prepare_k(attn.k_proj.decode(kz.to(w)), cos, sin)


def values(attn, lay: LayerLayout, vz: torch.Tensor) -> torch.Tensor:
    """Cache entries -> what probabilities multiply: (B, kv, T, D), or (B, 1, T, r) for a latent."""
    b, t, _ = vz.shape
    if lay.v.kind == "latent":
        return vz[:, None]
    if lay.v.kind != "full":
        vz = attn.v_proj.decode(vz.to(attn.q_proj.weight.dtype))
    return vz.reshape(b, t, attn.n_kv, attn.head_dim).transpose(1, 2)


def finish_values(attn, lay: LayerLayout, o: torch.Tensor) -> torch.Tensor:
    """(B, kv, g*C, r) latent outputs -> (B, kv, g*C, D) with the up-projection and bias."""
    if lay.v.kind != "latent":
        return o
    up = attn.v_proj.up.weight.float().view(attn.n_kv, attn.head_dim, -1)
    bias = attn.v_proj.bias.float().view(attn.n_kv, 1, attn.head_dim)
    return torch.einsum("bkcr,kdr->bkcd", o, up) + bias


def tile_update(attn, lay: LayerLayout, qg, q_pos, kz, vz, k_pos, base, scale, m, l, acc):
    """One tile of keys into the online-softmax state (m, l, acc), all fp32.

    qg (B, kv, g, C, D); kz/vz (B, T, values) cache entries; k_pos (B, T);
    m, l (B, kv, g, C); acc (B, kv, g, C, n).
    """
    b, kv, g, c, _ = qg.shape
    # matmuls in the model dtype (fp32 accumulation inside), softmax statistics in fp32
    k = keys(attn, lay, kz, k_pos, base, scale).to(qg.dtype)
    s = (qg.flatten(2, 3) @ k.transpose(-1, -2)).float().view(b, kv, g, c, -1) * attn.scale
    s = s.masked_fill(~allowed(q_pos, k_pos, attn.window, sink_of(lay))[:, None, None], float("-inf"))
    m_new = torch.maximum(m, s.amax(-1))
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # tile with no key
    p = torch.exp(s - m_safe[..., None])
    corr = torch.exp(m - m_safe)
    l = l * corr + p.sum(-1)
    vals = values(attn, lay, vz).to(qg.dtype)
    pv = (p.flatten(2, 3).to(qg.dtype) @ vals).float()
    acc = acc * corr[..., None] + pv.view(b, kv, g, c, -1)
    return m_new, l, acc


def sink_state(attn, qg, q_pos, ks, vs):
    """Online-softmax state (m, l, acc) of the exact sink tile, acc in the head dim.

    qg (B, kv, g, C, D); ks (B, kv, S, D) attention-ready K and vs (B, kv, S, D) V of
    positions 0..S-1 of each sequence. Same mask rule as any key (causal, window), so a
    position not yet written (a prompt shorter than S) is never seen.
    """
    b, kv, g, c, d = qg.shape
    n = ks.shape[2]
    s = (qg.flatten(2, 3) @ ks.to(qg.dtype).transpose(-1, -2)).float().view(b, kv, g, c, n) * attn.scale
    k_pos = torch.arange(n, device=qg.device).expand(b, n)
    s = s.masked_fill(~allowed(q_pos, k_pos, attn.window)[:, None, None], float("-inf"))
    m = s.amax(-1)
    p = torch.exp(s - torch.where(torch.isinf(m), torch.zeros_like(m), m)[..., None])
    acc = (p.flatten(2, 3).to(qg.dtype) @ vs.to(qg.dtype)).float().view(b, kv, g, c, -1)
    return m, p.sum(-1), acc


def combine(attn, lay: LayerLayout, main, sink):
    """Merge the factorized part's state (m, l, acc: (B, kv, g, C, n)) with the sink
    tile's (acc in the head dim) -> (B, kv, g*C, D) fp32. Either part may have no key
    (l = 0, m = -inf; e.g. position 0 sees only the sink), never both."""
    (m1, l1, a1), (m2, l2, a2) = main, sink
    b, kv, g, c, n = a1.shape
    o1 = finish_values(attn, lay, (a1 / l1.clamp_min(1e-30)[..., None]).view(b, kv, g * c, n))
    mx = torch.maximum(m1, m2)
    mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)
    w1 = (l1 * torch.exp(m1 - mx)).view(b, kv, g * c, 1)
    e2 = torch.exp(m2 - mx).view(b, kv, g * c, 1)
    return (o1 * w1 + a2.view(b, kv, g * c, -1) * e2) / (w1 + l2.view(b, kv, g * c, 1) * e2)


def attend_tiles(attn, lay: LayerLayout, q, q_pos, tiles, update=tile_update, sink=None):
    """Attention of q (B, H, C, D) over `tiles`: (kz, vz, k_pos) cache entries, plus the
    exact `sink` (ks, vs) tile when the layer has one.

    `update` is `tile_update` (or its compiled twin). Returns (B, H, C, D) in q's dtype.
    """
    cfg = attn.cfg
    base, scale = cfg.rope_base(attn.layer), cfg.rope_scale(attn.layer)
    b, h, c, d = q.shape
    kv, g = attn.n_kv, h // attn.n_kv
    qg = q.view(b, kv, g, c, d)
    n = lay.v.rank if lay.v.kind == "latent" else d
    m = torch.full((b, kv, g, c), float("-inf"), device=q.device)
    l = torch.zeros((b, kv, g, c), device=q.device)
    acc = torch.zeros((b, kv, g, c, n), device=q.device)
    for kz, vz, k_pos in tiles:
        m, l, acc = update(attn, lay, qg, q_pos, kz, vz, k_pos, base, scale, m, l, acc)
    if sink is not None:
        o = combine(attn, lay, (m, l, acc), sink_state(attn, qg, q_pos, *sink))
        return o.reshape(b, h, c, -1).to(q.dtype)
    o = (acc / l[..., None]).view(b, kv, g * c, n)
    return finish_values(attn, lay, o).reshape(b, h, c, -1).to(q.dtype)


def sdpa_decode(attn, q, kc, vc, mask):
    """Full K and V, one query per sequence: fused SDPA straight over the cache.

    q (B, H, 1, D); kc/vc (B, S, kv*D) cache buffers; mask (B, 1, 1, S), bool or an
    additive bias in q's dtype (made once per step, not per layer). The g query
    heads of a KV head become g query rows, so no K/V copies for GQA.
    """
    b, h, _, d = q.shape
    kv, s = attn.n_kv, kc.shape[1]
    k = kc.view(b, s, kv, d).transpose(1, 2).to(q.dtype)
    v = vc.view(b, s, kv, d).transpose(1, 2).to(q.dtype)
    o = F.scaled_dot_product_attention(q.view(b, kv, h // kv, d), k, v, attn_mask=mask, scale=attn.scale)
    return o.reshape(b, h, 1, d)


def direct_decode(attn, lay: LayerLayout, q, kc, vc, bias):
    """K stored full (nothing to rebuild), one query: scores over the whole cache at once.

    Plain matmuls split the keys over the whole GPU, where SDPA's kernels give one
    (batch, head) pair one block and crawl through 32K keys. bias (B, 1, 1, S) additive.
    Returns (B, 1, H*D).
    """
    b, h, _, d = q.shape
    kv, g, s = attn.n_kv, h // attn.n_kv, kc.shape[1]
    k = kc.view(b, s, kv, d).transpose(1, 2).to(q.dtype)
    sc = (q.view(b, kv, g, d) @ k.transpose(-1, -2)).float() * attn.scale + bias
    p = sc.softmax(-1)
    vals = values(attn, lay, vc).to(q.dtype)
    o = finish_values(attn, lay, (p.to(q.dtype) @ vals).float())
    return o.reshape(b, 1, h * d).to(q.dtype)
