"""The ASTOR training flow: the stages of DESIGN.md as Prefect task runs, tracked in MLflow.

Thin on purpose: each task calls one function of :mod:`astor_core.run` and logs. Under
`accelerate launch` this flow runs on rank 0 only; the other ranks follow it
(:mod:`astor_core.run.ranks`): the rollout, train-round and checkpoint stages meet them,
and with sharded weights the evaluation and the export too. The flow
reads the pools once, validates them (cached by their content hash), then for every round:
schedule, rollout, sandboxed reward (fanned out through a task runner), training round, the
scheduler and KL-controller update, evaluation every N rounds, checkpoint; at the end the
final policy is registered in MLflow's model registry. Which machine runs the flow is the
deployment's work pool (prefect.yaml: `astor-gpu` for the GPU worker); task tags only feed
concurrency limits. A killed run restarted with the same command resumes from its last
complete checkpoint and appends to the same MLflow run.
"""

# No `from __future__ import annotations` here: `flow.serve` hands each run to a spawned
# process with the flow functions cloudpickled by value (only the globals their code uses),
# so string annotations like "Sequence[...]" would not resolve when Prefect validates the
# subflow parameters (PydanticUserError: model not fully defined).

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from astor_core.config import AstorConfig, load_config
from astor_core.data.pools import Pools, read_pools
from astor_core.method.scheduler import RoundPlan
from astor_core.policy.rollout import RolloutConfig, check_training_sync
from astor_core.run import ranks, report, stages, store
from astor_core.run.context import RunContext
from astor_core.run.context import open_run as open_run_context
from astor_core.run.records import RoundStats
from astor_core.run.stages import RewardChunk, RolloutBatch
from flows import registry, tracking
from flows.runners import make_task_runner

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _validation_key(_ctx: Any, parameters: dict[str, Any]) -> str:
    """Pool validation is cached by the pools' content digest and the rules: same bytes,
    same rules, same verdict (a failed validation raises, so it is never cached)."""
    rules = hashlib.md5(repr(parameters["validation"]).encode()).hexdigest()[:12]
    return f"astor-validate-pools-{parameters['digest']}-{rules}"


@task(name="read-pools", cache_policy=NO_CACHE)
def load_pools(pools_dir: str) -> Pools:
    return read_pools(pools_dir)


@task(name="validate-pools", cache_key_fn=_validation_key, persist_result=True)
def validate_pools(pools: Pools, digest: str, validation: Any) -> dict[str, Any]:
    from astor_core.data.validation import validate_pools_dir

    summary = validate_pools_dir(pools.root, validation, contents=pools.files)
    get_run_logger().info("pools %s valid: %s", digest[:12], summary)
    return summary


@task(name="open-run", cache_policy=NO_CACHE)
def open_run(cfg: AstorConfig, pools: Pools) -> RunContext:
    ctx = open_run_context(cfg, pools)
    get_run_logger().info("run %s starts at round %d", ctx.run_dir, ctx.round)
    return ctx


@task(name="schedule", cache_policy=NO_CACHE, task_run_name="schedule-r{ctx.round}")
def schedule(ctx: RunContext) -> RoundPlan:
    return stages.schedule_round(ctx)


@task(name="rollout", cache_policy=NO_CACHE)
def rollout(ctx: RunContext, plan: RoundPlan) -> RolloutBatch:
    batch = stages.rollout(ctx, plan)
    get_run_logger().info("round %d: %d rollouts", ctx.round, len(batch))
    return batch


@task(name="sandboxed-reward", cache_policy=NO_CACHE)
def sandboxed_reward(chunk: RewardChunk) -> list[dict[str, Any]]:
    return stages.score_chunk(chunk)


def _map_rewards(chunks: Sequence[RewardChunk], retries: int) -> list[dict[str, Any]]:
    futures = sandboxed_reward.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=1)
    ).map(list(chunks))
    return [r for chunk in futures.result() for r in chunk]


