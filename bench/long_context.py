"""Long context, where the cache matters: perplexity on long windows and a passkey test.
A benchmark (GPU), not a test.

    python bench/long_context.py --out long.json --model gemma3-270m [--model out/balanced ...]
        [--cache bf16,int4] [--seq-lens 4096,8192] [--windows 8]
        [--contexts 4096,16384,32768] [--depths 0.1,0.3,0.5,0.7,0.9] [--keys 4]

Perplexity: non-overlapping windows of each length, each BOS-led where the tokenizer adds
BOS, cut from single documents of the evaluation texts (documents are separated by two
blank lines in the bundled files) that hold at least one window; scored by the reference
forward (tpa_compress.evaluate.perplexity), with the cache format simulated where one is
given (evaluate.simulate: each query reads what the cache would hold).

Passkey (Mohtashami & Jaggi 2023): a five-digit key sentence placed at a fraction `depth`
of a haystack of the classic filler sentences, then "What is the pass key? The pass key
is"; the answer scores 1 when the model's greedy next tokens spell the key exactly
(teacher-forced argmax over the answer tokens equals greedy decoding while every token
matches). Keys come from a seeded generator: the same set for every model. Contexts past
the model's positions are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.cache_formats import split_specs  # noqa: E402
from tpa_compress.data import read_texts  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.load.default import resolve_model_path  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n"
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"


def eval_documents() -> dict[str, list[str]]:
    """Evaluation documents per domain (the bundled slices; two blank lines separate documents)."""
    try:
        from tpa_compress.data import eval_domains

        domains = eval_domains()
    except ImportError:
        from tpa_compress.data import default_eval_files

        domains = {"python-docs": default_eval_files()}
    return {name: [d for d in read_texts(files).split("\n\n\n") if d.strip()] for name, files in domains.items()}


def long_windows(tok, docs: list[str], seq_len: int, limit: int) -> torch.Tensor | None:
    """Up to `limit` non-overlapping windows, each inside one document, longest documents first."""
    bos = tok.bos_id if tok.add_bos else None
    body = seq_len - (bos is not None)
    ids = sorted((tok.encode(d, add_bos=False) for d in docs), key=len, reverse=True)
    out = []
    for doc in ids:
        for s in range(0, len(doc) - body + 1, body):
            out.append(([bos] if bos is not None else []) + doc[s : s + body])
            if len(out) == limit:
                return torch.tensor(out)
    return torch.tensor(out) if out else None


@torch.no_grad()
def window_nll_sum(model, w: torch.Tensor) -> tuple[float, int]:
    hidden = model(w[None])[0, :-1]
    total = 0.0
    for s in range(0, hidden.shape[0], 256):
        logits = model.logits(hidden[s : s + 256]).float()
        total += float(torch.nn.functional.cross_entropy(logits, w[1 + s : 1 + s + 256], reduction="sum"))
    return total, hidden.shape[0]


def passkey_prompt(tok, context: int, depth: float, key: str) -> tuple[list[int], list[int]]:
    bos = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
    intro, filler = tok.encode(INTRO, add_bos=False), tok.encode(FILLER, add_bos=False)
    needle, question = tok.encode(NEEDLE.format(key=key), add_bos=False), tok.encode(QUESTION, add_bos=False)
    answer = tok.encode(" " + key, add_bos=False)
    room = context - len(bos) - len(intro) - len(needle) - len(question) - len(answer)
    hay = (filler * (room // len(filler) + 1))[:room]
    at = int(depth * room)
    return bos + intro + hay[:at] + needle + hay[at:] + question, answer


@torch.no_grad()
def passkey_hit(model, prompt: list[int], answer: list[int], device) -> bool:
    ids = torch.tensor(prompt + answer, device=device)
    hidden = model(ids[None])[0, len(prompt) - 1 : -1]
    pred = model.logits(hidden).argmax(-1)
    return bool((pred == ids[len(prompt) :]).all())


def simulated(model, cache: str):
    """The cache format's decode-time reads installed in the reference forward."""
    from tpa_compress.evaluate.simulate import simulated_cache

    return simulated_cache(model, cache)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="embedded name, file or converted folder")
    ap.add_argument("--cache", default="bf16", help="cache formats to simulate, comma-separated")
    ap.add_argument("--seq-lens", default="4096,8192")
    ap.add_argument("--windows", type=int, default=8, help="windows per length and domain")
    ap.add_argument("--contexts", default="4096,16384,32768")
    ap.add_argument("--depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--keys", type=int, default=4, help="passkeys per (context, depth)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="long_context.json")
    a = ap.parse_args()
    rng = random.Random(0)
    contexts = [int(c) for c in a.contexts.split(",") if c]
    depths = [float(d) for d in a.depths.split(",") if d]
    keys = {(c, d): [str(rng.randrange(10000, 100000)) for _ in range(a.keys)] for c in contexts for d in depths}
    docs = eval_documents()
    doc = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "argv": sys.argv, "rows": []}
    for name in a.model:
        ckpt = load_model(resolve_model_path(name))
        model = build_model(ckpt, getattr(torch, a.dtype), a.device)
        tok = ckpt.tokenizer
        max_pos = ckpt.config.max_position_embeddings
        for cache in split_specs(a.cache):
            row = dict(model=name, cache=cache, ppl={}, passkey={}, skipped=[])
            t = time.time()
            with simulated(model, cache):
                for seq_len in (int(s) for s in a.seq_lens.split(",") if s):
                    if seq_len > max_pos:
                        row["skipped"].append(f"ppl {seq_len}: beyond {max_pos} positions")
                        continue
                    for dom, texts in docs.items():
                        w = long_windows(tok, texts, seq_len, a.windows)
                        if w is None:
                            row["skipped"].append(f"ppl {seq_len} {dom}: no document that long")
                            continue
                        tot = n = 0
                        for x in w:
                            s, c = window_nll_sum(model, x.to(a.device))
                            tot, n = tot + s, n + c
                        row["ppl"][f"{dom}@{seq_len}"] = dict(perplexity=math.exp(tot / n), tokens=n, windows=len(w))
                for c in contexts:
                    if c > max_pos:
                        row["skipped"].append(f"passkey {c}: beyond {max_pos} positions")
                        continue
                    for d in depths:
                        hits = [passkey_hit(model, *passkey_prompt(tok, c, d, k), a.device) for k in keys[(c, d)]]
                        row["passkey"][f"{c}@{d}"] = sum(hits) / len(hits)
                    row["passkey"][f"{c}@all"] = sum(row["passkey"][f"{c}@{d}"] for d in depths) / len(depths)
            row["wall_s"] = time.time() - t
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(a.out).write_text(json.dumps(doc, indent=1))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
