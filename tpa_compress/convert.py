"""The conversion pipeline: load -> calibrate -> pick ranks -> factorize -> measure -> write.

For each layer the recipe's rules pick a method per target (K, V); a rank step
(fixed / energy / budget) turns spectra into ranks; the method returns factors and a
Component; the factorized projections are installed in the model (so `--eval` runs
the converted model exactly as it will be reloaded) and the output folder is
written atomically.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .calibrate import collect_stats
from .data import default_calib_files, eval_sets, read_texts
from .errors import TPAError
from .heal import heal as heal_stage, prepare as prepare_heal
from .layout import (K_SCALE_BYTES, Component, LayerLayout, cache_bytes, k_scale_for, layouts_to_config,
                     original_layouts, shrink_check)
from .methods import LayerInputs, carry_bias, get_method
from .methods.layers import effective_weight, make_proj, set_k_scale
from .ranks import Candidate, budget_ranks, energy_rank
from .recipe import Recipe, validate_for_model
from .runtime import fast_path_supports

REPORT_CONTEXTS = (4096, 32768)
# A rank budget is a fraction of the bf16 original's cache, spent as if every entry were bf16:
# the ranks do not depend on the cache format, which then shrinks every entry by its own
# factor (so `balanced` with an int4 cache keeps balanced's ranks; docs/recipes.md).
BUDGET_DTYPE = "bf16"


@dataclass
class LayerReport:
    layer: int
    type: str
    k: dict
    v: dict
    bytes_per_token: float


@dataclass
class ConversionResult:
    layouts: list[LayerLayout]
    layers: list[LayerReport]
    totals: dict
    perplexity: dict = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the log noted, kept in the report
    heal: dict = field(default_factory=dict)  # the healing stage's report (heal.py), when the recipe heals


def cpu_threads(spec: str | int = "auto") -> int:
    """Intra-op CPU threads for conversion: a positive integer, or "auto": every core.

    Measured on the 2-core machine (Gemma 3 270M, one 512-token forward): idle, 2 threads
    0.89 s vs 1 thread 1.42 s; with one core busy with another job, 1.54-1.64 s vs 1.43 s.
    That small penalty holds because tpa_compress sets OMP_WAIT_POLICY=PASSIVE before
    torch loads; with busy-waiting OpenMP threads the same loaded case took 9 s, which is
    why `--threads 1` exists for heavily shared machines. Results do not depend on the
    count: the forward pass and matmuls give the same bits on any count, and the methods'
    eigh / SVD run on one thread (`fixed_threads`), so converted files are byte-identical.
    """
    import os
    if spec == "auto":
        return os.cpu_count() or 1
    try:
        n = int(spec)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TPAError(f"--threads {spec!r} is not valid; valid: auto or a positive integer")
    return n


@contextlib.contextmanager
def fixed_threads(n: int = 1):
    """Run the methods' linear algebra on a fixed thread count: LAPACK's eigh gives
    last-bit different vectors on 1 and 2 threads (matmuls and the forward pass do not),
    and the output bytes must not depend on --threads or the machine's load."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _files(spec: list[str], default) -> list:
    return default() if spec in (["default"], [], None) else [Path(f) for f in spec]


