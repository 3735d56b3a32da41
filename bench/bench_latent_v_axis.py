"""How to group a latent V for int4/int3/int2: per channel (as keys) or per token.

    python bench/bench_latent_v_axis.py [MODEL] [--rank 128] [--windows 2] [--seq-len 512]

A proxy, cheap on CPU: for each global layer, the V activations of `--windows` calibration
windows (the bundled calibration split) give a rank-r PCA latent z = V P (the form
activation_svd fits: channel variances = the spectrum, so channels differ in scale by
orders of magnitude); on held-out windows of the evaluation split, z is fake-quantized
(cache_formats.grouped.fake_quantize_tokens, group 32) per channel over 32-token groups
and per token over 32-channel groups, and the relative error of the rebuilt V,
||(z_q - z) P^T|| / ||z P^T|| (= of z: P is orthonormal), is printed per layer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.cache_formats import parse_spec  # noqa: E402
from tpa_compress.cache_formats.grouped import fake_quantize_tokens  # noqa: E402
from tpa_compress.data import default_eval_files, read_texts  # noqa: E402
from tpa_compress.evaluate.perplexity import make_windows  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402


def v_acts(model, win, layers):
    got = {i: [] for i in layers}

    def hook(i, block, h):
        if i in got:
            got[i].append(block.self_attn.v_proj(block.input_layernorm(h))[0])
    with torch.no_grad():
        for w in win:
            model(w[None], hooks=hook)
    return {i: torch.cat(v) for i, v in got.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(2)
    ck = load_model(a.model)
    model = build_model(ck)
    tok = ck.tokenizer
    cal = Path(__file__).resolve().parents[1] / "tpa_compress/data/calib_small.txt"
    bos = tok.bos_id if tok.add_bos else None
    fit = make_windows(tok.encode(cal.read_text()[:200_000], add_bos=False), a.seq_len, bos, a.windows)
    held = make_windows(tok.encode(read_texts(default_eval_files())[:200_000], add_bos=False), a.seq_len, bos,
                        a.windows)
    layers = [i for i in range(model.cfg.num_layers) if model.cfg.window(i) is None]
    vf, vh = v_acts(model, fit, layers), v_acts(model, held, layers)
    print(f"| layer | bits | per channel (as keys) | per token | channel scale spread |\n|---|---|---|---|---|")
    for i in layers:
        ev, vec = torch.linalg.eigh(vf[i].double().T @ vf[i].double())
        p = vec[:, -a.rank:].flip(-1).float()  # top-r directions
        z = (vh[i] @ p)[None]
        spread = z.std(1).amax() / z.std(1).amin()
        for bits in (4, 3, 2):
            spec = parse_spec(f"int{bits}")
            err = {ax: float((fake_quantize_tokens(z, spec, ax, 1) - z)[:, :z.shape[1] // 32 * 32].norm()
                             / z[:, :z.shape[1] // 32 * 32].norm()) for ax in ("channel", "token")}
            print(f"| {i} | {bits} | {err['channel']:.4f} | {err['token']:.4f} | {spread:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
