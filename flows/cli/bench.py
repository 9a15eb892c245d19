"""`astor bench ...` commands.

`astor bench scheduler --scenario FILE|all [--learner rasch|memorising] [--seeds N]
[--budget R] [--json OUT]` runs every scheduler on simulated learners (astor_core.simulation) and prints, per scheduler, the rollouts
needed to reach the scenario's target mean success, the area under the mean-success curve and the
final per-task success (mean and spread over seeds).

`astor bench scheduler --scale N` times one round's planning on an N-prompt pool and reports
the memory the scheduler state takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from astor_core.atomic import write_text_atomic
from flows.cli._common import fail

app = typer.Typer(help="bench commands.", no_args_is_help=True)


def compare_on_scenarios(
    scenario_paths: list[Path],
    seeds: int,
    budget: int | None,
    schedulers: list[str],
    workers: int,
    learner: str = "rasch",
) -> dict[str, Any]:
    """Run the schedulers on each scenario; per scenario the summary, plus ratios to uniform
    (overall over every scenario, and over each split: validation / test)."""
    from astor_core.simulation import evaluate_schedulers, load_scenario, summarise

    out: dict[str, Any] = {
        "seeds": seeds,
        "schedulers": schedulers,
        "learner": learner,
        "scenarios": {},
    }
    for path in scenario_paths:
        scenario = load_scenario(path)
        runs = evaluate_schedulers(
            scenario, schedulers, seeds=seeds, budget=budget, workers=workers, learner=learner
        )
        summary = summarise(scenario, runs, budget)
        if "uniform" in summary:
            base = summary["uniform"]["rollouts_to_target_mean"]
            for row in summary.values():
                row["ratio_to_uniform"] = row["rollouts_to_target_mean"] / base
        out["scenarios"][scenario.name] = {
            "file": str(path),
            "split": scenario.split,
            "target_mean_success": scenario.target_mean_success,
            "budget": budget or scenario.budget,
            "results": summary,
        }
    if "uniform" in schedulers:
        out["overall"] = _overall(out["scenarios"].values(), schedulers)
        for split in ("validation", "test"):
            part = [s for s in out["scenarios"].values() if s["split"] == split]
            if part and len(part) < len(out["scenarios"]):
                out[f"overall_{split}"] = _overall(part, schedulers)
    return out


def _overall(scenarios: Any, schedulers: list[str]) -> dict[str, Any]:
    scenarios = list(scenarios)
    overall: dict[str, Any] = {}
    for name in schedulers:
        ratios = [s["results"][name]["ratio_to_uniform"] for s in scenarios]
        aucs = [s["results"][name]["auc_mean"] for s in scenarios]
        overall[name] = {
            "mean_ratio_to_uniform": sum(ratios) / len(ratios),
            "max_ratio_to_uniform": max(ratios),
            "mean_auc": sum(aucs) / len(aucs),
        }
    return overall


def planning_scale(
    n_prompts: int, n_tasks: int = 4, repeats: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Time one round of the astor scheduler on an n-prompt pool split over n_tasks tasks:
    ``update()`` with B groups of feedback, then ``plan()`` (which recomputes every prompt's
    informativeness, since the update changed the posteriors); measure the scheduler's memory
    (tracemalloc peak while building it)."""
    import time
    import tracemalloc

    import numpy as np

    from astor_core import TASKS
    from astor_core.method.scheduler import SchedulerConfig, make_scheduler
    from astor_core.method.utility import PromptFeedback, RoundFeedback

    tasks = list(TASKS[:n_tasks]) if n_tasks <= len(TASKS) else [f"task{i}" for i in range(n_tasks)]
    per = [n_prompts // n_tasks + (i < n_prompts % n_tasks) for i in range(n_tasks)]
    pools = {t: [f"{t}-{i}" for i in range(n)] for t, n in zip(tasks, per, strict=True)}
    out: dict[str, Any] = {"n_prompts": n_prompts, "n_tasks": n_tasks, "repeats": repeats}
    make_scheduler("astor", {t: [f"{t}-0", f"{t}-1"] for t in tasks}).plan(
        0
    )  # warm-up: lazy imports
    for scoring in ("expected", "thompson"):
        cfg = SchedulerConfig(prompt_scoring=scoring)
        tracemalloc.start()
        sched = make_scheduler("astor", pools, cfg, seed)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rng = np.random.default_rng(seed)
        plan = sched.plan(0)
        g = cfg.samples_per_prompt
        plan_times, update_times = [], []
        for r in range(repeats):
            feedback = RoundFeedback(
                r,
                [
                    PromptFeedback(t, p, (rng.random(g) < 0.5).astype(float).tolist())
                    for t, p in plan.items
                ],
            )
            t0 = time.perf_counter()
            sched.update(feedback)
            t1 = time.perf_counter()
            plan = sched.plan(r + 1)
            t2 = time.perf_counter()
            update_times.append(t1 - t0)
            plan_times.append(t2 - t1)
        times = plan_times
        update_s = float(np.median(update_times))
        out[scoring] = {
            "plan_ms_median": 1000 * float(np.median(times)),
            "plan_ms_min": 1000 * float(np.min(times)),
            "update_ms": 1000 * update_s,
            "build_peak_mib": peak / 2**20,
            "bytes_per_prompt": peak / n_prompts,
        }
    return out


def _print_comparison(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 200)
    for name, scen in result["scenarios"].items():
        rows = scen["results"]
        tasks = list(next(iter(rows.values()))["final_success"])
        table = Table(
            title=f"{name}: target mean success {scen['target_mean_success']}, "
            f"budget {scen['budget']} rollouts, {result['seeds']} seeds"
        )
        for col in ("scheduler", "rollouts to target", "x uniform", "reached", "AUC"):
            table.add_column(col, justify="right")
        for t in tasks:
            table.add_column(f"final {t}", justify="right")
        for sched, row in rows.items():
            table.add_row(
                sched,
                f"{row['rollouts_to_target_mean']:.0f} ± {row['rollouts_to_target_std']:.0f}",
                f"{row.get('ratio_to_uniform', float('nan')):.2f}",
                f"{row['reached_fraction']:.0%}",
                f"{row['auc_mean']:.3f} ± {row['auc_std']:.3f}",
                *[f"{row['final_success'][t]:.3f}" for t in tasks],
            )
        console.print(table)
    for key, title in (
        ("overall", "all scenarios"),
        ("overall_validation", "validation scenarios (tuned on)"),
        ("overall_test", "test scenarios (never tuned on)"),
    ):
        if key not in result:
            continue
        table = Table(
            title=f"{title}, {result.get('learner', 'rasch')} learner: "
            "rollouts to target relative to uniform MTRL"
        )
        for col in ("scheduler", "mean ratio", "worst ratio", "mean AUC"):
            table.add_column(col, justify="right")
        for sched, row in result[key].items():
            table.add_row(
                sched,
                f"{row['mean_ratio_to_uniform']:.3f}",
                f"{row['max_ratio_to_uniform']:.3f}",
                f"{row['mean_auc']:.3f}",
            )
        console.print(table)


@app.command("scheduler")
def scheduler(
    scenario: str | None = typer.Option(
        None, help="Scenario YAML file, or 'all' for every file in configs/scenarios."
    ),
    seeds: int = typer.Option(10, min=1, help="Seeds per scheduler (0..N-1)."),
    budget: int | None = typer.Option(
        None, min=1, help="Rollout budget per run (default: the scenario's)."
    ),
    schedulers: str = typer.Option(
        "astor,astor_no_synergy,astor_no_prio,astor_fixed_beta,uniform,proportional,ucb,specialists",
        help="Comma-separated schedulers to compare.",
    ),
    workers: int = typer.Option(2, min=1, help="Worker processes."),
    learner: str = typer.Option(
        "rasch",
        help="Simulated learner: rasch (signal ~ p(1-p)) or memorising (replay costs, drift).",
    ),
    scale: int | None = typer.Option(
        None, min=1, help="Instead: time one round's planning on an N-prompt pool."
    ),
    repeats: int = typer.Option(5, min=1, help="Timed plan() calls for --scale."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the results as JSON here."
    ),
) -> None:
    """Compare schedulers on simulated learners, or time planning at scale."""
    if (scenario is None) == (scale is None):
        raise fail("give exactly one of --scenario FILE|all and --scale N")
    if scale is not None:
        result = planning_scale(scale, repeats=repeats)
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"astor plan() on {scale} prompts over {result['n_tasks']} tasks")
        for col in (
            "prompt scoring",
            "plan ms (median)",
            "plan ms (min)",
            "update ms (median)",
            "state MiB",
            "B/prompt",
        ):
            table.add_column(col, justify="right")
        for scoring in ("expected", "thompson"):
            r = result[scoring]
            table.add_row(
                scoring,
                f"{r['plan_ms_median']:.1f}",
                f"{r['plan_ms_min']:.1f}",
                f"{r['update_ms']:.1f}",
                f"{r['build_peak_mib']:.1f}",
                f"{r['bytes_per_prompt']:.0f}",
            )
        Console(width=None if Console().is_terminal else 200).print(table)
    else:
        from astor_core.simulation import BENCH_SCHEDULERS, shipped_scenarios

        names = [s.strip() for s in schedulers.split(",") if s.strip()]
        unknown = [
            n for n in names if n not in BENCH_SCHEDULERS and not n.startswith("specialist:")
        ]
        if unknown:
            raise fail(f"unknown scheduler(s) {unknown}; choose from {', '.join(BENCH_SCHEDULERS)}")
        if scenario == "all":
            paths = shipped_scenarios()
        else:
            path = Path(scenario)
            if not path.is_file():
                raise fail(f"scenario file {path} does not exist")
            paths = [path]
        try:
            result = compare_on_scenarios(paths, seeds, budget, names, workers, learner)
        except ValueError as err:
            raise fail(str(err)) from err
        _print_comparison(result)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")
