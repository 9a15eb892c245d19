"""Hierarchical utility-routed data scheduling (ASTOR section 2) and the baseline schedulers.

One interface, :class:`Scheduler`::

    sched = make_scheduler(name, pools, config, seed)   # pools: {task: [prompt_id, ...]}
    plan = sched.plan(round_idx)        # RoundPlan: B (task, prompt_id) items, G samples each
    ...                                 # rollouts, rewards, GRPO update
    sched.update(RoundFeedback(...))    # rewards/advantages per prompt, gradients or S, KL
    sched.stats()                       # per-task numbers for tracking
    state = sched.state_dict(); sched.load_state_dict(state)   # exact resume, JSON-safe

Names (:data:`SCHEDULER_NAMES`): ``astor``; ``uniform`` (equal shares, uniform prompts);
``proportional`` (shares proportional to pool sizes); ``specialist:<task>``; ``ucb``
(DUMP-style UCB over tasks); ablations ``astor_no_synergy`` (eta = 0), ``astor_no_prio``
(uniform prompts within tasks), ``astor_fixed_beta`` (the astor scheduler; its calibrator
is fixed, see :func:`astor_core.method.calibration.make_calibrator`).

Level 1: shares ``w = (1 - eps) softmax(U / tau) + eps / K``, the budget of B prompts split by
largest remainder (capped by pool sizes). Level 2: the top B_k prompts per task by
informativeness (``expected``, default) or by a Thompson sample ``p (1 - p)`` with
``p ~ Beta(a, b)``, ties at random, O(N) with ``np.argpartition``; no prompt is drawn twice in a
round, nor again within ``revisit_gap`` rounds unless its pool is used up.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from astor_core.method.advantages import group_advantages
from astor_core.method.allocation import largest_remainder, softmax, top_k_random_ties
from astor_core.method.utility import (
    PromptFeedback,
    RoundFeedback,
    UtilityConfig,
    UtilityTracker,
)

__all__ = [
    "SCHEDULER_NAMES",
    "PromptFeedback",
    "RoundFeedback",
    "RoundPlan",
    "Scheduler",
    "SchedulerConfig",
    "UCBConfig",
    "make_scheduler",
]

SCHEDULER_NAMES: tuple[str, ...] = (
    "astor",
    "astor_no_synergy",
    "astor_no_prio",
    "astor_fixed_beta",
    "uniform",
    "proportional",
    "ucb",
    "specialist:<task>",
)
"""Every scheduler name make_scheduler accepts (``specialist:`` takes a task name)."""


@dataclass
class UCBConfig:
    """DUMP-style UCB over tasks (arXiv 2504.09710): window mean |advantage| + bonus, softmax."""

    window: int = 300
    """Sliding window: the most recent |advantage| values (one per rollout) kept per task."""
    c: float = 1.0
    """Exploration coefficient of the bonus c * sqrt(2 ln(sum n) / n_k) (n in rollouts)."""
    temperature: float = 0.1
    """Softmax temperature turning UCB scores into task shares."""


@dataclass
class SchedulerConfig:
    """Constants of every scheduler (params.yaml section ``scheduler``)."""

    prompts_per_round: int = 64
    """B: prompts scheduled per round (each sampled G times)."""
    samples_per_prompt: int = 8
    """G: completions sampled per prompt (the GRPO group size)."""
    temperature: float = 0.1
    """tau: softmax temperature of the task shares softmax(U / tau)."""
    floor: float = 0.1
    """eps: mass spread evenly over tasks, so no task starves (anti-forgetting floor)."""
    prompt_scoring: str = "expected"
    """Level-2 score: 'thompson' (sampled p(1-p)) or 'expected' (E[p(1-p)], ties at random)."""
    revisit_gap: int = 40
    """ASTOR level 2: a prompt scheduled in round r is not scheduled again before round
    r + revisit_gap (0: no bound), unless its task has no other prompt left to give; bounds how
    often one prompt is replayed, whatever its score."""
    topk_presample: int = 8192
    """Strided subsample size used to pre-filter level-2 top-k candidates (speed only; exact)."""
    utility: UtilityConfig = field(default_factory=UtilityConfig)
    """Posterior / learning-potential / synergy constants."""
    ucb: UCBConfig = field(default_factory=UCBConfig)
    """Constants of the DUMP-style UCB baseline."""

    def __post_init__(self) -> None:
        if isinstance(self.utility, Mapping):
            self.utility = UtilityConfig(**self.utility)
        if isinstance(self.ucb, Mapping):
            self.ucb = UCBConfig(**self.ucb)
        if self.prompts_per_round < 1 or self.samples_per_prompt < 1:
            raise ValueError("scheduler: prompts_per_round and samples_per_prompt must be >= 1")
        if self.prompt_scoring not in ("thompson", "expected"):
            raise ValueError(
                f"scheduler: prompt_scoring must be 'thompson' or 'expected', got {self.prompt_scoring!r}"
            )
        if self.temperature <= 0:
            raise ValueError(f"scheduler: temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"scheduler: floor must be in [0, 1], got {self.floor}")
        if self.revisit_gap < 0:
            raise ValueError(f"scheduler: revisit_gap must be >= 0, got {self.revisit_gap}")


@dataclass
class RoundPlan:
    """One round's schedule: B (task, prompt_id) items, each to be sampled G times."""

    round_idx: int
    """The round this plan is for."""
    items: list[tuple[str, str]]
    """(task, prompt_id) per scheduled prompt; no pair appears twice."""
    budgets: dict[str, int]
    """Prompts per task (sums to B when the pools allow)."""
    shares: dict[str, float]
    """Level-1 task shares w_k the budgets were split from."""
    samples_per_prompt: int
    """G."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_idx": self.round_idx,
            "items": [list(item) for item in self.items],
            "budgets": dict(self.budgets),
            "shares": dict(self.shares),
            "samples_per_prompt": self.samples_per_prompt,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundPlan:
        return cls(
            round_idx=int(data["round_idx"]),
            items=[(str(t), str(p)) for t, p in data["items"]],
            budgets={str(k): int(v) for k, v in data["budgets"].items()},
            shares={str(k): float(v) for k, v in data["shares"].items()},
            samples_per_prompt=int(data["samples_per_prompt"]),
        )


class Scheduler:
    """Base scheduler: owns the utility tracker, the RNG and the plan/update/state cycle.

    Subclasses define :meth:`task_shares` (level 1) and :meth:`select` (level 2).
    """

    prioritise_prompts: bool = False

    def __init__(
        self, name: str, pools: Mapping[str, Sequence[str]], config: SchedulerConfig, seed: int
    ) -> None:
        if not pools:
            raise ValueError("scheduler: no task pools given")
        for task, ids in pools.items():
            if len(ids) == 0:
                raise ValueError(f"scheduler: the pool of task {task!r} is empty")
        self.name = name
        self.config = config
        self.seed = seed
        self.tasks: list[str] = list(pools)
        self.tracker = UtilityTracker(pools, config.utility)
        self.sizes = np.array([len(pools[t]) for t in self.tasks], dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.rounds_planned = 0
        self.current_round = 0
        self.last_shares = np.full(len(self.tasks), 1.0 / len(self.tasks))

    # --- level 1 / level 2, overridden ---------------------------------------------------
    def task_shares(self) -> np.ndarray:
        k = len(self.tasks)
        return np.full(k, 1.0 / k)

    def select(self, task: str, budget: int) -> np.ndarray:
        """Uniform sampling without replacement (the default for every baseline)."""
        return self.rng.choice(self.tracker.posteriors.size(task), size=budget, replace=False)

    def observe(self, feedback: RoundFeedback) -> None:
        """Hook for scheduler-specific statistics (called after the tracker update)."""

    # --- the interface ------------------------------------------------------------------
    def plan(self, round_idx: int) -> RoundPlan:
        self.current_round = round_idx
        shares = self.task_shares()
        self.last_shares = shares
        budgets = largest_remainder(shares, self.config.prompts_per_round, self.sizes)
        items: list[tuple[str, str]] = []
        for t, task in enumerate(self.tasks):
            if budgets[t] == 0:
                continue
            ids = self.tracker.posteriors.ids[task]
            items.extend((task, ids[i]) for i in self.select(task, int(budgets[t])))
        self.rounds_planned += 1
        return RoundPlan(
            round_idx=round_idx,
            items=items,
            budgets={t: int(b) for t, b in zip(self.tasks, budgets, strict=True)},
            shares={t: float(w) for t, w in zip(self.tasks, shares, strict=True)},
            samples_per_prompt=self.config.samples_per_prompt,
        )

    def update(self, feedback: RoundFeedback) -> None:
        self.tracker.update(feedback)
        self.observe(feedback)

    def utilities(self) -> np.ndarray:
        return self.tracker.utilities()

    def stats(self) -> dict[str, Any]:
        tr = self.tracker
        util, lp, inf = self.utilities(), tr.learning_potential(), tr.informative_fractions()
        per_task = {
            task: {
                "utility": float(util[t]),
                "learning_potential": float(lp[t]),
                "share": float(self.last_shares[t]),
                "rollouts_spent": int(tr.rollouts[t]),
                "informative_fraction": float(inf[t]),
                "mean_abs_advantage": float(tr.abs_adv[t]),
                "mean_reward": None if np.isnan(tr.mean_reward[t]) else float(tr.mean_reward[t]),
                "zero_variance_fraction": None
                if np.isnan(tr.zero_variance_fraction[t])
                else float(tr.zero_variance_fraction[t]),
                "kl": None if np.isnan(tr.kl[t]) else float(tr.kl[t]),
            }
            for t, task in enumerate(self.tasks)
        }
        return {
            "scheduler": self.name,
            "tasks": per_task,
            "synergy": tr.synergy.tolist(),
            "synergy_raw": [[None if np.isnan(v) else float(v) for v in r] for r in tr.synergy_raw],
            "synergy_floor": [
                [None if np.isnan(v) else float(v) for v in r] for r in tr.synergy_floor
            ],
        }

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume; plain JSON types only."""
        return {
            "name": self.name,
            "tasks": list(self.tasks),
            "config": asdict(self.config),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "rounds_planned": self.rounds_planned,
            "last_shares": self.last_shares.tolist(),
            "tracker": self.tracker.state_dict(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["name"] != self.name or list(state["tasks"]) != self.tasks:
            raise ValueError(
                f"scheduler state is for {state['name']!r} over {state['tasks']}, "
                f"not {self.name!r} over {self.tasks}"
            )
        self.rng.bit_generator.state = copy.deepcopy(dict(state["rng"]))
        self.rounds_planned = int(state["rounds_planned"])
        self.last_shares = np.asarray(state["last_shares"], dtype=np.float64)
        self.tracker.load_state_dict(state["tracker"])
        self.load_extra_state(state["extra"])


class AstorScheduler(Scheduler):
    """ASTOR: utility-routed task shares + Thompson-sampled informative prompts."""

    def __init__(self, *args: Any, prioritise_prompts: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prioritise_prompts = prioritise_prompts

    def task_shares(self) -> np.ndarray:
        k = len(self.tasks)
        eps = self.config.floor
        return (1.0 - eps) * softmax(self.utilities(), self.config.temperature) + eps / k

    def select(self, task: str, budget: int) -> np.ndarray:
        if not self.prioritise_prompts:
            return super().select(task, budget)
        post = self.tracker.posteriors
        if self.config.prompt_scoring == "expected":
            scores = post.informativeness(task)
        else:
            scores = post.thompson_scores(task, self.rng)
        gap = self.config.revisit_gap
        if gap > 0:
            recent = self.current_round - post.last_round[task] < gap
            if recent.any():
                # below every real score (>= 0): taken only when the rest of the pool is used up
                scores = np.where(recent, -1.0, scores)
        return top_k_random_ties(scores, budget, self.rng, self.config.topk_presample)


class ProportionalScheduler(Scheduler):
    """Shares proportional to pool sizes, uniform prompts."""

    def task_shares(self) -> np.ndarray:
        return self.sizes / self.sizes.sum()


class SpecialistScheduler(Scheduler):
    """All budget to one task (one model per task: the specialist baseline)."""

    def __init__(self, *args: Any, task: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if task not in self.tasks:
            raise ValueError(f"scheduler 'specialist:{task}': unknown task (tasks: {self.tasks})")
        self.task = task

    def task_shares(self) -> np.ndarray:
        w = np.zeros(len(self.tasks))
        w[self.tasks.index(self.task)] = 1.0
        return w


class UCBScheduler(Scheduler):
    """DUMP-style UCB over tasks: window mean |advantage| + c sqrt(2 ln N / n_k), softmax."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.windows: list[list[float]] = [[] for _ in self.tasks]
        self.counts = np.zeros(len(self.tasks), dtype=np.int64)

    def scores(self) -> np.ndarray:
        cfg = self.config.ucb
        total = max(int(self.counts.sum()), 1)
        mean = np.array([np.mean(w) if w else 0.0 for w in self.windows])
        with np.errstate(divide="ignore"):
            bonus = cfg.c * np.sqrt(2.0 * np.log(total) / self.counts)
        return mean + bonus

    def task_shares(self) -> np.ndarray:
        unseen = self.counts == 0
        if unseen.any():
            return unseen / unseen.sum()
        return softmax(self.scores(), self.config.ucb.temperature)

    def observe(self, feedback: RoundFeedback) -> None:
        pos = {t: n for n, t in enumerate(self.tasks)}
        for item in feedback.prompts:
            t = pos[item.task]
            adv = item.advantages
            if adv is None:
                adv = group_advantages(item.rewards).tolist()
            self.windows[t].extend(abs(float(a)) for a in adv)
            self.counts[t] += len(adv)
        w = self.config.ucb.window
        self.windows = [win[-w:] for win in self.windows]

    def extra_state(self) -> dict[str, Any]:
        return {"windows": [list(w) for w in self.windows], "counts": self.counts.tolist()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.windows = [list(map(float, w)) for w in state["windows"]]
        self.counts = np.asarray(state["counts"], dtype=np.int64)


def make_scheduler(
    name: str,
    pools: Mapping[str, Sequence[str]],
    config: SchedulerConfig | None = None,
    seed: int = 0,
) -> Scheduler:
    """Build the scheduler called ``name`` (see :data:`SCHEDULER_NAMES`) over ``pools``."""
    config = copy.deepcopy(config) if config is not None else SchedulerConfig()
    if name in ("astor", "astor_fixed_beta"):
        return AstorScheduler(name, pools, config, seed)
    if name == "astor_no_synergy":
        config.utility.eta = 0.0
        return AstorScheduler(name, pools, config, seed)
    if name == "astor_no_prio":
        return AstorScheduler(name, pools, config, seed, prioritise_prompts=False)
    if name == "uniform":
        return Scheduler(name, pools, config, seed)
    if name == "proportional":
        return ProportionalScheduler(name, pools, config, seed)
    if name == "ucb":
        return UCBScheduler(name, pools, config, seed)
    if name.startswith("specialist:"):
        return SpecialistScheduler(name, pools, config, seed, task=name.split(":", 1)[1])
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
