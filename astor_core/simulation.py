"""Scheduler evaluation without a GPU: scenarios of simulated multi-task learners and runs over them.

The dynamics are fixed from published facts before any scheduler is evaluated (docs/METHOD.md):

- success probability of prompt i of task k: ``p = sigmoid(s_k - d_i)`` (a Rasch / item-response
  model: skill s_k, difficulty d_i; unsolvable prompts have d = +inf, so p = 0);
- G Bernoulli outcomes per prompt; the reward is the outcome, plus clipped Gaussian noise for
  tasks with a noisy metric (e.g. commit messages scored by text overlap);
- the learning signal of a group is its within-group outcome variance (GRPO gives no gradient
  on a zero-variance group; the expected signal is proportional to p(1-p): SPEED-RL,
  arXiv 2506.09016); a task's signal ``g_k`` is the sum over its groups divided by B;
- transfer: ``s_j += lr * sum_k T_jk g_k`` with the TRUE transfer matrix T (negative entries
  are interference); the KL penalty's gradient pulls task k back toward the reference:
  ``- lr * beta_k (n_k / B) * dKL_k/ds_k`` with ``KL_k = kl_curvature (s_k - s0_k)^2``
  (the quadratic / Fisher approximation of KL near the reference);
- forgetting: a task's gains relax toward its initial skill by ``forgetting`` per round,
  scaled by the fraction of the batch spent on other tasks.

The scheduler sees only rewards, advantages, measured KL and NOISY per-task gradient vectors
(latent directions whose cosines follow the symmetrised T, plus isotropic noise shrinking with the
number of informative groups). The ground truth (skills, difficulties, T) stays hidden.

The learners themselves live in :mod:`astor_core.simulation_learners`; this module holds the
scenarios and runs schedulers against them.

Public API: :class:`TaskSpec`, :class:`Scenario`, :func:`load_scenario`, :class:`SimRun`,
:func:`run_simulation`, :func:`run_specialists`, :func:`evaluate_schedulers`, :func:`summarise`,
:func:`shipped_scenarios`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from astor_core.method.calibration import CalibrationConfig, make_calibrator
from astor_core.method.scheduler import SCHEDULER_NAMES, SchedulerConfig, make_scheduler
from astor_core.simulation_learners import LEARNERS, make_learner

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "configs" / "scenarios"
"""Where the shipped scenario files live."""

BENCH_SCHEDULERS: tuple[str, ...] = tuple(
    n for n in SCHEDULER_NAMES if not n.startswith("specialist:")
) + ("specialists",)
"""Schedulers the benchmark compares ('specialists' = one specialist learner per task)."""


@dataclass
class TaskSpec:
    """One simulated task: its pool and how hard it is (hidden from the scheduler)."""

    name: str
    """Task name."""
    pool_size: int = 1000
    """Training prompts in the pool."""
    eval_size: int = 500
    """Held-out prompts the success curve is measured on."""
    initial_skill: float = 0.0
    """s_k at round 0 (the reference policy)."""
    difficulty_mean: float = 1.0
    """Mean of the normal distribution prompt difficulties are drawn from."""
    difficulty_std: float = 1.5
    """Spread of prompt difficulties."""
    unsolvable_fraction: float = 0.0
    """Fraction of prompts no skill can solve (d = +inf)."""
    reward_noise: float = 0.0
    """Std of Gaussian noise added to each 0/1 outcome (then clipped to [0, 1])."""


@dataclass
class MemorisingParams:
    """Dynamics of the ``memorising`` learner (scenario key ``memorising``; every field has a
    default, so every scenario runs with either learner). Chosen from published facts and
    frozen, with the scenario files, before any scheduler ran on this learner."""

    learning_rate: float = 0.8
    """Skill change per unit of group learning signal (sets the time scale only; chosen with
    the uniform scheduler alone so it needs about as many rollouts as on the rasch learner)."""
    signal_peak: float = 0.3333333333333333
    """Group pass rate at which a group teaches most: the signal is p^1 (1 - p)^m with the peak
    at 1 / (1 + m), scaled to a maximum of 0.25 (not p(1 - p), whose peak is 0.5): positive
    samples on hard prompts carry more than on easy ones."""
    replay_scale: float = 2.0
    """Generalising gain of a group x 1 / (1 + visits / replay_scale): the n-th replay of one
    prompt teaches less and less that transfers to unseen prompts."""
    memorisation: float = 2.0
    """Logit gain of the prompt itself per unit of signal it gave (train-only: the policy
    memorises that prompt, which then looks solved without any held-out gain)."""
    drift: float = 2.0
    """Collateral drift: every task's drift D_k grows by this x the round's total skill update;
    success is sigmoid(s - D - d). What the KL penalty to the reference exists to prevent."""
    kl_strength: float = 25.0
    """kappa_k = kl_strength beta_k: task k's KL term removes a fraction 1 - exp(-kappa_k n_k / B)
    of its drift per round and shrinks its own skill step by 1 / (1 + kl_slow kappa_k)."""
    kl_slow: float = 0.3
    """How much a task's KL term slows its own learning (see kl_strength)."""
    transfer_misspecification: float = 0.25
    """Std of the symmetric perturbation of sym(T) that the gradient directions follow (the
    scheduler never sees the true T verbatim)."""


