"""Cross products of test parameters, split between the tiers: `make test` runs every
combination; `make test-fast` (-m "not slow") runs a small covering set of them.

The fast share is chosen to keep what the cross product is for: with `pairs`, every pair
of values of any two axes still meets in some fast case; with `each`, every value of every
axis appears in one. The rest carry the `slow` marker, with their usual ids.
"""

from __future__ import annotations

import itertools

import pytest


def pairs(*axes, keep=()):
    """Every combination of `axes` (lists of values) as pytest.param, the fast ones a
    greedy all-pairs covering set (plus the tuples in `keep`)."""
    combos = list(itertools.product(*axes))
    todo = {p for c in combos for p in _pairs_of(c)}
    fast = set(keep)
    for c in fast:
        todo -= _pairs_of(c)
    while todo:
        best = max(combos, key=lambda c: len(_pairs_of(c) & todo))  # first of the best: stable
        fast.add(best)
        todo -= _pairs_of(best)
    return _params(combos, fast)


def each(*axes, keep=()):
    """Every combination of `axes` as pytest.param, the fast ones a rotation in which
    every value of every axis appears at least once (plus the tuples in `keep`)."""
    combos = list(itertools.product(*axes))
    n = max(len(a) for a in axes)
    fast = {tuple(a[(i + j) % len(a)] for j, a in enumerate(axes)) for i in range(n)} | set(keep)
    return _params(combos, fast)


def _pairs_of(combo):
    return {(i, a, j, b) for (i, a), (j, b) in itertools.combinations(enumerate(combo), 2)}


def _params(combos, fast):
    unknown = set(fast) - set(combos)
    assert not unknown, f"keep names combinations outside the cross product: {unknown}"
    return [pytest.param(*c) if c in fast else pytest.param(*c, marks=pytest.mark.slow) for c in combos]


def as_one(params):
    """The same cases with each combination as one tuple value, for a fixture's `params`."""
    return [pytest.param(p.values, marks=p.marks, id="-".join(map(str, p.values))) for p in params]
