"""`astor compare`: every method under the same budget and seeds, as one Prefect flow with
one MLflow parent run, and docs/RESULTS.md regenerated from the MLflow runs.

Each (method, seed) is a training-flow subflow run whose MLflow run is a child of the
comparison's parent run (tag ``mlflow.parentRunId``), so the MLflow UI compares them side
by side. The report is built only from what MLflow holds (`astor compare report`).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger

from astor_core import TASKS
from astor_core.comparison import (
    RunResult,
    expand_methods,
    method_rows,
    results_markdown,
    run_overrides,
    verdict,
)
from astor_core.config import load_config
from astor_core.run.report import synergy_heatmap
from flows import tracking
from flows.training import train_flow


def _machine() -> str:
    import os

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


@flow(name="astor-compare", log_prints=True)
def compare_flow(
    config_path: str = "params.yaml", overrides: list[str] | None = None, quick: bool = False
) -> dict[str, Any]:
    """Train every method with every seed (same budget), then write the results report."""
    logger = get_run_logger()
    overrides = list(overrides or [])
    cfg = load_config(config_path, overrides)
    cc = cfg.compare
    seeds = list(cc.quick_seeds if quick else cc.seeds)
    base = overrides + [f"train.experiment={cc.experiment}"]
    if quick:
        base.append(f"train.rounds={cc.quick_rounds}")
    run_cfg = load_config(config_path, base)  # what every child run shares (the budget)
    parent = tracking.RunTracker(cc.experiment, run_name="compare-quick" if quick else "compare")
    parent.set_tags(
        {"astor.role": "comparison", "git.commit": tracking.git_commit(), "astor.quick": str(quick)}
    )
    parent.log_params(
        tracking.flatten_params(run_cfg.to_dict()) | {"compare.seeds_run": str(seeds)}
    )
    schedulers = expand_methods(cc.methods, TASKS)
    try:
        for seed in seeds:
            for scheduler in schedulers:
                run_over = (
                    base
                    + run_overrides(
                        # each comparison trains from scratch in its own folder (never resumes another's runs)
                        scheduler,
                        seed,
                        cfg.scheduler.prompts_per_round,
                        len(TASKS),
                        f"{cc.run_root}/{parent.run_id}",
                    )
                    + [f"train.parent_run_id={parent.run_id}"]
                )
                logger.info("compare: %s seed %d", scheduler, seed)
                train_flow.with_options(flow_run_name=f"{scheduler}-s{seed}")(config_path, run_over)
    except BaseException:
        parent.terminate("FAILED")
        raise
    parent.terminate("FINISHED")
    report = write_report(
        parent.run_id, Path("docs/RESULTS.md"), command=_command(config_path, overrides, quick)
    )
    return {"parent_run_id": parent.run_id, "report": str(report)}


def _command(config_path: str, overrides: list[str], quick: bool) -> str:
    parts = [".venv/bin/astor compare", f"--config {config_path}"]
    parts += [f"-S {o}" for o in overrides]
    if quick:
        parts.append("--quick")
    return " ".join(parts)


def collect_results(
    parent_run_id: str, metric: str = "mean_reward"
) -> tuple[list[RunResult], list[Any]]:
    """Child runs of a comparison and their final held-out scores (from MLflow only)."""
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=1000,
    )
    results = []
    for run in children:
        scores = {
            t: run.data.metrics[f"eval_{metric}/{t}"]
            for t in TASKS
            if f"eval_{metric}/{t}" in run.data.metrics
        }
        results.append(
            RunResult(
                run.data.tags["astor.scheduler"], int(run.data.params.get("train.seed", 0)), scores
            )
        )
    return results, children


def _curves(client: MlflowClient, children: list[Any], out_dir: Path) -> list[str]:
    """Per-task learning curves (held-out) and ASTOR's utility/beta trajectories + synergy heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for series, title in (("mean_reward", "train reward"), ("eval_mean_reward", "held-out reward")):
        fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.2), sharey=True)
        for ax, task in zip(axes, TASKS, strict=True):
            by_method: dict[str, list[list[tuple[int, float]]]] = {}
            for run in children:
                sched = run.data.tags["astor.scheduler"]
                if sched.startswith("specialist:") and sched != f"specialist:{task}":
                    continue
                hist = client.get_metric_history(run.info.run_id, f"{series}/{task}")
                by_method.setdefault(sched.split(":")[0], []).append(
                    sorted((m.step, m.value) for m in hist)
                )
            for method, curves in sorted(by_method.items()):
                steps = sorted({s for c in curves for s, _ in c})
                mean = [np.mean([v for c in curves for s, v in c if s == st]) for st in steps]
                ax.plot(steps, mean, marker="o", ms=2, label=method)
            ax.set_title(f"{task}", fontsize=9)
            ax.set_xlabel("round")
        axes[0].set_ylabel(title)
        axes[-1].legend(fontsize=6)
        path = out_dir / f"compare_{series}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path.name)
    astor_runs = [r for r in children if r.data.tags["astor.scheduler"] == "astor"]
    if astor_runs:
        run = astor_runs[0]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, series in zip(axes, ("utility", "beta"), strict=True):
            for task in TASKS:
                hist = sorted(
                    (m.step, m.value)
                    for m in client.get_metric_history(run.info.run_id, f"{series}/{task}")
                )
                ax.plot([s for s, _ in hist], [v for _, v in hist], label=task)
            ax.set_title(f"ASTOR {series} per task", fontsize=9)
            ax.set_xlabel("round")
        axes[-1].legend(fontsize=6)
        path = out_dir / "compare_astor_trajectories.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path.name)
        matrix = np.full((len(TASKS), len(TASKS)), np.nan)
        for i, a in enumerate(TASKS):
            matrix[i, i] = 1.0
            for j, b in enumerate(TASKS):
                key = f"synergy/{a}/{b}" if i < j else f"synergy/{b}/{a}"
                if i != j and key in run.data.metrics:
                    matrix[i, j] = run.data.metrics[key]
        fig = synergy_heatmap(matrix, TASKS, "ASTOR synergy (final EMA)")
        path = out_dir / "compare_synergy.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path.name)
    return written