@dataclass
class Scenario:
    """A simulated multi-task learning problem, loaded from configs/scenarios/*.yaml."""

    name: str
    """Scenario name."""
    tasks: list[TaskSpec]
    """The tasks, in order (rows/columns of ``transfer``)."""
    transfer: list[list[float]]
    """TRUE T[j][k]: gain of task j's skill per unit of learning signal on task k (diag 1)."""
    description: str = ""
    """What the scenario tests."""
    learning_rate: float = 0.3
    """Skill change per unit of learning signal."""
    forgetting: float = 0.002
    """Per-round relaxation of a task's gains toward its initial skill when untrained."""
    kl_curvature: float = 0.01
    """c in KL_k = c (s_k - s0_k)^2."""
    gradient_noise: float = 1.0
    """Noise of the per-task gradient vectors (per informative group; shrinks as 1/sqrt(groups))."""
    gradient_dim: int = 64
    """Length of the simulated gradient vectors."""
    prompts_per_round: int = 64
    """B."""
    samples_per_prompt: int = 8
    """G."""
    budget: int = 150_000
    """Rollout budget (completions) of one run."""
    target_mean_success: float = 0.6
    """Mean held-out success over tasks that counts as 'reached'."""
    split: str = "test"
    """'validation' (method constants may be tuned on it) or 'test' (report only)."""
    memorising: MemorisingParams = field(default_factory=MemorisingParams)
    """Dynamics of the memorising learner (ignored by the rasch learner)."""

    def __post_init__(self) -> None:
        self.tasks = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in self.tasks]
        if isinstance(self.memorising, Mapping):
            self.memorising = MemorisingParams(**self.memorising)
        if self.split not in ("validation", "test"):
            raise ValueError(f"scenario {self.name!r}: split must be 'validation' or 'test'")
        k = len(self.tasks)
        t = np.asarray(self.transfer, dtype=np.float64)
        if t.shape != (k, k):
            raise ValueError(f"scenario {self.name!r}: transfer must be {k}x{k}, got {t.shape}")
        if len({s.name for s in self.tasks}) != k:
            raise ValueError(f"scenario {self.name!r}: task names must be unique")
        for s in self.tasks:
            if s.pool_size < 1 or s.eval_size < 1 or not 0 <= s.unsolvable_fraction < 1:
                raise ValueError(
                    f"scenario {self.name!r}, task {s.name!r}: bad pool/eval size or fraction"
                )

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def rollouts_per_round(self) -> int:
        return self.prompts_per_round * self.samples_per_prompt


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file (a clear error naming the file if it is malformed)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        return Scenario(**data)
    except (TypeError, ValueError, yaml.YAMLError) as err:
        raise ValueError(f"scenario file {path}: {err}") from err


def shipped_scenarios() -> list[Path]:
    """The scenario files in configs/scenarios, sorted by name."""
    return sorted(SCENARIO_DIR.glob("*.yaml"))


@dataclass
class SimRun:
    """One scheduler on one seed: the success curve against rollouts spent."""

    scheduler: str
    """Scheduler name."""
    seed: int
    """Seed of the world and of the scheduler."""
    rollouts: list[int]
    """Cumulative rollouts after each point of the curve (0 first)."""
    mean_success: list[float]
    """Mean held-out success over tasks at each point."""
    final_success: dict[str, float]
    """Per-task held-out success at the end."""
    shares: dict[str, float] = field(default_factory=dict)
    """Fraction of all rollouts each task received."""
    task_success: list[list[float]] = field(default_factory=list)
    """Per-task held-out success at each point of the curve."""

    def rollouts_to(self, target: float) -> int | None:
        for n, s in zip(self.rollouts, self.mean_success, strict=True):
            if s >= target:
                return n
        return None

    def auc(self, budget: int) -> float:
        """Area under mean success vs rollouts, normalised by the budget (in [0, 1])."""
        x = np.minimum(np.asarray(self.rollouts, dtype=np.float64), budget)
        y = np.asarray(self.mean_success)
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / budget)


def _scheduler_config(scenario: Scenario, base: SchedulerConfig | None) -> SchedulerConfig:
    cfg = SchedulerConfig() if base is None else SchedulerConfig(**vars(base))
    cfg.prompts_per_round = scenario.prompts_per_round
    cfg.samples_per_prompt = scenario.samples_per_prompt
    return cfg


