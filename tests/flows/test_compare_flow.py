"""`astor compare` in miniature: child runs under one MLflow parent, report from MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows import tracking
from flows.compare import compare_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_compare_quick_writes_report_from_mlflow(
    prefect_harness, mini_run: Path, monkeypatch
) -> None:
    params = yaml.safe_load(mini_run.read_text())
    params["compare"] = {
        "methods": ["astor", "uniform", "specialists"],
        "quick_rounds": 1,
        "quick_seeds": [0],
        "run_root": str(mini_run.parent / "cmp"),
    }
    mini_run.write_text(yaml.safe_dump(params))
    result = compare_flow(str(mini_run), quick=True)
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(r.data.tags["astor.scheduler"] for r in children) == sorted(
        [
            "astor",
            "uniform",
            "specialist:code_reasoning",
            "specialist:code_generation",
            "specialist:unit_test_generation",
            "specialist:commit_message",
        ]
    )
    report = Path(result["report"]).read_text()
    assert "| astor |" in report and "| specialists |" in report and parent.info.run_id in report
    assert "Verdict" in report
