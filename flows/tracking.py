"""MLflow tracking for a training run: one run per flow run, every per-task number at every
round (step = round), plots and the final policy as artifacts.

Default backend: a SQLite file (``sqlite:///mlflow.db`` in the working directory); a tracking
server when ``MLFLOW_TRACKING_URI`` is set. Resume appends to the same run and never logs a
step twice: the round's metrics are stored in its checkpoint and re-logged only when MLflow
lacks that step (see :func:`missing_steps`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.async_logging.run_operations import RunOperations

from astor_core.atomic import write_json_atomic
from astor_core.run.records import MLFLOW_SERIES, RoundStats

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Backend used when MLFLOW_TRACKING_URI is not set: a SQLite file in the working directory."""

PER_TASK_SERIES: tuple[str, ...] = MLFLOW_SERIES
"""The per-task series logged at every round, as `<series>/<task>` (the fields of
astor_core.run.records.TaskRoundStats)."""

RUN_ID_FILE = "mlflow_run.json"
"""File in a run dir that keeps the run's MLflow run id (resume appends to that run)."""


def tracking_uri() -> str:
    """The tracking URI in force: MLFLOW_TRACKING_URI, else the local SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit(cwd: str | Path = ".") -> str:
    """The current git commit, or 'unknown' outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten_params(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params (`section.field` -> str).

    >>> flatten_params({"train": {"rounds": 3, "scheduler": "astor"}})
    {'train.rounds': '3', 'train.scheduler': 'astor'}
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def round_metrics(stats: RoundStats) -> dict[str, float]:
    """A round's record as flat MLflow metrics: `<series>/<task>` for every series of
    :data:`PER_TASK_SERIES` that was measured, `synergy/<a>/<b>`, `eval_<metric>/<task>` on
    evaluation rounds and the round-level metrics under their own names."""
    out: dict[str, float] = {}
    for task, row in stats.per_task.items():
        for name in PER_TASK_SERIES:
            value = getattr(row, name)
            if value is not None:
                out[f"{name}/{task}"] = float(value)
    for pair, value in stats.synergy.items():
        out[f"synergy/{pair}"] = float(value)
    for task, metrics in (stats.eval or {}).items():
        for name, value in metrics.items():
            out[f"eval_{name}/{task}"] = float(value)
    for name, value in stats.metrics.items():
        if value is not None:
            out[name] = float(value)
    return out


def stored_run_id(run_dir: str | Path) -> str | None:
    """The MLflow run id a run dir was tracked under, or None for a fresh run."""
    path = Path(run_dir) / RUN_ID_FILE
    return json.loads(path.read_text())["mlflow_run_id"] if path.exists() else None


def store_run_id(run_dir: str | Path, run_id: str) -> None:
    """Keep the MLflow run id in the run dir (atomically), for resume."""
    write_json_atomic(Path(run_dir) / RUN_ID_FILE, {"mlflow_run_id": run_id})


class RunTracker:
    """Owns one MLflow run for one training run; safe to re-open on resume."""

    def __init__(self, experiment: str, run_id: str | None = None, run_name: str | None = None):
        mlflow.set_tracking_uri(tracking_uri())
        self.client = MlflowClient(tracking_uri())
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        if run_id is None:
            run = self.client.create_run(exp_id, run_name=run_name)
            run_id = run.info.run_id
        self.run_id = run_id
        self.experiment_id = exp_id
        self._in_flight: list[RunOperations] = []

    @property
    def url(self) -> str:
        """Where the run lives in the MLflow UI (relative to the UI's base URL)."""
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_params(self, params: Mapping[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def logged_steps(self, key: str) -> set[int]:
        """Steps already present for one metric key."""
        self.flush()
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics at `step` in batches (MLflow takes <= 1000 per call).

        Through MLflow's asynchronous logging, so the write is off the round's critical path;
        the previous round's write is awaited first (at most one round in flight, and a failed
        write surfaces one round later at the latest). A crash that loses the round in flight
        is repaired on resume: its metrics are in the checkpoint (see :func:`missing_steps`).
        """
        self.flush()
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            ops = self.client.log_batch(self.run_id, metrics=batch[i : i + 1000], synchronous=False)
            self._in_flight.append(ops)

    def flush(self) -> None:
        """Wait for the asynchronous metric writes; raise if one of them failed."""
        in_flight, self._in_flight = self._in_flight, []
        for ops in in_flight:
            ops.wait()

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_pools(self, pools: Mapping[str, Any], digest: str, source: str) -> None:
        """Log the prompt pools as MLflow dataset inputs carrying the DVC digest."""
        from mlflow.data.pandas_dataset import from_pandas

        with warnings.catch_warnings(), mlflow.start_run(run_id=self.run_id, nested=False):
            # MLflow hints about integer columns and ambiguous local sources: not actionable here.
            warnings.simplefilter("ignore", UserWarning)
            for name, frame in pools.items():
                ds = from_pandas(frame, source=source, name=f"pools-{name}", digest=digest[:36])
                mlflow.log_input(ds, context=name)

    def log_figure_files(self, figures: Mapping[str, Any]) -> None:
        """Save matplotlib figures as PNG artifacts under plots/."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in figures.items():
                path = Path(tmp) / f"{name}.png"
                fig.savefig(path, dpi=110, bbox_inches="tight")
                self.log_artifact(path, "plots")

    def terminate(self, status: str = "FINISHED") -> None:
        """End the run once its metric writes are in. A failed write ends it FAILED: raised
        on a successful run, only warned about when the caller is already failing (its own
        error is the one to report; resume re-logs the lost rounds from the checkpoints)."""
        try:
            self.flush()
        except Exception as exc:
            self.client.set_terminated(self.run_id, status="FAILED")
            if status == "FINISHED":
                raise
            warnings.warn(f"MLflow metric write failed: {exc}", stacklevel=2)
            return
        self.client.set_terminated(self.run_id, status=status)


def missing_steps(tracker: RunTracker, key: str, upto: int) -> list[int]:
    """Rounds 0..upto-1 that MLflow has no value for under `key` (for exact resume)."""
    have = tracker.logged_steps(key)
    return [s for s in range(upto) if s not in have]
