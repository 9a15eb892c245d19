"""`astor compare` in miniature: training and evaluation runs under one MLflow parent, the
report (tables, paired statistics, kept policies) built from MLflow only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows import tracking
from flows.compare import EVAL_ROLE, compare_flow, write_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_compare_quick_writes_report_from_mlflow(
    prefect_harness, mini_run: Path, monkeypatch
) -> None:
    params = yaml.safe_load(mini_run.read_text())
    params["compare"] = {
        "methods": ["astor", "uniform", "proportional", "specialists"],
        "quick_rounds": 1,
        "quick_seeds": [0, 1],
        "quick_eval_items_per_task": 2,
        "bootstrap_resamples": 200,
        "split": "test",
        "run_root": str(mini_run.parent / "cmp"),
    }
    mini_run.write_text(yaml.safe_dump(params))
    Path("docs").mkdir()
    Path("docs/RESULTS.md").write_text("# old\n\n## Simulator (kept)\n\nby hand\n")
    result = compare_flow(str(mini_run), quick=True)
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    twins = json.loads(parent.data.tags["compare.identical_arms"])
    trained = ["astor", "uniform", "proportional"] + [
        f"specialist:{t}"
        for t in ("code_reasoning", "code_generation", "unit_test_generation", "commit_message")
    ]
    trained = [s for s in trained if s not in twins]
    training = [r for r in children if r.data.tags.get("astor.role") != EVAL_ROLE]
    evals = [r for r in children if r.data.tags.get("astor.role") == EVAL_ROLE]
    assert sorted(r.data.tags["astor.scheduler"] for r in training) == sorted(trained * 2)
    # every final policy and the SFT start, once per seed, each with its item scores
    assert sorted(r.data.tags["astor.scheduler"] for r in evals) == sorted((trained + ["sft"]) * 2)
    for run in evals:
        assert Path(run.data.tags["astor.policy_dir"], "config.json").is_file()
        assert run.data.tags["astor.split"] == "test"
        assert run.data.metrics["eval_time_s"] > 0
        scores = json.loads(
            Path(client.download_artifacts(run.info.run_id, "item_scores.json")).read_text()
        )
        assert set(scores) == {"mean_at_k", "greedy"}
        n_tasks = 1 if run.data.tags["astor.scheduler"].startswith("specialist:") else 4
        assert len(scores["mean_at_k"]) == n_tasks
        assert all(0 < len(v) <= 2 for v in scores["mean_at_k"].values())
    report = Path(result["report"]).read_text()
    assert "| sft |" in report and "| specialists |" in report and parent.info.run_id in report
    assert "astor vs uniform" in report and "astor vs specialists" in report
    assert "uniform vs sft" in report and "MDE" in report and "**Verdict.**" in report
    assert "Held-out split: `test`" in report and "-S compare" not in report
    assert report.endswith("## Simulator (kept)\n\nby hand\n")
    if twins:
        assert "identical by construction" in report and "`proportional` = `uniform`" in report
    # the report is rebuilt from MLflow alone: the same text again
    again = write_report(parent.info.run_id, Path("docs/AGAIN.md"))
    assert again.read_text().split("## Curves")[0] == report.split("## Curves")[0]
