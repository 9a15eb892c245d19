"""What a finished run shows: the held-out table, the summary, the trajectories of the
per-task series and the synergy heatmap (also drawn by `astor compare`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astor_core.run import ranks, store
from astor_core.run.context import RunContext
from astor_core.run.records import PLOT_SERIES, RoundStats
from astor_core.run.stages import evaluate


def final_eval(ctx: RunContext) -> dict[str, dict[str, float]]:
    """The last evaluation of the run (every run ends with one)."""
    for stats in reversed(store.load_history(ctx.run_dir, ctx.round)):
        if stats.eval:
            return stats.eval
    return evaluate(ctx)


def write_eval_table(ctx: RunContext, table: Mapping[str, Mapping[str, float]]) -> Path:
    """eval_table.md: one row per task."""
    path = Path(ctx.run_dir) / "eval_table.md"
    path.write_text(eval_markdown(table))
    return path


def eval_markdown(table: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table of held-out metrics.

    >>> print(eval_markdown({"code_generation": {"mean_reward": 0.5, "solve_rate": 0.25}}))
    | task | mean_reward | solve_rate |
    |---|---|---|
    | code_generation | 0.500 | 0.250 |
    <BLANKLINE>
    """
    metrics = sorted({m for row in table.values() for m in row})
    lines = ["| task | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for task, row in table.items():
        lines.append(
            f"| {task} | " + " | ".join(f"{row.get(m, float('nan')):.3f}" for m in metrics) + " |"
        )
    return "\n".join(lines) + "\n"


def summary_line(stats: RoundStats) -> str:
    """One log line per round: share, mean reward and beta per task."""
    parts = []
    for task, row in stats.per_task.items():
        reward = "-" if row.mean_reward is None else f"{row.mean_reward:.2f}"
        parts.append(f"{task}: w={row.share:.2f} R={reward} beta={row.beta:.3g}")
    return "; ".join(parts)


def summary_markdown(
    ctx: RunContext, table: Mapping[str, Mapping[str, float]], mlflow_run_id: str
) -> str:
    return (
        f"# ASTOR run `{Path(ctx.run_dir).name}`\n\n"
        f"- scheduler: `{ctx.cfg.train.scheduler}`, rounds: {ctx.round}, "
        f"B={ctx.cfg.scheduler.prompts_per_round}, G={ctx.cfg.scheduler.samples_per_prompt}\n"
        f"- MLflow run: `{mlflow_run_id}`\n- run dir: `{ctx.run_dir}`\n\n"
        f"## Held-out evaluation\n\n{eval_markdown(table)}"
    )


def final_policy_dir(ctx: RunContext) -> Path:
    """The final policy (model + tokenizer) saved under run_dir/policy (with every rank
    under sharding: astor_core.run.ranks.export)."""
    return Path(ranks.export(ctx.policy, Path(ctx.run_dir) / "policy"))


def plot_history(history: Sequence[RoundStats], tasks: Sequence[str]) -> dict[str, Any]:
    """The trajectory of every series of :data:`PLOT_SERIES` per task, and the last synergy
    heatmap.

    Plain `matplotlib.figure.Figure` objects, outside pyplot's registry of open figures: they
    are freed with their last reference, so a long-lived process (`astor serve`, `astor
    compare`) that plots every run does not accumulate them."""
    from matplotlib.figure import Figure

    figures: dict[str, Any] = {}
    rounds = [h.round for h in history]
    for series in PLOT_SERIES:
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for task in tasks:
            ys = [getattr(h.per_task[task], series) for h in history]
            ax.plot(rounds, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=task)
        ax.set_xlabel("round")
        ax.set_ylabel(series)
        ax.set_title(f"{series} per task")
        ax.legend(fontsize=7)
        figures[f"{series}_trajectory"] = fig
    if history:
        figures["synergy_heatmap"] = synergy_heatmap(
            history[-1].synergy_matrix, tasks, "synergy S (EMA of gradient cosines)"
        )
    return figures


def synergy_heatmap(matrix: Any, tasks: Sequence[str], title: str) -> Any:
    """A K x K synergy matrix as an annotated heatmap in [-1, 1] (NaN drawn as 0, written as
    nan); a plain `matplotlib.figure.Figure`."""
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    im = ax.imshow(np.nan_to_num(m), vmin=-1, vmax=1, cmap="RdBu")
    short = [t.replace("_", "\n") for t in tasks]
    ax.set_xticks(range(len(tasks)), short, fontsize=7)
    ax.set_yticks(range(len(tasks)), short, fontsize=7)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return fig
