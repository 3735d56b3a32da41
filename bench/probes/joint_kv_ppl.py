"""Probe: does a joint K/V latent's smaller fit error (bench/probes/joint_kv.py) carry to
perplexity? `recipes/balanced.yaml` is converted as shipped; then every layer it converted
gets one latent z = D x of rank r_k + r_v (the same cached values) in place of its two, fitted
jointly: D from the SVD of [A_k; A_v] (K as projected, V weighted by the o_proj columns that
read it, each normalized, in the metric of x's centered second moment), U_k and U_v by least
squares in that metric, the mean as bias, the exact sink kept. Perplexity of both on the same
BOS-led 512-token windows of each evaluation domain. A measurement, not a conversion method:
the shared latent is two LatentProj modules with the same `down` (the cache would hold z once).

    PYTHONPATH=. python bench/probes/joint_kv_ppl.py --windows 16 --device cpu
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from tpa_compress.convert import convert
from tpa_compress.data import calib_domains, eval_domains, read_texts
from tpa_compress.evaluate.perplexity import interleaved_windows, make_windows, window_nll
from tpa_compress.layout import Component
from tpa_compress.load import load_model
from tpa_compress.methods.layers import LatentProj
from tpa_compress.models import build_model
from tpa_compress.recipe import load_recipe


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


def joint_fit(att, wk, wv, mu, cov, r):
    """D (r, hidden), U_k, U_v, biases of the joint latent (float64)."""
    ev, evec = torch.linalg.eigh(cov)
    half = (evec * ev.clamp_min(0).sqrt()) @ evec.T
    d, g, kv = att.head_dim, att.n_heads // att.n_kv, att.n_kv
    wo = att.o_proj.weight.double()
    blocks = []
    for j in range(kv):
        cols = torch.cat([wo[:, (j * g + h) * d : (j * g + h + 1) * d] for h in range(g)], 0)
        e, u = torch.linalg.eigh(cols.T @ cols)
        blocks.append((u * e.clamp_min(0).sqrt()) @ u.T)
    lv = torch.block_diag(*blocks)
    ak, av = wk @ half, lv @ wv @ half
    a = torch.cat([ak / ak.norm(), av / av.norm()], 0)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    q = vh[:r]  # (r, hidden) in the whitened space
    inv_half = (evec * ev.clamp_min(1e-12 * ev.max()).rsqrt()) @ evec.T
    down = q @ inv_half  # z = down (x - mu) reproduces q's coordinates
    gram = down @ cov @ down.T
    solve = torch.linalg.solve(gram, down @ cov)  # (r, hidden)
    uk, uv = wk @ solve.T, wv @ solve.T  # least squares in the metric of cov
    return down, uk, uv, wk @ mu - uk @ (down @ mu), wv @ mu - uv @ (down @ mu)


def perplexity(model, windows, device):
    total, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            nll = window_nll(model, w.to(device))
            total, n = total + float(nll.double().sum()), n + nll.numel()
    return math.exp(total / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--recipe", default="recipes/balanced.yaml")
    ap.add_argument("--windows", type=int, default=16, help="512-token windows per domain")
    ap.add_argument("--calib-tokens", type=int, default=32768)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    ck = load_model(a.model)
    tok = ck.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    evals = {
        d: make_windows(tok.encode(read_texts(f), add_bos=False), 512, bos, a.windows)
        for d, f in eval_domains().items()
    }
    rows = {}
    orig = build_model(ck, torch.float32, a.device)
    rows["original"] = {d: perplexity(orig, w, a.device) for d, w in evals.items()}
    print("original", rows["original"], flush=True)
    model = build_model(ck, torch.float32, a.device)
    res, _ = convert(ck, model, load_recipe(a.recipe), eval_model=False, log=lambda m: None)
    rows["separate"] = {d: perplexity(model, w, a.device) for d, w in evals.items()}
    print("separate latents", rows["separate"], flush=True)
    conv = [i for i, lay in enumerate(res.layouts) if lay.k.kind == "latent" and lay.v.kind == "latent"]
    streams = [tok.encode(read_texts(f), add_bos=False) for f in calib_domains().values()]
    cal = interleaved_windows(streams, 512, bos, a.calib_tokens // 512)
    cal = cal[:, 1:] if bos is not None else cal  # the BOS sink is kept exact: fit ordinary tokens
    mom = moments(orig, cal.to(a.device), conv)
    ranks = {}
    for i in conv:
        lay, att, oatt = res.layouts[i], model.layers[i].self_attn, orig.layers[i].self_attn
        r = lay.k.rank + lay.v.rank
        ranks[i] = (lay.k.rank, lay.v.rank, r)
        wk, wv = oatt.k_proj.weight.double(), oatt.v_proj.weight.double()
        down, uk, uv, bk, bv = joint_fit(oatt, wk, wv, *mom[i], r)
        shared = torch.nn.Linear(wk.shape[1], r, bias=False).to(a.device)
        shared.weight.data.copy_(down.float())
        for name, w, u, b in (("k", wk, uk, bk), ("v", wv, uv, bv)):
            old = getattr(att, f"{name}_proj")
            c = Component("latent", att.n_kv, att.head_dim, r)
            p = LatentProj(wk.shape[1], c, sink=old.n_sink).to(a.device)
            p.down = shared
            p.up.weight.data.copy_(u.float())
            p.bias.data.copy_(b.float())
            if old.n_sink:
                p.sink.weight.data.copy_(w.float())
            setattr(att, f"{name}_proj", p)
    rows["joint"] = {d: perplexity(model, w, a.device) for d, w in evals.items()}
    print("joint latent", rows["joint"], "ranks (k, v, joint)", ranks, flush=True)
    for k in ("separate", "joint"):
        print(k, {d: f"{100 * (rows[k][d] / rows['original'][d] - 1):+.2f}%" for d in evals})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "ranks": ranks, "windows": a.windows, "recipe": a.recipe}, f, indent=1)


if __name__ == "__main__":
    main()
