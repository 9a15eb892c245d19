"""DataConfig: everything the pool build and its validation read (params.yaml `data:`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


def load_data_config(path: str | Path | None) -> DataConfig:
    """DataConfig from the `data:` section of a params file (defaults when path is None),
    checked like every section (astor_core.config.load_config)."""
    from astor_core.config import load_config

    return load_config(path, sections=["data"]).data
