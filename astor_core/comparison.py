"""The paper's comparison: every method under the same budget and seeds, evaluated item by
item on one held-out split, with paired statistics over seeds.

Methods are scheduler names (astor_core.method.scheduler). "specialists" expands to one
``specialist:<task>`` run per task; the specialists' row reads each task from its own
specialist (as the paper does) and averages those per-task scores.

Budget: every method gets the same total rollout budget, rounds x B x G. A specialist run
schedules B / K prompts per round on its one task, so the four specialists together spend
what one multi-task run spends; uniform MTRL gives each task that same B / K per round,
so specialists and uniform MTRL see the same amount of data per task.

Evaluation: every run's final policy (and the SFT start, once per seed) on every item of
the held-out split ``compare.split`` (astor_core.evaluation.heldout_split): sampled
mean@k at temperature 1 (the primary metric) and greedy (secondary). Statistics
(:func:`paired_comparison`): the per-seed paired difference of the average held-out reward
(mean over tasks of the mean over items), its t interval, a bootstrap interval over seeds and
items, and the minimum detectable effect; a win needs both lower bounds above 0 and the
relative gain at the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import Field
from scipy import stats

from astor_core import TASKS

DEFAULT_METHODS: tuple[str, ...] = (
    "astor",
    "uniform",
    "proportional",
    "ucb",
    "specialists",
    "astor_no_synergy",
    "astor_no_prio",
    "astor_fixed_beta",
)
"""Methods `astor compare` runs by default (specialists = one run per task)."""

SPECIALISTS = "specialists"
"""The row name of the per-task specialists."""
SFT = "sft"
"""The row name of the starting policy (model.name_or_path), evaluated like every run."""
PRIMARY = "mean_at_k"
"""The primary metric: mean reward over k samples per item at the evaluation temperature."""
SECONDARY = "greedy"
"""The secondary metric: the reward of one greedy completion per item."""
FEEDBACK_FREE: tuple[str, ...] = ("uniform", "proportional")
"""Schedulers whose plans never read feedback: equal plans in every round mean identical runs."""


@dataclass(frozen=True)
class CompareConfig:
    """What `astor compare` runs and how it evaluates (the budget comes from train/scheduler)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods to compare (scheduler names; 'specialists' expands to one run per task)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    """Seeds; every method runs with every seed (paired: the same seed is one pair)."""
    baseline: str = "uniform"
    """The multi-task baseline relative gains are quoted against."""
    target_gain: float = 0.05
    """The relative gain ASTOR must reach over the baseline and the specialists to claim a win."""
    split: Literal["validation", "test"] = "validation"
    """Held-out half the report scores (validation: for tuning; test: the final report only)."""
    eval_samples: Annotated[int, Field(ge=4)] = 4
    """k of the primary metric mean@k (completions per item)."""
    eval_temperature: Annotated[float, Field(gt=0)] = 1.0
    """Sampling temperature of the primary metric."""
    eval_greedy: bool = True
    """Also score one greedy completion per item (the secondary metric)."""
    eval_items_per_task: Annotated[int, Field(ge=0)] = 0
    """Items per task of the split, first by prompt_id (0: every item)."""
    sft_row: bool = True
    """Evaluate the starting policy once per seed (the SFT row)."""
    skip_identical: bool = True
    """Do not train an arm identical by construction to another (it is flagged in the report)."""
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    """Confidence level of the t and bootstrap intervals."""
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    """Power the minimum detectable effect is computed for."""
    bootstrap_resamples: Annotated[int, Field(ge=100)] = 10000
    """Resamples of the seeds-and-items bootstrap."""
    quick_rounds: Annotated[int, Field(ge=1)] = 3
    """Rounds per run in --quick mode."""
    quick_seeds: tuple[int, ...] = (0,)
    """Seeds in --quick mode."""
    quick_eval_items_per_task: Annotated[int, Field(ge=0)] = 6
    """Items per task of the split in --quick mode (0: every item)."""
    run_root: str = "runs/compare"
    """Parent folder of every run's run_dir."""
    experiment: str = "astor-compare"
    """MLflow experiment holding the parent and child runs."""


def expand_methods(methods: Sequence[str], tasks: Sequence[str] = TASKS) -> list[str]:
    """Scheduler names to run for a list of methods.

    >>> expand_methods(["astor", "specialists"], ["a", "b"])
    ['astor', 'specialist:a', 'specialist:b']
    """
    out: list[str] = []
    for m in methods:
        out.extend(f"specialist:{t}" for t in tasks) if m == SPECIALISTS else out.append(m)
    return out


