"""Readable plain-torch forward passes: one block file per family, one shared skeleton."""

from .transformer import Transformer, build_model

__all__ = ["Transformer", "build_model"]
