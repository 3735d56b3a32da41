"""The quality frontier: KV-cache bytes at 32K context against held-out perplexity on each
evaluation domain, for the original model with every cache format, plain weight SVD, and
every recipe, each with every cache format. Writes JSON rows; `--render` turns one or
more JSON files into the markdown table and the plot docs/quality.md shows.

    python bench/frontier.py --model gemma3-270m --device cuda --out frontier-gemma.json \\
        [--recipes recipes/balanced.yaml,...] [--caches bf16,int8,fp8,int4,...] [--windows 130]
    python bench/frontier.py --render frontier-gemma.json frontier-smollm2.json \\
        --md frontier.md --plot frontier.png

KV fraction: layout.cache_bytes of the converted layouts in the cache format, over the
bf16 original's, at 32768 tokens (window-aware; scales, zeros, the full-precision recent
window, exact sink tokens and K norm factors counted). Perplexity: BOS-led 512-token
windows of each bundled evaluation text (disjoint from calibration), `--windows` per
domain (130 x 511 = 66,430 scored tokens), scored by the reference forward with the cache
format's read semantics simulated (tpa_compress.evaluate.simulate) where it quantizes.
A recipe is converted in-process on the same device (calibration on the bundled
calibration mix); a recipe with a `heal:` stage heals there too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.cache_formats import CacheSpec, parse_spec, split_specs  # noqa: E402
from tpa_compress.evaluate.perplexity import make_windows  # noqa: E402
from tpa_compress.layout import cache_bytes, original_layouts  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402

CONTEXT = 32768
FLOAT_CACHES = ("bf16", "fp16", "fp32")


def domains() -> dict[str, list[Path]]:
    from tpa_compress.data import eval_domains

    return eval_domains()


def eval_windows(tok, windows: int) -> dict[str, torch.Tensor]:
    from tpa_compress.data import read_texts

    bos = tok.bos_id if tok.add_bos else None
    return {
        name: make_windows(tok.encode(read_texts(files), add_bos=False), 512, bos, windows, source=name)
        for name, files in domains().items()
    }


def simulated(model, cache: str):
    """The cache format's decode-time reads installed in the reference forward; yields the
    model's layouts in that format (what cache_bytes prices)."""
    from tpa_compress.evaluate.simulate import simulated_cache

    return simulated_cache(model, cache)


@torch.no_grad()
def batch_nll(model, windows: torch.Tensor, device, batch: int = 16, rows: int = 2048) -> tuple[float, int]:
    """Summed NLL over `windows` (N, T): the reference forward on `batch` windows at a time,
    logits `rows` at a time (a 262k vocabulary)."""
    total, count = 0.0, 0
    for s in range(0, windows.shape[0], batch):
        w = windows[s : s + batch].to(device)
        hidden = model(w)[:, :-1].reshape(-1, model.cfg.hidden_size)
        tgt = w[:, 1:].reshape(-1)
        for r in range(0, hidden.shape[0], rows):
            logits = model.logits(hidden[r : r + rows]).float()
            total += float(torch.nn.functional.cross_entropy(logits, tgt[r : r + rows], reduction="sum"))
        count += tgt.numel()
    if not math.isfinite(total):
        raise RuntimeError("non-finite NLL")
    return total, count


def measure(model, cache, windows, device) -> dict:
    base = cache_bytes(original_layouts(model.cfg), CONTEXT)
    row = {"cache": cache, "ppl": {}}
    with simulated(model, cache) as layouts:
        row["kv_fraction"] = cache_bytes(layouts, CONTEXT) / base
        for name, w in windows.items():
            total, n = batch_nll(model, w, device)
            row["ppl"][name] = {"perplexity": math.exp(total / n), "tokens": n}
    return row


def run(a) -> None:
    from tpa_compress.convert import convert, write_output
    from tpa_compress.recipe import load_recipe

    ckpt = load_model(a.model)
    if a.name:
        ckpt.config.name = a.name
    tok = ckpt.tokenizer
    windows = eval_windows(tok, a.windows)
    caches = split_specs(a.caches)
    doc = {
        "model": a.model,
        "name": ckpt.config.name,
        "device": a.device,
        "argv": sys.argv,
        "rows": [],
        "cache_defaults": {f.name: f.default for f in fields(CacheSpec)[1:]},
    }
    if a.device.startswith("cuda"):
        doc["gpu"] = torch.cuda.get_device_name()
    variants = ([] if a.skip_original else [("original", None)]) + [
        (Path(r).stem, r) for r in a.recipes.split(",") if r
    ]
    recipe_caches = split_specs(a.recipe_caches or a.caches)
    for name, recipe_path in variants:
        model = build_model(ckpt, torch.float32, a.device)
        info = {}
        if recipe_path is not None:
            rec = load_recipe(recipe_path)
            t = time.time()
            res, tensors = convert(ckpt, model, rec, eval_model=False, log=lambda m: print(f"  {m}", flush=True))
            if a.save_dir:  # the converted (healed) folder, for bench/long_context.py
                write_output(Path(a.save_dir) / name, ckpt, rec, res, tensors, force=True, model=model)
            info = {
                "convert_s": time.time() - t,
                "recipe": recipe_path,
                "notes": res.notes,
                "ranks": [(lay.k.rank or None, lay.v.rank or None) for lay in res.layouts],
                **({"heal": res.heal} if getattr(res, "heal", None) else {}),
            }
        own = rec.cache_dtype if recipe_path is not None else "bf16"
        # a recipe that names a quantized cache is measured in that cache alone
        wanted = caches if recipe_path is None else recipe_caches
        for cache in wanted if not parse_spec(own).format.lossy else [own]:
            t = time.time()
            row = {"model": a.model, "variant": name, **measure(model, cache, windows, a.device), **info}
            row["eval_s"] = time.time() - t
            doc["rows"].append(row)
            print(json.dumps({k: row[k] for k in ("variant", "cache", "kv_fraction", "ppl")}), flush=True)
            Path(a.out).write_text(json.dumps(doc, indent=1))
        del model
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()


