"""`tpa-compress` command line: parse arguments, call the pipeline, print results.

Every user error is a `TPAError`: printed as one line (`error: ...`), exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

# the helpers are re-exported: runtime/cli.py imports them from here until it imports cli_common
from .cli_common import (  # noqa: F401
    DTYPES,
    MODEL_HELP,
    TOKENIZER_HELP,
    console,
    make_console,
    open_model,
    out,
    progress_bar,
    require_tokenizer,
    resolve_device,
    torch_dtype,
)
from .errors import TPAError

# Plain click help (rich_markup_mode=None): typer's rich help prints on/off flags as
# "--force <bool>", as if they took a value.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Convert transformer LLMs to TPA / low-rank factorized attention, measured.",
)


_state = {"debug": False}

# eval's default cap per domain: 2 x 4 windows of 2048 tokens (16k predictions) for
# Gemma 3 270M; at convert.cpu_threads' 0.9 s per 512-token forward on 2 idle cores that is
# about 30-40 s plus loading (all ~35 windows per domain take several minutes)
DEFAULT_EVAL_WINDOWS = 4


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        out.print(f"tpa-compress {version('tpa-compress')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    _v: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    _state["debug"] = debug


@app.command("eval")
def eval_cmd(
    model: Optional[str] = typer.Argument(
        None,
        help=MODEL_HELP,
    ),
    data: Optional[list[Path]] = typer.Option(
        None, "--data", help="Text file(s), scored as one text; default: each bundled evaluation domain."
    ),
    seq_len: int = typer.Option(2048, "--seq-len", help="Window length in tokens."),
    max_windows: int = typer.Option(
        DEFAULT_EVAL_WINDOWS,
        "--max-windows",
        help="Score at most N "
        f"windows per domain (default {DEFAULT_EVAL_WINDOWS}: about a minute "
        "for 270M on 2 idle CPU cores; a larger N scores more of the text).",
    ),
    bos: str = typer.Option(
        "auto",
        "--bos",
        help="Start each window with BOS: auto (as the tokenizer does; Gemma: always, from its config), yes, no.",
    ),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON here."),
    dtype: str = typer.Option(
        "float32", "--dtype", help="Weights dtype: float32, bfloat16, float16 (float16 overflows Gemma)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu, cuda, cuda:N."),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant."),
    cache_dtype: Optional[str] = typer.Option(
        None,
        "--cache-dtype",
        help="Score through a KV cache "
        "in this format (fp32, bf16, fp16, fp8, int8, int4, int3, int2; "
        "grouped ones take parameters, e.g. int4:recent=32,rotate=hadamard): "
        "every prediction reads keys and values as decoding would. Default: "
        "a converted folder's recorded format when it is quantized (fp8, "
        "int8, int4 ...), else the no-cache forward.",
    ),
    cache_path: str = typer.Option(
        "simulate",
        "--cache-path",
        help="How --cache-dtype is scored: "
        "simulate (the decode reads simulated in one forward per window, exact) "
        "or decode (teacher-forced decoding through the runtime cache, slow on CPU).",
    ),
):
    """Perplexity over non-overlapping windows of real text: by default one row per bundled
    domain (python-docs, prose), each cut and capped on its own; --data: those files alone."""
    from .data import eval_sets, read_texts
    from .evaluate import eval_cli as steps

    steps.check_args(seq_len, max_windows, bos, cache_path)
    cache_dtype = steps.scored_cache_dtype(model, cache_dtype)
    if json_out:
        from .save.atomic import check_output_file

        check_output_file(json_out, "--json")
    sets = eval_sets(data)
    texts = {name: read_texts(files) for name, files in sets.items()}
    dev = resolve_device(device)
    torch_dtype(dtype)
    ckpt, net, bos_id = steps.open_with_bos(model, variant, dtype, dev, tokenizer, bos)
    ckpt.config.check_length(seq_len, f"--seq-len {seq_len}", ckpt.path)
    windows = steps.cut_windows(require_tokenizer(ckpt), texts, sets, seq_len, bos_id)
    steps.print_window_counts(windows, seq_len, max_windows)
    windows = {name: w[:max_windows] for name, w in windows.items()}
    results, speed = steps.score_domains(net, windows, bos_id is not None, dev, cache_dtype, cache_path)
    out.print(steps.results_table(ckpt, cache_dtype, seq_len, bos_id, results, speed))
    if json_out:
        steps.write_json(json_out, ckpt, dtype, cache_dtype, bos_id, cache_path, sets, data, results)


@app.command("methods")
def methods_cmd():
    """List the factorization methods (see docs/methods.md for their specs)."""
    from .methods import all_methods

    table = Table(title="factorization methods")
    table.add_column("name")
    table.add_column("calibrated")
    table.add_column("what it does")
    for name, cls in all_methods().items():
        import sys as _s

        doc = (_s.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        table.add_row(name, "yes" if cls.needs_calibration else "no", doc.split("—", 1)[-1].strip())
    out.print(table)


@app.command("convert")
def convert_cmd(
    model: Optional[str] = typer.Argument(None, help="Model path or embedded name; overrides the recipe's `model:`."),
    recipe: Path = typer.Option(..., "--recipe", help="Recipe YAML (see recipes/)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: out/<model>-<recipe>)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    do_eval: bool = typer.Option(False, "--eval", help="Measure perplexity before and after."),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
    device: str = typer.Option(
        "auto", "--device", help="Where calibration and evaluation run: auto (cuda when available), cpu, cuda, cuda:N."
    ),
    threads: str = typer.Option(
        "auto", "--threads", help="CPU threads: N, or auto (every core; results do not depend on it)."
    ),
    shard_mib: int = typer.Option(
        2048,
        "--max-shard-mib",
        help="Largest output weight file, in MiB (a streaming conversion holds one while filling it).",
    ),
    whole_model: bool = typer.Option(
        False,
        "--whole-model",
        help="Hold the whole model in memory "
        "(as --eval, healing and budget by kl do) instead of converting one "
        "layer at a time; the output is the same.",
    ),
):
    """Convert a model to factorized attention as a YAML recipe says."""
    import torch

    from .convert import convert_cli as steps
    from .convert import cpu_threads
    from .convert.stream import whole_model_reason
    from .recipe import load_recipe

    rec = load_recipe(recipe)
    if shard_mib < 1:
        raise TPAError(f"--max-shard-mib {shard_mib} is not valid; valid: a positive number of MiB")
    model = model or rec.model
    out_dir = steps.prepare_out_dir(model, recipe, out_dir, force)
    dev = resolve_device(device)
    torch.set_num_threads(cpu_threads(threads))
    whole = whole_model_reason(rec, do_eval) or ("--whole-model" if whole_model else None)  # None: streams
    if whole is None:
        res = steps.convert_streamed(model, variant, tokenizer, rec, out_dir, force, dev, shard_mib)
    else:
        res = steps.convert_whole(model, variant, tokenizer, rec, out_dir, force, dev, do_eval, whole)
    write_profile(res, dev)
    steps.print_results(res, rec, out_dir)


def write_profile(res, device: str) -> None:
    """With TPA_CONVERT_PROFILE=PATH set (bench/bench_convert_memory.py), write the
    conversion's seconds per layer and the device's peak memory there as JSON."""
    path = os.environ.get("TPA_CONVERT_PROFILE")
    if not path:
        return
    import torch

    prof = {"path": "whole", "seconds": res.seconds, **res.profile}
    if prof.get("peak_device_bytes") is None and device.startswith("cuda"):
        prof["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)
    Path(path).write_text(json.dumps(prof, indent=2) + "\n")


def _register_subcommands() -> None:
    """Commands that live beside their pipeline stage (imported lazily: a fast --help)."""
    from .analyze.cli import analyze_cmd

    app.command("analyze")(analyze_cmd)
    from .runtime.cli import generate_cmd

    app.command("generate")(generate_cmd)
    from .evaluate.validate_cli import validate_cmd

    app.command("validate")(validate_cmd)


_register_subcommands()


def main() -> None:
    try:
        app()
    except TPAError as e:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print(
            f"interrupted: {' '.join(sys.argv[1:2]) or 'tpa-compress'} stopped; "
            "nothing was written (outputs are written whole or not at all)",
            highlight=False,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
