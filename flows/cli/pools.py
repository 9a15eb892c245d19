"""`astor pools ...` commands: build, validate and count the prompt pools.

Heavy imports (pyarrow, GX, the verifiers) happen inside the command functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Build, validate and count the prompt pools.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="params.yaml whose `data:` section configures the pools."),
]


def _config(path: Path | None):  # noqa: ANN202 - DataConfig imported lazily
    from astor_core.data.config import load_data_config

    if path is None and Path("params.yaml").is_file():
        path = Path("params.yaml")
    try:
        return load_data_config(path)
    except (OSError, ValueError, TypeError) as exc:
        typer.secho(f"error: bad config {path}: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


@app.command()
def build(config: ConfigOpt = None) -> None:
    """Build the default pools (synthetic) and the real-source pools, atomically."""
    import time

    from rich.console import Console

    from astor_core.data.adapters import SourceError
    from astor_core.data.build import build_pools

    cfg = _config(config)
    start = time.perf_counter()
    try:
        result = build_pools(cfg)
    except (SourceError, RuntimeError, ValueError, OSError) as exc:
        typer.secho(
            f"error: pool build failed, previous pools left untouched: {exc}", err=True, fg="red"
        )
        raise typer.Exit(1) from None
    default = result.stats["default"]
    real = ", ".join(f"{k} {v['count']}" for k, v in result.stats["real"].items()) or "none"
    Console().print(
        f"built {result.pools_dir}: train {default['train']['count']}, eval {default['eval']['count']}, "
        f"real {real} in {time.perf_counter() - start:.1f} s; stats -> {result.stats_path}"
    )


@app.command()
def validate(
    path: Annotated[
        Path | None, typer.Argument(help="A pool parquet file or a pools folder.")
    ] = None,
    config: ConfigOpt = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    docs_dir: Annotated[
        Path | None, typer.Option(help="GX data docs folder (overrides config).")
    ] = None,
    self_check: Annotated[
        int | None, typer.Option(help="References per task run through the verifiers.")
    ] = None,
) -> None:
    """Validate pools with the GX suite and the reference self-check; non-zero exit on failure."""
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from astor_core.data.validation import PoolReadError, validate_path

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    cfg = _config(config)
    vcfg = cfg.validation
    if docs_dir is not None:
        vcfg = dataclasses.replace(vcfg, docs_dir=str(docs_dir))
    if self_check is not None:
        vcfg = dataclasses.replace(vcfg, self_check_per_task=self_check)
    target = path or Path(cfg.pools_dir)
    console = Console(width=160)
    try:
        result = validate_path(target, vcfg)
    except PoolReadError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(result.to_json() + "\n", encoding="utf-8")
    rows = ", ".join(f"{k} {v}" for k, v in result.pools.items())
    if result.success:
        checks = ", ".join(
            f"{k} {v['passed']}/{v['checked']}" for k, v in result.self_check.items()
        )
        console.print(f"[green]pools valid[/green] ({rows}); reference self-check {checks}")
        return
    table = Table(title=f"pool validation failed: {target}")
    for col in ("pool", "rule", "expectation", "column", "rows", "example prompt_ids", "detail"):
        table.add_column(col, overflow="fold")
    for f in result.failures:
        table.add_row(
            f.pool, f.rule, f.expectation, f.column, str(f.count), ", ".join(f.examples), f.detail
        )
    console.print(table)
    if result.docs_index:
        console.print(f"GX data docs: {result.docs_index}")
    raise typer.Exit(1)


@app.command()
def stats(
    config: ConfigOpt = None,
    pools_dir: Annotated[
        Path | None, typer.Option(help="Pools folder (default from config).")
    ] = None,
) -> None:
    """Counts per task, split and difficulty (default pools) and per real source."""
    from rich.console import Console
    from rich.table import Table

    from astor_core import TASKS
    from astor_core.data.build import pool_stats
    from astor_core.data.pools import pool_paths, real_pool_paths
    from astor_core.data.validation import read_pool

    cfg = _config(config)
    root = pools_dir or Path(cfg.pools_dir)
    files = list(pool_paths(root).values())
    if not all(f.is_file() for f in files):
        typer.secho(f"error: no pools under {root}; run `astor pools build`", err=True, fg="red")
        raise typer.Exit(1)
    default = [r for f in files for r in read_pool(f)[0].to_dict("records")]
    real = {p.stem: read_pool(p)[0].to_dict("records") for p in real_pool_paths(root)}
    s = pool_stats(default, real)
    console = Console(width=160)
    table = Table(title=f"default pools ({root})")
    for col in ("task", "split", "total", *[f"d{d}" for d in range(5)], "mean ref chars"):
        table.add_column(col, justify="left" if col in ("task", "split") else "right")
    for task in TASKS:
        for split in ("train", "eval"):
            t = s["default"][split]["tasks"][task]
            table.add_row(
                task,
                split,
                str(t["count"]),
                *[str(t["by_difficulty"][str(d)]) for d in range(5)],
                str(t["mean_reference_chars"]),
            )
    console.print(table)
    if real:
        rtable = Table(title="real-source pools")
        for col in ("source", "task", "train", "eval", "total"):
            rtable.add_column(col, justify="left" if col in ("source", "task") else "right")
        for name, info in s["real"].items():
            for task, counts in info["tasks"].items():
                rtable.add_row(
                    name,
                    task,
                    str(counts["train"]),
                    str(counts["eval"]),
                    str(counts["train"] + counts["eval"]),
                )
        console.print(rtable)


if __name__ == "__main__":  # pragma: no cover - `python -m flows.cli.pools` (used by dvc.yaml)
    app()
