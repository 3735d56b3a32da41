"""convert's `--eval`: perplexity of the whole model before and after, on the recipe's
evaluation text. Needs the model whole, so a conversion that evaluates does not stream."""

from __future__ import annotations

import torch

from ..data import eval_sets, read_texts


def _eval(model, tok, recipe, progress, label: str, cache: str | None = None) -> dict[str, dict]:
    """Perplexity per evaluated text: each bundled domain for `files: [default]`, else the
    recipe's files as one text; `max_windows` applies to each. `cache`: a lossy cache format
    whose decode-time reads are simulated (evaluate/simulate.py)."""
    from ..evaluate.perplexity import make_windows, perplexity

    ev = recipe.eval
    sets = eval_sets(None if ev.files in (["default"], [], None) else ev.files)
    out = {}
    for name, files in sets.items():
        ids = tok.encode(read_texts(files), add_bos=False)
        w = make_windows(
            ids, ev.seq_len, tok.bos_id if tok.add_bos else None, ev.max_windows, source=", ".join(map(str, files))
        )
        bar = progress and progress(f"{label} ({name})")
        res = perplexity(
            model,
            w,
            tok.add_bos,
            progress=bar and (lambda i, n, p, bar=bar: bar(i, n)),
            device=next(model.parameters()).device,
            cache=cache,
        )
        out[name] = res.to_dict()
    return out


def eval_after(model, tok, recipe, progress) -> dict[str, dict]:
    """The converted model as it will run: through the recipe's cache when that cache is lossy."""
    from ..cache_formats import parse_spec

    lossy = recipe.cache_dtype if parse_spec(recipe.cache_dtype).format.lossy else None
    return _eval(model, tok, recipe, progress, "eval after", cache=lossy)


def perplexity_change(before: dict | None, after: dict | None) -> dict:
    """{text: {before, after, delta_pct}} per evaluated text."""
    ppl = {}
    for name, b in (before or {}).items():
        a = after[name]
        ppl[name] = {"before": b, "after": a, "delta_pct": 100 * (a["perplexity"] / b["perplexity"] - 1)}
    return ppl


def round_to_saved(model, dtype: torch.dtype) -> None:
    """Round the model's float32 weights to the dtype they are saved in (`weight_dtype`),
    keeping float32 storage: the after-eval then scores the model as saved (what loading
    the folder gives), so the report's change includes the cost of saving in that dtype.
    Idempotent, so the folder written from these weights holds the same bytes."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype == torch.float32:
                p.copy_(p.to(dtype))
