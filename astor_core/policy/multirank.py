"""What the GRPO update needs beyond one process: the Accelerator (FSDP2 on CPU ranks too,
DeepSpeed's micro-batch size without a dataloader), micro-batches aligned across ranks, and
gradients read from FSDP2's sharded DTensors.

Every rank runs the same sequence of micro-batches, task by task: collectives (FSDP2's
all-gather and reduce-scatter, DDP's buffer broadcast) then pair up, and under FSDP2 the
gradient reduced after a micro-batch belongs to one task on every rank. A rank with no
sample left in a task's last chunk runs a zero-weight copy of one (its gradient is exactly
zero) so that the collectives still pair up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from astor_core.policy.batches import Sample


@dataclass(frozen=True)
class RankMicroBatch:
    """One forward/backward of one rank: samples of one task."""

    task: str
    """The task every sample belongs to (the same on every rank at this position)."""
    rows: list[Sample]
    """This rank's samples (one placeholder sample when `live` is False)."""
    live: bool = True
    """False: a zero-weight placeholder that only keeps the ranks' collectives paired."""


def rank_micro_batches(
    samples: Sequence[Sample], size: int, rank: int, world: int
) -> list[RankMicroBatch]:
    """This rank's micro-batches: each task's samples (tasks in order of first appearance)
    cut into chunks of size x world, chunk k giving rank r its samples r, r + world, ...;
    the same number of micro-batches, task by task, on every rank. One rank: the chunks are
    :func:`astor_core.policy.batches.micro_batches`' micro-batches.

    >>> rows = [Sample(t, [0], [i], 0.0) for i, t in enumerate("aaab")]
    >>> [(m.task, [s.completion_ids[0] for s in m.rows], m.live) for m in rank_micro_batches(rows, 2, 1, 2)]
    [('a', [1], True), ('b', [3], False)]
    >>> [[s.completion_ids[0] for s in m.rows] for m in rank_micro_batches(rows, 2, 0, 1)]
    [[0, 1], [2], [3]]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    out = []
    step = size * world
    for task, rows in by_task.items():
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            mine = chunk[rank::world]
            out.append(RankMicroBatch(task, mine or chunk[:1], bool(mine)))
    return out


def _env_flag(name: str) -> bool:
    """A boolean that `accelerate launch` exports from its config (ACCELERATE_USE_FSDP, ...)."""
    return os.environ.get(name, "false").lower() == "true"


def make_accelerator(
    mixed_precision: str, cpu: bool, micro_batch_size: int, max_grad_norm: float
) -> Any:
    """The Accelerator of the update (one LR-schedule step per optimiser step, whatever the
    number of ranks).

    FSDP on CPU ranks: accelerate 1.15's state machine routes an FSDP launch to FSDP only
    for accelerator devices (state.py; MULTI_CPU is missing from that list), so CPU ranks
    would silently run DDP. torch's FSDP2 runs on CPU with gloo, so the state is switched
    the way accelerate switches it for GPUs (plugin from the launcher's environment).

    DeepSpeed: with no dataloader to prepare, the config's `train_micro_batch_size_per_gpu:
    auto` cannot be resolved; it is set from the trainer's micro-batch size, as accelerate's
    error message directs (DeepSpeed only counts samples with it). The trainer owns the
    accumulation boundary (`managed_gradient_accumulation: false`: every engine backward
    accumulates, the one `engine.step()` per update step reduces and steps) and its clipping
    threshold is DeepSpeed's `gradient_clipping`.
    """
    from accelerate import Accelerator
    from accelerate.state import PartialState
    from accelerate.utils import (
        DistributedType,
        FullyShardedDataParallelPlugin,
        InitProcessGroupKwargs,
    )

    handlers = []
    if cpu and _env_flag("ACCELERATE_USE_DEEPSPEED"):
        # accelerate takes the DeepSpeed path only with cpu=False, and on a machine without
        # an accelerator device it then finds no process-group backend (one process):
        # DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu) communicates over gloo.
        cpu, handlers = False, [InitProcessGroupKwargs(backend="gloo")]
    acc = Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu,
        kwargs_handlers=handlers,
        # One LR-schedule step per optimiser step: linked to the optimiser, accelerate steps
        # the schedule once per rank (it assumes each rank brings its own batch; here every
        # rank holds the same global batch): 2 ranks would run a schedule twice as fast.
        step_scheduler_with_optimizer=False,
    )
    if acc.distributed_type == DistributedType.MULTI_CPU and _env_flag("ACCELERATE_USE_FSDP"):
        plugin = FullyShardedDataParallelPlugin()
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        acc.state.fsdp_plugin = plugin
        acc.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds_config = acc.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size
        ds_config["managed_gradient_accumulation"] = False
        ds_config["gradient_clipping"] = max(max_grad_norm, 0.0)
    return acc


def sum_fsdp_gradients(model: torch.nn.Module) -> None:
    """FSDP2 reduce-scatters the SUM of the ranks' gradients (divide factor 1): each rank's
    loss already carries the whole batch's normaliser, as under DDP's manual all-reduce.
    A plain SUM collective (not NCCL's PREMUL_SUM, which gloo lacks). Both settings are
    per FSDP unit, hence every unit."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank's shard of a DTensor (no communication); a plain tensor unchanged.

    >>> local(torch.ones(2)).tolist()
    [1.0, 1.0]
    """
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full_vector(params: Sequence[torch.Tensor], flat_local: torch.Tensor) -> torch.Tensor:
    """The whole-model vector of `params` from this rank's flattened local shards (the
    layout of `subset_grad`): each piece put back into its parameter's DTensor layout and
    gathered (a collective on every rank); plain parameters pass through.

    >>> full_vector([torch.nn.Parameter(torch.zeros(2))], torch.tensor([1.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    from torch.distributed.tensor import DTensor

    pieces, offset = [], 0
    for p in params:
        shard = local(p.detach())
        n = shard.numel()
        part = flat_local[offset : offset + n].reshape(shard.shape)
        offset += n
        if isinstance(p, DTensor):
            part = DTensor.from_local(
                part.to(shard.device),
                p.device_mesh,
                p.placements,
                run_check=False,
                shape=p.shape,
                stride=p.stride(),
            ).full_tensor()
        pieces.append(part.reshape(-1).cpu())
    if offset != flat_local.numel():
        raise ValueError(f"{flat_local.numel()} gradient entries for {offset} local parameters")
    return torch.cat(pieces)


def as_float(norm: Any) -> float:
    """A gradient norm as a float (a DTensor under FSDP2 is gathered; None: nan).

    >>> as_float(torch.tensor(2.0)), as_float(None)
    (2.0, nan)
    """
    from torch.distributed.tensor import DTensor

    if norm is None:
        return float("nan")
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)
