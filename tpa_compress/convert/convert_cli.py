"""`tpa-compress convert`'s steps; the typer command, which calls them in order, is in tpa_compress/cli.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from rich.table import Table

from ..cli_common import console, open_model, out, progress_bar


def prepare_out_dir(model: Optional[str], recipe: Path, out_dir: Optional[Path], force: bool) -> Path:
    """The output folder (default: out/<model>-<recipe>), a crashed run's leftovers cleaned and
    checked writable before any work; never the model's own folder."""
    from ..load.default import resolve_model_path
    from ..save.atomic import check_output_dir, clean_leftovers
    from . import default_out_dir

    out_dir = out_dir or default_out_dir(model or "gemma3-270m", str(recipe))
    for line in clean_leftovers(out_dir):
        console.print(f"[dim]{line}[/dim]")
    check_output_dir(out_dir, force, protect=[resolve_model_path(model)])
    return out_dir


def _log(message: str) -> None:
    console.print(f"[dim]{message}[/dim]")


def _print_threads() -> None:
    import torch

    _log(f"{torch.get_num_threads()} CPU thread(s)")


def _progress(bar):
    """progress(label) -> update(i, n, info) callbacks, one bar task per label."""
    tasks = {}

    def progress(label):
        tasks[label] = bar.add_task(label, total=None, info="")
        return lambda i, n, info="": bar.update(tasks[label], completed=i, total=n, info=info)

    return progress


def convert_streamed(model, variant, tokenizer, rec, out_dir: Path, force: bool, dev: str, shard_mib: int):
    """Load the checkpoint's index, convert and write one layer at a time; the result."""
    from ..load import load_model
    from .stream import convert_streaming

    t = time.time()
    ckpt = load_model(model, variant=variant, tokenizer=tokenizer)
    _log(
        f"loaded {ckpt.config.name or ckpt.path} ({ckpt.format}, {ckpt.config.family}) "
        f"in {time.time() - t:.1f}s; converting one layer at a time"
    )
    _print_threads()
    with progress_bar("convert") as bar:
        return convert_streaming(
            ckpt, rec, out_dir, force, dev, progress=_progress(bar), log=_log, shard_bytes=shard_mib * 2**20
        )


def convert_whole(model, variant, tokenizer, rec, out_dir: Path, force: bool, dev: str, do_eval: bool, why: str):
    """Build the whole model in memory (`why` says what needs it), convert, then write; the result."""
    from . import convert, write_output

    ckpt, net = open_model(model, variant, "float32", dev, tokenizer)
    _log(f"whole model in memory: {why}")
    _print_threads()
    with progress_bar("convert") as bar:
        res, tensors = convert(ckpt, net, rec, progress=_progress(bar), eval_model=do_eval, log=_log)
    write_output(out_dir, ckpt, rec, res, tensors, force, model=net)
    return res


def _kv_table(res, out_dir: Path) -> Table:
    table = Table(title=f"converted -> {out_dir}")
    for c in ("context", "original KV", "converted KV", "ratio"):
        table.add_column(c)
    for ctx, t in res.totals.items():
        table.add_row(
            ctx,
            f"{t['original_bytes'] / 2**20:.2f} MiB",
            f"{t['converted_bytes'] / 2**20:.2f} MiB",
            f"{t['ratio']:.3f}",
        )
    return table


def _perplexity_table(res, rec) -> Table:
    ppl = Table(title=f"perplexity (held-out evaluation text; converted: as saved, {rec.weight_dtype} weights)")
    for c in ("data", "original", "converted", "change"):
        ppl.add_column(c)
    for name, p in res.perplexity.items():
        ppl.add_row(
            name, f"{p['before']['perplexity']:.4f}", f"{p['after']['perplexity']:.4f}", f"{p['delta_pct']:+.2f}%"
        )
    return ppl


def print_results(res, rec, out_dir: Path) -> None:
    """The cache sizes, perplexity before/after (--eval) and healing's lines, then where it was written."""
    out.print(_kv_table(res, out_dir))
    if res.perplexity:
        out.print(_perplexity_table(res, rec))
    if res.heal:
        from ..report.convert_report import heal_lines

        for line in heal_lines(res.heal, res.perplexity):
            out.print(line, highlight=False)
    out.print(f"wrote {out_dir} in {res.seconds:.1f}s")
