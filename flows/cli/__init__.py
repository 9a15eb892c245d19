"""The `astor` command line. Each sub-module owns one command group and imports its heavy
dependencies inside the command functions, so `astor --help` stays fast."""

from __future__ import annotations

import typer

from flows.cli import bench, model, pools, run, score

app = typer.Typer(
    name="astor",
    help="ASTOR: utility-guided multi-task RL for code LLMs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(score.app, name="score")
app.add_typer(pools.app, name="pools")
app.add_typer(bench.app, name="bench")
app.add_typer(model.app, name="model")
model.register(app)
run.register(app)
