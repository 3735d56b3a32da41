"""Peak memory and time of `tpa-compress convert` on Gemma 3-shaped models (issue 29, section 3).

    python bench/bench_convert_memory.py DIR --shape 1b --shape 12b --device cuda
    python bench/bench_convert_memory.py DIR --shape 12b --layers 8      # 12B's width, 8 layers
    python bench/bench_convert_memory.py DIR --shape tiny --device cpu   # a minute on a laptop
    python bench/bench_convert_memory.py DIR --shape 1b --whole-model    # the whole-model path
    python bench/bench_convert_memory.py DIR --shape 1b --layers 18 --shard-mib 256  # smaller shards

For each shape it (a) writes a random-weight Hugging Face folder of that shape into
DIR/<shape>-<layers>L (bf16 safetensors shards of at most 2 GiB, one tensor at a time, so
writing needs no more memory than the largest tensor; Gemma 3's tokenizer, from the
embedded 270M, so the calibration text tokenizes as for the real model), unless a folder
of that shape is already there, and (b) runs `convert --recipe RECIPE` on it in a
subprocess, output in DIR/<shape>-<layers>L-out. It prints one markdown table row per
shape: wall time of the subprocess, its peak RSS (os.wait4's rusage: that child alone),
the device's peak memory (torch.cuda.max_memory_allocated inside the converter, through
TPA_CONVERT_PROFILE), and seconds per converted layer (the streaming path's profile).

The shapes are the public Gemma 3 text configs (hidden size, layers, heads, KV heads,
head_dim, intermediate size, vocab 262144, sliding window, 5 sliding : 1 global).
Random weights: the numbers measure memory and time, not quality. Disk: input plus
output is about 4 bytes per parameter (bf16 in and out): 1B 4 GB, 12B 47 GB, 27B 108 GB;
a shape whose folders do not fit the free space is refused before anything is written.
`--keep` keeps the folders (default: the output is removed after each run, the input
kept for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tpa_compress.load.ckpt import VARIANTS, variant_config  # noqa: E402

# Gemma 3 text configs: gemma_pytorch's (load/ckpt.VARIANTS), and a CPU smoke-test shape with
# the real vocabulary (Gemma's tokenizer) and everything else small
SHAPES = {name: VARIANTS[name] for name in ("1b", "4b", "12b", "27b")} | {
    "tiny": dict(
        hidden_size=128,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        intermediate_size=256,
        sliding_window=64,
        query_pre_attn_scalar=64.0,
        rope_scaling_factor=1.0,
        max_position_embeddings=4096,
    ),
}
VOCAB = 262144
SHARD_BYTES = 2 * 2**30


def model_config(shape: str, layers: int | None = None):
    """The shape's Gemma 3 config (variant_config's family constants), `layers` of them."""
    n = layers or SHAPES[shape]["num_layers"]
    return replace(
        variant_config("1b", VOCAB),
        **{**SHAPES[shape], "num_layers": n},
        name=f"gemma3-{shape}-random",
        layer_types=["global" if (i + 1) % 6 == 0 else "sliding" for i in range(n)],
    )


def param_count(cfg) -> int:
    from tpa_compress.config import weight_shapes

    total = 0
    for shape in weight_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def write_random_folder(folder: Path, cfg, seed: int = 0) -> None:
    """A bf16 HF folder of `cfg` with random weights, written tensor by tensor into shards
    (save/shards.py), then the config and Gemma 3's tokenizer. Scales as tests/tiny.py:
    norms near zero (Gemma's gain 1 + w), projections 0.5 / sqrt(fan-in)."""
    import torch

    from tpa_compress.config import weight_shapes
    from tpa_compress.load import load_model
    from tpa_compress.save.hf import save_hf_files
    from tpa_compress.save.shards import ShardWriter

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    writer = ShardWriter(tmp, torch.bfloat16, SHARD_BYTES)
    for name, shape in weight_shapes(cfg).items():
        scale = 0.1 if "norm" in name else 0.5 / shape[-1] ** 0.5
        t = torch.empty(shape, dtype=torch.bfloat16)
        for r in range(0, shape[0], 8192):  # rows in chunks: no float32 copy of a whole embedding
            part = t[r : r + 8192]
            part.copy_(torch.randn(part.shape, generator=g) * scale)
        writer.add(name, t)
        del t
    writer.close()
    tok = load_model("gemma3-270m").tokenizer
    save_hf_files(tmp, cfg, tok, None, torch.bfloat16)
    tmp.rename(folder)


def run_convert(folder: Path, out: Path, recipe: Path, device: str, whole: bool, shard_mib: int = 2048) -> dict:
    """`convert` in a subprocess; its wall time, peak RSS and the converter's profile."""
    fd, prof = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable,
        "-m",
        "tpa_compress.cli",
        "convert",
        str(folder),
        "--recipe",
        str(recipe),
        "--out",
        str(out),
        "--force",
        "--device",
        device,
        "--max-shard-mib",
        str(shard_mib),
    ] + (["--whole-model"] if whole else [])
    env = {
        **os.environ,
        "TPA_CONVERT_PROFILE": prof,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    t = time.time()
    p = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(p.pid, 0)  # this child's rusage alone
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t
    if p.returncode != 0:
        raise SystemExit(f"convert failed (exit {p.returncode}): {' '.join(cmd)}")
    profile = json.loads(Path(prof).read_text() or "{}")
    os.unlink(prof)
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, **profile}  # ru_maxrss: KiB on Linux


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def row(shape: str, cfg, res: dict, in_bytes: int) -> str:
    gib = 2**30
    converted = [s for s, t in zip(res.get("layer_seconds") or [], cfg.layer_types) if t == "global"]
    per = f"{sum(converted) / len(converted):.2f}" if converted else "-"
    every = res.get("layer_seconds") or []
    gpu = res.get("peak_device_bytes")
    return (
        f"| {shape} | {cfg.num_layers} | {param_count(cfg) / 1e9:.2f} | {in_bytes / gib:.1f} | "
        f"{res.get('path', '?')} | {res['wall_s']:.0f} | {res['peak_rss_bytes'] / gib:.2f} | "
        f"{'-' if gpu is None else f'{gpu / gib:.2f}'} | {per} | "
        f"{f'{sum(every) / len(every):.2f}' if every else '-'} |"
    )


