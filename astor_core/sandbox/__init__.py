"""Isolated execution of untrusted Python (bubblewrap namespaces + rlimits + a warm fork pool).

See docs/SANDBOX.md for the design, the threat model and the residual risks.
"""

from astor_core.sandbox.api import Check, Job, Limits, Outcome, Status
from astor_core.sandbox.config import SandboxConfig
from astor_core.sandbox.pool import Sandbox, default_sandbox, shared_sandbox
from astor_core.sandbox.worker import SandboxUnavailable

__all__ = [
    "Check",
    "Job",
    "Limits",
    "Outcome",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "Status",
    "default_sandbox",
    "shared_sandbox",
]
