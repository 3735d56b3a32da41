"""Streaming conversion: memory that does not grow with the model.

The whole-model path (`convert`) builds the model, calibrates it, converts it in place
and writes it. This path never builds the model: it walks the layers in order, and for
each one reads its weights from the checkpoint (lazily: safetensors shards through
`safe_open`, GGUF tensors through their memory map, released after every layer), puts
that one layer on the device, and drops it before the next.

Sequential calibration: the calibration windows' hidden states are carried from layer to
layer on the device. For layer i: its statistics are collected from the carried states
(calibrate.StatsCollector, the code the whole-model pass runs), then layer i's original
forward turns them into layer i+1's input, then layer i is factorized (on the CPU, as
always) and its tensors go to the output writer. The carried states are the *original*
model's: each layer is fitted to the activations the original model feeds it, exactly
as in the whole-model path, which calibrates the unconverted model. So both paths write
the same tensors (tests/test_stream.py checks every method family).

A `budget` rank spreads bytes across layers, so it needs every layer's spectrum before
any layer's rank is known: such a recipe calibrates every layer first, writing each
converted layer's statistics to disk (a `.stats` folder inside the temporary output,
removed before the rename: per converted layer the d x d float64 moment and the row
samples, about 210 MB at Gemma 3 12B's width), then reads them back one layer at a time
with that layer's attention weights to factorize it.

Output: shards of at most `shard_bytes` (save/shards.py), written as layers finish,
inside the atomic output folder; a model that fits in one shard gets the same
`model.safetensors` as the whole-model path.

Memory, for hidden size d, T-token windows and N calibration + held-out windows: on
the device one layer in float32 plus the carried states (N x T x d float32) and the
float64 moments of one layer (d x d); on the host one shard being filled, one layer,
the embedding matrix once as stored (bf16 for a bf16 folder; read to embed the
calibration tokens, then dropped), and one layer's statistics. Tensors go to the writer
as stored, so a bf16 tensor is never copied to float32 on its way out.

What needs the whole model does not stream: healing (it trains every layer's factors
against the original's logits), `--eval` (perplexity of the whole model before and
after) and `budget: {by: kl}` (each candidate's effect on the final logits):
`whole_model_reason` names which, and the CLI then takes the whole-model path, whose
memory is the float32 model on the device plus its output copy.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import torch

from ..calibrate import LayerStats, StatsCollector
from ..calibrate.windows import HELDOUT_ROWS, calibration_windows
from ..errors import TPAError
from ..models.common import attention_mask, embed_scale, rope_cos_sin
from ..ranks.select import full_width as full_width_targets
from ..ranks.select import layer_ranks, spend_budget
from ..save import atomic_output_dir
from ..save.hf import save_hf_files
from ..save.shards import SHARD_BYTES, ShardWriter
from .layer import block_inputs, conversion_notes, convert_layer
from .output import kv_totals, output_config, write_reports
from .plan import plan_conversion
from .result import ConversionResult


def whole_model_reason(recipe, eval_model: bool) -> str | None:
    """Why a conversion needs the whole model in memory, or None when it streams."""
    if eval_model:
        return "--eval scores the whole model before and after"
    if recipe.heal is not None:
        return "healing trains the factors against the whole model's logits"
    if recipe.budget is not None and recipe.budget.by == "kl":
        return "budget by kl measures each component's effect on the whole model's logits"
    return None


_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def load_block(ckpt, i: int, device) -> torch.nn.Module:
    """Layer i alone, float32 on `device`, read from the checkpoint (as build_model does)."""
    with torch.device("meta"):
        block = ckpt.config.family_spec.block(ckpt.config, i)
    _read_into(block, f"model.layers.{i}.", ckpt, device)
    return block.eval().requires_grad_(False)


def load_attention(ckpt, i: int) -> torch.nn.Module:
    """Layer i with only its attention read (on the CPU; the rest stays on the meta device):
    what the methods read, once the statistics are known."""
    with torch.device("meta"):
        block = ckpt.config.family_spec.block(ckpt.config, i)
    _read_into(block.self_attn, f"model.layers.{i}.self_attn.", ckpt, "cpu")
    return block.eval().requires_grad_(False)


def _read_into(module, prefix: str, ckpt, device) -> None:
    """Materialize `module` (built on the meta device) on `device` with the checkpoint's
    float32 tensors `prefix` + parameter name."""
    module.to_empty(device=device)
    with torch.no_grad():
        for n, p in [*module.named_parameters(), *module.named_buffers()]:
            t = ckpt.weights.get(prefix + n, torch.float32)
            if tuple(t.shape) != tuple(p.shape):
                raise TPAError(
                    f"{ckpt.path}: tensor '{prefix + n}' has shape {tuple(t.shape)}, model expects {tuple(p.shape)}"
                )
            p.copy_(t)


def _spill(path: Path, stats, sample) -> None:
    """A converted layer's statistics to disk between the budget's two passes."""
    torch.save({"stats": None if stats is None else vars(stats), "sample": sample}, path)


def _unspill(path: Path):
    d = torch.load(path, weights_only=True)
    return (None if d["stats"] is None else LayerStats(**d["stats"])), d["sample"]


def _reload(ckpt, plan, spill: Path, last: int):
    """The budget's second pass: each layer's weights again (attention only) and its
    statistics from disk; no forward pass."""
    for i in range(last + 1):
        if i not in plan.converted:
            yield i, None, None
            continue
        stats, sample = _unspill(spill / f"{i}.pt")
        inp = block_inputs(ckpt.config, i, load_attention(ckpt, i), stats)
        ckpt.weights.release()
        yield i, inp, sample
        del inp, stats, sample


class CarriedStates:
    """The calibration windows' hidden states, one (1, T, d) float32 tensor per window on
    the device, advanced one layer at a time by the original layer's forward."""

    def __init__(self, ckpt, windows: torch.Tensor, device, emb: torch.Tensor):
        cfg = ckpt.config
        self.cfg, self.device = cfg, device
        scale = embed_scale(cfg)
        self.h = []
        for w in windows:  # Transformer.embed, on the CPU (the embedding never goes to the device)
            h = torch.nn.functional.embedding(w[None], emb).to(torch.float32)  # rows as stored, then exact
            h = h * torch.tensor(scale, dtype=h.dtype) if scale != 1.0 else h
            self.h.append(h.to(device))
        self.pos = torch.arange(windows.shape[1], device=device)

    def advance(self, i: int, block) -> None:
        """Run layer i's forward on every window (Transformer.forward's step for that layer)."""
        cfg, pos, t = self.cfg, self.pos, self.pos.shape[0]
        w = cfg.window(i)
        mask = attention_mask(pos, pos, w) if w is not None and w < t else None
        cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_base(i), cfg.rope_scale(i), torch.float32)
        with torch.no_grad():
            self.h = [block(h, lambda x: block.self_attn(x, cos, sin, mask)) for h in self.h]


