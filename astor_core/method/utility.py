"""Task utility: the one signal that ASTOR's scheduler and KL calibration both read.

Implements section 1 of ASTOR_METHOD.md (formulas as implemented, and why they depart from it:
docs/METHOD.md):

- per-prompt posteriors and informativeness ``I(x)`` (:mod:`astor_core.method.posteriors`);
- learning potential ``LP_k = EMA(mean |R - mean R| per rollout) * informative_fraction_k``:
  the unnormalised reward spread, i.e. the size of the policy-gradient signal before GRPO's std
  normalisation, so that a task whose rewards barely differ cannot look maximally learnable;
- synergy ``S`` between per-task gradient vectors, shrunk by its noise floor
  (:mod:`astor_core.method.synergy`);
- utility ``U_k = LP_k + eta * sum_{j != k} S_kj LP_j``.

Public API: :class:`UtilityConfig`, :class:`PromptFeedback`, :class:`RoundFeedback`,
:class:`UtilityTracker`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from astor_core.method.advantages import group_advantages
from astor_core.method.posteriors import PromptPosteriors
from astor_core.method.synergy import SynergyEstimator, shrink_to_floor

LP_SIGNALS: tuple[str, ...] = ("spread", "normalised")
"""Learning-potential signals: unnormalised |R - mean R| (default) or GRPO's |A| (the paper's)."""
INFORMATIVENESS: tuple[str, ...] = ("variance", "beta")
"""Prompt informativeness: observed within-group variance (default) or Beta E[p(1-p)]."""


@dataclass
class UtilityConfig:
    """Constants of the task-utility estimate (params.yaml section ``scheduler.utility``)."""

    prior_a: float = 1.0
    """Beta prior pseudo-successes of every prompt (unseen prompts keep the prior)."""
    prior_b: float = 1.0
    """Beta prior pseudo-failures of every prompt."""
    decay: float = 0.99
    """gamma: per-round factor pulling each prompt's evidence back toward the prior."""
    informativeness: str = "variance"
    """'variance' (posterior mean of the observed within-group variance) or 'beta' (E[p(1-p)])."""
    informative_rel_threshold: float = 0.75
    """A prompt is informative while I(x) >= this fraction of the prior's I (1/6 for Beta(1,1))."""
    lp_signal: str = "spread"
    """'spread': mean |R - mean R| per rollout (reward units); 'normalised': mean |A| of GRPO."""
    lp_ema: float = 0.3
    """Weight of the newest round in the EMA of the per-rollout learning signal."""
    lp_init: float = 0.5
    """Initial learning signal of a task never trained (optimistic: the maximum of the signal
    for rewards in [0, 1] is 0.5 for 'spread' and 1.0 for 'normalised')."""
    synergy_decay: float = 0.9
    """Per-round factor on the accumulated per-task gradient sums (the past's weight)."""
    synergy_sketch_dim: int = 16384
    """Gradients longer than this are count-sketched to this length (inner products preserved
    in expectation); shorter ones are kept whole."""
    synergy_z: float = 2.0
    """S used in the utility = raw cosine shrunk toward 0 by synergy_z noise floors."""
    synergy_seed: int = 0
    """Seed of the count-sketch hash (fixed per run, so sketches of different rounds add up)."""
    synergy_ema: float = 0.2
    """Weight of the newest round when a ready K x K synergy matrix is given instead."""
    eta: float = 0.5
    """Weight of transferred potential sum_{j != k} S_kj LP_j in the utility U_k."""

    def __post_init__(self) -> None:
        if self.prior_a <= 0 or self.prior_b <= 0:
            raise ValueError(
                f"utility: prior_a and prior_b must be > 0, got {self.prior_a}, {self.prior_b}"
            )
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"utility: decay must be in [0, 1], got {self.decay}")
        if not 0.0 <= self.synergy_decay <= 1.0:
            raise ValueError(f"utility: synergy_decay must be in [0, 1], got {self.synergy_decay}")
        for name in ("lp_ema", "synergy_ema"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"utility: {name} must be in (0, 1], got {value}")
        if self.lp_signal not in LP_SIGNALS:
            raise ValueError(
                f"utility: lp_signal must be one of {LP_SIGNALS}, got {self.lp_signal!r}"
            )
        if self.informativeness not in INFORMATIVENESS:
            raise ValueError(
                f"utility: informativeness must be one of {INFORMATIVENESS}, got {self.informativeness!r}"
            )
        if self.synergy_sketch_dim < 1 or self.synergy_z < 0:
            raise ValueError("utility: synergy_sketch_dim must be >= 1 and synergy_z >= 0")


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

    ``pg_gradients`` (dict task -> 1-D torch tensor or numpy array, on a shared parameter subset;
    ``gradients`` when only whole-loss vectors exist) feed the accumulated synergy estimate, or
    ``synergy`` (a ready K x K matrix in the scheduler's task order, NaN = not measured) its EMA;
    ``kl`` is the measured KL to the reference per task.
    """

    round_idx: int
    """The round this feedback belongs to."""
    prompts: list[PromptFeedback]
    """One entry per scheduled prompt."""
    gradients: Mapping[str, Any] | None = None
    """Optional per-task gradient vectors of the whole loss (KL term included); used for
    synergy only when ``pg_gradients`` is absent."""
    pg_gradients: Mapping[str, Any] | None = None
    """Optional per-task gradient vectors of the policy-gradient term alone (no KL term):
    what synergy should measure (same length for every task)."""
    synergy: Any | None = None
    """Optional ready K x K cosine matrix (rows/cols in the scheduler's task order)."""
    kl: dict[str, float] = field(default_factory=dict)
    """Measured KL(policy || reference) per task on this round's samples."""


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
        """EMA of the per-rollout learning signal (|R - mean R|, or |A| when 'normalised');
        lp_init until the task's first measurement, which then replaces it."""
        self.measured = np.zeros(k, dtype=bool)
        """Whether the task's learning signal has been measured at least once."""
        self.synergy = np.eye(k)
        """The S the utility uses: accumulated cosines shrunk by their noise floors."""
        self.synergy_raw = np.full((k, k), np.nan)
        """Accumulated gradient cosines before shrinkage (NaN: not measured yet)."""
        self.synergy_floor = np.full((k, k), np.nan)
        """Noise floor of each raw cosine (cosine_noise_floor of the accumulated sums)."""
        np.fill_diagonal(self.synergy_raw, 1.0)
        np.fill_diagonal(self.synergy_floor, 0.0)
        self.synergy_estimator = SynergyEstimator(self.tasks, self.config)
        self.rollouts = np.zeros(k, dtype=np.int64)
        self.mean_reward = np.full(k, np.nan)
        self.zero_variance_fraction = np.full(k, np.nan)
        self.kl = np.full(k, np.nan)

    # --- reading --------------------------------------------------------------------------
    def informative_fractions(self) -> np.ndarray:
        return np.array([self.posteriors.informative_fraction(t) for t in self.tasks])

    def learning_potential(self) -> np.ndarray:
        """LP_k = EMA(per-rollout learning signal) * fraction of pool still informative."""
        return self.abs_adv * self.informative_fractions()

    def utilities(self, eta: float | None = None) -> np.ndarray:
        """U_k = LP_k + eta * sum_{j != k} S_kj LP_j."""
        eta = self.config.eta if eta is None else eta
        lp = self.learning_potential()
        off = np.nan_to_num(self.synergy - np.diag(np.diag(self.synergy)))
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
        centred = flat - (sums / np.maximum(sizes, 1))[group] if len(items) else flat
        sq_dev = np.bincount(group, weights=centred**2, minlength=len(items))
        # G * s^2 with s^2 the unbiased (ddof 1) variance; a group of one carries no evidence
        var_n = np.where(sizes > 1, sizes, 0).astype(np.float64)
        var_sum = np.where(sizes > 1, sizes * sq_dev / np.maximum(sizes - 1, 1), 0.0)
        advantages = self._advantages(items, flat, group, sums, sizes)  # validates given ones
        signal = np.abs(centred if self.config.lp_signal == "spread" else advantages)
        signal_per_group = np.add.reduceat(signal, starts) if len(items) else sums
        count = np.bincount(task_of, weights=sizes, minlength=k).astype(np.int64)
        signal_sum = np.bincount(task_of, weights=signal_per_group, minlength=k)
        reward_sum = np.bincount(task_of, weights=sums, minlength=k)
        zero_var = np.bincount(task_of, weights=(spread == 0.0).astype(np.float64), minlength=k)
        groups = np.bincount(task_of, minlength=k)
        self.posteriors.decay()
        for t, task in enumerate(self.tasks):
            mask = task_of == t
            if mask.any():
                self.posteriors.observe(
                    task,
                    prompt_of[mask],
                    sums[mask],
                    sizes[mask] - sums[mask],
                    var_sum[mask],
                    var_n[mask],
                    feedback.round_idx,
                )
        seen = count > 0
        lam = self.config.lp_ema
        now = np.divide(signal_sum, count, out=np.zeros(k), where=seen)
        # optimistic only until measured: the first measurement replaces lp_init (an EMA that
        # kept mixing in the prior would hide for rounds that a task gives no signal at all)
        first = seen & ~self.measured
        again = seen & self.measured
        self.abs_adv[first] = now[first]
        self.abs_adv[again] = (1 - lam) * self.abs_adv[again] + lam * now[again]
        self.measured |= seen
        self.mean_reward[seen] = reward_sum[seen] / count[seen]
        self.zero_variance_fraction[seen] = zero_var[seen] / groups[seen]
        self.rollouts += count
        # a task whose every group this round had equal rewards got no policy gradient: its
        # vector is the KL pull or numerical noise (tasks not scheduled have no groups at all)
        with_signal = [self.tasks[t] for t in range(k) if groups[t] == 0 or groups[t] > zero_var[t]]
        vectors = feedback.pg_gradients if feedback.pg_gradients is not None else feedback.gradients
        if vectors is not None:
            self.observe_gradients(vectors, with_signal)
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

    def observe_gradients(
        self, vectors: Mapping[str, Any], with_signal: Sequence[str] | None = None
    ) -> None:
        """Accumulate per-task policy-gradient vectors; S = accumulated cosines shrunk by
        ``synergy_z`` noise floors (pairs never measured keep their S)."""
        self.synergy_estimator.update(vectors, with_signal)
        raw, floor = self.synergy_estimator.estimate()
        measured = np.isfinite(raw)
        self.synergy_raw[measured] = raw[measured]
        self.synergy_floor[measured] = floor[measured]
        shrunk = shrink_to_floor(raw, floor, self.config.synergy_z)
        upd = measured & ~np.eye(len(self.tasks), dtype=bool)
        self.synergy[upd] = shrunk[upd]

    def observe_synergy(self, matrix: Any) -> None:
        """EMA-update S with a ready K x K cosine matrix; NaN entries (pairs not measured) keep S."""
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
        self.synergy_raw[upd] = self.synergy[upd]

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "posteriors": self.posteriors.state_dict(),
            "abs_adv": self.abs_adv.tolist(),
            "measured": self.measured.tolist(),
            "synergy": self.synergy.tolist(),
            "synergy_raw": _matrix_to_json(self.synergy_raw),
            "synergy_floor": _matrix_to_json(self.synergy_floor),
            "synergy_estimator": self.synergy_estimator.state_dict(),
            "rollouts": self.rollouts.tolist(),
            "mean_reward": _nan_to_none(self.mean_reward),
            "zero_variance_fraction": _nan_to_none(self.zero_variance_fraction),
            "kl": _nan_to_none(self.kl),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.posteriors.load_state_dict(state["posteriors"])
        self.abs_adv = np.asarray(state["abs_adv"], dtype=np.float64)
        self.measured = np.asarray(state["measured"], dtype=bool)
        self.synergy = np.asarray(state["synergy"], dtype=np.float64)
        self.synergy_raw = _matrix_from_json(state["synergy_raw"])
        self.synergy_floor = _matrix_from_json(state["synergy_floor"])
        self.synergy_estimator.load_state_dict(state["synergy_estimator"])
        self.rollouts = np.asarray(state["rollouts"], dtype=np.int64)
        self.mean_reward = _none_to_nan(state["mean_reward"])
        self.zero_variance_fraction = _none_to_nan(state["zero_variance_fraction"])
        self.kl = _none_to_nan(state["kl"])


def _matrix_to_json(m: np.ndarray) -> list[list[float | None]]:
    return [_nan_to_none(row) for row in m]


def _matrix_from_json(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([_none_to_nan(r) for r in rows], dtype=np.float64)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
