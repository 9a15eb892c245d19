"""benchmarks/commit_reward_forgery.py: the search scorer equals the training reward, the
constant search finds the best constant, and the baselines are what they claim to be."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

from astor_core.tasks.commit_contrast import attach_contrast
from astor_core.tasks.commit_message import (
    CommitMessageConfig,
    CommitMessageTask,
    bnorm_tokenize,
)
from benchmarks.commit_reward_forgery import (
    ForgeryBenchConfig,
    constant_scorer,
    derangement,
    first_changed_line,
    plain_scorer,
    retrieve,
    search_constant,
)
from tests.tasks.conftest import record

MESSAGES = [
    "Fix typo in README",
    "Fix typo in docs",
    "Bump version to 1.2",
    "Bump version to 1.3",
    "Add parser tests",
    "Remove dead code in lexer",
    "Update CHANGELOG for 1.3",
    "Fix NPE in parser",
] * 2


def _records() -> list[dict]:
    rows = []
    for i, m in enumerate(MESSAGES):
        word = f"f{i % 8}"
        diff = f"--- a/{word}.txt\n+++ b/{word}.txt\n-{word} old {i}\n+{word} new {i}"
        rows.append(record("commit_message", {"diff": diff, "prompt": diff}, reference=m))
    return attach_contrast(rows, 2, 4)


def test_search_scorer_equals_score_batch_mean() -> None:
    records, reward = _records(), CommitMessageConfig()
    task = CommitMessageTask(reward)
    for message in ["fix typo", "bump version to 1.3", ". add fix to -", "Fix NPE in parser"]:
        exact = statistics.fmean(w.value for w in task.score_batch(records, [message] * 16))
        fast = constant_scorer(records, reward)(bnorm_tokenize(message))
        assert abs(fast - exact) < 1e-9, message
        plain = statistics.fmean(
            w.info["metric"] for w in task.score_batch(records, [message] * 16)
        )
        assert abs(plain_scorer(records, reward)(bnorm_tokenize(message)) - plain) < 1e-9


def test_search_finds_a_constant_at_least_as_good_as_its_seeds() -> None:
    records, reward = _records(), CommitMessageConfig()
    cfg = replace(ForgeryBenchConfig(), vocabulary=10, seeds=5, beam=2, max_tokens=4)
    score = plain_scorer(records, reward)
    best, value, tried = search_constant(records, score, cfg)
    assert tried > 20 and value == score(bnorm_tokenize(best))
    assert value >= max(score(bnorm_tokenize(m)) for m in ["fix typo", "bump version"])


def test_baselines() -> None:
    perm = derangement(50, seed=3)
    assert sorted(perm) == list(range(50)) and all(p != i for i, p in enumerate(perm))
    assert first_changed_line("--- a/x\n+++ b/x\n ctx\n-old line\n+new") == "old line"
    records = _records()
    train, test = records[:8], records[8:]
    # the second half repeats the first's files: the nearest train diff is that file's
    assert retrieve(train, test, k=3) == [r["reference"] for r in test]
    assert json.loads(test[0]["tests"])
