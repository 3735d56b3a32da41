"""Healing: train only the new factor tensors against the original model's next-token distribution.

A recipe's optional `heal:` section (recipe.HealSpec) runs this stage after convert has
installed the factorized projections and before the final evaluation.

- Teacher: the original model. Only the K/V projections change in a conversion, so the
  teacher is the converted model with the original K/V modules swapped back in for its
  forward pass (`prepare` keeps references to them before convert replaces them). The
  extra memory is those projections only (Gemma 3 270M: 18 layers x 2 x 640 x 256
  floats, 24 MB; a 7B Llama: 32 x 2 x 4096 x 1024, 1 GB in fp32), not a second model.
- Student: the converted model with every parameter frozen except the factor tensors of
  the factorized projections (latent down/up/bias, TPA factors and bias). Never
  `sink.weight` (the original projection kept for the exact sink positions), never an
  original weight.
- Loss: KL(teacher || student) over the full vocabulary, mean per token over every
  position of BOS-led windows of the heal text (the tokenizer's BOS rule, as
  calibration). Logits are computed in row chunks and the loss is back-propagated chunk
  by chunk into the final hidden state, so a 262k vocabulary never needs more than one
  chunk of logits. fp32 on the CPU; on CUDA the forward passes run under bf16 autocast
  and the KL itself in fp32. Held-out KL (reported before and after) is fp32 always.
- Through the cache (`through_cache`, default on): with a lossy cache format the
  student reads K/V as that cache returns them (evaluate/simulate.py: grouped rounding,
  recent window, exact sinks), gradients passing straight through the rounding, so the
  factors learn to work with the cache they are served from. The held-out KL is measured
  the same way (the teacher always reads exact entries).
- Data: `tokens` of windows from the start of the text train (a fresh seeded
  permutation every pass over them); `heldout_tokens` of windows from its end only
  measure. With the calibration text, the held-out windows must lie past the tokens
  calibration fitted on (checked), so the held-out KL is measured off every fit.
- Optimiser: AdamW (no weight decay), gradient norm clipped at 1, linear warmup then
  cosine decay to 0 over `steps`. Trained tensors are rounded to the recipe's
  weight_dtype at the end, as they will be saved.
- Time bound: a step starts only while the steps so far, at their mean duration, leave
  room for it within `max_seconds` (the first step always runs); the report says
  whether the steps or the time ran out. Held-out KL measurements come on top.
- Determinism: the schedule depends on `steps` only, never on time, so a run stopped by
  the clock after n steps holds the same tensors as any run of the recipe stopped after
  n. On the CPU, with the same thread count, training runs under
  torch.use_deterministic_algorithms and is bit-deterministic for a fixed seed (tested).
  On CUDA the data order and schedule are the same, but the attention backward kernels
  accumulate with atomics, so tensors may differ in the last bits between runs.
- Device: `auto` trains on CUDA when present; the model moves there for the stage and
  back to where convert runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .cache_formats import parse_spec
from .data import default_calib_files, read_texts
from .errors import TPAError
from .methods.layers import _Sinked
from .recipe import HealSpec, Recipe

# Logit rows per chunk: elements per chunk / vocab (CPU 32M floats: 128 rows of Gemma's 262k).
CHUNK_ELEMENTS = {"cpu": 2**25, "cuda": 2**27}


@dataclass
class HealData:
    spec: HealSpec
    train: torch.Tensor  # (N, T) token windows
    heldout: torch.Tensor  # (M, T)
    originals: dict = field(default_factory=dict)  # (layer, "k"|"v") -> original projection module
    cache: str | None = None  # the lossy cache spec the student reads through (through_cache), else None


@dataclass
class HealResult:
    report: dict
    tensors: dict  # canonical name -> trained tensor (fp32, CPU), for the output folder


def _files(spec: list[str]) -> list:
    """A recipe's file list; [default] is the bundled calibration text."""
    return default_calib_files() if spec in (["default"], [], None) else [Path(f) for f in spec]


