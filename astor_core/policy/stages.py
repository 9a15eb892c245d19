"""Policy stages for the flow, with plain inputs and outputs (no Prefect, no MLflow).

astor_core.run.stages drives a PolicyTrainer directly (sample, update, greedy,
save_checkpoint); these functions are the same steps for callers that hold a bare model or
engine (the CLI's `astor model eval`, the benchmarks, the 30-round experiment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from astor_core import TASKS
from astor_core.policy.rollout import (
    Rollout,
    RolloutConfig,
    RolloutEngine,
    SamplingParams,
    TransformersEngine,
)


def prompts_for(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each record's prompt, formatted by its task."""
    from astor_core.tasks import get_task

    cache: dict[str, Any] = {}
    out = []
    for r in records:
        task = cache.setdefault(r["task"], get_task(r["task"]))
        out.append(task.format_prompt(r))
    return out


def sample_round(
    engine: RolloutEngine,
    records: Sequence[Mapping[str, Any]],
    group_size: int,
    params: SamplingParams,
) -> list[Rollout]:
    """group_size rollouts per record, prompt-major."""
    return engine.generate(prompts_for(records), group_size, params)


def score_rollouts(
    records: Sequence[Mapping[str, Any]], rollouts: Sequence[Rollout], sandbox: Any = None
) -> list[float]:
    """Reward of each rollout from its record's task verifier (one score_batch call per task)."""
    from astor_core.tasks import score_mixed

    prompts = [records[r.prompt_index] for r in rollouts]
    rewards = score_mixed(
        [p["task"] for p in prompts], prompts, [r.completion for r in rollouts], sandbox
    )
    return [float(r.value) for r in rewards]


def update(
    trainer: Any,
    records: Sequence[Mapping[str, Any]],
    rollouts: Sequence[Rollout],
    rewards: Sequence[float],
    group_size: int,
    betas: Mapping[str, float],
) -> dict[str, Any]:
    """One GRPO step (PolicyTrainer.update) with each sample's task taken from its record."""
    tasks = [records[r.prompt_index]["task"] for r in rollouts]
    return trainer.update(rollouts, rewards, tasks, group_size, betas)


def held_out(
    records: Sequence[Mapping[str, Any]], per_task: int
) -> dict[str, list[dict[str, Any]]]:
    """The first per_task eval records of each task by prompt_id: the same items the training
    flow evaluates (astor_core.evaluation.eval_subset)."""
    from astor_core.evaluation import eval_subset

    return {t: rs for t, rs in eval_subset(records, TASKS, per_task).items() if rs}


def evaluate(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    per_task: int = 48,
    params: SamplingParams = SamplingParams(temperature=0.0, max_new_tokens=96),
    rollout: RolloutConfig = RolloutConfig(),
    sandbox: Any = None,
    samples: int = 1,
) -> dict[str, dict[str, float]]:
    """Held-out mean reward and solve rate per task, over `samples` completions per item
    (greedy and one completion by default; with sampling params and samples > 1, the expected
    reward of the sampling policy, i.e. mean@samples)."""
    from astor_core.evaluation import evaluate_generate

    engine = TransformersEngine(model, tokenizer, rollout)

    def generate(prompts: list[str]) -> list[str]:
        return [r.completion for r in engine.generate(prompts, 1, params)]

    items = {
        t: [r for r in rs for _ in range(samples)] for t, rs in held_out(records, per_task).items()
    }
    return evaluate_generate(generate, items, sandbox=sandbox)
