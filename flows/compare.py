"""`astor compare`: every method under the same budget and seeds, as one Prefect flow with
one MLflow parent run, and docs/RESULTS.md regenerated from the MLflow runs.

Each (method, seed) is a training-flow subflow run whose MLflow run is a child of the
comparison's parent run (tag ``mlflow.parentRunId``), so the MLflow UI compares them side
by side. Its final policy (kept in its run_dir) is then evaluated on the held-out split
``compare.split`` in an evaluation run, also a child of the parent (tag ``astor.role`` =
``compare-eval``), holding every item's score as the artifact ``item_scores.json``; the SFT
start gets one evaluation run per seed. The report is built only from what MLflow holds
(`astor compare report`).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger
from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE

from astor_core import TASKS
from astor_core.comparison import (
    PRIMARY,
    SECONDARY,
    SFT,
    CompareConfig,
    RunResult,
    eval_tasks,
    expand_methods,
    identical_arms,
    method_rows,
    paired_comparisons,
    paired_markdown,
    results_markdown,
    run_name,
    run_overrides,
    verdict,
)
from astor_core.config import AstorConfig, load_config
from astor_core.data.pools import read_records
from astor_core.evaluation import evaluate_saved_policy, heldout_records
from astor_core.run.context import scheduler_pools
from astor_core.run.report import synergy_heatmap
from flows import tracking
from flows.training import train_flow

EVAL_ROLE = "compare-eval"
"""Value of the tag ``astor.role`` on the evaluation runs of a comparison."""
ITEM_SCORES = "item_scores.json"
"""Artifact of an evaluation run: metric -> task -> prompt_id -> score."""


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


@prefect_task(
    name="evaluate-policy", cache_policy=NO_CACHE, task_run_name="evaluate-{scheduler}-s{seed}"
)
def evaluate_arm(
    cfg: AstorConfig,
    scheduler: str,
    seed: int,
    model_dir: str,
    records_by_task: dict[str, list[dict[str, Any]]],
    parent_run_id: str,
    source_run_id: str = "",
) -> str:
    """Score one policy on the held-out split item by item; an MLflow child run holds it."""
    cc: CompareConfig = cfg.compare
    started = time.perf_counter()
    table = evaluate_saved_policy(
        cfg,
        model_dir,
        records_by_task,
        cc.eval_samples,
        cc.eval_temperature,
        seed,
        greedy=cc.eval_greedy,
    )
    tracker = tracking.RunTracker(cc.experiment, run_name=f"eval-{run_name(scheduler, seed)}")
    tracker.set_tags(
        {
            "mlflow.parentRunId": parent_run_id,
            "astor.role": EVAL_ROLE,
            "astor.scheduler": scheduler,
            "astor.seed": str(seed),
            "astor.policy_dir": model_dir,
            "astor.source_run": source_run_id,
            "astor.split": cc.split,
        }
    )
    tracker.log_params(
        {
            "samples": str(cc.eval_samples),
            "temperature": str(cc.eval_temperature),
            "split": cc.split,
            "seed": str(seed),
        }
    )
    metrics = {
        f"{metric}/{t}": ev.mean_reward for metric, per in table.items() for t, ev in per.items()
    }
    metrics |= {
        f"{metric}_stderr/{t}": ev.stderr for metric, per in table.items() for t, ev in per.items()
    }
    metrics["eval_time_s"] = time.perf_counter() - started
    tracker.log_round(0, metrics)
    tracker.log_dict(
        {metric: {t: ev.item_rewards for t, ev in per.items()} for metric, per in table.items()},
        ITEM_SCORES,
    )
    tracker.terminate("FINISHED")
    get_run_logger().info(
        "evaluated %s seed %d: %s",
        scheduler,
        seed,
        {k: round(v, 4) for k, v in metrics.items() if "stderr" not in k},
    )
    return tracker.run_id


@flow(name="astor-compare", log_prints=True)
def compare_flow(
    config_path: str = "params.yaml", overrides: list[str] | None = None, quick: bool = False
) -> dict[str, Any]:
    """Train every method with every seed (same budget), evaluate every final policy and the
    SFT start on the held-out split, then write the results report."""
    logger = get_run_logger()
    overrides = list(overrides or [])
    cfg = load_config(config_path, overrides)
    cc = cfg.compare
    seeds = list(cc.quick_seeds if quick else cc.seeds)
    base = overrides + [f"train.experiment={cc.experiment}"]
    if quick:
        base.append(f"train.rounds={cc.quick_rounds}")
    run_cfg = load_config(config_path, base)  # what every child run shares (the budget)
    per_task = cc.quick_eval_items_per_task if quick else cc.eval_items_per_task
    heldout = heldout_records(cfg.data.pools_dir, cc.split, TASKS, per_task)
    train_ids = scheduler_pools(read_records(cfg.data.pools_dir, "train"), TASKS)
    twins = identical_arms(
        cc.methods, train_ids, run_cfg.scheduler, seeds, run_cfg.train.rounds, cc.baseline
    )
    parent = tracking.RunTracker(cc.experiment, run_name="compare-quick" if quick else "compare")
    parent.set_tags(
        {
            "astor.role": "comparison",
            "git.commit": tracking.git_commit(),
            "astor.quick": str(quick),
            "astor.command": _command(config_path, overrides, quick),
            "compare.identical_arms": json.dumps(twins),
        }
    )
    parent.log_params(
        tracking.flatten_params(run_cfg.to_dict())
        | {
            "compare.seeds_run": str(seeds),
            "compare.items_per_task_run": json.dumps({t: len(r) for t, r in heldout.items()}),
        }
    )
    schedulers = [
        s for s in expand_methods(cc.methods, TASKS) if not (cc.skip_identical and s in twins)
    ]
    try:
        for seed in seeds:
            if cc.sft_row:
                evaluate_arm(
                    run_cfg, SFT, seed, str(run_cfg.model.name_or_path), heldout, parent.run_id
                )
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
                result = train_flow.with_options(flow_run_name=run_name(scheduler, seed))(
                    config_path, run_over
                )
                evaluate_arm(
                    run_cfg,
                    scheduler,
                    seed,
                    str(Path(result["run_dir"]) / "policy"),
                    {t: heldout[t] for t in eval_tasks(scheduler, TASKS)},
                    parent.run_id,
                    result["mlflow_run_id"],
                )
    except BaseException:
        parent.terminate("FAILED")
        raise
    parent.terminate("FINISHED")
    report = write_report(parent.run_id, Path("docs/RESULTS.md"))
    return {"parent_run_id": parent.run_id, "report": str(report)}


def _command(config_path: str, overrides: list[str], quick: bool) -> str:
    parts = [".venv/bin/astor compare", f"--config {config_path}"]
    parts += [f"-S {o}" for o in overrides]
    if quick:
        parts.append("--quick")
    return " ".join(parts)


def _children(client: MlflowClient, parent_run_id: str) -> list[Any]:
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=5000,
    )


def collect_results(parent_run_id: str) -> tuple[list[RunResult], list[Any], list[Any]]:
    """The evaluated policies of a comparison with every item's score, the evaluation runs
    and the training runs (from MLflow only)."""
    client = MlflowClient(tracking.tracking_uri())
    children = _children(client, parent_run_id)
    evals = [r for r in children if r.data.tags.get("astor.role") == EVAL_ROLE]
    training = [r for r in children if r.data.tags.get("astor.role") != EVAL_ROLE]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in evals:
            path = client.download_artifacts(run.info.run_id, ITEM_SCORES, tmp)
            items = json.loads(Path(path).read_text())
            results.append(
                RunResult(run.data.tags["astor.scheduler"], int(run.data.tags["astor.seed"]), items)
            )
    return results, evals, training


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


def write_report(parent_run_id: str, path: Path) -> Path:
    """docs/RESULTS.md from the MLflow runs of one comparison (never typed by hand)."""
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(parent_run_id)
    params, tags = parent.data.params, parent.data.tags
    cc = load_config_from_params(params)
    results, evals, training = collect_results(parent_run_id)
    rows = method_rows(results, TASKS, PRIMARY)
    greedy_rows = method_rows(results, TASKS, SECONDARY)
    comparisons = paired_comparisons(results, TASKS, cc)
    images = _curves(client, training, path.parent / "img")
    twins = json.loads(tags.get("compare.identical_arms", "{}"))
    budget = (
        f"{params.get('train.rounds')} rounds x B={params.get('scheduler.prompts_per_round')} prompts"
        f" x G={params.get('scheduler.samples_per_prompt')} samples per run"
    )
    split = params.get("compare.split", "?")
    role = (
        "the final report's split (never tuned on)"
        if split == "test"
        else "the tuning split (the final report reads `test`)"
    )
    command = tags.get("astor.command", "")
    lines = [
        "# Results: ASTOR vs specialists vs multi-task baselines",
        "",
        "Generated by `astor compare report` from the MLflow runs of one comparison; do not edit by hand.",
        "",
        f"- MLflow parent run: `{parent_run_id}` (experiment `{client.get_experiment(parent.info.experiment_id).name}`),"
        f" tracking URI `{tracking.tracking_uri()}`, git commit `{tags.get('git.commit', '?')}`",
        f"- Machine: {_machine()}",
        f"- Budget: {budget} (a specialist gets B/4 prompts per round on its task: see docs/METHOD.md)",
        f"- Seeds: {params.get('compare.seeds_run')} (paired: one seed = one run of every arm);"
        f" quick mode: {tags.get('astor.quick')}",
        f'- Held-out split: `{split}`, {role}: the `eval` pool\'s items whose md5("heldout:" +'
        f" prompt_id) has an {'odd' if split == 'test' else 'even'} first byte"
        f" (astor_core.evaluation.heldout_split); items per task: {params.get('compare.items_per_task_run')}",
        f"- Primary metric: mean@{params.get('compare.eval_samples')} (reward averaged over"
        f" {params.get('compare.eval_samples')} samples per item at temperature"
        f" {params.get('compare.eval_temperature')}, seeded by the run's seed), then over items per"
        " task, then over tasks; secondary: one greedy completion per item",
        f"- Command: `{command}`",
        f"- Regenerate this file: `.venv/bin/astor compare report --parent {parent_run_id}`",
        "",
    ]
    if twins:
        lines += [
            "**Arms identical by construction** (same scheduled prompts in every round for every seed,"
            " detected from the schedulers' plans over the training pools before any run):"
            + "; ".join(
                f" `{dup}` = `{kept}`"
                + (
                    " (not trained again: compare.skip_identical)"
                    if params.get("compare.skip_identical") == "True"
                    else ""
                )
                for dup, kept in twins.items()
            ),
            "",
        ]
    lines += [
        f"## Held-out reward per task, mean@k (mean ± std over seeds; split `{split}`)",
        "",
        results_markdown(rows, TASKS, cc.baseline, greedy_rows),
        "`sft` is the starting policy (model.name_or_path), evaluated like every run once per seed."
        " The specialists row reads each task from the specialist trained on that task only.",
        "",
        "## Paired differences of the average held-out reward (treatment - control)",
        "",
        paired_markdown(comparisons, cc.confidence),
        f"Per seed, the difference of the two arms' average held-out reward (mean over tasks of the"
        f" mean over items); `t interval`: mean ± t(n-1, {(1 + cc.confidence) / 2:.3f}) · sd / sqrt(n)"
        " (scipy.stats.ttest_1samp of the differences, = ttest_rel of the arms); `bootstrap`:"
        f" percentile interval over {cc.bootstrap_resamples} resamples of the seeds and, independently,"
        " of each task's items (astor_core.comparison.bootstrap_interval); `MDE`: the smallest true"
        f" difference the paired t test detects with {cc.power:.0%} power at this sd,"
        f" (t(n-1, {(1 + cc.confidence) / 2:.3f}) + t(n-1, {cc.power})) · sd / sqrt(n). A win needs"
        " both lower bounds above 0 and the relative gain at the target.",
        "",
        f"**Verdict.** {verdict(comparisons, cc.baseline)}",
        "",
        "## Final policies",
        "",
        f"Every run's final policy is kept in its run folder (and as the artifact `policy/` of its"
        f" training run); `astor evaluate --model DIR --split {split} --samples"
        f" {params.get('compare.eval_samples')} --items 0` rescores one.",
        "",
        "| method | seed | policy | training run | evaluation run |",
        "|---|---|---|---|---|",
        *[
            f"| {r.data.tags['astor.scheduler']} | {r.data.tags['astor.seed']}"
            f" | `{r.data.tags.get('astor.policy_dir', '')}` | `{r.data.tags.get('astor.source_run') or '—'}`"
            f" | `{r.info.run_id}` |"
            for r in sorted(
                evals,
                key=lambda r: (r.data.tags["astor.scheduler"], int(r.data.tags["astor.seed"])),
            )
        ],
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


def load_config_from_params(params: dict[str, str]) -> CompareConfig:
    """The comparison's CompareConfig as its parent run logged it (defaults for keys an
    older comparison did not log)."""
    from astor_core.config import build_section

    fields = set(CompareConfig.__dataclass_fields__)
    data: dict[str, Any] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section == "compare" and name in fields:
            data[name] = _param_value(value)
    return build_section(CompareConfig, data, "compare")


def _param_value(text: str) -> Any:
    """An MLflow param string back as a value: JSON-ish lists/numbers/bools, else the text.

    >>> _param_value("[0, 1]"), _param_value("0.95"), _param_value("True"), _param_value("test")
    ([0, 1], 0.95, True, 'test')
    """
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
