"""The training flow under Prefect's test harness with a temporary MLflow SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astor_core import TASKS
from astor_core.data.pools import read_pools
from astor_core.policy.checkpoint import complete_rounds
from astor_core.run import stages
from flows import tracking
from flows.training import train_flow

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# the list, written out on purpose (not flows.tracking.PER_TASK_SERIES): a series
# dropped from the tracking code must fail this test
SERIES_PER_TASK = (
    "utility",
    "learning_potential",
    "share",
    "rollouts_spent",
    "beta",
    "kl",
    "mean_reward",
    "zero_variance_fraction",
)


def _task_run_names(flow_run_id: str) -> set[str]:
    return {name for name, _ in _task_runs(flow_run_id)}


def _task_runs(flow_run_id: str) -> list[tuple[str, set[str]]]:
    """(task name without its run suffix, tags) of every task run of a flow run."""
    from flows.servers import recorded_task_runs

    return [(r.name.rsplit("-", 1)[0], set(r.tags)) for r in recorded_task_runs(flow_run_id)]


def test_flow_tracks_every_series_every_round(prefect_harness, mini_run: Path) -> None:
    result = train_flow(str(mini_run))
    assert result["rounds"] == 3
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for series in SERIES_PER_TASK:
        for task in TASKS:
            steps = sorted(
                m.step for m in client.get_metric_history(run.info.run_id, f"{series}/{task}")
            )
            assert steps == [0, 1, 2], (series, task, steps)
    assert {
        m.step for m in client.get_metric_history(run.info.run_id, f"eval_mean_reward/{TASKS[0]}")
    } == {2}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/synergy_heatmap.png" in artifacts and "plots/utility_trajectory.png" in artifacts
    assert any(
        a.path.endswith("eval_table.md") for a in client.list_artifacts(run.info.run_id, "eval")
    )
    assert client.list_artifacts(run.info.run_id, "policy")
    pools_dir = yaml.safe_load(mini_run.read_text())["data"]["pools_dir"]
    assert run.data.tags["dvc.pools_digest"] == read_pools(pools_dir).digest
    # the final policy: a transformers model in the run, registered and tagged
    assert result["registered_model"] == "models:/astor-policy/1"
    version = client.get_model_version("astor-policy", "1")
    assert version.run_id == run.info.run_id
    assert version.tags == {
        "astor.scheduler": run.data.tags["astor.scheduler"],
        "dvc.pools_digest": run.data.tags["dvc.pools_digest"],
    }
    import mlflow

    assert mlflow.transformers.load_model(result["registered_model"]).task == "text-generation"
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    names = _task_run_names(flow_run_id)
    for stage in (
        "validate-pools",
        "schedule",
        "rollout",
        "train-round",
        "update-scheduler-and-kl",
        "evaluate",
        "checkpoint",
    ):
        assert any(n.startswith(stage) for n in names), (stage, names)
    # untagged by default: a tagged task run takes a concurrency lease (seconds per round)
    assert all(not tags for name, tags in _task_runs(flow_run_id) if name == "train-round")


def test_transient_reward_failure_is_retried(prefect_harness, mini_run: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = stages.score_chunk

    def flaky(chunk):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reward worker died (injected)")
        return real(chunk)

    monkeypatch.setattr(stages, "score_chunk", flaky)
    result = train_flow(
        str(mini_run),
        overrides=["train.rounds=1", "train.eval_every=1", "train.train_stage_tags=[gpu]"],
    )
    assert result["rounds"] == 1
    assert calls["n"] >= 2
    flow_run_id = (
        MlflowClient(tracking.tracking_uri())
        .get_run(result["mlflow_run_id"])
        .data.tags["prefect.flow_run_id"]
    )
    assert [tags for name, tags in _task_runs(flow_run_id) if name == "train-round"] == [{"gpu"}]


def test_permanent_failure_fails_flow_and_keeps_checkpoint(
    prefect_harness, mini_run: Path, monkeypatch
) -> None:
    real = stages.score_chunk
    state = {"ok_calls": 0}

    def broken_after_first_round(chunk):
        if Path(mini_run.parent / "run" / "checkpoints").exists() and complete_rounds(
            mini_run.parent / "run" / "checkpoints"
        ):
            raise RuntimeError("reward stage is permanently broken (injected)")
        state["ok_calls"] += 1
        return real(chunk)

    monkeypatch.setattr(stages, "score_chunk", broken_after_first_round)
    with pytest.raises(RuntimeError, match="permanently broken"):
        train_flow(str(mini_run), overrides=["train.reward_retries=1"])
    root = mini_run.parent / "run" / "checkpoints"
    assert complete_rounds(root) == [0]
    client = MlflowClient(tracking.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("astor-test").experiment_id])
    assert runs[0].info.status == "FAILED"


@pytest.mark.slow
def test_kill_9_mid_round_then_resume(mini_run: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL during round 2, restarted with the same command, ends with
    the uninterrupted round count and exactly one MLflow value per step."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "train",
        "--config",
        str(mini_run),
        "-S",
        "train.rounds=4",
    ]
    ckpts = mini_run.parent / "run" / "checkpoints"
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 400
    while time.time() < deadline and not (ckpts.exists() and len(complete_rounds(ckpts)) >= 1):
        time.sleep(0.2)
    assert complete_rounds(ckpts), "the first round never completed"
    time.sleep(1.0)  # into round 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = complete_rounds(ckpts)
    assert max(done_before) < 3
    subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    assert max(complete_rounds(ckpts)) == 3
    client = MlflowClient(tracking.tracking_uri())
    exp = client.get_experiment_by_name("astor-test")
    (run,) = client.search_runs([exp.experiment_id])
    for task in TASKS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"utility/{task}")]
        assert sorted(steps) == [0, 1, 2, 3], steps


def test_training_refuses_a_vllm_server_that_never_gets_the_weights(
    prefect_harness, mini_run: Path
) -> None:
    """rollout.vllm_weight_sync=none would sample every round from the initial policy: the
    flow stops with one line before any run directory or MLflow run exists."""
    from astor_core.config import ConfigError

    run_dir = Path(yaml.safe_load(mini_run.read_text())["train"]["run_dir"])
    with pytest.raises(ConfigError, match="vllm_weight_sync='none' serves stale weights"):
        train_flow(
            str(mini_run), overrides=["rollout.engine=vllm", "rollout.vllm_weight_sync=none"]
        )
    assert not run_dir.exists()
