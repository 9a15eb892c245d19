"""Cron deployments on a real local `prefect server` (loopback), executed for real.

1. `astor serve` registers the training flow as a deployment with a cron schedule; the
   server's scheduler creates its runs and the serve process executes one of them (and a
   run triggered by hand) to COMPLETED, linked to its MLflow run.
2. `prefect deploy --all` registers prefect.yaml's deployments: the nightly one on the
   `astor-process` work pool with its cron schedule (a process worker pulls one run of it
   and completes it) and the GPU one on `astor-gpu` with its job variables.

Every child (server, serve, worker) runs in its own session and its whole process group is
stopped at the end; the test asserts that none is left.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows import servers
from tests.flows.conftest import REPO, mini_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

T = TypeVar("T")
RUN_TIMEOUT_S = 480.0
"""Longest wait for a flow run of a miniature config to finish on a loaded 2-core machine."""
CRON = "*/1 * * * *"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _with_client(api: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run `fn(client)` with a Prefect client pointed at `api`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main() -> T:
        async with get_client() as client:
            return await fn(client)

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return asyncio.run(main())


def _deployment_runs(api: str, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    flt = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    return _with_client(api, lambda c: c.read_flow_runs(deployment_filter=flt, limit=200))


def _wait(
    what: str, probe: Callable[[], T | None], timeout_s: float, on_fail: Callable[[], str]
) -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2.0)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{on_fail()}")


def _read_deployment(api: str, name: str) -> Any | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return _with_client(api, lambda c: c.read_deployment_by_name(name))
    except ObjectNotFound:
        return None


def _final_run(api: str, run_id: Any) -> Any | None:
    run = _with_client(api, lambda c: c.read_flow_run(run_id))
    return run if run.state_type.value in FINAL else None


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` on a free loopback port, its own PREFECT_HOME."""
    srv = servers.prefect_server(tmp_path_factory.mktemp("prefect-server"))
    with srv:
        yield srv
    assert not servers.group_alive(srv.proc.pid), "prefect server processes left behind"


@pytest.fixture
def client_env(server, tmp_path: Path) -> dict[str, str]:
    """Environment of a CLI process that talks to the local server and a temp MLflow store."""
    return servers.child_env(
        {
            "PREFECT_API_URL": f"{server.base_url}/api",
            "PREFECT_HOME": str(tmp_path / "client-prefect-home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "ASTOR_HOME": str(REPO),
        }
    )


def _mini_config(mini_assets: Path, tmp_path: Path) -> Path:
    params = mini_params(mini_assets)
    params["train"].update(rounds=1, eval_every=1, run_dir=str(tmp_path / "run-scheduled"))
    params["train"]["experiment"] = "astor-deployment-test"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


@pytest.mark.timeout(900)
def test_astor_serve_executes_cron_runs(
    server, client_env, mini_assets: Path, tmp_path: Path
) -> None:
    api = f"{server.base_url}/api"
    config = _mini_config(mini_assets, tmp_path)
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "flows.cli", "serve", "--config", str(config)]
    serve = _spawn(argv + ["--cron", CRON, "--name", "test"], client_env, log)
    try:
        dep = _wait(
            "astor serve to register astor-train/test",
            lambda: _read_deployment(api, "astor-train/test"),
            120,
            lambda: _tail(log),
        )
        assert [s.schedule.cron for s in dep.schedules] == [CRON]
        assert all(s.active for s in dep.schedules)
        assert dep.parameters["config_path"] == str(config)

        # a run by hand, in its own run directory, next to the cron runs
        manual = _with_client(
            api,
            lambda c: c.create_flow_run_from_deployment(
                dep.id,
                parameters={
                    "config_path": str(config),
                    "overrides": [f"train.run_dir={tmp_path / 'run-manual'}"],
                },
            ),
        )
        done = _wait(
            "the triggered run to finish",
            lambda: _final_run(api, manual.id),
            RUN_TIMEOUT_S,
            lambda: _tail(log),
        )
        assert done.state_type.value == "COMPLETED", (done.state, _tail(log))

        def scheduled_completed() -> list[Any]:
            runs = _deployment_runs(api, dep.id)
            assert not [r for r in runs if r.state_type.value in {"FAILED", "CRASHED"}], _tail(log)
            return [r for r in runs if r.auto_scheduled and r.state_type.value == "COMPLETED"]

        # the cron schedule produced runs and the serve process executed one of them
        _wait(
            "a cron-scheduled run to complete",
            scheduled_completed,
            RUN_TIMEOUT_S,
            lambda: _tail(log),
        )
    finally:
        servers.stop_group(serve, 20)
    assert not servers.group_alive(serve.pid), "astor serve processes left behind"

    # the flow run and its MLflow run point at each other
    mlflow = MlflowClient(client_env["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("astor-deployment-test")
    linked = mlflow.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{manual.id}'")
    assert len(linked) == 1 and linked[0].info.status == "FINISHED"
    assert linked[0].data.tags["astor.run_dir"] == str(tmp_path / "run-manual")


@pytest.mark.timeout(900)
def test_prefect_yaml_deploys_and_a_worker_runs_it(
    server, client_env, mini_assets: Path, tmp_path: Path
) -> None:
    api = f"{server.base_url}/api"
    prefect = [sys.executable, "-m", "prefect"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [*prefect, *args], env=client_env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, (
            f"prefect {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
        return out

    specs = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    for pool in sorted({s["work_pool"]["name"] for s in specs}):
        cli("work-pool", "create", pool, "--type", "process")
    cli("--no-prompt", "deploy", "--all")

    gpu_spec = next(s for s in specs if s["work_pool"]["name"] == "astor-gpu")
    gpu = _read_deployment(api, f"astor-train/{gpu_spec['name']}")
    assert gpu is not None and gpu.work_pool_name == "astor-gpu"
    assert gpu.job_variables == gpu_spec["work_pool"]["job_variables"]
    assert gpu.parameters["overrides"] == gpu_spec["parameters"]["overrides"]

    spec = specs[0]
    dep = _read_deployment(api, f"astor-train/{spec['name']}")
    assert dep is not None
    assert [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules] == [
        (spec["schedules"][0]["cron"], spec["schedules"][0]["timezone"])
    ]
    assert dep.work_pool_name == spec["work_pool"]["name"]
    assert dep.entrypoint == spec["entrypoint"]
    # the pull step's {{ $ASTOR_HOME }} was resolved at deploy time
    assert dep.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]

    # the server's scheduler turned the cron schedule into scheduled runs
    _wait(
        "scheduled runs of the prefect.yaml deployment",
        lambda: [r for r in _deployment_runs(api, dep.id) if r.auto_scheduled],
        180,
        lambda: server.log_tail(),
    )

    # a process worker pulls one run (on the miniature config) and completes it
    config = _mini_config(mini_assets, tmp_path)
    run = _with_client(
        api,
        lambda c: c.create_flow_run_from_deployment(
            dep.id,
            parameters={
                "config_path": str(config),
                "overrides": [f"train.run_dir={tmp_path / 'run-worker'}"],
            },
        ),
    )
    log = tmp_path / "worker.log"
    worker = _spawn(
        [*prefect, "worker", "start", "--pool", "astor-process", "--run-once"], client_env, log
    )
    try:
        worker.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not finish within {RUN_TIMEOUT_S:.0f} s:\n{_tail(log)}")
    finally:
        servers.stop_group(worker, 20)
    assert not servers.group_alive(worker.pid), "worker processes left behind"
    final = _with_client(api, lambda c: c.read_flow_run(run.id))
    assert final.state_type.value == "COMPLETED", (final.state, _tail(log))
