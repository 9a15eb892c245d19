"""flows.cli._common.quiet_env: the defaults every CLI command sets before any library loads."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
from flows.cli._common import quiet_env
quiet_env()
from datasets.utils import are_progress_bars_disabled
import transformers.utils.logging as tlog
print(tlog.is_progress_bar_enabled(), are_progress_bars_disabled())
"""


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PREFECT_"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_library_progress_bars_are_off_unless_the_user_turns_them_on() -> None:
    # rich progress of our own: transformers' per-checkpoint bars and datasets' map bars are off
    assert _probe() == ["False", "True"]
    # a value already in the environment wins
    assert _probe(HF_HUB_DISABLE_PROGRESS_BARS="0", HF_DATASETS_DISABLE_PROGRESS_BARS="0") == [
        "True",
        "False",
    ]
