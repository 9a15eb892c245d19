"""`astor demo`, `astor train`, `astor serve`: run the training flow."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli._common import fail, local_run_env, quiet_env

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="params file (DVC-tracked)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="override a config value: section.key=value (repeatable)"),
]


def checked_config(config: Path, overrides: list[str] | None) -> Any:
    """The run's config, type- and range-checked before any flow starts (a bad value raises
    ConfigError: one line, exit 2)."""
    from astor_core.config import load_config

    return load_config(config, list(overrides or []))


def train(
    config: ConfigOpt = Path("params.yaml"),
    set_: SetOpt = None,
    num_processes: Annotated[
        int,
        typer.Option(
            "--num-processes",
            min=1,
            help="ranks on this machine: >1 re-runs this command under `accelerate launch` "
            "(data-parallel rollouts and updates; the flow and MLflow on rank 0)",
        ),
    ] = 1,
) -> None:
    """Train (or resume) one run with the scheduler named in train.scheduler.

    Under `accelerate launch` every rank runs this command: rank 0 runs the Prefect flow and
    MLflow, the other ranks follow it (astor_core.run.ranks)."""
    from astor_core.data.pools import require_pools
    from astor_core.run import ranks

    cfg = checked_config(config, set_)
    if num_processes > 1:
        raise typer.Exit(_relaunch(num_processes, config, set_))
    if not ranks.is_leader():
        quiet_env()
        typer.echo(ranks.follow(cfg).line())
        return
    require_pools(cfg.data.pools_dir)
    local_run_env()
    from flows.training import train_flow

    result = train_flow(config_path=str(config), overrides=list(set_ or []))
    _print_result(result)


def launch_argv(num_processes: int, config: Path, overrides: list[str] | None) -> list[str]:
    """`accelerate launch` of `astor train` with num_processes ranks on this machine. The
    MULTI_GPU launcher is torchrun, which starts every rank; on a machine without CUDA each
    rank's Accelerator resolves it to MULTI_CPU over gloo (configs/accelerate/cpu_2proc.yaml).

    >>> launch_argv(2, Path("p.yaml"), ["train.rounds=2"])[3:]
    ['--multi_gpu', '--num_machines', '1', '--num_processes', '2', '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'flows.cli', 'train', '--config', 'p.yaml', '--set', 'train.rounds=2']
    """
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    argv += ["--num_machines", "1", "--num_processes", str(num_processes)]
    argv += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    argv += ["-m", "flows.cli", "train", "--config", str(config)]
    for item in overrides or []:
        argv += ["--set", item]
    return argv


def _relaunch(num_processes: int, config: Path, overrides: list[str] | None) -> int:
    """Run `astor train` on num_processes ranks; the launcher's exit code."""
    import subprocess

    return subprocess.run(launch_argv(num_processes, config, overrides), check=False).returncode


def demo(
    config: ConfigOpt = Path("params.yaml"),
    set_: SetOpt = None,
    fresh: Annotated[
        bool, typer.Option(help="start the RL run from round 0 (keeps pools/models)")
    ] = False,
) -> None:
    """The whole pipeline on the embedded default: pools, validation, tiny model, SFT warm-start,
    ASTOR RL rounds and held-out evaluation; ends with the commands that open the UIs."""
    checked_config(config, set_)
    local_run_env()
    from flows.demo import run_demo

    result = run_demo(config, list(set_ or []), fresh=fresh)
    _print_result(result)


def serve(
    config: ConfigOpt = Path("params.yaml"),
    cron: Annotated[
        str, typer.Option(help="cron schedule of the retraining deployment")
    ] = "0 2 * * *",
    name: Annotated[str, typer.Option(help="deployment name")] = "astor-retrain",
    set_: SetOpt = None,
) -> None:
    """Serve the training flow on this machine with a cron schedule (flow.serve)."""
    checked_config(config, set_)
    quiet_env()
    from flows.training import train_flow

    train_flow.serve(
        name=name,
        cron=cron,
        parameters={"config_path": str(config.resolve()), "overrides": list(set_ or [])},
        tags=["astor", "retrain"],
        # one run at a time: a cron run that fires while the previous one is still going
        # must not resume the same run directory concurrently (it waits for the next poll)
        limit=1,
    )


def _print_result(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"Held-out evaluation after {result['rounds']} rounds ({result['run_dir']})"
    )
    table.add_column("task")
    metrics = sorted({m for row in result["eval"].values() for m in row if m != "items"})
    for m in metrics:
        table.add_column(m, justify="right")
    for task, row in result["eval"].items():
        table.add_row(task, *(f"{row[m]:.3f}" for m in metrics))
    console.print(table)
    for line in rl_vs_start_lines(result):
        console.print(line, markup=False, highlight=False)
    console.print("\n[bold]Open the UIs on this run[/bold]")
    for line in ui_commands(result["mlflow_url"], result.get("prefect_flow_run_id", "")):
        # soft_wrap: a narrow terminal or a log file must not get line breaks inside a command
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def rl_vs_start_lines(result: dict) -> list[str]:
    """What RL changed: the final policy vs the SFT start on the same items (when the result
    has both), and the per-task KL coefficients the run ended with.

    >>> rl_vs_start_lines({"eval": {"a": {"mean_reward": 0.3}, "b": {"mean_reward": 0.1}},
    ...                    "sft_eval": {"a": {"mean_reward": 0.2}, "b": {"mean_reward": 0.1}},
    ...                    "betas": {"a": 0.02, "b": 0.08}})
    ['mean reward, same items: SFT start 0.150 -> after RL 0.200 (+0.050)', '  a: 0.200 -> 0.300 (+0.100)', '  b: 0.100 -> 0.100 (+0.000)', 'per-task beta at the end: a 0.02, b 0.08 (max/min 4.0x)']
    """
    lines: list[str] = []
    start, end = result.get("sft_eval"), result.get("eval")
    if start and end:
        tasks = [t for t in end if t in start]
        avg_s = sum(start[t]["mean_reward"] for t in tasks) / len(tasks)
        avg_e = sum(end[t]["mean_reward"] for t in tasks) / len(tasks)
        lines.append(
            f"mean reward, same items: SFT start {avg_s:.3f} -> after RL {avg_e:.3f} "
            f"({avg_e - avg_s:+.3f})"
        )
        for t in tasks:
            s, e = start[t]["mean_reward"], end[t]["mean_reward"]
            lines.append(f"  {t}: {s:.3f} -> {e:.3f} ({e - s:+.3f})")
    betas = result.get("betas")
    if betas:
        spread = max(betas.values()) / min(betas.values())
        listed = ", ".join(f"{t} {b:.3g}" for t, b in betas.items())
        lines.append(f"per-task beta at the end: {listed} (max/min {spread:.1f}x)")
    return lines


def ui_commands(mlflow_url: str, flow_run_id: str = "") -> list[str]:
    """The commands (and URLs) that open the MLflow and Prefect UIs on the run just finished,
    for the tracking URI and Prefect settings this process actually used."""
    from prefect.settings import get_current_settings

    from flows.tracking import tracking_uri

    bindir = Path(sys.executable).parent
    with contextlib.suppress(ValueError):  # the project's .venv: show it as the README does
        bindir = bindir.relative_to(Path.cwd())
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        mlflow = [f"  MLflow : {uri.rstrip('/')}/{mlflow_url}"]
    else:
        mlflow = [
            f"  MLflow : {bindir / 'mlflow'} ui --backend-store-uri {uri} --port 5000",
            f"           then http://127.0.0.1:5000/{mlflow_url}",
        ]
    page = f"runs/flow-run/{flow_run_id}" if flow_run_id not in ("", "none") else "runs"
    settings = get_current_settings()
    api = settings.api.url
    if api:  # the run is already on that server
        prefect = [f"  Prefect: {api.rstrip('/').removesuffix('/api')}/{page}"]
    else:
        db = settings.server.database.connection_url
        db_text = db.get_secret_value() if db is not None else ""
        home = (
            ""
            if settings.home == Path("~/.prefect").expanduser()
            else f"PREFECT_HOME={settings.home} "
        )
        prefect = [
            f"  Prefect: {home}{bindir / 'prefect'} server start   then http://127.0.0.1:4200/{page}",
            f"           (the ephemeral API recorded this run in {db_text.split(':///', 1)[-1]},",
            "           which that server reads; with PREFECT_API_URL set, runs go to a server directly)",
        ]
    return mlflow + prefect


def evaluate(
    config: ConfigOpt = Path("params.yaml"),
    set_: SetOpt = None,
    model: Annotated[
        Path | None, typer.Option(help="policy directory (default: <run_dir>/policy)")
    ] = None,
    out: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics file)")] = Path(
        "metrics/eval.json"
    ),
    samples: Annotated[
        int, typer.Option(min=1, help="completions per item: k of mean@k (1 = one per item)")
    ] = 1,
    temperature: Annotated[
        float | None,
        typer.Option(help="sampling temperature (default: 0 = greedy for k = 1, 1.0 for k > 1)"),
    ] = None,
    items: Annotated[
        int | None,
        typer.Option(
            help="items per task, first by prompt_id (default: train.eval_items_per_task; 0: all)"
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="which items of data.pools_dir: train, eval, or a held-out half of eval:"
            " validation (for tuning) or test (final reports only)"
        ),
    ] = "eval",
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
) -> None:
    """Score a saved policy on a pools directory: greedy, or sampled mean@k
    (e.g. --samples 8 --temperature 1.0 -S data.pools_dir=DIR)."""
    quiet_env()
    import json

    from astor_core import TASKS
    from astor_core.atomic import write_text_atomic
    from astor_core.config import load_config
    from astor_core.data.pools import POOL_FILES, pool_paths
    from astor_core.evaluation import (
        HELDOUT_SPLITS,
        evaluate_sampled,
        heldout_records,
        load_saved_policy,
        policy_sampler,
        pool_of_split,
    )
    from astor_core.sandbox import shared_sandbox

    cfg = load_config(config, list(set_ or []))
    temp = (0.0 if samples == 1 else 1.0) if temperature is None else temperature
    if temp < 0:
        raise fail(f"--temperature must be >= 0, got {temp}")
    if samples > 1 and temp == 0:
        raise fail("--samples > 1 needs --temperature > 0 (greedy decoding repeats itself)")
    path = model or Path(cfg.train.run_dir) / "policy"
    if not (path / "config.json").is_file():
        raise fail(f"model directory {path} has no config.json (not a saved policy)")
    pool = pool_paths(cfg.data.pools_dir).get(pool_of_split(split))
    if pool is None:
        raise fail(
            f"--split must be one of {', '.join((*POOL_FILES, *HELDOUT_SPLITS))}, got {split!r}"
        )
    if not pool.is_file():
        raise fail(f"pool file {pool} does not exist (data.pools_dir={cfg.data.pools_dir})")
    policy = load_saved_policy(cfg, path, temp, seed)
    per_task = cfg.train.eval_items_per_task if items is None else items
    records = heldout_records(cfg.data.pools_dir, split, TASKS, per_task)
    sample = policy_sampler(policy, temp, seed)

    table = evaluate_sampled(sample, records, samples, cfg.rewards, shared_sandbox(cfg.sandbox))
    result = {
        "model": str(path),
        "pools": str(pool),
        "split": split,
        "samples": samples,
        "temperature": temp,
        "average_mean_reward": float(sum(t.mean_reward for t in table.values()) / len(table)),
        "tasks": {task: ev.metrics() for task, ev in table.items()},
        "item_rewards": {task: ev.item_rewards for task, ev in table.items()},
    }
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    write_text_atomic(out, text)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "item_rewards"}, indent=2))