def write_report(parent_run_id: str, path: Path, command: str = "") -> Path:
    """docs/RESULTS.md from the MLflow runs of one comparison (never typed by hand)."""
    cfg_metric = "mean_reward"
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(parent_run_id)
    results, children = collect_results(parent_run_id, cfg_metric)
    rows = method_rows(results, TASKS)
    params = parent.data.params
    images = _curves(client, children, path.parent / "img")
    budget = (
        f"{params.get('train.rounds')} rounds x B={params.get('scheduler.prompts_per_round')} prompts"
        f" x G={params.get('scheduler.samples_per_prompt')} samples per run"
    )
    lines = [
        "# Results: ASTOR vs specialists vs multi-task baselines",
        "",
        "Generated by `astor compare report` from the MLflow runs of one comparison; do not edit by hand.",
        "",
        f"- MLflow parent run: `{parent_run_id}` (experiment `{client.get_experiment(parent.info.experiment_id).name}`),"
        f" tracking URI `{tracking.tracking_uri()}`",
        f"- Machine: {_machine()}",
        f"- Budget: {budget} (a specialist gets B/4 prompts per round on its task: see docs/METHOD.md)",
        f"- Seeds: {params.get('compare.seeds_run')}; quick mode: {parent.data.tags.get('astor.quick')}",
        f"- Command: `{command or parent.data.tags.get('astor.command', '')}`",
        f"- Regenerate this file: `.venv/bin/astor compare report --parent {parent_run_id}`",
        "",
        "## Held-out mean reward per task (mean ± std over seeds)",
        "",
        results_markdown(rows, TASKS),
        f"**Verdict.** {verdict(rows)}",
        "",
        "The specialists row reads each task from the specialist trained on that task only.",
        "",
        "## Curves",
        "",
        *[f"![{name}](img/{name})" for name in images],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + kept_simulator_section(path))
    client.log_artifact(parent_run_id, str(path), "report")
    return path


SIMULATOR_HEADING = "## Simulator"
"""The report's simulator section is written by hand from `astor bench scheduler` and kept
when the comparison part is regenerated."""


def kept_simulator_section(path: Path) -> str:
    r"""The simulator section of an existing report (from its heading to the end), or ''.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "R.md"
    >>> _ = p.write_text("# old\n\n## Simulator (x)\n\nfigures\n")
    >>> kept_simulator_section(p)
    '\n## Simulator (x)\n\nfigures\n'
    """
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(f"\n{SIMULATOR_HEADING}")
    return "" if at < 0 else text[at:]