@flow(name="astor-rewards")
def reward_fanout(chunks: Sequence[RewardChunk], retries: int) -> list[dict[str, Any]]:
    """Score every reward chunk through this subflow's task runner (a Dask cluster)."""
    return _map_rewards(chunks, retries)


def score_round(chunks: Sequence[RewardChunk], cfg: AstorConfig) -> list[dict[str, Any]]:
    """Reward fan-out: on the training flow's own thread pool by default; through a subflow
    whose task runner is a Dask cluster when train.task_runner says so (only the plain
    reward chunks leave the process, never the model)."""
    if cfg.train.task_runner == "thread":
        return _map_rewards(chunks, cfg.train.reward_retries)
    runner = make_task_runner(
        cfg.train.task_runner, cfg.train.task_runner_workers, cfg.train.dask_address
    )
    return reward_fanout.with_options(task_runner=runner)(chunks, cfg.train.reward_retries)


@task(name="train-round", cache_policy=NO_CACHE)
def train_round(
    ctx: RunContext, batch: RolloutBatch, rewards: list[dict[str, Any]]
) -> dict[str, Any]:
    return stages.train_round(ctx, batch, rewards)


@task(name="update-scheduler-and-kl", cache_policy=NO_CACHE)
def update_scheduler_and_kl(
    ctx: RunContext, batch: RolloutBatch, rewards: list[dict[str, Any]], update: dict[str, Any]
) -> RoundStats:
    return stages.update_scheduler_and_kl(ctx, batch, rewards, update)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(ctx: RunContext) -> dict[str, dict[str, float]]:
    return stages.evaluate(ctx)


@task(name="register-policy", cache_policy=NO_CACHE)
def register_policy(run_id: str, policy_dir: str, name: str, tags: dict[str, str]) -> str:
    version = registry.log_policy_model(run_id, policy_dir, name, tags)
    get_run_logger().info("policy registered as %s version %s", name, version.version)
    return f"models:/{name}/{version.version}"


@task(name="checkpoint", cache_policy=NO_CACHE)
def checkpoint(ctx: RunContext, stats: RoundStats) -> str:
    return str(store.save_round(ctx, stats))


def _flow_run_id() -> str:
    run = getattr(get_run_context(), "flow_run", None)
    return str(run.id) if run is not None else "none"


def _open_tracker(ctx: RunContext, cfg: AstorConfig, pools: Pools) -> tracking.RunTracker:
    """Create the MLflow run on a fresh start (its id kept in the run dir); re-open it on resume."""
    run_id = tracking.stored_run_id(ctx.run_dir)
    tracker = tracking.RunTracker(
        cfg.train.experiment, run_id=run_id, run_name=os.path.basename(ctx.run_dir)
    )
    if run_id is None:
        if cfg.train.parent_run_id:
            tracker.set_tags({"mlflow.parentRunId": cfg.train.parent_run_id})
        tracking.store_run_id(ctx.run_dir, tracker.run_id)
        tracker.log_params(tracking.flatten_params(cfg.to_dict()))
        tracker.log_pools(pools.frames, pools.digest, cfg.data.pools_dir)
    tracker.set_tags(
        {
            "prefect.flow_run_id": _flow_run_id(),
            "git.commit": tracking.git_commit(),
            "dvc.pools_digest": pools.digest,
            "astor.scheduler": cfg.train.scheduler,
            "astor.run_dir": ctx.run_dir,
        }
    )
    return tracker


def _relog_missing(tracker: tracking.RunTracker, ctx: RunContext) -> None:
    """After a crash between checkpoint and logging, log the rounds MLflow lacks."""
    for step in tracking.missing_steps(tracker, "round_time_s", ctx.round):
        stats = store.load_round_stats(ctx.run_dir, step)
        if stats is not None:
            tracker.log_round(step, tracking.round_metrics(stats))