def current_names(doc: dict) -> dict:
    """Rows' cache names under the current spec defaults: files written before `cache_defaults`
    was recorded were measured with sink=0, then the grouped formats' default."""
    if "cache_defaults" not in doc:
        for r in doc["rows"]:
            spec = parse_spec(r["cache"])
            if spec.format.grouped and "sink=" not in r["cache"]:
                r["cache"] = replace(spec, sink=0).name
    return doc


def render(paths: list[str], md: str | None, plot: str | None) -> None:
    docs = []  # one per model: the rows of every file that measured it
    for p in paths:
        d = current_names(json.loads(Path(p).read_text()))
        same = [x for x in docs if (x.get("name") or x["model"]) == (d.get("name") or d["model"])]
        if same:
            same[0]["rows"] += d["rows"]
        else:
            docs.append(d)
    for doc in docs:  # a point measured again (a later file) replaces the earlier row
        doc["rows"] = list({(r["variant"], r["cache"]): r for r in doc["rows"]}.values())
    lines = []
    for doc in docs:
        rows = doc["rows"]
        base = {
            d: v["perplexity"]
            for r in rows
            if r["variant"] == "original" and r["cache"] in FLOAT_CACHES
            for d, v in r["ppl"].items()
        }
        doms = list(base)
        lines += [
            f"### {doc.get('name') or doc['model']}",
            "",
            "| variant | cache | KV at 32K | " + " | ".join(f"{d} ppl (delta)" for d in doms) + " |",
            "|---|---|---:|" + "---:|" * len(doms),
        ]
        for r in sorted(rows, key=lambda r: -r["kv_fraction"]):
            cells = [
                f"{r['ppl'][d]['perplexity']:.3f} ({100 * (r['ppl'][d]['perplexity'] / base[d] - 1):+.2f}%)"
                for d in doms
            ]
            lines.append(
                f"| {r['variant']} | {r['cache']} | {r['kv_fraction']:.3f}x "
                f"({1 / r['kv_fraction']:.1f}x smaller) | " + " | ".join(cells) + " |"
            )
        lines.append("")
    text = "\n".join(lines)
    if md:
        Path(md).write_text(text)
    print(text)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        doms = sorted({d for doc in docs for r in doc["rows"] for d in r["ppl"]})
        fig, axes = plt.subplots(len(docs), len(doms), figsize=(6 * len(doms), 4.5 * len(docs)), squeeze=False)
        for i, doc in enumerate(docs):
            rows = doc["rows"]
            base = {
                d: v["perplexity"]
                for r in rows
                if r["variant"] == "original" and r["cache"] in FLOAT_CACHES
                for d, v in r["ppl"].items()
            }
            for j, d in enumerate(doms):
                ax = axes[i][j]
                for variant in dict.fromkeys(r["variant"] for r in rows):
                    pts = sorted(
                        (r["kv_fraction"], 100 * (r["ppl"][d]["perplexity"] / base[d] - 1), r["cache"])
                        for r in rows
                        if r["variant"] == variant and d in r["ppl"]
                    )
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", label=variant)
                    for x, y, c in pts:
                        ax.annotate(c, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
                ax.set_xscale("log", base=2)
                ax.set_yscale("symlog", linthresh=1)
                ax.set_ylim(-0.5, 200)  # points above 200% (plain weight SVD) are off the chart; the table has them
                ax.set_xlabel("KV cache at 32K (fraction of bf16 original)")
                ax.set_ylabel(f"perplexity delta on {d} (%)")
                ax.set_title(f"{doc.get('name') or doc['model']}: {d}")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--name", default=None, help="the model's name in tables (default: its own)")
    ap.add_argument("--recipes", default="recipes/fat.yaml,recipes/balanced.yaml,recipes/aggressive.yaml")
    ap.add_argument("--caches", default="bf16,int8,fp8,int4")
    ap.add_argument("--recipe-caches", default=None, help="cache formats for the recipes' rows (default: --caches)")
    ap.add_argument("--skip-original", action="store_true", help="measure only the recipes")
    ap.add_argument("--windows", type=int, default=130, help="512-token windows per domain")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="frontier.json")
    ap.add_argument("--save-dir", default=None, help="write each recipe's converted folder under this directory")
    ap.add_argument("--render", nargs="*", help="JSON files to render instead of measuring")
    ap.add_argument("--md", default=None)
    ap.add_argument("--plot", default=None)
    a = ap.parse_args()
    if a.render:
        render(a.render, a.md, a.plot)
    else:
        run(a)


if __name__ == "__main__":
    main()
