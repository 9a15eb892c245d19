"""The comparison: rows from item scores, the specialists row, the paired statistics (t
interval, seeds-and-items bootstrap, MDE) against hand-computed values and scipy, identical
arms, and the report's tables and verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from astor_core.comparison import (
    SFT,
    SPECIALISTS,
    CompareConfig,
    PairedComparison,
    RunResult,
    arm_items,
    bootstrap_interval,
    expand_methods,
    identical_arms,
    method_rows,
    min_detectable_effect,
    paired_comparison,
    paired_comparisons,
    paired_markdown,
    relative_gain,
    results_markdown,
    run_overrides,
    t_interval,
    verdict,
)
from astor_core.config import ConfigError, load_config
from astor_core.method.scheduler import SchedulerConfig

TASKS = ("a", "b")


def _run(method: str, seed: int, a: list[float], b: list[float] | None = None) -> RunResult:
    per_task = {"a": {f"a{i}": v for i, v in enumerate(a)}}
    if b is not None:
        per_task["b"] = {f"b{i}": v for i, v in enumerate(b)}
    return RunResult(method, seed, {"mean_at_k": per_task, "greedy": per_task})


def _results() -> list[RunResult]:
    return [
        _run("astor", 0, [0.6, 0.6], [0.4, 0.4]),
        _run("astor", 1, [0.5, 0.5], [0.5, 0.5]),
        _run("uniform", 0, [0.4, 0.4], [0.4, 0.4]),
        _run("uniform", 1, [0.5, 0.5], [0.3, 0.3]),
        # a specialist is evaluated on its own task only
        RunResult("specialist:a", 0, {"mean_at_k": {"a": {"a0": 0.7, "a1": 0.7}}}),
        RunResult("specialist:b", 0, {"mean_at_k": {"b": {"b0": 0.1, "b1": 0.1}}}),
        RunResult("specialist:a", 1, {"mean_at_k": {"a": {"a0": 0.5, "a1": 0.5}}}),
        RunResult("specialist:b", 1, {"mean_at_k": {"b": {"b0": 0.3, "b1": 0.3}}}),
    ]


def test_rows_average_items_then_tasks_then_seeds() -> None:
    rows = method_rows(_results(), TASKS)
    assert rows["astor"].average[0] == pytest.approx(0.5)
    assert rows["uniform"].average[0] == pytest.approx(0.4)
    assert rows[SPECIALISTS].per_seed_average == pytest.approx([0.4, 0.4])
    assert rows[SPECIALISTS].per_task["a"][0] == pytest.approx(0.6)
    assert rows["astor"].per_task["a"][1] == pytest.approx(np.std([0.6, 0.5], ddof=1))
    # unequal item counts: each task weighs the same in the average
    row = method_rows([_run("x", 0, [1.0, 1.0, 1.0, 0.0], [0.0])], TASKS)["x"]
    assert row.average[0] == pytest.approx((0.75 + 0.0) / 2)


def test_incomplete_seed_is_left_out() -> None:
    assert method_rows(_results()[:-1], TASKS)[SPECIALISTS].seeds == 1
    assert list(arm_items(_results()[:-1], TASKS)[SPECIALISTS]) == [0]


def test_t_interval_matches_the_hand_formula_and_ttest_rel() -> None:
    a = np.array([0.52, 0.48, 0.55, 0.50, 0.47, 0.53])
    b = np.array([0.50, 0.47, 0.50, 0.49, 0.48, 0.49])
    d = a - b
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    low, high, p = t_interval(d)
    assert (low, high) == pytest.approx((mean - half, mean + half))
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert p == pytest.approx(2 * stats.t.sf(mean / (sd / np.sqrt(n)), n - 1))
    # by hand: 0.1, 0.2, 0.3 -> 0.2 ± 4.3027 * 0.1 / sqrt(3)
    assert t_interval([0.1, 0.2, 0.3])[:2] == pytest.approx((-0.04841, 0.44841), abs=1e-5)


def test_mde_has_the_stated_power() -> None:
    assert min_detectable_effect(0.1, 6) == pytest.approx(
        (2.5706 + 0.9195) * 0.1 / np.sqrt(6), rel=1e-4
    )
    # the exact power of the two-sided paired t test at effect = MDE (noncentral t): ~0.8
    sd, n = 0.02, 6
    mde = min_detectable_effect(sd, n)
    crit = stats.t.ppf(0.975, n - 1)
    power = stats.nct.sf(crit, n - 1, mde / (sd / np.sqrt(n)))
    assert power == pytest.approx(0.8, abs=0.02)
    assert np.isnan(min_detectable_effect(0.1, 1))


def test_bootstrap_over_seeds_matches_scipy_with_one_item_per_task() -> None:
    d = np.array([[0.03], [0.01], [0.04], [-0.01], [0.02], [0.05]])
    low, high = bootstrap_interval([d], 20000, 0.95, seed=1)
    ref = stats.bootstrap(
        (d[:, 0],), np.mean, n_resamples=20000, method="percentile", random_state=2
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.003)
    assert high == pytest.approx(ref.high, abs=0.003)


def test_bootstrap_widens_with_item_noise_and_is_exact_on_constants() -> None:
    assert bootstrap_interval([np.full((4, 5), 0.1), np.full((4, 3), 0.3)], 300) == (0.2, 0.2)
    rng = np.random.default_rng(0)
    seeds_only = np.repeat(rng.normal(0.02, 0.01, size=(6, 1)), 50, axis=1)
    noisy = seeds_only + rng.normal(0, 0.3, size=(6, 50))
    narrow = np.subtract(*bootstrap_interval([seeds_only], 2000)[::-1])
    wide = np.subtract(*bootstrap_interval([noisy], 2000)[::-1])
    assert wide > 1.5 * narrow


def _cfg(**kw: object) -> CompareConfig:
    return CompareConfig(bootstrap_resamples=500, **kw)  # type: ignore[arg-type]


def test_paired_comparison_claims_a_win_only_above_zero_and_at_target() -> None:
    seeds = range(6)
    gains = [0.06, 0.05, 0.07, 0.06, 0.05, 0.06]
    a = {s: {"a": {"1": 0.5 + g, "2": 0.5 + g}} for s, g in zip(seeds, gains, strict=True)}
    b = {s: {"a": {"1": 0.5, "2": 0.5}} for s in seeds}
    pc = paired_comparison("astor", "uniform", a, b, ["a"], _cfg(), target=0.05)
    assert pc is not None
    assert pc.mean_diff == pytest.approx(np.mean(gains))
    assert pc.relative_gain == pytest.approx(np.mean(gains) / 0.5)
    assert pc.t_low > 0 and pc.boot_low > 0 and pc.win
    assert pc.mde == pytest.approx(min_detectable_effect(np.std(gains, ddof=1), 6))
    # same intervals, but the gain is under a 20% target: no win
    assert not paired_comparison("astor", "uniform", a, b, ["a"], _cfg(), target=0.2).win
    # noisy differences around 0: the lower bound is below 0
    mixed = {s: {"a": {"1": 0.5 + g, "2": 0.5}} for s, g in enumerate([0.1, -0.1] * 3)}
    pc = paired_comparison("astor", "uniform", mixed, b, ["a"], _cfg(), target=0.0)
    assert pc is not None and pc.t_low < 0 and not pc.win
    # one seed: no interval, never a win
    one = paired_comparison("astor", "uniform", {0: a[0]}, b, ["a"], _cfg())
    assert one is not None and np.isnan(one.t_low) and not one.win


def test_comparisons_cover_baseline_specialists_ablations_and_sft() -> None:
    results = (
        _results()
        + [_run("astor_no_prio", s, [0.5, 0.5], [0.4, 0.4]) for s in (0, 1)]
        + [_run(SFT, s, [0.3, 0.3], [0.3, 0.3]) for s in (0, 1)]
    )
    pcs = paired_comparisons(results, TASKS, _cfg())
    pairs = [(pc.treatment, pc.control) for pc in pcs]
    assert pairs[:3] == [("astor", "uniform"), ("astor", SPECIALISTS), ("astor", "astor_no_prio")]
    assert ("uniform", SFT) in pairs and (SPECIALISTS, SFT) in pairs
    by = {(pc.treatment, pc.control): pc for pc in pcs}
    assert by[("astor", "uniform")].per_seed_diff == pytest.approx((0.1, 0.1))
    assert by[("astor", "uniform")].target == 0.05 and by[("astor", "astor_no_prio")].target == 0.0


def test_report_tables_and_verdict() -> None:
    results = _results() + [_run(SFT, s, [0.3, 0.3], [0.3, 0.3]) for s in (0, 1)]
    rows = method_rows(results, TASKS)
    text = results_markdown(rows, TASKS, secondary=method_rows(results, TASKS, "greedy"))
    lines = text.splitlines()
    assert lines[2].startswith("| sft |")  # the SFT row first, then by average
    assert "+25.0%" in text and "| specialists |" in text
    pcs = paired_comparisons(results, TASKS, _cfg())
    table = paired_markdown(pcs)
    assert "| astor vs uniform | 2 | 4 | +0.1000 | +25.0% |" in table
    assert "MDE" in table.splitlines()[0]
    v = verdict(pcs)
    assert v.startswith("ASTOR's average held-out reward over uniform: +25.0%")
    # identical per-seed differences: sd 0, both intervals collapse on +0.1 -> a win
    assert "over uniform: +25.0%" in v and ": a win" in v
    assert verdict([]) == "ASTOR and its controls did not all run: no verdict."


def test_verdict_names_the_failing_bound() -> None:
    pc = PairedComparison(
        "astor",
        "uniform",
        (0, 1, 2),
        10,
        (0.1, -0.05, 0.0),
        0.5,
        0.49,
        0.0167,
        0.076,
        -0.17,
        0.2,
        0.7,
        -0.02,
        0.05,
        0.3,
        0.05,
    )
    assert relative_gain(0.5, 0.49) == pytest.approx(pc.relative_gain)
    v = verdict([pc])
    assert "no win: a lower bound is not above 0 and the gain is below the 5% target" in v


def test_uniform_and_proportional_identical_on_even_pools_only() -> None:
    cfg = SchedulerConfig(prompts_per_round=32, samples_per_prompt=4)
    # the shipped pools' sizes: 32 prompts split 8/8/8/8 either way
    sizes = {"a": 752, "b": 746, "c": 704, "d": 727}
    pools = {t: [f"{t}{i}" for i in range(n)] for t, n in sizes.items()}
    assert identical_arms(["astor", "uniform", "proportional"], pools, cfg, [0, 1], 4) == {
        "proportional": "uniform"
    }
    pools["d"] = pools["d"][:200]
    assert identical_arms(["uniform", "proportional"], pools, cfg, [0, 1], 4) == {}


def test_specialists_get_a_task_share_of_the_budget() -> None:
    assert expand_methods(["uniform", "specialists"], TASKS) == [
        "uniform",
        "specialist:a",
        "specialist:b",
    ]
    over = run_overrides("specialist:a", 2, 32, 4, "runs/c")
    assert "scheduler.prompts_per_round=8" in over and "train.seed=2" in over
    assert not any(o.startswith("scheduler.") for o in run_overrides("astor", 0, 32, 4, "runs/c"))


def test_compare_config_rules(tmp_path) -> None:
    cfg = load_config(tmp_path / "none.yaml", [], sections=["compare"])
    assert cfg.compare.split == "validation" and len(cfg.compare.seeds) >= 6
    assert cfg.compare.eval_samples >= 4 and cfg.compare.eval_temperature == 1.0
    with pytest.raises(ConfigError, match="compare"):
        load_config(tmp_path / "none.yaml", ["compare.split=train"], sections=["compare"])
    with pytest.raises(ConfigError, match="compare"):
        load_config(tmp_path / "none.yaml", ["compare.eval_samples=2"], sections=["compare"])


def test_heldout_halves_partition_the_eval_pool() -> None:
    from astor_core.evaluation import heldout_split, select_split

    recs = [{"prompt_id": f"p{i}"} for i in range(400)]
    val, test = select_split(recs, "validation"), select_split(recs, "test")
    assert len(val) + len(test) == 400 and 150 < len(test) < 250
    assert not {r["prompt_id"] for r in val} & {r["prompt_id"] for r in test}
    # by prompt_id alone: the order and the other items do not matter
    assert [heldout_split(r["prompt_id"]) for r in reversed(recs)][::-1] == [
        heldout_split(r["prompt_id"]) for r in recs
    ]
