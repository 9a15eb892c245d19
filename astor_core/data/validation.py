"""The pool validation suite: great-expectations (GX 1.x, ephemeral context) over each pool
plus a reference self-check through the task verifiers.

Rules (each failure names the rule, the expectation and example prompt_ids):
required_columns, not_null, unique_prompt_id, task_known, source_known, split_known,
difficulty_range, bounded_lengths, non_empty_reference, payload_json_keys, tests_present,
prompt_id_hash, utf8, no_train_eval_leak, reference_self_check.

Row-level rules that GX cannot express directly (payload JSON with the task's keys, tests,
UTF-8, the train/eval leak) are derived columns computed here with the schema's own rule
functions, and GX checks those columns. GX is imported inside `run_suite` only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from astor_core import TASKS
from astor_core.data.pools import POOL_FILES, REAL_DIR, pool_paths, real_pool_paths
from astor_core.data.schema import (
    COLUMNS,
    RecordError,
    content_key,
    make_prompt_id,
    parse_payload,
    parse_tests,
)


@dataclass(frozen=True)
class ValidationConfig:
    """Settings of the validation suite (params.yaml `data.validation`)."""

    max_payload_chars: int = 20_000
    """Largest payload JSON accepted, in characters."""
    max_reference_chars: int = 8_000
    """Largest reference completion accepted."""
    max_tests_chars: int = 20_000
    """Largest tests JSON accepted."""
    self_check_per_task: int = 16
    """References per task and pool run through the verifier (0 disables the self-check)."""
    self_check_seed: int = 0
    """Seed of the self-check sample."""
    min_reference_pass_rate: float = 1.0
    """Share of sampled references that must score 1.0 in synthetic-only pools."""
    real_min_reference_pass_rate: float = 0.95
    """The same for pools with real sources (3 MBPP references fail on Python 3.11)."""
    example_rows: int = 3
    """Example prompt_ids shown per failing rule."""
    docs_dir: str = "data/validation/gx_docs"
    """Where GX writes its data docs (HTML)."""


@dataclass
class Failure:
    """One broken rule in one pool."""

    pool: str
    rule: str
    expectation: str
    column: str
    count: int
    examples: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class ValidationReport:
    """What the suite found; `success` is False when any rule failed."""

    success: bool
    pools: dict[str, int]
    """Pool name -> rows."""
    failures: list[Failure]
    self_check: dict[str, dict[str, int]]
    """Pool name -> {"checked": n, "passed": m}."""
    docs_index: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class PoolReadError(ValueError):
    """A pool file cannot be read at all (not parquet, missing)."""


def read_pool(path: Path, data: bytes | None = None) -> tuple[Any, list[bool]]:
    """A pool file (its bytes `data` when already read) as a pandas frame of str columns plus
    a per-row UTF-8 validity flag.

    String and binary columns are decoded here so invalid bytes become a failing row
    (rule `utf8`, replacement characters in the frame) instead of a crash.
    """
    try:
        table = pq.read_table(pa.BufferReader(data) if data is not None else path)
    except (OSError, pa.ArrowException) as exc:
        raise PoolReadError(f"{path}: not a readable parquet file ({exc})") from None
    ok = [True] * table.num_rows
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if (
            pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)
            or pa.types.is_binary(col.type)
        ):
            raw = col.cast(pa.binary()) if not pa.types.is_binary(col.type) else col
            values: list[Any] = []
            for i, b in enumerate(raw.to_pylist()):
                if b is None:
                    values.append(None)
                    continue
                try:
                    values.append(b.decode("utf-8"))
                except UnicodeDecodeError:
                    ok[i] = False
                    values.append(b.decode("utf-8", errors="replace"))
            columns[name] = values
        else:
            columns[name] = col.to_pylist()
    import pandas as pd

    return pd.DataFrame(columns), ok


def derive_columns(frame: Any, utf8_ok: Sequence[bool]) -> Any:
    """Add the derived rule columns (_payload_ok, _tests_ok, _id_ok, _ref_ok, _leak, _utf8_ok)."""
    rows = frame.to_dict("records")
    payload_ok, tests_ok, id_ok, ref_ok, keys = [], [], [], [], []
    for row in rows:
        payload: dict[str, Any] | None
        try:
            payload = parse_payload(row)
        except (RecordError, TypeError):
            payload = None
        payload_ok.append(payload is not None)
        try:
            parse_tests(row)
            tests_ok.append(True)
        except (RecordError, TypeError):
            tests_ok.append(False)
        # Only an input prediction for a function without arguments may be empty.
        no_args = (
            payload is not None and payload.get("mode") == "input" and not payload["input"].strip()
        )
        ref_ok.append(
            isinstance(row.get("reference"), str) and (bool(row["reference"].strip()) or no_args)
        )
        id_ok.append(
            payload is not None
            and row.get("prompt_id") == make_prompt_id(str(row.get("task")), payload)
        )
        try:
            keys.append(
                content_key(row["task"], payload, str(row.get("reference"))) if payload else None
            )
        except (KeyError, TypeError):
            keys.append(None)
    splits_by_key: dict[str, set[str]] = {}
    for key, row in zip(keys, rows, strict=True):
        if key is not None:
            splits_by_key.setdefault(key, set()).add(str(row.get("split")))
    # An eval record leaks when a train record shares its content key.
    leak = [
        key is not None and row.get("split") == "eval" and "train" in splits_by_key[key]
        for key, row in zip(keys, rows, strict=True)
    ]
    out = frame.copy()
    out["_payload_ok"], out["_tests_ok"], out["_id_ok"] = payload_ok, tests_ok, id_ok
    out["_leak"], out["_utf8_ok"], out["_ref_ok"] = leak, list(utf8_ok), ref_ok
    return out


def self_check(
    frame: Any, pool: str, cfg: ValidationConfig, min_rate: float, sandbox: Any = None
) -> tuple[dict[str, int], list[Failure]]:
    """Score a per-task sample of references with the task verifiers; they should score 1.0."""
    if cfg.self_check_per_task <= 0 or frame.empty:
        return {"checked": 0, "passed": 0}, []
    from astor_core.tasks import get_task

    rng = random.Random(cfg.self_check_seed)
    checked = passed = 0
    bad: list[str] = []
    reasons: dict[str, int] = {}
    records = frame[list(COLUMNS)].to_dict("records")
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        sample = rng.sample(rows, min(cfg.self_check_per_task, len(rows)))
        if not sample:
            continue
        rewards = get_task(task).score_batch(
            sample, [r["reference"] for r in sample], sandbox=sandbox
        )
        for row, reward in zip(sample, rewards, strict=True):
            checked += 1
            if reward.value >= 1.0:
                passed += 1
            else:
                bad.append(str(row["prompt_id"]))
                reasons[reward.reason] = reasons.get(reward.reason, 0) + 1
    stats = {"checked": checked, "passed": passed}
    if checked and passed / checked < min_rate:
        detail = f"{passed}/{checked} references score 1.0 (need {min_rate:.0%}); reasons {reasons}"
        return stats, [
            Failure(
                pool,
                "reference_self_check",
                "verifier(reference) == 1.0",
                "reference",
                checked - passed,
                bad[: cfg.example_rows],
                detail,
            )
        ]
    return stats, []


def pool_files(path: Path) -> dict[str, list[Path]]:
    """Pools to validate under a path: a file alone, or a pools folder (train+eval together
    as `default`, each real/<source>.parquet on its own)."""
    if path.is_file():
        return {path.stem: [path]}
    if not path.is_dir():
        raise PoolReadError(f"{path}: no such pool file or folder")
    out: dict[str, list[Path]] = {}
    default = [p for p in pool_paths(path).values() if p.is_file()]
    if default:
        out["default"] = default
    for p in real_pool_paths(path):
        out[f"real_{p.stem}"] = [p]
    if not out:
        names = ", ".join([*POOL_FILES.values(), f"{REAL_DIR}/*.parquet"])
        raise PoolReadError(f"{path}: no pool files ({names})")
    return out


def validate_path(
    path: Path,
    cfg: ValidationConfig = ValidationConfig(),
    sandbox: Any = None,
    contents: Mapping[Path, bytes] | None = None,
) -> ValidationReport:
    """Validate the pools at path; the structural suite first, then the reference self-check.
    `contents`: pool files already read (path -> bytes), parsed instead of read again."""
    import pandas as pd

    frames: dict[str, Any] = {}
    for name, files in pool_files(path).items():
        parts, flags = [], []
        for f in files:
            frame, ok = read_pool(f, (contents or {}).get(f))
            parts.append(frame)
            flags.extend(ok)
        frames[name] = derive_columns(pd.concat(parts, ignore_index=True), flags)
    from astor_core.data.expectations import run_suite

    failures = run_suite(frames, cfg, Path(cfg.docs_dir) if cfg.docs_dir else None)
    checks: dict[str, dict[str, int]] = {}
    if not failures:
        for name, frame in frames.items():
            only_synthetic = set(frame["source"]) <= {"synthetic"}
            rate = (
                cfg.min_reference_pass_rate if only_synthetic else cfg.real_min_reference_pass_rate
            )
            checks[name], bad = self_check(frame, name, cfg, rate, sandbox)
            failures.extend(bad)
    index = Path(cfg.docs_dir) / "index.html" if cfg.docs_dir else None
    return ValidationReport(
        success=not failures,
        pools={name: len(frame) for name, frame in frames.items()},
        failures=failures,
        self_check=checks,
        docs_index=str(index) if index is not None and index.exists() else "",
    )


class PoolValidationError(RuntimeError):
    """The pools broke a validation rule: nothing downstream may run."""


def validate_pools_dir(
    pools_dir: str | Path,
    cfg: ValidationConfig | None = None,
    contents: Mapping[Path, bytes] | None = None,
) -> dict[str, Any]:
    """Validate a pools folder before a run (from `contents`, its files' bytes already read,
    when given); raise :class:`PoolValidationError` naming the broken rules. Returns the rows per
    pool and the self-check counts."""
    report = validate_path(Path(pools_dir), cfg or ValidationConfig(), contents=contents)
    if not report.success:
        rules = sorted({f"{f.pool}:{f.rule}" for f in report.failures})
        raise PoolValidationError(
            f"pools at {pools_dir} failed validation ({len(report.failures)} rule(s): "
            f"{', '.join(rules)}); run `astor pools validate {pools_dir}` for the table"
        )
    return {"summary": report.pools, "self_check": report.self_check}
