"""report.md for a conversion, rendered from report.json's dict."""
from __future__ import annotations


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def _mib(b):
    return f"{b / 2**20:.2f} MiB"


def render_markdown(r: dict) -> str:
    lines = [f"# Conversion report: {r['model']}", "",
             f"Recipe `{r['recipe']}`, seed {r['seed']}, weights {r['weight_dtype']}, "
             f"cache {r['cache_dtype']}, {r['seconds']} s.", "", "## KV cache (batch 1)", "",
             "| context | original | converted | ratio |", "|---|---|---|---|"]
    for ctx, t in r["kv_cache"].items():
        lines.append(f"| {ctx} | {_mib(t['original_bytes'])} | {_mib(t['converted_bytes'])} | "
                     f"{t['ratio']:.3f} |")
    p = r.get("perplexity") or {}
    if p:
        lines += ["", "## Perplexity (held-out evaluation text)", "",
                  "| data | original | converted | change | tokens | windows × seq_len |",
                  "|---|---|---|---|---|---|"]
        for name, d in p.items():
            b, a = d["before"], d["after"]
            lines.append(f"| {name} | {b['perplexity']:.4f} | {a['perplexity']:.4f} | {d['delta_pct']:+.2f}% | "
                         f"{b['tokens']} | {b['windows']} × {b['seq_len']} |")
    lines += ["", "## Per layer", "",
              "Errors are relative: held-out = on held-out calibration-split tokens (K pre-norm; "
              "V as o_proj sees it); weight = ‖W_eff − W‖ / ‖W‖.", "",
              "| layer | type | K method | K rank | K held-out err | V method | V rank | V held-out err | bytes/token |",
              "|---|---|---|---|---|---|---|---|---|"]
    for L in r["layers"]:
        k, v = L["k"], L["v"]
        lines.append(f"| {L['layer']} | {L['type']} | {k['method']} | {k.get('rank') or 'full'} | "
                     f"{_fmt(k.get('heldout_rel_error'))} | {v['method']} | {v.get('rank') or 'full'} | "
                     f"{_fmt(v.get('heldout_rel_error'))} | {L['bytes_per_token']:.0f} |")
    if r.get("notes"):
        lines += ["", "## Notes", "", *(f"- {n}" for n in r["notes"])]
    return "\n".join(lines) + "\n"
