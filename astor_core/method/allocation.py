"""Budget allocation primitives of the scheduler: softmax shares, largest-remainder budgets
and O(N) top-k selection with random tie-breaking.

Public API: :func:`softmax`, :func:`largest_remainder`, :func:`top_k_random_ties`.
"""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax(x / temperature).

    >>> softmax(np.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    z = np.asarray(x, dtype=np.float64) / temperature
    z = z - np.max(z)
    e = np.exp(z)
    return e / e.sum()


def largest_remainder(shares: np.ndarray, total: int, capacity: np.ndarray) -> np.ndarray:
    """Integer budgets proportional to ``shares`` summing to min(total, capacity of tasks with a share),
    none above its capacity (overflow is re-split over the tasks with room).

    >>> largest_remainder(np.array([0.5, 0.3, 0.2]), 10, np.array([100, 100, 100])).tolist()
    [5, 3, 2]
    >>> largest_remainder(np.array([0.9, 0.1]), 10, np.array([3, 100])).tolist()
    [3, 7]
    """
    shares = np.asarray(shares, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    budgets = np.zeros(len(shares), dtype=np.int64)
    open_ = (capacity > 0) & (shares > 0)
    remaining = int(min(total, capacity[open_].sum()))
    while remaining > 0 and open_.any():
        w = np.where(open_, shares, 0.0)
        raw = w / w.sum() * remaining
        add = np.floor(raw).astype(np.int64)
        left = remaining - int(add.sum())
        if left > 0:
            frac = np.where(open_, raw - add, -1.0)
            order = np.argsort(-frac, kind="stable")[:left]
            add[order] += 1
        room = capacity - budgets
        add = np.minimum(add, room)
        budgets += add
        remaining -= int(add.sum())
        open_ &= budgets < capacity
    return budgets


def top_k_random_ties(
    scores: np.ndarray, k: int, rng: np.random.Generator, presample: int = 8192
) -> np.ndarray:
    """Indices of the k largest scores, ties at the cut broken at random; O(N), exact.

    On a large array the k-th largest value q of a strided subset (<= the true k-th largest)
    pre-filters candidates, so ``np.argpartition`` only runs on the few scores above q; this also
    avoids introselect's slow path on arrays made mostly of one tied value.

    >>> rng = np.random.default_rng(0)
    >>> sorted(top_k_random_ties(np.array([0.1, 0.9, 0.5, 0.7]), 2, rng).tolist())
    [1, 3]
    >>> x = np.full(100_000, 0.5); x[[7, 70]] = 0.9
    >>> out = top_k_random_ties(x, 5, rng, presample=1000)
    >>> {7, 70} <= set(out.tolist()) and len(set(out.tolist())) == 5
    True
    """
    n = scores.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        return rng.permutation(n)
    stride = n // presample
    if stride >= 2 and n // stride >= k:
        sub = scores[::stride]
        q = np.partition(sub, sub.size - k)[sub.size - k]
        above = np.flatnonzero(scores > q)
        if above.size >= k:
            return above[_top_k_exact(scores[above], k, rng)]
        equal = np.flatnonzero(scores == q)
        return np.concatenate([above, rng.choice(equal, size=k - above.size, replace=False)])
    return _top_k_exact(scores, k, rng)


def _top_k_exact(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = scores.shape[0]
    if k >= n:
        return rng.permutation(n)
    part = np.argpartition(scores, n - k)
    cut = scores[part[n - k]]
    above = np.flatnonzero(scores > cut)
    need = k - above.size
    if need == 0:
        return above
    equal = np.flatnonzero(scores == cut)
    return np.concatenate([above, rng.choice(equal, size=need, replace=False)])
