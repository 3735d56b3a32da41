"""Write a model as a Hugging Face folder: config.json + model.safetensors + tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..load.hf import config_to_hf


def save_hf_folder(folder: str | Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor],
                   tokenizer=None, extra_config: dict | None = None,
                   dtype: torch.dtype = torch.float32) -> None:
    """`folder` must exist (callers write into an `atomic_output_dir`)."""
    folder = Path(folder)
    hf = config_to_hf(cfg)
    hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    hf.update(extra_config or {})
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    # Sorted keys + contiguous tensors: same inputs give the same bytes.
    out = {k: tensors[k].detach().to(dtype).contiguous() for k in sorted(tensors)}
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(folder)
