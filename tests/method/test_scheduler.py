"""Tests of astor_core.method.scheduler: level-1 shares and budgets, level-2 selection, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astor_core.method.advantages import group_advantages
from astor_core.method.scheduler import (
    SCHEDULER_NAMES,
    RoundPlan,
    SchedulerConfig,
    make_scheduler,
)
from astor_core.method.utility import PromptFeedback, RoundFeedback, UtilityConfig

NAMES = [n.replace("<task>", "t1") for n in SCHEDULER_NAMES]  # every documented name


def pools_of(sizes: list[int]) -> dict[str, list[str]]:
    return {f"t{k}": [f"t{k}-{i}" for i in range(n)] for k, n in enumerate(sizes)}


def play(sched, rounds: int, seed: int = 0) -> None:
    """Feed the scheduler random Bernoulli rewards with per-prompt success rates."""
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        plan = sched.plan(r)
        items = []
        for task, pid in plan.items:
            p = (hash(pid) % 100) / 100
            rewards = (rng.random(plan.samples_per_prompt) < p).astype(float)
            items.append(
                PromptFeedback(task, pid, rewards.tolist(), group_advantages(rewards).tolist())
            )
        grads = {t: rng.standard_normal(8) for t in sched.tasks}
        sched.update(RoundFeedback(r, items, gradients=grads, kl={t: 0.01 for t in sched.tasks}))


@settings(max_examples=60, deadline=None)
@given(
    u=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=6),
    tau=st.floats(0.01, 2.0),
    eps=st.floats(0.0, 1.0),
)
def test_astor_shares_are_a_distribution_with_floor(u: list[float], tau: float, eps: float) -> None:
    cfg = SchedulerConfig(temperature=tau, floor=eps)
    sched = make_scheduler("astor", pools_of([5] * len(u)), cfg, 0)
    sched.tracker.abs_adv = np.asarray(u)
    w = sched.task_shares()
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w >= eps / len(u) - 1e-12)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    sizes=st.lists(st.integers(1, 60), min_size=2, max_size=4),
    b=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_plans_fill_the_budget_without_repeats(
    name: str, sizes: list[int], b: int, seed: int
) -> None:
    cfg = SchedulerConfig(prompts_per_round=b, samples_per_prompt=4)
    pools = pools_of(sizes)
    sched = make_scheduler(name, pools, cfg, seed)
    for r in range(3):
        plan = sched.plan(r)
        assert len(set(plan.items)) == len(plan.items)
        counts = {t: sum(1 for task, _ in plan.items if task == t) for t in pools}
        assert counts == plan.budgets
        assert all(isinstance(v, int) for v in plan.budgets.values())
        expected = min(b, sizes[1]) if name.startswith("specialist") else min(b, sum(sizes))
        assert sum(plan.budgets.values()) == expected
        assert all(pid in pools[task] for task, pid in plan.items)
        assert sum(plan.shares.values()) == pytest.approx(1.0)
        sched.update(
            RoundFeedback(r, [PromptFeedback(t, p, [1.0, 0.0, 0.0, 1.0]) for t, p in plan.items])
        )


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_plans(name: str) -> None:
    pools = pools_of([30, 50, 20])
    cfg = SchedulerConfig(prompts_per_round=12, samples_per_prompt=4)
    a, b = make_scheduler(name, pools, cfg, 7), make_scheduler(name, pools, cfg, 7)
    play(a, 4)
    play(b, 4)
    assert a.plan(4).to_dict() == b.plan(4).to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_through_json_gives_identical_next_plan(name: str) -> None:
    pools = pools_of([30, 50, 20])
    cfg = SchedulerConfig(prompts_per_round=12, samples_per_prompt=4)
    sched = make_scheduler(name, pools, cfg, 3)
    play(sched, 5)
    state = json.loads(json.dumps(sched.state_dict()))
    resumed = make_scheduler(name, pools, cfg, 999)  # a different seed: the state must win
    resumed.load_state_dict(state)
    for r in range(5, 8):
        plan = sched.plan(r)
        assert resumed.plan(r).to_dict() == plan.to_dict()
        fb = RoundFeedback(r, [PromptFeedback(t, p, [1.0, 0.0, 1.0, 1.0]) for t, p in plan.items])
        sched.update(fb)
        resumed.update(fb)
    assert resumed.stats() == sched.stats()


def test_state_of_another_scheduler_is_rejected() -> None:
    pools = pools_of([5, 5])
    state = make_scheduler("uniform", pools).state_dict()
    with pytest.raises(ValueError, match="not 'astor'"):
        make_scheduler("astor", pools).load_state_dict(state)


def test_round_plan_serialises() -> None:
    plan = RoundPlan(3, [("a", "x"), ("b", "y")], {"a": 1, "b": 1}, {"a": 0.5, "b": 0.5}, 8)
    assert RoundPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_revisit_gap_bounds_how_often_a_prompt_is_replayed() -> None:
    pools = {"t": [f"p{i}" for i in range(30)]}
    cfg = SchedulerConfig(prompts_per_round=10, samples_per_prompt=8, revisit_gap=2)
    sched = make_scheduler("astor", pools, cfg, 0)
    mixed = [f"p{i}" for i in range(10)]
    solved = [f"p{i}" for i in range(10, 30)]
    sched.update(RoundFeedback(0, [PromptFeedback("t", p, [1.0, 0.0] * 4) for p in mixed]))
    # the mixed prompts are the most informative, yet were just played: round 1 takes others
    assert {pid for _, pid in sched.plan(1).items} <= set(solved)
    sched.update(RoundFeedback(1, []))
    assert {pid for _, pid in sched.plan(2).items} == set(mixed)  # gap over: back on top
    # a pool with nothing else left still fills the budget
    small = make_scheduler("astor", {"t": mixed}, cfg, 0)
    small.update(RoundFeedback(0, [PromptFeedback("t", p, [1.0, 0.0] * 4) for p in mixed]))
    assert len(small.plan(1).items) == 10


def test_partial_credit_without_spread_is_not_most_informative() -> None:
    """A BLEU-like group of 8 rewards 0.5 +- 0.05 must rank below an unseen prompt, and a
    mixed binary group above it (the Beta form would rank the flat group first)."""
    pools = {"t": ["flat", "unseen", "mixed"]}
    cfg = SchedulerConfig(prompts_per_round=1, samples_per_prompt=8, revisit_gap=0)
    sched = make_scheduler("astor", pools, cfg, 0)
    flat = [0.55, 0.45] * 4
    sched.update(
        RoundFeedback(
            0,
            [PromptFeedback("t", "flat", flat), PromptFeedback("t", "mixed", [1.0, 0.0] * 4)],
        )
    )
    info = sched.tracker.posteriors.informativeness("t")
    assert info[1] == pytest.approx(1 / 6)
    assert info[0] < info[1] < info[2]
    beta = make_scheduler(
        "astor",
        pools,
        SchedulerConfig(
            prompts_per_round=1, samples_per_prompt=8, utility=UtilityConfig(informativeness="beta")
        ),
        0,
    )
    beta.update(RoundFeedback(0, [PromptFeedback("t", "flat", flat)]))
    b_info = beta.tracker.posteriors.informativeness("t")
    assert b_info[0] > b_info[1]  # the fractional Beta update's failure mode, kept selectable


def test_level2_prefers_informative_prompts() -> None:
    pools = {"t": [f"p{i}" for i in range(40)]}
    sched = make_scheduler(
        "astor",
        pools,
        SchedulerConfig(prompts_per_round=10, samples_per_prompt=8, revisit_gap=0),
        0,
    )
    mixed = [f"p{i}" for i in range(10)]
    solved = [f"p{i}" for i in range(10, 40)]
    fb = [PromptFeedback("t", p, [1.0, 0.0] * 4) for p in mixed]
    fb += [PromptFeedback("t", p, [1.0] * 8) for p in solved]
    sched.update(RoundFeedback(0, fb))
    assert {pid for _, pid in sched.plan(1).items} == set(mixed)
    # the uniform-prompt ablation does not look at the posteriors
    abl = make_scheduler(
        "astor_no_prio", pools, SchedulerConfig(prompts_per_round=10, samples_per_prompt=8), 0
    )
    abl.update(RoundFeedback(0, fb))
    picks = [{pid for _, pid in abl.plan(r).items} for r in range(1, 6)]
    assert any(p != set(mixed) for p in picks)


def test_thompson_scoring_runs_and_prefers_informative_on_average() -> None:
    pools = {"t": [f"p{i}" for i in range(200)]}
    cfg = SchedulerConfig(
        prompts_per_round=20, samples_per_prompt=8, prompt_scoring="thompson", revisit_gap=0
    )
    sched = make_scheduler("astor", pools, cfg, 0)
    fb = [PromptFeedback("t", f"p{i}", [1.0, 0.0] * 4 if i < 20 else [1.0] * 8) for i in range(200)]
    sched.update(RoundFeedback(0, fb))
    hits = np.mean([sum(int(pid[1:]) < 20 for _, pid in sched.plan(r).items) for r in range(1, 11)])
    assert hits > 10  # 20 prompts out of 200: uniform would pick 2 of 20 on average


def test_higher_utility_gets_larger_share_and_floor_protects() -> None:
    cfg = SchedulerConfig(prompts_per_round=40, floor=0.2, temperature=0.1)
    sched = make_scheduler("astor", pools_of([100, 100]), cfg, 0)
    sched.tracker.abs_adv = np.array([1.0, 0.0])
    plan = sched.plan(0)
    assert plan.budgets["t0"] > plan.budgets["t1"] >= 4  # floor: 0.2 / 2 of 40


def test_no_synergy_ablation_ignores_synergy() -> None:
    pools = pools_of([10, 10])
    for name, differs in (("astor", True), ("astor_no_synergy", False)):
        sched = make_scheduler(name, pools, SchedulerConfig(), 0)
        before = sched.utilities().copy()
        sched.tracker.observe_synergy([[1.0, -1.0], [-1.0, 1.0]])
        assert (not np.allclose(sched.utilities(), before)) == differs


def test_ucb_explores_then_follows_abs_advantage() -> None:
    cfg = SchedulerConfig(prompts_per_round=20, samples_per_prompt=4)
    sched = make_scheduler("ucb", pools_of([50, 50]), cfg, 0)
    assert sched.plan(0).budgets == {"t0": 10, "t1": 10}
    items = [PromptFeedback("t0", f"t0-{i}", [1.0, 0.0, 1.0, 0.0]) for i in range(10)]
    items += [PromptFeedback("t1", f"t1-{i}", [1.0, 1.0, 1.0, 1.0]) for i in range(10)]
    sched.update(RoundFeedback(0, items))
    plan = sched.plan(1)
    assert plan.budgets["t0"] > plan.budgets["t1"]


def test_proportional_and_specialist_shares() -> None:
    assert make_scheduler(
        "proportional", pools_of([30, 10]), SchedulerConfig(prompts_per_round=8)
    ).plan(0).budgets == {
        "t0": 6,
        "t1": 2,
    }
    plan = make_scheduler(
        "specialist:t0", pools_of([30, 10]), SchedulerConfig(prompts_per_round=8)
    ).plan(0)
    assert plan.budgets == {"t0": 8, "t1": 0}


@pytest.mark.parametrize(
    ("name", "pools", "message"),
    [
        ("bogus", pools_of([3]), "unknown scheduler 'bogus'"),
        ("specialist:nope", pools_of([3]), "unknown task"),
        ("astor", {"t0": []}, "pool of task 't0' is empty"),
        ("astor", {}, "no task pools"),
    ],
)
def test_bad_construction(name: str, pools: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_scheduler(name, pools)