def bootstrap(
    step: Annotated[
        str, typer.Argument(help="tiny (tokenizer + fresh tiny model) or sft (warm start)")
    ],
    config: ConfigOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Build the default policy from params.yaml (the DVC stages init_model and sft call this)."""
    quiet_env()
    import json
    from functools import partial

    from astor_core.config import load_config
    from astor_core.demo import ensure_sft_model, ensure_tiny_model

    sft = partial(ensure_sft_model, log=lambda line: typer.echo(line, err=True))
    steps = {"tiny": ensure_tiny_model, "sft": sft}
    if step not in steps:
        typer.echo(f"error: unknown step {step!r}; choose one of {sorted(steps)}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(steps[step](load_config(config, list(set_ or []))), default=str))


compare_app = typer.Typer(help="ASTOR vs specialists vs multi-task baselines, one report.")


@compare_app.callback(invoke_without_command=True)
def compare(
    ctx: typer.Context,
    config: ConfigOpt = Path("params.yaml"),
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="smoke run: 1 seed, few rounds")] = False,
) -> None:
    """Train every method (compare.methods) with every seed under the same budget, as child
    runs of one MLflow parent run, then regenerate docs/RESULTS.md from MLflow."""
    if ctx.invoked_subcommand is not None:
        return
    checked_config(config, set_)
    local_run_env()
    from flows.compare import compare_flow

    result = compare_flow(str(config), list(set_ or []), quick=quick)
    typer.echo(f"report: {result['report']} (MLflow parent run {result['parent_run_id']})")


@compare_app.command("report")
def compare_report(
    parent: Annotated[str, typer.Option(help="MLflow run id of the comparison's parent run")],
    out: Annotated[Path, typer.Option(help="where the report goes")] = Path("docs/RESULTS.md"),
) -> None:
    """Regenerate the results report from the MLflow runs of one comparison."""
    quiet_env()
    from flows.compare import write_report

    typer.echo(str(write_report(parent, out)))


def register(root: typer.Typer) -> None:
    """Add the run commands to the root app."""
    root.command("demo")(demo)
    root.command("train")(train)
    root.command("serve")(serve)
    root.command("evaluate")(evaluate)
    root.command("bootstrap")(bootstrap)
    root.add_typer(compare_app, name="compare")
