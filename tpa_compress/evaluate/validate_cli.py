"""`tpa-compress validate`: the typer command (registered in tpa_compress/cli.py).

Arguments and thresholds are checked before any model is loaded. By default every
bundled evaluation domain (python-docs, prose) is measured on its own and the gate
applies to each: a model passes only if it meets every threshold on every domain. A
missed threshold prints one line on stderr saying which, on which domain and by how
much, and exits with code 1 (input errors stay code 2), so CI can tell "worse than
allowed" from "could not run".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

# 2: results per domain under "domains"; with --data (one text) also at the top level, as in 1
SCHEMA, SCHEMA_VERSION = "tpa-compress.validate", 2


def _component(d: dict | None) -> str:
    if not d:
        return "full"
    return d["kind"] if d["kind"] == "full" else f"{d['kind']} {d['rank']}"


def validate_cmd(
    converted: str = typer.Argument(..., help="The converted model folder (or any model)."),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="The original model; default: the one recorded in CONVERTED/config.json."
    ),
    data: Optional[list[Path]] = typer.Option(
        None, "--data", help="Held-out text file(s), measured as one text; default: each bundled evaluation domain."
    ),
    seq_len: int = typer.Option(512, "--seq-len", help="Window length in tokens."),
    max_windows: Optional[int] = typer.Option(
        16,
        "--max-windows",
        help="Use at most N windows per domain (default 16: ~2 min per domain for 270M on 2 CPU cores).",
    ),
    max_kl: Optional[float] = typer.Option(
        None, "--max-kl", help="Fail if mean KL(reference || converted) in nats per token is above this."
    ),
    min_top1: Optional[float] = typer.Option(None, "--min-top1", help="Fail if top-1 agreement (0..1) is below this."),
    max_ppl_increase: Optional[float] = typer.Option(
        None, "--max-ppl-increase", help="Fail if perplexity rises by more than this many percent."
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype of both models."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant of the reference."),
    tokenizer: Optional[Path] = typer.Option(
        None,
        "--tokenizer",
        help="Tokenizer for both models, "
        "instead of the ones found with them: a tokenizer.model "
        "(SentencePiece), a tokenizer.json, or a folder holding one.",
    ),
):
    """Compare a converted model with its original: per-layer errors, KL, top-1, perplexity."""
    from ..cli_common import console, out, resolve_device, torch_dtype
    from ..data import eval_sets, read_texts
    from .perplexity import check_window_args
    from .validate import Thresholds, domain_failures

    check_window_args(seq_len, max_windows)
    if json_out:
        from ..save.atomic import check_output_file

        check_output_file(json_out, "--json")
    limits = Thresholds(max_kl, min_top1, max_ppl_increase).check()
    sets = eval_sets(data)
    texts = {name: read_texts(files) for name, files in sets.items()}
    torch_dtype(dtype)
    dev = resolve_device(device)
    t0 = time.time()
    conv, ref, tok, ids = _open_pair(converted, reference, variant, tokenizer, texts)
    for ck in (conv, ref):
        ck.config.check_length(seq_len, f"--seq-len {seq_len}", ck.path)
    windows = _cut_windows(ids, sets, seq_len, tok, max_windows)
    ref_net, conv_net = _build_pair(ref, conv, dtype, dev)
    console.print(
        f"[dim]reference {ref.path} ({ref.format}), converted {conv.path}: loaded in {time.time() - t0:.1f}s[/dim]"
    )
    results, speed = _measure_domains(ref_net, conv_net, windows, dev)
    _label_layers(results, conv)
    for name, res in results.items():
        out.print(_layer_table(name, res))
    out.print(_summary_table(results, speed))
    missed = domain_failures(results, limits)
    if json_out:
        settings = {
            "seq_len": seq_len,
            "max_windows": max_windows,
            "bos": bool(tok.add_bos),
            "dtype": dtype,
            "device": dev,
        }
        _write_json(json_out, conv, ref, settings, limits, missed, sets, data, results)
    _report_verdict(missed, limits, results)


def _open_pair(
    converted: str, reference: Optional[str], variant: Optional[str], tokenizer: Optional[Path], texts: dict
):
    """(converted ckpt, reference ckpt, their shared tokenizer, {domain: ids without BOS}),
    after checking the two models are comparable."""
    from ..cli_common import console
    from ..load import load_model
    from .validate import check_comparable, load_reference, shared_tokenizer

    with console.status(f"opening {converted} and its reference …"):
        conv = load_model(converted, tokenizer=tokenizer)
        ref = load_reference(conv, reference, variant, tokenizer)
        check_comparable(conv, ref)
        ids = {}
        for name, text in texts.items():
            tok, ids[name] = shared_tokenizer(conv, ref, text)
    return conv, ref, tok, ids


def _cut_windows(ids: dict, sets: dict, seq_len: int, tok, max_windows: Optional[int]) -> dict:
    """Each domain's ids as at most max_windows non-overlapping windows."""
    from .perplexity import make_windows

    return {
        name: make_windows(
            i, seq_len, tok.bos_id if tok.add_bos else None, max_windows, source=", ".join(map(str, sets[name]))
        )
        for name, i in ids.items()
    }