def run_name(scheduler: str, seed: int) -> str:
    """The folder (and MLflow run) name of one run of the comparison.

    >>> run_name("specialist:code_generation", 1)
    'specialist-code_generation-s1'
    """
    return f"{scheduler.replace(':', '-')}-s{seed}"


def run_overrides(
    scheduler: str, seed: int, prompts_per_round: int, n_tasks: int, run_root: str
) -> list[str]:
    """Config overrides of one run of the comparison (same budget for every method).

    >>> run_overrides("specialist:code_generation", 1, 24, 4, "runs/c")[:3]
    ['train.scheduler=specialist:code_generation', 'train.seed=1', 'train.run_dir=runs/c/specialist-code_generation-s1']
    """
    out = [
        f"train.scheduler={scheduler}",
        f"train.seed={seed}",
        f"train.run_dir={run_root}/{run_name(scheduler, seed)}",
    ]
    if scheduler.startswith("specialist:"):
        out.append(f"scheduler.prompts_per_round={max(1, prompts_per_round // n_tasks)}")
    return out


def eval_tasks(scheduler: str, tasks: Sequence[str]) -> list[str]:
    """The tasks a run's final policy is evaluated on: a specialist only on its own task
    (the specialists row reads nothing else).

    >>> eval_tasks("specialist:b", ["a", "b"]), eval_tasks("astor", ["a", "b"])
    (['b'], ['a', 'b'])
    """
    if scheduler.startswith("specialist:"):
        return [scheduler.split(":", 1)[1]]
    return list(tasks)


def identical_arms(
    methods: Sequence[str],
    pools: Mapping[str, Sequence[str]],
    scheduler_cfg: object,
    seeds: Sequence[int],
    rounds: int,
    baseline: str = "uniform",
) -> dict[str, str]:
    """Arms identical by construction: feedback-free schedulers (:data:`FEEDBACK_FREE`) whose
    plans over the training pools are the same in every round for every seed (same seed,
    same plans: the same run). Returns duplicate -> the arm kept (the baseline if it is one
    of them, else the first in `methods`).

    >>> from astor_core.method.scheduler import SchedulerConfig
    >>> cfg = SchedulerConfig(prompts_per_round=8, samples_per_prompt=2)
    >>> even = {"a": [str(i) for i in range(40)], "b": [str(i) for i in range(41)]}
    >>> identical_arms(["proportional", "uniform"], even, cfg, [0], 3)
    {'proportional': 'uniform'}
    >>> skewed = {"a": [str(i) for i in range(40)], "b": [str(i) for i in range(80)]}
    >>> identical_arms(["proportional", "uniform"], skewed, cfg, [0], 3)
    {}
    """
    from astor_core.method.scheduler import make_scheduler

    candidates = [m for m in methods if m in FEEDBACK_FREE]
    candidates.sort(key=lambda m: (m != baseline, list(methods).index(m)))

    def plans(name: str) -> list[list[list[tuple[str, str]]]]:
        # the scheduled items make the run (the shares they were split from may differ)
        out = []
        for seed in seeds:
            sched = make_scheduler(name, pools, scheduler_cfg, seed)  # type: ignore[arg-type]
            out.append([sched.plan(r).items for r in range(rounds)])
        return out

    seen: list[tuple[str, list[list[list[tuple[str, str]]]]]] = []
    out: dict[str, str] = {}
    for name in candidates:
        mine = plans(name)
        twin = next((kept for kept, p in seen if p == mine), None)
        if twin is None:
            seen.append((name, mine))
        else:
            out[name] = twin
    return out


@dataclass(frozen=True)
class RunResult:
    """One evaluated policy (one run's final policy, or the SFT start) on one seed."""

    scheduler: str
    """Scheduler name of the run (``specialist:<task>`` included), or :data:`SFT`."""
    seed: int
    """The comparison seed (train.seed, and the evaluation's sampling seed)."""
    items: Mapping[str, Mapping[str, Mapping[str, float]]]
    """metric (:data:`PRIMARY`, :data:`SECONDARY`) -> task -> prompt_id -> that item's score."""

    def scores(self, metric: str = PRIMARY) -> dict[str, float]:
        """task -> mean score over its items.

        >>> RunResult("uniform", 0, {"mean_at_k": {"a": {"1": 0.5, "2": 0.0}}}).scores()
        {'a': 0.25}
        """
        return {t: float(np.mean(list(v.values()))) for t, v in self.items.get(metric, {}).items()}


