"""The stages of one ASTOR round as plain functions (DESIGN.md, "One round, as data").

flows/training.py wraps each function below in one Prefect task; nothing here imports
Prefect or MLflow, so every stage can be called, tested and benchmarked on its own
(benchmarks/orchestration_overhead.py calls them directly to price the orchestration).

A run lives in ``train.run_dir``::

    run.json                 config, MLflow run id
    checkpoints/round-NNNNNN model, optimizer, LR schedule, RNG, scheduler + calibration state
    stats/round-NNNNNN.json  the round's per-task numbers (MLflow re-logs from these on resume)
    rounds.csv               one row per round and task (DVC plots)
    eval.json                the last held-out evaluation (DVC metrics)
"""

from __future__ import annotations

import atexit
import csv
import gc
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astor_core import TASKS
from astor_core.atomic import write_json_atomic
from astor_core.calibration import Calibrator, make_calibrator
from astor_core.config import AstorConfig
from astor_core.evaluation import eval_subset
from astor_core.scheduler import RoundPlan, Scheduler, make_scheduler
from astor_core.utility import PromptFeedback, RoundFeedback

__all__ = [
    "RewardChunk",
    "RolloutBatch",
    "RoundPlan",
    "RunContext",
    "evaluate",
    "open_run",
    "recompute_utility",
    "reward_chunks",
    "rollout",
    "save_round",
    "schedule_round",
    "score_chunk",
    "train_round",
]


def now() -> float:
    """Monotonic seconds (the flow times rounds with it)."""
    return time.perf_counter()


# --------------------------------------------------------------------------- pools


def pool_paths(pools_dir: str | Path) -> dict[str, Path]:
    """The default train and eval pool files."""
    root = Path(pools_dir)
    return {"train": root / "train.parquet", "eval": root / "eval.parquet"}


def pools_digest(pools_dir: str | Path) -> str:
    """Content digest of every pool file under pools_dir (md5 of the per-file md5s, as DVC
    hashes a directory); the train and eval pools must exist."""
    root = Path(pools_dir)
    for path in pool_paths(root).values():
        if not path.exists():
            raise FileNotFoundError(f"pool file {path} is missing: run `astor pools build` first")
    h = hashlib.md5()
    for path in sorted(root.rglob("*.parquet")):
        h.update(str(path.relative_to(root)).encode())
        h.update(hashlib.md5(path.read_bytes()).hexdigest().encode())
    return h.hexdigest()


def load_pool_frames(pools_dir: str | Path) -> dict[str, Any]:
    """The train and eval pools as pandas frames."""
    import pandas as pd

    return {name: pd.read_parquet(path) for name, path in pool_paths(pools_dir).items()}


def validate_pools(pools_dir: str | Path, validation: Any = None) -> dict[str, Any]:
    """Run the great-expectations suite and the reference self-check; raise on failure."""
    from astor_core.data.validation import ValidationConfig, validate_path

    report = validate_path(Path(pools_dir), validation or ValidationConfig())
    if not report.success:
        rules = sorted({f"{f.pool}:{f.rule}" for f in report.failures})
        raise PoolValidationError(
            f"pools at {pools_dir} failed validation ({len(report.failures)} rule(s): "
            f"{', '.join(rules)}); run `astor pools validate {pools_dir}` for the table"
        )
    return {"summary": report.pools, "self_check": report.self_check}


class PoolValidationError(RuntimeError):
    """The pools broke a validation rule: nothing downstream may run."""


def _records(frame: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.to_dict(orient="records")]


# --------------------------------------------------------------------------- run state


