"""Local Prefect and MLflow servers on loopback, started and stopped as process groups.

Used by the deployment and browser tests and by ``scripts/ui_screenshots.py``: each server
is a child process in its own session, bound to 127.0.0.1 on a free port, with its state
under a directory the caller owns; :meth:`LocalServer.stop` ends the whole process group
(SIGTERM, then SIGKILL), so nothing outlives the caller's ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

QUIET_ENV: Mapping[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Environment every child gets: no analytics or telemetry calls (the machine may be offline)."""

EPHEMERAL_SERVER_ENV: Mapping[str, str] = {
    # The temporary API server a local run starts (no PREFECT_API_URL) serves that one run:
    # no automations to evaluate and no UI subscribed to its event stream, so those services
    # would only take CPU from the training (docs/PERFORMANCE.md, "Orchestration overhead").
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED": "false",
    # Task runs recorded in batches (Prefect's default is one database transaction per state
    # event): about half that server's CPU per round; a task run is stored <= 1 s later, and
    # the server's shutdown flushes the rest.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
"""Settings for the ephemeral API server only; a real `prefect server` keeps Prefect's own."""


def idle_cpu_class(pid: int) -> int:
    """Put every thread of process `pid` in Linux's SCHED_IDLE scheduling class: it then runs
    only on CPU time no normal thread wants, and is preempted as soon as one does; threads it
    creates later inherit the class. Returns how many threads were moved (0 where the OS has
    no SCHED_IDLE, e.g. macOS)."""
    if not hasattr(os, "SCHED_IDLE"):
        return 0
    moved = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
            moved += 1
    return moved


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (e.g. `kill`, a container stop) becomes SystemExit in this process, so the
    interpreter exits normally and Prefect's exit hook stops the temporary server. Python's
    default action ends the process on the spot, and the server, a child process, then runs on
    forever (Prefect's own handler during a flow run marks the run Crashed, then re-raises the
    signal with that default action). Left alone when someone else installed a handler."""
    with contextlib.suppress(ValueError):  # signal handlers only from the main thread
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)


def start_ephemeral_api() -> int | None:
    """Start the temporary API server that Prefect would start on first use (no
    PREFECT_API_URL), in the background CPU class (:func:`idle_cpu_class`) unless
    ASTOR_API_SERVER_IDLE=0. Its work (recording task-run events, logs, states) can wait for
    an idle core; the training it would take the core from cannot: at normal priority its
    0.2-0.3 CPU-s per demo round preempt the torch threads, and a preempted thread holds up
    every parallel op (docs/PERFORMANCE.md, "Orchestration overhead"). Prefect's clients in
    this process then use this server, and SIGTERM stops it with the process. Returns its
    pid, or None when a server URL is set (a real server is left alone)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    server = SubprocessASGIServer()  # one per process: the instance Prefect's clients use
    server.start()
    assert server.server_process is not None
    _exit_cleanly_on_sigterm()
    if os.environ.get("ASTOR_API_SERVER_IDLE", "1") != "0":
        idle_cpu_class(server.server_process.pid)
    return server.server_process.pid


def recorded_task_runs(flow_run_id: object, settle_s: float = 0.5, timeout_s: float = 30.0) -> list:
    """A flow run's task runs, sorted by start, once the API server has recorded them all:
    it records task-run events in batches (:data:`EPHEMERAL_SERVER_ENV`), so read until two
    reads `settle_s` apart agree and every run has ended (or `timeout_s` passes)."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            seen = None
            deadline = time.monotonic() + timeout_s
            while True:
                runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                    limit=200,
                )
                now = [(r.id, r.end_time) for r in runs]
                settled = now == seen and all(end is not None for _, end in now)
                if settled or time.monotonic() > deadline:
                    return sorted(runs, key=lambda r: r.start_time or r.expected_start_time)
                seen = now
                await asyncio.sleep(settle_s)

    return asyncio.run(read())


@dataclass(frozen=True)
class ServerConfig:
    """How local servers are started, awaited and stopped."""

    host: str = "127.0.0.1"
    """Bind address; loopback so nothing is reachable from outside the machine."""
    startup_timeout_s: float = 240.0
    """Longest wait for the health endpoint to answer (a loaded 2-core box needs ~40 s)."""
    poll_interval_s: float = 0.5
    """Pause between two health probes."""
    stop_timeout_s: float = 20.0
    """Grace period after SIGTERM before the process group is killed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment plus :data:`QUIET_ENV` and `extra`, without `drop`.

    >>> env = child_env({"A_VAR": "1"}, drop=["PATH"])
    >>> env["A_VAR"], env["DO_NOT_TRACK"], "PATH" in env
    ('1', '1', False)
    """
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(QUIET_ENV)
    env.update(extra or {})
    return env


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """True when a GET on `url` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def stop_group(proc: subprocess.Popen, timeout_s: float) -> None:
    """End `proc` and every process in its session: SIGTERM, wait, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
    # children of the leader (uvicorn workers, flow-run processes) may outlive it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists (zombies excluded)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class LocalServer:
    """One server process (its own session) with a health URL and a log file.

    Use as a context manager: ``with LocalServer(...) as srv: ...`` starts it, waits for
    health and always stops the whole process group on exit.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        health_url: str,
        base_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        config: ServerConfig = ServerConfig(),
    ):
        self.name = name
        self.argv = list(argv)
        self.health_url = health_url
        self.base_url = base_url
        self.log_path = Path(log_path)
        self.env = dict(env or child_env())
        self.cwd = cwd
        self.config = config
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalServer:
        """Start the process and block until the health URL answers; raise with the log tail
        when it exits or does not answer in time."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before answering "
                    f"{self.health_url}:\n{self.log_tail()}"
                )
            if http_ok(self.health_url):
                return self
            time.sleep(self.config.poll_interval_s)
        self.stop()
        raise TimeoutError(
            f"{self.name} did not answer {self.health_url} within "
            f"{self.config.startup_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server's whole process group (idempotent)."""
        if self.proc is not None:
            stop_group(self.proc, self.config.stop_timeout_s)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prefect_server(home: Path, config: ServerConfig = ServerConfig()) -> LocalServer:
    """`prefect server start` on a free loopback port with its database under `home`.

    Its API is ``<base_url>/api``; the UI is served at ``base_url``.
    """
    port = free_port(config.host)
    base = f"http://{config.host}:{port}"
    env = child_env(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_UI_ENABLED": "true",
            # the UI's JavaScript calls this URL; its default is the standard port 4200
            "PREFECT_UI_API_URL": f"{base}/api",
        },
        drop=["PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH", *EPHEMERAL_SERVER_ENV],
    )
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", config.host]
    argv += ["--port", str(port)]
    return LocalServer(
        "prefect server", argv, f"{base}/api/health", base, home / "server.log", env, home, config
    )


def mlflow_ui(
    backend_store_uri: str, workdir: Path, config: ServerConfig = ServerConfig()
) -> LocalServer:
    """`mlflow ui` on a free loopback port, reading runs from `backend_store_uri`."""
    port = free_port(config.host)
    base = f"http://{config.host}:{port}"
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_store_uri]
    argv += ["--host", config.host, "--port", str(port), "--workers", "1"]
    return LocalServer(
        "mlflow ui", argv, f"{base}/health", base, workdir / "mlflow-ui.log", None, workdir, config
    )
