"""Head mode on Qwen2.5-Coder-0.5B (2 KV heads): per-head latents vs shared-factor Tucker
vs TPA head factors at equal KV bytes, CPU or GPU.

Calibration on the bundled calibration mix (`--calib-tokens`, 512-token windows, plus
1024 held-out tokens for the per-layer errors), perplexity on the first `--windows`
512-token windows of each bundled evaluation domain (disjoint text; Qwen2 adds no BOS).

    PYTHONPATH=. python bench/qwen2/head_mode.py --device cuda --windows 130 --json head_mode.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tpa_compress.convert import convert
from tpa_compress.data import eval_domains, read_texts
from tpa_compress.evaluate.perplexity import make_windows, perplexity
from tpa_compress.layout import cache_bytes, original_layouts
from tpa_compress.load import load_model
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe

# name -> (K rule, V rule); values cached per token per layer in the comment (original: 256)
CONFIGS = {
    # 50% of the cache: 128 values per token per layer
    "activation_svd r64 (joint latent, per-head mixing free)": ("activation_svd", 64, {}),
    "tucker_shared r64 (r_d 32 per head, shared U_D)": ("tucker_shared", 64, {}),
    "tucker_shared head_rank 1 r64 (= TPA fixed head factor, R=1)": ("tucker_shared", 64, {"head_rank": 1}),
    "contextual_t6 R1 (TPA contextual, 66 values)": ("contextual_t6", 1, {}),
    # 25%: 64 values per token per layer
    "activation_svd r32": ("activation_svd", 32, {}),
    "tucker_shared r32 (r_d 16)": ("tucker_shared", 32, {}),
    "tucker_shared head_rank 1 r32 (U_H x U_D latent)": ("tucker_shared", 32, {"head_rank": 1}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--windows", type=int, default=8, help="512-token windows per evaluation domain")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", help="config names (prefixes) to run")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    ck = load_model(a.model)
    tok = ck.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    wins = {
        d: make_windows(tok.encode(read_texts(f), add_bos=False), 512, bos, a.windows).to(a.device)
        for d, f in eval_domains().items()
    }

    def ppl(model):
        return {d: perplexity(model, w, tok.add_bos, device=a.device).to_dict()["perplexity"] for d, w in wins.items()}

    base = ppl(build_model(ck, torch.float32, a.device))
    print(f"original: ppl {base}", flush=True)
    rows = [{"config": "original", "perplexity": base, "kv_ratio": 1.0}]
    for name, (method, rank, params) in CONFIGS.items():
        if a.only and not any(name.startswith(p) for p in a.only):
            continue
        rule = {"method": method, "rank": rank, **({"params": params} if params else {})}
        rec = parse_recipe(
            {
                "seed": 0,
                "cache_dtype": "bf16",
                "sink_tokens": 1,
                "calibration": {"files": ["default"], "tokens": a.calib_tokens, "seq_len": 512, "heldout_tokens": 1024},
                "layers": [{"select": "all", "k": rule, "v": rule}],
            },
            f"<{name}>",
        )
        t = time.time()
        model = build_model(ck, torch.float32, a.device)
        res, _ = convert(ck, model, rec, eval_model=False, log=lambda m: None)
        p = ppl(model)
        ratio = cache_bytes(res.layouts, 32768) / cache_bytes(original_layouts(ck.config, "bf16"), 32768)
        kerr = sum(L.k["heldout_rel_error"] for L in res.layers) / len(res.layers)
        verr = sum(L.v["heldout_rel_error"] for L in res.layers) / len(res.layers)
        row = {
            "config": name,
            "perplexity": p,
            "delta_pct": {d: 100 * (p[d] / base[d] - 1) for d in p},
            "kv_ratio": ratio,
            "k_kind": res.layouts[0].k.kind,
            "k_values": res.layouts[0].k.values_per_token,
            "mean_k_heldout_rel_error": kerr,
            "mean_v_heldout_rel_error": verr,
            "seconds": time.time() - t,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "model": a.model,
                    "calib_tokens": a.calib_tokens,
                    "eval_windows_per_domain": a.windows,
                    "seq_len": 512,
                    "device": a.device,
                    "rows": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