def _windows(tok, files, tokens: int, seq_len: int, skip_tokens: int = 0, source=""):
    """Calibration windows (BOS-led when the tokenizer adds BOS), alternating between the
    files (the default mix: both domains), so the token budget draws evenly from each;
    `skip_tokens` are skipped at the start of each file."""
    from .evaluate.perplexity import interleaved_windows
    streams = [tok.encode(read_texts([f]), add_bos=False)[skip_tokens:] for f in files]
    bos = tok.bos_id if tok.add_bos else None
    n = max(1, tokens // seq_len)
    return interleaved_windows(streams, seq_len, bos, n, source=source)


def refuse_converted(ckpt) -> None:
    """A converted folder as input: its factorized layers have no original K/V weight to
    fit, so conversion starts from the original model."""
    from .layout import layouts_from_config
    tpa = (ckpt.extra or {}).get("tpa")
    if not tpa:
        return
    done = [i for i, lay in enumerate(layouts_from_config(tpa)) if lay.k.kind != "full" or lay.v.kind != "full"]
    if done:
        src = (ckpt.extra.get("tpa_source") or {}).get("model")
        raise TPAError(f"{ckpt.path}: already converted (layers {', '.join(map(str, done))} factorized); "
                       f"convert the original model{f' ({src})' if src else ''} instead")


def layer_inputs(model, i: int, stats) -> LayerInputs:
    """One layer's weights as float64 on the CPU (methods run there, whatever the model's device)."""
    a = model.layers[i].self_attn
    w = lambda m: m.weight.detach().to("cpu", torch.float64)  # noqa: E731
    b = lambda m: None if m.bias is None else m.bias.detach().to("cpu", torch.float64)  # noqa: E731
    gain = lambda n: n.gain().detach().to("cpu", torch.float64) if a.qk_norm else None  # noqa: E731
    return LayerInputs(model.cfg, i, w(a.q_proj), w(a.k_proj), w(a.v_proj), w(a.o_proj), stats,
                       b_k=b(a.k_proj), b_v=b(a.v_proj), k_norm_gain=gain(getattr(a, "k_norm", None)),
                       q_norm_gain=gain(getattr(a, "q_norm", None)))


def activation_errors(model_cfg, inp: LayerInputs, proj: torch.nn.Module, target: str, x: torch.Tensor) -> float:
    """Relative error on held-out attention inputs x: K pre-norm; V as o_proj sees it."""
    with torch.no_grad():
        w = inp.weight(target).to(x.dtype)
        ref = x @ w.T
        if inp.bias(target) is not None:
            ref = ref + inp.bias(target).to(x.dtype)
        got = proj.factorized(x).to(x.dtype)  # held-out rows are not positions: no sink
        err = got - ref
        if target == "v":
            c = model_cfg
            g = c.num_heads // c.num_kv_heads
            # expand each KV head to its query heads, then through o_proj
            expand = lambda t: t.view(-1, c.num_kv_heads, c.head_dim).repeat_interleave(g, 1).flatten(1)  # noqa: E731
            wo = inp.w_o.to(x.dtype)
            ref, err = expand(ref) @ wo.T, expand(err) @ wo.T
        return float(err.norm() / ref.norm().clamp_min(1e-30))


def convert(ckpt, model, recipe: Recipe, progress=None, eval_model=True, log=print) -> tuple[ConversionResult, dict]:
    """Convert `model` in place; returns (result, new tensors by canonical name)."""
    t0 = time.time()
    cfg = model.cfg
    refuse_converted(ckpt)
    validate_for_model(recipe, cfg)
    torch.manual_seed(recipe.seed)
    tok = ckpt.tokenizer
    rules = [recipe.rules_for(cfg, i) for i in range(cfg.num_layers)]
    methods = {(i, t): get_method(r.method)(r.params, seed=recipe.seed + 1000 * i + (t == "v"))
               for i, rs in enumerate(rules) for t, r in rs.items()}
    needs_stats = any(m.needs_calibration for m in methods.values()) or any(
        r.rank.kind in ("energy", "budget") for rs in rules for r in rs.values())
    converted = sorted({i for i, _ in methods})  # only these layers are measured
    device = next(model.parameters()).device
    heal_data = prepare_heal(model, tok, recipe, converted)  # checks the heal text before any work

    stats = heldout = None
    ppl_before = None
    if needs_stats or methods:
        if tok is None:
            raise TPAError(f"{ckpt.path}: calibration needs a tokenizer (put tokenizer.json beside the model)")
        cal = recipe.calibration
        files = _files(cal.files, default_calib_files)
        src = ", ".join(map(str, files))
        win = _windows(tok, files, cal.tokens + cal.heldout_tokens, cal.seq_len, source=src)
        n_held = max(1, cal.heldout_tokens // cal.seq_len) if cal.heldout_tokens else 0
        if win.shape[0] <= n_held:
            raise TPAError(f"{src}: too little text for {cal.tokens} calibration + "
                           f"{cal.heldout_tokens} held-out tokens")
        fit_w, held_w = win[: win.shape[0] - n_held], win[win.shape[0] - n_held:]
        if needs_stats:
            log(f"calibrating on {fit_w.numel()} tokens ({fit_w.shape[0]} x {cal.seq_len}), "
                f"{held_w.numel()} held-out")
            stats = collect_stats(model, fit_w, progress=progress and progress("calibrate"), layers=converted,
                                  skip=recipe.sink_tokens,
                                  windows_kept=max((m.windows_kept for m in methods.values()), default=0))
        else:  # nothing is fitted (identity): the held-out rows only measure the errors
            log(f"no method fits statistics; {held_w.numel()} held-out tokens measure the errors")
        if n_held:  # held-out rows only serve the error measurement: no moments
            heldout = collect_stats(model, held_w, sample_rows=2048, layers=converted, moments=False,
                                    skip=recipe.sink_tokens)
    if eval_model:
        ppl_before = _eval(model, tok, recipe, progress, "eval before")

    inputs = {i: layer_inputs(model, i, stats[i] if stats else None) for i in converted}
    # -- ranks ----------------------------------------------------------------
    ranks: dict[tuple[int, str], int] = {}
    cands = []
    for (i, t), m in methods.items():
        spec = rules[i][t].rank
        if spec.kind == "fixed":
            ranks[(i, t)] = int(spec.value)
        elif spec.kind == "auto":
            ranks[(i, t)] = m.max_rank(cfg)
        else:
            with fixed_threads():
                spectrum = m.spectrum(inputs[i], t)
            if spectrum is None:
                raise TPAError(f"{recipe.source}: layer {i} {t}: method {m.name} has no spectrum, so "
                               f"rank '{spec.kind}' cannot apply; give a fixed rank")
            # the method's own step and the recipe's rank_limits: multiples of both, capped
            lim = recipe.rank_limits
            step = math.lcm(m.rank_step(cfg), lim.multiple)
            hi = min(len(spectrum), m.max_rank(cfg), lim.cap(t) or len(spectrum)) // step * step
            if hi < step:
                raise TPAError(f"{recipe.source}: layer {i} {t}: rank_limits ({lim.describe(t)}) leave "
                               f"{m.name} no rank on this model (its ranks: multiples of "
                               f"{m.rank_step(cfg)} up to {min(len(spectrum), m.max_rank(cfg))})")
            if spec.kind == "energy":
                ranks[(i, t)] = min(energy_rank(spectrum, spec.value, step), hi)
            else:
                lay = LayerLayout(Component("latent", cfg.num_kv_heads, cfg.head_dim, 1),
                                  Component("latent", cfg.num_kv_heads, cfg.head_dim, 1),
                                  cfg.window(i), BUDGET_DTYPE)
                held = lay.tokens_held(recipe.budget.context)
                per = lay.bytes_per_token() / 2 * held
                cands.append(Candidate((i, t), spectrum, per, step, hi, step))
    if cands:
        left = _budget_left(cfg, recipe, ranks, {c.key for c in cands})
        chosen = budget_ranks(cands, left)
        if recipe.budget.by == "kl":
            log(f"budget by kl: measuring {len(cands)} components' effect on the logits")
            chosen = budget_ranks(cands, left, _kl_weights(model, recipe, cands, chosen, methods, inputs, fit_w))
        ranks.update(chosen)

    # A chosen (energy / budget) rank at the method's full width caches no fewer values than
    # the original and decodes slower (a rebuild; K also a norm factor): keep it exact.
    full_width = {key: f"{methods[key].name} {rules[key[0]][key[1]].rank.kind} chose the full width {r}"
                  for key, r in ranks.items()
                  if rules[key[0]][key[1]].rank.kind in ("energy", "budget") and methods[key].name != "identity"
                  and r >= methods[key].max_rank(cfg)}
    for key in full_width:
        del methods[key]

    # -- factorize --------------------------------------------------------------
    new_tensors: dict[str, torch.Tensor] = {}
    reports = []
    layouts = []
    items = sorted(methods.items())
    bar = progress and progress("factorize")
    done = 0
    wdtype = getattr(torch, recipe.weight_dtype)
    off_kernel = []  # latent K + V layers whose ranks the Hopper decode kernel does not take
    for i in range(cfg.num_layers):
        attn = model.layers[i].self_attn
        comps, info = {}, {}
        # The first sink_tokens positions keep the exact projection (layout.py says why);
        # not needed where every factorized part is the exact identity.
        sink = recipe.sink_tokens if any((i, t) in methods and methods[(i, t)].name != "identity"
                                         for t in ("k", "v")) else 0
        for t in ("k", "v"):
            full = Component("full", cfg.num_kv_heads, cfg.head_dim)
            if (i, t) not in methods:
                comps[t], info[t] = full, {"method": "keep", "rank": None}
                if (i, t) in full_width:
                    info[t]["note"] = full_width[(i, t)] + "; kept exact"
                continue
            m = methods[(i, t)]
            with fixed_threads():
                fz = carry_bias(m.factorize(inputs[i], t, ranks[(i, t)]), inputs[i], t)
            why = shrink_check(fz.component)
            if why and m.name != "identity":
                log(f"warning: layer {i} {t}: {why}")
            proj = make_proj(cfg.hidden_size, fz.component, sink, cfg.attention_bias)
            state = {k: v.to(torch.float32) for k, v in fz.tensors.items()}
            if sink:
                state["sink.weight"] = inputs[i].weight(t).to(torch.float32)
                if cfg.attention_bias:
                    state["sink.bias"] = inputs[i].bias(t).to(torch.float32)
            try:
                proj.load_state_dict(state)
            except RuntimeError as e:
                raise TPAError(f"method {m.name} produced tensors that do not fit {fz.component}: {e}") from e
            proj = proj.to(wdtype).to(torch.float32)  # measure what will be saved
            for k, v in proj.state_dict().items():
                new_tensors[f"model.layers.{i}.self_attn.{t}_proj.{k}"] = v
            comps[t] = fz.component
            err = (activation_errors(cfg, inputs[i], proj, t, heldout[i].sample)
                   if heldout is not None else None)
            winfo = _weight_error(inputs[i], proj, t)
            setattr(attn, f"{t}_proj", proj.to(device))
            # The method's own diagnostics first; convert's held-out measurement (separate
            # windows, V through o_proj) is the one the report compares, so it wins.
            info[t] = {**fz.info, "method": m.name, "kind": fz.component.kind,
                       "rank": fz.component.rank, "heldout_rel_error": err, "weight_rel_error": winfo}
            done += 1
            if bar:
                bar(done, len(items))
        # the Hopper kernel serves latent K + V of head dim 256 over a bf16 cache only
        if comps["k"].kind == comps["v"].kind == "latent" and cfg.head_dim == 256 and recipe.cache_dtype == "bf16" \
                and not fast_path_supports(
                cfg.head_dim, cfg.num_heads // cfg.num_kv_heads, comps["k"].rank, comps["v"].rank, "bf16"):
            off_kernel.append(f"{i} ({comps['k'].rank}/{comps['v'].rank})")
        lay = LayerLayout(comps["k"], comps["v"], cfg.window(i), recipe.cache_dtype, sink,
                          k_scale=recipe.k_scale and k_scale_for(cfg, comps["k"]))
        set_k_scale(attn.k_proj, lay.k_scale)
        layouts.append(lay)
        reports.append(LayerReport(i, cfg.layer_types[i], info["k"], info["v"], lay.bytes_per_token()))

    notes = [f"layer {i} {t}: {why}; kept exact" for (i, t), why in sorted(full_width.items())]
    if off_kernel:
        notes.append(f"layer (K/V rank) {', '.join(off_kernel)}: not ranks the Hopper decode kernel takes "
                     "(multiples of 16; K at most 128, V 128 or as far as its shared memory holds: K 112 "
                     "with V 160, K 96 with V 192); on the GPU these decode in Triton, slower at long "
                     "context. rank_limits: {multiple: 16, max: {k: 112, v: 160}} chooses ranks it takes "
                     "(docs/methods.md)")
        log("note: " + notes[-1])
    healed = heal_data and heal_stage(model, heal_data, recipe.weight_dtype, progress, log, evaluate=(
        (lambda: _eval(model, tok, recipe, progress, "eval before heal")) if eval_model else None))
    if healed:
        new_tensors.update(healed.tensors)
    round_to_saved(model, wdtype)
    # the converted model as it will run: through the recipe's cache when that cache is lossy
    from .cache_formats import parse_spec
    lossy = recipe.cache_dtype if parse_spec(recipe.cache_dtype).format.lossy else None
    ppl_after = _eval(model, tok, recipe, progress, "eval after", cache=lossy) if eval_model else None
    orig = original_layouts(cfg)  # the bf16 original: the ratio includes what the cache format saves
    totals = {}
    for ctx in sorted(set(REPORT_CONTEXTS) | ({recipe.budget.context} if recipe.budget else set())):
        a, b = cache_bytes(orig, ctx), cache_bytes(layouts, ctx)
        totals[str(ctx)] = {"original_bytes": a, "converted_bytes": b, "ratio": b / a}
    ppl = {}  # per evaluated text (each bundled domain, or the recipe's files as one)
    for name, before in (ppl_before or {}).items():
        after = ppl_after[name]
        ppl[name] = {"before": before, "after": after,
                     "delta_pct": 100 * (after["perplexity"] / before["perplexity"] - 1)}
    return ConversionResult(layouts, reports, totals, ppl, time.time() - t0, notes,
                            healed.report if healed else {}), new_tensors


def round_to_saved(model, dtype: torch.dtype) -> None:
    """Round the model's float32 weights to the dtype they are saved in (`weight_dtype`),
    keeping float32 storage: the after-eval then scores the model as saved (what loading
    the folder gives), so the report's change includes the cost of saving in that dtype.
    Idempotent, so the folder written from these weights holds the same bytes."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype == torch.float32:
                p.copy_(p.to(dtype))


def _weight_error(inp: LayerInputs, proj, t: str) -> float | None:
    """||W_eff - W|| / ||W|| for projections that are linear in x (all but contextual)."""
    w_eff = effective_weight(proj, inp.cfg.hidden_size)
    if w_eff is None:
        return None
    w = inp.weight(t)
    return float((w_eff.double() - w).norm() / w.norm())


def _eval(model, tok, recipe: Recipe, progress, label: str, cache: str | None = None) -> dict[str, dict]:
    """Perplexity per evaluated text: each bundled domain for `files: [default]`, else the
    recipe's files as one text; `max_windows` applies to each. `cache`: a lossy cache format
    whose decode-time reads are simulated (evaluate/simulate.py)."""
    from .evaluate.perplexity import make_windows, perplexity
    ev = recipe.eval
    sets = eval_sets(None if ev.files in (["default"], [], None) else ev.files)
    out = {}
    for name, files in sets.items():
        ids = tok.encode(read_texts(files), add_bos=False)
        w = make_windows(ids, ev.seq_len, tok.bos_id if tok.add_bos else None, ev.max_windows,
                         source=", ".join(map(str, files)))
        bar = progress and progress(f"{label} ({name})")
        res = perplexity(model, w, tok.add_bos, progress=bar and (lambda i, n, p, bar=bar: bar(i, n)),
                         device=next(model.parameters()).device, cache=cache)
        out[name] = res.to_dict()
    return out


def output_tensors(ckpt, new_tensors: dict, layouts: list[LayerLayout], model=None) -> dict[str, torch.Tensor]:
    """The original tensors minus replaced K/V weights, plus the factors.

    With `model` (float32, built from `ckpt`), its parameters are used as they are (they
    equal `ckpt.weights.get(name)`): no second dequantised copy of the model is made.
    Tensors may be on the model's device; the writer moves them one at a time."""
    replaced = {f"model.layers.{i}.self_attn.{t}_proj.weight"
                for i, lay in enumerate(layouts) for t, c in (("k", lay.k), ("v", lay.v)) if c.kind != "full"}
    have = {}
    if model is not None:
        from .models.transformer import _canonical
        have = {_canonical(n): p.detach() for n, p in model.named_parameters() if p.dtype == torch.float32}
    out = {n: have[n] if n in have else ckpt.weights.get(n) for n in ckpt.weights.names() if n not in replaced}
    out.update(new_tensors)
    return out


def write_output(out_dir: Path, ckpt, recipe: Recipe, result: ConversionResult, new_tensors: dict,
                 force: bool, model=None) -> None:
    from .report.convert_report import render_markdown
    from .save import atomic_output_dir, save_hf_folder

    extra = {"tpa": {**layouts_to_config(result.layouts), "cache_dtype": recipe.cache_dtype},
             "tpa_source": {"model": str(Path(ckpt.path).resolve()) if ckpt.path else None,
                            "format": ckpt.format, "recipe": recipe.source}}
    report = report_dict(ckpt, recipe, result)
    with atomic_output_dir(out_dir, force=force, protect=[ckpt.path]) as tmp:
        save_hf_folder(tmp, ckpt.config, output_tensors(ckpt, new_tensors, result.layouts, model),
                       ckpt.tokenizer, extra, getattr(torch, recipe.weight_dtype))
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.raw, sort_keys=False))
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report, str(out_dir)))


