"""The paper's comparison: every method under the same budget and seeds, one results table.

Methods are scheduler names (astor_core.method.scheduler). "specialists" expands to one
``specialist:<task>`` run per task; the specialists' row reads each task from its own
specialist (as the paper does) and averages those per-task scores.

Budget: every method gets the same total rollout budget, rounds x B x G. A specialist run
schedules B / K prompts per round on its one task, so the four specialists together spend
what one multi-task run spends; uniform MTRL gives each task that same B / K per round,
so specialists and uniform MTRL see the same amount of data per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import Field

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


@dataclass(frozen=True)
class CompareConfig:
    """What `astor compare` runs (the budget itself comes from train/scheduler)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods to compare (scheduler names; 'specialists' expands to one run per task)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; every method runs with every seed."""
    baseline: str = "uniform"
    """The multi-task baseline relative gains are quoted against."""
    metric: str = "mean_reward"
    """The held-out metric the table reports."""
    target_gain: float = 0.05
    """The relative gain the report checks ASTOR against (over the baseline and the best specialist)."""
    quick_rounds: Annotated[int, Field(ge=1)] = 3
    """Rounds per run in --quick mode."""
    quick_seeds: tuple[int, ...] = (0,)
    """Seeds in --quick mode."""
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


def run_overrides(
    scheduler: str, seed: int, prompts_per_round: int, n_tasks: int, run_root: str
) -> list[str]:
    """Config overrides of one run of the comparison (same budget for every method).

    >>> run_overrides("specialist:code_generation", 1, 24, 4, "runs/c")[:3]
    ['train.scheduler=specialist:code_generation', 'train.seed=1', 'train.run_dir=runs/c/specialist-code_generation-s1']
    """
    name = scheduler.replace(":", "-")
    out = [
        f"train.scheduler={scheduler}",
        f"train.seed={seed}",
        f"train.run_dir={run_root}/{name}-s{seed}",
    ]
    if scheduler.startswith("specialist:"):
        out.append(f"scheduler.prompts_per_round={max(1, prompts_per_round // n_tasks)}")
    return out


@dataclass
class RunResult:
    """The held-out scores of one finished run."""

    scheduler: str
    seed: int
    scores: dict[str, float]
    """task -> held-out metric."""


@dataclass
class MethodRow:
    """One row of the results table: per-task and average, mean and std over seeds."""

    method: str
    per_task: dict[str, tuple[float, float]] = field(default_factory=dict)
    average: tuple[float, float] = (float("nan"), float("nan"))
    seeds: int = 0
    per_seed_average: list[float] = field(default_factory=list)


def method_rows(results: Sequence[RunResult], tasks: Sequence[str] = TASKS) -> dict[str, MethodRow]:
    """Aggregate runs into rows; specialist runs become one 'specialists' row."""
    by_method: dict[str, dict[int, dict[str, float]]] = {}
    for r in results:
        if r.scheduler.startswith("specialist:"):
            task = r.scheduler.split(":", 1)[1]
            by_method.setdefault(SPECIALISTS, {}).setdefault(r.seed, {})[task] = r.scores[task]
        else:
            by_method.setdefault(r.scheduler, {})[r.seed] = dict(r.scores)
    rows: dict[str, MethodRow] = {}
    for method, seeds in by_method.items():
        complete = {s: sc for s, sc in seeds.items() if all(t in sc for t in tasks)}
        if not complete:
            continue
        row = MethodRow(method=method, seeds=len(complete))
        for t in tasks:
            vals = np.array([sc[t] for sc in complete.values()])
            row.per_task[t] = (
                float(vals.mean()),
                float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            )
        avgs = [float(np.mean([sc[t] for t in tasks])) for sc in complete.values()]
        row.per_seed_average = avgs
        row.average = (float(np.mean(avgs)), float(np.std(avgs, ddof=1)) if len(avgs) > 1 else 0.0)
        rows[method] = row
    return rows


def relative_gain(value: float, base: float) -> float:
    """(value - base) / base.

    >>> round(relative_gain(0.55, 0.5), 3)
    0.1
    """
    return (value - base) / base if base else float("nan")


def results_markdown(
    rows: Mapping[str, MethodRow], tasks: Sequence[str], baseline: str = "uniform"
) -> str:
    """The results table: per-task mean ± std, average, gains over the baseline and the specialists."""
    base = rows.get(baseline)
    spec = rows.get(SPECIALISTS)
    head = ["method", *tasks, "average", f"vs {baseline}", "vs best specialist", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in rows.items():
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (row.per_task[t] for t in tasks)]
        avg = row.average[0]
        g_base = (
            f"{relative_gain(avg, base.average[0]):+.1%}" if base and method != baseline else "—"
        )
        g_spec = (
            f"{relative_gain(avg, spec.average[0]):+.1%}" if spec and method != SPECIALISTS else "—"
        )
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {avg:.3f} ± {row.average[1]:.3f} | {g_base} | {g_spec} | {row.seeds} |"
        )
    return "\n".join(lines) + "\n"


def verdict(rows: Mapping[str, MethodRow], baseline: str = "uniform", target: float = 0.05) -> str:
    """Whether ASTOR reached the target relative gain over the baseline and the specialists."""
    astor = rows.get("astor")
    if astor is None:
        return "ASTOR did not run."
    parts = []
    for name in (baseline, SPECIALISTS):
        other = rows.get(name)
        if other is None:
            continue
        gain = relative_gain(astor.average[0], other.average[0])
        ok = "meets" if gain >= target else "falls short of"
        parts.append(f"over {name}: {gain:+.1%} ({ok} the {target:.0%} target)")
    return "ASTOR's average held-out score " + "; ".join(parts) + "."