ItemScores = dict[int, dict[str, dict[str, float]]]
"""seed -> task -> prompt_id -> score: one arm's held-out scores item by item."""


def arm_items(
    results: Sequence[RunResult], tasks: Sequence[str] = TASKS, metric: str = PRIMARY
) -> dict[str, ItemScores]:
    """Every arm's item scores per seed; the specialist runs become one 'specialists' arm
    (task t from specialist:t). Seeds missing a task are left out.

    >>> rs = [RunResult("specialist:a", 0, {"mean_at_k": {"a": {"1": 1.0}}}),
    ...       RunResult("specialist:b", 0, {"mean_at_k": {"b": {"2": 0.0}}}),
    ...       RunResult("specialist:a", 1, {"mean_at_k": {"a": {"1": 1.0}}})]
    >>> arm_items(rs, ["a", "b"])
    {'specialists': {0: {'a': {'1': 1.0}, 'b': {'2': 0.0}}}}
    """
    by_arm: dict[str, ItemScores] = {}
    for r in results:
        per_task = r.items.get(metric, {})
        if r.scheduler.startswith("specialist:"):
            task = r.scheduler.split(":", 1)[1]
            if task in per_task:
                by_arm.setdefault(SPECIALISTS, {}).setdefault(r.seed, {})[task] = dict(
                    per_task[task]
                )
        else:
            by_arm.setdefault(r.scheduler, {})[r.seed] = {t: dict(v) for t, v in per_task.items()}
    out: dict[str, ItemScores] = {}
    for arm, seeds in by_arm.items():
        complete = {
            s: {t: sc[t] for t in tasks}
            for s, sc in sorted(seeds.items())
            if all(sc.get(t) for t in tasks)
        }
        if complete:
            out[arm] = complete
    return out


@dataclass
class MethodRow:
    """One row of the results table: per-task and average, mean and std over seeds."""

    method: str
    per_task: dict[str, tuple[float, float]] = field(default_factory=dict)
    """task -> (mean, std) over seeds of the task's mean item score."""
    average: tuple[float, float] = (float("nan"), float("nan"))
    """(mean, std) over seeds of the average over tasks."""
    seeds: int = 0
    """Seeds the row is over."""
    per_seed_average: list[float] = field(default_factory=list)
    """The average over tasks, seed by seed."""


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def method_rows(
    results: Sequence[RunResult], tasks: Sequence[str] = TASKS, metric: str = PRIMARY
) -> dict[str, MethodRow]:
    """Aggregate evaluated policies into rows (specialist runs become one 'specialists' row)."""
    rows: dict[str, MethodRow] = {}
    for arm, seeds in arm_items(results, tasks, metric).items():
        per_seed = {
            s: {t: float(np.mean(list(sc[t].values()))) for t in tasks} for s, sc in seeds.items()
        }
        row = MethodRow(method=arm, seeds=len(per_seed))
        for t in tasks:
            row.per_task[t] = _mean_std([sc[t] for sc in per_seed.values()])
        row.per_seed_average = [float(np.mean(list(sc.values()))) for sc in per_seed.values()]
        row.average = _mean_std(row.per_seed_average)
        rows[arm] = row
    return rows


def relative_gain(value: float, base: float) -> float:
    """(value - base) / base.

    >>> round(relative_gain(0.55, 0.5), 3)
    0.1
    """
    return (value - base) / base if base else float("nan")


