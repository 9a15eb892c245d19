"""Tests of astor_core.method.synergy: cosine matrix input checks."""

from __future__ import annotations

import pytest

from astor_core.method.synergy import cosine_matrix


def test_cosine_matrix_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        cosine_matrix({"a": [1.0, 0.0], "b": [1.0]}, ["a", "b"])
