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
4. the checkpoint, after the leader's evaluation if one is due: the leader's
   :class:`CheckpointOrder`, then ``save_checkpoint`` on every rank (accelerate's
   ``save_state`` writes each rank's RNG state; the leader writes the rest and the COMPLETE
   marker).

Under DDP every rank holds the whole model, so evaluation and the final export run on the
leader alone. With sharded weights (FSDP2, DeepSpeed; ``PolicyTrainer.spread``) every
forward is a collective: the rollout engine generates in lockstep (HF's ``synced_gpus``,
equal generate calls per rank), and evaluation and export become rank-wide too: the leader
sends a :class:`GreedyOrder` (every rank generates its share of the held-out prompts,
gathered; the leader scores and logs) or an :class:`ExportOrder` (every rank joins the
gather, the leader writes), and the followers obey it in :func:`follow` between rounds.

One process is the same code with every collective a no-op (world size 1): the
single-process run is unchanged.
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


@dataclass(frozen=True)
class GreedyOrder:
    """The leader's evaluation call under sharding: every rank generates its share."""

    prompts: list[str]
    """The held-out prompts of one greedy call, in order."""


@dataclass(frozen=True)
class ExportOrder:
    """The leader's final export under sharding: every rank joins the gather."""

    directory: str
    """Where the leader writes the policy."""


@dataclass(frozen=True)
class CheckpointOrder:
    """The leader's round checkpoint: every rank saves its part (after any evaluation)."""

    round_idx: int
    """The round just completed."""


Order = RoundOrder | GreedyOrder | ExportOrder | CheckpointOrder
"""Anything the leader broadcasts to the followers' loop (None ends it)."""


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


def share_order(policy: Any, order: Order | None) -> Order | None:
    """The leader's order on every rank (None: the run is over); step 1 of a round."""
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
    if stop > start or getattr(policy, "spread", False):  # sharded: an empty share generates too
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


def _greedy_share(policy: Any, order: GreedyOrder) -> list[str]:
    """This rank's share of a greedy call, then every rank's completions in prompt order."""
    from accelerate.utils import gather_object

    start, stop = shard_bounds(len(order.prompts), *world(policy))
    return list(gather_object(policy.greedy(order.prompts[start:stop])))


def greedy(policy: Any, prompts: list[str]) -> list[str]:
    """One greedy completion per prompt (held-out evaluation). Sharded, on the leader: a
    :class:`GreedyOrder` to the followers and a share per rank; otherwise the leader's own."""
    if not getattr(policy, "spread", False):
        return policy.greedy(prompts)
    order = share_order(policy, GreedyOrder(list(prompts)))
    assert isinstance(order, GreedyOrder)
    return _greedy_share(policy, order)


def export(policy: Any, directory: str | os.PathLike[str]) -> Any:
    """The final policy written to `directory` (PolicyTrainer.export). Sharded, on the
    leader: an :class:`ExportOrder` first, so the followers join the gather."""
    if getattr(policy, "spread", False):
        share_order(policy, ExportOrder(str(directory)))
    return policy.export(directory)


def checkpoint(policy: Any, root: Any, round_idx: int, extra: dict[str, Any]) -> Any:
    """Step 4 on the leader: a :class:`CheckpointOrder` to the followers (several ranks),
    then PolicyTrainer.save_checkpoint; its path."""
    if world(policy)[1] > 1:
        share_order(policy, CheckpointOrder(int(round_idx)))
    return policy.save_checkpoint(root, round_idx, extra)


def release(policy: Any) -> None:
    """The leader's last order: None, the followers' loops end."""
    share_order(policy, None)


def follower_round(policy: Any, order: RoundOrder) -> int:
    """A follower's round up to the update: its rollout shard and the update (the same calls
    the leader's stages make, in the same order); the rollouts this rank sampled. The
    checkpoint follows the leader's :class:`CheckpointOrder`."""
    batch = order.batch(sample_shard(policy, order))
    update(policy, batch, None)
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
    """:func:`weights_digest` of its policy at the end (equal to the leader's under DDP;
    of its own shards under FSDP)."""
    evaluated: int = 0
    """Held-out prompts it generated for the leader's evaluations (sharded weights only)."""
    exports: int = 0
    """Exports it joined (sharded weights only)."""

    def line(self) -> str:
        """One line for the log.

        >>> FollowerReport(1, 2, 16, "ab12", 3, 1).line()
        'rank 1: followed 2 rounds, sampled 16 rollouts, evaluated 3 prompts, joined 1 exports, weights ab12'
        """
        return (
            f"rank {self.rank}: followed {self.rounds} rounds, sampled {self.sampled} "
            f"rollouts, evaluated {self.evaluated} prompts, joined {self.exports} exports, "
            f"weights {self.weights}"
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

    from astor_core.policy.multirank import local

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = local(tensor.detach()).to("cpu").contiguous()
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
    rounds = sampled = evaluated = exports = 0
    while (order := share_order(policy, None)) is not None:
        if isinstance(order, GreedyOrder):
            _greedy_share(policy, order)
            start, stop = shard_bounds(len(order.prompts), *world(policy))
            evaluated += stop - start
        elif isinstance(order, ExportOrder):
            policy.export(order.directory)
            exports += 1
        elif isinstance(order, CheckpointOrder):
            policy.save_checkpoint(root, order.round_idx, {})
            rounds += 1
            log.info("rank %d: round %d done", rank, order.round_idx)
        else:
            sampled += follower_round(policy, order)
    digest = weights_digest(policy.unwrapped_model)
    return FollowerReport(rank, rounds, sampled, digest, evaluated, exports)


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
