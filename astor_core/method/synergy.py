"""Synergy estimate: cosines between per-task policy-gradient vectors and their noise floor.

Per-task vectors are *accumulated over rounds* (a decayed sum, count-sketched to a fixed
length); each cosine is reported with its noise floor and shrunk by it before it enters the
utility. Section 1 of ASTOR_METHOD.md; departures: docs/METHOD.md.

Public API: :class:`SynergyEstimator`, :func:`cosine_matrix`, :func:`cosine_noise_floor`,
:func:`shrink_to_floor`, :func:`count_sketch`, :func:`policy_gradient_only`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astor_core.method.utility import UtilityConfig


def _as_vector(value: Any, task: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; astor_core does not need torch imported here
        value = value.detach().to("cpu").double().numpy()
    vec = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"synergy: gradient vector of task {task!r} has non-finite entries")
    return vec


def cosine_matrix(vectors: Mapping[str, Any], tasks: Sequence[str]) -> np.ndarray:
    """K x K cosines between per-task gradient vectors; NaN where a task has none (or zero norm).

    >>> m = cosine_matrix({"a": [1.0, 0.0], "b": [1.0, 1.0]}, ["a", "b", "c"])
    >>> round(float(m[0, 1]), 4), bool(np.isnan(m[0, 2]))
    (0.7071, True)
    """
    k = len(tasks)
    out = np.full((k, k), np.nan)
    unit: dict[int, np.ndarray] = {}
    length = None
    for name, value in vectors.items():
        if name not in tasks:
            raise ValueError(f"synergy: gradient for unknown task {name!r} (tasks: {list(tasks)})")
        vec = _as_vector(value, name)
        if length is not None and vec.size != length:
            raise ValueError(
                f"synergy: gradient of task {name!r} has length {vec.size}, others {length}"
            )
        length = vec.size
        norm = float(np.linalg.norm(vec))
        if norm > 0.0:
            unit[tasks.index(name)] = vec / norm
    for i, ui in unit.items():
        for j, uj in unit.items():
            out[i, j] = float(np.clip(ui @ uj, -1.0, 1.0))
    return out


def cosine_noise_floor(u: np.ndarray, v: np.ndarray) -> float:
    """Noise floor of ``cos(u, v)``: the standard deviation of ``sum_i u_i v_i s_i / (|u||v|)``
    over independent random signs s_i (a coordinate sign-flip null: what the cosine would be
    if the two vectors agreed on magnitudes only by chance). It is 1/sqrt(d) for vectors
    spread evenly over d coordinates and grows when a few coordinates dominate.

    >>> round(cosine_noise_floor(np.ones(400), np.ones(400)), 4)
    0.05
    >>> cosine_noise_floor(np.array([1.0, 0.0]), np.array([1.0, 1e-9]))
    1.0
    """
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return float("nan")
    return float(np.sqrt(np.sum((u / nu) ** 2 * (v / nv) ** 2)))


def shrink_to_floor(raw: np.ndarray, floor: np.ndarray, z: float) -> np.ndarray:
    """Soft-threshold each cosine toward 0 by ``z`` noise floors: sign(c) max(|c| - z f, 0);
    NaN where either is NaN. An estimate inside its noise band contributes nothing.

    >>> shrink_to_floor(np.array([0.3, -0.05, 0.5]), np.array([0.05, 0.05, np.nan]), 2.0).round(6).tolist()
    [0.2, -0.0, nan]
    """
    with np.errstate(invalid="ignore"):
        out = np.sign(raw) * np.maximum(np.abs(raw) - z * floor, 0.0)
    return np.where(np.isfinite(raw) & np.isfinite(floor), out, np.nan)


def count_sketch(vec: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Project ``vec`` to ``dim`` coordinates with a count sketch (each coordinate added, with a
    hashed random sign, to one hashed bucket); the identity when ``vec`` is not longer than dim.
    Inner products are preserved in expectation, and the hash depends only on (len, dim, seed),
    so sketches of different rounds add up.

    >>> x = np.arange(6.0)
    >>> bool(np.array_equal(count_sketch(x, 8, 0), x))
    True
    >>> count_sketch(x, 3, 0).shape
    (3,)
    """
    if vec.size <= dim:
        return vec
    rng = np.random.default_rng([seed, vec.size, dim])
    bucket = rng.integers(0, dim, size=vec.size)
    sign = rng.integers(0, 2, size=vec.size) * 2.0 - 1.0
    return np.bincount(bucket, weights=sign * vec, minlength=dim)


