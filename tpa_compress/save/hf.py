"""Write a model as a Hugging Face folder: config.json + model.safetensors + tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ModelConfig
from ..load.hf import config_to_hf
from ..models.family import Family

MODELING_FILE = Path(__file__).with_name("modeling_tpa.py")


def save_hf_folder(
    folder: str | Path,
    cfg: ModelConfig,
    tensors: dict[str, torch.Tensor],
    tokenizer=None,
    extra_config: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """`folder` must exist (callers write into an `atomic_output_dir`). A converted model
    (`extra_config` has a `tpa` section) also gets its modeling code (`converted_config`)."""
    save_hf_files(folder, cfg, tokenizer, extra_config, dtype)
    write_safetensors(Path(folder) / "model.safetensors", tensors, dtype, metadata={"format": "pt"})


def save_hf_files(
    folder: str | Path,
    cfg: ModelConfig,
    tokenizer=None,
    extra_config: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Everything of an HF folder but its weights: config.json, the modeling code of a
    converted model, the tokenizer (the streaming converter writes the weights in shards)."""
    folder = Path(folder)
    hf = config_to_hf(cfg)
    hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    hf.update(extra_config or {})
    if "tpa" in hf:
        hf.update(converted_config(cfg))
        (folder / MODELING_FILE.name).write_bytes(modeling_source(cfg.family_spec).encode("utf-8"))
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save(folder)


def converted_config(cfg: ModelConfig) -> dict:
    """config.json keys of a converted folder: its own model_type and the classes of the
    modeling code it carries (modeling_tpa.py), which transformers loads only with
    `trust_remote_code=True`; without it, transformers refuses the folder rather than
    build the original model with random K/V weights."""
    family = cfg.family_spec
    prefix, module = family.tpa_class_prefix, MODELING_FILE.stem
    return {
        "model_type": family.tpa_model_type,
        "architectures": [f"{prefix}ForCausalLM"],
        "auto_map": {"AutoConfig": f"{module}.{prefix}Config", "AutoModelForCausalLM": f"{module}.{prefix}ForCausalLM"},
    }


def modeling_source(family: Family) -> str:
    """The modeling_tpa.py of a converted `family` folder: the family-independent
    save/modeling_tpa.py, then the family's two classes, named as `converted_config` names
    them in auto_map. The config class is read from transformers when the folder is loaded
    (`hf_class`'s `config_class`), so a family declares nothing here beyond its registry
    entry. The same family always gives the same bytes."""
    prefix, base = family.tpa_class_prefix, family.hf_class
    return MODELING_FILE.read_text(encoding="utf-8") + (
        "\n\n"
        f"# The classes of this folder's family ({family.name}), written by tpa-compress from its registry entry.\n"
        "import transformers\n"
        "\n\n"
        f"class {prefix}Config(transformers.{base}.config_class):\n"
        f'    model_type = "{family.tpa_model_type}"\n'
        "\n\n"
        f"class {prefix}ForCausalLM(_TPAModel, transformers.{base}):\n"
        f"    config_class = {prefix}Config\n"
    )


# safetensors' dtype names, in the order of its Rust `Dtype` enum (the file lists larger
# dtypes first, then names in byte order; see `write_safetensors`).
_ST_DTYPES = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
}
_ST_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]


def write_safetensors(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `tensors` (cast to `dtype` when given) as one safetensors file, streaming:
    one tensor at a time is converted / moved to the CPU, so the writer never holds a
    second copy of the model (safetensors' `save_file` builds one in older versions and
    needs CPU tensors). The bytes equal `safetensors.torch.save_file`'s for the same input
    (tests/test_save_stream.py), so a fixed input still gives a fixed file."""

    def meta(name, t):
        dt = dtype or t.dtype
        if dt not in _ST_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {dt} cannot be written to safetensors here")
        return (
            _ST_DTYPES[dt],
            tuple(t.shape),
            t.numel()
            * (torch.finfo(dt).bits if dt.is_floating_point else torch.iinfo(dt).bits if dt != torch.bool else 8)
            // 8,
        )

    infos = {k: meta(k, t) for k, t in tensors.items()}
    order = sorted(infos, key=lambda k: (-_ST_ORDER.index(infos[k][0]), k.encode("utf-8")))
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for k in order:
        name, shape, nbytes = infos[k]
        header[k] = {"dtype": name, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for k in order:
            t = tensors[k].detach()
            t = t.to("cpu", dtype or t.dtype).contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