@flow(name="astor-train", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def train_flow(
    config_path: str = "params.yaml", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Train one policy with one scheduler; resume the run in train.run_dir if it exists."""
    logger = get_run_logger()
    cfg = load_config(config_path, overrides or [])
    check_training_sync(cfg.sections.get("rollout", RolloutConfig()))  # before any run is opened
    pools = load_pools(cfg.data.pools_dir)
    validate_pools(pools, pools.digest, cfg.data.validation)
    ctx = open_run(cfg, pools)
    tracker = _open_tracker(ctx, cfg, pools)
    _relog_missing(tracker, ctx)
    rollout_stage = rollout.with_options(
        # a retried rollout would meet the other ranks' collectives out of step
        retries=cfg.train.rollout_retries if ranks.world(ctx.policy)[1] == 1 else 0,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        timeout_seconds=cfg.train.stage_timeout_s,
    )
    train_stage = train_round.with_options(
        timeout_seconds=cfg.train.stage_timeout_s, tags=set(cfg.train.train_stage_tags)
    )
    try:
        while ctx.round < cfg.train.rounds:
            started = stages.now()
            plan = schedule(ctx)
            batch = rollout_stage(ctx, plan)
            # quote(): the round's reward dicts go to the next stages as they are; Prefect
            # does not walk them for futures (docs/PERFORMANCE.md, "Orchestration overhead")
            rewards = quote(score_round(stages.reward_chunks(ctx, batch), cfg))
            update = train_stage(ctx, batch, rewards)
            stats = update_scheduler_and_kl(ctx, batch, rewards, update)
            if stages.eval_due(ctx):
                stats = stats.with_eval(evaluate(ctx))
            stats = stats.with_metrics(round_time_s=stages.now() - started)
            checkpoint(ctx, stats)
            tracker.log_round(stats.round, tracking.round_metrics(stats))
            logger.info("round %d done: %s", stats.round, report.summary_line(stats))
        result = _finish(ctx, tracker, cfg, pools.digest)  # sharded, the export meets them
        ranks.release(ctx.policy)  # the other ranks of an `accelerate launch` stop here
    except BaseException:
        tracker.terminate("FAILED")
        raise
    tracker.terminate("FINISHED")
    return result


def _finish(
    ctx: RunContext, tracker: tracking.RunTracker, cfg: AstorConfig, digest: str
) -> dict[str, Any]:
    """Plots, eval table, final policy (registered), and the Prefect artifacts pointing at the MLflow run."""
    history = store.load_history(ctx.run_dir, ctx.round)
    tracker.log_figure_files(report.plot_history(history, ctx.tasks))
    final_eval = report.final_eval(ctx)
    tracker.log_dict(final_eval, "eval/final_eval.json")
    tracker.log_artifact(report.write_eval_table(ctx, final_eval), "eval")
    policy_dir = report.final_policy_dir(ctx)
    tracker.log_artifacts(policy_dir, "policy")
    model_uri = None
    if cfg.train.registered_model_name:
        tags = {"astor.scheduler": cfg.train.scheduler, "dvc.pools_digest": digest}
        model_uri = register_policy(
            tracker.run_id, str(policy_dir), cfg.train.registered_model_name, tags
        )
    base = os.environ.get("ASTOR_MLFLOW_UI", "http://127.0.0.1:5000")
    create_link_artifact(
        key="mlflow-run",
        link=f"{base}/{tracker.url}",
        link_text=f"MLflow run {tracker.run_id}",
        description="Per-task utility, KL, reward trajectories and the synergy heatmap",
    )
    create_markdown_artifact(
        key="astor-summary",
        markdown=report.summary_markdown(ctx, final_eval, tracker.run_id),
        description="ASTOR run summary",
    )
    return {
        "run_dir": ctx.run_dir,
        "mlflow_run_id": tracker.run_id,
        "mlflow_url": tracker.url,
        "registered_model": model_uri,
        "prefect_flow_run_id": _flow_run_id(),
        "rounds": ctx.round,
        "eval": final_eval,
        "betas": ctx.calibrator.betas(),
    }
