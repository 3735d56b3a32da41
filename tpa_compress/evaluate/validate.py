"""Validate a converted model against its original on held-out text.

Both models run the same windows (the perplexity protocol: non-overlapping, BOS-led
where the tokenizer adds BOS). Per layer, from forward hooks:

- `attn_local`: the converted layer's attention run on the *reference's* input to that
  layer vs the reference attention output: the layer's own approximation error;
- `attn`, `hidden`: the converted model's attention output / block output vs the
  reference's, end to end (errors of earlier layers included).

Each is a relative Frobenius error over every token of every window,
sqrt(Σ‖conv − ref‖² / Σ‖ref‖²), accumulated as sums of squares, so only one window's
reference activations are ever held. Overall: mean KL(reference ‖ converted) of the
next-token distributions, top-1 agreement and both perplexities, with the logits
computed a few positions at a time (a 262k vocabulary never needs T × vocab floats).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import TPAError

KINDS = ("attn_local", "attn", "hidden")
# logits floats per chunk: 2^24 (64 MiB fp32) → 64 positions of Gemma's 262k vocabulary.
LOGIT_CHUNK_ELEMS = 1 << 24


@dataclass
class Thresholds:
    max_kl: float | None = None
    min_top1: float | None = None
    max_ppl_increase: float | None = None  # percent: 5 means converted ppl ≤ 1.05 × reference

    def check(self) -> Thresholds:
        """One-line TPAError for a threshold that cannot mean anything."""
        for flag, v in (
            ("--max-kl", self.max_kl),
            ("--min-top1", self.min_top1),
            ("--max-ppl-increase", self.max_ppl_increase),
        ):
            if v is not None and not math.isfinite(v):
                raise TPAError(f"{flag} {v} is not a finite number")
        if self.max_kl is not None and self.max_kl < 0:
            raise TPAError(f"{self.max_kl} is not a valid --max-kl; valid: a KL in nats, >= 0")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise TPAError(f"{self.min_top1} is not a valid --min-top1; valid: a fraction in 0..1")
        if self.max_ppl_increase is not None and self.max_ppl_increase < 0:
            raise TPAError(
                f"{self.max_ppl_increase} is not a valid --max-ppl-increase; valid: "
                "a percentage >= 0 (5 means at most +5%)"
            )
        return self

    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())


@dataclass
class ValidationResult:
    layers: list[dict]  # per layer: {"layer", "attn_local", "attn", "hidden"} relative errors
    kl_mean: float  # nats per predicted token, KL(reference || converted)
    kl_max: float
    top1: float  # fraction of positions whose argmax agrees
    ppl_reference: float
    ppl_converted: float
    nll_reference: float
    nll_converted: float
    tokens: int  # predicted positions scored
    windows: int
    seq_len: int

    @property
    def ppl_increase_pct(self) -> float:
        return 100.0 * (self.ppl_converted / self.ppl_reference - 1.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ppl_increase_pct"] = self.ppl_increase_pct
        return d


def failures(res: ValidationResult, t: Thresholds) -> list[str]:
    """One phrase per missed threshold, saying by how much."""
    out = []
    if t.max_kl is not None and not res.kl_mean <= t.max_kl:  # `not <=` also catches NaN
        out.append(f"mean KL {res.kl_mean:.6g} > --max-kl {t.max_kl:g} (over by {res.kl_mean - t.max_kl:.3g})")
    if t.min_top1 is not None and not res.top1 >= t.min_top1:
        out.append(f"top-1 agreement {res.top1:.4f} < --min-top1 {t.min_top1:g} (short by {t.min_top1 - res.top1:.4f})")
    inc = res.ppl_increase_pct
    if t.max_ppl_increase is not None and not inc <= t.max_ppl_increase:
        out.append(
            f"perplexity {res.ppl_reference:.4f} -> {res.ppl_converted:.4f} is {inc:+.3f}% "
            f"> --max-ppl-increase {t.max_ppl_increase:g}% (over by "
            f"{inc - t.max_ppl_increase:.3f} points)"
        )
    return out


def domain_failures(results: dict[str, ValidationResult], t: Thresholds) -> list[str]:
    """The gate on every evaluated text (each bundled domain): one phrase per missed
    threshold per domain, prefixed with the domain's name. A model passes only if this
    is empty, i.e. it meets every threshold on every domain."""
    return [f"{name}: {f}" for name, res in results.items() for f in failures(res, t)]


# ----------------------------------------------------------------------------- the models


def reference_source(conv_ckpt, given: str | None) -> tuple[str, bool]:
    """The reference to load: --reference if given, else the model the converted folder
    records (`tpa_source.model`). Returns (path, recorded)."""
    if given:
        return str(given), False
    src = (conv_ckpt.extra or {}).get("tpa_source")
    model = src.get("model") if isinstance(src, dict) else None
    if not model:
        raise TPAError(
            f"{conv_ckpt.path}: config.json records no original model (tpa_source.model); pass --reference ORIGINAL"
        )
    if not Path(model).exists():
        raise TPAError(
            f"{conv_ckpt.path}: the recorded original model {model} does not exist "
            "(moved or on another machine?); pass --reference ORIGINAL"
        )
    return str(model), True


def load_reference(conv_ckpt, given: str | None, variant: str | None = None, tokenizer=None):
    from ..load import load_model

    path, recorded = reference_source(conv_ckpt, given)
    try:
        return load_model(path, variant=variant, tokenizer=tokenizer)
    except TPAError as e:
        if not recorded:
            raise
        raise TPAError(
            f"{conv_ckpt.path}: the recorded original model cannot be opened ({e}); pass --reference ORIGINAL"
        ) from e


def check_comparable(conv, ref) -> None:
    """Same architecture and vocabulary, or the per-layer / per-token comparison is meaningless."""
    a, b = conv.config, ref.config
    if a.vocab_size != b.vocab_size:
        raise TPAError(
            f"vocabulary mismatch: {conv.path} has {a.vocab_size} tokens, reference "
            f"{ref.path} has {b.vocab_size}; both models must share one tokenizer"
        )
    shape = lambda c: (c.family, c.num_layers, c.hidden_size)  # noqa: E731
    if shape(a) != shape(b):
        raise TPAError(
            f"{conv.path} ({a.family}, {a.num_layers} layers, hidden {a.hidden_size}) "
            f"and reference {ref.path} ({b.family}, {b.num_layers} layers, hidden "
            f"{b.hidden_size}) are not the same architecture; pass the model it was "
            "converted from as --reference"
        )


def shared_tokenizer(conv, ref, text: str):
    """(tokenizer, ids of `text` without BOS), after checking both models' tokenizers agree
    on `text` (ids and BOS); either may lack one (a .ckpt has none), then the other's is used."""
    tc, tr = conv.tokenizer, ref.tokenizer
    if tc is None and tr is None:
        raise TPAError(
            f"{conv.path}: no tokenizer found, nor beside the reference {ref.path} "
            "(put tokenizer.model or tokenizer.json beside the model, or pass --tokenizer PATH)"
        )
    if tc is None or tr is None:
        tok = tc or tr
        return tok, tok.encode(text, add_bos=False)
    if (tc.bos_id, tc.add_bos) != (tr.bos_id, tr.add_bos):
        raise TPAError(
            f"tokenizer mismatch: {conv.path} has BOS {tc.bos_id} (added: {tc.add_bos}), "
            f"reference {ref.path} has BOS {tr.bos_id} (added: {tr.add_bos})"
        )
    ic, ir = tc.encode(text, add_bos=False), tr.encode(text, add_bos=False)
    if ic != ir:
        k = next((i for i, (x, y) in enumerate(zip(ic, ir)) if x != y), min(len(ic), len(ir)))
        at = f"token {k}: id {ic[k] if k < len(ic) else 'end'} vs {ir[k] if k < len(ir) else 'end'}"
        raise TPAError(
            f"tokenizer mismatch: {conv.path} and reference {ref.path} tokenize the "
            f"text differently (first at {at}); both models must share one tokenizer"
        )
    return tc, ic


