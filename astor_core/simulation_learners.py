"""The simulated learners of astor_core.simulation: ground-truth dynamics a scheduler plays against.

- :class:`SimulatedLearner` ('rasch'): success probability ``p = sigmoid(s_k - d_i)``, G
  Bernoulli outcomes per prompt (plus clipped Gaussian noise for noisy-metric tasks), a group's
  learning signal is its outcome variance, transfer through the true matrix T, a quadratic KL
  pull toward the reference and forgetting scaled by the batch spent elsewhere;
- :class:`MemorisingLearner` ('memorising'): built without the scheduler's own assumptions
  (signal peaking at a pass rate of 1/3, diminishing returns on replayed prompts, collateral
  drift removed by the KL term).

The dynamics are fixed before any scheduler is evaluated (docs/METHOD.md section 4).

Public API: :data:`LEARNERS`, :class:`SimulatedLearner`, :class:`MemorisingLearner`,
:func:`group_signal`, :func:`make_learner`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from astor_core.method.advantages import group_advantages
from astor_core.method.scheduler import RoundPlan
from astor_core.method.utility import PromptFeedback, RoundFeedback

if TYPE_CHECKING:
    from astor_core.simulation import Scenario, TaskSpec


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _directions(transfer: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors (K x dim) whose pairwise cosines are the PSD projection of sym(T)."""
    k = transfer.shape[0]
    corr = np.clip((transfer + transfer.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    vals, vecs = np.linalg.eigh(corr)
    root = vecs * np.sqrt(np.clip(vals, 1e-9, None))
    root /= np.linalg.norm(root, axis=1, keepdims=True)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, k)))
    return root @ basis.T


