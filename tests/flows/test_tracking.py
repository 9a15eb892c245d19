"""RunTracker: asynchronous per-round metric writes that are complete once the run ends."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.async_logging.run_operations import RunOperations

from flows import tracking


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> tracking.RunTracker:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tracking.RunTracker("astor-tracking-test", run_name="t")


def test_rounds_logged_asynchronously_are_all_there_after_terminate(tracker):
    for step in range(5):
        tracker.log_round(step, {"round_time_s": 1.0 + step, "utility/code_generation": step / 10})
    tracker.terminate("FINISHED")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    history = tracker.client.get_metric_history(tracker.run_id, "utility/code_generation")
    assert sorted((m.step, m.value) for m in history) == [(s, s / 10) for s in range(5)]
    assert tracking.missing_steps(tracker, "round_time_s", 6) == [5]


def test_logged_steps_sees_the_write_in_flight(tracker):
    tracker.log_round(0, {"round_time_s": 2.0})
    assert tracker.logged_steps("round_time_s") == {0}


def _failed_write(*_args, **_kwargs) -> RunOperations:
    future: Future = Future()
    future.set_exception(OSError("disk full"))
    return RunOperations([future])


@pytest.fixture
def failed_round(tracker, monkeypatch) -> tracking.RunTracker:
    """A tracker whose write of round 0 failed in MLflow's background thread."""
    monkeypatch.setattr(tracker.client, "log_batch", _failed_write)
    tracker.log_round(0, {"round_time_s": 2.0})
    return tracker


def test_a_failed_write_fails_a_successful_run(failed_round):
    with pytest.raises(MlflowException, match="disk full"):
        failed_round.terminate("FINISHED")
    assert failed_round.client.get_run(failed_round.run_id).info.status == "FAILED"


def test_a_failed_write_does_not_mask_the_flow_error(failed_round):
    with pytest.warns(UserWarning, match="disk full"):
        failed_round.terminate("FAILED")
    assert failed_round.client.get_run(failed_round.run_id).info.status == "FAILED"


def test_the_next_round_surfaces_a_failed_write(failed_round):
    with pytest.raises(MlflowException, match="disk full"):
        failed_round.log_round(1, {"round_time_s": 2.0})
