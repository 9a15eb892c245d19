"""Bookkeeping of optimiser steps: what one step measured per task (:class:`StepStats`),
summed over ranks, turned into an :class:`UpdateResult`, and the steps of one round merged;
the flattened subset gradient and the clip / optimiser / LR-schedule step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from astor_core.policy.multirank import as_float, local

_KEYS = ("kl_sum", "tokens", "samples", "loss", "clipped")
"""Per-task sums one step accumulates over its micro-batches."""


@dataclass
class UpdateResult:
    """What one optimiser step measured."""

    metrics: dict[str, float]
    """Batch-level numbers: loss, grad_norm, lr, kl, clip_frac, tokens, samples."""
    per_task: dict[str, dict[str, float]]
    """task -> kl (token-mean k3), loss (its share of the loss), samples, tokens, clip_frac."""
    task_grads: dict[str, torch.Tensor]
    """task -> its gradient on the parameter subset, flattened to 1-D (CPU, float32)."""


class StepStats:
    """Per-task sums and gradient vectors of one optimiser step, micro-batch by micro-batch."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, float]] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.loss = 0.0

    def add_gradient(self, task: str, delta: torch.Tensor) -> None:
        """A micro-batch's change of the subset gradient: its task's contribution."""
        self.grads[task] = self.grads.get(task, torch.zeros_like(delta)) + delta

    def add(self, task: str, samples: int, out: Any, completion_mask: torch.Tensor) -> None:
        """One micro-batch's loss output (astor_core.policy.grpo.LossOutput)."""
        m = completion_mask.float()
        st = self.tasks.setdefault(task, dict.fromkeys(_KEYS, 0.0))
        st["kl_sum"] += float((out.per_token_kl * m).sum())
        st["tokens"] += float(m.sum())
        st["samples"] += samples
        st["loss"] += float(out.loss.detach())
        st["clipped"] += float(out.clipped.float().sum())
        self.loss += float(out.loss.detach())

    def reduce(
        self, accelerator: Any, tasks: Sequence[str], grad_size: int, grads_summed: bool = False
    ) -> None:
        """Sum per-task gradients and statistics over ranks.

        Every rank walks the same sorted task list (from the whole batch, which every rank
        holds), contributing zeros for tasks it has no sample of, so the collectives pair up
        task by task whatever each rank's share of the batch contains. `grads_summed`: the
        gradient vectors already are the ranks' sum (FSDP2 reduced them), only statistics
        are summed.
        """
        acc = accelerator
        grads: dict[str, torch.Tensor] = {}
        merged: dict[str, dict[str, float]] = {}
        for t in sorted(tasks):
            if grad_size:  # 0: no gradient vectors measured (DeepSpeed)
                g = self.grads.get(t, torch.zeros(grad_size)).to(acc.device)
                grads[t] = (g if grads_summed else acc.reduce(g, reduction="sum")).cpu()
            local = self.tasks.get(t, dict.fromkeys(_KEYS, 0.0))
            vec = torch.tensor([local[k] for k in _KEYS], dtype=torch.float64, device=acc.device)
            merged[t] = dict(zip(_KEYS, acc.reduce(vec, reduction="sum").tolist(), strict=True))
        loss = acc.reduce(
            torch.tensor([self.loss], dtype=torch.float64, device=acc.device),
            reduction="sum",
        )
        self.grads, self.tasks, self.loss = grads, merged, float(loss)

    def result(self, grad_norm: float, lr: float) -> UpdateResult:
        """Per-task KL (token mean), loss, counts and clip fraction; batch-level metrics."""
        per_task = {
            t: {
                "kl": st["kl_sum"] / max(st["tokens"], 1.0),
                "loss": st["loss"],
                "samples": st["samples"],
                "tokens": st["tokens"],
                "clip_frac": st["clipped"] / max(st["tokens"], 1.0),
            }
            for t, st in self.tasks.items()
        }
        tokens = sum(st["tokens"] for st in self.tasks.values())
        metrics = {
            "loss": self.loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "kl": sum(st["kl_sum"] for st in self.tasks.values()) / max(tokens, 1.0),
            "clip_frac": sum(st["clipped"] for st in self.tasks.values()) / max(tokens, 1.0),
            "tokens": tokens,
            "samples": float(sum(st["samples"] for st in self.tasks.values())),
        }
        return UpdateResult(
            metrics=metrics,
            per_task=per_task,
            task_grads={t: g.cpu() for t, g in self.grads.items()},
        )


