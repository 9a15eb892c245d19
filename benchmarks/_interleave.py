"""Run two processes' rounds in turns, each frozen (SIGSTOP) while the other runs.

Why: on a shared VM the speed of a whole run drifts by 10-30% from one minute to the next,
so comparing round k of one run with round k of another run a minute later measures the
drift, not the difference. Running the two sides' rounds in turns puts the two rounds of a
pair seconds apart. Each side freezes itself *and every process it started* (e.g. Prefect's
API server, sandbox workers) at the end of each round, so work one side leaves in the
background (events still being written, an asynchronous log) waits for that side's next
turn: it is never charged to the other side, and it still competes with its own side's next
round, as it would in a normal run.

Side (in the measured process): ``barrier = RoundBarrier()`` and call ``barrier()`` at the
end of every round; ``barrier.rounds`` then holds the active wall time of rounds 2..N and
``barrier.pauses`` the frozen intervals (wall-clock pairs). The process must be a child of
the coordinator.

Coordinator: ``Interleaver(argvs)`` starts each side, lets it run to the end of its first
round (start-up and round 1 run alone), then hands out one round at a time in the order
``order(k)`` gives, and finally lets each side finish alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil


def _signal_all(procs: Sequence[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


class RoundBarrier:
    """Called at the end of each round in a measured process: freezes the process and its
    descendants until the coordinator resumes it, and records the active time per round."""

    def __init__(self, on_round_end: Callable[[], None] | None = None) -> None:
        self.rounds: list[float] = []
        """Active wall time of each round after the first (seconds)."""
        self.ends: list[float] = []
        """Wall-clock time (time.time) of each round end, round 1 included."""
        self.pauses: list[tuple[float, float]] = []
        """(frozen at, resumed at), wall clock (time.time), one per round end."""
        self.on_round_end = on_round_end
        """Called at each round end before freezing (outside the timed rounds)."""
        self._active_since: float | None = None

    def __call__(self) -> None:
        end = time.time()
        self.ends.append(end)
        if self._active_since is not None:
            self.rounds.append(end - self._active_since)
        if self.on_round_end is not None:
            self.on_round_end()
        frozen_at = time.time()
        children = psutil.Process().children(recursive=True)
        _signal_all(children, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)  # all threads stop here; SIGCONT resumes them
        resumed = time.time()
        _signal_all(children, signal.SIGCONT)
        self.pauses.append((frozen_at, resumed))
        self._active_since = resumed


def overlap(lo: float, hi: float, intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of the parts of `intervals` inside [lo, hi].

    >>> overlap(0.0, 10.0, [(-1.0, 1.0), (4.0, 5.0), (9.0, 12.0)])
    3.0
    """
    return sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in intervals)


class SideFailed(RuntimeError):
    """A measured process exited with an error or was killed."""


class Interleaver:
    """Start the sides, then resume one side at a time for one round each."""

    def __init__(self, argvs: Sequence[Sequence[str]], logs: Sequence[Path]) -> None:
        self.argvs = [list(a) for a in argvs]
        """Command line of each side."""
        self.logs = list(logs)
        """Where each side's stdout and stderr go (a pipe could fill up and block it)."""
        self.procs: list[subprocess.Popen] = []
        self.finished: list[bool] = []

    def _wait(self, i: int) -> bool:
        """Wait until side i freezes at a round end (True) or exits with 0 (False)."""
        proc = self.procs[i]
        while True:
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            if os.WIFSTOPPED(status):
                return True
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code
                self.finished[i] = True
                if code != 0:
                    tail = self.logs[i].read_text(errors="replace")[-4000:]
                    raise SideFailed(f"side {i} ({' '.join(self.argvs[i])}) exited {code}:\n{tail}")
                return False

    def start(self) -> None:
        """Start each side in turn and let it run alone to the end of its first round."""
        for argv, log in zip(self.argvs, self.logs, strict=True):
            with log.open("w") as out:
                self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
            self.finished.append(False)
            if not self._wait(len(self.procs) - 1):
                raise SideFailed(f"side {len(self.procs) - 1} finished before its first round end")

    def turn(self, i: int) -> bool:
        """Resume side i for one round (or its finish); True while it has rounds left."""
        if self.finished[i]:
            return False
        os.kill(self.procs[i].pid, signal.SIGCONT)
        return self._wait(i)

    def run(self, order: Callable[[int], Sequence[int]]) -> None:
        """Rounds 2, 3, ... in turns (`order(k)`: the sides' order in round k) until every
        side has frozen for the last time; then each side finishes alone."""
        self.start()
        k = 2
        while True:
            alive = [self.turn(i) for i in order(k)]
            if not all(alive):
                break
            k += 1
        for i in range(len(self.procs)):
            while self.turn(i):
                pass

    def kill(self) -> None:
        """Kill every side and what it started (after an error)."""
        for proc in self.procs:
            if proc.returncode is not None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                tree = psutil.Process(proc.pid)
                family = [tree, *tree.children(recursive=True)]
                _signal_all(family, signal.SIGKILL)
                _signal_all(family, signal.SIGCONT)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
