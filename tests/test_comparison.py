"""The comparison table: aggregation over seeds, the specialists row, relative gains."""

from __future__ import annotations

import pytest

from astor_core.comparison import (
    SPECIALISTS,
    RunResult,
    expand_methods,
    method_rows,
    relative_gain,
    results_markdown,
    run_overrides,
    verdict,
)

TASKS = ("a", "b")


def _results() -> list[RunResult]:
    return [
        RunResult("astor", 0, {"a": 0.6, "b": 0.4}),
        RunResult("astor", 1, {"a": 0.5, "b": 0.5}),
        RunResult("uniform", 0, {"a": 0.4, "b": 0.4}),
        RunResult("uniform", 1, {"a": 0.5, "b": 0.3}),
        # each specialist is scored on its own task only
        RunResult("specialist:a", 0, {"a": 0.7, "b": 0.0}),
        RunResult("specialist:b", 0, {"a": 0.0, "b": 0.1}),
        RunResult("specialist:a", 1, {"a": 0.5, "b": 0.9}),
        RunResult("specialist:b", 1, {"a": 0.9, "b": 0.3}),
    ]


def test_rows_average_over_seeds_and_read_specialists_on_their_own_task() -> None:
    rows = method_rows(_results(), TASKS)
    assert rows["astor"].average[0] == pytest.approx(0.5)
    assert rows["uniform"].average[0] == pytest.approx(0.4)
    assert rows[SPECIALISTS].per_seed_average == pytest.approx([0.4, 0.4])
    assert rows[SPECIALISTS].per_task["a"][0] == pytest.approx(0.6)
    assert rows["astor"].per_task["a"][1] == pytest.approx(0.0707106, rel=1e-4)


def test_incomplete_seed_is_left_out() -> None:
    rows = method_rows(_results()[:-1], TASKS)
    assert rows[SPECIALISTS].seeds == 1


def test_gains_and_verdict() -> None:
    rows = method_rows(_results(), TASKS)
    assert relative_gain(0.5, 0.4) == pytest.approx(0.25)
    text = results_markdown(rows, TASKS)
    assert "+25.0%" in text and "| specialists |" in text
    assert "meets the 5% target" in verdict(rows, target=0.05)
    assert "falls short" in verdict(rows, target=0.5)


def test_specialists_get_a_task_share_of_the_budget() -> None:
    assert expand_methods(["uniform", "specialists"], TASKS) == [
        "uniform",
        "specialist:a",
        "specialist:b",
    ]
    over = run_overrides("specialist:a", 2, 32, 4, "runs/c")
    assert "scheduler.prompts_per_round=8" in over and "train.seed=2" in over
    assert not any(o.startswith("scheduler.") for o in run_overrides("astor", 0, 32, 4, "runs/c"))
