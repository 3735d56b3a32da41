"""Cached generation: a static factorized KV cache, attention from the factors, sampling."""

from .cache import KVCache
from .cuda_decode import CudaBuild
from .kernels import TritonTuning
from .plan import DecodeOptions, fast_path_supports
from .runner import GenerateResult, Runner
from .sampling import SamplingParams, sample

__all__ = [
    "KVCache",
    "CudaBuild",
    "DecodeOptions",
    "GenerateResult",
    "Runner",
    "SamplingParams",
    "TritonTuning",
    "fast_path_supports",
    "sample",
]
