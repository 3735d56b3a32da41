"""Cached generation: a static factorized KV cache, attention from the factors, sampling."""

from .cache import KVCache
from .runner import GenerateResult, Runner
from .sampling import SamplingParams, sample

__all__ = ["KVCache", "GenerateResult", "Runner", "SamplingParams", "sample"]