def _calibration(ckpt, recipe, plan, device, fit_w, held_w):
    """(fit states and their collector, held-out states and theirs); None where not needed."""
    fit = held = None
    if not plan.converted:
        return fit, held
    emb = ckpt.weights.get("model.embed_tokens.weight", None)  # as stored; read once, dropped on return
    if plan.needs_stats:
        kept = max((m.windows_kept for m in plan.methods.values()), default=0)
        fit = (
            CarriedStates(ckpt, fit_w, device, emb),
            StatsCollector(ckpt.config, fit_w.shape[0], fit_w.shape[1], skip=recipe.sink_tokens, windows_kept=kept),
        )
    if held_w is not None and held_w.shape[0]:
        held = (
            CarriedStates(ckpt, held_w, device, emb),
            StatsCollector(
                ckpt.config, held_w.shape[0], held_w.shape[1], HELDOUT_ROWS, moments=False, skip=recipe.sink_tokens
            ),
        )
    return fit, held


def _walk(ckpt, recipe, plan, device, fit_w, held_w, progress, label):
    """Yield (i, LayerInputs or None, held-out sample or None) for each layer up to the last
    converted one, in order, with one layer on the device at a time; the carried states
    advance to the last converted layer's input. Layers without a method get None."""
    fit, held = _calibration(ckpt, recipe, plan, device, fit_w, held_w)
    last = plan.converted[-1] if plan.converted else -1
    bar = progress and progress(label)
    for i in range(last + 1):
        block = load_block(ckpt, i, device)
        stats = sample = None
        if i in plan.converted:
            for states, col in (s for s in (fit, held) if s):
                for w, h in enumerate(states.h):
                    col.add(i, block, h, w)
            stats = fit[1].pop(i) if fit else None
            sample = held[1].pop(i).sample if held else None
        if i < last:
            for states, _ in (s for s in (fit, held) if s):
                states.advance(i, block)
        inp = block_inputs(ckpt.config, i, block, stats) if i in plan.converted else None
        del block
        ckpt.weights.release()
        if bar:
            bar(i + 1, last + 1)
        yield i, inp, sample
        del inp, stats, sample  # before the next layer loads


