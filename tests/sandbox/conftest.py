"""Shared fixtures for the sandbox tests: one warm pool per module, host-side leak probes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astor_core.sandbox import Limits, Sandbox

HACK_LIMITS = Limits(wall_s=1.5, cpu_s=1.0, memory_mb=256, max_output_bytes=16 * 1024)
"""Tight limits so that pathological jobs end fast in tests."""


def sandbox_uid_range() -> range:
    """Host uids that job processes of this test process may use (see astor_core.sandbox.bwrap.uid_for)."""
    base = 1_000_000 + (os.getpid() % (1 << 20)) * 64
    return range(base, base + 64)


def procs_with_uids(uids: range) -> list[int]:
    """Pids of host processes whose real uid is in `uids` (psutil-free, via /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) in uids:
                    found.append(int(entry.name))
                break
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def box():
    with Sandbox(limits=HACK_LIMITS, workers=2) as sandbox:
        yield sandbox
