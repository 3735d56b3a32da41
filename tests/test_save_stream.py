"""The streaming safetensors writer (save/hf.py) writes the bytes safetensors writes."""

import torch
from safetensors.torch import load_file, save_file

from tpa_compress.save.hf import write_safetensors


def test_same_bytes_as_save_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.10.w": torch.randn(5, 3, generator=g),
        "model.layers.2.w": torch.randn(7, generator=g),
        "b16": torch.randn(4, 2, generator=g).bfloat16(),
        "h": torch.randn(3, generator=g).half(),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
        "ids": torch.arange(5),
        "é": torch.ones(1),
        "t": torch.randn(4, 6, generator=g).T,
    }  # non-contiguous
    ref = {k: v.contiguous() for k, v in tensors.items()}
    save_file(ref, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    write_safetensors(tmp_path / "ours.safetensors", tensors, metadata={"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()

    # with a cast, as save_hf_folder uses it
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
        str(tmp_path / "r2"),
        metadata={"format": "pt"},
    )
    write_safetensors(tmp_path / "o2", tensors, torch.bfloat16, metadata={"format": "pt"})
    assert (tmp_path / "o2").read_bytes() == (tmp_path / "r2").read_bytes()
    back = load_file(str(tmp_path / "o2"))
    assert torch.equal(back["t"], tensors["t"].bfloat16())
