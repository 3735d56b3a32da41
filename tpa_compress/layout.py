"""The spine: what each layer caches per token, and the one function that prices it.

`analyze` prices candidate layouts with `cache_bytes`, `convert` writes one
`LayerLayout` per layer into config.json's `tpa` section, `generate` allocates exactly
that cache, and reports quote it. Nothing else computes cache sizes.

Component kinds (for K or V of one layer, `heads` = KV heads, `dim` = head_dim):
- full            the original K/V: heads * dim values per token.
- latent          a rank-r latent of the whole heads*dim vector (K: pre-norm, rebuilt
                  as up-project -> QK-norm -> RoPE; V: up-projection folded into o_proj).
                  r values per token.
- tpa_fixed       TPA with a fixed head factor A (R x heads, stored in the weights):
                  caches the R feature factors b_r: R * dim values.
- tpa_contextual  TPA with contextual A(x): caches a_r and b_r: R * (heads + dim).

`k_scale` (per layer, a latent K on a model with QK-norm; recipes' `k_scale`, default
true): the cache also keeps each entry's QK-norm factor 1 / rms(U z + b), fp32 per KV head
(4 bytes each), computed once when the entry is written. RoPE is applied to a full K
once, at write time; a latent K is rebuilt, normed and rotated at every read, and the
norm's sum of squares over the rebuilt key is a large part of that per-read work
(docs/kernels.md).

`sink` (per layer): the first `sink` positions of every sequence keep their exact K and V
(IntactKV-style, arXiv 2403.01241). Gemma is trained with BOS first, and the BOS token is
an attention sink that most heads attend to heavily; its K/V are outliers a low-rank
basis fitted to ordinary tokens reconstructs badly. Measured on Gemma 3 270M (BOS-led
512-token windows): K rank 128 on all layers +51.1% perplexity without the sink, +3.2%
with it; V rank 128 on the global layers +28.0% vs +2.8% (docs/benchmarks.md). The
sink costs `sink` full tokens per layer, allocated once.

`cache_dtype` (per layer): a cache format of `tpa_compress.cache_formats` and, for a
grouped one (int4, int3, int2), its parameters: the canonical spec string ("int4", or
"int4:recent=32,rotate=hadamard"). The formats' numbers price every byte: values at the
format's bits, scales and zeros per group, a grouped format's bf16 recent window
(min(recent + group - 1, context) tokens, allocated once) and its `sink` leading columns, the exact sink tokens
(bf16 in a lossy format) and the k_scale factors. config.json keeps the dtype in
`cache_dtype` and a grouped format's parameters in `cache`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .cache_formats import CacheSpec, format_names, parse_spec, spec_from
from .config import ModelConfig
from .errors import TPAError

KINDS = ("full", "latent", "tpa_fixed", "tpa_contextual")
CACHE_DTYPES = format_names()  # the registered cache formats (cache_formats/); their numbers price bytes
K_SCALE_BYTES = 4  # a latent K's cached QK-norm factor, per KV head (fp32)


@dataclass(frozen=True)
class Component:
    kind: str
    heads: int
    dim: int
    rank: int = 0  # latent r, or TPA R; unused for full

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TPAError(f"unknown component kind {self.kind!r}; valid: {', '.join(KINDS)}")
        limit = {
            "latent": self.heads * self.dim,
            "tpa_fixed": self.heads * self.dim,
            "tpa_contextual": self.heads * self.dim,
        }.get(self.kind)
        if limit is not None and not 1 <= self.rank <= limit:
            raise TPAError(f"{self.kind} rank {self.rank} out of range; valid: 1..{limit}")

    @property
    def values_per_token(self) -> int:
        return {
            "full": self.heads * self.dim,
            "latent": self.rank,
            "tpa_fixed": self.rank * self.dim,
            "tpa_contextual": self.rank * (self.heads + self.dim),
        }[self.kind]


@dataclass(frozen=True)
class LayerLayout:
    k: Component
    v: Component
    window: int | None = None  # None: global layer (holds the whole context)
    cache_dtype: str = "bf16"
    sink: int = 0  # leading positions whose factorized K/V are kept exact
    k_scale: bool = False  # a latent K's QK-norm factor cached per entry (fp32 per KV head)

    def __post_init__(self):
        spec = parse_spec(self.cache_dtype, "cache dtype")
        object.__setattr__(self, "cache_dtype", spec.name)  # canonical
        if spec.format.grouped:
            if self.window is not None and self.window % spec.group:
                raise TPAError(
                    f"cache group {spec.group} does not divide this layer's sliding window "
                    f"{self.window}; valid: a divisor of {self.window}"
                )
            w = self.v.values_per_token
            if spec.value_axis(self.v.kind) == "token" and w % spec.group:
                raise TPAError(
                    f"cache group {spec.group} does not divide the {self.v.kind} V width {w} "
                    f"(values grouped per token); valid: a divisor of {w}"
                )
        if isinstance(self.sink, bool) or not isinstance(self.sink, int) or self.sink < 0:
            raise TPAError(f"sink {self.sink!r} is not valid; expected an integer >= 0")
        if self.k_scale is not False and (self.k_scale is not True or self.k.kind != "latent"):
            raise TPAError(
                f"k_scale {self.k_scale!r} is not valid for a {self.k.kind} K; valid: true with a latent K, else false"
            )

    @property
    def cache(self) -> CacheSpec:
        return parse_spec(self.cache_dtype, "cache dtype")

    @property
    def sink_held(self) -> int:
        """Leading positions kept exact: `sink` when K or V is factorized (a full layer
        is exact already), else 0."""
        return self.sink if self.k.kind != "full" or self.v.kind != "full" else 0

    def sink_bytes(self) -> float:
        """Bytes of the exact sink tokens: full K and V of the `sink_held` positions (a
        full component too: its sink rows then need no gather per decode step; exact
        means unquantized: bf16 in a one-byte cache)."""
        if not self.sink_held:
            return 0
        fmt = self.cache.format
        size = 2 if fmt.lossy else fmt.bits // 8
        return self.sink * sum(c.heads * c.dim * size for c in (self.k, self.v))

    def bytes_per_token(self) -> float:
        """Bytes each further token adds (a grouped format's scales amortized over their group)."""
        spec = self.cache
        fmt = spec.format
        stats = (
            (lambda c: c.values_per_token * fmt.stat_bytes / spec.group) if fmt.grouped else (lambda c: fmt.stat_bytes)
        )
        return (
            sum(c.values_per_token * fmt.bits / 8 + stats(c) for c in (self.k, self.v))
            + K_SCALE_BYTES * self.k.heads * self.k_scale
        )

    def bytes_held(self, context: int) -> float:
        """Bytes of one sequence's cache at `context` tokens, every byte: values, scales and
        zeros (whole groups: a partial group has its scales allocated), k_scale factors, a
        grouped format's bf16 recent window and the exact sink tokens."""
        held = self.tokens_held(context)
        spec = self.cache
        fmt = spec.format
        if not fmt.grouped:
            return self.bytes_per_token() * held + self.sink_bytes()
        g = spec.group
        total = K_SCALE_BYTES * self.k.heads * self.k_scale * held + self.sink_bytes()
        for c, axis in ((self.k, "channel"), (self.v, spec.value_axis(self.v.kind))):
            w = c.values_per_token
            groups = math.ceil(held / g) * w if axis == "channel" else held * (w // g)
            total += held * w * fmt.bits / 8 + groups * fmt.stat_bytes
            total += min(spec.recent + g - 1, context) * w * 2  # the bf16 recent window
            total += min(spec.sink, context) * w * 2  # the spec's bf16 leading columns
        return total

    def tokens_held(self, context: int) -> int:
        return self.tokens_held_in(self.window, context)

    @staticmethod
    def tokens_held_in(window: int | None, context: int) -> int:
        """Tokens a layer with this window holds at `context` (a global layer: all)."""
        return context if window is None else min(context, window)

    def to_dict(self) -> dict:
        spec = self.cache
        d = {**asdict(self), "cache_dtype": spec.dtype}
        return {**d, "cache": spec.params()} if spec.params() else d

    @classmethod
    def from_dict(cls, d: dict) -> LayerLayout:
        spec = spec_from(d.get("cache_dtype", "bf16"), d.get("cache"), "tpa layer cache")
        return cls(
            k=Component(**d["k"]),
            v=Component(**d["v"]),
            window=d.get("window"),
            cache_dtype=spec.name,
            sink=d.get("sink", 0),
            k_scale=d.get("k_scale", False),
        )


def k_scale_for(cfg: ModelConfig, k: Component) -> bool:
    """Whether a layer with this K caches its QK-norm factor: a latent K on a model with
    QK-norm (Gemma 3) always does (layout.py's docstring says why)."""
    return k.kind == "latent" and cfg.qk_norm


def original_layouts(cfg: ModelConfig, cache_dtype: str = "bf16") -> list[LayerLayout]:
    full = Component("full", cfg.num_kv_heads, cfg.head_dim)
    return [LayerLayout(full, full, cfg.window(i), cache_dtype) for i in range(cfg.num_layers)]


def cache_bytes(layouts: list[LayerLayout], context: int, batch: int = 1) -> float:
    """Total KV-cache bytes for `batch` sequences of `context` tokens (window-aware; the
    exact sink tokens are a separate, always-allocated buffer)."""
    return batch * sum(lay.bytes_held(context) for lay in layouts)


def layouts_to_config(layouts: list[LayerLayout]) -> dict:
    return {"layers": [lay.to_dict() for lay in layouts]}


def layouts_from_config(tpa: dict) -> list[LayerLayout]:
    return [LayerLayout.from_dict(d) for d in tpa["layers"]]


def check_tpa_section(tpa, cfg: ModelConfig, where: str) -> None:
    """A converted folder's `tpa` section, checked against its model before anything is
    built: one layout per layer, each valid; errors name the file and the entry."""
    layers = tpa.get("layers") if isinstance(tpa, dict) else None
    if not isinstance(layers, list):
        raise TPAError(f"{where}: tpa.layers is missing or not a list")
    if len(layers) != cfg.num_layers:
        raise TPAError(f"{where}: tpa.layers has {len(layers)} entries for {cfg.num_layers} layers")
    for i, d in enumerate(layers):
        try:
            LayerLayout.from_dict(d)
        except TPAError as e:
            raise TPAError(f"{where}: tpa.layers[{i}]: {e}") from None
        except (KeyError, TypeError) as e:
            raise TPAError(f"{where}: tpa.layers[{i}] is malformed ({type(e).__name__}: {e})") from None


def shrink_check(c: Component) -> str | None:
    """Why a component cannot shrink the cache, or None when it can."""
    full = c.heads * c.dim
    if c.values_per_token >= full and c.kind != "full":
        why = f"{c.kind} rank {c.rank} caches {c.values_per_token} values per token, not fewer than the original {full}"
        if c.kind == "tpa_contextual" and c.heads == 1:
            why += " (with one KV head, caching both a and b never shrinks the cache)"
        return why
    return None
