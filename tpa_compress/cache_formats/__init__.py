"""KV-cache formats: a plain registry, one small file per format.

    @register("int4")
    class Int4(GroupedFormat): ...

A format's docstring is its spec. Each says how a cached value is stored: `storage` (the
torch dtype of its container), `bits` (bits per value that `layout.cache_bytes` prices),
`stat_bytes` (bytes of scale / zero per group), `quantize` / `dequantize`, and `backends`
(which decode backends of the runtime read it). Two kinds:

- per-token formats (fp32, bf16, fp16, fp8, int8): every entry is stored in the format
  as soon as it is written; a "group" is one token's K (or V) values (int8: one fp16 scale
  each).
- grouped formats (int4, int3, int2; `grouped = True`): KIVI-style asymmetric integers with an
  fp16 scale and zero per group of `CacheSpec.group` values, a bf16 recent window and an
  optional random-Hadamard rotation (`grouped.py` says how a cache of them works).

`CacheSpec` is what a layout or recipe chooses: the format plus a grouped format's
parameters. Its `name` is the canonical string ("int4", or "int4:recent=32,rotate=hadamard"
when a parameter is not the default), which `--cache-dtype`, `LayerLayout.cache_dtype` and
config.json's `tpa.cache_dtype` carry; `parse_spec` reads it back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from ..errors import TPAError

FORMATS: dict[str, CacheFormat] = {}


class CacheFormat:
    """A storage format for cache entries (see the package docstring)."""

    name: str = ""
    storage: torch.dtype = torch.float32
    bits: int = 32
    stat_bytes: int = 0  # bytes of scale / zero per group
    grouped: bool = False
    # the decode backends that read it (runtime/backends): "torch" (the reference, SDPA and
    # direct matmuls over `LayerCache.read`), "triton" (converts on load), "cuda" (bf16 only)
    backends: tuple[str, ...] = ("torch", "triton")

    @property
    def lossy(self) -> bool:
        """Rounds more than bf16 does: exact sink tokens and recent windows then stay bf16."""
        return self.bits < 16

    def quantize(self, x: torch.Tensor, dim: int = -1):
        """Values x (fp32), one group along `dim` -> (codes, scale or None, zero or None)."""
        return x.to(self.storage), None, None

    def dequantize(self, codes: torch.Tensor, scale, zero) -> torch.Tensor:
        """(codes, scale, zero) from `quantize` -> fp32 values."""
        return codes.float()


def register(name: str):
    def deco(cls):
        cls.name = name
        FORMATS[name] = cls()
        return cls

    return deco


def _load_builtin() -> None:
    # every module of this package but the plumbing is a format (its @register runs)
    import importlib
    import pkgutil

    names = [i.name for i in pkgutil.iter_modules(__path__) if i.name not in ("grouped", "hadamard")]
    for name in sorted(names, key=lambda n: BUILTIN_ORDER.index(n) if n in BUILTIN_ORDER else len(BUILTIN_ORDER)):
        importlib.import_module(f"{__name__}.{name}")


BUILTIN_ORDER = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "int3", "int2")  # listed in this order


def format_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(FORMATS)


def get_format(name: str) -> CacheFormat:
    _load_builtin()
    if name not in FORMATS:
        raise TPAError(f"cache dtype {name!r} is not valid; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


ROTATIONS = ("none", "hadamard")
VALUE_AXES = ("auto", "token", "channel")


@dataclass(frozen=True)
class CacheSpec:
    """A cache format and, for a grouped one, its parameters:

    group    values per scale/zero group: keys per channel over `group` consecutive tokens;
             values per token over `group` consecutive channels (a full V) or per channel
             like keys (a factorized V; `values` overrides).
    recent   tokens kept in bf16 besides whole groups: a token is read quantized once its
             key group is complete and older than the last `recent` tokens.
    rotate   none | hadamard: random +-1 signs then a normalized Walsh-Hadamard transform
             over each head's head_dim (a latent: its width, or power-of-two blocks), seed 0.
    values   auto | token | channel: how V groups (auto: token for a full V, else channel).
    sink     leading token columns never quantized (kept in bf16 beside the groups, and kept
             out of their group's statistics); default 1: the BOS of Gemma 3, SmolLM2 and
             Qwen2 is an outlier that widens the range of every channel of group 0 (int3 on
             Gemma 3 270M: +0.76% perplexity with sink=0, +0.23% with 1; docs/quality.md).
             Independent of a layout's exact sink.
    """

    dtype: str = "bf16"
    group: int = 32
    recent: int = 128
    rotate: str = "none"
    values: str = "auto"
    sink: int = 1

    @property
    def format(self) -> CacheFormat:
        return get_format(self.dtype)

    @property
    def name(self) -> str:
        """The canonical string: the dtype, then the parameters that differ from the defaults."""
        if not self.format.grouped:
            return self.dtype
        extra = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)[1:] if getattr(self, f.name) != f.default]
        return self.dtype + (":" + ",".join(extra) if extra else "")

    def params(self) -> dict:
        """The parameters (a grouped format's), as config.json's per-layer `cache` holds them."""
        return {f.name: getattr(self, f.name) for f in fields(self)[1:]} if self.format.grouped else {}

    def value_axis(self, v_kind: str) -> str:
        """How this spec groups a V of kind `v_kind`: token or channel."""
        if self.values != "auto":
            return self.values
        return "token" if v_kind == "full" else "channel"


def spec_from(dtype, params: dict | None = None, where: str = "cache") -> CacheSpec:
    """A checked CacheSpec from a dtype and a grouped format's parameters; errors name `where`."""
    if not isinstance(dtype, str):
        raise TPAError(f"{where}: dtype {dtype!r} is not valid; valid: {', '.join(format_names())}")
    try:
        fmt = get_format(dtype)
    except TPAError:
        raise TPAError(f"{where}: dtype {dtype!r} is not valid; valid: {', '.join(format_names())}") from None
    params = dict(params or {})
    valid = [f.name for f in fields(CacheSpec)[1:]]
    for k in params:
        if k not in valid:
            raise TPAError(f"{where}: unknown key {k!r}; valid: dtype, {', '.join(valid)}")
        if not fmt.grouped:
            raise TPAError(
                f"{where}: {k} is not valid for {dtype}, which takes no parameters; {k} applies to "
                f"{', '.join(n for n in format_names() if get_format(n).grouped)}"
            )
    for k in ("group", "recent", "sink"):
        v = params.get(k, getattr(CacheSpec, k))
        lo = 1 if k == "group" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise TPAError(f"{where}: {k} {v!r} is not valid; expected an integer >= {lo}")
    for k, valid_v in (("rotate", ROTATIONS), ("values", VALUE_AXES)):
        v = params.get(k, getattr(CacheSpec, k))
        if v not in valid_v:
            raise TPAError(f"{where}: {k} {v!r} is not valid; valid: {', '.join(valid_v)}")
    return CacheSpec(dtype, **params)


@functools.lru_cache(maxsize=256)
def parse_spec(text: str, where: str = "--cache-dtype") -> CacheSpec:
    """ "int4" or "int4:group=32,recent=0,rotate=hadamard" -> CacheSpec (checked)."""
    if not isinstance(text, str):
        raise TPAError(f"{where} {text!r} is not valid; valid: {', '.join(format_names())}")
    dtype, _, rest = text.partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        k, eq, v = part.partition("=")
        if not eq:
            raise TPAError(f"{where} {text!r}: {part!r} is not key=value; e.g. int4:group=32,recent=128")
        params[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else v.strip()
    if dtype not in format_names():
        raise TPAError(
            f"{where} {dtype!r} is not valid; valid: {', '.join(format_names())} "
            f"(grouped ones take parameters, e.g. int4:group=32,recent=128,rotate=hadamard)"
        )
    return spec_from(dtype, params, f"{where} {text!r}")


def split_specs(text: str) -> list[str]:
    """A comma-separated list of spec strings -> the strings: a part without a format name
    (key=value) continues the spec before it, so "bf16,int3:group=64,recent=32,int4" is
    ["bf16", "int3:group=64,recent=32", "int4"]."""
    out: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part and ":" not in part and out:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def spec_from_recipe(value, where: str) -> CacheSpec:
    """A recipe's `cache` (a mapping with dtype and parameters) or `cache_dtype` (a string)."""
    if isinstance(value, dict):
        if "dtype" not in value:
            raise TPAError(f"{where}: missing key 'dtype'")
        rest = {k: v for k, v in value.items() if k != "dtype"}
        return spec_from(value["dtype"], rest, where)
    return parse_spec(value, where)


__all__ = [
    "CacheFormat",
    "CacheSpec",
    "FORMATS",
    "register",
    "get_format",
    "format_names",
    "parse_spec",
    "spec_from",
    "spec_from_recipe",
    "split_specs",
]
