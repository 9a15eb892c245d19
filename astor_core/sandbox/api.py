"""The sandbox's public contract: what a verifier asks for and what it gets back.

A verifier never looks at exit codes or at what untrusted code prints: it reads
`Outcome.passed` / `Outcome.values`, which the trusted harness fills only for checks it
positively confirmed, in a job that ended normally (status "ok").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal[
    "ok",  # the program ran and every check was evaluated (each may still have failed)
    "syntax_error",  # the program does not parse
    "error",  # the program raised at top level
    "timeout",  # wall or CPU time limit hit
    "memory",  # memory limit hit
    "output_limit",  # printed (or wrote a file of) more than max_output_bytes
    "crashed",  # the process died (signal, segfault, os._exit, killed parent...) before confirming
    "invalid",  # a check result that the harness could not confirm (e.g. non-plain value)
]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one job."""

    wall_s: float = 4.0
    """Wall-clock limit for the whole job (program plus all checks), in seconds."""
    cpu_s: float = 4.0
    """CPU-time limit (RLIMIT_CPU), in seconds."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS) in MiB."""
    max_procs: int = 1
    """Processes the job may have at once (enforced; forks beyond it fail)."""
    max_open_files: int = 32
    """RLIMIT_NOFILE for the job."""
    max_output_bytes: int = 64 * 1024
    """Bytes of stdout+stderr kept; more ends the job with status output_limit."""


@dataclass(frozen=True)
class Check:
    """One trusted check, run in the program's namespace after the program.

    kind="exec": `code` is statements (e.g. `assert f(1) == 2`); confirmed passed when it
    completes without exception. kind="eval": `code` is an expression whose value must be
    a plain built-in value (int, float, complex, str, bytes, bool, None, and list, tuple,
    dict, set, frozenset of those); its repr comes back in Outcome.values.
    """

    code: str
    kind: Literal["exec", "eval"] = "exec"


@dataclass(frozen=True)
class Job:
    """A program from an untrusted source plus trusted checks."""

    program: str
    """Untrusted source (e.g. a model completion), executed first in a fresh namespace."""
    checks: tuple[Check, ...] = ()
    """Trusted checks, each confirmed separately by the harness."""
    setup: str = ""
    """Trusted code executed in the namespace before the program (e.g. imports)."""
    limits: Limits | None = None
    """Per-job limits; None takes the sandbox's defaults."""
    trusted: str = ""
    """Trusted definitions the checks read by name (a prompt's helpers and imports, e.g.
    HumanEval/32's `poly`): run afresh, rewritten like a check, in their own namespace before
    each check, and bound over the program's names of the same name in the check's namespace,
    so a program that redefines them changes nothing the checks see."""


@dataclass(frozen=True)
class Outcome:
    """What the harness confirmed about one job."""

    status: Status
    passed: tuple[bool, ...] = ()
    """One entry per check: True only when the harness confirmed that check passed and the
    job ended normally (any other status leaves every entry False)."""
    values: tuple[str | None, ...] = ()
    """One entry per check: repr of the plain value of an eval check, else None."""
    detail: str = ""
    """Short human-readable reason (exception type and message, signal, limit hit)."""
    details: tuple[str, ...] = ()
    """One entry per check: why it failed ("" when it passed or never ran)."""
    duration_s: float = 0.0
    stdout: str = field(default="", repr=False)
    """The first max_output_bytes of output, for debugging only; never used for verdicts."""

    @property
    def all_passed(self) -> bool:
        return self.status == "ok" and bool(self.passed) and all(self.passed)