def prepare(model, tok, recipe: Recipe, converted: list[int]) -> HealData | None:
    """Cut the heal windows and keep the original K/V modules, before any conversion work.

    Raises TPAError when the text is too short, when its held-out windows would overlap
    the calibration tokens, or when the recipe converts no layer of this model."""
    spec = recipe.heal
    if spec is None:
        return None
    where = f"{recipe.source}: heal"
    if not converted:
        raise TPAError(f"{where}: the recipe converts no layer of this model, so there is nothing to heal")
    if tok is None:
        raise TPAError(
            f"{where}: healing needs a tokenizer (put tokenizer.model or tokenizer.json beside "
            "the model, or pass --tokenizer PATH)"
        )
    from .evaluate.perplexity import make_windows

    files = _files(spec.files)
    src = ", ".join(map(str, files))
    ids = tok.encode(read_texts(files), add_bos=False)
    bos = tok.bos_id if tok.add_bos else None
    n_train, n_held = spec.tokens // spec.seq_len, spec.heldout_tokens // spec.seq_len
    win = make_windows(ids, spec.seq_len, bos, None, source=src)
    if win.shape[0] < n_train + n_held:
        raise TPAError(
            f"{where}: {src} has {len(ids)} tokens, too few for {spec.tokens} training + "
            f"{spec.heldout_tokens} held-out tokens in windows of {spec.seq_len}; "
            "give more text (heal.files) or fewer tokens"
        )
    body = spec.seq_len - (bos is not None)
    held_start = (win.shape[0] - n_held) * body  # first stream token of the held-out windows
    cal = recipe.calibration
    if [Path(f).resolve() for f in files] == [Path(f).resolve() for f in _files(cal.files)]:
        cal_body = cal.seq_len - (bos is not None)
        cal_end = min(max(1, (cal.tokens + cal.heldout_tokens) // cal.seq_len), len(ids) // cal_body) * cal_body
        if held_start < cal_end:
            raise TPAError(
                f"{where}: the held-out windows (from token {held_start} of {src}) overlap the "
                f"{cal_end} tokens calibration uses; give more text or fewer heal.heldout_tokens"
            )
    originals = {(i, t): getattr(model.layers[i].self_attn, f"{t}_proj") for i in converted for t in ("k", "v")}
    lossy = parse_spec(recipe.cache_dtype).format.lossy
    return HealData(
        spec,
        win[:n_train],
        win[win.shape[0] - n_held :],
        originals,
        recipe.cache_dtype if spec.through_cache and lossy else None,
    )


def trainable(model) -> dict[str, torch.nn.Parameter]:
    """The factor tensors healing trains, by canonical name: every parameter of a
    factorized K/V projection except `sink.weight`."""
    out = {}
    for i, block in enumerate(model.layers):
        for t in ("k", "v"):
            proj = getattr(block.self_attn, f"{t}_proj")
            if isinstance(proj, _Sinked):
                for n, p in proj.named_parameters():
                    if not n.startswith("sink."):
                        out[f"model.layers.{i}.self_attn.{t}_proj.{n}"] = p
    return out


@contextlib.contextmanager
def _teacher(model, originals: dict):
    """The original model for the duration: the original K/V projections swapped in."""
    now = {key: getattr(model.layers[key[0]].self_attn, f"{key[1]}_proj") for key in originals}
    try:
        for (i, t), m in originals.items():
            setattr(model.layers[i].self_attn, f"{t}_proj", m)
        yield model
    finally:
        for (i, t), m in now.items():
            setattr(model.layers[i].self_attn, f"{t}_proj", m)


def _student(model, cache: str | None):
    """The converted model as it will be served: reading K/V through `cache`'s rounding
    (a simulation with straight-through gradients) when healing trains through the cache."""
    if cache is None:
        return contextlib.nullcontext(model)
    from .evaluate.simulate import simulated_cache

    return simulated_cache(model, cache)


def _autocast(device: torch.device, on: bool):
    if on and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _kl_backward(model, h_student, h_teacher, chunk: int, backward: bool) -> float:
    """Mean per-token KL(teacher || student) from final hidden states (B, T, H), the
    logits in `chunk`-row pieces; with `backward`, the gradient flows into h_student's graph."""
    leaf = h_student.detach().float().requires_grad_(backward)
    hs, ht = leaf.flatten(0, -2), h_teacher.float().flatten(0, -2)
    n = hs.shape[0]
    total = 0.0
    for s in range(0, n, chunk):
        with torch.set_grad_enabled(backward):
            ls = model.logits(hs[s : s + chunk]).float().log_softmax(-1)
            with torch.no_grad():
                lt = model.logits(ht[s : s + chunk]).float().log_softmax(-1)
            kl = F.kl_div(ls, lt, reduction="sum", log_target=True) / n
        if backward:
            kl.backward()
        total += float(kl.detach())
    if backward:
        h_student.backward(leaf.grad.to(h_student.dtype))
    return total


def _chunk(model, device) -> int:
    return max(1, CHUNK_ELEMENTS.get(device.type, 2**25) // model.cfg.vocab_size)


@torch.no_grad()
def heldout_kl(model, originals: dict, windows: torch.Tensor, batch: int, cache: str | None = None) -> float:
    """Mean per-token KL(original || converted) on `windows`, fp32; the converted model
    reads through `cache` when given (the original never does)."""
    device = next(model.parameters()).device
    chunk, total, count = _chunk(model, device), 0.0, 0
    for s in range(0, windows.shape[0], batch):
        ids = windows[s : s + batch].to(device)
        with _teacher(model, originals):
            ht = model(ids)
        with _student(model, cache):
            hs = model(ids)
        total += _kl_backward(model, hs, ht, chunk, backward=False) * ids.numel()
        count += ids.numel()
    return total / count


def lr_at(step: int, spec: HealSpec) -> float:
    """Linear warmup over warmup_steps, then cosine decay to 0 at `steps` (step counts from 0)."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    p = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * p))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on the CPU. Not on CUDA: there cuBLAS would need
    CUBLAS_WORKSPACE_CONFIG set before it starts, and attention backward has no
    deterministic kernel for every mask, so the mode would only raise or warn."""
    if device.type != "cpu":
        yield
        return
    old = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])


def heal(model, data: HealData, weight_dtype: str, progress=None, log=print, evaluate=None) -> HealResult:
    """Train the factor tensors of `model` in place; returns the report and the tensors.

    `evaluate()`, when given, measures the converted model before healing (its result
    goes in the report as perplexity_before_heal). `progress(label)` returns a callable
    (i, n, info) as convert's progress bars do."""
    spec = data.spec
    params = trainable(model)
    report = {
        "device": None,
        "steps_planned": spec.steps,
        "steps": 0,
        "stopped_by": None,
        "seconds": 0.0,
        "seed": spec.seed,
        "lr": spec.lr,
        "warmup_steps": spec.warmup_steps,
        "batch": spec.batch,
        "seq_len": spec.seq_len,
        "train_windows": data.train.shape[0],
        "heldout_windows": data.heldout.shape[0],
        "trained_tensors": len(params),
        "trained_values": sum(p.numel() for p in params.values()),
    }
    if evaluate:
        report["perplexity_before_heal"] = evaluate()
    if not params:
        log("heal: no factorized projection to train; skipped")
        report["stopped_by"] = "nothing to train"
        return HealResult(report, {})
    home = next(model.parameters()).device
    device = resolve_device(spec.device)
    report["device"] = str(device)
    t_stage = time.time()
    _move(model, data, device)
    try:
        with _deterministic(device):
            report.update(_train(model, data, params, device, progress, log))
        _round(params.values(), getattr(torch, weight_dtype))
        log(f"heal: measuring the held-out KL after ({data.heldout.shape[0]} windows)")
        report["heldout_kl_after"] = heldout_kl(model, data.originals, data.heldout.to(device), spec.batch, data.cache)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
        _move(model, data, home)
    report["stage_seconds"] = round(time.time() - t_stage, 1)
    tensors = {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in trainable(model).items()}
    return HealResult(report, tensors)


def _move(model, data: HealData, device: torch.device) -> None:
    model.to(device)
    for m in data.originals.values():
        m.to(device)


def _round(params, dtype: torch.dtype) -> None:
    """Round trained tensors to the dtype they will be saved in (as convert measures)."""
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(dtype).to(p.dtype))


