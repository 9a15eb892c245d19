"""Unit-test generation: what legitimate tests score, to check that the introspection defences
(docs/REWARDS.md, "unit_test_generation") cost them nothing.

One command: ``.venv/bin/python benchmarks/ut_legit_rewards.py`` (``--help`` for options).
Scores, on the real pools, each record's reference tests (its SFT target) twice: with mutants
filtered by those tests (1.0 by construction, unless a defence rejects the tests) and with no
filtering (the raw mutation score); then HumanEval's tests in the two styles a model writes
them: plain asserts (`candidate` inlined) and `def check(candidate): ...` followed by
`check(<entry point>)`. Records whose reference fails its own tests are dropped and listed.
Prints one JSON line per set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astor_core.data.adapters import load_humaneval, load_mbpp  # noqa: E402
from astor_core.data.synthetic import generate  # noqa: E402
from astor_core.sandbox import Sandbox  # noqa: E402
from astor_core.tasks.base import RecordError  # noqa: E402
from astor_core.tasks.code_generation import split_humaneval_tests  # noqa: E402
from astor_core.tasks.unit_test_generation import UnitTestGenerationTask  # noqa: E402

DATA = Path("/work/shared/datasets")


def summary(rewards: list[Any], seconds: float) -> dict[str, Any]:
    """Mean, reasons and time of one scored set."""
    return {
        "n": len(rewards),
        "mean": round(statistics.mean(r.value for r in rewards), 4),
        "reasons": dict(Counter(r.reason for r in rewards)),
        "seconds": round(seconds, 1),
    }


def usable(records: list[dict], box: Sandbox) -> tuple[list[dict], list[str]]:
    """The records whose reference passes its own tests, and the ids of the others."""
    task, dropped = UnitTestGenerationTask(), []
    while True:
        try:
            task.filtered_mutants(records, box)
            return records, dropped
        except RecordError as err:
            bad = str(err).split(":")[0].split()[-1]
            dropped.append(bad)
            records = [r for r in records if r["prompt_id"] != bad]


def scored(records: list[dict], completions: list[str], box: Sandbox) -> dict[str, Any]:
    """Summary of a fresh task (empty mutant cache) scoring `completions` on `records`."""
    start = time.monotonic()
    rewards = UnitTestGenerationTask().score_batch(records, completions, box)
    return summary(rewards, time.monotonic() - start)


def pools(n_mbpp: int, box: Sandbox) -> None:
    """Reference tests of HumanEval, the first n MBPP and 90 synthetic records."""
    sets = {
        "humaneval": load_humaneval(DATA / "humaneval/HumanEval.jsonl.gz"),
        "mbpp": load_mbpp(DATA / "mbpp/mbpp.jsonl"),
        "synthetic": [r for d in (0, 1, 2) for r in generate("unit_test_generation", d, 30, 3)],
    }
    for name, rows in sets.items():
        ut = [r for r in rows if r["task"] == "unit_test_generation"]
        records, dropped = usable(ut[:n_mbpp] if name == "mbpp" else ut, box)
        refs = [r["reference"] for r in records]
        raw = [dict(r, tests="[]") for r in records]
        line = {
            "set": name,
            "dropped": dropped,
            "filtered": scored(records, refs, box),
            "raw": scored(raw, refs, box),
        }
        print(json.dumps(line), flush=True)


def humaneval_styles(box: Sandbox) -> None:
    """HumanEval's own tests as plain asserts and as `def check(candidate)` + `check(f)`."""
    with gzip.open(DATA / "humaneval/HumanEval.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    records = []
    for p in rows:
        code = p["prompt"] + p["canonical_solution"]
        payload = {"prompt": code, "code": code, "entry_point": p["entry_point"], "setup": ""}
        records.append({"prompt_id": p["task_id"], "payload": json.dumps(payload), "tests": "[]"})
    styles = {
        "inline_asserts": [
            "\n".join(split_humaneval_tests(p["test"], p["entry_point"], True)) for p in rows
        ],
        "check_function": [f"{p['test']}\ncheck({p['entry_point']})\n" for p in rows],
    }
    for name, completions in styles.items():
        result = scored(records, completions, box)
        print(json.dumps({"set": f"humaneval_{name}", "raw": result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbpp", type=int, default=300, help="MBPP records scored (974 = all)")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers")
    args = parser.parse_args()
    with Sandbox(workers=args.workers) as box:
        pools(args.mbpp, box)
        humaneval_styles(box)


if __name__ == "__main__":
    main()
