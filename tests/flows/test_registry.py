"""The final policy logged as an MLflow transformers model and registered, on the micro model
with a SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flows import registry, tracking
from tests.policy.conftest import micro_dir  # noqa: F401 (the micro model fixture)


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts of the default location land under tmp_path
    return uri


def test_policy_is_registered_loadable_and_tagged(micro_dir: Path, sqlite_store: str) -> None:  # noqa: F811
    tracker = tracking.RunTracker("astor-registry-test", run_name="r")
    tags = {"astor.scheduler": "astor", "dvc.pools_digest": "abc123"}
    first = registry.log_policy_model(tracker.run_id, micro_dir, "astor-policy-test", tags)
    second = registry.log_policy_model(tracker.run_id, micro_dir, "astor-policy-test", tags)
    tracker.terminate("FINISHED")

    assert (str(first.version), str(second.version)) == ("1", "2")
    client = MlflowClient(sqlite_store)
    version = client.get_model_version("astor-policy-test", "1")
    assert version.run_id == tracker.run_id
    assert version.tags == tags

    pipe = mlflow.transformers.load_model("models:/astor-policy-test/1")
    assert pipe.task == "text-generation"
    out = pipe("def f(x):", max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"].startswith("def f(x):")
