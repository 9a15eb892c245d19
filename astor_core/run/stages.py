"""The stages of one ASTOR round: schedule, rollout, sandboxed reward, GRPO update, the
scheduler and KL-controller update, and the held-out evaluation."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from astor_core.config import AstorConfig
from astor_core.method.scheduler import RoundPlan
from astor_core.method.utility import PromptFeedback, RoundFeedback
from astor_core.run import ranks
from astor_core.run.context import RunContext
from astor_core.run.records import RoundStats, TaskRoundStats


def now() -> float:
    """Monotonic seconds (the flow times rounds with it)."""
    return time.perf_counter()


class RolloutBatch:
    """One round's prompts (prompt-major) and their G completions each.

    A plain class, like RunContext: Prefect passes it between task runs by reference and does
    not walk its ~20k token ids and log-probs looking for futures (docs/PERFORMANCE.md,
    "Orchestration overhead")."""

    def __init__(
        self, round_idx: int, items: list[tuple[str, str]], group_size: int, rollouts: list[Any]
    ) -> None:
        self.round_idx = round_idx
        self.items = items
        """(task, prompt_id) per prompt, in plan order."""
        self.group_size = group_size
        self.rollouts = rollouts
        """astor_core.policy.rollout.Rollout, prompt-major: prompt i's G rollouts at [i*G, (i+1)*G)."""

    def __len__(self) -> int:
        return len(self.rollouts)

    def tasks_per_sample(self) -> list[str]:
        return [task for task, _ in self.items for _ in range(self.group_size)]


@dataclass(frozen=True)
class RewardChunk:
    """A slice of a round's completions to score: plain, serialisable (ships to Dask). One
    chunk may hold several tasks: each completion is scored by its own task's verifier."""

    tasks: list[str]
    """Task of each completion."""
    records: list[dict[str, Any]]
    completions: list[str]
    indices: list[int]
    """Positions of these completions in the round's rollout list."""
    rewards_config: dict[str, Any]
    sandbox_config: dict[str, Any]


def schedule_round(ctx: RunContext) -> RoundPlan:
    """Level 1 (task shares) and level 2 (prompts) of the scheduler for this round."""
    plan = ctx.scheduler.plan(ctx.round)
    ctx.last_plan = plan
    return plan


def round_order(ctx: RunContext, plan: RoundPlan) -> ranks.RoundOrder:
    """What the round samples: the plan's prompts, formatted, and the round's seed."""
    from astor_core.tasks import get_task

    records = [ctx.train_records[item] for item in plan.items]
    prompts = [get_task(r["task"]).format_prompt(r) for r in records]
    seed = int(ctx.cfg.train.seed) * 100_003 + ctx.round
    return ranks.leader_order(plan.round_idx, plan.items, prompts, plan.samples_per_prompt, seed)


def rollout(ctx: RunContext, plan: RoundPlan) -> RolloutBatch:
    """Sample G completions per scheduled prompt from the current policy: the order goes to
    every rank, each samples its share, the shards are gathered (one process: all of it)."""
    order = ranks.share_order(ctx.policy, round_order(ctx, plan))
    assert order is not None
    return order.batch(ranks.sample_shard(ctx.policy, order))