def _build_pair(ref, conv, dtype: str, dev: str):
    """(reference net, converted net)."""
    from ..cli_common import console, torch_dtype
    from ..models import build_model

    with console.status("building both models …"):
        ref_net = build_model(ref, torch_dtype(dtype), dev)
        conv_net = build_model(conv, torch_dtype(dtype), dev)
    return ref_net, conv_net


def _measure_domains(ref_net, conv_net, windows: dict, dev: str):
    """({domain: ValidationResult}, {domain: tokens per second through both models})."""
    from ..cli_common import progress_bar
    from .validate import validate

    results, speed = {}, {}
    with progress_bar("validate") as bar:
        for name, w in windows.items():
            t0 = time.time()
            task = bar.add_task(f"validate {name}", total=w.shape[0], info="")
            results[name] = validate(
                ref_net,
                conv_net,
                w,
                device=dev,
                progress=lambda i, n, kl, task=task: bar.update(task, completed=i, info=f"KL {kl:.4g}"),
            )
            speed[name] = results[name].tokens / (time.time() - t0)
    return results, speed


def _label_layers(results: dict, conv) -> None:
    """Add each per-layer row's K and V factorization (as converted) and attention window."""
    tpa_layers = ((conv.extra or {}).get("tpa") or {}).get("layers") or []
    for res in results.values():
        for row in res.layers:
            lay = tpa_layers[row["layer"]] if row["layer"] < len(tpa_layers) else {}
            row["k"], row["v"] = _component(lay.get("k")), _component(lay.get("v"))
            row["window"] = conv.config.window(row["layer"])


def _layer_table(name: str, res):
    from rich.table import Table

    table = Table(title=f"per-layer relative error on {name} (converted vs reference, {res.tokens} tokens)")
    for c in ("layer", "window", "K", "V", "attn (own)", "attn", "hidden"):
        table.add_column(c, justify="right" if c not in ("K", "V") else "left")
    for r in res.layers:
        table.add_row(
            str(r["layer"]),
            "global" if r["window"] is None else str(r["window"]),
            r["k"],
            r["v"],
            f"{r['attn_local']:.3e}",
            f"{r['attn']:.3e}",
            f"{r['hidden']:.3e}",
        )
    return table


def _summary_table(results: dict, speed: dict):
    """One row per measure, one column per domain: a column per measure and domain would not
    fit an 80-column terminal or a log."""
    from rich.table import Table

    summary = Table(title="next-token distributions")
    summary.add_column("measure")
    for name in results:
        summary.add_column(name, justify="right")
    for label, fmt in (
        ("windows", lambda r, n: str(r.windows)),
        ("tokens", lambda r, n: str(r.tokens)),
        ("mean KL", lambda r, n: f"{r.kl_mean:.4g}"),
        ("max KL", lambda r, n: f"{r.kl_max:.4g}"),
        ("top-1 agreement", lambda r, n: f"{r.top1:.4f}"),
        ("ppl reference", lambda r, n: f"{r.ppl_reference:.4f}"),
        ("ppl converted", lambda r, n: f"{r.ppl_converted:.4f}"),
        ("Δ ppl", lambda r, n: f"{r.ppl_increase_pct:+.2f}%"),
        ("tokens/s (both models)", lambda r, n: f"{speed[n]:.0f}"),
    ):
        summary.add_row(label, *(fmt(r, n) for n, r in results.items()))
    return summary


def _write_json(
    json_out: Path,
    conv,
    ref,
    settings: dict,
    limits,
    missed: list,
    sets: dict,
    data: Optional[list[Path]],
    results: dict,
) -> None:
    from ..save import write_text_atomic
    from .validate import domain_failures

    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "converted": conv.path,
        "reference": ref.path,
        "settings": settings,
        "thresholds": {k: v for k, v in vars(limits).items()},
        "passed": not missed,
        "failures": missed,
        "domains": {
            name: {
                "data": [str(f) for f in sets[name]],
                **res.to_dict(),
                "passed": not domain_failures({name: res}, limits),
            }
            for name, res in results.items()
        },
    }
    if data:  # one text: its numbers also at the top level, as in schema 1
        doc.update({"data": [str(f) for f in data], **next(iter(results.values())).to_dict()})
    write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n")


def _report_verdict(missed: list, limits, results: dict) -> None:
    """The gate's outcome: which thresholds were missed (stderr, exit 1), or that all given ones were met."""
    from ..cli_common import console, out

    if missed:
        console.print(f"[bold red]validation failed:[/bold red] {'; '.join(missed)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if limits.any():
        out.print(f"validation passed: every given threshold is met on {', '.join(results)}")