def paired_arrays(
    treatment: ItemScores, control: ItemScores, tasks: Sequence[str]
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """The seeds both arms have, and per task a (seeds x items) score matrix of each arm over
    the items both have (sorted by prompt_id), so row s / column i is the same pair.

    >>> a = {0: {"t": {"1": 1.0, "2": 0.0}}, 1: {"t": {"1": 1.0, "2": 1.0}}}
    >>> b = {1: {"t": {"2": 0.5, "1": 0.0}}}
    >>> seeds, xa, xb = paired_arrays(a, b, ["t"])
    >>> seeds, xa[0].tolist(), xb[0].tolist()
    ([1], [[1.0, 1.0]], [[0.0, 0.5]])
    >>> paired_arrays(a, {2: b[1]}, ["t"])
    ([], [], [])
    """
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        return [], [], []
    xa: list[np.ndarray] = []
    xb: list[np.ndarray] = []
    for t in tasks:
        ids = sorted(
            set.intersection(*(set(arm[s][t]) for arm in (treatment, control) for s in seeds))
        )
        xa.append(np.array([[treatment[s][t][i] for i in ids] for s in seeds], dtype=float))
        xb.append(np.array([[control[s][t][i] for i in ids] for s in seeds], dtype=float))
    return seeds, xa, xb


def seed_averages(per_task: Sequence[np.ndarray]) -> np.ndarray:
    """Per seed, the average over tasks of the mean over items (each task weighs the same).

    >>> seed_averages([np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0], [0.5]])]).tolist()
    [0.25, 0.75]
    """
    return np.mean([m.mean(axis=1) for m in per_task], axis=0)


def t_interval(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the mean of paired differences: the one-sample t test of
    the differences against 0 (equivalently scipy.stats.ttest_rel of the two arms).
    mean ± t_{n-1, (1+c)/2} · sd / sqrt(n); for 0.1, 0.2, 0.3: 0.2 ± 4.303 · 0.1 / sqrt(3).

    >>> [round(v, 4) for v in t_interval([0.1, 0.2, 0.3])]
    [-0.0484, 0.4484, 0.0742]
    """
    d = np.asarray(diffs, dtype=float)
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        # no spread: the interval is the point (scipy would warn of cancellation)
        mean = float(d.mean())
        return mean, mean, 1.0 if mean == 0 else 0.0
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(confidence)
    return float(ci.low), float(ci.high), float(res.pvalue)


def bootstrap_interval(
    diff_by_task: Sequence[np.ndarray],
    resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the average paired difference, resampling seeds and items.

    ``diff_by_task[t]`` is task t's (seeds x items) matrix of treatment - control item
    scores. Each resample draws the seeds with replacement (one draw for every task: a seed
    is one pair of runs) and, independently, each task's items with replacement (the
    crossed, two-way bootstrap: both the run-to-run and the item sampling variation enter),
    then takes the mean over tasks of the mean over the drawn cells. As multinomial counts
    c (seeds) and d (items): mean_t c·D_t·d / (n_seeds · n_items_t).

    >>> d = [np.array([[0.1, 0.3], [0.2, 0.2]])]
    >>> low, high = bootstrap_interval(d, 2000)
    >>> 0.1 <= low <= 0.2 <= high <= 0.3
    True
    >>> bootstrap_interval([np.full((3, 4), 0.5)], 200)
    (0.5, 0.5)
    """
    rng = np.random.default_rng(seed)
    n_seeds = diff_by_task[0].shape[0]
    c = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)
    total = np.zeros(resamples)
    for d in diff_by_task:
        n_items = d.shape[1]
        w = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=resamples)
        total += np.einsum("bs,si,bi->b", c, d, w) / (n_seeds * n_items)
    stat = total / len(diff_by_task)
    alpha = 1.0 - confidence
    low, high = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return round(float(low), 12), round(float(high), 12)


