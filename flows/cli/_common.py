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
        **extra,
    }.items():
        os.environ.setdefault(key, value)


def fail(message: str) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit(1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)
