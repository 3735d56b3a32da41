"""`tpa-compress eval`'s steps; the typer command, which calls them in order, is in tpa_compress/cli.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from rich.table import Table

from ..cli_common import console, open_model, progress_bar, require_tokenizer
from ..errors import TPAError
from .perplexity import check_window_args, make_windows, perplexity


def check_args(seq_len: int, max_windows: int, bos: str, cache_path: str) -> None:
    """The window, --bos and --cache-path arguments, checked before anything is read or loaded."""
    check_window_args(seq_len, max_windows)
    if bos not in ("auto", "yes", "no"):
        raise TPAError(f"--bos {bos!r} is not valid; valid: auto, yes, no")
    if cache_path not in ("simulate", "decode"):
        raise TPAError(f"--cache-path {cache_path!r} is not valid; valid: simulate, decode")


def scored_cache_dtype(model: Optional[str], cache_dtype: Optional[str]) -> Optional[str]:
    """The cache format scored: the one given (checked), else a converted folder's recorded
    format when it is lossy, else None (the no-cache forward)."""
    if cache_dtype is not None:
        from ..runtime.cache import check_cache_dtype

        check_cache_dtype(cache_dtype)
        return cache_dtype
    from ..cache_formats import parse_spec
    from ..runtime.cli import recorded_cache_dtype

    rec = recorded_cache_dtype(model)
    return rec if rec is not None and parse_spec(rec).format.lossy else None


def open_with_bos(model: Optional[str], variant, dtype: str, dev: str, tokenizer: Optional[Path], bos: str):
    """(ckpt, net, the BOS id each window starts with or None), the BOS decided before the model is built."""
    from ..load.model_tokenizer import bos_for

    picked = {}
    ckpt, net = open_model(
        model,
        variant,
        dtype,
        dev,
        tokenizer,
        check=lambda ck: picked.update(bos=bos_for(require_tokenizer(ck), bos, ck.path)),
    )
    return ckpt, net, picked["bos"]


def cut_windows(tok, texts: dict, sets: dict, seq_len: int, bos_id: Optional[int]) -> dict:
    """Each domain's text as all its non-overlapping windows (uncapped)."""
    return {
        name: make_windows(
            tok.encode(text, add_bos=False), seq_len, bos_id, None, source=", ".join(map(str, sets[name]))
        )
        for name, text in texts.items()
    }


def print_window_counts(windows: dict, seq_len: int, max_windows: int) -> None:
    """What is scored per domain, before the work, and whether the text holds more."""
    for name, w in windows.items():
        more = "; --max-windows N scores more" if w.shape[0] > max_windows else ""
        console.print(
            f"{name}: {min(max_windows, w.shape[0])} windows × {seq_len} tokens (of {w.shape[0]} in the text{more})",
            highlight=False,
        )


def _ppl_progress(bar, task):
    return lambda i, n, p: bar.update(task, completed=i, info=f"ppl {p:.3f}")


def _score_forward(bar, name, net, w, use_bos, dev, cache_dtype):
    """One domain's perplexity from the no-cache forward."""
    task = bar.add_task(f"perplexity {name}", total=w.shape[0], info="")
    return perplexity(net, w, use_bos, device=dev, progress=_ppl_progress(bar, task))


def _score_simulated(bar, name, net, w, use_bos, dev, cache_dtype):
    """One domain's perplexity with the cache's reads simulated in one forward per window (exact)."""
    task = bar.add_task(f"{name} through a {cache_dtype} cache (simulated)", total=w.shape[0], info="")
    return perplexity(net, w, use_bos, device=dev, cache=cache_dtype, progress=_ppl_progress(bar, task))


def _score_decoded(bar, name, net, w, use_bos, dev, cache_dtype):
    """One domain's perplexity by teacher-forced decoding through the runtime cache: all windows
    as one batch, one decode step per position."""
    from .cached import cached_perplexity

    task = bar.add_task(f"{name} through a {cache_dtype} cache", total=w.shape[1] - 1, info="")
    return cached_perplexity(net, w, use_bos, cache_dtype, progress=_ppl_progress(bar, task))


def score_domains(net, windows: dict, use_bos: bool, dev: str, cache_dtype: Optional[str], cache_path: str):
    """({domain: PerplexityResult}, {domain: tokens per second}) on the path the arguments choose."""
    if cache_dtype is None:
        score = _score_forward
    else:
        score = _score_simulated if cache_path == "simulate" else _score_decoded
    results, speed = {}, {}
    with progress_bar("perplexity") as bar:
        for name, w in windows.items():
            t = time.time()
            results[name] = score(bar, name, net, w, use_bos, dev, cache_dtype)
            speed[name] = results[name].tokens / (time.time() - t)
    return results, speed


def results_table(
    ckpt, cache_dtype: Optional[str], seq_len: int, bos_id: Optional[int], results: dict, speed: dict
) -> Table:
    table = Table(
        title=f"perplexity of {ckpt.config.name or ckpt.path}"
        + (f" through a {cache_dtype} KV cache" if cache_dtype else "")
    )
    for c in ("data", "windows", "tokens", "seq_len", "BOS", "NLL", "perplexity", "tok/s"):
        table.add_column(c)
    for name, res in results.items():
        table.add_row(
            name,
            str(res.windows),
            str(res.tokens),
            str(seq_len),
            f"yes (id {bos_id})" if bos_id is not None else "no",
            f"{res.nll:.4f}",
            f"{res.perplexity:.4f}",
            f"{speed[name]:.0f}",
        )
    return table


def write_json(
    json_out: Path,
    ckpt,
    dtype: str,
    cache_dtype: Optional[str],
    bos_id: Optional[int],
    cache_path: str,
    sets: dict,
    data: Optional[list[Path]],
    results: dict,
) -> None:
    from ..save import write_text_atomic

    doc = {
        "model": ckpt.path,
        "dtype": dtype,
        "cache_dtype": cache_dtype,
        "bos_id": bos_id,
        "cache_path": cache_path if cache_dtype else None,
        "domains": {name: {"data": [str(f) for f in sets[name]], **res.to_dict()} for name, res in results.items()},
    }
    if data:  # one text: its numbers also at the top level, as before the domains
        doc.update({"data": [str(f) for f in data], **next(iter(results.values())).to_dict()})
    write_text_atomic(json_out, json.dumps(doc, indent=2) + "\n")
