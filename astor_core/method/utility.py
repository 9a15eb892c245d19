"""Task utility: the one signal that ASTOR's scheduler and KL calibration both read.

Implements section 1 of ASTOR_METHOD.md (formulas as implemented: docs/METHOD.md):

- per-prompt Beta(a, b) posteriors of the success rate, stored as numpy arrays per task
  (fractional updates from rewards in [0, 1]; decayed toward the prior by ``decay`` each round);
- informativeness ``I(x) = E[p(1-p)] = ab / ((a+b)(a+b+1))``;
- learning potential ``LP_k = EMA(mean |advantage| per rollout) * informative_fraction_k``;
- synergy ``S`` (EMA of cosines between per-task gradient vectors, or of a ready K x K matrix);
- utility ``U_k = LP_k + eta * sum_{j != k} S_kj LP_j``.

Public API: :class:`UtilityConfig`, :class:`PromptFeedback`, :class:`RoundFeedback`,
:class:`PromptPosteriors`, :class:`UtilityTracker`,
:func:`beta_informativeness`, :func:`cosine_matrix`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astor_core.method.advantages import group_advantages


@dataclass
class UtilityConfig:
    """Constants of the task-utility estimate (params.yaml section ``utility``)."""

    prior_a: float = 1.0
    """Beta prior pseudo-successes of every prompt (unseen prompts keep the prior)."""
    prior_b: float = 1.0
    """Beta prior pseudo-failures of every prompt."""
    decay: float = 0.95
    """gamma: per-round factor pulling each posterior's evidence back toward the prior."""
    informative_rel_threshold: float = 0.75
    """A prompt is informative while I(x) >= this fraction of the prior's I (1/6 for Beta(1,1))."""
    lp_ema: float = 0.3
    """Weight of the newest round in the EMA of mean |advantage| per rollout."""
    lp_init: float = 1.0
    """Initial mean |advantage| of a task never trained (optimistic: the maximum for GRPO)."""
    synergy_ema: float = 0.2
    """Weight of the newest round in the EMA of the gradient-cosine synergy matrix."""
    eta: float = 0.5
    """Weight of transferred potential sum_{j != k} S_kj LP_j in the utility U_k."""

    def __post_init__(self) -> None:
        if self.prior_a <= 0 or self.prior_b <= 0:
            raise ValueError(
                f"utility: prior_a and prior_b must be > 0, got {self.prior_a}, {self.prior_b}"
            )
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"utility: decay must be in [0, 1], got {self.decay}")
        for name in ("lp_ema", "synergy_ema"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"utility: {name} must be in (0, 1], got {value}")


