"""Calibration windows draw evenly from every domain of the default mix."""

from __future__ import annotations

import pytest
import torch

from tpa_compress.convert import _windows
from tpa_compress.data import calib_domains, default_calib_files, read_texts
from tpa_compress.errors import TPAError
from tpa_compress.evaluate.perplexity import interleaved_windows, make_windows


class CharTok:
    """One token per character (ids = code points), BOS 0."""

    bos_id, add_bos = 0, True

    def encode(self, text, add_bos=False):
        return ([0] if add_bos else []) + [ord(c) for c in text]


def _text(w: torch.Tensor) -> str:
    return "".join(chr(int(t)) for t in w[1:])


def test_default_calibration_alternates_domains():
    tok, seq = CharTok(), 64
    win = _windows(tok, default_calib_files(), 6 * seq, seq)
    assert win.shape == (6, seq) and bool((win[:, 0] == 0).all())
    doms = calib_domains()
    py = read_texts(doms["python-docs"])
    prose = read_texts(doms["prose"])
    body = seq - 1
    for k in range(6):
        src = py if k % 2 == 0 else prose
        i = k // 2
        assert _text(win[k]) == src[i * body : (i + 1) * body], k


def test_a_recipe_budget_smaller_than_one_domain_still_sees_both():
    # 32768 tokens of 512: the shipped recipes' budget; the python slice alone holds more.
    tok = CharTok()
    win = _windows(tok, default_calib_files(), 32768, 512)
    py, prose = (read_texts(f) for f in calib_domains().values())
    texts = [_text(w) for w in win]
    n_py = sum(t in py for t in texts)
    n_prose = sum(t in prose for t in texts)
    assert n_py == n_prose == win.shape[0] // 2


def test_interleaved_windows_one_stream_is_make_windows():
    ids = list(range(1, 1000))
    assert torch.equal(interleaved_windows([ids], 10, 0, 7), make_windows(ids, 10, 0, 7))
    assert torch.equal(interleaved_windows([ids], 10, None, None), make_windows(ids, 10, None, None))


def test_interleaved_windows_uneven_and_short_streams():
    a, b, short = list(range(100, 130)), list(range(200, 210)), [7, 8]
    w = interleaved_windows([a, b, short], 10, None, None)
    # a gives 3 windows, b one, short none: a0 b0 a1 a2
    assert [int(r[0]) for r in w] == [100, 200, 110, 120]
    assert interleaved_windows([short, short, short, short, short], 10, None, None).shape == (1, 10)
    with pytest.raises(TPAError, match="too short"):
        interleaved_windows([short, [1]], 10, None, None, source="x.txt")
