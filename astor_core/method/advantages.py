"""GRPO's group advantages, the one definition every consumer uses: the trainer's loss
(astor_core.policy.trainer), the utility's learning potential when feedback carries no
advantages (astor_core.method.utility), the UCB baseline (astor_core.method.scheduler) and
the simulated learners (astor_core.simulation).

``A_i = (R_i - mean R) / (std R + eps)`` within each group, with the unbiased std (ddof 1,
as TRL computes it) and ``eps`` = :data:`ADVANTAGE_EPS`; a group of one has std 0. Without
scaling (Dr. GRPO) only the centring is kept. docs/METHOD.md, section 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ADVANTAGE_EPS = 1e-4
"""Added to the group std before dividing (TRL's value): a constant group gets zero advantages."""


def group_advantages(
    rewards: Any,
    group_size: int | Sequence[int] | np.ndarray | None = None,
    *,
    scale: bool = True,
    eps: float = ADVANTAGE_EPS,
) -> np.ndarray:
    """Group advantages, in the layout of `rewards` (float64).

    `group_size` None: `rewards` is one group (1-D) or one group per row (2-D). An int: a
    1-D `rewards` holds groups of that size one after another. A sequence of ints: the sizes
    of consecutive groups of different lengths.

    >>> group_advantages([1.0, 0.0, 0.5, 0.5], 2, scale=False).tolist()
    [0.5, -0.5, 0.0, 0.0]
    >>> group_advantages([[1.0, 0.0], [0.3, 0.3]]).round(3).tolist()
    [[0.707, -0.707], [0.0, 0.0]]
    >>> group_advantages([1.0, 0.0, 0.0, 0.7], [3, 1]).round(3).tolist()
    [1.155, -0.577, -0.577, 0.0]
    """
    r = np.asarray(rewards, dtype=np.float64)
    if group_size is None:
        centred = r - r.mean(axis=-1, keepdims=True)
        if not scale:
            return centred
        std = r.std(axis=-1, ddof=1, keepdims=True) if r.shape[-1] > 1 else np.zeros_like(r)
        return centred / (std + eps)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D when group sizes are given, got shape {r.shape}")
    if isinstance(group_size, int | np.integer):
        if group_size < 1 or r.size % group_size:
            raise ValueError(
                f"rewards must be 1-D with a length divisible by group_size={group_size}, "
                f"got {r.size}"
            )
        sizes = np.full(r.size // group_size, group_size, dtype=np.int64)
    else:
        sizes = np.asarray(group_size, dtype=np.int64)
        if sizes.ndim != 1 or np.any(sizes < 1) or int(sizes.sum()) != r.size:
            raise ValueError(f"group sizes must be >= 1 and sum to {r.size}, got {sizes.tolist()}")
    group = np.repeat(np.arange(sizes.size), sizes)
    centred = r - (np.bincount(group, weights=r, minlength=sizes.size) / sizes)[group]
    if not scale:
        return centred
    square = np.bincount(group, weights=centred**2, minlength=sizes.size)
    std = np.sqrt(square / np.maximum(sizes - 1, 1))
    return centred / (std[group] + eps)