def policy_gradient_only(
    gradients: Mapping[str, Any], kl_gradients: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Per-task policy-gradient vectors: the whole-loss gradient minus its KL part, when the
    trainer reports the KL part separately (``kl_gradients``; a task without one keeps its
    vector). Synergy must compare what the tasks *teach*, not the pull back to the reference.

    >>> policy_gradient_only({"a": [1.0, 2.0]}, {"a": [0.5, 0.5]})["a"].tolist()
    [0.5, 1.5]
    """
    out: dict[str, np.ndarray] = {}
    for task, value in gradients.items():
        vec = _as_vector(value, task)
        if kl_gradients is not None and task in kl_gradients:
            kl = _as_vector(kl_gradients[task], task)
            if kl.shape != vec.shape:
                raise ValueError(f"synergy: KL gradient of task {task!r} has the wrong length")
            vec = vec - kl
        out[task] = vec
    return out


class SynergyEstimator:
    """Cosines between per-task policy-gradient vectors accumulated over rounds.

    Per round, every task with signal adds its (sketched) vector to a sum that decays by
    ``synergy_decay``: consistent directions add up while round-to-round noise averages out,
    so the cosine of the sums clears the noise floor that one round's cosine sits at. Each
    estimate comes with :func:`cosine_noise_floor` of the two sums.
    """

    def __init__(self, tasks: Sequence[str], config: UtilityConfig) -> None:
        self.tasks = list(tasks)
        self.config = config
        self.sums: np.ndarray | None = None
        """K x dim decayed sums of sketched gradient vectors (None until the first vector)."""
        self.length: int | None = None
        """Length of the raw gradient vectors (every round must give the same)."""
        self.rounds = np.zeros(len(self.tasks), dtype=np.int64)
        """Rounds that contributed a vector, per task."""

    def update(self, vectors: Mapping[str, Any], with_signal: Sequence[str] | None = None) -> None:
        """Decay the sums, then add each task's vector; tasks not in ``with_signal`` (no group
        with reward spread this round) are skipped: their vector is noise or pure KL."""
        keep = None if with_signal is None else set(with_signal)
        sketched: dict[int, np.ndarray] = {}
        for name, value in vectors.items():
            if name not in self.tasks:
                raise ValueError(
                    f"synergy: gradient for unknown task {name!r} (tasks: {self.tasks})"
                )
            vec = _as_vector(value, name)
            if self.length is not None and vec.size != self.length:
                raise ValueError(
                    f"synergy: gradient of task {name!r} has length {vec.size}, others {self.length}"
                )
            self.length = vec.size
            if keep is not None and name not in keep:
                continue
            if not np.any(vec):
                continue
            sketched[self.tasks.index(name)] = count_sketch(
                vec, self.config.synergy_sketch_dim, self.config.synergy_seed
            )
        if self.sums is not None:
            self.sums *= self.config.synergy_decay
        for t, vec in sketched.items():
            if self.sums is None:
                self.sums = np.zeros((len(self.tasks), vec.size))
            self.sums[t] += vec
            self.rounds[t] += 1

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw cosines, noise floors), K x K, NaN where a task has no accumulated vector;
        the diagonal is 1 (raw) and 0 (floor)."""
        k = len(self.tasks)
        raw = np.full((k, k), np.nan)
        floor = np.full((k, k), np.nan)
        np.fill_diagonal(raw, 1.0)
        np.fill_diagonal(floor, 0.0)
        if self.sums is None:
            return raw, floor
        norms = np.linalg.norm(self.sums, axis=1)
        for i in range(k):
            for j in range(i + 1, k):
                if norms[i] > 0 and norms[j] > 0:
                    c = float(np.clip(self.sums[i] @ self.sums[j] / (norms[i] * norms[j]), -1, 1))
                    f = cosine_noise_floor(self.sums[i], self.sums[j])
                    raw[i, j] = raw[j, i] = c
                    floor[i, j] = floor[j, i] = f
        return raw, floor

    def state_dict(self) -> dict[str, Any]:
        sums = None
        if self.sums is not None:
            data = np.ascontiguousarray(self.sums, dtype="<f8").tobytes()
            sums = {"shape": list(self.sums.shape), "f8": base64.b64encode(data).decode()}
        return {"sums": sums, "length": self.length, "rounds": self.rounds.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        sums = state.get("sums")
        self.sums = (
            None
            if sums is None
            else np.frombuffer(base64.b64decode(sums["f8"]), dtype="<f8")
            .reshape(sums["shape"])
            .copy()
        )
        self.length = state.get("length")
        self.rounds = np.asarray(state.get("rounds", [0] * len(self.tasks)), dtype=np.int64)
