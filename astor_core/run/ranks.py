"""One launch for many ranks, the way TRL runs under accelerate: ``accelerate launch -m
flows.cli train`` starts the same command on every rank, and every rank runs the same stage
functions of a round. Rank 0, the leader, also runs the Prefect flow, the scheduler, the
sandboxed rewards, the KL controllers and MLflow; the other ranks, the followers, run
:func:`follow`, a plain loop without Prefect or MLflow that does what the leader tells it.

Per round, every rank meets the others in this order (the collectives must match):

1. :func:`share_order`: the leader's :class:`RoundOrder` (the round's prompts, group size,
   seed) is broadcast; ``None`` ends the run;
2. :func:`sample_shard`: each rank samples its contiguous share of the prompts (its own
   seed); the shards are all-gathered, so every rank holds the round's whole batch;
3. :func:`update`: the leader's :class:`UpdateOrder` (rewards, betas) is broadcast and every
   rank calls ``PolicyTrainer.update`` on the same global batch; its step slices the batch
   per rank and all-reduces the gradients;
4. the checkpoint: ``save_checkpoint`` on every rank (accelerate's ``save_state`` writes each
   rank's RNG state; the leader writes the rest and the COMPLETE marker).

Evaluation and the final export run on the leader alone: under DDP every rank holds the
whole model, so generation is local to a rank. One process is the same code with every
collective a no-op (world size 1): the single-process run is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astor_core.config import AstorConfig
    from astor_core.run.stages import RolloutBatch

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003
"""Rank r samples with the round's seed + r * this (rank 0 keeps the single-process seed; the
stride exceeds any round count, so no two (round, rank) pairs share a seed)."""


def launch_rank() -> int:
    """This process's global rank as the launcher set it (torchrun's RANK; 0 when not launched).

    Read before any process group exists: it decides who runs the Prefect flow.

    >>> launch_rank() if "RANK" not in os.environ else 0
    0
    """
    return int(os.environ.get("RANK", "0"))


def is_leader() -> bool:
    """True on rank 0 (and in a plain, single process)."""
    return launch_rank() == 0


@dataclass(frozen=True)
class RoundOrder:
    """What the leader tells every rank at the start of a round: what to sample."""

    round_idx: int
    """The round (0-based)."""
    items: list[tuple[str, str]]
    """(task, prompt_id) of each scheduled prompt, in plan order."""
    prompts: list[str]
    """Each item's formatted prompt (followers need no pools)."""
    group_size: int
    """Completions per prompt (G)."""
    seed: int
    """The round's sampling seed on rank 0 (rank r adds r * RANK_SEED_STRIDE)."""

    def batch(self, rollouts: list[Any]) -> RolloutBatch:
        """The round's RolloutBatch from the gathered rollouts."""
        from astor_core.run.stages import RolloutBatch

        return RolloutBatch(self.round_idx, list(self.items), self.group_size, rollouts)


@dataclass(frozen=True)
class UpdateOrder:
    """What the leader tells every rank before the GRPO update: the same inputs everywhere."""

    rewards: list[float]
    """Reward of each rollout, in rollout order (scored in the leader's sandbox)."""
    betas: dict[str, float]
    """Per-task KL coefficients of this round (the leader's calibrator)."""


def world(policy: Any) -> tuple[int, int]:
    """(rank, world size) of a PolicyTrainer's accelerator."""
    acc = policy.accelerator
    return int(acc.process_index), int(acc.num_processes)


def _broadcast(policy: Any, obj: Any) -> Any:
    """The leader's `obj` on every rank (followers pass None); no-op in one process."""
    if world(policy)[1] == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def share_order(policy: Any, order: RoundOrder | None) -> RoundOrder | None:
    """Step 1: the leader's round order on every rank (None: the run is over)."""
    return _broadcast(policy, order)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items; the first n % world_size ranks
    take one more, so concatenating the shards in rank order gives the items back in order.

    >>> [shard_bounds(5, r, 2) for r in range(2)]
    [(0, 3), (3, 5)]
    >>> shard_bounds(8, 0, 1)
    (0, 8)
    >>> [shard_bounds(1, r, 3) for r in range(3)]
    [(0, 1), (1, 1), (1, 1)]
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def sample_shard(policy: Any, order: RoundOrder) -> list[Any]:
    """Step 2: this rank's share of the prompts sampled (G each), then every rank's rollouts
    gathered in prompt order, prompt_index counted over the whole round."""
    rank, size = world(policy)
    start, stop = shard_bounds(len(order.prompts), rank, size)
    local: list[Any] = []
    if stop > start:
        seed = order.seed + rank * RANK_SEED_STRIDE
        local = [
            dataclasses.replace(r, prompt_index=r.prompt_index + start)
            for r in policy.sample(order.prompts[start:stop], order.group_size, seed=seed)
        ]
    if size == 1:
        return local
    from accelerate.utils import gather_object

    return list(gather_object(local))


