"""bench/bench_convert_memory.py's shapes are Gemma 3's: the 1B's parameter count is the
published one (999,885,952), and each shape builds a config the converter accepts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_convert_memory as B  # noqa: E402


def test_1b_shape_has_the_published_parameter_count():
    assert B.param_count(B.model_config("1b")) == 999_885_952


@pytest.mark.parametrize("shape", list(B.SHAPES))
def test_shapes_are_gemma3_configs(shape):
    cfg = B.model_config(shape)
    assert cfg.vocab_size == 262144 and cfg.num_heads % cfg.num_kv_heads == 0
    assert cfg.layer_types[5] == "global" and cfg.layer_types[:5] == ["sliding"] * 5
    assert B.model_config(shape, layers=12).num_layers == 12
