"""report.md for a conversion, rendered from report.json's dict; it ends with what to do
next with the folder (its path filled in)."""

from __future__ import annotations

import shlex


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def _mib(b):
    return f"{b / 2**20:.2f} MiB"


def next_steps(folder: str) -> list[str]:
    """The commands a user runs next on the converted folder, and the transformers snippet
    (docs/compatibility.md)."""
    sh = shlex.quote(folder)
    return [
        "",
        "## Next steps",
        "",
        "```sh",
        f'tpa-compress generate {sh} --prompt "The capital of France is"   # our runtime: compressed KV cache',
        f"tpa-compress validate {sh}   # KL, top-1 and perplexity against the original, per domain",
        f"tpa-compress eval {sh}",
        "```",
        "",
        "In transformers (its own, uncompressed cache; docs/compatibility.md):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"tok = AutoTokenizer.from_pretrained({folder!r})",
        f"model = AutoModelForCausalLM.from_pretrained({folder!r}, trust_remote_code=True)",
        'ids = tok("The capital of France is", return_tensors="pt")',
        "print(tok.decode(model.generate(**ids, max_new_tokens=20, do_sample=False)[0]))",
        "```",
    ]


def render_markdown(r: dict, folder: str | None = None) -> str:
    lines = [
        f"# Conversion report: {r['model']}",
        "",
        f"Recipe `{r['recipe']}`, seed {r['seed']}, weights {r['weight_dtype']}, "
        f"cache {r['cache_dtype']}, {r['seconds']} s.",
        "",
        "## KV cache (batch 1)",
        "",
        "| context | original | converted | ratio |",
        "|---|---|---|---|",
    ]
    for ctx, t in r["kv_cache"].items():
        lines.append(f"| {ctx} | {_mib(t['original_bytes'])} | {_mib(t['converted_bytes'])} | {t['ratio']:.3f} |")
    p = r.get("perplexity") or {}
    if p:
        lines += [
            "",
            "## Perplexity (held-out evaluation text)",
            "",
            f"original: the input model in float32; converted: the model as saved, every weight "
            f"rounded to {r['weight_dtype']}, so the change includes the cost of saving in it.",
            "",
            "| data | original | converted | change | tokens | windows × seq_len |",
            "|---|---|---|---|---|---|",
        ]
        for name, d in p.items():
            b, a = d["before"], d["after"]
            lines.append(
                f"| {name} | {b['perplexity']:.4f} | {a['perplexity']:.4f} | {d['delta_pct']:+.2f}% | "
                f"{b['tokens']} | {b['windows']} × {b['seq_len']} |"
            )
    lines += [
        "",
        "## Per layer",
        "",
        "Errors are relative: held-out = on held-out calibration-split tokens (K pre-norm; "
        "V as o_proj sees it); weight = ‖W_eff − W‖ / ‖W‖.",
        "",
        "| layer | type | K method | K rank | K held-out err | V method | V rank | V held-out err | bytes/token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for L in r["layers"]:
        k, v = L["k"], L["v"]
        lines.append(
            f"| {L['layer']} | {L['type']} | {k['method']} | {k.get('rank') or 'full'} | "
            f"{_fmt(k.get('heldout_rel_error'))} | {v['method']} | {v.get('rank') or 'full'} | "
            f"{_fmt(v.get('heldout_rel_error'))} | {L['bytes_per_token']:.0f} |"
        )
    if r.get("heal"):
        lines += ["", "## Healing", "", *heal_lines(r["heal"], r.get("perplexity") or {}, bullet="- ")]
    if r.get("notes"):
        lines += ["", "## Notes", "", *(f"- {n}" for n in r["notes"])]
    if folder is not None:
        lines += next_steps(folder)
    return "\n".join(lines) + "\n"


def heal_lines(h: dict, ppl: dict, bullet: str = "") -> list[str]:
    """The healing stage's summary (heal.py's report), for report.md and the console."""
    if h.get("stopped_by") == "nothing to train":
        return [f"{bullet}healing: no factorized projection to train; skipped"]
    stop = (
        f"stopped by max_seconds after {h['steps']} of {h['steps_planned']} steps"
        if h["stopped_by"] == "max_seconds"
        else f"{h['steps']} steps"
    )
    out = [
        f"{bullet}healing on {h['device']}: {stop} of {h['batch']} x {h['seq_len']} tokens in "
        f"{h['seconds']:.1f} s (lr {h['lr']:g}, seed {h['seed']}; {h['trained_values']} values in "
        f"{h['trained_tensors']} factor tensors)",
        f"{bullet}training loss (KL to the original, per token) {h['loss_first']:.4f} -> {h['loss_last']:.4f}",
        f"{bullet}held-out KL ({h['heldout_windows']} windows of the heal text, never trained on) "
        f"{h['heldout_kl_before']:.4f} -> {h['heldout_kl_after']:.4f}",
    ]
    for name, before in (h.get("perplexity_before_heal") or {}).items():
        after = ((ppl.get(name) or {}).get("after") or {}).get("perplexity")
        if after is not None:
            b = before["perplexity"]
            out.append(
                f"{bullet}{name} perplexity of the converted model before -> after healing {b:.4f} -> "
                f"{after:.4f} ({100 * (after / b - 1):+.2f}%)"
            )
    return out
