"""Safetensors written shard by shard, as tensors arrive (the streaming converter's writer).

Tensors are cast to the output dtype as they are added and buffered until the next one
would take the buffer past `max_bytes`; then the buffer is written as one shard and
dropped, so the writer holds at most one shard (a tensor larger than the limit is a
shard of its own). `close` names the files the way Hugging Face does:
`model.safetensors` when everything fit in one shard (byte-identical to
`save_hf_folder`'s file for the same tensors: write_safetensors orders a file's tensors
itself), else `model-0000k-of-0000n.safetensors` with `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .hf import write_safetensors

SHARD_BYTES = 2 * 2**30  # default shard size: a 12B model in bf16 is about a dozen shards


class ShardWriter:
    def __init__(self, folder: str | Path, dtype: torch.dtype, max_bytes: int = SHARD_BYTES):
        self.folder, self.dtype, self.max_bytes = Path(folder), dtype, max_bytes
        self.buf: dict[str, torch.Tensor] = {}
        self.nbytes = 0
        self.shards: list[tuple[Path, list[str]]] = []  # written so far, under temporary names
        self.total = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        t = t.detach().to("cpu", self.dtype)
        n = t.numel() * t.element_size()
        if self.buf and self.nbytes + n > self.max_bytes:
            self.flush()
        self.buf[name] = t
        self.nbytes += n
        self.total += n

    def flush(self) -> None:
        if not self.buf:
            return
        path = self.folder / f".shard-{len(self.shards) + 1:05d}.safetensors"
        write_safetensors(path, self.buf, self.dtype, metadata={"format": "pt"})
        self.shards.append((path, sorted(self.buf)))
        self.buf, self.nbytes = {}, 0

    def close(self) -> list[Path]:
        """Write what is buffered and give the shards their final names; returns the files."""
        self.flush()
        if len(self.shards) == 1:
            final = self.folder / "model.safetensors"
            self.shards[0][0].rename(final)
            return [final]
        n, files, weight_map = len(self.shards), [], {}
        for k, (path, names) in enumerate(self.shards, 1):
            final = self.folder / f"model-{k:05d}-of-{n:05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return files
