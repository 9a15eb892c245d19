"""The typed records one round hands on: :class:`TaskRoundStats` per task inside a
:class:`RoundStats`. The per-task series names are written here once: rounds.csv's columns
(:data:`CSV_COLUMNS`), the MLflow series (:data:`MLFLOW_SERIES`, logged as
``<series>/<task>``) and the plotted trajectories (:data:`PLOT_SERIES`) are read off the
fields of :class:`TaskRoundStats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _series(*, csv: bool = True, plot: bool = False) -> Any:
    """A per-task series: always an MLflow series; a rounds.csv column when `csv`; a plotted
    trajectory when `plot`."""
    return field(metadata={"csv": csv, "plot": plot})


@dataclass(frozen=True)
class TaskRoundStats:
    """One task's numbers for one round (None: not measured this round)."""

    utility: float = _series(plot=True)
    """U_k after this round's update (docs/METHOD.md, section 1)."""
    learning_potential: float = _series(plot=True)
    """LP_k after this round's update."""
    share: float = _series(plot=True)
    """w_k, the share of this round's prompts the scheduler gave the task."""
    rollouts: int = _series()
    """Completions of the task in this round."""
    rollouts_spent: int = _series()
    """Completions of the task over the run so far."""
    beta: float = _series(plot=True)
    """KL coefficient the task's samples were trained with this round."""
    beta_next: float = _series(csv=False)
    """KL coefficient after this round's controller step (the next round's beta)."""
    target_kl: float = _series()
    """KL target of the task's controller after this round."""
    kl: float | None = _series(plot=True)
    """Measured KL(policy || reference) on the task's samples."""
    mean_reward: float | None = _series(plot=True)
    """Mean reward of the task's completions this round."""
    zero_variance_fraction: float | None = _series()
    """Fraction of the task's groups whose G rewards were all equal (no GRPO signal)."""
    informative_fraction: float | None = _series(csv=False)
    """Fraction of the task's pool the posteriors still find informative."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRoundStats:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


MLFLOW_SERIES: tuple[str, ...] = tuple(f.name for f in fields(TaskRoundStats))
"""Per-task series logged to MLflow at every round, as ``<series>/<task>``."""
CSV_SERIES: tuple[str, ...] = tuple(f.name for f in fields(TaskRoundStats) if f.metadata["csv"])
"""Per-task series written to rounds.csv."""
CSV_COLUMNS: tuple[str, ...] = ("round", "task", *CSV_SERIES)
"""Columns of rounds.csv (the DVC plots file)."""
PLOT_SERIES: tuple[str, ...] = tuple(f.name for f in fields(TaskRoundStats) if f.metadata["plot"])
"""Per-task series drawn as trajectories at the end of a run."""


@dataclass(frozen=True)
class RoundStats:
    """Everything one round measured; stored as stats/round-NNNNNN.json."""

    round: int
    scheduler: str
    per_task: dict[str, TaskRoundStats]
    synergy: dict[str, float]
    """``"task_a/task_b"`` -> S_ab (a before b in the task order; measured pairs only), and
    ``"task_a/task_b/raw"`` / ``".../floor"``: the accumulated cosine and its noise floor."""
    synergy_matrix: list[list[float]]
    """The K x K synergy matrix in the run's task order (NaN where not measured)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Round-level numbers: the update's metrics and round_time_s."""
    eval: dict[str, dict[str, float]] | None = None
    """Held-out evaluation (task -> metric -> value) on evaluation rounds."""

    def with_eval(self, table: Mapping[str, Mapping[str, float]]) -> RoundStats:
        return dataclasses.replace(self, eval={t: dict(row) for t, row in table.items()})

    def with_metrics(self, **metrics: float) -> RoundStats:
        return dataclasses.replace(self, metrics=self.metrics | metrics)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        out = dataclasses.asdict(self)
        out["per_task"] = {t: row.to_dict() for t, row in self.per_task.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundStats:
        """Inverse of :meth:`to_dict`.

        >>> row = dict.fromkeys(MLFLOW_SERIES, 0.5)
        >>> s = RoundStats(2, "astor", {"a": TaskRoundStats(**row)}, {}, [[1.0]])
        >>> RoundStats.from_dict(s.to_dict()) == s
        True
        """
        per_task = {t: TaskRoundStats.from_dict(row) for t, row in data["per_task"].items()}
        return cls(
            round=int(data["round"]),
            scheduler=str(data["scheduler"]),
            per_task=per_task,
            synergy=dict(data["synergy"]),
            synergy_matrix=[list(row) for row in data["synergy_matrix"]],
            metrics=dict(data.get("metrics") or {}),
            eval=data.get("eval"),
        )
