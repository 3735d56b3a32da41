"""`tpa-compress analyze`: the typer-annotated command (registered in tpa_compress/cli.py).

Arguments are checked before the model is loaded, so a bad --context or --data fails
in a second with one line (TPAError), not after a minute of loading.
"""

from __future__ import annotations

import re
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..cli_common import MODEL_HELP
from ..errors import TPAError


def parse_contexts(spec: str) -> list[int]:
    """'4096,32768' or '4k,32k' -> [4096, 32768] (k = 1024)."""
    out = []
    for part in spec.split(","):
        p = part.strip().lower()
        m = re.fullmatch(r"(\d+)(k?)", p)
        if not m or int(m.group(1)) == 0:
            raise TPAError(
                f"--context {spec!r}: {part.strip()!r} is not a positive token count; "
                "valid: comma-separated integers, e.g. 4096,32768 or 4k,32k"
            )
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return sorted(set(out))


def check_args(batch: int, calib_tokens: int, seq_len: int) -> None:
    if batch < 1:
        raise TPAError(f"--batch {batch} must be at least 1")
    from ..evaluate.perplexity import check_window_args

    check_window_args(seq_len)
    if calib_tokens < seq_len:
        raise TPAError(f"--calib-tokens {calib_tokens} is less than one window (--seq-len {seq_len})")


def _rel(p: Path) -> str:
    """A path relative to the working directory when under it (reports travel)."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _command_line() -> str | None:
    """How this report was made, for report.md (None when called as a function)."""
    argv = sys.argv
    if "analyze" in argv[1:]:
        return "tpa-compress " + " ".join(shlex.quote(a) for a in argv[argv.index("analyze") :])
    if argv and argv[0].endswith(str(Path("analyze") / "cli.py")):
        return "python -m tpa_compress.analyze.cli " + " ".join(shlex.quote(a) for a in argv[1:])
    return None


def default_out(model: Optional[str], name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name or Path(model or "model").stem).strip("-")
    return Path("out") / "analyze" / (slug or "model")


def analyze_cmd(
    model: Optional[str] = typer.Argument(
        None,
        help=MODEL_HELP,
    ),
    data: Optional[list[Path]] = typer.Option(
        None, "--data", help="Calibration text file(s); default: the bundled calibration split."
    ),
    context: str = typer.Option(
        "4096,32768", "--context", help="Context lengths to price, comma-separated (k = 1024)."
    ),
    batch: int = typer.Option(1, "--batch", help="Sequences per batch, for cache totals."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: out/analyze/<model>)."),
    calib_tokens: int = typer.Option(32768, "--calib-tokens", help="Calibration tokens for activations."),
    seq_len: int = typer.Option(512, "--seq-len", help="Calibration window length in tokens."),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant."),
    tokenizer: Optional[Path] = typer.Option(
        None,
        "--tokenizer",
        help="Tokenizer for the calibration "
        "text, instead of the one found with the model: a tokenizer.model "
        "(SentencePiece), a tokenizer.json, or a folder holding one.",
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu, cuda, cuda:N."),
):
    """What can be compressed, at what cost, and what cannot (spectra, Q/K geometry, KV-cache costs).

    Weight and activation spectra, head-mode ranks, Q/K geometry and a window-aware
    KV-cache table, before any conversion."""

    from ..cli_common import make_console, open_model, resolve_device
    from ..data import default_calib_files, read_texts
    from .report import print_summary, write_report

    console, stdout = make_console(stderr=True), make_console()
    t0 = time.time()
    contexts = parse_contexts(context)
    check_args(batch, calib_tokens, seq_len)
    files = list(data) if data else default_calib_files()
    texts = [read_texts([f]) for f in files]  # checks every file before the model loads
    dev = resolve_device(device)
    t = time.time()
    ckpt, net = open_model(model, variant, "float32", dev, tokenizer)
    timing = {"load": time.time() - t}
    rss_loaded = _peak_rss()
    t = time.time()
    if ckpt.tokenizer is None:
        _skip_activations(ckpt, data, console)
        windows, calibration = None, None
    else:
        windows, calibration = _calibration(ckpt.tokenizer, files, texts, calib_tokens, seq_len, console)
    timing["tokenize"] = time.time() - t
    out = out or default_out(model, ckpt.config.name)
    doc = _run_analysis(ckpt, net, windows, contexts, batch, calibration, dev)
    _record_timing(doc, timing, t0, rss_loaded)
    written = write_report(doc, out, _command_line())
    print_summary(doc, stdout)
    stdout.print(f"wrote {out}/ ({', '.join(p.name for p in written)}) in {time.time() - t0:.1f}s")


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _skip_activations(ckpt, data: Optional[list[Path]], console) -> None:
    """A model without a tokenizer: --data is an error, else activation spectra are skipped (said on stderr)."""
    if data:
        raise TPAError(
            f"{ckpt.path}: --data needs a tokenizer, and this model has none "
            "(put tokenizer.model or tokenizer.json beside it, or pass --tokenizer PATH)"
        )
    console.print("[yellow]no tokenizer: activation spectra skipped (weights, geometry and cache costs only)[/yellow]")


def _calibration(tok, files: list[Path], texts: list[str], calib_tokens: int, seq_len: int, console):
    """(calibration windows, the report's description of them); warns when the text is short."""
    from .activations import calibration_windows

    src = ", ".join(map(str, files))
    windows = calibration_windows(tok, texts, calib_tokens, seq_len, src)
    calibration = {
        "files": [_rel(f) for f in files],
        "tokens": int(windows.numel()),
        "windows": int(windows.shape[0]),
        "seq_len": seq_len,
        "bos": bool(tok.add_bos),
    }
    if windows.numel() < calib_tokens:
        console.print(f"[yellow]{src}: only {windows.numel()} calibration tokens (asked {calib_tokens})[/yellow]")
    return windows, calibration


def _run_analysis(ckpt, net, windows, contexts, batch: int, calibration, dev: str) -> dict:
    """The report document, each stage shown as a progress bar."""
    from ..cli_common import progress_bar
    from . import analyze

    with progress_bar("analyze") as bar:
        tasks = {}

        def stage(name, total):
            tasks[name] = bar.add_task(name, total=total, info="")
            return lambda i, n: bar.update(tasks[name], completed=i, total=n)

        return analyze(ckpt, net, windows, contexts, batch, calibration, stage=stage, device=dev)


def _record_timing(doc: dict, timing: dict, t0: float, rss_loaded: int) -> None:
    """Add the command's own seconds (load, tokenize, total) and peak memory to the document's timing."""
    doc["timing"]["seconds"] = {
        **{k: round(v, 2) for k, v in timing.items()},
        **doc["timing"]["seconds"],
        "total_before_writing": round(time.time() - t0, 2),
    }
    doc["timing"]["peak_rss_bytes"] = _peak_rss()
    doc["timing"]["peak_rss_after_load_bytes"] = rss_loaded


def main() -> None:
    """`python -m tpa_compress.analyze.cli`: the command without the top-level CLI."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(analyze_cmd)
    try:
        app()
    except TPAError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
