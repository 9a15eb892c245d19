"""A run's live objects (:class:`RunContext`) and how a run opens or resumes."""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astor_core import TASKS
from astor_core.config import AstorConfig
from astor_core.data.pools import Pools
from astor_core.evaluation import in_run_eval_items
from astor_core.method.calibration import Calibrator, make_calibrator
from astor_core.method.scheduler import RoundPlan, Scheduler, make_scheduler
from astor_core.run import store


class RunContext:
    """Live objects of one training run (a plain class, not a dataclass: Prefect does not
    walk it when it is passed between task runs in the same process)."""

    def __init__(self, cfg: AstorConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = str(run_dir)
        self.tasks: list[str] = list(TASKS)
        self.round = 0
        self.train_records: dict[tuple[str, str], dict[str, Any]] = {}
        self.eval_records: dict[str, list[dict[str, Any]]] = {}
        self.scheduler: Scheduler
        self.calibrator: Calibrator
        self.policy: Any = None
        """astor_core.policy.trainer.PolicyTrainer: model, reference, optimizer, engine."""
        self.last_plan: RoundPlan | None = None


def scheduler_pools(
    records: Sequence[Mapping[str, Any]], tasks: Sequence[str]
) -> dict[str, list[str]]:
    """{task: prompt_ids} in a stable order (sorted ids), as the scheduler takes them.

    >>> scheduler_pools([{"task": "a", "prompt_id": "2"}, {"task": "a", "prompt_id": "1"}], ["a", "b"])
    {'a': ['1', '2'], 'b': []}
    """
    out: dict[str, list[str]] = {t: [] for t in tasks}
    for r in records:
        if r["task"] in out:
            out[r["task"]].append(str(r["prompt_id"]))
    return {t: sorted(ids) for t, ids in out.items()}


def open_run(cfg: AstorConfig, pools: Pools) -> RunContext:
    """Build a run from its config and its pools (read once by the caller), or resume it from
    its last complete checkpoint."""
    from astor_core.policy.trainer import PolicyTrainer

    ctx = RunContext(cfg, Path(cfg.train.run_dir))
    train = pools.records("train")
    ctx.train_records = {(r["task"], str(r["prompt_id"])): r for r in train}
    ctx.eval_records = in_run_eval_items(
        pools.records("eval"), ctx.tasks, cfg.train.eval_items_per_task
    )
    ctx.scheduler = make_scheduler(
        cfg.train.scheduler, scheduler_pools(train, ctx.tasks), cfg.scheduler, cfg.train.seed
    )
    ctx.calibrator = make_calibrator(cfg.train.scheduler, ctx.tasks, cfg.calibration)
    ctx.policy = PolicyTrainer.from_config(cfg, seed=cfg.train.seed)
    extra = ctx.policy.resume(store.checkpoint_root(ctx.run_dir))
    if extra is not None:
        ctx.scheduler.load_state_dict(extra["scheduler"])
        ctx.calibrator.load_state_dict(extra["calibrator"])
        ctx.round = int(extra["round"]) + 1
    store.save_run_config(ctx.run_dir, cfg)
    # The ~1M objects alive now (libraries, tokenizer, model, pools) live as long as the run:
    # move them out of the collector's generations, so that a full collection during a round
    # walks only what the rounds allocate (measured: ~0.5 s per full collection otherwise,
    # docs/PERFORMANCE.md "Orchestration overhead"). Cycles among them are never collected,
    # which costs nothing for objects that outlive the run anyway.
    gc.freeze()
    return ctx
