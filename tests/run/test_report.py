"""Run report: plots drawn off the records, outside pyplot's registry."""

from __future__ import annotations

import pytest

from astor_core.run import report
from astor_core.run.records import MLFLOW_SERIES, PLOT_SERIES, RoundStats, TaskRoundStats


def test_plot_history_draws_every_series_and_leaves_no_open_pyplot_figure() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = ["code_reasoning", "commit_message"]
    history = [
        RoundStats(
            round=r,
            scheduler="astor",
            per_task={
                t: TaskRoundStats(**dict.fromkeys(MLFLOW_SERIES, 0.1 * (r + 1))) for t in tasks
            },
            synergy={},
            synergy_matrix=[[1.0, -0.2], [-0.2, 1.0]],
        )
        for r in range(3)
    ]
    before = plt.get_fignums()
    for _ in range(25):  # more than pyplot's 20-open-figures warning threshold
        figures = report.plot_history(history, tasks)
    assert plt.get_fignums() == before
    assert set(figures) == {f"{s}_trajectory" for s in PLOT_SERIES} | {"synergy_heatmap"}
    for s in PLOT_SERIES:
        (ax,) = figures[f"{s}_trajectory"].axes
        lines = [list(line.get_ydata()) for line in ax.get_lines()]
        assert lines == [pytest.approx([0.1, 0.2, 0.3])] * 2


def test_synergy_heatmap_writes_every_cell() -> None:
    fig = report.synergy_heatmap([[1.0, float("nan")], [0.5, 1.0]], ["a", "b"], "S")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["1.00", "nan", "0.50", "1.00"]
    assert ax.get_title() == "S"
