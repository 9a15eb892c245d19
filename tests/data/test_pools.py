"""astor_core.data.pools: the pool file names in one place, and a run's single read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from astor_core.data.build import build_pools
from astor_core.data.pools import (
    POOL_FILES,
    PoolsMissing,
    pool_paths,
    read_pools,
    read_records,
    require_pools,
)
from tests.data.conftest import small_config


def test_build_writes_where_readers_look(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, real_sources=("cruxeval",))
    build_pools(cfg)
    assert all(p.is_file() for p in require_pools(cfg.pools_dir).values())
    pools = read_pools(cfg.pools_dir)
    assert set(pools.frames) == set(POOL_FILES)
    assert pools.records("train") == read_records(cfg.pools_dir, "train")
    assert {r["split"] for r in pools.records("eval")} == {"eval"}
    # the digest covers every pool file, real ones included, as DVC hashes a directory
    root = Path(cfg.pools_dir)
    h = hashlib.md5()
    for path in sorted(root.rglob("*.parquet")):
        h.update(str(path.relative_to(root)).encode())
        h.update(hashlib.md5(path.read_bytes()).hexdigest().encode())
    assert pools.digest == h.hexdigest()
    assert set(pools.files) == set(root.rglob("*.parquet"))
    (root / "real" / "cruxeval.parquet").unlink()
    assert read_pools(cfg.pools_dir).digest != pools.digest


def test_missing_pools_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PoolsMissing, match=r"train.parquet is missing: run `astor pools build`"):
        read_pools(tmp_path)
    assert pool_paths(tmp_path)["eval"] == tmp_path / "eval.parquet"


def test_a_run_start_reads_each_pool_file_once(tmp_path: Path, monkeypatch) -> None:
    from astor_core.data import validation

    cfg = small_config(tmp_path, real_sources=("cruxeval",))
    build_pools(cfg)
    pools = read_pools(cfg.pools_dir)
    read_table = validation.pq.read_table

    def from_memory_only(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert not isinstance(source, str | Path), f"{source} read again"
        return read_table(source, *args, **kwargs)

    monkeypatch.setattr(validation.pq, "read_table", from_memory_only)
    summary = validation.validate_pools_dir(cfg.pools_dir, cfg.validation, contents=pools.files)
    assert summary["summary"]["default"] == len(pools.frames["train"]) + len(pools.frames["eval"])