def all_reduce_grads(model: torch.nn.Module) -> None:
    """Sum every parameter's gradient over ranks (the micro-batches ran under no_sync)."""
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def subset_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients of `params` (zeros where there is none yet), flattened into one float32
    vector: differences of it between micro-batches are the per-task gradient vectors.
    Under FSDP2 each rank's shards only (`multirank.full_vector` assembles them).

    >>> p = torch.nn.Parameter(torch.ones(2)); subset_grad([p]).tolist()
    [0.0, 0.0]
    """
    return torch.cat(
        [
            local(p.grad).detach().reshape(-1).float()
            if p.grad is not None
            else torch.zeros(local(p.detach()).numel(), device=p.device)
            for p in params
        ]
    )


def optimiser_step(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float,
) -> tuple[float, float]:
    """Clip (if max_grad_norm > 0), step the optimiser and the LR schedule, clear the
    gradients; (gradient norm, LR used). Under DeepSpeed the engine's step clips (at the
    config's gradient_clipping), steps the optimiser and zeroes; the schedule steps here
    (accelerate hands DeepSpeed only DeepSpeed's own schedules; for one of those this
    wrapper's step is a no-op and the engine steps it)."""
    ds = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if ds is not None:
        lr = float(scheduler.get_last_lr()[0])
        ds.engine.step()
        scheduler.step()
        return as_float(ds.get_global_grad_norm()), lr
    grad_norm = (
        as_float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
        if max_grad_norm > 0
        else float("nan")
    )
    lr = float(scheduler.get_last_lr()[0])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def merge_steps(results: Sequence[UpdateResult]) -> UpdateResult:
    """One result for the optimiser steps of one pass over a round's mini-batches: KL and
    clip fraction token-weighted, loss and gradient norm averaged over the steps, counts
    summed, the learning rate of the first step, and each task's gradient the mean of its
    mini-batch gradients (the full batch's gradient when the weights do not move between
    steps, as each mini-batch's loss is normalised over that mini-batch). One step: itself."""
    if len(results) == 1:
        return results[0]
    k = len(results)
    per_task: dict[str, dict[str, float]] = {}
    for r in results:
        for t, st in r.per_task.items():
            acc = per_task.setdefault(
                t,
                {
                    "kl": 0.0,
                    "loss": 0.0,
                    "samples": 0.0,
                    "tokens": 0.0,
                    "clip_frac": 0.0,
                },
            )
            acc["kl"] += st["kl"] * st["tokens"]
            acc["clip_frac"] += st["clip_frac"] * st["tokens"]
            acc["loss"] += st["loss"] / k
            acc["samples"] += st["samples"]
            acc["tokens"] += st["tokens"]
    for acc in per_task.values():
        acc["kl"] /= max(acc["tokens"], 1.0)
        acc["clip_frac"] /= max(acc["tokens"], 1.0)
    tokens = sum(r.metrics["tokens"] for r in results)
    metrics = {
        "loss": sum(r.metrics["loss"] for r in results) / k,
        "grad_norm": sum(r.metrics["grad_norm"] for r in results) / k,
        "lr": results[0].metrics["lr"],
        "kl": sum(r.metrics["kl"] * r.metrics["tokens"] for r in results) / max(tokens, 1.0),
        "clip_frac": sum(r.metrics["clip_frac"] * r.metrics["tokens"] for r in results)
        / max(tokens, 1.0),
        "tokens": tokens,
        "samples": sum(r.metrics["samples"] for r in results),
    }
    task_grads: dict[str, torch.Tensor] = {}
    for r in results:
        for t, g in r.task_grads.items():
            task_grads[t] = task_grads.get(t, torch.zeros_like(g)) + g / k
    return UpdateResult(metrics=metrics, per_task=per_task, task_grads=task_grads)


def round_of_steps(
    step: Callable[[list[Any], bool], UpdateResult],
    minis: Sequence[list[Any]],
    passes: int,
    use_old_logprobs: bool,
) -> UpdateResult:
    """`passes` passes of one optimiser step per mini-batch; the merged result of the last
    pass (what the rollouts measured last), with the per-task gradients of the first (the
    one nearest on-policy)."""
    runs = [[step(mini, use_old_logprobs) for mini in minis] for _ in range(passes)]
    result = merge_steps(runs[-1])
    if len(runs) > 1:
        result.task_grads = merge_steps(runs[0]).task_grads
    return result