def min_detectable_effect(sd: float, n: int, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest true mean paired difference a two-sided paired t test at level
    1 - confidence detects with the given power, from the observed sd of the differences:
    MDE = (t_{n-1, 1-α/2} + t_{n-1, power}) · sd / sqrt(n) (the usual approximation of the
    noncentral t). For sd 0.1 over 6 seeds: (2.571 + 0.920) · 0.1 / sqrt(6).

    >>> round(min_detectable_effect(0.1, 6), 4)
    0.1425
    """
    if n < 2:
        return float("nan")
    alpha = 1.0 - confidence
    q = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(q * sd / np.sqrt(n))


@dataclass(frozen=True)
class PairedComparison:
    """Treatment vs control over paired seeds, on the average held-out reward."""

    treatment: str
    """The arm whose gain is measured."""
    control: str
    """The arm it is measured against."""
    seeds: tuple[int, ...]
    """The paired seeds."""
    items: int
    """Held-out items per seed in the pairing (summed over tasks)."""
    per_seed_diff: tuple[float, ...]
    """treatment - control average held-out reward, seed by seed."""
    treatment_mean: float
    """Mean over seeds of the treatment's average held-out reward."""
    control_mean: float
    """Mean over seeds of the control's average held-out reward."""
    mean_diff: float
    """Mean of per_seed_diff."""
    sd_diff: float
    """Sample std (ddof 1) of per_seed_diff."""
    t_low: float
    """Lower end of the t interval of mean_diff."""
    t_high: float
    """Upper end of the t interval of mean_diff."""
    p_value: float
    """Two-sided p of the paired t test."""
    boot_low: float
    """Lower end of the seeds-and-items bootstrap interval of mean_diff."""
    boot_high: float
    """Upper end of the seeds-and-items bootstrap interval of mean_diff."""
    mde: float
    """Minimum detectable effect (absolute) at the configured power."""
    target: float
    """The relative gain a win needs."""

    @property
    def relative_gain(self) -> float:
        """mean_diff relative to the control's mean."""
        return relative_gain(self.treatment_mean, self.control_mean)

    @property
    def win(self) -> bool:
        """Both lower bounds above 0 and the relative gain at the target."""
        return (
            len(self.seeds) >= 2
            and self.t_low > 0
            and self.boot_low > 0
            and self.relative_gain >= self.target
        )


def paired_comparison(
    treatment: str,
    control: str,
    a: ItemScores,
    b: ItemScores,
    tasks: Sequence[str],
    cfg: CompareConfig,
    target: float = 0.0,
) -> PairedComparison | None:
    """The paired comparison of two arms (None when they share no seed)."""
    seeds, xa, xb = paired_arrays(a, b, tasks)
    if not seeds or any(m.shape[1] == 0 for m in xa):
        return None
    avg_a, avg_b = seed_averages(xa), seed_averages(xb)
    diffs = avg_a - avg_b
    n = len(seeds)
    sd = float(diffs.std(ddof=1)) if n > 1 else float("nan")
    t_low, t_high, p = t_interval(diffs, cfg.confidence) if n > 1 else (np.nan,) * 3
    boot = bootstrap_interval(
        [ma - mb for ma, mb in zip(xa, xb, strict=True)], cfg.bootstrap_resamples, cfg.confidence
    )
    return PairedComparison(
        treatment=treatment,
        control=control,
        seeds=tuple(seeds),
        items=int(sum(m.shape[1] for m in xa)),
        per_seed_diff=tuple(float(d) for d in diffs),
        treatment_mean=float(avg_a.mean()),
        control_mean=float(avg_b.mean()),
        mean_diff=float(diffs.mean()),
        sd_diff=sd,
        t_low=float(t_low),
        t_high=float(t_high),
        p_value=float(p),
        boot_low=boot[0],
        boot_high=boot[1],
        mde=min_detectable_effect(sd, n, cfg.confidence, cfg.power),
        target=target,
    )


def planned_pairs(
    arms: Sequence[str], baseline: str, target: float
) -> list[tuple[str, str, float]]:
    """(treatment, control, target gain) of every comparison the report makes: ASTOR vs the
    baseline and vs the specialists (at the target), ASTOR vs each ablation (astor_*: does
    the removed part help) and every arm vs the SFT start (above it at all).

    >>> planned_pairs(["astor", "uniform", "specialists", "astor_no_prio", "sft"], "uniform", 0.05)
    [('astor', 'uniform', 0.05), ('astor', 'specialists', 0.05), ('astor', 'astor_no_prio', 0.0), ('astor', 'sft', 0.0), ('uniform', 'sft', 0.0), ('specialists', 'sft', 0.0), ('astor_no_prio', 'sft', 0.0)]
    """
    pairs: list[tuple[str, str, float]] = []
    if "astor" in arms:
        pairs += [("astor", c, target) for c in (baseline, SPECIALISTS) if c in arms]
        pairs += [("astor", c, 0.0) for c in arms if c.startswith("astor_")]
    if SFT in arms:
        pairs += [(a, SFT, 0.0) for a in arms if a != SFT]
    return pairs


def paired_comparisons(
    results: Sequence[RunResult], tasks: Sequence[str], cfg: CompareConfig, metric: str = PRIMARY
) -> list[PairedComparison]:
    """Every comparison of :func:`planned_pairs` the results allow."""
    arms = arm_items(results, tasks, metric)
    out = []
    for treatment, control, target in planned_pairs(list(arms), cfg.baseline, cfg.target_gain):
        pc = paired_comparison(
            treatment, control, arms[treatment], arms[control], tasks, cfg, target
        )
        if pc is not None:
            out.append(pc)
    return out


def results_markdown(
    rows: Mapping[str, MethodRow],
    tasks: Sequence[str],
    baseline: str = "uniform",
    secondary: Mapping[str, MethodRow] | None = None,
) -> str:
    """The results table: per-task mean ± std over seeds, the average, the secondary
    metric's average, and the relative gains over the baseline and the specialists."""
    base = rows.get(baseline)
    spec = rows.get(SPECIALISTS)
    head = [
        "method",
        *tasks,
        "average",
        "greedy average",
        f"vs {baseline}",
        "vs specialists",
        "seeds",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(rows, key=lambda m: (m != SFT, -rows[m].average[0]))
    for method in order:
        row = rows[method]
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (row.per_task[t] for t in tasks)]
        avg = row.average[0]
        g_base = (
            _num(relative_gain(avg, base.average[0]), "+.1%")
            if base and method != baseline
            else "—"
        )
        g_spec = (
            _num(relative_gain(avg, spec.average[0]), "+.1%")
            if spec and method != SPECIALISTS
            else "—"
        )
        sec = (secondary or {}).get(method)
        greedy = f"{sec.average[0]:.3f} ± {sec.average[1]:.3f}" if sec else "—"
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {avg:.3f} ± {row.average[1]:.3f} | {greedy} | {g_base} | {g_spec} | {row.seeds} |"
        )
    return "\n".join(lines) + "\n"