class SimulatedLearner:
    """Ground-truth learner of a scenario; ``step`` plays one round of a plan."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        world = np.random.default_rng([seed, 0])
        self.rng = np.random.default_rng([seed, 1])
        self.transfer = np.asarray(scenario.transfer, dtype=np.float64)
        self.difficulty: dict[str, np.ndarray] = {}
        self.eval_difficulty: dict[str, np.ndarray] = {}
        self.ids: dict[str, list[str]] = {}
        self.index: dict[str, dict[str, int]] = {}
        for spec in scenario.tasks:
            self.difficulty[spec.name] = self._draw(spec, spec.pool_size, world)
            self.eval_difficulty[spec.name] = self._draw(spec, spec.eval_size, world)
            self.ids[spec.name] = [f"{spec.name}-{i:07d}" for i in range(spec.pool_size)]
            self.index[spec.name] = {pid: i for i, pid in enumerate(self.ids[spec.name])}
        self.skill0 = np.array([t.initial_skill for t in scenario.tasks], dtype=np.float64)
        self.skill = self.skill0.copy()
        self.directions = _directions(self.transfer, scenario.gradient_dim, world)
        self.pos = {t: n for n, t in enumerate(scenario.task_names)}

    @staticmethod
    def _draw(spec: TaskSpec, n: int, rng: np.random.Generator) -> np.ndarray:
        d = rng.normal(spec.difficulty_mean, spec.difficulty_std, size=n)
        d[rng.random(n) < spec.unsolvable_fraction] = np.inf
        return d

    def pools(self) -> dict[str, list[str]]:
        return {t: list(ids) for t, ids in self.ids.items()}

    def success(self) -> np.ndarray:
        """True expected held-out success per task (hidden from the scheduler)."""
        return np.array(
            [
                float(_sigmoid(self.skill[k] - self.eval_difficulty[t]).mean())
                for t, k in self.pos.items()
            ]
        )

    def kl(self) -> np.ndarray:
        return self.scenario.kl_curvature * (self.skill - self.skill0) ** 2

    def step(self, plan: RoundPlan, betas: Mapping[str, float]) -> RoundFeedback:
        sc = self.scenario
        k = len(self.pos)
        g_size = plan.samples_per_prompt
        items = plan.items
        t_idx = np.fromiter((self.pos[task] for task, _ in items), dtype=np.int64, count=len(items))
        diff = np.fromiter(
            (self.difficulty[task][self.index[task][pid]] for task, pid in items),
            dtype=np.float64,
            count=len(items),
        )
        p = _sigmoid(self.skill[t_idx] - diff)
        y = (self.rng.random((len(items), g_size)) < p[:, None]).astype(np.float64)
        prompts = self._observe(items, t_idx, y)
        var = y.var(axis=1)
        signal = np.bincount(t_idx, weights=var, minlength=k) / sc.prompts_per_round
        n_prompts = np.bincount(t_idx, minlength=k).astype(np.float64)
        informative = np.bincount(t_idx, weights=(var > 0).astype(np.float64), minlength=k)
        beta = np.array([float(betas[t]) for t in self.pos])
        frac = n_prompts / sc.prompts_per_round
        gain = self.skill - self.skill0
        learn = sc.learning_rate * self.transfer @ signal
        pull = sc.learning_rate * beta * frac * 2.0 * sc.kl_curvature * gain
        forget = sc.forgetting * (1.0 - frac) * np.maximum(gain, 0.0)
        self.skill = self.skill + learn - pull - forget
        return self._feedback(plan, prompts, informative, n_prompts)

    def _observe(
        self, items: Sequence[tuple[str, str]], t_idx: np.ndarray, y: np.ndarray
    ) -> list[PromptFeedback]:
        """What the scheduler sees of the groups' outcomes `y`: the rewards (outcomes plus each
        task's metric noise, clipped to [0, 1]) and their GRPO advantages, prompt by prompt."""
        noise = np.array([spec.reward_noise for spec in self.scenario.tasks])[t_idx]
        r = y
        if np.any(noise > 0):
            r = np.clip(y + self.rng.standard_normal(y.shape) * noise[:, None], 0.0, 1.0)
        adv = group_advantages(r)
        return [
            PromptFeedback(task, pid, rr, aa)
            for (task, pid), rr, aa in zip(items, r.tolist(), adv.tolist(), strict=True)
        ]

    def _feedback(
        self,
        plan: RoundPlan,
        prompts: list[PromptFeedback],
        informative: np.ndarray,
        n_prompts: np.ndarray,
    ) -> RoundFeedback:
        """The round's feedback: noisy gradient directions for tasks with informative groups
        (noise shrinking with their count) and the KL of every task that was scheduled."""
        sc = self.scenario
        grads = {}
        for task, t in self.pos.items():
            if informative[t] > 0:
                noise = self.rng.standard_normal(sc.gradient_dim) / np.sqrt(sc.gradient_dim)
                grads[task] = self.directions[t] + sc.gradient_noise * noise / np.sqrt(
                    informative[t]
                )
        kl = self.kl()
        return RoundFeedback(
            round_idx=plan.round_idx,
            prompts=prompts,
            pg_gradients=grads,
            kl={task: float(kl[t]) for task, t in self.pos.items() if n_prompts[t] > 0},
        )


LEARNERS: tuple[str, ...] = ("rasch", "memorising")
"""Simulated learners: 'rasch' (signal = group variance, ~p(1-p); gradients from the true T) and
'memorising' (built without the scheduler's assumptions; see MemorisingLearner)."""


def group_signal(successes: np.ndarray, group_size: int, peak: float) -> np.ndarray:
    """Learning signal of groups with ``successes`` of ``group_size``: p (1 - p)^m with
    p = successes / G and m = 1 / peak - 1, scaled to a maximum of 0.25; 0 for an all-pass or
    all-fail group (GRPO has nothing to learn from it).

    >>> group_signal(np.array([0, 3, 4, 8]), 8, 1 / 3).round(3).tolist()
    [0.0, 0.247, 0.211, 0.0]
    """
    p = successes / group_size
    m = 1.0 / peak - 1.0
    top = peak * (1.0 - peak) ** m
    return 0.25 * p * (1.0 - p) ** m / top


