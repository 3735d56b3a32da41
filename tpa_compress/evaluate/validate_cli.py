"""`tpa-compress validate`: the typer command (registered in tpa_compress/cli.py).

Arguments and thresholds are checked before any model is loaded. A missed threshold
prints one line on stderr saying which and by how much, and exits with code 1 (input
errors stay code 2), so CI can tell "worse than allowed" from "could not run".
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import TPAError

SCHEMA, SCHEMA_VERSION = "tpa-compress.validate", 1


def _component(d: dict | None) -> str:
    if not d:
        return "full"
    return d["kind"] if d["kind"] == "full" else f"{d['kind']} {d['rank']}"


def validate_cmd(
    converted: str = typer.Argument(..., help="The converted model folder (or any model)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="The original model; "
                                            "default: the one recorded in CONVERTED/config.json."),
    data: Optional[List[Path]] = typer.Option(None, "--data", help="Held-out text file(s); "
                                              "default: the bundled evaluation split."),
    seq_len: int = typer.Option(512, "--seq-len", help="Window length in tokens."),
    max_windows: Optional[int] = typer.Option(16, "--max-windows", help="Use at most N windows "
                                               "(default 16: ~2 min for 270M on 2 CPU cores)."),
    max_kl: Optional[float] = typer.Option(None, "--max-kl", help="Fail if mean KL(reference || "
                                           "converted) in nats per token is above this."),
    min_top1: Optional[float] = typer.Option(None, "--min-top1", help="Fail if top-1 agreement "
                                             "(0..1) is below this."),
    max_ppl_increase: Optional[float] = typer.Option(None, "--max-ppl-increase", help="Fail if "
                                                     "perplexity rises by more than this many percent."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype of both models."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    variant: Optional[str] = typer.Option(None, "--variant", help="gemma_pytorch .ckpt variant "
                                          "of the reference."),
):
    """Compare a converted model with its original: per-layer errors, KL, top-1, perplexity."""
    from rich.table import Table

    from ..cli import console, out, progress_bar, resolve_device, torch_dtype
    from ..data import default_eval_files, read_texts
    from ..load import load_model
    from ..models import build_model
    from .perplexity import check_window_args, make_windows
    from .validate import (Thresholds, check_comparable, failures, load_reference,
                           shared_tokenizer, validate)

    check_window_args(seq_len, max_windows)
    limits = Thresholds(max_kl, min_top1, max_ppl_increase).check()
    files = list(data) if data else default_eval_files()
    text = read_texts(files)
    torch_dtype(dtype)
    dev = resolve_device(device)

    with console.status(f"opening {converted} and its reference …"):
        t0 = time.time()
        conv = load_model(converted)
        ref = load_reference(conv, reference, variant)
        check_comparable(conv, ref)
        tok, ids = shared_tokenizer(conv, ref, text)
    for ck in (conv, ref):
        if seq_len > ck.config.max_position_embeddings:
            raise TPAError(f"--seq-len {seq_len} is longer than {ck.path} supports "
                           f"({ck.config.max_position_embeddings} positions)")
    windows = make_windows(ids, seq_len, tok.bos_id if tok.add_bos else None, max_windows,
                           source=", ".join(map(str, files)))
    with console.status("building both models …"):
        ref_net = build_model(ref, torch_dtype(dtype), dev)
        conv_net = build_model(conv, torch_dtype(dtype), dev)
    console.print(f"[dim]reference {ref.path} ({ref.format}), converted {conv.path}: loaded in "
                  f"{time.time() - t0:.1f}s[/dim]")

    t0 = time.time()
    with progress_bar("validate") as bar:
        task = bar.add_task("validate", total=windows.shape[0], info="")
        res = validate(ref_net, conv_net, windows, device=dev,
                       progress=lambda i, n, kl: bar.update(task, completed=i, info=f"KL {kl:.4g}"))
    elapsed = time.time() - t0

    tpa_layers = ((conv.extra or {}).get("tpa") or {}).get("layers") or []
    for row in res.layers:
        lay = tpa_layers[row["layer"]] if row["layer"] < len(tpa_layers) else {}
        row["k"], row["v"] = _component(lay.get("k")), _component(lay.get("v"))
        w = conv.config.window(row["layer"])
        row["window"] = w
    table = Table(title=f"per-layer relative error (converted vs reference, {res.tokens} tokens)")
    for c in ("layer", "window", "K", "V", "attn (own)", "attn", "hidden"):
        table.add_column(c, justify="right" if c not in ("K", "V") else "left")
    for r in res.layers:
        table.add_row(str(r["layer"]), "global" if r["window"] is None else str(r["window"]), r["k"],
                      r["v"], f"{r['attn_local']:.3e}", f"{r['attn']:.3e}", f"{r['hidden']:.3e}")
    out.print(table)
    # one row per measure: nine columns were cut to "0.041…" in an 80-column terminal or a log
    summary = Table(title="next-token distributions")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    for name, value in (("windows", str(res.windows)), ("tokens", str(res.tokens)),
                        ("mean KL", f"{res.kl_mean:.4g}"), ("max KL", f"{res.kl_max:.4g}"),
                        ("top-1 agreement", f"{res.top1:.4f}"), ("ppl reference", f"{res.ppl_reference:.4f}"),
                        ("ppl converted", f"{res.ppl_converted:.4f}"), ("Δ ppl", f"{res.ppl_increase_pct:+.2f}%"),
                        ("tokens/s (both models)", f"{res.tokens / elapsed:.0f}")):
        summary.add_row(name, value)
    out.print(summary)

    missed = failures(res, limits)
    if json_out:
        from ..save import write_text_atomic
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "converted": conv.path,
               "reference": ref.path, "data": [str(f) for f in files],
               "settings": {"seq_len": seq_len, "max_windows": max_windows, "bos": bool(tok.add_bos),
                            "dtype": dtype, "device": dev},
               "thresholds": {k: v for k, v in vars(limits).items()},
               "passed": not missed, "failures": missed, **res.to_dict()}
        write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n")
    if missed:
        console.print(f"[bold red]validation failed:[/bold red] {'; '.join(missed)}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if limits.any():
        out.print("validation passed: every given threshold is met")
