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
import sys
from pathlib import Path

import torch

from tpa_compress.convert import convert
from tpa_compress.evaluate.perplexity import perplexity
from tpa_compress.layout import Component
from tpa_compress.load import load_model
from tpa_compress.methods.layers import LatentProj
from tpa_compress.models import build_model
from tpa_compress.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: frontier's windows

from frontier import eval_windows  # noqa: E402
from joint_kv import calib_windows, kv_operators, moments, psd_sqrt  # noqa: E402


def joint_fit(att, mu, cov, r):
    """D (r, hidden), U_k, U_v, biases of the joint latent (float64)."""
    ev, evec = torch.linalg.eigh(cov)
    a = torch.cat(kv_operators(att, psd_sqrt(cov)), 0)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    q = vh[:r]  # (r, hidden) in the whitened space
    inv_half = (evec * ev.clamp_min(1e-12 * ev.max()).rsqrt()) @ evec.T
    down = q @ inv_half  # z = down (x - mu) reproduces q's coordinates
    gram = down @ cov @ down.T
    solve = torch.linalg.solve(gram, down @ cov)  # (r, hidden)
    wk, wv = att.k_proj.weight.double(), att.v_proj.weight.double()
    uk, uv = wk @ solve.T, wv @ solve.T  # least squares in the metric of cov
    return down, uk, uv, wk @ mu - uk @ (down @ mu), wv @ mu - uv @ (down @ mu)


def ppl(model, windows, tok, device) -> float:
    """Perplexity over `windows` (the reference forward, one window at a time)."""
    return perplexity(model, windows, tok.add_bos, device=device).perplexity


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
    evals = eval_windows(tok, a.windows)
    rows = {}
    orig = build_model(ck, torch.float32, a.device)
    rows["original"] = {d: ppl(orig, w, tok, a.device) for d, w in evals.items()}
    print("original", rows["original"], flush=True)
    model = build_model(ck, torch.float32, a.device)
    res, _ = convert(ck, model, load_recipe(a.recipe), eval_model=False, log=lambda m: None)
    rows["separate"] = {d: ppl(model, w, tok, a.device) for d, w in evals.items()}
    print("separate latents", rows["separate"], flush=True)
    conv = [i for i, lay in enumerate(res.layouts) if lay.k.kind == "latent" and lay.v.kind == "latent"]
    cal = calib_windows(tok, a.calib_tokens)
    cal = cal[:, 1:] if tok.add_bos else cal  # the BOS sink is kept exact: fit ordinary tokens
    mom = moments(orig, cal.to(a.device), conv)
    ranks = {}
    for i in conv:
        lay, att, oatt = res.layouts[i], model.layers[i].self_attn, orig.layers[i].self_attn
        r = lay.k.rank + lay.v.rank
        ranks[i] = (lay.k.rank, lay.v.rank, r)
        wk, wv = oatt.k_proj.weight.double(), oatt.v_proj.weight.double()
        down, uk, uv, bk, bv = joint_fit(oatt, *mom[i], r)
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
    rows["joint"] = {d: ppl(model, w, tok, a.device) for d, w in evals.items()}
    print("joint latent", rows["joint"], "ranks (k, v, joint)", ranks, flush=True)
    for k in ("separate", "joint"):
        print(k, {d: f"{100 * (rows[k][d] / rows['original'][d] - 1):+.2f}%" for d in evals})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "ranks": ranks, "windows": a.windows, "recipe": a.recipe}, f, indent=1)


if __name__ == "__main__":
    main()
