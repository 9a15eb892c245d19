"""Bootstrap steps of the embedded default: pools, the tiny model, its SFT warm start.

Each step is idempotent (it skips work whose output is already complete) and writes its
output atomically (a temporary folder renamed into place), so an interrupted demo never
leaves a half-written model that a later run would pick up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astor_core.config import AstorConfig


@dataclass(frozen=True)
class BootstrapConfig:
    """Where the default policy is built (params.yaml section ``bootstrap``)."""

    tiny_dir: str = "models/tiny"
    """Output of `astor model init-tiny`: tokenizer + randomly initialised tiny model."""


def _complete(model_dir: str | Path) -> bool:
    return (Path(model_dir) / "config.json").exists()


def _atomic_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def _swap_in(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def ensure_pools(data_cfg: Any) -> dict[str, Any]:
    """Build the pools unless train and eval files exist; return their statistics."""
    from astor_core.data.build import build_pools, read_stats
    from astor_core.data.pools import pool_paths

    stats = Path(data_cfg.stats_path)
    if all(p.exists() for p in pool_paths(data_cfg.pools_dir).values()) and stats.exists():
        return {"built": False, **read_stats(stats)}
    return {"built": True, **build_pools(data_cfg).stats}


def _train_records(cfg: AstorConfig) -> list[dict[str, Any]]:
    from astor_core.data.pools import read_records

    return read_records(cfg.data.pools_dir, "train")


def ensure_tiny_model(cfg: AstorConfig) -> dict[str, Any]:
    """Train the tokenizer on the train pools and save a fresh tiny model (unless present)."""
    from astor_core.policy.model import init_tiny, pool_texts

    target = Path(cfg.bootstrap.tiny_dir)
    if _complete(target):
        return {"built": False, "path": str(target)}
    tmp = _atomic_dir(target)
    try:
        init_tiny(pool_texts(_train_records(cfg)), tmp, cfg.tiny)
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"built": True, "path": str(target)}


def ensure_sft_model(cfg: AstorConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Warm-start the tiny model with TRL's SFTTrainer into model.name_or_path (unless present);
    progress lines go to `log` (see run_sft)."""
    from astor_core.policy.sft import run_sft

    target = Path(cfg.model.name_or_path)
    if _complete(target):
        return {"built": False, "path": str(target)}
    tmp = _atomic_dir(target)
    try:
        metrics = run_sft(cfg.bootstrap.tiny_dir, _train_records(cfg), tmp, cfg.sft, log=log)
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"built": True, "path": str(target), **metrics}


def evaluate_start_policy(cfg: AstorConfig) -> dict[str, dict[str, float]]:
    """Greedy held-out scores of the policy RL starts from (model.name_or_path, the SFT warm
    start) on exactly the items the run evaluates its final policy on (the first
    train.eval_items_per_task validation items per task by prompt_id), so the two are paired."""
    from astor_core import TASKS
    from astor_core.data.pools import read_records
    from astor_core.evaluation import in_run_eval_items
    from astor_core.policy.trainer import PolicyTrainer
    from astor_core.run.stages import evaluate_policy

    records = in_run_eval_items(
        read_records(cfg.data.pools_dir, "eval"), TASKS, cfg.train.eval_items_per_task
    )
    policy = PolicyTrainer.from_config(cfg, seed=cfg.train.seed)
    return evaluate_policy(policy, records, cfg)
