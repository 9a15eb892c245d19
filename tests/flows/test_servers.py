"""flows/servers.py: the temporary API server runs in the background CPU class."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.servers import idle_cpu_class, start_ephemeral_api

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling class")

THREADS = """
import sys, threading, time
def spin(): time.sleep(600)
for _ in range(3): threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()  # then one more thread, created after the class was set
threading.Thread(target=spin, daemon=True).start()
time.sleep(0.2)
print("more", flush=True)
time.sleep(600)
"""


def _classes(pid: int) -> list[int]:
    return [os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")]


def test_every_thread_moves_to_sched_idle_and_new_threads_inherit_it() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", THREADS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        assert set(_classes(child.pid)) == {os.SCHED_OTHER}
        assert idle_cpu_class(child.pid) == 4
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "more"
        classes = _classes(child.pid)
        assert len(classes) == 5 and set(classes) == {os.SCHED_IDLE}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller keeps its own class
    finally:
        child.kill()
        child.wait()


def test_a_configured_server_is_left_alone() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert start_ephemeral_api() is None


@pytest.mark.slow  # ~40 s: a fresh server's database migrations
@pytest.mark.integration
def test_prefects_clients_use_the_idle_ephemeral_server(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os
        from flows.cli._common import quiet_env
        quiet_env(startup_timeout_s=180)
        from flows.servers import start_ephemeral_api
        pid = start_ephemeral_api()
        classes = {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}
        assert classes == {os.SCHED_IDLE}, classes
        from prefect import flow, get_client
        from prefect.server.api.server import SubprocessASGIServer

        @flow
        def hello() -> int:
            return 1

        assert hello() == 1
        with get_client(sync_client=True) as client:
            assert str(client.api_url).rstrip("/") == SubprocessASGIServer().api_url
            assert SubprocessASGIServer().server_process.pid == pid  # no second server
            assert len(client.read_flow_runs()) == 1
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_sigterm_becomes_a_normal_exit_that_runs_exit_hooks() -> None:
    script = textwrap.dedent(
        """
        import atexit, os, signal, time
        from flows.servers import _exit_cleanly_on_sigterm
        _exit_cleanly_on_sigterm()
        atexit.register(lambda: print("exit hooks ran", flush=True))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 128 + 15
    assert out.stdout.strip() == "exit hooks ran"


@pytest.mark.slow  # ~40 s: a fresh server's database migrations
@pytest.mark.integration
def test_a_terminated_run_leaves_no_api_server_behind(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time
        from flows.cli._common import quiet_env
        quiet_env(startup_timeout_s=180)
        from flows.servers import start_ephemeral_api
        print(start_ephemeral_api(), flush=True)
        from prefect import flow

        @flow
        def sleeper() -> None:
            print("running", flush=True)
            time.sleep(120)

        sleeper()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    server = 0
    try:
        server = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + 15
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{server}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{server}"), "the API server outlived the run"
    finally:
        proc.kill()
        if server:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)
