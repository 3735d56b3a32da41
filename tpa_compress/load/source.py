"""`Checkpoint` and `WeightSource`: what every loader returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, weight_shapes
from ..errors import TPAError


class WeightSource:
    """Lazy, read-only mapping from canonical tensor names to tensors.

    `get` materialises one tensor (dequantised / converted) in the requested dtype;
    nothing is cached, so peak memory is what the caller keeps.
    """

    def __init__(
        self,
        names: list[str],
        getter: Callable[[str], torch.Tensor],
        path: str,
        release: Callable[[], None] | None = None,
    ):
        self._names = list(names)
        self._getter = getter
        self.path = path
        self._release = release

    def release(self) -> None:
        """Close what reading has opened (memory maps of safetensors shards): pages read
        so far stop counting as this process's memory. Later reads reopen them."""
        if self._release is not None:
            self._release()

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def get(self, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The tensor in `dtype`; None: as stored (bf16 safetensors stay bf16, GGUF dequantised)."""
        if name not in self._names:
            raise TPAError(f"{self.path}: tensor {name!r} is missing")
        try:
            t = self._getter(name)
        except TPAError:
            raise
        except Exception as e:  # truncated/corrupt data surfaces here
            raise TPAError(f"{self.path}: cannot read tensor {name!r} ({type(e).__name__}: {e})") from e
        return t if dtype is None else t.to(dtype)

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor], path: str = "<memory>") -> WeightSource:
        return cls(list(tensors), tensors.__getitem__, path)


@dataclass
class Checkpoint:
    config: ModelConfig
    weights: WeightSource
    tokenizer: Any = None  # TextTokenizer | None
    path: str = ""
    format: str = ""  # "gguf" | "hf" | "ckpt"
    extra: dict = field(default_factory=dict)  # e.g. the `tpa` section of a converted model

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {n: self.weights.get(n, dtype) for n in self.weights.names()}


def check_shapes(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], path: str, skip: set[str] = frozenset()) -> None:
    """Reject a file whose tensors do not fit its config (before any forward pass)."""
    for name, want in weight_shapes(cfg).items():
        if name in skip:
            continue
        if name not in shapes:
            raise TPAError(f"{path}: tensor {name!r} is missing for a {cfg.family} model")
        if tuple(shapes[name]) != tuple(want):
            raise TPAError(f"{path}: tensor {name!r} has shape {tuple(shapes[name])}, config implies {tuple(want)}")


def load_model(
    path: str | Path | None = None, variant: str | None = None, tokenizer: str | Path | None = None
) -> Checkpoint:
    """Open a model from a path in any supported format (None: the embedded default).
    `tokenizer`: a file or folder replacing the one found with the model (--tokenizer)."""
    from .default import DISPLAY_NAMES, resolve_model_path
    from .model_tokenizer import fit_tokenizer, read_tokenizer

    tok = read_tokenizer(tokenizer) if tokenizer is not None else None  # a bad path fails before the model
    display = DISPLAY_NAMES.get("gemma3-270m" if path in (None, "default") else str(path))
    ckpt = _load(resolve_model_path(None if path is None else str(path)), variant)
    if display:
        ckpt.config.name = display
    if tok is not None:
        ckpt.tokenizer = tok
    if ckpt.tokenizer is not None:
        fit_tokenizer(ckpt, None if tokenizer is None else f"--tokenizer {tokenizer}")
    return ckpt


def _load(path: str, variant: str | None) -> Checkpoint:
    p = Path(path)
    if not p.exists():
        raise TPAError(f"{p}: no such file or directory")
    if variant is not None and (p.is_dir() or p.suffix.lower() not in (".ckpt", ".pt", ".pth")):
        raise TPAError(
            f"--variant {variant}: applies only to a gemma_pytorch .ckpt; {p} carries its own config; drop --variant"
        )
    if p.is_dir():
        from .hf import load_hf_folder

        return load_hf_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".gguf":
        from .gguf import load_gguf

        return load_gguf(p)
    if suffix in (".ckpt", ".pt", ".pth"):
        from .ckpt import load_ckpt

        return load_ckpt(p, variant=variant)
    if suffix == ".safetensors":
        raise TPAError(f"{p}: pass the folder that holds config.json and this file, not the file")
    raise TPAError(
        f"{p}: unknown model format {suffix or '(no suffix)'}; valid: a .gguf file, "
        "a Hugging Face folder (config.json + safetensors), or a gemma_pytorch .ckpt"
    )
