"""Commit messages: B-Norm BLEU (Tao et al. 2021), ROUGE-L, metric choice, reasons, and the
contrast with other commits' references that leaves diff-independent messages nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from astor_core.tasks import CommitMessageConfig, get_task
from astor_core.tasks.base import RecordError
from astor_core.tasks.commit_contrast import attach_contrast, choose_contrast
from astor_core.tasks.commit_message import (
    CommitMessageTask,
    bnorm_bleu,
    bnorm_corpus,
    bnorm_tokenize,
    commit_message_reward,
    rouge_l,
)
from tests.tasks.conftest import record

SHARED_NNGEN = Path("/work/shared/datasets/nngen")


CONTRAST = ["Add tests for the parser", "Bump version to 2.1", "Update README.md"]


def msg_record(reference: str, contrast: list[str] | None = None) -> dict:
    payload = {"diff": "--- a/x\n+++ b/x\n", "prompt": "diff:\n--- a/x\n+++ b/x\nmessage:"}
    return record("commit_message", payload, reference=reference, tests=contrast or CONTRAST)


def test_tokenisation_is_lowercase_and_splits_punctuation_and_underscores() -> None:
    assert bnorm_tokenize("Bump foo_bar to 2.0, fix #12!") == [
        "bump", "foo", "_", "bar", "to", "2", ".", "0", ",", "fix", "#", "12", "!",
    ]  # fmt: skip
    assert bnorm_tokenize("") == []


def test_bnorm_hand_computed() -> None:
    # hyp "fix bug" vs ref "fix the bug": 1-grams 2/2, 2-grams (0+1)/(1+1), 3/4-grams 1/1;
    # brevity exp(1 - 4/3).
    expected = math.exp((math.log(1.0) + math.log(0.5) + 0 + 0) / 4 + (1 - 4 / 3))
    assert bnorm_bleu("fix the bug", "fix bug") == pytest.approx(expected)
    assert bnorm_bleu("Fix the bug", "fix THE bug") == 1.0
    assert bnorm_bleu("fix the bug", "fix the bug please now") < 1.0  # 1-gram precision drops
    assert bnorm_bleu("a b c d", "w x y z") < 1e-70  # no unigram match: log(tiny)/4, effectively 0


def test_rouge_l_and_corpus() -> None:
    assert rouge_l("fix the bug", "fix the bug") == 1.0
    assert rouge_l("fix the bug", "the fix") == pytest.approx(
        2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)
    )
    assert bnorm_corpus(["a b", "c d"], ["a b", "x y"]) == pytest.approx(50.0, abs=1e-6)


@pytest.mark.parametrize("metric", ["bnorm", "rouge_l", "mix"])
def test_metric_choice(metric: str) -> None:
    cfg = CommitMessageConfig(metric=metric)
    ref, hyp = "fix null check in parser", "fix parser null check"
    reward = commit_message_reward(ref, hyp, ["add tests"], cfg)
    bleu, rouge = bnorm_bleu(ref, hyp), rouge_l(ref, hyp)
    expected = {"bnorm": bleu, "rouge_l": rouge, "mix": 0.5 * bleu + 0.5 * rouge}[metric]
    assert reward.info["metric"] == pytest.approx(expected)
    # nothing in common with the contrast reference: the contrast costs nothing
    assert reward.value == pytest.approx(expected)
    assert reward.reason == "scored" and not reward.passed


def test_task_batch_reasons_and_first_line() -> None:
    task = get_task("commit_message")
    rec = msg_record("Fix snapshot version")
    rewards = task.score_batch(
        [rec] * 3, ["fix snapshot version", "", "fix snapshot version\nmore"], sandbox=None
    )
    assert [r.reason for r in rewards] == ["scored", "invalid_format", "scored"]
    assert rewards[0].value == 1.0 and rewards[0].passed
    assert rewards[2].value < 1.0
    first = CommitMessageTask(CommitMessageConfig(first_line_only=True))
    assert first.score_batch([rec], ["fix snapshot version\nmore"])[0].value == 1.0
    assert task.format_prompt(rec).startswith("diff:")


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown commit-message metric"):
        CommitMessageConfig(metric="meteor")  # type: ignore[arg-type]


def test_nngen_references_score_one_against_themselves() -> None:
    with open("/work/shared/datasets/nngen/cleaned.test.msg", encoding="utf-8") as fh:
        messages = [line.strip() for line in fh][:200]
    assert bnorm_corpus(messages, messages) == pytest.approx(100.0)
    shuffled = messages[1:] + messages[:1]
    assert bnorm_corpus(messages, shuffled) < 20.0


def test_contrast_takes_what_other_references_explain() -> None:
    ref, hyp = "fix typo in parser", "fix typo"
    own = bnorm_bleu(ref, hyp)
    generic = commit_message_reward(ref, hyp, ["fix typo in docs"])  # as close to another
    assert generic.value == 0.0 and generic.info["metric"] == pytest.approx(own)
    partial = commit_message_reward(ref, hyp, ["fix a crash on start"])
    best = bnorm_bleu("fix a crash on start", hyp)
    assert 0.0 < partial.value == pytest.approx((own - best) / (1 - best))
    assert partial.info["contrast_max"] == pytest.approx(best)
    assert commit_message_reward(ref, "fix typo in docs", ["fix typo in docs"]).value == 0.0
    with pytest.raises(ValueError, match="at least one contrast"):
        commit_message_reward(ref, hyp, [])


def test_record_without_contrast_is_an_error_naming_it() -> None:
    rec = msg_record("Fix typo")
    rec["tests"] = "[]"
    with pytest.raises(RecordError, match=rf"record {rec['prompt_id']}: .*contrast"):
        get_task("commit_message").score_batch([rec], ["fix typo"])


def test_contrast_choice_is_deterministic_per_item_and_skips_duplicates() -> None:
    rows = [
        record("commit_message", {"diff": f"d{i}", "prompt": f"p{i}"}, reference=m)
        for i, m in enumerate(["Fix typo", "fix typo.", "fix TYPO", "a", "b", "c", "d", "e", "f"])
    ]
    for r in rows[-2:]:
        r["split"] = "eval"  # another split: never a contrast of a train item
    first = attach_contrast(rows, 0, 3)
    assert attach_contrast(list(reversed(rows)), 0, 3)[::-1] == first  # order-independent
    own = json.loads(first[0]["tests"])
    assert len(own) == 3 and "fix TYPO" not in own and not {"e", "f"} & set(own)
    assert len({tuple(bnorm_tokenize(m)) for m in own}) == 3  # no two alike
    assert json.loads(first[-1]["tests"]) == ["e"]
    assert choose_contrast(rows[0], rows[:1], 0, 3) == []
    with pytest.raises(ValueError, match=r"record .*: no other commit message .* split eval"):
        attach_contrast(rows[:-1], 0, 3)


def test_similar_contrast_comes_first_and_is_the_closest_messages() -> None:
    refs = ["fix typo in readme", "fix typo in docs", "fix typo", "bump version", "add tests"]
    rows = [
        record("commit_message", {"diff": f"d{i}", "prompt": f"p{i}"}, reference=m)
        for i, m in enumerate(refs)
    ]
    contrast = json.loads(attach_contrast(rows, 2, 3)[0]["tests"])
    assert contrast[:2] == ["fix typo in docs", "fix typo"]  # Jaccard 3/5, then 2/4
    assert contrast[2] in ("bump version", "add tests")
    # the generic part ("fix typo") of the right message earns nothing; the specific part does
    task = get_task("commit_message")
    rec = attach_contrast(rows, 2, 3)[0]
    generic, specific = task.score_batch([rec, rec], ["fix typo", "fix typo in readme"])
    assert generic.value == 0.0 and specific.value == 1.0


def test_synthetic_pool_commit_items_get_contrast_from_their_split() -> None:
    from astor_core.data.build import synthetic_records
    from astor_core.data.config import DataConfig

    records = synthetic_records(
        DataConfig(items_per_task=40, commit_contrast=5, commit_contrast_similar=2)
    )
    commits = [r for r in records if r["task"] == "commit_message"]
    by_split = {s: {r["reference"] for r in commits if r["split"] == s} for s in ("train", "eval")}
    for r in commits:
        contrast = json.loads(r["tests"])
        assert 1 <= len(contrast) <= 5 and r["reference"] not in contrast
        assert set(contrast) <= by_split[r["split"]]
    task = get_task("commit_message")
    rewards = task.score_batch(commits, [r["reference"] for r in commits])
    assert all(w.value == 1.0 and w.passed for w in rewards)  # references stay perfect
    constant = task.score_batch(commits, ["Rename function f to g"] * len(commits))
    plain = [w.info["metric"] for w in constant]
    assert sum(w.value for w in constant) < 0.25 * sum(plain)


def test_nngen_constant_earns_little_against_retrieval_like_messages() -> None:
    from astor_core.data.adapters import load_nngen

    records = [r for r in load_nngen(SHARED_NNGEN) if r["split"] == "eval"][:400]
    pool = attach_contrast(records, 8, 16)
    task = get_task("commit_message")
    refs = [r["reference"] for r in pool]
    constant = task.score_batch(pool, [". add fix to -"] * len(pool))
    perfect = task.score_batch(pool, refs)
    assert all(w.value == 1.0 for w in perfect)
    mean_plain = sum(w.info["metric"] for w in constant) / len(pool)
    mean_reward = sum(w.value for w in constant) / len(pool)
    assert mean_plain > 0.08  # the farm the plain B-Norm reward allowed
    assert mean_reward < 0.01
