"""Factorization methods: a plain registry, one small file per method.

    @register("activation_svd")
    class ActivationSVD(Method): ...

A method's docstring is its spec (what it factorizes, its parameters, a YAML
example); `tpa-compress methods` prints the first line of each. A method sees one
layer's weights and calibration statistics and returns factors plus a Component; it
reads no files and prints nothing.
"""

from __future__ import annotations

from ..errors import TPAError
from .base import Factorization, LayerInputs, Method, carry_bias

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    _load_builtin()
    if name not in METHODS:
        raise TPAError(f"unknown method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def all_methods() -> dict[str, type[Method]]:
    _load_builtin()
    return dict(sorted(METHODS.items()))


def _load_builtin() -> None:
    # Every module of this package but the plumbing is a method: importing it runs
    # its @register decorator. A new method is a new file, nothing else.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "layers"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["METHODS", "register", "get_method", "all_methods", "Method", "LayerInputs", "Factorization", "carry_bias"]
