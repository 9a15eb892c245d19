"""flows.demo: the demo flow's tasks."""

from __future__ import annotations

import dill.detect
from prefect import flow, task

from flows.demo import sft_warm_start

MARKER = 12345


def _uses_a_global() -> int:
    return MARKER


@task
def _inherits_log_prints() -> list[str]:
    return sorted(dill.detect.nestedglobals(_uses_a_global))


@task(log_prints=False)
def _no_log_prints() -> list[str]:
    return sorted(dill.detect.nestedglobals(_uses_a_global))


@flow(log_prints=True)
def _printing_flow() -> tuple[list[str], list[str]]:
    return _inherits_log_prints(), _no_log_prints()


def test_sft_task_leaves_dill_its_print_capture(prefect_harness) -> None:
    # the mechanism: under a log_prints flow, dill (datasets' fingerprinting, used by TRL's
    # dataset.map in SFT) loses the dis.dis print-out it reads a function's globals from
    inherited, off = _printing_flow()
    assert inherited == []
    assert off == ["MARKER"]
    # so the demo's SFT task, which runs TRL's SFTTrainer inside the log_prints demo flow,
    # turns print capture off
    assert sft_warm_start.log_prints is False
