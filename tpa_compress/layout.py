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
norm's sum of squares over the rebuilt key was a large part of that per-read work
(docs/benchmarks.md, tenth run).

`sink` (per layer): the first `sink` positions of every sequence keep their exact K and V
(IntactKV-style, arXiv 2403.01241). Gemma is trained with BOS first, and the BOS token is
an attention sink that most heads attend to heavily; its K/V are outliers a low-rank
basis fitted to ordinary tokens reconstructs badly. Measured on Gemma 3 270M (BOS-led
512-token windows): K rank 128 on all layers +51.1% perplexity without the sink, +3.2%
with it; V rank 128 on the global layers +28.0% vs +2.8% (docs/benchmarks.md). The
sink costs `sink` full tokens per layer, allocated once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .config import ModelConfig
from .errors import TPAError

KINDS = ("full", "latent", "tpa_fixed", "tpa_contextual")
# Bytes per cached value, and per-token-per-component scale overhead (one fp16 scale).
CACHE_DTYPES = {"fp32": (4, 0), "bf16": (2, 0), "fp16": (2, 0), "fp8": (1, 0), "int8": (1, 2)}
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
        limit = {"latent": self.heads * self.dim, "tpa_fixed": self.heads * self.dim,
                 "tpa_contextual": self.heads * self.dim}.get(self.kind)
        if limit is not None and not 1 <= self.rank <= limit:
            raise TPAError(f"{self.kind} rank {self.rank} out of range; valid: 1..{limit}")

    @property
    def values_per_token(self) -> int:
        return {"full": self.heads * self.dim, "latent": self.rank,
                "tpa_fixed": self.rank * self.dim,
                "tpa_contextual": self.rank * (self.heads + self.dim)}[self.kind]


@dataclass(frozen=True)
class LayerLayout:
    k: Component
    v: Component
    window: int | None = None  # None: global layer (holds the whole context)
    cache_dtype: str = "bf16"
    sink: int = 0  # leading positions whose factorized K/V are kept exact
    k_scale: bool = False  # a latent K's QK-norm factor cached per entry (fp32 per KV head)

    def __post_init__(self):
        if self.cache_dtype not in CACHE_DTYPES:
            raise TPAError(f"cache dtype {self.cache_dtype!r} is not valid; valid: "
                           f"{', '.join(CACHE_DTYPES)}")
        if isinstance(self.sink, bool) or not isinstance(self.sink, int) or self.sink < 0:
            raise TPAError(f"sink {self.sink!r} is not valid; expected an integer >= 0")
        if self.k_scale is not False and (self.k_scale is not True or self.k.kind != "latent"):
            raise TPAError(f"k_scale {self.k_scale!r} is not valid for a {self.k.kind} K; valid: true with a "
                           f"latent K, else false")

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
        size, scale = CACHE_DTYPES[self.cache_dtype]
        if size == 1:
            size, scale = 2, 0
        return self.sink * sum(c.heads * c.dim * size + scale for c in (self.k, self.v))

    def bytes_per_token(self) -> float:
        size, scale = CACHE_DTYPES[self.cache_dtype]
        return (sum(c.values_per_token * size + scale for c in (self.k, self.v))
                + K_SCALE_BYTES * self.k.heads * self.k_scale)

    def tokens_held(self, context: int) -> int:
        return self.tokens_held_in(self.window, context)

    @staticmethod
    def tokens_held_in(window: int | None, context: int) -> int:
        """Tokens a layer with this window holds at `context` (a global layer: all)."""
        return context if window is None else min(context, window)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerLayout":
        return cls(k=Component(**d["k"]), v=Component(**d["v"]), window=d.get("window"),
                   cache_dtype=d.get("cache_dtype", "bf16"), sink=d.get("sink", 0),
                   k_scale=d.get("k_scale", False))


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
    return batch * sum(lay.bytes_per_token() * lay.tokens_held(context) + lay.sink_bytes()
                       for lay in layouts)


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
        why = (f"{c.kind} rank {c.rank} caches {c.values_per_token} values per token, not fewer "
               f"than the original {full}")
        if c.kind == "tpa_contextual" and c.heads == 1:
            why += " (with one KV head, caching both a and b never shrinks the cache)"
        return why
    return None
