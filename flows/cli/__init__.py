"""The `astor` command line. Each sub-module owns one command group and imports its heavy
dependencies inside the command functions, so `astor --help` stays fast.

A user error (a bad config value, missing pools, no sandbox...) ends any command with one
line on stderr and a non-zero exit, no traceback; `astor --debug ...` shows the traceback.
"""

from __future__ import annotations

from typing import Any

import typer

from flows.cli import bench, model, pools, run, score
from flows.cli._common import report_user_error


class _App(typer.Typer):
    """The root app: user errors become one line (flows.cli._common.USER_ERRORS)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            report_user_error(exc)
            raise


app = _App(
    name="astor",
    help="ASTOR: utility-guided multi-task RL for code LLMs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="show the traceback of a user error"),
) -> None:
    """ASTOR: utility-guided multi-task RL for code LLMs."""
    from flows.cli import _common

    _common.DEBUG = debug


app.add_typer(score.app, name="score")
app.add_typer(pools.app, name="pools")
app.add_typer(bench.app, name="bench")
app.add_typer(model.app, name="model")
model.register(app)
run.register(app)
