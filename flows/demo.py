"""`astor demo`: the whole pipeline on the embedded default, as one Prefect flow.

pools (build if missing) -> validation -> tiny model (init if missing) -> SFT warm-start
(if missing) -> ASTOR RL rounds (the training flow, as a subflow) -> held-out evaluation, and the
SFT start evaluated on the same items (so the result says what RL changed).
Every step is a task run (or subflow run) in the Prefect UI; rich shows the progress.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from astor_core import demo as core_demo
from astor_core.config import load_config
from flows.training import train_flow


@task(name="build-pools", cache_policy=NO_CACHE)
def build_pools(config_path: str, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(config_path, overrides, sections=["data"])
    return core_demo.ensure_pools(cfg.data)


@task(name="init-tiny-model", cache_policy=NO_CACHE)
def init_tiny_model(config_path: str, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(config_path, overrides)
    return core_demo.ensure_tiny_model(cfg)


# log_prints off: TRL's dataset.map fingerprints its functions with dill, which finds their
# globals by capturing the print-out of dis.dis; Prefect's print capture (the flow's
# log_prints) took that print-out instead, wrote ~370 lines of bytecode to the run's log, and
# left dill without the names (tests/flows/test_demo_flow.py).
@task(name="sft-warm-start", cache_policy=NO_CACHE, log_prints=False)
def sft_warm_start(config_path: str, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(config_path, overrides)
    logger = get_run_logger()
    info = core_demo.ensure_sft_model(cfg, log=logger.info)
    logger.info("SFT warm start: %s", info)
    return info


@task(name="sft-start-eval", cache_policy=NO_CACHE)
def sft_start_eval(config_path: str, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(config_path, overrides)
    return core_demo.evaluate_start_policy(cfg)


@flow(name="astor-demo", log_prints=True)
def demo_flow(
    config_path: str = "params.yaml", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Pools, validation, tiny model, SFT, then the training flow with the ASTOR scheduler."""
    overrides = list(overrides or [])
    steps = [
        ("prompt pools", lambda: build_pools(config_path, overrides)),
        ("tiny model", lambda: init_tiny_model(config_path, overrides)),
        ("SFT warm start", lambda: sft_warm_start(config_path, overrides)),
        ("RL rounds + evaluation", lambda: train_flow(config_path, overrides)),
        ("SFT start on the same items", lambda: sft_start_eval(config_path, overrides)),
    ]
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    outputs: list[Any] = []
    with Progress(*columns, transient=False) as progress:
        overall = progress.add_task("astor demo", total=len(steps))
        for name, step in steps:
            progress.update(overall, description=f"astor demo: {name}")
            outputs.append(step())
            progress.advance(overall)
    return {**outputs[3], "sft_eval": outputs[4]}


def run_demo(config: Path, overrides: list[str], fresh: bool = False) -> dict[str, Any]:
    """Run the demo flow; `fresh` removes the previous RL run (pools and models are kept)."""
    if fresh:
        run_dir = Path(load_config(config, overrides, sections=["train"]).train.run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    return demo_flow(str(config), overrides)
