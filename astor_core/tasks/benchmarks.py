"""Drop-in replacements for the official HumanEval and CRUXEval scorers, on the sandbox.

HumanEval (Chen et al. 2021, openai/human-eval): each sample's program is
`prompt + completion`; the problem's `test` code plus `check(<entry_point>)` is one trusted
check, which sees the prompt's own helpers (`trusted_prelude`) as the prompt defines them, not
as the completion may have redefined them (the official harness lets a completion redefine
HumanEval/32's `poly`); pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k), averaged over problems,
reported for each k that every problem has at least k samples for (the official rule).

CRUXEval (Gu et al. 2024, facebookresearch/cruxeval): reads the official generations file
({"sample_<i>": [generation, ...]}) and writes the official scored format
(raw_generations, raw_scored_generations, pass_at_1, pass_at_5 in percent). Output
predictions are compared as literals in trusted code and input predictions run as a
literal-argument call in the sandbox (astor_core.tasks.code_reasoning), instead of
executing `assert <output> == <generation>` as the official script does.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from astor_core.sandbox.api import Check, Job, Limits
from astor_core.tasks.base import reason_for_status, resolve_sandbox, run_unique
from astor_core.tasks.code_generation import trusted_prelude
from astor_core.tasks.code_reasoning import (
    CodeReasoningConfig,
    NotALiteral,
    parse_input_prediction,
    reward_from_call_value,
    score_output_prediction,
)

if TYPE_CHECKING:
    from astor_core.sandbox import Sandbox

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchmarkConfig:
    """Where the official benchmark files are and how their programs run."""

    humaneval_problems: tuple[str, ...] = (
        "data/raw/humaneval/HumanEval.jsonl.gz",
        "/work/shared/datasets/humaneval/HumanEval.jsonl.gz",
    )
    """Default HumanEval problem files, first existing wins (relative = repository root)."""
    cruxeval_dataset: tuple[str, ...] = (
        "data/raw/cruxeval/cruxeval.jsonl",
        "/work/shared/datasets/cruxeval/cruxeval.jsonl",
    )
    """Default CRUXEval dataset files, first existing wins (relative = repository root)."""
    humaneval_limits: Limits = field(default_factory=lambda: Limits(wall_s=3.0, cpu_s=3.0))
    """Sandbox limits per HumanEval sample (the official timeout is 3 s)."""
    humaneval_ks: tuple[int, ...] = (1, 10, 100)
    """Default k values for pass@k (the official default)."""
    cruxeval_ks: tuple[int, ...] = (1, 5)
    """The k values CRUXEval reports."""
    cruxeval: CodeReasoningConfig = field(
        default_factory=lambda: CodeReasoningConfig(first_line_fallback=False)
    )
    """Prediction parsing for the CRUXEval scorer: the whole generation, as the official
    scorer evaluates it (no first-line fallback)."""


class BenchmarkInputError(ValueError):
    """A samples, generations or problems file that breaks the official format."""


def default_path(candidates: Sequence[str]) -> Path:
    """The first existing file among `candidates` (relative ones from the repository root)."""
    paths = [p if Path(p).is_absolute() else str(_REPO_ROOT / p) for p in candidates]
    for p in paths:
        if Path(p).exists():
            return Path(p)
    raise FileNotFoundError(f"none of the default files exists: {paths}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .jsonl.gz file; a bad line raises naming the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchmarkInputError(f"{path}:{number}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise BenchmarkInputError(f"{path}:{number}: each line must be a JSON object")
            rows.append(row)
    return rows


def estimate_pass_at_k(
    num_samples: Sequence[int], num_correct: Sequence[int], k: int
) -> np.ndarray:
    """Unbiased pass@k per problem: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, eq. 1).

    >>> estimate_pass_at_k([10, 10], [0, 5], 1).tolist()
    [0.0, 0.5]
    >>> float(estimate_pass_at_k([10], [3], 10)[0])
    1.0
    """

    def one(n: int, c: int) -> float:
        if n - c < k:
            return 1.0
        return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

    return np.array([one(n, c) for n, c in zip(num_samples, num_correct, strict=True)])


@dataclass(frozen=True)
class HumanEvalResult:
    """Scores of a HumanEval samples file."""

    pass_at_k: dict[str, float]
    """{'pass@k': value in [0, 1]} for each k every problem has enough samples for."""
    samples: list[dict[str, Any]]
    """Per sample, in input order: the sample plus passed (bool), status and detail."""


def score_humaneval(
    samples: Sequence[Mapping[str, Any]],
    problems: Mapping[str, Mapping[str, Any]],
    ks: Iterable[int] | None = None,
    sandbox: Sandbox | None = None,
    config: BenchmarkConfig | None = None,
) -> HumanEvalResult:
    """Official-format HumanEval scoring: every problem must be attempted."""
    cfg = config or BenchmarkConfig()
    for number, sample in enumerate(samples, 1):
        if not isinstance(sample.get("task_id"), str) or not isinstance(
            sample.get("completion"), str
        ):
            raise BenchmarkInputError(
                f"sample {number}: needs string fields task_id and completion"
            )
        if sample["task_id"] not in problems:
            raise BenchmarkInputError(f"sample {number}: unknown task_id {sample['task_id']!r}")
    attempted = {s["task_id"] for s in samples}
    if attempted != set(problems):
        missing = sorted(set(problems) - attempted)
        raise BenchmarkInputError(
            f"some problems are not attempted ({len(missing)}, e.g. {missing[:3]}); "
            "pass a --problems file with only the attempted ones"
        )
    keys = [(s["task_id"], s["completion"]) for s in samples]

    def job(key: tuple[str, str]) -> Job:
        p = problems[key[0]]
        check = Check(f"{p['test']}\n\ncheck({p['entry_point']})")
        return Job(
            program=p["prompt"] + key[1],
            checks=(check,),
            limits=cfg.humaneval_limits,
            trusted=trusted_prelude(p["prompt"], p["entry_point"]),
        )

    outcomes = run_unique(keys, job, resolve_sandbox(sandbox))
    scored = []
    for sample, key in zip(samples, keys, strict=True):
        o = outcomes[key]
        passed = o.all_passed
        scored.append(
            {
                **sample,
                "passed": passed,
                "status": reason_for_status(o.status, passed),
                "detail": o.detail,
            }
        )
    task_ids = sorted(problems)
    totals = [sum(1 for s in scored if s["task_id"] == t) for t in task_ids]
    correct = [sum(1 for s in scored if s["task_id"] == t and s["passed"]) for t in task_ids]
    pass_at_k = {
        f"pass@{k}": float(estimate_pass_at_k(totals, correct, k).mean())
        for k in (ks or cfg.humaneval_ks)
        if min(totals) >= k
    }
    return HumanEvalResult(pass_at_k, scored)


def score_cruxeval(
    generations: Mapping[str, Sequence[str]],
    dataset: Sequence[Mapping[str, Any]],
    mode: Literal["output", "input"],
    sandbox: Sandbox | None = None,
    config: BenchmarkConfig | None = None,
) -> dict[str, Any]:
    """Official-format CRUXEval scoring (raw_generations, raw_scored_generations, pass_at_1, pass_at_5)."""
    cfg = config or BenchmarkConfig()
    if mode not in ("output", "input"):
        raise BenchmarkInputError(f"mode must be 'output' or 'input', got {mode!r}")
    for item in dataset:
        gs = generations.get(item["id"])
        if not isinstance(gs, list) or not all(isinstance(g, str) for g in gs) or not gs:
            raise BenchmarkInputError(
                f"generations for {item['id']} are missing or not a non-empty list of strings"
            )
    scored: dict[str, list[bool]] = {}
    if mode == "output":
        for item in dataset:
            scored[item["id"]] = [
                score_output_prediction(item["output"], g, cfg.cruxeval).passed
                for g in generations[item["id"]]
            ]
    else:
        calls: dict[tuple[str, int], tuple[str, str]] = {}
        for item in dataset:
            for j, g in enumerate(generations[item["id"]]):
                try:
                    calls[(item["id"], j)] = (
                        item["code"],
                        parse_input_prediction(g, "f", cfg.cruxeval),
                    )
                except NotALiteral:
                    continue
        outcomes = run_unique(
            list(calls.values()),
            lambda key: Job(
                program=key[0], checks=(Check(key[1], "eval"),), limits=cfg.cruxeval.limits
            ),
            resolve_sandbox(sandbox),
        )
        outputs = {item["id"]: item["output"] for item in dataset}
        for item in dataset:
            flags = []
            for j in range(len(generations[item["id"]])):
                key = calls.get((item["id"], j))
                if key is None:
                    flags.append(False)
                    continue
                o = outcomes[key]
                flags.append(
                    reward_from_call_value(outputs[item["id"]], o.status, o.values, key[1]).passed
                )
            scored[item["id"]] = flags
    ids = [item["id"] for item in dataset]
    result: dict[str, Any] = {
        "raw_generations": dict(generations),
        "raw_scored_generations": {i: scored[i] for i in ids},
    }
    for k in cfg.cruxeval_ks:
        per_item = estimate_pass_at_k(
            [len(scored[i]) for i in ids], [sum(scored[i]) for i in ids], k
        )
        result[f"pass_at_{k}"] = float(per_item.mean() * 100)
    return result
