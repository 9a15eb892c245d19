"""Held-out evaluation: one greedy completion per item, scored by the task's own verifier.

Metrics per task: ``mean_reward`` (the task's reward in [0, 1]: fraction of tests passed,
fraction of mutants killed, B-Norm BLEU, exact prediction) and ``solve_rate`` (the fraction
of items whose reward says fully solved).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from astor_core.tasks import RewardConfig, get_task

Generate = Callable[[list[str]], list[str]]
"""Prompts -> one completion each (greedy, for evaluation)."""


def score_items(
    task: str,
    records: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    rewards: RewardConfig | None = None,
    sandbox: Any = None,
) -> dict[str, float]:
    """Mean reward and solve rate of completions on one task's records.

    >>> recs = [{"prompt_id": "a", "task": "commit_message", "payload": '{"diff": "d", "prompt": "p"}',
    ...          "reference": "fix typo in readme", "tests": '["bump version"]'}]
    >>> score_items("commit_message", recs, ["fix typo in readme"])["solve_rate"]
    1.0
    """
    verifier = get_task(task, rewards)
    if task != "commit_message" and sandbox is None:
        from astor_core.sandbox import default_sandbox

        sandbox = default_sandbox()
    scored = verifier.score_batch(list(records), list(completions), sandbox)
    values = np.array([r.value for r in scored], dtype=float)
    return {
        "mean_reward": float(values.mean()) if len(values) else float("nan"),
        "solve_rate": float(np.mean([r.passed for r in scored])) if scored else float("nan"),
        "items": float(len(scored)),
    }


def eval_subset(
    records: Sequence[Mapping[str, Any]], tasks: Sequence[str], per_task: int
) -> dict[str, list[dict[str, Any]]]:
    """The fixed held-out items per task: the first `per_task` by prompt_id (any pool order).

    >>> recs = [{"task": "a", "prompt_id": "2"}, {"task": "a", "prompt_id": "1"}, {"task": "b", "prompt_id": "3"}]
    >>> {t: [r["prompt_id"] for r in rs] for t, rs in eval_subset(recs, ["a", "b"], 1).items()}
    {'a': ['1'], 'b': ['3']}
    """
    by_task: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
    for r in sorted(records, key=lambda r: str(r["prompt_id"])):
        if r["task"] in by_task and len(by_task[r["task"]]) < per_task:
            by_task[r["task"]].append(dict(r))
    return by_task


def evaluate_generate(
    generate: Generate,
    records_by_task: Mapping[str, Sequence[Mapping[str, Any]]],
    rewards: RewardConfig | None = None,
    sandbox: Any = None,
) -> dict[str, dict[str, float]]:
    """Evaluate a generate function on held-out records, task by task."""
    out: dict[str, dict[str, float]] = {}
    for task, records in records_by_task.items():
        if not records:
            continue
        prompts = [get_task(task, rewards).format_prompt(r) for r in records]
        out[task] = score_items(task, records, generate(prompts), rewards, sandbox)
    return out


def macro_average(table: Mapping[str, Mapping[str, float]], metric: str = "mean_reward") -> float:
    """Unweighted mean of one metric over tasks.

    >>> macro_average({"a": {"mean_reward": 0.2}, "b": {"mean_reward": 0.4}})
    0.30000000000000004
    """
    return float(np.mean([row[metric] for row in table.values()]))
