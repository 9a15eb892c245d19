"""Tests of astor_core.simulation, astor_core.simulation_learners and `astor bench scheduler`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from astor_core.method.calibration import CalibrationConfig
from astor_core.method.scheduler import RoundPlan, make_scheduler
from astor_core.simulation import (
    Scenario,
    evaluate_schedulers,
    load_scenario,
    run_simulation,
    run_specialists,
    shipped_scenarios,
    summarise,
)
from astor_core.simulation_learners import MemorisingLearner, SimulatedLearner

REQUIRED = {
    "balanced",
    "hard_task",
    "synergistic_pair",
    "interfering_task",
    "early_saturation",
    "unsolvable_prompts",
}


def small(name: str, **changes) -> Scenario:
    sc = load_scenario(Path("configs/scenarios") / f"{name}.yaml")
    for key, value in changes.items():
        setattr(sc, key, value)
    return sc


def test_shipped_scenarios_load_and_cover_the_required_cases() -> None:
    scenarios = [load_scenario(p) for p in shipped_scenarios()]
    assert len(scenarios) >= 6
    assert {s.name for s in scenarios} >= REQUIRED
    for sc in scenarios:
        t = np.asarray(sc.transfer)
        assert np.allclose(np.diag(t), 1.0)
        assert 0 < sc.target_mean_success < 1
    assert np.min(small("interfering_task").transfer) < 0


def test_bad_scenario_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [{name: a}]\ntransfer: [[1, 0], [0, 1]]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*transfer must be 1x1"):
        load_scenario(bad)


def test_rewards_follow_the_logistic_model_and_unsolvable_never_pays() -> None:
    sc = small("unsolvable_prompts")
    learner = SimulatedLearner(sc, 0)
    diff = learner.difficulty["code_generation"]
    unsolvable = [learner.ids["code_generation"][i] for i in np.flatnonzero(np.isinf(diff))[:20]]
    easy = [learner.ids["code_generation"][i] for i in np.flatnonzero(diff < -3)[:20]]
    assert 0.5 < np.isinf(diff).mean() < 0.7
    items = [("code_generation", p) for p in unsolvable + easy]
    plan = RoundPlan(0, items, {"code_generation": len(items)}, {"code_generation": 1.0}, 64)
    fb = learner.step(plan, {t: 0.0 for t in sc.task_names})
    by_id = {p.prompt_id: np.mean(p.rewards) for p in fb.prompts}
    assert all(by_id[p] == 0.0 for p in unsolvable)
    assert np.mean([by_id[p] for p in easy]) > 0.9


def test_training_raises_success_and_kl_and_beta_damps_it() -> None:
    sc = small("balanced")
    results = {}
    for beta in (0.0, 50.0):
        learner = SimulatedLearner(sc, 1)
        sched = make_scheduler("uniform", learner.pools(), seed=1)
        start = learner.success().mean()
        for r in range(30):
            learner.step(sched.plan(r), {t: beta for t in sc.task_names})
        results[beta] = learner.success().mean() - start
        assert np.all(learner.kl() > 0)
    assert results[0.0] > results[50.0] > 0


def test_noisy_gradient_cosines_follow_the_true_transfer() -> None:
    sc = small("synergistic_pair")
    learner = SimulatedLearner(sc, 0)
    sched = make_scheduler("uniform", learner.pools(), seed=0)
    for r in range(40):
        sched.update(learner.step(sched.plan(r), {t: 0.04 for t in sc.task_names}))
    s = np.asarray(sched.stats()["synergy"])
    assert s[0, 1] > 0.3  # reasoning <-> generation, true 0.6
    assert abs(s[2, 3]) < 0.3  # weakly coupled pair
    sc = small("interfering_task")
    learner = SimulatedLearner(sc, 0)
    sched = make_scheduler("uniform", learner.pools(), seed=0)
    for r in range(40):
        sched.update(learner.step(sched.plan(r), {t: 0.04 for t in sc.task_names}))
    stats = sched.stats()
    raw, floor = stats["synergy_raw"][0][3], stats["synergy_floor"][0][3]
    assert raw < 0 and floor > 0  # interference, reported with its noise floor
    assert np.asarray(stats["synergy"])[0, 3] == pytest.approx(min(0.0, raw + 2 * floor))


def test_runs_are_deterministic_and_metrics_consistent() -> None:
    sc = small("balanced", budget=8192)
    a = run_simulation(sc, "astor", 3)
    b = run_simulation(sc, "astor", 3, calibration_config=CalibrationConfig())
    assert a == b
    assert a.rollouts[0] == 0 and a.rollouts[-1] >= 8192
    assert sum(a.shares.values()) == pytest.approx(1.0)
    assert 0 < a.auc(8192) < 1
    assert a.rollouts_to(0.0) == 0 and a.rollouts_to(1.01) is None
    spec = run_specialists(sc, 3)
    assert spec.rollouts[-1] <= 8192 + 4 * 512 and len(spec.task_success) == len(spec.rollouts)


def test_astor_beats_uniform_where_many_prompts_are_unsolvable() -> None:
    sc = small("unsolvable_prompts", budget=30_000)
    runs = evaluate_schedulers(sc, ["astor", "uniform"], seeds=3)
    summary = summarise(sc, runs)
    assert summary["astor"]["auc_mean"] > summary["uniform"]["auc_mean"]
    assert summary["astor"]["final_mean_success"] > summary["uniform"]["final_mean_success"]


def test_bench_scheduler_cli(tmp_path: Path) -> None:
    from flows.cli import app

    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "bench",
            "scheduler",
            "--scenario",
            "configs/scenarios/balanced.yaml",
            "--seeds",
            "1",
            "--budget",
            "3000",
            "--schedulers",
            "astor,uniform,specialists",
            "--workers",
            "1",
            "--learner",
            "memorising",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert (
        data["learner"] == "memorising" and data["scenarios"]["balanced"]["split"] == "validation"
    )
    assert set(data["scenarios"]["balanced"]["results"]) == {"astor", "uniform", "specialists"}
    assert data["overall"]["uniform"]["mean_ratio_to_uniform"] == 1.0
    res = runner.invoke(app, ["bench", "scheduler", "--scale", "20000", "--repeats", "2"])
    assert res.exit_code == 0, res.output
    assert "plan ms" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "no/such.yaml"], "does not exist"),
        (["--scenario", "all", "--schedulers", "astor,magic"], "unknown scheduler"),
        (
            ["--scenario", "configs/scenarios/balanced.yaml", "--learner", "oracle"],
            "unknown learner",
        ),
        ([], "exactly one of"),
    ],
)
def test_bench_scheduler_cli_errors(args: list[str], message: str, tmp_path: Path) -> None:
    from flows.cli import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "scheduler", *args, "--json", str(out)])
    assert res.exit_code == 1
    assert message in res.output
    assert not out.exists()


def test_scenarios_have_a_validation_and_a_test_split() -> None:
    splits = {load_scenario(p).name: load_scenario(p).split for p in shipped_scenarios()}
    assert {n for n, s in splits.items() if s == "validation"} == {
        "balanced",
        "noisy_rewards",
        "small_pools",
    }
    assert sum(s == "test" for s in splits.values()) >= 7


def _plan(items: list[tuple[str, str]], b: int = 64, g: int = 8) -> RoundPlan:
    budgets: dict[str, int] = {}
    for task, _ in items:
        budgets[task] = budgets.get(task, 0) + 1
    return RoundPlan(0, items, budgets, {}, g)


def test_memorising_learner_replays_teach_less_and_are_memorised() -> None:
    sc = small("balanced", prompts_per_round=1)
    sc.memorising.drift = 0.0
    task = sc.task_names[0]
    fresh = [MemorisingLearner(sc, 0) for _ in range(2)]
    betas = dict.fromkeys(sc.task_names, 0.04)
    # the same prompt five times vs five different prompts: same number of groups
    gains = []
    for learner, ids in zip(fresh, ([0] * 5, [0, 1, 2, 3, 4]), strict=True):
        pool = learner.ids[task]
        learner.difficulty[task][:5] = 0.5  # all learnable, same difficulty
        start = learner.skill[0]
        for i in ids:
            learner.step(_plan([(task, pool[i])] * 1, b=1), betas)
        gains.append(learner.skill[0] - start)
        if ids == [0] * 5:
            assert learner.visits[task][0] == 5 and learner.memo[task][0] > 0
    assert gains[0] < gains[1]


def test_memorising_learner_drift_is_what_beta_holds_back() -> None:
    sc = small("drift_heavy")
    out = {}
    for beta in (0.01, 0.3):
        learner = MemorisingLearner(sc, 0)
        sched = make_scheduler("uniform", learner.pools(), None, 0)
        for r in range(40):
            learner.step(sched.plan(r), dict.fromkeys(sc.task_names, beta))
        out[beta] = (learner.drift.copy(), learner.skill - learner.skill0)
    assert np.all(out[0.3][0] < out[0.01][0])  # less drift with a stronger KL term
    assert np.all(out[0.3][1] < out[0.01][1])  # and a slower own step: a real trade-off


def test_memorising_learner_signal_is_not_group_variance_and_geometry_is_perturbed() -> None:
    from astor_core.simulation_learners import group_signal

    s = group_signal(np.arange(9), 8, 1 / 3)
    assert int(np.argmax(s)) in (2, 3)  # peaks near a third, not at 4/8
    sc = small("synergistic_pair")
    sym = (np.asarray(sc.transfer) + np.asarray(sc.transfer).T) / 2
    rasch, mem = SimulatedLearner(sc, 0), MemorisingLearner(sc, 0)
    cos_r, cos_m = rasch.directions @ rasch.directions.T, mem.directions @ mem.directions.T
    off = ~np.eye(len(sym), dtype=bool)
    assert np.abs(cos_m - cos_r)[off].max() > 0.05  # not the true geometry verbatim