def update(policy: Any, batch: RolloutBatch, order: UpdateOrder | None) -> dict[str, Any]:
    """Step 3: the leader's update order on every rank, then the GRPO update on the whole
    batch (PolicyTrainer.step shards it and all-reduces); the same result on every rank."""
    received = _broadcast(policy, order)
    assert received is not None, "the leader sent no update order"
    if len(received.rewards) != len(batch):
        raise RuntimeError(
            f"round {batch.round_idx}: {len(received.rewards)} rewards for {len(batch)} rollouts"
        )
    return policy.update(
        batch.rollouts,
        np.asarray(received.rewards, dtype=np.float64),
        batch.tasks_per_sample(),
        batch.group_size,
        received.betas,
    )


def release(policy: Any) -> None:
    """The leader's last order: None, the followers' loops end."""
    share_order(policy, None)


def follower_round(policy: Any, order: RoundOrder, checkpoint_root: Any) -> int:
    """A follower's round: its rollout shard, the update, the checkpoint (the same calls the
    leader's stages make, in the same order); the rollouts this rank sampled."""
    batch = order.batch(sample_shard(policy, order))
    update(policy, batch, None)
    policy.save_checkpoint(checkpoint_root, order.round_idx, {})
    start, stop = shard_bounds(len(order.prompts), *world(policy))
    return (stop - start) * order.group_size


@dataclass(frozen=True)
class FollowerReport:
    """What a follower did, printed when it ends."""

    rank: int
    """The follower's global rank."""
    rounds: int
    """Rounds it sampled, updated and checkpointed."""
    sampled: int
    """Rollouts it generated itself (its shards), over all rounds."""
    weights: str
    """:func:`weights_digest` of its policy at the end (equal to the leader's under DDP)."""

    def line(self) -> str:
        """One line for the log.

        >>> FollowerReport(1, 2, 16, "ab12").line()
        'rank 1: followed 2 rounds, sampled 16 rollouts, weights ab12'
        """
        return (
            f"rank {self.rank}: followed {self.rounds} rounds, sampled {self.sampled} "
            f"rollouts, weights {self.weights}"
        )


def weights_digest(model: Any) -> str:
    """sha256 over a model's state dict (names sorted, each tensor's name, dtype, shape and
    bytes): equal digests, equal weights.

    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> b.load_state_dict(a.state_dict())
    <All keys matched successfully>
    >>> weights_digest(a) == weights_digest(b)
    True
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def follow(cfg: AstorConfig) -> FollowerReport:
    """A follower's whole run: build the policy as the leader does, resume the same checkpoint,
    then run each round the leader orders until it sends None."""
    from astor_core.policy.trainer import PolicyTrainer
    from astor_core.run.store import checkpoint_root

    policy = PolicyTrainer.from_config(cfg, seed=cfg.train.seed)
    root = checkpoint_root(cfg.train.run_dir)
    policy.resume(root)
    rank = world(policy)[0]
    rounds = sampled = 0
    while (order := share_order(policy, None)) is not None:
        sampled += follower_round(policy, order, root)
        rounds += 1
        log.info("rank %d: round %d done", rank, order.round_idx)
    return FollowerReport(rank, rounds, sampled, weights_digest(policy.unwrapped_model))


def leader_order(
    round_idx: int,
    items: Sequence[tuple[str, str]],
    prompts: Sequence[str],
    group_size: int,
    seed: int,
) -> RoundOrder:
    """The leader's order for a round (plain lists, so it pickles small)."""
    pairs = [(str(task), str(pid)) for task, pid in items]
    return RoundOrder(int(round_idx), pairs, list(prompts), int(group_size), int(seed))


def update_order(rewards: Sequence[float], betas: Mapping[str, float]) -> UpdateOrder:
    """The leader's update order: rewards in rollout order and the round's betas."""
    return UpdateOrder([float(r) for r in rewards], {t: float(b) for t, b in betas.items()})
