"""One warm fork server of the sandbox pool and the host end of its result channel.

Each worker is one ``bwrap ... python -I -S _harness.py`` process started once; a job costs a
``fork`` inside it, not an interpreter start. The host sends each job with a fresh random key
and accepts only result frames authenticated with it (keyed BLAKE2b; the key is never written
anywhere the job can read), in the exact order the harness writes them; anything else marks
the job ``invalid``. Verdicts count only for a job that ended normally (exit 0 after its last
frame). They never come from exit codes or output alone.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import json
import logging
import os
import pickle
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from astor_core.sandbox.api import Job, Limits, Outcome
from astor_core.sandbox.bwrap import HARNESS_DIR, bwrap_argv, uid_for
from astor_core.sandbox.config import SandboxConfig

log = logging.getLogger(__name__)

FILE_TOO_LARGE = b"OSError: [Errno %d]" % errno.EFBIG
"""How the harness describes a write refused by RLIMIT_FSIZE (it maps to output_limit)."""


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be started on this machine (e.g. bubblewrap is missing)."""


def _write_msg(fd: int, obj: object) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(struct.pack("<Q", len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def _read_msg(fd: int, timeout_s: float) -> object:
    """Read one length-prefixed pickle; raises TimeoutError or EOFError."""
    import time

    deadline = time.monotonic() + timeout_s
    buf = bytearray()
    need = 8
    length = None
    while len(buf) < need:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("sandbox server did not answer in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, need - len(buf))  # never past this message: the next may follow
        if not chunk:
            raise EOFError("sandbox server exited")
        buf += chunk
        if length is None and len(buf) >= 8:
            length = struct.unpack("<Q", buf[:8])[0]
            need = 8 + length
    return pickle.loads(bytes(buf[8 : 8 + (length or 0)]))


class _Worker:
    """One fork server. Used by one thread at a time (the pool hands workers out)."""

    def __init__(self, config: SandboxConfig, slot: int, spawner: ThreadPoolExecutor):
        self.config = config
        self.slot = slot
        self.spawner = spawner
        self.proc: subprocess.Popen | None = None
        self.host_dir: str | None = None
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------
    def _settings(self, privileged: bool) -> dict:
        config = self.config
        if config.isolation:
            base = "/tmp"
            uid = uid_for(config, self.slot) if privileged else -1
        else:
            self.host_dir = tempfile.mkdtemp(prefix="astor-sandbox-")
            os.chmod(self.host_dir, 0o755)
            base = self.host_dir
            uid = uid_for(config, self.slot) if privileged else -1
        return {
            "uid": uid,
            "nproc_base": 0 if uid >= 0 else 2,
            "pidns": config.isolation,
            "job_dir": f"{base}/job",
            "out_path": f"{base}/out/output",
            "preload": list(config.preload_modules),
            "blocked_modules": list(config.blocked_modules),
            "max_result_bytes": config.max_result_bytes,
            "max_value_chars": config.max_value_chars,
            "cache_size": config.check_cache_size,
            "result_pipe_bytes": config.result_pipe_bytes,
            "result_poll_s": config.result_poll_s,
            "random_seed": config.random_seed,
        }

    def _spawn(self) -> None:
        config = self.config
        python = config.python or os.path.realpath(sys.executable)
        privileged = os.geteuid() == 0
        settings = self._settings(privileged)
        if config.isolation:
            argv = bwrap_argv(config, python, settings, privileged)
        else:
            argv = [python, "-I", "-S", str(HARNESS_DIR / "_harness.py"), json.dumps(settings)]
        stderr = None if config.log_server_stderr else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        self.proc = proc
        try:
            hello = _read_msg(proc.stdout.fileno(), config.spawn_timeout_s)
        except (TimeoutError, EOFError) as exc:
            self.kill()
            raise SandboxUnavailable(
                f"sandbox worker {self.slot} failed to start ({exc}); command: {argv[:6]}... "
                "Run with SandboxConfig(log_server_stderr=True) to see the server's error."
            ) from exc
        if not isinstance(hello, dict) or "ready" not in hello:
            self.kill()
            raise SandboxUnavailable(f"sandbox worker {self.slot} sent {hello!r} instead of ready")

    def start(self) -> None:
        # bwrap's --die-with-parent is tied to the thread that forks it: always spawn from
        # the pool's long-lived spawner thread, never from a short-lived caller thread.
        self.spawner.submit(self._spawn).result()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if self.host_dir:
            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None

    def close(self) -> None:
        proc = self.proc
        if proc is not None:
            try:
                proc.stdin.close()  # the server exits on EOF
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- jobs --------------------------------------------------------------------------
    def run(self, job: Job, limits: Limits) -> Outcome:
        return self.run_batch([(job, limits)])[0]

    def run_batch(self, items: Sequence[tuple[Job, Limits]]) -> list[Outcome]:
        """Run jobs one after another on this server, sent as one request (one fork each).

        If the server is lost, the job in flight is `crashed` and the rest run on a new one.
        """
        if not self.alive():
            self.kill()
            self.restarts += 1
            self.start()
        nonces = [secrets.token_bytes(32) for _ in items]
        request = {
            "jobs": [
                {
                    "key": nonce,
                    "program": job.program,
                    "setup": job.setup,
                    "trusted": job.trusted,
                    "checks": [(c.code, c.kind) for c in job.checks],
                    "limits": _limits_dict(limits),
                }
                for nonce, (job, limits) in zip(nonces, items, strict=True)
            ]
        }
        proc = self.proc
        assert proc is not None
        outcomes: list[Outcome] = []
        try:
            _write_msg(proc.stdin.fileno(), request)
            for nonce, (job, limits) in zip(nonces, items, strict=True):
                timeout = limits.wall_s + self.config.response_grace_s
                answer = _read_msg(proc.stdout.fileno(), timeout)
                assert isinstance(answer, dict)
                if answer.get("kill_rounds", 1) < 0:
                    # something survived SIGKILL rounds: never reuse this sandbox
                    outcomes.append(parse_answer(answer, nonce, job, limits))
                    self.kill()
                    return outcomes + self._rerun(items[len(outcomes) :])
                outcomes.append(parse_answer(answer, nonce, job, limits))
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError) as exc:
            self.kill()  # respawned lazily by the next job
            job = items[len(outcomes)][0]
            n = len(job.checks)
            outcomes.append(
                Outcome(
                    status="crashed",
                    passed=(False,) * n,
                    values=(None,) * n,
                    detail=f"sandbox server lost ({type(exc).__name__}: {exc}); it will be restarted",
                    details=("",) * n,
                )
            )
            return outcomes + self._rerun(items[len(outcomes) :])
        return outcomes

    def _rerun(self, items: Sequence[tuple[Job, Limits]]) -> list[Outcome]:
        return self.run_batch(items) if items else []


@functools.lru_cache(maxsize=64)
def _limits_dict(limits: Limits) -> dict:
    return asdict(limits)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def frame_tag(key: bytes, head: bytes, payload: bytes) -> bytes:
    """The tag the harness puts on a frame (`_harness.frame`): keyed BLAKE2b, 16 bytes, hex.

    >>> frame_tag(b"k", b"C 0 1 ", b"1")
    b'1f6d2be0ff433f7e8db7d53d34f8314a'
    """
    m = hashlib.blake2b(key=key, digest_size=16)
    m.update(head)
    m.update(payload)
    return m.hexdigest().encode("ascii")


def parse_answer(answer: dict, key: bytes, job: Job, limits: Limits) -> Outcome:
    """Turn the server's raw answer into an Outcome, trusting only frames authenticated with
    the job's key, in order; checks count as passed only when the job ended normally."""
    n = len(job.checks)
    frames: bytes = answer["frames"]
    program: bytes | None = None
    results: list[bytes] = []
    done: bytes | None = None
    tampered = bool(answer["overflow"])
    pos = 0
    while pos < len(frames) and not tampered:
        nl = frames.find(b"\n", pos, pos + 128)
        head = frames[pos:nl].split(b" ") if nl >= 0 else []
        if len(head) != 4 or not head[1].isdigit() or not head[2].isdigit():
            tampered = True
            break
        kind, index, length = head[0], int(head[1]), int(head[2])
        payload = frames[nl + 1 : nl + 1 + length]
        pos = nl + 1 + length
        signed = b"%s %s %s " % (head[0], head[1], head[2])
        authentic = len(payload) == length and hmac.compare_digest(
            head[3], frame_tag(key, signed, payload)
        )
        if not authentic or done is not None:
            tampered = True
        elif kind == b"P" and program is None and index == 0:
            program = payload
        elif kind == b"C" and program is not None and index == len(results) and index < n:
            results.append(payload)
        elif kind == b"D" and program is not None and index == 0:
            done = payload
        else:
            tampered = True
    exit_code = answer["exit_code"]
    over_output = (
        answer["output_size"] > limits.max_output_bytes
        or exit_code == -signal.SIGXFSZ
        # a write refused by RLIMIT_FSIZE (output, or a file in the job directory) that
        # surfaced as an exception, in the program or in a check: the output limit was hit
        or (program or b"").startswith(b"error:" + FILE_TOO_LARGE)
        or any(r.startswith(b"0" + FILE_TOO_LARGE) for r in results)
    )
    over_cpu = answer["cpu_s"] >= limits.cpu_s or exit_code == -signal.SIGXCPU
    stdout = answer["output"].decode("utf-8", "replace")
    base = {"duration_s": answer["duration_s"], "stdout": stdout}
    if tampered:
        return Outcome(
            "invalid",
            (False,) * n,
            (None,) * n,
            "result channel tampered with",
            ("invalid",) * n,
            **base,
        )
    passed = [False] * n
    values: list[str | None] = [None] * n
    details = [""] * n
    for i, payload in enumerate(results):
        ok = payload[:1] == b"1"
        passed[i] = ok
        text = payload[1:].decode("utf-8", "replace")
        if ok and job.checks[i].kind == "eval":
            values[i] = text
        elif not ok:
            details[i] = text
    for i in range(len(results), n):
        details[i] = "not run"
    if over_output:
        status, detail = "output_limit", "output limit hit"
    elif program is None:
        if answer["timed_out"] or over_cpu:
            status, detail = "timeout", "time limit hit before the program finished"
        else:
            why = _signal_name(exit_code) if exit_code < 0 else f"exit code {exit_code}"
            status, detail = "crashed", f"process ended without a verdict ({why})"
    elif program.startswith(b"syntax:"):
        status, detail = "syntax_error", program[7:].decode("utf-8", "replace")
    elif program.startswith(b"setup:"):
        status, detail = "error", "setup failed: " + program[6:].decode("utf-8", "replace")
    elif program.startswith(b"error:"):
        detail = program[6:].decode("utf-8", "replace")
        status = "memory" if detail.startswith("MemoryError") else "error"
    elif (
        done is not None
        and len(results) == n
        and exit_code == 0
        and not answer["timed_out"]
        and not over_cpu
    ):
        status = "ok"
        detail = next((d for d in details if d), "")
    elif answer["timed_out"] or over_cpu:
        status, detail = "timeout", f"time limit hit during check {len(results)}"
    else:
        why = _signal_name(exit_code) if exit_code < 0 else f"exit code {exit_code}"
        status, detail = "crashed", f"process ended during check {len(results)} ({why})"
    if status != "ok":  # a verdict counts only when the job ended normally
        passed = [False] * n
        values = [None] * n
    if answer.get("server_error"):
        detail = f"sandbox server could not run the job ({answer['server_error']})"
    if done:
        detail = (detail + " | blocked: " + done.decode("utf-8", "replace")).strip(" |")
    return Outcome(status, tuple(passed), tuple(values), detail, tuple(details), **base)
