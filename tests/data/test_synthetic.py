from __future__ import annotations

import json

import pytest

from astor_core import TASKS
from astor_core.data.synthetic import SyntheticConfig, generate, iter_items, prompt_text
from astor_core.data.templates import TEMPLATES


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_items_other_seed_other_items(task: str) -> None:
    a = generate(task, 2, 30, seed=5)
    assert a == generate(task, 2, 30, seed=5)
    assert [r["prompt_id"] for r in a] != [r["prompt_id"] for r in generate(task, 2, 30, seed=6)]


@pytest.mark.parametrize("task", TASKS)
def test_items_are_short_distinct_and_tagged(task: str) -> None:
    cfg = SyntheticConfig()
    for d in range(5):
        items = generate(task, d, 40, seed=0)
        assert len({r["prompt_id"] for r in items}) == 40
        for r in items:
            assert r["task"] == task and r["difficulty"] == d and r["source"] == "synthetic"
            assert len(prompt_text(r)) <= cfg.max_prompt_chars
            assert 0 < len(r["reference"]) <= cfg.max_completion_chars


def test_difficulty_grows_with_level() -> None:
    levels = {t.level for t in TEMPLATES}
    assert levels == {0, 1, 2, 3, 4}
    mean_len = [
        sum(len(r["reference"]) for r in generate("code_generation", d, 60, seed=0)) / 60
        for d in range(5)
    ]
    assert mean_len == sorted(mean_len) and mean_len[4] > 3 * mean_len[0]
    easy = json.loads(generate("code_generation", 0, 1, seed=0)[0]["payload"])["prompt"]
    assert easy.count("\n") <= 8


def test_exhausted_space_and_bad_difficulty_are_errors() -> None:
    tiny = SyntheticConfig(
        function_names=("f",), int_params=("x",), str_params=("s",), max_draws_per_item=50
    )
    with pytest.raises(RuntimeError, match="exhausted"):
        generate("unit_test_generation", 0, 10_000, seed=0, cfg=tiny)
    with pytest.raises(ValueError, match="difficulty 9"):
        next(iter_items("code_generation", 9, 0))


def _check_references(n_per_difficulty: int, seed: int, ut_per_difficulty: int) -> None:
    from astor_core.tasks import get_task
    from astor_core.tasks.commit_contrast import attach_contrast

    for task in TASKS:
        verifier = get_task(task)
        n = ut_per_difficulty if task == "unit_test_generation" else n_per_difficulty
        for d in range(5):
            items = attach_contrast(generate(task, d, n, seed=seed), 8, 16)  # as pools do
            rewards = verifier.score_batch(items, [r["reference"] for r in items])
            bad = [
                (r["prompt_id"], r["reference"], w.reason)
                for r, w in zip(items, rewards, strict=True)
                if w.value < 1.0
            ]
            assert not bad, f"{task} d{d}: references below 1.0: {bad[:3]}"


def test_every_reference_scores_one_200_per_task() -> None:
    """200 items per task (40 per difficulty) through the real verifiers; 50 for
    unit_test_generation, whose mutation verifier costs ~30x more per item."""
    _check_references(40, seed=11, ut_per_difficulty=10)


@pytest.mark.slow
def test_every_reference_scores_one_2000_per_task() -> None:
    """2,000 items per task (400 per difficulty) through the real verifiers."""
    _check_references(400, seed=12, ut_per_difficulty=400)
