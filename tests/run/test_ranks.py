"""astor_core.run.ranks in one process: every collective is skipped and the stages do what
they did before ranks existed (the 2-rank launch: tests/flows/test_multirank_train.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from astor_core.policy.rollout import Rollout
from astor_core.run import ranks


class _Policy:
    """What ranks reads off a PolicyTrainer: its accelerator's rank and size, sample, update."""

    def __init__(self) -> None:
        self.accelerator = SimpleNamespace(process_index=0, num_processes=1)
        self.calls: list[tuple[str, Any]] = []

    def sample(self, prompts: list[str], n: int, seed: int | None = None) -> list[Rollout]:
        self.calls.append(("sample", (list(prompts), n, seed)))
        return [
            Rollout(i, p, f"{p}-{j}", [1], [2], [-0.5], "stop")
            for i, p in enumerate(prompts)
            for j in range(n)
        ]

    def update(self, rollouts, rewards, tasks, group_size, betas) -> dict[str, Any]:
        self.calls.append(("update", (list(rollouts), rewards, list(tasks), group_size, betas)))
        return {"advantages": [0.0] * len(rollouts)}


def _order() -> ranks.RoundOrder:
    items = [("code_generation", "a"), ("commit_message", "b"), ("code_generation", "c")]
    return ranks.leader_order(4, items, ["pa", "pb", "pc"], 2, 7)


def test_shards_cover_every_item_once_in_order() -> None:
    for n in range(0, 12):
        for size in range(1, 5):
            bounds = [ranks.shard_bounds(n, r, size) for r in range(size)]
            assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))
            widths = [hi - lo for lo, hi in bounds]
            assert max(widths) - min(widths) <= 1


def test_one_process_samples_everything_with_the_round_seed() -> None:
    policy, order = _Policy(), _order()
    assert ranks.share_order(policy, order) is order
    rollouts = ranks.sample_shard(policy, order)
    assert policy.calls == [("sample", (["pa", "pb", "pc"], 2, 7))]
    assert [r.prompt_index for r in rollouts] == [0, 0, 1, 1, 2, 2]
    batch = order.batch(rollouts)
    assert batch.round_idx == 4 and batch.group_size == 2
    assert batch.tasks_per_sample()[:3] == ["code_generation", "code_generation", "commit_message"]


def test_update_takes_the_orders_rewards_and_betas() -> None:
    policy, order = _Policy(), _order()
    batch = order.batch(ranks.sample_shard(policy, order))
    betas = {"code_generation": 0.04, "commit_message": 0.02}
    ranks.update(policy, batch, ranks.update_order(np.arange(6) / 10, betas))
    _, (rollouts, rewards, tasks, group, got_betas) = policy.calls[-1]
    assert rollouts == batch.rollouts and group == 2 and got_betas == betas
    assert rewards.dtype == np.float64 and rewards.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert tasks == batch.tasks_per_sample()


def test_update_refuses_rewards_that_do_not_match_the_batch() -> None:
    policy, order = _Policy(), _order()
    batch = order.batch(ranks.sample_shard(policy, order))
    with pytest.raises(RuntimeError, match="round 4: 5 rewards for 6 rollouts"):
        ranks.update(policy, batch, ranks.update_order([0.0] * 5, {}))


def test_a_rank_samples_its_share_with_its_own_seed(monkeypatch) -> None:
    """Rank 1 of 2 samples the last prompt of 3 with its own seed, its rollouts carry the
    round's prompt index, and they go to the gather (its result is what the rank returns)."""
    import accelerate.utils

    gathered: list[list[Rollout]] = []
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda x: gathered.append(x) or x)
    policy, order = _Policy(), _order()
    policy.accelerator = SimpleNamespace(process_index=1, num_processes=2)
    rollouts = ranks.sample_shard(policy, order)
    assert policy.calls == [("sample", (["pc"], 2, 7 + ranks.RANK_SEED_STRIDE))]
    assert gathered == [rollouts]
    assert [(r.prompt_index, r.prompt) for r in rollouts] == [(2, "pc"), (2, "pc")]