def _timed(items, seconds: dict):
    """`items` ((layer, ...) tuples) passed through; seconds[layer] += the time from the
    previous item to the consumer's request for the next (reading plus the consumer's work)."""
    t = time.time()
    for item in items:
        layer = item[0]
        yield item
        del item  # the consumer's layer goes before the next one loads
        seconds[layer] += time.time() - t
        t = time.time()


def _budget_pass(cfg, recipe, plan, layers, spill: Path):
    """Every converted layer's ranks but the budget's, and its candidates, from one walk
    over `layers`; each layer's statistics go to `spill`. Returns (ranks with the budget
    spent, the layers again: weights re-read, statistics from disk)."""
    spill.mkdir()
    ranks, cands = {}, []
    for i, inp, sample in layers:
        if inp is not None:
            r, c = layer_ranks(cfg, recipe, plan.rules, plan.methods, i, inp)
            ranks.update(r)
            cands += c
            _spill(spill / f"{i}.pt", inp.stats, sample)
        del inp, sample  # before the next layer loads
    ranks.update(spend_budget(cfg, recipe, ranks, cands))
    return ranks


class _LayerWriter:
    """Converts each layer as it arrives and hands its tensors to the shard writer."""

    def __init__(self, ckpt, recipe, plan, writer: ShardWriter, ranks: dict | None, log, progress):
        self.ckpt, self.recipe, self.plan, self.writer, self.ranks, self.log = ckpt, recipe, plan, writer, ranks, log
        self.layers, self.full_width = {}, {}
        self.names: dict[int, list[str]] = {}  # tensor names by layer; -1: embedding, final norm, LM head
        for n in ckpt.weights.names():
            m = _LAYER.match(n)
            self.names.setdefault(int(m.group(1)) if m else -1, []).append(n)
        self.bar, self.done = progress and progress("factorize"), 0

    def _tick(self):
        self.done += 1
        if self.bar:
            self.bar(self.done, len(self.plan.methods))

    def _stored(self, name: str) -> torch.Tensor:
        """A tensor as stored, for the writer to cast (no float32 copy of a bf16 tensor); a
        float64 one goes through float32 first, as the whole-model path's float32 model does."""
        t = self.ckpt.weights.get(name, None)
        return t.float() if t.dtype == torch.float64 else t

    def layer(self, i: int, inp, sample) -> None:
        cfg, plan = self.ckpt.config, self.plan
        ranks = {}
        if inp is not None:
            ranks = self.ranks
            if ranks is None:  # no budget: the layer's ranks are its own
                ranks, _ = layer_ranks(cfg, self.recipe, plan.rules, plan.methods, i, inp)
            fw = full_width_targets(cfg, plan.rules, plan.methods, {k: r for k, r in ranks.items() if k[0] == i})
            for key in fw:
                del plan.methods[key]
            self.full_width.update(fw)
        lc = convert_layer(cfg, self.recipe, i, inp, plan.methods, ranks, self.full_width, sample, self.log, self._tick)
        replaced = {
            f"model.layers.{i}.self_attn.{t}_proj.weight"
            for t, c in (("k", lc.layout.k), ("v", lc.layout.v))
            if c.kind != "full"
        }
        for n in self.names.get(i, []):
            if n not in replaced:
                self.writer.add(n, self._stored(n))
        for n, v in lc.tensors.items():
            self.writer.add(n, v)
        self.ckpt.weights.release()
        self.layers[i] = lc

    def rest(self) -> None:
        """The tensors outside the layers."""
        for n in self.names.get(-1, []):
            self.writer.add(n, self._stored(n))
        self.ckpt.weights.release()


