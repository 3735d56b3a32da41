"""What the KV cache dtype costs in quality: teacher-forced perplexity *through the cache*.

    python bench/bench_cache_quality.py [MODEL ...] [--cache-dtypes fp32,bf16,fp8,int8]
        [--windows 4] [--seq-len 256] [--prefix 64] [--device cpu] [--out FILE.json]

`eval` runs the no-cache forward, so it cannot see the cache dtype. Here each window of
the evaluation split (the text `eval` uses) is prefilled with its first `--prefix` tokens,
then decoded one true token at a time by the cached runner; every prediction after the
prefix reads K/V back from a cache stored in the given dtype. Reported: perplexity over
those positions (and the no-cache forward's over the same positions: an fp32 cache must
match it), the mean KL from the first listed dtype's distributions and top-1 agreement.
Real weights; a model is a path or an embedded name (default: gemma3-270m).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.data import default_eval_files, read_texts  # noqa: E402
from tpa_compress.evaluate.cached import forced_steps  # noqa: E402
from tpa_compress.evaluate.perplexity import make_windows, window_nll  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402


def forced_logprobs(model, windows: torch.Tensor, prefix: int, cache_dtype: str) -> torch.Tensor:
    """(B, L - prefix, vocab) log-probs of positions prefix..L-1 given the true tokens."""
    return torch.stack([lp for _, lp in forced_steps(model, windows, cache_dtype, prefix)], 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=["gemma3-270m"])
    ap.add_argument("--cache-dtypes", default="fp32,bf16,fp8,int8")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--prefix", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for name in a.models:
        ck = load_model(name)
        dtype = torch.float32 if a.device == "cpu" else torch.bfloat16
        model = build_model(ck).to(a.device, dtype).eval()
        tok = ck.tokenizer
        ids = tok.encode(read_texts(default_eval_files()), add_bos=False)
        win = make_windows(ids, a.seq_len, tok.bos_id if tok.add_bos else None, a.windows).to(a.device)
        targets = win[:, a.prefix :]
        with torch.no_grad():  # the no-cache forward over the same positions: what an exact cache gives
            exact = torch.stack([window_nll(model, w)[a.prefix - 1 :] for w in win]).float()
        rows.append(
            dict(
                model=name,
                cache_dtype="none (no-cache forward)",
                tokens=exact.numel(),
                ppl=math.exp(exact.mean().item()),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
        ref = None
        for cd in a.cache_dtypes.split(","):
            t = time.time()
            with torch.no_grad():
                lp = forced_logprobs(model, win, a.prefix, cd)
            nll = -lp.gather(-1, targets[..., None]).squeeze(-1)
            row = dict(
                model=name,
                cache_dtype=cd,
                windows=a.windows,
                seq_len=a.seq_len,
                prefix=a.prefix,
                tokens=nll.numel(),
                ppl=math.exp(nll.mean().item()),
                seconds=round(time.time() - t, 1),
                max_abs_nll_vs_no_cache=(nll - exact).abs().max().item(),
            )
            if ref is None:
                ref = lp
                row["kl_vs_first"] = 0.0
            else:
                row["kl_vs_first"] = (ref.exp() * (ref - lp)).sum(-1).mean().item()
            row["top1_vs_first"] = (lp.argmax(-1) == ref.argmax(-1)).float().mean().item()
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv, "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
