"""DataConfig: everything the pool build and its validation read (params.yaml `data:`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from astor_core.data.adapters import SourceFiles
from astor_core.data.synthetic import SyntheticConfig
from astor_core.data.validation import ValidationConfig

REAL_SOURCES: tuple[str, ...] = ("humaneval", "mbpp", "cruxeval", "nngen")
"""The real sources the adapters know."""


@dataclass(frozen=True)
class DataConfig:
    """Pool build settings (params.yaml `data:` maps onto this, nested sections included)."""

    seed: int = 0
    """Seed of the synthetic generator (same seed -> byte-identical pools)."""
    items_per_task: int = 900
    """Synthetic items per task, all difficulties together, before the train/eval split."""
    difficulty_mix: tuple[float, ...] = (0.15, 0.4, 0.2, 0.15, 0.1)
    """Relative share of difficulties 0..4 (normalised; largest-remainder rounding)."""
    eval_fraction: float = 0.2
    """Share of synthetic content keys (functions, diffs) held out for eval."""
    default_real_sources: tuple[str, ...] = ()
    """Real sources also mixed into the default train/eval pools (default: synthetic only)."""
    real_sources: tuple[str, ...] = REAL_SOURCES
    """Real sources built into their own pool files under <pools_dir>/real/."""
    real_eval_fraction: float = 0.5
    """Eval share of content keys for real sources without an official split (HumanEval, CRUXEval)."""
    commit_contrast: int = 16
    """Other commits' messages (same source and split) bundled with each commit_message record
    as its `tests`; its reward must beat all of them (astor_core/tasks/commit_message.py)."""
    commit_contrast_similar: int = 8
    """How many of those are the messages most similar to the record's own (token Jaccard);
    the rest are drawn at random, seeded by the prompt_id."""
    raw_dir: str = "data/raw"
    """Folder with the raw sources (committed to git, a dependency of build_pools)."""
    pools_dir: str = "data/pools"
    """Output folder: train.parquet, eval.parquet, real/<source>.parquet (replaced atomically)."""
    stats_path: str = "data/pools_stats.json"
    """Pool statistics (a DVC metrics file)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Synthetic generator knobs."""
    sources: SourceFiles = field(default_factory=SourceFiles)
    """Raw source file locations and official splits."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Validation suite settings (used by `astor pools validate`)."""

    def __post_init__(self) -> None:
        if (
            len(self.difficulty_mix) != 5
            or min(self.difficulty_mix) < 0
            or sum(self.difficulty_mix) <= 0
        ):
            raise ValueError(
                f"difficulty_mix needs 5 non-negative weights, got {self.difficulty_mix}"
            )
        if not 0.0 <= self.eval_fraction <= 1.0 or not 0.0 <= self.real_eval_fraction <= 1.0:
            raise ValueError("eval fractions must lie in [0, 1]")
        unknown = set(self.real_sources) | set(self.default_real_sources)
        unknown -= set(REAL_SOURCES)
        if unknown:
            raise ValueError(f"unknown real sources {sorted(unknown)}; known: {list(REAL_SOURCES)}")
        if (
            self.commit_contrast < 1
            or not 0 <= self.commit_contrast_similar <= self.commit_contrast
        ):
            raise ValueError("need commit_contrast >= 1 and 0 <= commit_contrast_similar <= it")
        if self.items_per_task < 0:
            raise ValueError("items_per_task must be >= 0")


T = TypeVar("T")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        return from_mapping(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (types.UnionType, typing.Union):
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_mapping(cls: type[T], mapping: Mapping[str, Any], where: str = "data") -> T:
    """Build dataclass `cls` from a nested mapping; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(mapping) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in mapping.items()}
    return cls(**kwargs)


def load_data_config(path: str | Path | None) -> DataConfig:
    """DataConfig from the `data:` section of a params file (defaults when path is None)."""
    if path is None:
        return DataConfig()
    text = Path(path).read_text(encoding="utf-8")
    params = yaml.safe_load(text) or {}
    section = params.get("data", {}) if isinstance(params, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError(f"{path}: the `data:` section must be a mapping")
    return from_mapping(DataConfig, section)
