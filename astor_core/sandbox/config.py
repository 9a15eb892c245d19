"""Sandbox settings: one dataclass, every field documented (params.yaml `sandbox:` maps here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from astor_core.sandbox.api import Limits

PRELOAD_MODULES: tuple[str, ...] = (
    "abc", "array", "bisect", "calendar", "cmath", "collections", "collections.abc", "copy",
    "dataclasses", "datetime", "decimal", "enum", "fractions", "functools", "hashlib", "heapq",
    "itertools", "json", "math", "numbers", "operator", "random", "re", "statistics", "string",
    "textwrap", "typing", "unicodedata", "gc", "inspect", "traceback",
)  # fmt: skip
"""Standard-library modules imported once by each fork server (fast, and snapshotted as real)."""

BLOCKED_MODULES: tuple[str, ...] = (
    "ctypes", "_ctypes", "cffi", "_cffi_backend", "multiprocessing", "_multiprocessing", "pty",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_testimportmultiple",
    "_testclinic", "_xxsubinterpreters", "_xxinterpchannels", "_xxtestfuzz", "_ctypes_test",
    "xxlimited", "xxlimited_35", "_imp", "_signal",
)  # fmt: skip
"""Top-level modules that untrusted code may not import (raw memory access, processes...)."""

MASKED_FILE_GLOBS: tuple[str, ...] = (
    "_ctypes*.so", "_cffi_backend*.so", "_test*.so", "_xx*.so", "xxlimited*.so",
)  # fmt: skip
"""Extension files replaced by /dev/null inside the sandbox, so no import path can load them."""


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox pool is built. Defaults are safe; `isolation=False` is for debugging only."""

    workers: int = 2
    """Fork servers (one bubblewrap sandbox each) that run jobs in parallel."""
    limits: Limits = field(default_factory=Limits)
    """Per-job limits used when a Job brings none."""
    bwrap_path: str = "/usr/bin/bwrap"
    """The bubblewrap binary (installed by scripts/setup.sh)."""
    isolation: bool = True
    """Run fork servers inside bubblewrap. False (debugging only) keeps rlimits, the audit hook
    and the result channel but shares the host's filesystem, network and pid space."""
    python: str = ""
    """Interpreter for the fork servers; empty means this interpreter's real executable."""
    uid_base: int = 1_000_000
    """First host uid used for job processes when running as root (one uid per worker)."""
    tmpfs_mb: int = 256
    """Size of the private /tmp inside each sandbox (job working directories live there)."""
    preload_modules: tuple[str, ...] = PRELOAD_MODULES
    """Modules each fork server imports once before forking jobs."""
    blocked_modules: tuple[str, ...] = BLOCKED_MODULES
    """Modules untrusted code may not import."""
    masked_file_globs: tuple[str, ...] = MASKED_FILE_GLOBS
    """Extension files hidden inside the sandbox (bound to /dev/null)."""
    response_grace_s: float = 10.0
    """Extra seconds the host waits beyond a job's wall limit before declaring its server dead."""
    spawn_timeout_s: float = 30.0
    """Seconds a new fork server has to report ready."""
    max_result_bytes: int = 8 * 1024 * 1024
    """Largest result-channel payload accepted from one job; more marks the job invalid."""
    max_value_chars: int = 1024 * 1024
    """Longest repr an eval check may return."""
    check_cache_size: int = 4096
    """Compiled (rewritten) checks kept per fork server."""
    batch_size: int = 8
    """Most jobs `run_many` sends to a worker in one request (each still gets its own process)."""
    result_pipe_bytes: int = 1024 * 1024
    """Capacity asked for the result pipe of each job, so frames wait there until it ends."""
    result_poll_s: float = 0.05
    """How often a fork server drains the result pipe of a running job, in seconds."""
    random_seed: int = 0
    """State of `random`'s global generator when each job starts (the same in every job, so a
    job's verdict does not depend on which fork it got)."""
    log_server_stderr: bool = False
    """Let fork servers write their own errors to this process's stderr (debugging)."""
