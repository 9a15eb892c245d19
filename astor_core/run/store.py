"""What a run keeps in its run_dir: its config, each round's stats (written before the
checkpoint, whose complete marker goes last), rounds.csv and eval.json."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from astor_core.atomic import write_json_atomic
from astor_core.config import AstorConfig
from astor_core.run import ranks
from astor_core.run.records import CSV_COLUMNS, CSV_SERIES, RoundStats

if TYPE_CHECKING:
    from astor_core.run.context import RunContext


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_run_config(run_dir: str | Path, cfg: AstorConfig) -> Path:
    """run.json: the config the run was (last) opened with."""
    return write_json_atomic(Path(run_dir) / "run.json", {"config": cfg.to_dict()})


def stats_path(run_dir: str | Path, round_idx: int) -> Path:
    return Path(run_dir) / "stats" / f"round-{round_idx:06d}.json"


def save_round(ctx: RunContext, stats: RoundStats) -> Path:
    """Write the round's stats, then the checkpoint (complete marker last), then advance."""
    write_json_atomic(stats_path(ctx.run_dir, ctx.round), stats.to_dict())
    extra = {
        "round": ctx.round,
        "scheduler": ctx.scheduler.state_dict(),
        "calibrator": ctx.calibrator.state_dict(),
    }
    path = ranks.checkpoint(ctx.policy, checkpoint_root(ctx.run_dir), ctx.round, extra)
    write_rounds_csv(ctx.run_dir, ctx.round + 1)
    if stats.eval:
        write_json_atomic(Path(ctx.run_dir) / "eval.json", stats.eval)
    ctx.round += 1
    return Path(path)


def load_round_stats(run_dir: str | Path, round_idx: int) -> RoundStats | None:
    path = stats_path(run_dir, round_idx)
    return RoundStats.from_dict(json.loads(path.read_text())) if path.exists() else None


def load_history(run_dir: str | Path, rounds: int) -> list[RoundStats]:
    """Stats of rounds 0..rounds-1 that have them, in order."""
    out = []
    for r in range(rounds):
        stats = load_round_stats(run_dir, r)
        if stats is not None:
            out.append(stats)
    return out


def write_rounds_csv(run_dir: str | Path, rounds: int) -> Path:
    """rounds.csv from the stats of rounds 0..rounds-1 (rewritten whole: resume-safe)."""
    path = Path(run_dir) / "rounds.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for stats in load_history(run_dir, rounds):
            for task, row in stats.per_task.items():
                values = row.to_dict()
                writer.writerow(
                    {"round": stats.round, "task": task} | {c: values[c] for c in CSV_SERIES}
                )
    os.replace(tmp, path)
    return path
