"""Host side of the sandbox: a pool of warm fork servers (astor_core.sandbox.worker), each
in its own bubblewrap sandbox (astor_core.sandbox.bwrap), and the process's shared pools.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from queue import Queue

from astor_core.sandbox.api import Job, Limits, Outcome
from astor_core.sandbox.config import SandboxConfig
from astor_core.sandbox.worker import SandboxUnavailable, _Worker

log = logging.getLogger(__name__)


class Sandbox:
    """A pool of warm, isolated fork servers that run untrusted Python jobs.

    >>> with Sandbox(workers=1) as box:  # doctest: +SKIP
    ...     box.run(Job("def f(x): return x + 1", (Check("assert f(1) == 2"),))).all_passed
    True
    """

    def __init__(
        self,
        limits: Limits = Limits(),
        workers: int = 2,
        config: SandboxConfig | None = None,
    ):
        config = replace(config or SandboxConfig(), limits=limits, workers=workers)
        if workers < 1:
            raise ValueError(f"Sandbox needs at least one worker, got workers={workers}")
        if config.isolation:
            if not (os.path.isfile(config.bwrap_path) and os.access(config.bwrap_path, os.X_OK)):
                raise SandboxUnavailable(
                    f"bubblewrap not found at {config.bwrap_path!r}: the sandbox refuses to run "
                    "untrusted code without isolation. Run scripts/setup.sh (it installs the "
                    "'bubblewrap' package) or set SandboxConfig(bwrap_path=...)."
                )
        else:
            msg = (
                "SANDBOX ISOLATION IS OFF (SandboxConfig(isolation=False)): untrusted code shares "
                "this machine's filesystem, network and processes. Use for debugging only."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        self.config = config
        self.limits = limits
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="astor-sandbox-spawn")
        self._workers = [_Worker(config, slot, self._spawner) for slot in range(workers)]
        self._idle: Queue[_Worker] = Queue()
        self._closed = False
        self._lock = threading.Lock()
        try:
            for worker in self._workers:
                worker.start()
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="astor-sandbox")

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (a closed pool runs nothing)."""
        return self._closed

    @property
    def restarts(self) -> int:
        """Fork servers respawned after dying (killed, or poisoned by a job)."""
        return sum(w.restarts for w in self._workers)

    def server_pids(self) -> list[int]:
        """Host pids of the live bubblewrap processes (for tests and monitoring)."""
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def run(self, job: Job) -> Outcome:
        """Run one job on the next free worker."""
        if self._closed:
            raise RuntimeError("Sandbox is closed")
        worker = self._idle.get()
        try:
            return worker.run(job, job.limits or self.limits)
        finally:
            self._idle.put(worker)

    def run_many(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run jobs in parallel over the workers; results are in the order of `jobs`.

        Jobs go out in batches (one request per batch, still one fresh process per job) that
        idle workers take in turn, shrinking towards single jobs at the end, so a slow job
        never holds up the others.
        """
        if self._closed:
            raise RuntimeError("Sandbox is closed")
        if len(jobs) <= 1:
            return [self.run(job) for job in jobs]
        items = [(job, job.limits or self.limits) for job in jobs]
        results: list[Outcome | None] = [None] * len(items)
        cursor = [0]
        take_lock = threading.Lock()

        def take() -> range:
            # guided self-scheduling: big batches first, single jobs at the tail, so that a
            # slow job never has a queue of others stuck behind it on its worker
            with take_lock:
                start = cursor[0]
                left = len(items) - start
                size = max(1, min(self.config.batch_size, left // (2 * self.workers)))
                cursor[0] = start + min(size, left)
                return range(start, cursor[0])

        def drain() -> None:
            worker = self._idle.get()
            try:
                while span := take():
                    outs = worker.run_batch([items[i] for i in span])
                    for i, out in zip(span, outs, strict=True):
                        results[i] = out
            finally:
                self._idle.put(worker)

        pending = [self._executor.submit(drain) for _ in range(min(self.workers, len(items)))]
        for future in pending:
            future.result()
        assert all(out is not None for out in results)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop every fork server (nothing is left running)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True)
        for worker in self._workers:
            worker.close()
        self._spawner.shutdown(wait=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[str, Sandbox] = {}
_shared_lock = threading.Lock()


def shared_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """The process's pool for one sandbox config (default settings when None): built on first
    use, rebuilt if closed, closed at exit. Every reward worker process, local or Dask, builds
    its own."""
    config = config or SandboxConfig()
    key = json.dumps(asdict(config), sort_keys=True, default=str)
    with _shared_lock:
        box = _shared.get(key)
        if box is None or box.closed:
            box = _shared[key] = Sandbox(config.limits, config.workers, config)
            atexit.register(box.close)
        return box


def default_sandbox() -> Sandbox:
    """The process-wide sandbox with default settings (:func:`shared_sandbox`)."""
    return shared_sandbox()