class RunContext:
    """Live objects of one training run (a plain class, not a dataclass: Prefect does not
    walk it when it is passed between task runs in the same process)."""

    def __init__(self, cfg: AstorConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = str(run_dir)
        self.tasks: list[str] = list(TASKS)
        self.round = 0
        self.mlflow_run_id: str | None = None
        self.train_records: dict[tuple[str, str], dict[str, Any]] = {}
        self.eval_records: dict[str, list[dict[str, Any]]] = {}
        self.scheduler: Scheduler
        self.calibrator: Calibrator
        self.policy: Any = None
        """astor_core.policy.trainer.PolicyTrainer: model, reference, optimizer, engine."""
        self.last_plan: RoundPlan | None = None


def _run_meta_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "run.json"


def save_run_meta(ctx: RunContext) -> None:
    """Persist the run's identity (config and MLflow run id) atomically."""
    meta = {"config": ctx.cfg.to_dict(), "mlflow_run_id": ctx.mlflow_run_id}
    write_json_atomic(_run_meta_path(ctx.run_dir), meta)


def scheduler_pools(
    records: Sequence[Mapping[str, Any]], tasks: Sequence[str]
) -> dict[str, list[str]]:
    """{task: prompt_ids} in a stable order (sorted ids), as the scheduler takes them."""
    out: dict[str, list[str]] = {t: [] for t in tasks}
    for r in records:
        if r["task"] in out:
            out[r["task"]].append(str(r["prompt_id"]))
    return {t: sorted(ids) for t, ids in out.items()}


def open_run(cfg: AstorConfig) -> RunContext:
    """Build a run from its config, or resume it from its last complete checkpoint."""
    from astor_core.policy.trainer import PolicyTrainer

    run_dir = Path(cfg.train.run_dir)
    ctx = RunContext(cfg, run_dir)
    frames = load_pool_frames(cfg.data.pools_dir)
    train = _records(frames["train"])
    ctx.train_records = {(r["task"], str(r["prompt_id"])): r for r in train}
    ctx.eval_records = eval_subset(
        _records(frames["eval"]), ctx.tasks, cfg.train.eval_items_per_task
    )
    ctx.scheduler = make_scheduler(
        cfg.train.scheduler, scheduler_pools(train, ctx.tasks), cfg.scheduler, cfg.train.seed
    )
    ctx.calibrator = make_calibrator(cfg.train.scheduler, ctx.tasks, cfg.calibration)
    ctx.policy = PolicyTrainer.from_config(cfg, seed=cfg.train.seed)
    meta_path = _run_meta_path(run_dir)
    if meta_path.exists():
        ctx.mlflow_run_id = json.loads(meta_path.read_text()).get("mlflow_run_id")
    extra = ctx.policy.resume(checkpoint_root(ctx))
    if extra is not None:
        ctx.scheduler.load_state_dict(extra["scheduler"])
        ctx.calibrator.load_state_dict(extra["calibrator"])
        ctx.round = int(extra["round"]) + 1
    # The ~1M objects alive now (libraries, tokenizer, model, pools) live as long as the run:
    # move them out of the collector's generations, so that a full collection during a round
    # walks only what the rounds allocate (measured: ~0.5 s per full collection otherwise,
    # docs/PERFORMANCE.md "Orchestration overhead"). Cycles among them are never collected,
    # which costs nothing for objects that outlive the run anyway.
    gc.freeze()
    return ctx


def checkpoint_root(ctx: RunContext) -> Path:
    return Path(ctx.run_dir) / "checkpoints"


# --------------------------------------------------------------------------- the round


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


def rollout(ctx: RunContext, plan: RoundPlan) -> RolloutBatch:
    """Sample G completions per scheduled prompt from the current policy."""
    from astor_core.tasks import get_task

    records = [ctx.train_records[item] for item in plan.items]
    prompts = [get_task(r["task"]).format_prompt(r) for r in records]
    rollouts = ctx.policy.sample(prompts, plan.samples_per_prompt, seed=_round_seed(ctx))
    return RolloutBatch(plan.round_idx, list(plan.items), plan.samples_per_prompt, rollouts)


def _round_seed(ctx: RunContext) -> int:
    return int(ctx.cfg.train.seed) * 100_003 + ctx.round


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
    """Score one chunk, each completion with its task's verifier in the sandbox; one plain
    dict per completion, in the chunk's order."""
    from astor_core.config import build_section
    from astor_core.tasks import RewardConfig, score_mixed

    rewards = score_mixed(
        chunk.tasks,
        chunk.records,
        chunk.completions,
        sandbox_for(chunk.sandbox_config),
        build_section(RewardConfig, chunk.rewards_config, "rewards"),
    )
    return [
        {"index": i, "value": float(r.value), "reason": r.reason, "passed": bool(r.passed)}
        for i, r in zip(chunk.indices, rewards, strict=True)
    ]


_SANDBOXES: dict[str, Any] = {}
_SANDBOX_LOCK = threading.Lock()


def sandbox_for(config: Mapping[str, Any]) -> Any:
    """The process's sandbox for one sandbox config (one warm pool per distinct config;
    every reward worker process, local or Dask, builds its own on first use)."""
    from astor_core.config import build_section
    from astor_core.sandbox import Sandbox, SandboxConfig

    key = json.dumps(config, sort_keys=True, default=str)
    with _SANDBOX_LOCK:
        box = _SANDBOXES.get(key)
        if box is None or box._closed:
            cfg = build_section(SandboxConfig, config, "sandbox")
            box = _SANDBOXES[key] = Sandbox(cfg.limits, cfg.workers, cfg)
            atexit.register(box.close)
        return box


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
    """One GRPO update with each sample's KL coefficient taken from its task's beta_k."""
    rewards = reward_vector(batch, scored)
    return ctx.policy.update(
        batch.rollouts, rewards, batch.tasks_per_sample(), batch.group_size, ctx.calibrator.betas()
    )


def recompute_utility(
    ctx: RunContext,
    batch: RolloutBatch,
    scored: Sequence[Mapping[str, Any]],
    update: Mapping[str, Any],
) -> dict[str, Any]:
    """Feed the round to the scheduler (posteriors, LP, synergy) and the KL controllers;
    return the round's per-task record for tracking."""
    rewards = reward_vector(batch, scored)
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
    kl = {t: float(v) for t, v in update["kl"].items()}
    ctx.scheduler.update(
        RoundFeedback(
            round_idx=batch.round_idx,
            prompts=prompts,
            gradients=update.get("task_gradients"),
            pg_gradients=update.get("task_pg_gradients"),
            kl=kl,
        )
    )
    sched = ctx.scheduler.stats()
    utility = {t: sched["tasks"][t]["utility"] for t in ctx.tasks}
    n_samples = {
        t: int(np.sum([task == t for task in batch.tasks_per_sample()])) for t in ctx.tasks
    }
    betas_used = ctx.calibrator.betas()
    ctx.calibrator.update(kl, utility, n_samples)
    targets = ctx.calibrator.target_kls()
    per_task: dict[str, dict[str, float | None]] = {}
    for t in ctx.tasks:
        groups = [
            rewards[i * G : (i + 1) * G] for i, (task, _) in enumerate(batch.items) if task == t
        ]
        s = sched["tasks"][t]
        per_task[t] = {
            "utility": s["utility"],
            "learning_potential": s["learning_potential"],
            "share": s["share"],
            "rollouts_spent": float(s["rollouts_spent"]),
            "rollouts": float(n_samples[t]),
            "beta": betas_used[t],
            "beta_next": ctx.calibrator.betas()[t],
            "target_kl": targets[t],
            "kl": kl.get(t),
            "mean_reward": float(np.mean(np.concatenate(groups))) if groups else None,
            "zero_variance_frac": float(np.mean([np.ptp(g) == 0 for g in groups]))
            if groups
            else None,
            "informative_fraction": s["informative_fraction"],
        }
    synergy: dict[str, float] = {}
    for i, a in enumerate(ctx.tasks):
        for j, b in enumerate(ctx.tasks[i + 1 :], start=i + 1):
            for suffix, matrix in (
                ("", "synergy"),
                ("/raw", "synergy_raw"),
                ("/floor", "synergy_floor"),
            ):
                value = sched[matrix][i][j]
                if value is not None and not math.isnan(float(value)):
                    synergy[f"{a}/{b}{suffix}"] = float(value)
    return {
        "round": batch.round_idx,
        "scheduler": ctx.cfg.train.scheduler,
        "per_task": per_task,
        "synergy": synergy,
        "synergy_matrix": sched["synergy"],
        "synergy_raw_matrix": sched["synergy_raw"],
        "synergy_floor_matrix": sched["synergy_floor"],
        "global": {k: float(v) for k, v in update.get("metrics", {}).items()},
    }


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

    sandbox = sandbox_for(asdict(cfg.sandbox))
    return evaluate_generate(policy.greedy, records_by_task, cfg.rewards, sandbox)


# --------------------------------------------------------------------------- persistence


def _stats_path(ctx: RunContext, round_idx: int) -> Path:
    return Path(ctx.run_dir) / "stats" / f"round-{round_idx:06d}.json"


def save_round(ctx: RunContext, stats: Mapping[str, Any]) -> Path:
    """Write the round's stats, then the checkpoint (complete marker last), then advance."""
    write_json_atomic(_stats_path(ctx, ctx.round), stats)
    extra = {
        "round": ctx.round,
        "scheduler": ctx.scheduler.state_dict(),
        "calibrator": ctx.calibrator.state_dict(),
    }
    path = ctx.policy.save_checkpoint(checkpoint_root(ctx), ctx.round, extra)
    write_rounds_csv(ctx)
    if stats.get("eval"):
        write_json_atomic(Path(ctx.run_dir) / "eval.json", stats["eval"])
    ctx.round += 1
    return Path(path)


def load_round_stats(ctx: RunContext, round_idx: int) -> dict[str, Any] | None:
    path = _stats_path(ctx, round_idx)
    return json.loads(path.read_text()) if path.exists() else None


def load_history(ctx: RunContext) -> list[dict[str, Any]]:
    """Stats of every completed round, in order."""
    out = []
    for r in range(ctx.round):
        stats = load_round_stats(ctx, r)
        if stats is not None:
            out.append(stats)
    return out


ROUND_COLUMNS: tuple[str, ...] = (
    "round", "task", "utility", "learning_potential", "share", "rollouts", "rollouts_spent",
    "beta", "target_kl", "kl", "mean_reward", "zero_variance_frac",
)  # fmt: skip
"""Columns of rounds.csv (the DVC plots file)."""


def write_rounds_csv(ctx: RunContext) -> Path:
    """rounds.csv from the stats of every completed round (rewritten whole: resume-safe)."""
    path = Path(ctx.run_dir) / "rounds.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ROUND_COLUMNS)
        writer.writeheader()
        history = load_history(ctx) + [load_round_stats(ctx, ctx.round) or {}]
        for stats in history:
            for task, row in (stats.get("per_task") or {}).items():
                writer.writerow(
                    {"round": stats["round"], "task": task}
                    | {c: row.get(c) for c in ROUND_COLUMNS[2:]}
                )
    os.replace(tmp, path)
    return path


def final_eval(ctx: RunContext) -> dict[str, dict[str, float]]:
    """The last evaluation of the run (every run ends with one)."""
    for stats in reversed(load_history(ctx)):
        if stats.get("eval"):
            return stats["eval"]
    return evaluate(ctx)


def write_eval_table(ctx: RunContext, table: Mapping[str, Mapping[str, float]]) -> Path:
    """eval_table.md: one row per task."""
    path = Path(ctx.run_dir) / "eval_table.md"
    path.write_text(eval_markdown(table))
    return path


def eval_markdown(table: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table of held-out metrics.

    >>> print(eval_markdown({"code_generation": {"mean_reward": 0.5, "solve_rate": 0.25}}))
    | task | mean_reward | solve_rate |
    |---|---|---|
    | code_generation | 0.500 | 0.250 |
    <BLANKLINE>
    """
    metrics = sorted({m for row in table.values() for m in row})
    lines = ["| task | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for task, row in table.items():
        lines.append(
            f"| {task} | " + " | ".join(f"{row.get(m, float('nan')):.3f}" for m in metrics) + " |"
        )
    return "\n".join(lines) + "\n"


def summary_line(stats: Mapping[str, Any]) -> str:
    """One log line per round: share and mean reward per task."""
    parts = []
    for task, row in stats["per_task"].items():
        reward = row.get("mean_reward")
        parts.append(
            f"{task}: w={row['share']:.2f} R={'-' if reward is None else f'{reward:.2f}'} beta={row['beta']:.3g}"
        )
    return "; ".join(parts)


def summary_markdown(
    ctx: RunContext, table: Mapping[str, Mapping[str, float]], mlflow_run_id: str
) -> str:
    return (
        f"# ASTOR run `{Path(ctx.run_dir).name}`\n\n"
        f"- scheduler: `{ctx.cfg.train.scheduler}`, rounds: {ctx.round}, "
        f"B={ctx.cfg.scheduler.prompts_per_round}, G={ctx.cfg.scheduler.samples_per_prompt}\n"
        f"- MLflow run: `{mlflow_run_id}`\n- run dir: `{ctx.run_dir}`\n\n"
        f"## Held-out evaluation\n\n{eval_markdown(table)}"
    )


def final_policy_dir(ctx: RunContext) -> Path:
    """The final policy (model + tokenizer) saved under run_dir/policy."""
    return Path(ctx.policy.export(Path(ctx.run_dir) / "policy"))


def plot_history(history: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """Utility / beta / KL / reward trajectories per task and the last synergy heatmap.

    Plain `matplotlib.figure.Figure` objects, outside pyplot's registry of open figures: they
    are freed with their last reference, so a long-lived process (`astor serve`, `astor
    compare`) that plots every run does not accumulate them."""
    from matplotlib.figure import Figure

    figures: dict[str, Any] = {}
    rounds = [h["round"] for h in history]
    for series in ("utility", "share", "beta", "kl", "mean_reward", "learning_potential"):
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for task in tasks:
            ys = [h["per_task"][task].get(series) for h in history]
            ax.plot(rounds, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=task)
        ax.set_xlabel("round")
        ax.set_ylabel(series)
        ax.set_title(f"{series} per task")
        ax.legend(fontsize=7)
        figures[f"{series}_trajectory"] = fig
    if history:
        matrix = np.asarray(history[-1]["synergy_matrix"], dtype=float)
        fig = Figure(figsize=(5, 4.2))
        ax = fig.subplots()
        im = ax.imshow(np.nan_to_num(matrix), vmin=-1, vmax=1, cmap="RdBu")
        short = [t.replace("_", "\n") for t in tasks]
        ax.set_xticks(range(len(tasks)), short, fontsize=7)
        ax.set_yticks(range(len(tasks)), short, fontsize=7)
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax)
        ax.set_title("synergy S (EMA of gradient cosines)")
        figures["synergy_heatmap"] = fig
    return figures
