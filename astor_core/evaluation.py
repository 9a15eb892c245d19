"""Held-out evaluation: completions per item, scored by the task's own verifier.

Metrics per task: ``mean_reward`` (the task's reward in [0, 1]: fraction of tests passed,
fraction of mutants killed, B-Norm BLEU, exact prediction) and ``solve_rate`` (the fraction
of items whose reward says fully solved). :func:`evaluate_generate` takes one (greedy)
completion per item; :func:`evaluate_sampled` takes k per item and reports mean@k (the
expected reward of the sampling policy), pass@k, the standard error over items and every
item's mean reward (for paired comparisons of two policies on the same items).

Held-out splits: the pools hold one held-out pool (``eval``). :func:`heldout_split` divides
it, once and for every reader, into ``validation`` (anything may be tuned on it) and
``test`` (only final reports read it) by a hash of each item's prompt_id, so the division
does not depend on pool order, on which other items exist, or on the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astor_core.tasks import RewardConfig, get_task

Generate = Callable[[list[str]], list[str]]
"""Prompts -> one completion each (greedy, for evaluation)."""
SampleK = Callable[[list[str], int], list[str]]
"""(prompts, k) -> k completions per prompt, prompt-major (prompt i's at [i*k, (i+1)*k))."""


HELDOUT_SPLITS: tuple[str, ...] = ("validation", "test")
"""The two halves of the held-out pool (see :func:`heldout_split`)."""


def heldout_split(prompt_id: str) -> str:
    """``validation`` or ``test``: the parity of the first byte of md5("heldout:" + prompt_id).

    >>> heldout_split("cg-0001"), heldout_split("cg-0002")
    ('test', 'validation')
    """
    digest = hashlib.md5(f"heldout:{prompt_id}".encode()).digest()
    return HELDOUT_SPLITS[digest[0] % 2]


def select_split(records: Sequence[Mapping[str, Any]], split: str) -> list[dict[str, Any]]:
    """The held-out records of one half (``validation`` / ``test``); every record for any
    other split name (``train``, ``eval``: a whole pool).

    >>> recs = [{"prompt_id": "cg-0001"}, {"prompt_id": "cg-0002"}]
    >>> [r["prompt_id"] for r in select_split(recs, "test")], len(select_split(recs, "eval"))
    (['cg-0001'], 2)
    """
    if split not in HELDOUT_SPLITS:
        return [dict(r) for r in records]
    return [dict(r) for r in records if heldout_split(str(r["prompt_id"])) == split]


def pool_of_split(split: str) -> str:
    """The pool file a split reads: ``validation`` and ``test`` are halves of ``eval``.

    >>> pool_of_split("test"), pool_of_split("train")
    ('eval', 'train')
    """
    return "eval" if split in HELDOUT_SPLITS else split


@dataclass
class TaskEval:
    """One task's held-out scores over ``samples`` completions per item."""

    mean_reward: float
    """Mean reward over items and samples (mean@k; the greedy reward when k = 1 greedy)."""
    solve_rate: float
    """Fraction of completions that fully solve their item."""
    pass_at_k: float
    """Fraction of items with at least one fully solving completion among the k."""
    stderr: float
    """Standard error of mean_reward over items (std of item means / sqrt(items))."""
    items: int
    """Items scored."""
    samples: int
    """Completions per item (k)."""
    item_rewards: dict[str, float]
    """prompt_id -> that item's mean reward over its k completions."""

    def metrics(self) -> dict[str, float]:
        """The scalar metrics (what tables, MLflow and DVC take)."""
        return {
            "mean_reward": self.mean_reward,
            "solve_rate": self.solve_rate,
            "pass_at_k": self.pass_at_k,
            "stderr": self.stderr,
            "items": float(self.items),
            "samples": float(self.samples),
        }


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
    """The fixed held-out items per task: the first `per_task` by prompt_id (any pool order);
    every item when `per_task` <= 0.

    >>> recs = [{"task": "a", "prompt_id": "2"}, {"task": "a", "prompt_id": "1"}, {"task": "b", "prompt_id": "3"}]
    >>> {t: [r["prompt_id"] for r in rs] for t, rs in eval_subset(recs, ["a", "b"], 1).items()}
    {'a': ['1'], 'b': ['3']}
    >>> [len(rs) for rs in eval_subset(recs, ["a", "b"], 0).values()]
    [2, 1]
    """
    by_task: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
    for r in sorted(records, key=lambda r: str(r["prompt_id"])):
        if r["task"] in by_task and (per_task <= 0 or len(by_task[r["task"]]) < per_task):
            by_task[r["task"]].append(dict(r))
    return by_task


def in_run_eval_items(
    records: Sequence[Mapping[str, Any]], tasks: Sequence[str], per_task: int
) -> dict[str, list[dict[str, Any]]]:
    """The items a training run and the demo evaluate on: the first `per_task` of the
    validation half per task, so curves anyone tunes from never read a test item.

    >>> recs = [{"task": "a", "prompt_id": "cg-0001"}, {"task": "a", "prompt_id": "cg-0002"}]
    >>> [r["prompt_id"] for r in in_run_eval_items(recs, ["a"], 0)["a"]]
    ['cg-0002']
    """
    return eval_subset(select_split(records, "validation"), tasks, per_task)


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


def evaluate_sampled(
    sample: SampleK,
    records_by_task: Mapping[str, Sequence[Mapping[str, Any]]],
    samples: int = 1,
    rewards: RewardConfig | None = None,
    sandbox: Any = None,
) -> dict[str, TaskEval]:
    """Score ``samples`` completions per item, task by task.

    >>> recs = {"commit_message": [
    ...     {"prompt_id": i, "task": "commit_message", "payload": '{"diff": "d", "prompt": "p"}',
    ...      "reference": "fix typo in readme", "tests": '["bump version"]'} for i in ("a", "b")]}
    >>> fake = lambda prompts, k: ["fix typo in readme", "add a test"] * len(prompts)
    >>> ev = evaluate_sampled(fake, recs, samples=2)["commit_message"]
    >>> ev.solve_rate, ev.pass_at_k, ev.items, ev.samples, sorted(ev.item_rewards)
    (0.5, 1.0, 2, 2, ['a', 'b'])
    """
    if samples < 1:
        raise ValueError(f"evaluation: samples must be >= 1, got {samples}")
    out: dict[str, TaskEval] = {}
    for task, records in records_by_task.items():
        if not records:
            continue
        verifier = get_task(task, rewards)
        if task != "commit_message" and sandbox is None:
            from astor_core.sandbox import default_sandbox

            sandbox = default_sandbox()
        prompts = [verifier.format_prompt(r) for r in records]
        completions = sample(prompts, samples)
        if len(completions) != len(records) * samples:
            raise RuntimeError(
                f"evaluation of {task}: {len(completions)} completions for "
                f"{len(records)} items x {samples} samples"
            )
        repeated = [r for r in records for _ in range(samples)]
        scored = verifier.score_batch(repeated, list(completions), sandbox)
        values = np.array([r.value for r in scored], dtype=float).reshape(len(records), samples)
        passed = np.array([r.passed for r in scored], dtype=bool).reshape(len(records), samples)
        item_means = values.mean(axis=1)
        n = len(records)
        out[task] = TaskEval(
            mean_reward=float(item_means.mean()),
            solve_rate=float(passed.mean()),
            pass_at_k=float(passed.any(axis=1).mean()),
            stderr=float(item_means.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            items=n,
            samples=samples,
            item_rewards={
                str(r["prompt_id"]): float(m) for r, m in zip(records, item_means, strict=True)
            },
        )
    return out


def macro_average(table: Mapping[str, Mapping[str, float]], metric: str = "mean_reward") -> float:
    """Unweighted mean of one metric over tasks.

    >>> macro_average({"a": {"mean_reward": 0.2}, "b": {"mean_reward": 0.4}})
    0.30000000000000004
    """
    return float(np.mean([row[metric] for row in table.values()]))


def load_saved_policy(cfg: Any, model_dir: str | Path, temperature: float, seed: int) -> Any:
    """A saved policy (save_pretrained directory) as a PolicyTrainer sampling at `temperature`
    with the run config's other sampling settings (cfg is an AstorConfig; it is not changed)."""
    import copy
    from dataclasses import replace

    from astor_core.policy.trainer import PolicyTrainer

    cfg = copy.copy(cfg)
    cfg.sections = dict(cfg.sections)
    sampling = replace(cfg.rollout.sampling, temperature=temperature)
    cfg.sections["rollout"] = replace(cfg.rollout, sampling=sampling)
    cfg.sections["model"] = replace(cfg.model, name_or_path=str(model_dir))
    return PolicyTrainer.from_config(cfg, seed=seed)


def policy_sampler(policy: Any, temperature: float, seed: int) -> SampleK:
    """The :data:`SampleK` of a policy: greedy at temperature 0 (one completion per item),
    else k seeded samples per prompt."""

    def sample(prompts: list[str], k: int) -> list[str]:
        if temperature == 0:
            return policy.greedy(prompts)
        return [r.completion for r in policy.sample(prompts, k, seed=seed)]

    return sample


def heldout_records(
    pools_dir: str | Path, split: str, tasks: Sequence[str], per_task: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """The items of one split (``train``, ``eval``, or a held-out half ``validation`` /
    ``test``) per task, first `per_task` by prompt_id (0: every item)."""
    from astor_core.data.pools import read_records

    records = select_split(read_records(pools_dir, pool_of_split(split)), split)
    return eval_subset(records, tasks, per_task)


def evaluate_saved_policy(
    cfg: Any,
    model_dir: str | Path,
    records_by_task: Mapping[str, Sequence[Mapping[str, Any]]],
    samples: int,
    temperature: float,
    seed: int,
    greedy: bool = True,
) -> dict[str, dict[str, TaskEval]]:
    """A saved policy on held-out records: ``mean_at_k`` (k = samples at temperature, seeded)
    and, when `greedy`, ``greedy`` (one greedy completion per item); metric -> task -> scores."""
    from astor_core.sandbox import shared_sandbox

    policy = load_saved_policy(cfg, model_dir, temperature, seed)
    sandbox = shared_sandbox(cfg.sandbox)
    sample = policy_sampler(policy, temperature, seed)
    out = {"mean_at_k": evaluate_sampled(sample, records_by_task, samples, cfg.rewards, sandbox)}
    if greedy:
        out["greedy"] = evaluate_sampled(
            policy_sampler(policy, 0.0, seed), records_by_task, 1, cfg.rewards, sandbox
        )
    return out