def reward_chunks(ctx: RunContext, batch: RolloutBatch) -> list[RewardChunk]:
    """Split a round's completions into chunks of at most reward_chunk_size, one task after
    another (a chunk may span two tasks, so a round costs ceil(n / size) reward task runs)."""
    size = max(1, int(ctx.cfg.train.reward_chunk_size))
    tasks = batch.tasks_per_sample()
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i], i))
    rewards_cfg = asdict(ctx.cfg.rewards)
    sandbox_cfg = asdict(ctx.cfg.sandbox)
    return [
        RewardChunk(
            tasks=[tasks[i] for i in part],
            records=[ctx.train_records[batch.items[i // batch.group_size]] for i in part],
            completions=[batch.rollouts[i].completion for i in part],
            indices=part,
            rewards_config=rewards_cfg,
            sandbox_config=sandbox_cfg,
        )
        for part in (order[start : start + size] for start in range(0, len(order), size))
    ]


def score_chunk(chunk: RewardChunk) -> list[dict[str, Any]]:
    """Score one chunk, each completion with its task's verifier in the process's sandbox;
    one plain dict per completion, in the chunk's order."""
    from astor_core.config import build_section
    from astor_core.sandbox import SandboxConfig, shared_sandbox
    from astor_core.tasks import RewardConfig, score_mixed

    rewards = score_mixed(
        chunk.tasks,
        chunk.records,
        chunk.completions,
        shared_sandbox(build_section(SandboxConfig, chunk.sandbox_config, "sandbox")),
        build_section(RewardConfig, chunk.rewards_config, "rewards"),
    )
    return [
        {"index": i, "value": float(r.value), "reason": r.reason, "passed": bool(r.passed)}
        for i, r in zip(chunk.indices, rewards, strict=True)
    ]


def reward_vector(batch: RolloutBatch, scored: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Rewards in rollout order; every rollout must have exactly one score."""
    values = np.full(len(batch), np.nan)
    for s in scored:
        values[int(s["index"])] = float(s["value"])
    if np.isnan(values).any():
        missing = np.flatnonzero(np.isnan(values)).tolist()[:10]
        raise RuntimeError(f"round {batch.round_idx}: no reward for rollouts {missing}")
    return values


def train_round(
    ctx: RunContext, batch: RolloutBatch, scored: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """One GRPO update with each sample's KL coefficient taken from its task's beta_k, on
    every rank with the leader's rewards and betas (astor_core.run.ranks.update)."""
    order = ranks.update_order(reward_vector(batch, scored), ctx.calibrator.betas())
    return ranks.update(ctx.policy, batch, order)


def update_scheduler(
    ctx: RunContext, batch: RolloutBatch, rewards: np.ndarray, update: Mapping[str, Any]
) -> None:
    """Feed the round to the scheduler: rewards and the trainer's advantages per prompt
    (posteriors, LP), the per-task gradients (synergy) and the measured KL."""
    G = batch.group_size
    advantages = np.asarray(update["advantages"], dtype=np.float64)
    prompts = [
        PromptFeedback(
            task,
            pid,
            rewards[i * G : (i + 1) * G].tolist(),
            advantages[i * G : (i + 1) * G].tolist(),
        )
        for i, (task, pid) in enumerate(batch.items)
    ]
    ctx.scheduler.update(
        RoundFeedback(
            round_idx=batch.round_idx,
            prompts=prompts,
            gradients=update.get("task_gradients"),
            pg_gradients=update.get("task_pg_gradients"),
            kl={t: float(v) for t, v in update["kl"].items()},
        )
    )


def step_kl_controllers(
    ctx: RunContext, batch: RolloutBatch, kl: Mapping[str, float]
) -> dict[str, float]:
    """One step of each task's KL controller towards its utility-calibrated target; returns
    the betas this round was trained with."""
    utility = {t: ctx.scheduler.stats()["tasks"][t]["utility"] for t in ctx.tasks}
    tasks = batch.tasks_per_sample()
    n_samples = {t: sum(task == t for task in tasks) for t in ctx.tasks}
    betas_used = ctx.calibrator.betas()
    ctx.calibrator.update({t: float(v) for t, v in kl.items()}, utility, n_samples)
    return betas_used


def round_record(
    ctx: RunContext,
    batch: RolloutBatch,
    rewards: np.ndarray,
    update: Mapping[str, Any],
    betas_used: Mapping[str, float],
) -> RoundStats:
    """The round's typed record, read off the scheduler and calibrator after their updates."""
    sched = ctx.scheduler.stats()
    G = batch.group_size
    targets = ctx.calibrator.target_kls()
    betas_next = ctx.calibrator.betas()
    per_task: dict[str, TaskRoundStats] = {}
    for t in ctx.tasks:
        groups = [
            rewards[i * G : (i + 1) * G] for i, (task, _) in enumerate(batch.items) if task == t
        ]
        s = sched["tasks"][t]
        kl = update["kl"].get(t)
        per_task[t] = TaskRoundStats(
            utility=s["utility"],
            learning_potential=s["learning_potential"],
            share=s["share"],
            rollouts=len(groups) * G,
            rollouts_spent=int(s["rollouts_spent"]),
            beta=betas_used[t],
            beta_next=betas_next[t],
            target_kl=targets[t],
            kl=None if kl is None else float(kl),
            mean_reward=float(np.mean(np.concatenate(groups))) if groups else None,
            zero_variance_fraction=float(np.mean([np.ptp(g) == 0 for g in groups]))
            if groups
            else None,
            informative_fraction=s["informative_fraction"],
        )
    matrix = sched["synergy"]
    synergy: dict[str, float] = {}  # S used, the raw accumulated cosine and its noise floor
    for i, a in enumerate(ctx.tasks):
        for j, b in enumerate(ctx.tasks[i + 1 :], start=i + 1):
            for suffix, key in (
                ("", "synergy"),
                ("/raw", "synergy_raw"),
                ("/floor", "synergy_floor"),
            ):
                value = sched[key][i][j]
                if value is not None and not math.isnan(float(value)):
                    synergy[f"{a}/{b}{suffix}"] = float(value)
    return RoundStats(
        round=batch.round_idx,
        scheduler=ctx.cfg.train.scheduler,
        per_task=per_task,
        synergy=synergy,
        synergy_matrix=matrix,
        metrics={k: float(v) for k, v in update.get("metrics", {}).items()},
    )


def update_scheduler_and_kl(
    ctx: RunContext,
    batch: RolloutBatch,
    scored: Sequence[Mapping[str, Any]],
    update: Mapping[str, Any],
) -> RoundStats:
    """After the GRPO update: the scheduler update, the KL controllers' step and the round's
    record, in that order (the controllers read the updated utilities)."""
    rewards = reward_vector(batch, scored)
    update_scheduler(ctx, batch, rewards, update)
    betas_used = step_kl_controllers(ctx, batch, update["kl"])
    return round_record(ctx, batch, rewards, update, betas_used)


def eval_due(ctx: RunContext) -> bool:
    """Evaluate every train.eval_every rounds and after the last one."""
    every = max(1, int(ctx.cfg.train.eval_every))
    return (ctx.round + 1) % every == 0 or ctx.round + 1 >= ctx.cfg.train.rounds


def evaluate(ctx: RunContext) -> dict[str, dict[str, float]]:
    """Greedy held-out evaluation per task: mean reward and solve rate."""
    return evaluate_policy(ctx.policy, ctx.eval_records, ctx.cfg)


def evaluate_policy(
    policy: Any, records_by_task: Mapping[str, Sequence[Mapping[str, Any]]], cfg: AstorConfig
) -> dict[str, dict[str, float]]:
    """Greedy completions of `policy` on held-out records, scored with the run's rewards and sandbox."""
    from astor_core.evaluation import evaluate_generate
    from astor_core.sandbox import shared_sandbox

    return evaluate_generate(
        functools.partial(ranks.greedy, policy),
        records_by_task,
        cfg.rewards,
        shared_sandbox(cfg.sandbox),
    )