def run_simulation(
    scenario: Scenario,
    scheduler: str,
    seed: int,
    budget: int | None = None,
    scheduler_config: SchedulerConfig | None = None,
    calibration_config: CalibrationConfig | None = None,
    learner_name: str = "rasch",
) -> SimRun:
    """Train a simulated learner with one scheduler (+ its calibrator) until the rollout budget."""
    budget = budget or scenario.budget
    learner = make_learner(learner_name, scenario, seed)
    sched = make_scheduler(
        scheduler, learner.pools(), _scheduler_config(scenario, scheduler_config), seed
    )
    cal = make_calibrator(scheduler, scenario.task_names, calibration_config)
    first = learner.success()
    rollouts, curve, per_task = [0], [float(first.mean())], [first.tolist()]
    spent = np.zeros(len(scenario.tasks))
    rnd = 0
    while rollouts[-1] < budget:
        plan = sched.plan(rnd)
        feedback = learner.step(plan, cal.betas())
        sched.update(feedback)
        util = dict(zip(sched.tasks, sched.utilities().tolist(), strict=True))
        n = {t: b * plan.samples_per_prompt for t, b in plan.budgets.items()}
        cal.update(feedback.kl, util, n)
        spent += [n[t] for t in scenario.task_names]
        rollouts.append(rollouts[-1] + len(plan.items) * plan.samples_per_prompt)
        now = learner.success()
        curve.append(float(now.mean()))
        per_task.append(now.tolist())
        rnd += 1
    final = learner.success()
    return SimRun(
        scheduler=scheduler,
        seed=seed,
        rollouts=rollouts,
        mean_success=curve,
        final_success=dict(zip(scenario.task_names, final.tolist(), strict=True)),
        shares=dict(zip(scenario.task_names, (spent / spent.sum()).tolist(), strict=True)),
        task_success=per_task,
    )


def run_specialists(
    scenario: Scenario,
    seed: int,
    budget: int | None = None,
    scheduler_config: SchedulerConfig | None = None,
    calibration_config: CalibrationConfig | None = None,
    learner_name: str = "rasch",
) -> SimRun:
    """One specialist learner per task, each on budget / K rollouts; the ensemble's curve
    pairs each specialist with its own task (the specialists' rollouts add up)."""
    budget = budget or scenario.budget
    k = len(scenario.tasks)
    runs = [
        run_simulation(
            scenario,
            f"specialist:{t}",
            seed,
            budget // k,
            scheduler_config,
            calibration_config,
            learner_name,
        )
        for t in scenario.task_names
    ]
    length = min(len(r.rollouts) for r in runs)
    per_task = np.array([[r.task_success[i][t] for i in range(length)] for t, r in enumerate(runs)])
    return SimRun(
        scheduler="specialists",
        seed=seed,
        rollouts=[k * runs[0].rollouts[i] for i in range(length)],
        mean_success=per_task.mean(axis=0).tolist(),
        final_success={t: runs[n].final_success[t] for n, t in enumerate(scenario.task_names)},
        shares={t: 1.0 / k for t in scenario.task_names},
        task_success=per_task.T.tolist(),
    )


_Job = tuple[
    Scenario, str, int, "int | None", "SchedulerConfig | None", "CalibrationConfig | None", str
]


def _job(args: _Job) -> SimRun:
    scenario, name, seed, budget, sched_cfg, cal_cfg, learner = args
    if name == "specialists":
        return run_specialists(scenario, seed, budget, sched_cfg, cal_cfg, learner)
    return run_simulation(scenario, name, seed, budget, sched_cfg, cal_cfg, learner)


def evaluate_schedulers(
    scenario: Scenario,
    names: Sequence[str] = BENCH_SCHEDULERS,
    seeds: int = 10,
    budget: int | None = None,
    workers: int = 1,
    scheduler_config: SchedulerConfig | None = None,
    calibration_config: CalibrationConfig | None = None,
    learner: str = "rasch",
) -> dict[str, list[SimRun]]:
    """Every scheduler on seeds 0..seeds-1 of the scenario (processes when workers > 1)."""
    if learner not in LEARNERS:
        raise ValueError(f"unknown learner {learner!r}; choose one of {', '.join(LEARNERS)}")
    jobs: list[_Job] = [
        (scenario, name, seed, budget, scheduler_config, calibration_config, learner)
        for name in names
        for seed in range(seeds)
    ]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        runs = [_job(j) for j in jobs]
    out: dict[str, list[SimRun]] = {name: [] for name in names}
    for run in runs:
        out[run.scheduler].append(run)
    return out


def summarise(
    scenario: Scenario, runs: Mapping[str, Sequence[SimRun]], budget: int | None = None
) -> dict[str, Any]:
    """Per scheduler: rollouts to target (unreached runs count as the budget), AUC, final success."""
    budget = budget or scenario.budget
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        reach = [r.rollouts_to(scenario.target_mean_success) for r in rs]
        capped = np.array([budget if x is None else x for x in reach], dtype=np.float64)
        aucs = np.array([r.auc(budget) for r in rs])
        final = {t: float(np.mean([r.final_success[t] for r in rs])) for t in scenario.task_names}
        out[name] = {
            "rollouts_to_target_mean": float(capped.mean()),
            "rollouts_to_target_std": float(capped.std()),
            "reached_fraction": float(np.mean([x is not None for x in reach])),
            "auc_mean": float(aucs.mean()),
            "auc_std": float(aucs.std()),
            "final_success": final,
            "final_mean_success": float(np.mean(list(final.values()))),
            "shares": {t: float(np.mean([r.shares[t] for r in rs])) for t in scenario.task_names},
        }
    return out
