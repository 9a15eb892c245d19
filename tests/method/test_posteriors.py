"""Tests of astor_core.method.posteriors: Beta informativeness."""

from __future__ import annotations

import numpy as np
import pytest

from astor_core.method.posteriors import beta_informativeness


def test_informativeness_is_expected_group_variance() -> None:
    rng = np.random.default_rng(0)
    for a, b in [(1.0, 1.0), (5.0, 2.0), (0.5, 3.0)]:
        p = rng.beta(a, b, size=400_000)
        assert beta_informativeness(np.array([a]), np.array([b]))[0] == pytest.approx(
            np.mean(p * (1 - p)), abs=2e-3
        )
