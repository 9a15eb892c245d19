"""Build the pools: synthetic default pools plus one pool file per real source, written
atomically (a temporary folder renamed into place; a failed build leaves the previous
pools untouched), and the pool statistics (a DVC metrics file)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from astor_core import TASKS
from astor_core.atomic import write_text_atomic
from astor_core.data.adapters import OFFICIAL_SPLIT_SOURCES, load_source
from astor_core.data.config import DataConfig
from astor_core.data.pools import REAL_DIR, pool_paths
from astor_core.data.schema import to_table
from astor_core.data.splits import assign_splits
from astor_core.data.synthetic import generate
from astor_core.tasks.commit_contrast import attach_contrast


def difficulty_counts(total: int, mix: Sequence[float]) -> list[int]:
    """Split total over difficulties by the weights in mix (largest remainder).

    >>> difficulty_counts(10, (0.3, 0.25, 0.2, 0.15, 0.1))
    [3, 3, 2, 1, 1]
    """
    weights = [w / sum(mix) for w in mix]
    raw = [total * w for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def synthetic_records(cfg: DataConfig) -> list[dict[str, Any]]:
    """All synthetic records of the default pools, splits assigned, commit messages with their
    contrast references (other commits' messages of the same split)."""
    records: list[dict[str, Any]] = []
    for task in TASKS:
        for difficulty, n in enumerate(difficulty_counts(cfg.items_per_task, cfg.difficulty_mix)):
            if n:
                records.extend(generate(task, difficulty, n, cfg.seed, cfg.synthetic))
    return attach_contrast(
        assign_splits(records, cfg.eval_fraction), cfg.commit_contrast_similar, cfg.commit_contrast
    )


def real_records(name: str, cfg: DataConfig) -> list[dict[str, Any]]:
    """One real source's records, official split kept where the source has one, commit
    messages with their contrast references."""
    records = load_source(name, Path(cfg.raw_dir), cfg.sources, cfg.synthetic.prompt_format)
    official = (lambda r: r["split"]) if name in OFFICIAL_SPLIT_SOURCES else None
    return attach_contrast(
        assign_splits(records, cfg.real_eval_fraction, official),
        cfg.commit_contrast_similar,
        cfg.commit_contrast,
    )


def pool_stats(
    default: Iterable[Mapping[str, Any]], real: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Counts per split/task/difficulty for the default pools and per source/task/split for real ones."""
    out: dict[str, Any] = {"default": {}, "real": {}}
    default = list(default)
    for split in ("train", "eval"):
        rows = [r for r in default if r["split"] == split]
        per_task: dict[str, Any] = {}
        for task in TASKS:
            trows = [r for r in rows if r["task"] == task]
            by_diff = Counter(int(r["difficulty"]) for r in trows)
            per_task[task] = {
                "count": len(trows),
                "by_difficulty": {str(d): by_diff.get(d, 0) for d in range(5)},
                "mean_reference_chars": round(
                    sum(len(r["reference"]) for r in trows) / len(trows), 1
                )
                if trows
                else 0.0,
            }
        out["default"][split] = {"count": len(rows), "tasks": per_task}
    for name, rows in real.items():
        counts = Counter((r["task"], r["split"]) for r in rows)
        out["real"][name] = {
            "count": len(rows),
            "tasks": {
                task: {split: counts.get((task, split), 0) for split in ("train", "eval")}
                for task in sorted({t for t, _ in counts})
            },
        }
    return out


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote."""

    pools_dir: Path
    stats_path: Path
    stats: dict[str, Any]


def _write_parquet(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    pq.write_table(to_table(records), path, compression="zstd")


def _swap_dir(new: Path, target: Path) -> None:
    """Replace target by new with renames only (the old folder is removed afterwards)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_pools(cfg: DataConfig = DataConfig()) -> BuildResult:
    """Build every pool in memory, write them to a temporary folder, then swap it in."""
    default = synthetic_records(cfg)
    real = {name: real_records(name, cfg) for name in cfg.real_sources}
    for name in cfg.default_real_sources:
        default.extend(real[name] if name in real else real_records(name, cfg))
    pools_dir = Path(cfg.pools_dir)
    pools_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pools_dir.name}.tmp-", dir=pools_dir.parent))
    tmp.chmod(0o755)
    try:
        for split, path in pool_paths(tmp).items():
            _write_parquet([r for r in default if r["split"] == split], path)
        if real:
            (tmp / REAL_DIR).mkdir()
            for name, rows in real.items():
                _write_parquet(rows, tmp / REAL_DIR / f"{name}.parquet")
        _swap_dir(tmp, pools_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats = pool_stats(default, real)
    write_text_atomic(Path(cfg.stats_path), json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return BuildResult(pools_dir, Path(cfg.stats_path), stats)


def read_stats(path: Path) -> dict[str, Any]:
    """Pool statistics previously written by build_pools."""
    return json.loads(path.read_text(encoding="utf-8"))