# ----------------------------------------------------------------------------- measuring


class _Errors:
    """Σ‖conv − ref‖² and Σ‖ref‖² per (kind, layer), kept on the device (no host syncs)."""

    def __init__(self, n_layers: int, device):
        self.diff = torch.zeros(len(KINDS), n_layers, dtype=torch.float64, device=device)
        self.ref = torch.zeros_like(self.diff)

    def add(self, kind: str, layer: int, conv: torch.Tensor, ref: torch.Tensor) -> None:
        k = KINDS.index(kind)
        ref = ref.double()
        self.diff[k, layer] += (conv.double() - ref).square().sum()
        self.ref[k, layer] += ref.square().sum()

    def relative(self) -> list[dict]:
        d, r = self.diff.cpu(), self.ref.cpu()
        rel = torch.where(
            r > 0,
            (d / r.clamp_min(1e-300)).sqrt(),
            torch.where(d > 0, torch.full_like(d, math.inf), torch.zeros_like(d)),
        )
        return [{"layer": i, **{kind: float(rel[k, i]) for k, kind in enumerate(KINDS)}} for i in range(d.shape[1])]


def _run_pair(ref, conv, ids: torch.Tensor, errs: _Errors):
    """Both forwards on one window (1, T); returns both final hidden states (T, hidden)."""
    n = len(ref.layers)
    ref_attn, ref_hidden = [None] * n, [None] * n
    handles = []

    def on_ref_attn(i):
        def hook(mod, args, kwargs, out):
            ref_attn[i] = out
            # the converted layer on exactly the reference's input: its own error only
            errs.add("attn_local", i, conv.layers[i].self_attn(*args, **kwargs), out)

        return hook

    def on_ref_block(i):
        def hook(mod, args, out):
            ref_hidden[i] = out

        return hook

    def on_conv_attn(i):
        def hook(mod, args, out):
            errs.add("attn", i, out, ref_attn[i])
            ref_attn[i] = None  # free as we go

        return hook

    def on_conv_block(i):
        def hook(mod, args, out):
            errs.add("hidden", i, out, ref_hidden[i])
            ref_hidden[i] = None

        return hook

    try:
        for i in range(n):
            handles.append(ref.layers[i].self_attn.register_forward_hook(on_ref_attn(i), with_kwargs=True))
            handles.append(ref.layers[i].register_forward_hook(on_ref_block(i)))
        h_ref = ref(ids)[0]
        for h in handles:
            h.remove()
        handles = []
        for i in range(n):
            handles.append(conv.layers[i].self_attn.register_forward_hook(on_conv_attn(i)))
            handles.append(conv.layers[i].register_forward_hook(on_conv_block(i)))
        h_conv = conv(ids)[0]
    finally:
        for h in handles:
            h.remove()
    return h_ref, h_conv