def _num(v: float, fmt: str = "+.4f") -> str:
    return "—" if np.isnan(v) else format(v, fmt)


def paired_markdown(comparisons: Sequence[PairedComparison], confidence: float = 0.95) -> str:
    """The paired-difference table: mean difference, relative gain, t and bootstrap
    intervals, p, sd of the differences, MDE and the win flag."""
    c = f"{confidence:.0%}"
    head = [
        "treatment vs control",
        "seeds",
        "items/seed",
        "mean diff",
        "relative",
        f"{c} t interval",
        "p (paired t)",
        f"{c} bootstrap (seeds x items)",
        "sd of diffs",
        "MDE",
        "target",
        "win",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pc in comparisons:
        lines.append(
            f"| {pc.treatment} vs {pc.control} | {len(pc.seeds)} | {pc.items} | {_num(pc.mean_diff)}"
            f" | {_num(pc.relative_gain, '+.1%')} | [{_num(pc.t_low)}, {_num(pc.t_high)}]"
            f" | {_num(pc.p_value, '.3f')} | [{_num(pc.boot_low)}, {_num(pc.boot_high)}]"
            f" | {_num(pc.sd_diff, '.4f')} | {_num(pc.mde, '.4f')} | {pc.target:+.0%}"
            f" | {'yes' if pc.win else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def verdict(comparisons: Sequence[PairedComparison], baseline: str = "uniform") -> str:
    """Whether ASTOR wins over the baseline and the specialists (both lower bounds above 0
    and the relative gain at the target), and whether every arm is above the SFT start."""
    by_pair = {(pc.treatment, pc.control): pc for pc in comparisons}
    parts = []
    for control in (baseline, SPECIALISTS):
        pc = by_pair.get(("astor", control))
        if pc is None:
            continue
        if len(pc.seeds) < 2:
            why = f"undecided ({len(pc.seeds)} paired seed: no interval)"
        elif pc.win:
            why = "a win"
        else:
            fails = []
            if not (pc.t_low > 0 and pc.boot_low > 0):
                fails.append("a lower bound is not above 0")
            if np.isnan(pc.relative_gain):
                fails.append("the relative gain is undefined (the control's mean is 0)")
            elif pc.relative_gain < pc.target:
                fails.append(f"the gain is below the {pc.target:.0%} target")
            why = "no win: " + " and ".join(fails)
        parts.append(
            f"over {control}: {_num(pc.relative_gain, '+.1%')} (t interval [{_num(pc.t_low)}, {_num(pc.t_high)}],"
            f" bootstrap [{_num(pc.boot_low)}, {_num(pc.boot_high)}], MDE {_num(pc.mde, '.4f')}): {why}"
        )
    if not parts:
        return "ASTOR and its controls did not all run: no verdict."
    below = [pc.treatment for (t, ctl), pc in by_pair.items() if ctl == SFT and not pc.win]
    sft = (
        f" Arms not above the SFT start with the lower bound above 0: {', '.join(below)}."
        if below
        else (
            " Every arm is above the SFT start (lower bounds above 0)."
            if any(c == SFT for _, c in by_pair)
            else ""
        )
    )
    return "ASTOR's average held-out reward " + "; ".join(parts) + "." + sft
