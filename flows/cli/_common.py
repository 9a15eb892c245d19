"""Small pieces every command group shares."""

from __future__ import annotations

import os

import typer


def quiet_env(startup_timeout_s: int = 120, **extra: str) -> None:
    """No analytics, no network: the defaults a laptop and CI need (set before Prefect,
    MLflow or great-expectations is imported; values already in the environment win).
    `extra` adds more defaults, e.g. PREFECT_LOGGING_LEVEL="WARNING" for benchmarks."""
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "TOKENIZERS_PARALLELISM": "false",
        # a loaded laptop can take more than Prefect's default 20 s to start the ephemeral API
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(startup_timeout_s),
        # A temporary API server started by this process (no PREFECT_API_URL) serves one run:
        # no automations to evaluate and no UI subscribed to its event stream, so those
        # services would only take CPU from the training (docs/PERFORMANCE.md). A real
        # server (PREFECT_API_URL) keeps its own settings.
        "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
        "PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED": "false",
        # Record task runs in batches (Prefect's default writes one transaction per state
        # event): about half the server's CPU per round; the UI sees a task run <= 1 s later,
        # and the server's shutdown flushes the rest.
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
        **extra,
    }.items():
        os.environ.setdefault(key, value)


def fail(message: str) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit(1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)