HEADER = (
    "| shape | layers | params (B) | input (GiB) | path | wall (s) | peak host RSS (GiB) | "
    "peak GPU (GiB) | s per converted layer | s per layer |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="where the random folders and outputs go")
    ap.add_argument("--shape", action="append", choices=list(SHAPES), help="repeatable; default 1b")
    ap.add_argument(
        "--layers", type=int, help="override the shape's layer count (a multiple of 6 keeps the 5:1 pattern)"
    )
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "balanced.yaml")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--whole-model", action="store_true", help="measure the whole-model path instead")
    ap.add_argument("--shard-mib", type=int, default=2048, help="convert's --max-shard-mib")
    ap.add_argument("--keep", action="store_true", help="keep the output folders")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    a = ap.parse_args(argv)
    device = a.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    a.dir.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    for shape in a.shape or ["1b"]:
        cfg = model_config(shape, a.layers)
        folder = a.dir / f"{shape}-{cfg.num_layers}L"
        out = a.dir / f"{shape}-{cfg.num_layers}L-out"
        need = 2 * param_count(cfg) * (1 if folder.exists() else 2)  # bf16 output, and input unless there
        free = shutil.disk_usage(a.dir).free
        if need > free:
            print(
                f"{shape}: needs about {need / 2**30:.0f} GiB of disk in {a.dir}, {free / 2**30:.0f} GiB free; "
                "skipped (--layers N measures fewer layers of the same width)",
                file=sys.stderr,
            )
            continue
        if not folder.exists():
            t = time.time()
            write_random_folder(folder, cfg)
            print(
                f"{shape}: wrote {folder} ({folder_bytes(folder) / 2**30:.1f} GiB) in {time.time() - t:.0f}s",
                file=sys.stderr,
            )
        res = run_convert(folder, out, a.recipe, device, a.whole_model, a.shard_mib)
        results[shape] = {"layers": cfg.num_layers, "device": device, **res}
        rows.append(row(shape, cfg, res, folder_bytes(folder)))
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nconvert --recipe {a.recipe.name} on {device}:\n")
    print(HEADER)
    print("\n".join(rows))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
