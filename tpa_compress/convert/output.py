"""The output folder of a conversion: weights, config with the `tpa` section, recipe,
report (JSON and Markdown), written atomically (save/atomic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ..layout import LayerLayout, cache_bytes, layouts_to_config, original_layouts

REPORT_CONTEXTS = (4096, 32768)


def kv_totals(cfg, recipe, layouts: list[LayerLayout]) -> dict:
    """Cache bytes of the original (bf16: the ratio includes what the cache format saves)
    and the converted model at the report's contexts and the budget's."""
    orig = original_layouts(cfg)
    totals = {}
    for ctx in sorted(set(REPORT_CONTEXTS) | ({recipe.budget.context} if recipe.budget else set())):
        a, b = cache_bytes(orig, ctx), cache_bytes(layouts, ctx)
        totals[str(ctx)] = {"original_bytes": a, "converted_bytes": b, "ratio": b / a}
    return totals


def replaced_names(layouts: list[LayerLayout]) -> set[str]:
    return {
        f"model.layers.{i}.self_attn.{t}_proj.weight"
        for i, lay in enumerate(layouts)
        for t, c in (("k", lay.k), ("v", lay.v))
        if c.kind != "full"
    }


def output_tensors(ckpt, new_tensors: dict, layouts: list[LayerLayout], model=None) -> dict[str, torch.Tensor]:
    """The original tensors minus replaced K/V weights, plus the factors.

    With `model` (float32, built from `ckpt`), its parameters are used as they are (they
    equal `ckpt.weights.get(name)`): no second dequantised copy of the model is made.
    Tensors may be on the model's device; the writer moves them one at a time."""
    replaced = replaced_names(layouts)
    have = {}
    if model is not None:
        from ..models.transformer import _canonical

        have = {_canonical(n): p.detach() for n, p in model.named_parameters() if p.dtype == torch.float32}
    out = {n: have[n] if n in have else ckpt.weights.get(n) for n in ckpt.weights.names() if n not in replaced}
    out.update(new_tensors)
    return out


def output_config(ckpt, recipe, layouts: list[LayerLayout]) -> dict:
    """The config.json keys a converted folder adds: its layouts and where it came from."""
    return {
        "tpa": {**layouts_to_config(layouts), "cache_dtype": recipe.cache_dtype},
        "tpa_source": {
            "model": str(Path(ckpt.path).resolve()) if ckpt.path else None,
            "format": ckpt.format,
            "recipe": recipe.source,
        },
    }


def write_output(out_dir: Path, ckpt, recipe, result, new_tensors: dict, force: bool, model=None) -> None:
    from ..save import atomic_output_dir, save_hf_folder

    with atomic_output_dir(out_dir, force=force, protect=[ckpt.path]) as tmp:
        save_hf_folder(
            tmp,
            ckpt.config,
            output_tensors(ckpt, new_tensors, result.layouts, model),
            ckpt.tokenizer,
            output_config(ckpt, recipe, result.layouts),
            getattr(torch, recipe.weight_dtype),
        )
        write_reports(tmp, out_dir, ckpt, recipe, result)


def write_reports(tmp: Path, out_dir: Path, ckpt, recipe, result) -> None:
    """recipe.yaml, report.json and report.md into the (temporary) output folder `tmp`."""
    from ..report.convert_report import render_markdown

    report = report_dict(ckpt, recipe, result)
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.raw, sort_keys=False))
    (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (tmp / "report.md").write_text(render_markdown(report, str(out_dir)))


def report_dict(ckpt, recipe, result) -> dict:
    return {
        "model": ckpt.config.name or ckpt.path,
        "recipe": recipe.source,
        "seed": recipe.seed,
        "cache_dtype": recipe.cache_dtype,
        "weight_dtype": recipe.weight_dtype,
        "layers": [vars(r) for r in result.layers],
        "kv_cache": result.totals,
        "perplexity": result.perplexity,
        "seconds": round(result.seconds, 1),
        "notes": result.notes,
        **({"heal": result.heal} if result.heal else {}),
    }


def default_out_dir(model_name: str, recipe_path: str) -> Path:
    stem = Path(recipe_path).stem
    base = Path(model_name).stem if model_name else "gemma3-270m"
    return Path("out") / f"{base}-{stem}"