def _train(model, data: HealData, params: dict, device: torch.device, progress, log) -> dict:
    spec = data.spec
    log(f"heal: measuring the held-out KL before ({data.heldout.shape[0]} windows)")
    out = {
        "heldout_kl_before": heldout_kl(model, data.originals, data.heldout.to(device), spec.batch, data.cache),
        "through_cache": data.cache,
    }
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=spec.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(spec.seed)
    order = torch.empty(0, dtype=torch.long)
    chunk = _chunk(model, device)
    losses = []
    bar = progress and progress("heal")
    log(
        f"heal: {spec.steps} steps of {spec.batch} x {spec.seq_len} tokens on {device}, "
        f"{sum(p.numel() for p in params.values())} trained values in {len(params)} tensors"
        + (f", reading K/V through the {data.cache} cache" if data.cache else "")
    )
    t0 = time.time()
    stopped = "steps"
    for step in range(spec.steps):
        elapsed = time.time() - t0
        if step and elapsed + elapsed / step > spec.max_seconds:
            stopped = "max_seconds"
            break
        while order.numel() < spec.batch:  # a fresh permutation every pass over the pool
            order = torch.cat([order, torch.randperm(data.train.shape[0], generator=g)])
        ids, order = data.train[order[: spec.batch]].to(device), order[spec.batch :]
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, spec)
        with torch.no_grad(), _autocast(device, True), _teacher(model, data.originals):
            ht = model(ids)
        with _autocast(device, True), _student(model, data.cache):
            hs = model(ids)
        loss = _kl_backward(model, hs, ht, chunk, backward=True)
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        if bar:
            bar(step + 1, spec.steps, f"loss {loss:.4f}")
    out.update(
        steps=len(losses),
        stopped_by=stopped,
        seconds=round(time.time() - t0, 2),
        loss_first=losses[0],
        loss_last=losses[-1],
        losses=[round(x, 6) for x in losses],
    )
    if stopped == "max_seconds":
        log(f"heal: max_seconds {spec.max_seconds:g} reached after {len(losses)} of {spec.steps} steps")
    return out
