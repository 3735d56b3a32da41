"""Readable plain-torch forward passes: one file per family (its block and its `Family`
entry, models/family.py), one shared skeleton (transformer.py)."""

import importlib
import pkgutil

from .transformer import Transformer, build_model

# Every module of the folder is imported, so a family's @register runs: a new family is a
# new file, nothing else.
for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Transformer", "build_model"]
