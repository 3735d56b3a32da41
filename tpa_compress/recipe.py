"""YAML recipes -> validated, typed recipe objects (strict: unknown keys are errors).

    model: gemma3-270m            # optional; a MODEL argument overrides it
    seed: 0
    weight_dtype: bfloat16        # saved tensors: bfloat16 | float32 | float16
    cache_dtype: bf16             # fp32 | bf16 | fp16 | fp8 | int8 | int4 | int3 | int2 (cache_formats/)
    # or, with a grouped format's parameters (instead of cache_dtype):
    # cache: {dtype: int4, group: 32, recent: 128, rotate: none, values: auto}
    sink_tokens: 1                # leading positions whose K/V stay exact (0: none); see layout.py
    calibration: {files: [default], tokens: 32768, seq_len: 512, heldout_tokens: 4096}
    eval: {files: [default], seq_len: 512, max_windows: 16}
    budget: {fraction: 0.5, context: 32768}   # needed when a rank says `budget`; by: error | kl (kl_windows: 4)
    rank_limits: {multiple: 16, max: {k: 112, v: 160}}   # bounds on every rank (max: one for both, or per target)
    heal: {steps: 200, lr: 5.0e-5, max_seconds: 600}   # optional: train the factors on the original's logits (heal.py)
    layers:                       # ordered rules; a later match overrides an earlier one
      - select: all               # all | {type: sliding|global} | {layers: "0-5,17"} | {pattern: "1?"}
        k: {method: activation_svd, rank: 192}
        v: {method: activation_svd, rank: {energy: 0.99}, params: {output_aware: true}}
Layers no rule matches keep their original K/V.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .cache_formats import spec_from_recipe
from .config import ModelConfig
from .errors import TPAError

WEIGHT_DTYPES = ("float32", "bfloat16", "float16")
BUDGET_BY = ("error", "kl")


@dataclass
class RankSpec:
    kind: str  # fixed | energy | budget | auto
    value: float | None = None


@dataclass
class ComponentRule:
    method: str
    rank: RankSpec
    params: dict = field(default_factory=dict)


@dataclass
class Selector:
    kind: str  # all | type | layers | pattern
    value: object = None

    def matches(self, cfg: ModelConfig, i: int) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "type":
            return cfg.layer_types[i] == self.value
        if self.kind == "layers":
            return i in self.value
        return fnmatch.fnmatch(str(i), self.value)


@dataclass
class LayerRule:
    select: Selector
    k: ComponentRule | None
    v: ComponentRule | None


@dataclass
class Calibration:
    files: list[str] = field(default_factory=lambda: ["default"])
    tokens: int = 32768
    seq_len: int = 512
    heldout_tokens: int = 4096


@dataclass
class EvalSpec:
    files: list[str] = field(default_factory=lambda: ["default"])
    seq_len: int = 512
    max_windows: int | None = 16


@dataclass
class Budget:
    fraction: float
    context: int = 32768
    by: str = "error"  # what a byte of rank is judged by: error (spectrum) | kl (ranks/kl.py)
    kl_windows: int = 4  # by: kl: the calibration windows each component's KL is measured on


@dataclass
class RankLimits:
    """Bounds on every rank a recipe gives or chooses: a multiple of `multiple`, at most
    `max` (one for K and V, or {k: .., v: ..}). energy and budget ranks are chosen within
    them; a fixed rank outside them is an error. The budgeted recipes ask for
    {multiple: 16, max: {k: 112, v: 160}}: latent ranks the Hopper decode kernel serves
    (wgmma k-steps of 16; its shared memory holds K 112 with V 160; docs/methods.md)."""

    multiple: int = 1
    max: dict = field(default_factory=lambda: {"k": None, "v": None})

    def cap(self, target: str) -> int | None:
        return self.max.get(target)

    def describe(self, target: str) -> str:
        hi = self.cap(target)
        return f"a multiple of {self.multiple}" + (f" up to {hi}" if hi is not None else "")


@dataclass
class HealSpec:
    """The optional healing stage (tpa_compress/heal.py): train the new factor tensors
    against the original model's next-token distribution. `tokens` is the training pool
    (cycled, reshuffled every pass), `heldout_tokens` the windows taken from the end of
    the text that only measure KL; `steps` updates of `batch` windows of `seq_len`, AdamW
    at `lr` with linear warmup over `warmup_steps` (default: steps // 10) and cosine
    decay to 0; stops early at `max_seconds` of training. `seed` (default: the recipe's)
    orders the data. `device`: auto (CUDA when present), cpu or cuda. `through_cache`:
    the converted model's forward reads K/V as the recipe's cache format returns them
    (evaluate/simulate.py, gradients straight through the rounding), so the factors learn
    to work with the quantized cache they will be served from; a no-op for a lossless cache."""

    files: list[str] = field(default_factory=lambda: ["default"])
    tokens: int = 65536
    heldout_tokens: int = 8192
    seq_len: int = 512
    batch: int = 8
    steps: int = 200
    lr: float = 5e-5
    warmup_steps: int | None = None
    seed: int | None = None
    max_seconds: float = 600.0
    device: str = "auto"
    through_cache: bool = True


HEAL_DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Recipe:
    layers: list[LayerRule]
    model: str | None = None
    seed: int = 0
    weight_dtype: str = "bfloat16"  # the saved tensors, converted factors included
    cache_dtype: str = "bf16"
    sink_tokens: int = 1
    k_scale: bool = True  # a latent K on a QK-norm model caches its norm factor (layout.py)
    calibration: Calibration = field(default_factory=Calibration)
    eval: EvalSpec = field(default_factory=EvalSpec)
    budget: Budget | None = None
    rank_limits: RankLimits = field(default_factory=RankLimits)
    heal: HealSpec | None = None
    source: str = ""
    raw: dict = field(default_factory=dict)

    def rules_for(self, cfg: ModelConfig, i: int) -> dict[str, ComponentRule]:
        out: dict[str, ComponentRule] = {}
        for rule in self.layers:
            if rule.select.matches(cfg, i):
                for t in ("k", "v"):
                    if getattr(rule, t) is not None:
                        out[t] = getattr(rule, t)
        return out


def _keys(d, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise TPAError(f"{where}: expected a mapping, got {type(d).__name__}")
    bad = sorted(set(d) - allowed)
    if bad:
        raise TPAError(f"{where}: unknown key {bad[0]!r}; valid: {', '.join(sorted(allowed))}")
    return d


def _int(v, where: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise TPAError(f"{where}: {v!r} is not valid; expected an integer >= {lo}")
    return v


def _rank(v, where: str) -> RankSpec:
    if v is None:
        return RankSpec("auto")
    if v == "budget":
        return RankSpec("budget")
    if isinstance(v, int) and not isinstance(v, bool):
        return RankSpec("fixed", _int(v, where))
    if isinstance(v, dict):
        _keys(v, {"energy"}, where)
        e = v.get("energy")
        if not isinstance(e, (int, float)) or not 0 < e <= 1:
            raise TPAError(f"{where}.energy: {e!r} is not valid; expected 0 < energy <= 1")
        return RankSpec("energy", float(e))
    raise TPAError(f"{where}: {v!r} is not valid; expected an integer, {{energy: 0.99}} or budget")


def _component(d, where: str) -> ComponentRule | None:
    if d is None or d == "keep":
        return None
    _keys(d, {"method", "rank", "params"}, where)
    if "method" not in d:
        raise TPAError(f"{where}: missing key 'method'")
    from .methods import get_method

    try:
        cls = get_method(d["method"])
    except TPAError as e:
        raise TPAError(f"{where}.method: {e}") from e
    params = d.get("params") or {}
    cls(params, where=where)  # validates parameter names now, not mid-conversion
    return ComponentRule(d["method"], _rank(d.get("rank"), f"{where}.rank"), params)


def _positive_number(v, where: str) -> float:
    """A number > 0. YAML 1.1 reads `1e-4` (no dot) as a string, so numeric strings count."""
    import math

    try:
        x = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else math.nan
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x <= 0:
        raise TPAError(f"{where}: {v!r} is not valid; expected a number > 0")
    return x


def _heal(d, rules: list[LayerRule], seed: int, source: str) -> HealSpec | None:
    """The `heal:` section, checked whole before any work (the device too)."""
    if d is None:
        return None
    w = f"{source}: heal"
    _keys(d, set(HealSpec.__dataclass_fields__), w)
    h = HealSpec(**d)
    if not isinstance(h.files, list) or not all(isinstance(f, str) for f in h.files):
        raise TPAError(f"{w}.files: {h.files!r} is not valid; expected a list of paths or [default]")
    _int(h.seq_len, f"{w}.seq_len", 2)
    _int(h.tokens, f"{w}.tokens", h.seq_len)
    _int(h.heldout_tokens, f"{w}.heldout_tokens", h.seq_len)
    _int(h.batch, f"{w}.batch")
    _int(h.steps, f"{w}.steps")
    h.lr = _positive_number(h.lr, f"{w}.lr")
    h.max_seconds = _positive_number(h.max_seconds, f"{w}.max_seconds")
    h.warmup_steps = h.steps // 10 if h.warmup_steps is None else _int(h.warmup_steps, f"{w}.warmup_steps", 0)
    if h.warmup_steps >= h.steps:
        raise TPAError(f"{w}.warmup_steps: {h.warmup_steps} is not valid; expected fewer than steps ({h.steps})")
    if h.seed is None:
        h.seed = seed
    elif isinstance(h.seed, bool) or not isinstance(h.seed, int):
        raise TPAError(f"{w}.seed: {h.seed!r} is not valid; expected an integer")
    if not isinstance(h.through_cache, bool):
        raise TPAError(f"{w}.through_cache: {h.through_cache!r} is not valid; expected true or false")
    if h.device not in HEAL_DEVICES:
        raise TPAError(f"{w}.device: {h.device!r} is not valid; valid: {', '.join(HEAL_DEVICES)}")
    if h.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TPAError(f"{w}.device: 'cuda' was asked but no CUDA device is available; valid here: auto, cpu")
    if all(r.k is None and r.v is None for r in rules):
        raise TPAError(
            f"{w}: the recipe converts no K/V projection (every rule keeps them), so there is "
            "nothing to heal; remove heal or convert a layer"
        )
    return h


def _selector(v, where: str) -> Selector:
    if v in (None, "all"):
        return Selector("all")
    _keys(v, {"type", "layers", "pattern"}, where)
    if len(v) != 1:
        raise TPAError(f"{where}: give exactly one of type, layers, pattern")
    ((k, val),) = v.items()
    if k == "type":
        if val not in ("sliding", "global"):
            raise TPAError(f"{where}.type: {val!r} is not valid; valid: sliding, global")
        return Selector("type", val)
    if k == "layers":
        idx = set()
        for part in str(val).split(","):
            try:
                a, _, b = part.strip().partition("-")
                idx.update(range(int(a), int(b or a) + 1))
            except ValueError:
                raise TPAError(f'{where}.layers: {val!r} is not valid; expected e.g. "0-5,17"') from None
        return Selector("layers", idx)
    return Selector("pattern", str(val))


_TOP_KEYS = {
    "model",
    "seed",
    "weight_dtype",
    "cache_dtype",
    "cache",
    "calibration",
    "eval",
    "budget",
    "layers",
    "description",
    "sink_tokens",
    "k_scale",
    "rank_limits",
    "heal",
}


def parse_recipe(d: dict, source: str = "<recipe>") -> Recipe:
    """A recipe document checked key by key (the first bad one raises), in the order the checks run."""
    _keys(d, _TOP_KEYS, source)
    rules = _rules(d, source)
    wd = _weight_dtype(d, source)
    cd = _cache_dtype(d, source)
    calib = _calibration(d, source)
    ev = EvalSpec(**_keys(d.get("eval") or {}, {"files", "seq_len", "max_windows"}, f"{source}: eval"))
    budget = _budget(d, source)
    if budget is None and any(c is not None and c.rank.kind == "budget" for r in rules for c in (r.k, r.v)):
        raise TPAError(f"{source}: a rank says 'budget' but there is no top-level 'budget' key")
    limits = _rank_limits(d, source)
    seed = _seed(d, source)
    sink = _int(d.get("sink_tokens", 1), f"{source}: sink_tokens", 0)
    ks = d.get("k_scale", True)
    if not isinstance(ks, bool):
        raise TPAError(f"{source}: k_scale {ks!r} is not valid; expected true or false")
    heal = _heal(d.get("heal"), rules, seed, source)
    return Recipe(
        layers=rules,
        model=d.get("model"),
        seed=seed,
        weight_dtype=wd,
        cache_dtype=cd,
        sink_tokens=sink,
        k_scale=ks,
        calibration=calib,
        eval=ev,
        budget=budget,
        rank_limits=limits,
        heal=heal,
        source=source,
        raw=d,
    )


def _rules(d: dict, source: str) -> list[LayerRule]:
    """The `layers:` list, a non-empty list of {select, k, v} rules."""
    if "layers" not in d or not isinstance(d["layers"], list) or not d["layers"]:
        raise TPAError(f"{source}: 'layers' must be a non-empty list of rules")
    rules = []
    for j, r in enumerate(d["layers"]):
        w = f"{source}: layers[{j}]"
        _keys(r, {"select", "k", "v"}, w)
        rules.append(
            LayerRule(
                _selector(r.get("select"), f"{w}.select"),
                _component(r.get("k"), f"{w}.k"),
                _component(r.get("v"), f"{w}.v"),
            )
        )
    return rules


def _weight_dtype(d: dict, source: str) -> str:
    wd = d.get("weight_dtype", "bfloat16")
    if wd not in WEIGHT_DTYPES:
        raise TPAError(f"{source}: weight_dtype {wd!r} is not valid; valid: {', '.join(WEIGHT_DTYPES)}")
    return wd


def _cache_dtype(d: dict, source: str) -> str:
    """The cache format's canonical name, from `cache:` or `cache_dtype:` (one of them; default bf16)."""
    if "cache" in d and "cache_dtype" in d:
        raise TPAError(f"{source}: give cache_dtype or cache, not both")
    if "cache" in d:
        return spec_from_recipe(d["cache"], f"{source}: cache").name
    return spec_from_recipe(d.get("cache_dtype", "bf16"), f"{source}: cache_dtype").name


def _calibration(d: dict, source: str) -> Calibration:
    cal = _keys(d.get("calibration") or {}, {"files", "tokens", "seq_len", "heldout_tokens"}, f"{source}: calibration")
    calib = Calibration(**cal)
    _int(calib.tokens, f"{source}: calibration.tokens", 16)
    _int(calib.seq_len, f"{source}: calibration.seq_len", 2)
    _int(calib.heldout_tokens, f"{source}: calibration.heldout_tokens", 0)
    return calib


def _budget(d: dict, source: str) -> Budget | None:
    """The `budget:` block, or None without one."""
    if d.get("budget") is None:
        return None
    b = _keys(d["budget"], {"fraction", "context", "by", "kl_windows"}, f"{source}: budget")
    if not isinstance(b.get("fraction"), (int, float)) or not 0 < b["fraction"] <= 1:
        raise TPAError(f"{source}: budget.fraction {b.get('fraction')!r} is not valid; expected 0 < f <= 1")
    if b.get("by", "error") not in BUDGET_BY:
        raise TPAError(f"{source}: budget.by {b['by']!r} is not valid; valid: {', '.join(BUDGET_BY)}")
    return Budget(
        float(b["fraction"]),
        _int(b.get("context", 32768), f"{source}: budget.context"),
        b.get("by", "error"),
        _int(b.get("kl_windows", 4), f"{source}: budget.kl_windows"),
    )


def _rank_limits(d: dict, source: str) -> RankLimits:
    """`rank_limits:`: a multiple every rank rounds to and a cap, one for both K and V or one each."""
    rl = _keys(d.get("rank_limits") or {}, {"multiple", "max"}, f"{source}: rank_limits")
    mult = _int(rl.get("multiple", 1), f"{source}: rank_limits.multiple")
    mx = rl.get("max")
    if isinstance(mx, dict):
        _keys(mx, {"k", "v"}, f"{source}: rank_limits.max")
        caps = {t: None if mx.get(t) is None else _int(mx[t], f"{source}: rank_limits.max.{t}") for t in "kv"}
    else:
        caps = dict.fromkeys("kv", None if mx is None else _int(mx, f"{source}: rank_limits.max"))
    for t, hi in caps.items():
        if hi is not None and hi < mult:
            raise TPAError(
                f"{source}: rank_limits.max ({t}) {hi} is below rank_limits.multiple {mult}; valid: max >= multiple"
            )
    return RankLimits(mult, caps)


def _seed(d: dict, source: str) -> int:
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TPAError(f"{source}: seed {seed!r} is not valid; expected an integer")
    return seed


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise TPAError(f"{p}: recipe file not found")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise TPAError(f"{p}: not UTF-8 text (byte {e.start}); a recipe is a YAML text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise TPAError(f"{p}:{where} invalid YAML ({getattr(e, 'problem', e)})") from e
    return parse_recipe(d or {}, str(p))


def validate_for_model(recipe: Recipe, cfg: ModelConfig) -> None:
    """Checks that need the model: ranks in range, methods that apply, the cache's groups."""
    from .layout import original_layouts
    from .methods import get_method

    try:
        original_layouts(cfg, recipe.cache_dtype)
    except TPAError as e:
        raise TPAError(f"{recipe.source}: {'cache' if 'cache' in recipe.raw else 'cache_dtype'}: {e}") from None
    for i in range(cfg.num_layers):
        for t, rule in recipe.rules_for(cfg, i).items():
            m = get_method(rule.method)(rule.params, seed=recipe.seed)
            hi = m.max_rank(cfg)
            if rule.rank.kind == "fixed" and not 1 <= rule.rank.value <= hi:
                raise TPAError(
                    f"{recipe.source}: layer {i} {t}: rank {int(rule.rank.value)} out of range "
                    f"for {rule.method} on this model; valid: 1..{hi}"
                )
            lim = recipe.rank_limits
            if rule.rank.kind == "fixed" and (
                rule.rank.value % lim.multiple or (lim.cap(t) is not None and rule.rank.value > lim.cap(t))
            ):
                raise TPAError(
                    f"{recipe.source}: layer {i} {t}: rank {int(rule.rank.value)} is outside "
                    f"rank_limits; valid: {lim.describe(t)}"
                )
    n = cfg.num_layers
    for r, rule in enumerate(recipe.layers):
        where = f"{recipe.source}: layers[{r}].select"
        if rule.select.kind == "layers" and max(rule.select.value) >= n:
            extra = sorted(i for i in rule.select.value if i >= n)
            raise TPAError(
                f"{where}.layers names layer {extra[0]}{'..' + str(extra[-1]) if len(extra) > 1 else ''}; "
                f"this model has {n} layers (valid: 0..{n - 1})"
            )
        if rule.select.kind == "pattern" and not any(rule.select.matches(cfg, i) for i in range(n)):
            raise TPAError(f"{where}.pattern {rule.select.value!r} matches no layer of this model (layers 0..{n - 1})")
    if any(cfg.layer_types[i] == "sliding" for i in range(cfg.num_layers)) is False:
        for r in recipe.layers:
            if r.select.kind == "type" and r.select.value == "sliding":
                raise TPAError(
                    f"{recipe.source}: select type 'sliding' matches no layer: {cfg.family} has only global layers"
                )
