"""The one group-advantage function: unbiased std, eps 1e-4, any group layout."""

from __future__ import annotations

import numpy as np
import pytest

from astor_core.method.advantages import ADVANTAGE_EPS, group_advantages


def _by_hand(group: np.ndarray) -> np.ndarray:
    std = group.std(ddof=1) if group.size > 1 else 0.0
    return (group - group.mean()) / (std + ADVANTAGE_EPS)


def test_layouts_agree_and_match_the_formula() -> None:
    rng = np.random.default_rng(0)
    rewards = rng.random((5, 4))
    expected = np.concatenate([_by_hand(g) for g in rewards])
    assert group_advantages(rewards).ravel() == pytest.approx(expected)
    assert group_advantages(rewards.ravel(), 4) == pytest.approx(expected)
    assert group_advantages(rewards.ravel(), [4] * 5) == pytest.approx(expected)


def test_ragged_groups_and_single_samples() -> None:
    flat = np.array([1.0, 0.0, 0.0, 0.7, 0.2, 0.9])
    sizes = [3, 1, 2]
    expected = np.concatenate([_by_hand(flat[:3]), _by_hand(flat[3:4]), _by_hand(flat[4:])])
    assert group_advantages(flat, sizes) == pytest.approx(expected)
    assert group_advantages(flat, sizes)[3] == 0.0  # a group of one carries no signal


def test_unscaled_keeps_only_the_centring_and_bad_layouts_fail() -> None:
    assert group_advantages([1.0, 0.0], scale=False).tolist() == [0.5, -0.5]
    with pytest.raises(ValueError, match="divisible"):
        group_advantages([1.0, 0.0, 1.0], 2)
    with pytest.raises(ValueError, match="sum to 3"):
        group_advantages([1.0, 0.0, 1.0], [1, 1])
