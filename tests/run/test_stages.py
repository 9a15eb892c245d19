"""Run stages: reward fan-out: chunks that mix tasks, scored each by its own task's verifier."""

from __future__ import annotations

import math
from types import SimpleNamespace

from astor_core.config import load_config
from astor_core.run import stages
from astor_core.tasks import get_task
from tests.tasks.conftest import record


def _round(chunk_size: int, group_size: int = 3):
    """A round of 2 commit-message prompts and 3 code-reasoning prompts (output mode, which
    needs no sandbox), G completions each, some right and some wrong."""
    records: dict[tuple[str, str], dict] = {}
    completions: list[str] = []
    for k in range(2):
        ref = f"fix bug number {k}"
        payload = {"diff": f"--- a/{k}\n", "prompt": f"diff {k}"}
        r = record("commit_message", payload, ref, tests=["add tests for the parser"])
        records[("commit_message", r["prompt_id"])] = r
        completions += [ref, "update readme", f"fix bug {k}"][:group_size]
    for k in range(3):
        code = "def f(x):\n    return x + 1\n"
        payload = {"mode": "output", "code": code, "entry_point": "f", "input": str(k)}
        payload["output"] = repr(k + 1)
        r = record("code_reasoning", payload, reference=repr(k + 1))
        records[("code_reasoning", r["prompt_id"])] = r
        completions += [repr(k + 1), repr(k), "not a literal("][:group_size]
    items = list(records)
    rollouts = [SimpleNamespace(completion=c) for c in completions]
    batch = stages.RolloutBatch(0, items, group_size, rollouts)
    cfg = load_config(None, [f"train.reward_chunk_size={chunk_size}"])
    return records, batch, cfg


def test_chunks_span_tasks_and_cover_every_completion_once() -> None:
    records, batch, cfg = _round(chunk_size=4)
    ctx = SimpleNamespace(cfg=cfg, train_records=records)
    chunks = stages.reward_chunks(ctx, batch)
    assert len(chunks) == math.ceil(len(batch) / 4)  # not one chunk per task and size
    assert sorted(i for c in chunks for i in c.indices) == list(range(len(batch)))
    assert any(len(set(c.tasks)) > 1 for c in chunks)
    tasks = batch.tasks_per_sample()
    for c in chunks:
        assert c.tasks == [tasks[i] for i in c.indices]
        assert c.completions == [batch.rollouts[i].completion for i in c.indices]


def test_mixed_chunk_scores_each_completion_with_its_task() -> None:
    records, batch, cfg = _round(chunk_size=64)
    ctx = SimpleNamespace(cfg=cfg, train_records=records)
    (chunk,) = stages.reward_chunks(ctx, batch)
    scored = stages.score_chunk(chunk)
    assert [s["index"] for s in scored] == chunk.indices
    for s, name, rec, completion in zip(
        scored, chunk.tasks, chunk.records, chunk.completions, strict=True
    ):
        (expected,) = get_task(name).score_batch([rec], [completion], None)
        assert (s["value"], s["reason"]) == (float(expected.value), expected.reason)
    values = stages.reward_vector(batch, scored)
    assert values[0] == 1.0 and values[3] == 1.0  # exact commit messages
    assert values[6] == 1.0 and values[7] == 0.0  # right and wrong output predictions