def report_dict(ckpt, recipe: Recipe, result: ConversionResult) -> dict:
    return {
        "model": ckpt.config.name or ckpt.path, "recipe": recipe.source, "seed": recipe.seed,
        "cache_dtype": recipe.cache_dtype, "weight_dtype": recipe.weight_dtype,
        "layers": [vars(r) for r in result.layers], "kv_cache": result.totals,
        "perplexity": result.perplexity, "seconds": round(result.seconds, 1), "notes": result.notes,
        **({"heal": result.heal} if result.heal else {}),
    }


def default_out_dir(model_name: str, recipe_path: str) -> Path:
    stem = Path(recipe_path).stem
    base = Path(model_name).stem if model_name else "gemma3-270m"
    return Path("out") / f"{base}-{stem}"


KL_WINDOWS = 4  # calibration windows the `by: kl` budget measures each component on


def _kl_weights(model, recipe: Recipe, cands, chosen: dict, methods: dict, inputs: dict, fit_w) -> dict:
    """ranks.kl weights: each budgeted component factorized alone at its error-budget rank."""
    from .ranks.kl import kl_weights
    probes, tails = {}, {}
    for c in cands:
        i, t = c.key
        m, r = methods[c.key], chosen[c.key]
        with fixed_threads():
            fz = m.factorize(inputs[i], t, r)
        proj = make_proj(model.cfg.hidden_size, fz.component, recipe.sink_tokens)
        state = {k: v.to(torch.float32) for k, v in fz.tensors.items()}
        if recipe.sink_tokens:
            state["sink.weight"] = inputs[i].weight(t).to(torch.float32)
        proj.load_state_dict(state)
        attn = model.layers[i].self_attn
        probes[c.key] = (attn, f"{t}_proj", proj.to(next(model.parameters()).device))
        s = c.spectrum.double().clamp_min(0)
        tails[c.key] = float(s[r:].sum() / s.sum().clamp_min(1e-300))
    return kl_weights(model, fit_w[:KL_WINDOWS], probes, tails)