def _token_stats(ref, conv, h_ref, h_conv, targets, chunk: int, acc: torch.Tensor) -> None:
    """Add to `acc` = [Σ KL(ref||conv), max KL, Σ top-1 agreement, Σ NLL ref, Σ NLL conv]."""
    for s in range(0, targets.shape[0], chunk):
        lr = ref.logits(h_ref[s : s + chunk]).float().log_softmax(-1)
        lc = conv.logits(h_conv[s : s + chunk]).float().log_softmax(-1)
        kl = torch.nn.functional.kl_div(lc, lr, reduction="none", log_target=True).sum(-1)
        kl = kl.clamp_min(0.0).double()  # KL >= 0; rounding can leave -1e-9 on identical rows
        tgt = targets[s : s + chunk, None]
        acc[0] += kl.sum()
        acc[1] = torch.maximum(acc[1], kl.max())
        acc[2] += (lr.argmax(-1) == lc.argmax(-1)).sum()
        acc[3] -= lr.gather(-1, tgt).double().sum()
        acc[4] -= lc.gather(-1, tgt).double().sum()


@torch.no_grad()
def validate(
    ref, conv, windows: torch.Tensor, device="cpu", progress=None, chunk: int | None = None
) -> ValidationResult:
    """Compare `conv` with `ref` (two built Transformers, same architecture) on `windows`
    (N, T) of token ids. `progress(i, n, kl_mean)` is called after each window."""
    if len(ref.layers) != len(conv.layers):
        raise TPAError(f"the models have {len(ref.layers)} and {len(conv.layers)} layers")
    n, t = windows.shape
    vocab = ref.head_weight().shape[0]
    chunk = chunk or max(1, min(t, LOGIT_CHUNK_ELEMS // vocab))
    errs = _Errors(len(ref.layers), device)
    acc = torch.zeros(5, dtype=torch.float64, device=device)  # summed where the logits are
    count = 0
    for w in range(n):
        ids = windows[w].to(device)
        h_ref, h_conv = _run_pair(ref, conv, ids[None], errs)
        _token_stats(ref, conv, h_ref[:-1], h_conv[:-1], ids[1:], chunk, acc)
        count += t - 1
        if progress is not None:
            progress(w + 1, n, float(acc[0]) / count)
    kl_sum, kl_max, top1, nll_r, nll_c = acc.tolist()
    return ValidationResult(
        layers=errs.relative(),
        kl_mean=kl_sum / count,
        kl_max=kl_max,
        top1=top1 / count,
        ppl_reference=math.exp(nll_r / count),
        ppl_converted=math.exp(nll_c / count),
        nll_reference=nll_r / count,
        nll_converted=nll_c / count,
        tokens=count,
        windows=n,
        seq_len=t,
    )
