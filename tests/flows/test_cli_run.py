"""flows.cli.run.ui_commands: what `astor demo` / `astor train` print to open the UIs."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from flows.cli.run import ui_commands

RUN = "#/experiments/3/runs/abc"


def test_local_run_names_the_stores_it_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with temporary_settings(updates={PREFECT_HOME: tmp_path / "ph", PREFECT_API_URL: None}):
        text = "\n".join(ui_commands(RUN, "f-1"))
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000" in text
    assert f"http://127.0.0.1:5000/{RUN}" in text
    assert f"PREFECT_HOME={tmp_path / 'ph'} " in text  # not the default home: say which
    assert f"{tmp_path / 'ph' / 'prefect.db'}" in text
    assert "http://127.0.0.1:4200/runs/flow-run/f-1" in text


def test_servers_in_use_get_links_to_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000/")
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.internal:4200/api"}):
        lines = ui_commands(RUN, "f-2")
    assert lines == [
        f"  MLflow : http://mlflow.internal:5000/{RUN}",
        "  Prefect: http://prefect.internal:4200/runs/flow-run/f-2",
    ]


def test_no_flow_run_id_links_to_the_runs_page() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://p:4200/api"}):
        assert ui_commands(RUN, "none")[-1] == "  Prefect: http://p:4200/runs"
