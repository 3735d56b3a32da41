"""KV-cache formats on the frontier: KV fraction at a context vs simulated-decode perplexity.

    python bench/bench_cache_formats.py [MODEL] [--specs bf16 int8 int4:recent=0,sink=1 ...]
        [--windows 16] [--seq-len 512] [--context 32768] [--data FILE ...] [--out FILE.json]

Each spec (a cache format, with a grouped one's parameters: int4:recent=32,rotate=hadamard)
is scored by `perplexity(..., cache=spec)`: the no-cache forward with every read a decode
step would make through that cache simulated exactly (tpa_compress/evaluate/simulate.py;
the first position is the prefill, exact). The KV fraction is `cache_bytes` of the model's
layout in that format at `--context` over the bf16 original's (every byte: scales, zeros,
recent window, sink). Windows start with BOS when the tokenizer adds it. Default model:
gemma3-270m; default text: the bundled evaluation split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.data import default_eval_files, read_texts  # noqa: E402
from tpa_compress.evaluate.perplexity import make_windows, perplexity  # noqa: E402
from tpa_compress.layout import cache_bytes, original_layouts  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.methods.layers import layout_of_model  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402

SPECS = [
    "bf16",
    "int8",
    "fp8",
    "int4",
    "int4:rotate=hadamard",
    "int3",
    "int2",
    "int4:recent=0",
    "int4:recent=32",
    "int4:recent=0,sink=1",
    "int3:recent=0,sink=1",
    "int2:recent=0,sink=1",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--specs", nargs="+", default=SPECS, help="cache specs, space-separated")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--data", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--reference",
        type=float,
        default=None,
        help="the no-cache forward's perplexity on these same windows, from an earlier run (skips computing it again)",
    )
    a = ap.parse_args()
    torch.set_num_threads(2)
    ck = load_model(a.model)
    model = build_model(ck)
    tok = ck.tokenizer
    files = a.data or default_eval_files()
    win = make_windows(
        tok.encode(read_texts(files), add_bos=False), a.seq_len, tok.bos_id if tok.add_bos else None, a.windows
    )
    base = cache_bytes(original_layouts(model.cfg, "bf16"), a.context)
    t = time.time()
    ref = perplexity(model, win, tok.add_bos) if a.reference is None else None
    ref_ppl = ref.perplexity if ref else a.reference
    rows = [
        dict(
            spec="none (no-cache forward, fp32)",
            kv_fraction=None,
            perplexity=ref_ppl,
            delta=0.0,
            seconds=round(time.time() - t, 1) if ref else None,
        )
    ]
    print(f"| cache | KV at {a.context // 1024}K vs bf16 | perplexity | delta | s |\n|---|---|---|---|---|", flush=True)
    print(f"| {rows[0]['spec']} | | {ref_ppl:.4f} | | {rows[0]['seconds']} |", flush=True)
    for spec in a.specs:
        lays = [replace(lay, cache_dtype=spec) for lay in layout_of_model(model)]
        frac = cache_bytes(lays, a.context) / base
        t = time.time()
        res = perplexity(model, win, tok.add_bos, cache=spec)
        d = res.perplexity / ref_ppl - 1
        rows.append(
            dict(spec=spec, kv_fraction=frac, perplexity=res.perplexity, delta=d, seconds=round(time.time() - t, 1))
        )
        print(f"| {spec} | {frac:.3f} | {res.perplexity:.4f} | {d * 100:+.2f}% | {rows[-1]['seconds']} |", flush=True)
    if a.out:
        Path(a.out).write_text(
            json.dumps(
                dict(
                    model=a.model,
                    data=[str(f) for f in files],
                    windows=a.windows,
                    seq_len=a.seq_len,
                    tokens=res.tokens,
                    rows=rows,
                ),
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
