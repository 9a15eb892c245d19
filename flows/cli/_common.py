"""Small pieces every command group shares."""

from __future__ import annotations

import os
import sys

import typer


def quiet_env(startup_timeout_s: int = 120, **extra: str) -> None:
    """No analytics, no network (flows.servers.QUIET_ENV), and the ephemeral API server's
    settings (flows.servers.EPHEMERAL_SERVER_ENV): the defaults a laptop and CI need, set
    before Prefect, MLflow or great-expectations is imported; values already in the
    environment win. `extra` adds more defaults, e.g. PREFECT_LOGGING_LEVEL="WARNING".

    The Hugging Face libraries' own tqdm bars (a "Writing model shards" bar at every
    checkpoint, dataset preprocessing bars in SFT) are off too: the commands draw their own
    rich progress, which those bars would break up; set HF_HUB_DISABLE_PROGRESS_BARS=0 or
    HF_DATASETS_DISABLE_PROGRESS_BARS=0 to see them again."""
    from flows.servers import EPHEMERAL_SERVER_ENV, QUIET_ENV

    for key, value in {
        **QUIET_ENV,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' bars follow huggingface_hub's switch
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        # a loaded laptop can take more than Prefect's default 20 s to start the ephemeral API
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(startup_timeout_s),
        **EPHEMERAL_SERVER_ENV,
        **extra,
    }.items():
        os.environ.setdefault(key, value)


def local_run_env() -> None:
    """What a command that runs a training flow in this process needs first: :func:`quiet_env`,
    then the temporary Prefect API server in the idle CPU class when no server URL is set
    (:func:`flows.servers.start_ephemeral_api`)."""
    quiet_env()
    from flows.servers import start_ephemeral_api

    start_ephemeral_api()


def fail(message: str) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit(1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


DEBUG = False
"""Set by `astor --debug`: user errors keep their traceback."""

USER_ERRORS: dict[str, int] = {
    "astor_core.config:ConfigError": 2,
    "astor_core.data.pools:PoolsMissing": 2,
    "astor_core.data.validation:PoolValidationError": 1,
    "astor_core.data.validation:PoolReadError": 1,
    "astor_core.data.adapters:SourceError": 1,
    "astor_core.sandbox.worker:SandboxUnavailable": 1,
    "astor_core.tasks.benchmarks:BenchmarkInputError": 1,
}
"""'module:Exception' -> exit code of the errors a user can fix (input, set-up), reported in
one line. Looked up only in modules already imported: an exception of a module never
imported cannot have been raised, and `astor --help` stays fast."""


def user_error_code(exc: BaseException) -> int | None:
    """The exit code of a user error, None for anything else (a bug keeps its traceback)."""
    for path, code in USER_ERRORS.items():
        module, name = path.split(":")
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return code
    return None


def report_user_error(exc: BaseException) -> None:
    """Print a user error as one `error: ...` line and exit with its code (unless --debug);
    return for anything else."""
    code = user_error_code(exc)
    if code is None or DEBUG:
        return
    message = " ".join(str(exc).split())
    typer.echo(f"error: {message} (--debug shows the traceback)", err=True)
    raise SystemExit(code) from None