def convert_streaming(
    ckpt, recipe, out_dir: Path, force: bool, device="cpu", progress=None, log=print, shard_bytes: int = SHARD_BYTES
):
    """Convert `ckpt` as `recipe` says, one layer at a time, and write the output folder
    (what `convert` + `write_output` give). Returns the ConversionResult; its `profile`
    holds the seconds per layer and the device's peak memory."""
    t0 = time.time()
    cfg = ckpt.config
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plan = plan_conversion(ckpt, recipe)
    fit_w = held_w = None
    if plan.needs_stats or plan.methods:
        fit_w, held_w = calibration_windows(ckpt.tokenizer, recipe, ckpt.path)
        log(
            f"streaming one layer at a time on {device}: calibrating on {fit_w.numel()} tokens "
            f"({fit_w.shape[0]} x {recipe.calibration.seq_len}), {held_w.numel()} held-out"
        )
        if not plan.needs_stats:
            fit_w = None
    wdtype = getattr(torch, recipe.weight_dtype)
    seconds = dict.fromkeys(range(cfg.num_layers), 0.0)  # per layer, both passes of a budget
    with atomic_output_dir(out_dir, force=force, protect=[ckpt.path]) as tmp:
        layers = _timed(_walk(ckpt, recipe, plan, device, fit_w, held_w, progress, "calibrate"), seconds)
        ranks = None
        if any(plan.rules[i][t].rank.kind == "budget" for i, t in plan.methods):
            ranks = _budget_pass(cfg, recipe, plan, layers, tmp / ".stats")
            layers = _timed(_reload(ckpt, plan, tmp / ".stats", plan.converted[-1]), seconds)
        out = _LayerWriter(ckpt, recipe, plan, ShardWriter(tmp, wdtype, shard_bytes), ranks, log, progress)
        for i, inp, sample in layers:
            out.layer(i, inp, sample)
            del inp, sample  # before the next layer loads
        layers = _timed(((i, None, None) for i in range(len(out.layers), cfg.num_layers)), seconds)
        for i, _, _ in layers:  # past the last converted layer: copied
            out.layer(i, None, None)
        out.rest()
        files = out.writer.close()
        shutil.rmtree(tmp / ".stats", ignore_errors=True)
        ordered = [out.layers[i] for i in range(cfg.num_layers)]
        layouts = [lc.layout for lc in ordered]
        save_hf_files(tmp, cfg, ckpt.tokenizer, output_config(ckpt, recipe, layouts), wdtype)
        profile = {
            "path": "stream",
            "shards": len(files),
            "layer_seconds": [round(seconds[i], 3) for i in range(cfg.num_layers)],
            "peak_device_bytes": (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None),
        }
        result = ConversionResult(
            layouts,
            [lc.report for lc in ordered],
            kv_totals(cfg, recipe, layouts),
            {},
            time.time() - t0,
            conversion_notes(out.full_width, ordered, log),
            {},
            profile,
        )
        write_reports(tmp, out_dir, ckpt, recipe, result)
    return result
