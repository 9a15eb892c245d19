"""Tests of astor_core.method.allocation: largest-remainder budgets and top-k with random ties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from astor_core.method.allocation import largest_remainder, top_k_random_ties


@settings(max_examples=100, deadline=None)
@given(
    shares=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=6).filter(
        lambda s: sum(s) > 0
    ),
    total=st.integers(0, 300),
    data=st.data(),
)
def test_largest_remainder_budgets(shares: list[float], total: int, data: st.DataObject) -> None:
    cap = np.array(
        data.draw(st.lists(st.integers(0, 200), min_size=len(shares), max_size=len(shares)))
    )
    w = np.asarray(shares) / sum(shares)
    b = largest_remainder(w, total, cap)
    assert b.dtype.kind == "i"
    assert np.all(b >= 0) and np.all(b <= cap)
    assert np.all(b[w == 0] == 0)
    assert b.sum() == min(total, cap[w > 0].sum())
    if np.all(cap >= total):  # capacities not binding: within one of the exact quota
        assert np.all(np.abs(b - w * total) < 1.0 + 1e-9)


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.25]), min_size=1, max_size=300),
    k=st.integers(0, 310),
    presample=st.integers(2, 50),
)
def test_top_k_is_exact(values: list[float], k: int, presample: int) -> None:
    x = np.asarray(values)
    idx = top_k_random_ties(x, k, np.random.default_rng(0), presample=presample)
    k = min(k, len(x))
    assert len(idx) == k == len(set(idx.tolist()))
    if 0 < k < len(x):
        assert x[idx].min() >= np.sort(x)[::-1][k - 1]
    assert sorted(x[idx].tolist()) == sorted(np.sort(x)[::-1][:k].tolist())


def test_ties_are_broken_at_random() -> None:
    x = np.zeros(50)
    seen = {
        tuple(sorted(top_k_random_ties(x, 3, np.random.default_rng(s)).tolist())) for s in range(10)
    }
    assert len(seen) > 5