class MemorisingLearner(SimulatedLearner):
    """A learner not built on the scheduler's own assumptions (docs/METHOD.md section 4):

    - the learning signal of a group peaks at a pass rate of ``signal_peak`` (1/3), not at the
      1/2 that p(1 - p) and the scheduler's informativeness assume; metric noise teaches nothing;
    - replaying a prompt has diminishing returns: its generalising gain is divided by
      1 + visits / replay_scale, and the prompt's own logit rises (memorisation), so it looks
      solved in training without any held-out gain;
    - every update causes collateral drift on every task, which that task's KL term removes in
      proportion to beta_k and its share of the batch; the KL term also slows the task's own step;
    - the scheduler's gradient vectors follow a perturbed sym(T), plus per-round noise.
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        super().__init__(scenario, seed)
        mp = scenario.memorising
        world = np.random.default_rng([seed, 2])
        k = self.transfer.shape[0]
        noise = world.normal(0.0, mp.transfer_misspecification, size=(k, k))
        believed = (self.transfer + self.transfer.T) / 2.0 + (noise + noise.T) / 2.0
        self.directions = _directions(believed, scenario.gradient_dim, world)
        self.visits = {t: np.zeros(len(ids)) for t, ids in self.ids.items()}
        self.memo = {t: np.zeros(len(ids)) for t, ids in self.ids.items()}
        self.drift = np.zeros(k)

    def success(self) -> np.ndarray:
        return np.array(
            [
                float(_sigmoid(self.skill[k] - self.drift[k] - self.eval_difficulty[t]).mean())
                for t, k in self.pos.items()
            ]
        )

    def kl(self) -> np.ndarray:
        return self.scenario.kl_curvature * ((self.skill - self.skill0) ** 2 + self.drift**2)

    def step(self, plan: RoundPlan, betas: Mapping[str, float]) -> RoundFeedback:
        sc, mp = self.scenario, self.scenario.memorising
        k = len(self.pos)
        g_size = plan.samples_per_prompt
        items = plan.items
        t_idx = np.fromiter((self.pos[task] for task, _ in items), dtype=np.int64, count=len(items))
        p_idx = np.fromiter(
            (self.index[task][pid] for task, pid in items), dtype=np.int64, count=len(items)
        )
        diff = np.array([self.difficulty[t][i] for (t, _), i in zip(items, p_idx, strict=True)])
        memo = np.array([self.memo[t][i] for (t, _), i in zip(items, p_idx, strict=True)])
        visits = np.array([self.visits[t][i] for (t, _), i in zip(items, p_idx, strict=True)])
        p = _sigmoid(self.skill[t_idx] - self.drift[t_idx] - diff + memo)
        y = (self.rng.random((len(items), g_size)) < p[:, None]).astype(np.float64)
        prompts = self._observe(items, t_idx, y)
        sig = group_signal(y.sum(axis=1), g_size, mp.signal_peak)
        general = sig / (1.0 + visits / mp.replay_scale)
        for n, ((task, _), i) in enumerate(zip(items, p_idx, strict=True)):
            self.visits[task][i] += 1.0
            self.memo[task][i] += mp.memorisation * sig[n]
        signal = np.bincount(t_idx, weights=general, minlength=k) / sc.prompts_per_round
        n_prompts = np.bincount(t_idx, minlength=k).astype(np.float64)
        informative = np.bincount(t_idx, weights=(sig > 0).astype(np.float64), minlength=k)
        beta = np.array([float(betas[t]) for t in self.pos])
        frac = n_prompts / sc.prompts_per_round
        kappa = mp.kl_strength * beta
        own = mp.learning_rate * signal / (1.0 + mp.kl_slow * kappa)
        learn = self.transfer @ own
        gain = self.skill - self.skill0
        forget = sc.forgetting * (1.0 - frac) * np.maximum(gain, 0.0)
        self.skill = self.skill + learn - forget
        self.drift = self.drift * np.exp(-kappa * frac) + mp.drift * float(np.abs(learn).sum())
        return self._feedback(plan, prompts, informative, n_prompts)


def make_learner(name: str, scenario: Scenario, seed: int) -> SimulatedLearner:
    """The simulated learner called ``name`` (see :data:`LEARNERS`)."""
    if name == "rasch":
        return SimulatedLearner(scenario, seed)
    if name == "memorising":
        return MemorisingLearner(scenario, seed)
    raise ValueError(f"unknown learner {name!r}; choose one of {', '.join(LEARNERS)}")
