"""Which split of long space runs Gemma 3 270M expects: SentencePiece's or the GGUF tokenizer's.

On the bundled python-docs evaluation text the SentencePiece library (running a
tokenizer.model rebuilt from the GGUF's SentencePiece data, tests/spm_fixture.py) and
our GGUF tokenizer (which reproduces transformers') split some runs of more than 31
spaces differently (SentencePiece: longest whitespace piece first, 31 + rest; GGUF: BPE
merges, 16 + rest). For each such run: the model's log-probability of the run's tokens
under each split, after BOS and the 200 preceding tokens as that same tokenizer splits
them. The split with the higher log-probability is the one the model was trained on.

    PYTHONPATH=. python bench/bench_space_runs.py [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spm_fixture import sentencepiece_model_from_gguf  # noqa: E402
from test_formats_real import _segments  # noqa: E402
from tpa_compress.data import eval_sets, read_texts  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.load.model_tokenizer import read_tokenizer  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402


def differing_runs(spm, gguf_tok, text):
    """((start in spm ids, start in gguf ids), spm run ids, gguf run ids) per differing run."""
    a, b = spm.encode(text, add_bos=False), gguf_tok.encode(text, add_bos=False)
    pa = pb = 0
    out = []
    for x, y in zip(_segments(gguf_tok, a), _segments(gguf_tok, b)):
        if x != y:
            out.append(((pa, pb), list(x), list(y)))
        pa += len(x) if isinstance(x, tuple) else 1
        pb += len(y) if isinstance(y, tuple) else 1
    return a, b, out


@torch.no_grad()
def run_logprob(net, bos, context, run):
    ids = torch.tensor([[bos, *context, *run]])
    logp = torch.log_softmax(net.logits(net(ids)).float(), -1)[0]
    start = len(context)  # logits at position i predict token i + 1
    return sum(logp[start + i, t].item() for i, t in enumerate(run))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="Score the first N differing runs.")
    ap.add_argument("--context", type=int, default=200)
    args = ap.parse_args()
    g = load_model("gemma3-270m")
    net = build_model(g)
    with tempfile.TemporaryDirectory() as d:
        spm = read_tokenizer(sentencepiece_model_from_gguf(Path(g.path), Path(d) / "tokenizer.model"))
    text = read_texts(eval_sets(None)["python-docs"])
    a, b, runs = differing_runs(spm, g.tokenizer, text)
    print(f"python-docs: {len(a)} SentencePiece tokens, {len(b)} GGUF tokens, {len(runs)} runs split differently")
    size = lambda ids: [len(g.tokenizer.decode([t])) for t in ids]  # noqa: E731
    better = []
    for (pa, pb), x, y in runs[: args.runs]:
        lx = run_logprob(net, 2, a[max(0, pa - args.context) : pa], x)
        ly = run_logprob(net, 2, b[max(0, pb - args.context) : pb], y)
        better.append(lx - ly)
        print(f"{len(g.tokenizer.decode(x)):3d} chars | SentencePiece {size(x)} {lx:7.2f} | GGUF {size(y)} {ly:7.2f}")
    n = len(better)
    print(
        f"SentencePiece's split more likely in {sum(d > 0 for d in better)}/{n} runs; "
        f"mean log-prob difference {sum(better) / n:+.2f} nats per run"
    )


if __name__ == "__main__":
    main()
