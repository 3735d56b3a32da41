"""A forward pass that overflows is an error, never a printed perplexity or an empty
generation (float16 on Gemma overflows: its activations exceed 65504)."""

import pytest
import torch

from test_runtime import tiny_model
from tpa_compress.errors import TPAError
from tpa_compress.evaluate.perplexity import perplexity
from tpa_compress.runtime import Runner


def overflowing(family="gemma3"):
    m = tiny_model(family)[1].to(torch.float16)
    with torch.no_grad():
        m.embed_tokens.weight.fill_(3e4)  # x sqrt(hidden) in float16: inf
    return m


def test_perplexity_refuses_inf():
    w = torch.randint(3, 60, (2, 16))
    with pytest.raises(TPAError, match="inf/nan logits in float16; float16 overflows"):
        perplexity(overflowing(), w, True)


def test_generate_refuses_inf():
    m = overflowing()
    r = Runner(m, 1, 32)
    with pytest.raises(TPAError, match="inf/nan logits in float16"):
        r.generate([[2, 5, 7]], 4)


def test_finite_model_passes():
    m = tiny_model("gemma3")[1]
    res = perplexity(m, torch.randint(3, 60, (2, 16)), True)
    assert res.perplexity == res.perplexity and res.perplexity > 1
