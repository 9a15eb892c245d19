"""The per-task series are named once, by TaskRoundStats: rounds.csv's header, the MLflow
keys and the plotted series all come from its fields."""

from __future__ import annotations

import csv
import dataclasses
import json
from types import SimpleNamespace

import pytest

from astor_core.run import report, store
from astor_core.run.records import (
    CSV_COLUMNS,
    MLFLOW_SERIES,
    PLOT_SERIES,
    RoundStats,
    TaskRoundStats,
)
from flows import tracking

TASKS = ("code_reasoning", "commit_message")


def _stats(round_idx: int) -> RoundStats:
    names = [f.name for f in dataclasses.fields(TaskRoundStats)]
    row = TaskRoundStats(**{n: 0.1 * (round_idx + 1) for n in names})
    return RoundStats(
        round=round_idx,
        scheduler="astor",
        per_task={t: row for t in TASKS},
        synergy={f"{TASKS[0]}/{TASKS[1]}": -0.2},
        synergy_matrix=[[1.0, -0.2], [-0.2, 1.0]],
        metrics={"loss": 1.0},
    )


def test_every_series_is_a_field_and_every_field_is_logged() -> None:
    fields = [f.name for f in dataclasses.fields(TaskRoundStats)]
    assert list(MLFLOW_SERIES) == fields
    assert tracking.PER_TASK_SERIES == MLFLOW_SERIES
    assert set(CSV_COLUMNS[2:]) <= set(fields) and set(PLOT_SERIES) <= set(fields)
    assert "zero_variance_fraction" in fields  # one spelling, the scheduler's


def test_csv_header_mlflow_keys_and_plots_come_from_the_record(tmp_path) -> None:
    for r in range(3):
        store.stats_path(tmp_path, r).parent.mkdir(parents=True, exist_ok=True)
        store.stats_path(tmp_path, r).write_text(json.dumps(_stats(r).to_dict()))
    path = store.write_rounds_csv(tmp_path, 3)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * len(TASKS)

    metrics = tracking.round_metrics(_stats(0))
    per_task = {k for k in metrics if k.rsplit("/", 1)[-1] in TASKS and "/" in k}
    assert per_task == {f"{s}/{t}" for s in MLFLOW_SERIES for t in TASKS} | {
        f"synergy/{TASKS[0]}/{TASKS[1]}"
    }

    history = store.load_history(tmp_path, 3)
    figures = report.plot_history(history, TASKS)
    assert set(figures) == {f"{s}_trajectory" for s in PLOT_SERIES} | {"synergy_heatmap"}


def test_a_series_not_measured_is_not_logged() -> None:
    stats = _stats(0)
    row = dataclasses.replace(stats.per_task[TASKS[0]], kl=None)
    stats = dataclasses.replace(stats, per_task={TASKS[0]: row})
    assert f"kl/{TASKS[0]}" not in tracking.round_metrics(stats)
    assert tracking.round_metrics(stats)[f"utility/{TASKS[0]}"] == pytest.approx(0.1)


def test_summary_line_reads_the_record() -> None:
    line = report.summary_line(_stats(1))
    assert line.startswith(f"{TASKS[0]}: w=0.20 R=0.20 beta=0.2")


def test_store_round_trips_the_record(tmp_path) -> None:
    ctx = SimpleNamespace(run_dir=str(tmp_path))
    stats = _stats(2).with_eval({TASKS[0]: {"mean_reward": 0.5}}).with_metrics(round_time_s=3.0)
    store.stats_path(ctx.run_dir, 2).parent.mkdir(parents=True)
    store.stats_path(ctx.run_dir, 2).write_text(json.dumps(stats.to_dict()))
    assert store.load_round_stats(ctx.run_dir, 2) == stats
