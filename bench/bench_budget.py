"""What a smaller cache buys on the GPU: at a fixed KV memory budget and context, the
largest batch that fits, and its decode throughput. A benchmark, not a test.

    python bench/bench_budget.py --out budget.json [--model 270m] [--context 32768]
        [--budget-gib 16] [--rows "original:bf16;original:int8;converted:bf16@80,96,112/112,160,128"]
        [--new-tokens 32]

Each row is LAYOUT:CACHE_DTYPE[@K ranks/V ranks]: `original`, or `converted` with latent
K/V ranks on the global layers (one per global layer, as a real conversion chose them;
random weights otherwise, bench_generate.random_model: speed does not depend on them).
The batch is floor(budget / layout.cache_bytes(layouts, context, 1)): the one pricing
function, every byte counted. The cache is allocated at that batch and context, a short
prompt is prefilled, then every column up to `context - new` is marked written (the slot
position tables say so), so each decode step attends over a full `context`-token cache
without spending minutes prefilling batch x context tokens: the kernels' work does not
depend on the cached values. Decode tok/s = batch * steps / time, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import memory_before, random_model  # noqa: E402

from tpa_compress.layout import cache_bytes, original_layouts  # noqa: E402
from tpa_compress.load.ckpt import variant_config  # noqa: E402
from tpa_compress.runtime import Runner, SamplingParams  # noqa: E402

GIB = 2**30


def parse_row(text: str) -> tuple[str, str, str]:
    layout, rest = text.split(":", 1)
    dtype, _, ranks = rest.partition("@")
    return layout, dtype, ranks or "128/128"


def decode_at_full_context(model, batch: int, context: int, new: int, cache_dtype: str) -> dict:
    r = Runner(model, batch, context, cache_dtype=cache_dtype)
    p = SamplingParams()
    r.prepare(p)
    prompts = torch.randint(3, model.cfg.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(1)).tolist()
    r.prefill(prompts, p)
    first = context - new - 1
    cols = torch.arange(first, device=r.device)
    r.cache.write_positions(cols, cols[None].expand(batch, -1))
    r.col.fill_(first)
    r.shortest = first  # every sink row was written by the prefill
    for _ in range(3):  # warm-up at the measured length
        r.step(p)
    r.col.fill_(first)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(new):
        r.step(p)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    out = dict(
        kv_bytes=r.cache.kv_bytes,
        predicted_kv_bytes=r.predicted_kv_bytes(),
        ms_per_step=1e3 * dt / new,
        tok_s=batch * new / dt,
        peak_memory=torch.cuda.max_memory_allocated(),
    )
    del r
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="270m")
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--budget-gib", type=float, default=16.0)
    ap.add_argument("--rows", default="original:bf16;original:int8", help="rows separated by ;")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--out", default="budget.json")
    a = ap.parse_args()
    cfg = variant_config(a.model)
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "argv": sys.argv, "rows": []}
    base = cache_bytes(original_layouts(cfg), a.context)
    for spec in a.rows.split(";"):
        layout, dtype, ranks = parse_row(spec)
        row = dict(row=spec, model=a.model, context=a.context, budget_gib=a.budget_gib)
        t = time.time()
        try:
            before = memory_before()
            torch.cuda.reset_peak_memory_stats()
            model = random_model(cfg, layout, ranks)
            # price with the layouts the runner will allocate (converted modules carry theirs)
            r1 = Runner(model, 1, a.context, cache_dtype=dtype)
            per_seq = cache_bytes(r1.layouts, a.context)
            del r1
            batch = int(a.budget_gib * GIB // per_seq)
            row.update(kv_fraction=per_seq / base, bytes_per_seq=per_seq, batch=batch)
            row.update(decode_at_full_context(model, batch, a.context, a.new_tokens, dtype))
            row["peak_memory"] -= before
            del model
        except torch.cuda.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:  # one failed row must not end the run
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            traceback.print_exc()
        torch.cuda.empty_cache()
        row["wall_s"] = time.time() - t
        doc["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(a.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
