"""Probe: does a joint K/V latent per token pay (issue 28, point 1)? Both K and V come from
the same normed x, so one latent z = D x could serve both (K = U_k z, V = U_v z) instead of
two latents of ranks r_k + r_v. At equal cached values r, the joint fit is never worse than the
best split; it is better only as far as K's and V's activation-weighted row spaces overlap.

Per layer, from calibration activations (covariance C = E[x x^T] of the attention input):
A_k = W_k C^(1/2) / ||.||_F and A_v = W_o-weighted W_v C^(1/2) / ||.||_F (V's error as o_proj
sees it). Reported: the relative residual energy at r values per token, (a) separate latents
with the best split r_k + r_v = r, (b) one joint latent of rank r on [A_k; A_v].

    PYTHONPATH=. python bench/probes/joint_kv.py --model gemma3-270m --tokens 8192
"""

from __future__ import annotations

import argparse
import json

import torch

from tpa_compress.data import calib_domains, read_texts
from tpa_compress.evaluate.perplexity import interleaved_windows
from tpa_compress.load import load_model
from tpa_compress.models import build_model


def calib_windows(tok, tokens: int) -> torch.Tensor:
    """512-token windows of the bundled calibration mix, alternating domains (as convert cuts them)."""
    bos = tok.bos_id if tok.add_bos else None
    streams = [tok.encode(read_texts(f), add_bos=False) for f in calib_domains().values()]
    return interleaved_windows(streams, 512, bos, tokens // 512)


def moments(model, windows, layers):
    """Per layer: E[x] and the centered E[(x - mu)(x - mu)^T] of the attention input, float64."""
    s1, s2, n = {}, {}, 0
    hooks = []
    for i in layers:

        def f(mod, args, i=i):
            x = args[0].flatten(0, -2).double()
            s1[i] = s1.get(i, 0) + x.sum(0)
            s2[i] = s2.get(i, 0) + x.T @ x

        hooks.append(model.layers[i].self_attn.k_proj.register_forward_pre_hook(f))
    with torch.no_grad():
        for w in windows:
            model(w[None])
            n += w.numel()
    for h in hooks:
        h.remove()
    return {i: (s1[i] / n, s2[i] / n - torch.outer(s1[i] / n, s1[i] / n)) for i in layers}


def psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix."""
    e, u = torch.linalg.eigh(m)
    return (u * e.clamp_min(0).sqrt()) @ u.T


def v_metric(att) -> torch.Tensor:
    """V's error as o_proj sees it: V of KV head j feeds query heads j*g..(j+1)*g-1, so its rows
    are weighted by the square root of the Gram of those o_proj columns (block diagonal)."""
    d, g = att.head_dim, att.n_heads // att.n_kv
    wo = att.o_proj.weight.double()  # (hidden, heads * d)
    blocks = []
    for j in range(att.n_kv):
        cols = torch.cat([wo[:, (j * g + h) * d : (j * g + h + 1) * d] for h in range(g)], 0)  # (g*hidden, d)
        blocks.append(psd_sqrt(cols.T @ cols))
    return torch.block_diag(*blocks)


def kv_operators(att, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A_k = W_k C^(1/2) and A_v = L_v W_v C^(1/2), each divided by its Frobenius norm."""
    wk, wv = att.k_proj.weight.double(), att.v_proj.weight.double()
    ak, av = wk @ half, v_metric(att) @ wv @ half
    return ak / ak.norm(), av / av.norm()


def tails(a: torch.Tensor) -> torch.Tensor:
    """Residual energy after the best rank-r approximation, r = 0..min(shape)."""
    s2 = torch.linalg.svdvals(a).square()
    return torch.cat([s2.flip(0).cumsum(0).flip(0), s2.new_zeros(1)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--ranks", default="64,128,192,256")
    ap.add_argument("--json")
    a = ap.parse_args()
    ck = load_model(a.model)
    model = build_model(ck, torch.float32)
    win = calib_windows(ck.tokenizer, a.tokens)
    mom = moments(model, win, range(len(model.layers)))
    ranks = [int(r) for r in a.ranks.split(",")]
    rows = []
    for i, blk in enumerate(model.layers):
        mu, cov = mom[i]
        ak, av = kv_operators(blk.self_attn, psd_sqrt(cov + torch.outer(mu, mu)))  # C = E[x x^T]
        tk, tv, tj = tails(ak), tails(av), tails(torch.cat([ak, av], 0))
        row = {"layer": i, "type": ck.config.layer_types[i]}
        for r in ranks:
            sep = min(float(tk[min(rk, len(tk) - 1)] + tv[min(r - rk, len(tv) - 1)]) for rk in range(0, r + 1))
            row[f"sep@{r}"], row[f"joint@{r}"] = sep / 2, float(tj[min(r, len(tj) - 1)]) / 2
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "tokens": a.tokens, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