def _budget_left(cfg, recipe: Recipe, ranks: dict, budgeted: set) -> float:
    """Bytes (priced in BUDGET_DTYPE) the budget leaves for `budgeted` components at the budget's context, after
    every other component: kept ones at full size, fixed/energy ones priced as latents
    of their rank (their real kind is known only after factorizing), and the QK-norm
    factors every latent K of a QK-norm model caches (layout.k_scale_for)."""
    ctx = recipe.budget.context
    total = recipe.budget.fraction * cache_bytes(original_layouts(cfg, BUDGET_DTYPE), ctx)
    for i in range(cfg.num_layers):
        for t in ("k", "v"):
            if t == "k" and cfg.qk_norm and recipe.k_scale and ((i, t) in budgeted or (i, t) in ranks):
                total -= K_SCALE_BYTES * cfg.num_kv_heads * LayerLayout.tokens_held_in(cfg.window(i), ctx)
            if (i, t) in budgeted:
                continue
            c = (Component("latent", cfg.num_kv_heads, cfg.head_dim, ranks[(i, t)]) if (i, t) in ranks
                 else Component("full", cfg.num_kv_heads, cfg.head_dim))
            lay = LayerLayout(c, c, cfg.window(i), BUDGET_DTYPE)
            total -= lay.bytes_per_token() / 2 * lay.tokens_held(ctx)
    return total
