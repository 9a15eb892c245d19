"""Where the prompt pools live on disk and how a run reads them: the one place for the pool
file names (`astor pools build` writes them, every reader finds them here).

A pools folder holds ``train.parquet`` and ``eval.parquet`` (the default pools) and
``real/<source>.parquet`` (one per real source).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

POOL_FILES: dict[str, str] = {"train": "train.parquet", "eval": "eval.parquet"}
"""Split -> file name of the default pools inside a pools folder."""
REAL_DIR = "real"
"""Sub-folder of a pools folder holding one parquet file per real source."""


class PoolsMissing(FileNotFoundError):
    """A default pool file is not there: the pools were never built."""


def pool_paths(pools_dir: str | Path) -> dict[str, Path]:
    """The default train and eval pool files of a pools folder.

    >>> {k: str(v) for k, v in pool_paths("data/pools").items()}
    {'train': 'data/pools/train.parquet', 'eval': 'data/pools/eval.parquet'}
    """
    root = Path(pools_dir)
    return {split: root / name for split, name in POOL_FILES.items()}


def real_pool_paths(pools_dir: str | Path) -> list[Path]:
    """The real-source pool files of a pools folder, by name."""
    return sorted((Path(pools_dir) / REAL_DIR).glob("*.parquet"))


def require_pools(pools_dir: str | Path) -> dict[str, Path]:
    """:func:`pool_paths`, after checking both files exist."""
    paths = pool_paths(pools_dir)
    for path in paths.values():
        if not path.is_file():
            raise PoolsMissing(f"pool file {path} is missing: run `astor pools build` first")
    return paths


def read_records(pools_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """One default pool as plain records (one dict per row)."""
    import pandas as pd

    path = require_pools(pools_dir)[split]
    return [dict(r) for r in pd.read_parquet(path).to_dict(orient="records")]


class Pools:
    """The default pools of a run, read once: frames and the content digest of the folder.

    A plain class (not a dataclass): Prefect passes it between task runs by reference and
    does not walk its frames."""

    def __init__(
        self, root: Path, frames: dict[str, Any], digest: str, files: dict[Path, bytes]
    ) -> None:
        self.root = root
        self.frames = frames
        """Split -> pandas frame."""
        self.digest = digest
        """md5 of the per-file md5s of every pool file (as DVC hashes a directory)."""
        self.files = files
        """Every pool file's bytes as read (validation parses these instead of re-reading)."""

    def records(self, split: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.frames[split].to_dict(orient="records")]


def read_pools(pools_dir: str | Path) -> Pools:
    """Read every pool file under pools_dir once: its bytes feed the digest, and the default
    pools' bytes are parsed into frames."""
    import pandas as pd

    root = Path(pools_dir)
    defaults = {path: split for split, path in require_pools(root).items()}
    h = hashlib.md5()
    frames: dict[str, Any] = {}
    files: dict[Path, bytes] = {}
    for path in sorted(root.rglob("*.parquet")):
        data = files[path] = path.read_bytes()
        h.update(str(path.relative_to(root)).encode())
        h.update(hashlib.md5(data).hexdigest().encode())
        if path in defaults:
            frames[defaults[path]] = pd.read_parquet(io.BytesIO(data))
    return Pools(root, {split: frames[split] for split in POOL_FILES}, h.hexdigest(), files)