@dataclass
class PromptFeedback:
    """What one scheduled prompt produced this round: its G rewards and advantages."""

    task: str
    """Task of the prompt."""
    prompt_id: str
    """Pool id of the prompt."""
    rewards: list[float]
    """The G rewards in [0, 1]."""
    advantages: list[float] | None = None
    """The G advantages the trainer used; None computes GRPO advantages from the rewards."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "prompt_id": self.prompt_id,
            "rewards": [float(r) for r in self.rewards],
            "advantages": None if self.advantages is None else [float(a) for a in self.advantages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptFeedback:
        return cls(
            task=str(data["task"]),
            prompt_id=str(data["prompt_id"]),
            rewards=list(data["rewards"]),
            advantages=None if data.get("advantages") is None else list(data["advantages"]),
        )


@dataclass
class RoundFeedback:
    """Everything the scheduler learns from one round (the trainer fills it).

    ``gradients`` (dict task -> 1-D torch tensor or numpy array, on a shared parameter subset)
    or ``synergy`` (a ready K x K matrix in the scheduler's task order, NaN = not measured)
    feed the synergy EMA; ``kl`` is the measured KL to the reference per task.
    """

    round_idx: int
    """The round this feedback belongs to."""
    prompts: list[PromptFeedback]
    """One entry per scheduled prompt."""
    gradients: Mapping[str, Any] | None = None
    """Optional per-task policy-gradient vectors (same length for every task)."""
    synergy: Any | None = None
    """Optional ready K x K cosine matrix (rows/cols in the scheduler's task order)."""
    kl: dict[str, float] = field(default_factory=dict)
    """Measured KL(policy || reference) per task on this round's samples."""


def beta_informativeness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Expected within-group reward variance E[p(1-p)] under p ~ Beta(a, b).

    >>> float(beta_informativeness(np.array([1.0]), np.array([1.0]))[0])  # 1/6
    0.16666666666666666
    >>> float(beta_informativeness(np.array([9.0]), np.array([1.0]))[0]) < 0.1
    True
    """
    s = a + b
    return a * b / (s * (s + 1.0))


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


class PromptPosteriors:
    """Beta posteriors of every prompt's success rate, one pair of float arrays per task.

    Memory is linear in the pool (two float64 per prompt plus the id index); every operation
    on a pool of N prompts is one vectorised O(N) pass.
    """

    def __init__(self, pools: Mapping[str, Sequence[str]], config: UtilityConfig) -> None:
        self.config = config
        self.ids: dict[str, list[str]] = {}
        self.index: dict[str, dict[str, int]] = {}
        self.a: dict[str, np.ndarray] = {}
        self.b: dict[str, np.ndarray] = {}
        for task, ids in pools.items():
            id_list = [str(i) for i in ids]
            index = {pid: n for n, pid in enumerate(id_list)}
            if len(index) != len(id_list):
                seen: set[str] = set()
                dup = next(p for p in id_list if p in seen or seen.add(p))  # type: ignore[func-returns-value]
                raise ValueError(
                    f"pool of task {task!r}: prompt id {dup!r} appears twice (ids must be unique)"
                )
            self.ids[task] = id_list
            self.index[task] = index
            self.a[task] = np.full(len(id_list), config.prior_a)
            self.b[task] = np.full(len(id_list), config.prior_b)
        self._info: dict[str, np.ndarray] = {}
        self.prior_informativeness = float(
            beta_informativeness(np.array([config.prior_a]), np.array([config.prior_b]))[0]
        )

    def size(self, task: str) -> int:
        return len(self.ids[task])

    def lookup(self, task: str, prompt_id: str) -> int:
        try:
            return self.index[task][prompt_id]
        except KeyError:
            raise ValueError(
                f"feedback: prompt {prompt_id!r} is not in the pool of task {task!r}"
            ) from None

    def decay(self) -> None:
        """Pull every posterior toward the prior: a <- a0 + gamma (a - a0) (same for b)."""
        g, a0, b0 = self.config.decay, self.config.prior_a, self.config.prior_b
        self._info.clear()
        for task in self.a:
            a, b = self.a[task], self.b[task]
            a -= a0
            a *= g
            a += a0
            b -= b0
            b *= g
            b += b0

    def observe(
        self, task: str, idx: np.ndarray, successes: np.ndarray, failures: np.ndarray
    ) -> None:
        """Add fractional evidence: a += sum of rewards, b += sum of (1 - rewards)."""
        self._info.pop(task, None)
        np.add.at(self.a[task], idx, successes)
        np.add.at(self.b[task], idx, failures)

    def informativeness(self, task: str) -> np.ndarray:
        """I(x) of every prompt of the task (cached until the posteriors change; read-only)."""
        if task not in self._info:
            info = beta_informativeness(self.a[task], self.b[task])
            info.flags.writeable = False
            self._info[task] = info
        return self._info[task]

    def informative_fraction(self, task: str) -> float:
        if self.size(task) == 0:
            return 0.0
        threshold = self.config.informative_rel_threshold * self.prior_informativeness
        return float(np.count_nonzero(self.informativeness(task) >= threshold)) / self.size(task)

    def thompson_scores(self, task: str, rng: np.random.Generator) -> np.ndarray:
        """Sample p ~ Beta(a, b) per prompt and score p (1 - p)."""
        p = rng.beta(self.a[task], self.b[task])
        return p * (1.0 - p)

    def state_dict(self) -> dict[str, Any]:
        return {task: {"a": self.a[task].tolist(), "b": self.b[task].tolist()} for task in self.a}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._info.clear()
        for task in self.a:
            a = np.asarray(state[task]["a"], dtype=np.float64)
            b = np.asarray(state[task]["b"], dtype=np.float64)
            if a.shape != self.a[task].shape or b.shape != self.b[task].shape:
                raise ValueError(f"posterior state of task {task!r} does not match its pool size")
            self.a[task] = a
            self.b[task] = b


class UtilityTracker:
    """Per-task learning potential, synergy and utility, updated from :class:`RoundFeedback`."""

    def __init__(
        self, pools: Mapping[str, Sequence[str]], config: UtilityConfig | None = None
    ) -> None:
        self.config = config or UtilityConfig()
        self.tasks: list[str] = list(pools)
        if not self.tasks:
            raise ValueError("scheduler: no task pools given")
        k = len(self.tasks)
        self.posteriors = PromptPosteriors(pools, self.config)
        self.abs_adv = np.full(k, self.config.lp_init)
        self.synergy = np.eye(k)
        self.rollouts = np.zeros(k, dtype=np.int64)
        self.mean_reward = np.full(k, np.nan)
        self.zero_variance_fraction = np.full(k, np.nan)
        self.kl = np.full(k, np.nan)

    # --- reading --------------------------------------------------------------------------
    def informative_fractions(self) -> np.ndarray:
        return np.array([self.posteriors.informative_fraction(t) for t in self.tasks])

    def learning_potential(self) -> np.ndarray:
        """LP_k = EMA(mean |advantage| per rollout) * fraction of pool still informative."""
        return self.abs_adv * self.informative_fractions()

    def utilities(self, eta: float | None = None) -> np.ndarray:
        """U_k = LP_k + eta * sum_{j != k} S_kj LP_j."""
        eta = self.config.eta if eta is None else eta
        lp = self.learning_potential()
        off = self.synergy - np.diag(np.diag(self.synergy))
        return lp + eta * off @ lp

    # --- writing --------------------------------------------------------------------------
    def update(self, feedback: RoundFeedback) -> None:
        """Decay posteriors, add this round's evidence, update the EMAs (one call per round)."""
        k = len(self.tasks)
        pos = {t: n for n, t in enumerate(self.tasks)}
        items = feedback.prompts
        task_of = np.empty(len(items), dtype=np.int64)
        prompt_of = np.empty(len(items), dtype=np.int64)
        for n, item in enumerate(items):
            if item.task not in pos:
                raise ValueError(
                    f"feedback record {n}: unknown task {item.task!r} (tasks: {self.tasks})"
                )
            task_of[n] = pos[item.task]
            prompt_of[n] = self.posteriors.lookup(item.task, item.prompt_id)
        sizes = np.array([len(item.rewards) for item in items], dtype=np.int64)
        flat = np.fromiter(
            (float(x) for item in items for x in item.rewards),
            dtype=np.float64,
            count=int(sizes.sum()),
        )
        group = np.repeat(np.arange(len(items)), sizes)
        bad = (~np.isfinite(flat)) | (flat < 0.0) | (flat > 1.0)
        if np.any(sizes == 0) or bad.any():
            n = (
                int(np.flatnonzero(sizes == 0)[0])
                if np.any(sizes == 0)
                else int(group[np.argmax(bad)])
            )
            raise ValueError(
                f"feedback record {n} ({items[n].task}/{items[n].prompt_id}): rewards must be a non-empty "
                f"list of finite numbers in [0, 1], got {items[n].rewards!r}"
            )
        starts = (
            np.concatenate([[0], np.cumsum(sizes)[:-1]])
            if len(items)
            else np.zeros(0, dtype=np.int64)
        )
        sums = np.add.reduceat(flat, starts) if len(items) else np.zeros(0)
        spread = (
            (np.maximum.reduceat(flat, starts) - np.minimum.reduceat(flat, starts))
            if len(items)
            else sums
        )
        abs_adv = np.abs(self._advantages(items, flat, group, sums, sizes))
        abs_per_group = np.add.reduceat(abs_adv, starts) if len(items) else sums
        count = np.bincount(task_of, weights=sizes, minlength=k).astype(np.int64)
        abs_sum = np.bincount(task_of, weights=abs_per_group, minlength=k)
        reward_sum = np.bincount(task_of, weights=sums, minlength=k)
        zero_var = np.bincount(task_of, weights=(spread == 0.0).astype(np.float64), minlength=k)
        groups = np.bincount(task_of, minlength=k)
        self.posteriors.decay()
        for t, task in enumerate(self.tasks):
            mask = task_of == t
            if mask.any():
                self.posteriors.observe(task, prompt_of[mask], sums[mask], sizes[mask] - sums[mask])
        seen = count > 0
        lam = self.config.lp_ema
        self.abs_adv[seen] = (1 - lam) * self.abs_adv[seen] + lam * abs_sum[seen] / count[seen]
        self.mean_reward[seen] = reward_sum[seen] / count[seen]
        self.zero_variance_fraction[seen] = zero_var[seen] / groups[seen]
        self.rollouts += count
        if feedback.gradients is not None:
            self.observe_synergy(cosine_matrix(feedback.gradients, self.tasks))
        if feedback.synergy is not None:
            self.observe_synergy(feedback.synergy)
        for task, value in (feedback.kl or {}).items():
            if task not in pos:
                raise ValueError(f"feedback: KL for unknown task {task!r}")
            self.kl[pos[task]] = float(value)

    def _advantages(
        self,
        items: Sequence[PromptFeedback],
        flat: np.ndarray,
        group: np.ndarray,
        sums: np.ndarray,
        sizes: np.ndarray,
    ) -> np.ndarray:
        """The trainer's advantages where given, GRPO's std-normalised ones otherwise (flat)."""
        if not items:
            return flat
        adv = group_advantages(flat, sizes)
        offset = 0
        for n, item in enumerate(items):
            size = int(sizes[n])
            if item.advantages is not None:
                given = np.asarray(item.advantages, dtype=np.float64)
                if given.shape != (size,) or not np.all(np.isfinite(given)):
                    raise ValueError(
                        f"feedback record {n} ({item.task}/{item.prompt_id}): advantages must be "
                        f"{size} finite numbers, got {item.advantages!r}"
                    )
                adv[offset : offset + size] = given
            offset += size
        return adv

    def observe_synergy(self, matrix: Any) -> None:
        """EMA-update S with a K x K cosine matrix; NaN entries (pairs not measured) keep S."""
        m = np.asarray(matrix, dtype=np.float64)
        k = len(self.tasks)
        if m.shape != (k, k):
            raise ValueError(
                f"synergy: matrix must be {k}x{k} (tasks {self.tasks}), got shape {m.shape}"
            )
        finite = np.isfinite(m)
        if np.any(np.abs(m[finite]) > 1.0 + 1e-9):
            raise ValueError("synergy: cosines must lie in [-1, 1]")
        lam = self.config.synergy_ema
        upd = finite & ~np.eye(k, dtype=bool)
        self.synergy[upd] = (1 - lam) * self.synergy[upd] + lam * np.clip(m[upd], -1.0, 1.0)

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "posteriors": self.posteriors.state_dict(),
            "abs_adv": self.abs_adv.tolist(),
            "synergy": self.synergy.tolist(),
            "rollouts": self.rollouts.tolist(),
            "mean_reward": _nan_to_none(self.mean_reward),
            "zero_variance_fraction": _nan_to_none(self.zero_variance_fraction),
            "kl": _nan_to_none(self.kl),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.posteriors.load_state_dict(state["posteriors"])
        self.abs_adv = np.asarray(state["abs_adv"], dtype=np.float64)
        self.synergy = np.asarray(state["synergy"], dtype=np.float64)
        self.rollouts = np.asarray(state["rollouts"], dtype=np.int64)
        self.mean_reward = _none_to_nan(state["mean_reward"])
        self.zero_variance_fraction = _none_to_nan(state["zero_variance_fraction"])
        self.kl = _none_to_nan(state["kl"])


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
