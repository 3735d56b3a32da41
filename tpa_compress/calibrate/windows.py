"""The calibration text as token windows: the recipe's `calibration` section, cut once.

The last `heldout_tokens` worth of windows are held out: they never fit anything and
only measure each factorization's error (convert's `heldout_rel_error`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import default_calib_files, read_texts
from ..errors import TPAError

HELDOUT_ROWS = 2048  # held-out rows kept per layer for the error measurement


def _files(spec: list[str], default) -> list:
    return default() if spec in (["default"], [], None) else [Path(f) for f in spec]


def _windows(tok, files, tokens: int, seq_len: int, skip_tokens: int = 0, source=""):
    """Calibration windows (BOS-led when the tokenizer adds BOS), alternating between the
    files (the default mix: both domains), so the token budget draws evenly from each;
    `skip_tokens` are skipped at the start of each file."""
    from ..evaluate.perplexity import interleaved_windows

    streams = [tok.encode(read_texts([f]), add_bos=False)[skip_tokens:] for f in files]
    bos = tok.bos_id if tok.add_bos else None
    n = max(1, tokens // seq_len)
    return interleaved_windows(streams, seq_len, bos, n, source=source)


def calibration_windows(tok, recipe, path: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(fit windows, held-out windows) of the recipe's calibration text; `path` names the
    model in the error when there is no tokenizer."""
    if tok is None:
        raise TPAError(f"{path}: calibration needs a tokenizer (put tokenizer.json beside the model)")
    cal = recipe.calibration
    files = _files(cal.files, default_calib_files)
    src = ", ".join(map(str, files))
    win = _windows(tok, files, cal.tokens + cal.heldout_tokens, cal.seq_len, source=src)
    n_held = max(1, cal.heldout_tokens // cal.seq_len) if cal.heldout_tokens else 0
    if win.shape[0] <= n_held:
        raise TPAError(f"{src}: too little text for {cal.tokens} calibration + {cal.heldout_tokens} held-out tokens")
    return win[: win.shape[0] - n_held], win[win.shape[0] - n_held :]
