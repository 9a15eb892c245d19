"""Tests of astor_core.calibration: utility-scaled KL targets and per-task controllers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astor_core.calibration import CalibrationConfig, Calibrator, kl_targets, make_calibrator

TASKS = ["a", "b", "c"]


@settings(max_examples=100, deadline=None)
@given(
    u=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=6),
    kl_run=st.floats(1e-6, 1.0),
)
def test_targets_are_relative_to_the_run_clipped_and_robust(u: list[float], kl_run: float) -> None:
    cfg = CalibrationConfig()
    t = kl_targets(np.asarray(u), kl_run, cfg)
    assert np.all(np.isfinite(t))
    assert np.all(
        (t >= cfg.rel_min * kl_run * (1 - 1e-12)) & (t <= cfg.rel_max * kl_run * (1 + 1e-12))
    )
    if np.mean(u) <= 0:
        assert np.all(t == kl_run)


def test_targets_follow_utility_ratio() -> None:
    cfg = CalibrationConfig(kappa=0.5)
    t = kl_targets(np.array([4.0, 1.0, 1.0]), 0.04, cfg)  # mean 2
    assert t.tolist() == pytest.approx(
        [0.04 * np.sqrt(2.0), 0.04 * np.sqrt(0.5), 0.04 * np.sqrt(0.5)]
    )
    assert np.all(kl_targets(np.array([1.0, np.nan]), 0.04, cfg) == 0.04)


def test_controller_step_in_log_space_with_horizon_in_rounds() -> None:
    cfg = CalibrationConfig(beta_init=0.1, horizon=2.0, err_clip=1.0, kl_ema=1.0)
    cal = Calibrator(TASKS, cfg)
    util = {"a": 1.0, "b": 1.0, "c": 1.0}
    # run level = (0.1 + 0.05) / 2 = 0.075 = every target (equal utilities)
    cal.update({"a": 0.1, "b": 0.05, "c": 0.0}, util, {"a": 100, "b": 100, "c": 0})
    beta = cal.betas()
    assert cal.kl_run == pytest.approx(0.075)
    assert beta["a"] == pytest.approx(0.1 * np.exp(np.log(0.1 / 0.075) / 2))
    assert beta["b"] == pytest.approx(0.1 * np.exp(np.log(0.05 / 0.075) / 2))
    assert beta["c"] == 0.1  # no samples: unchanged
    # run level ~33.7: errors ln(100 / 33.7) and ln(1e-6 / 33.7) clipped at +-1: e^+-0.5 a round
    cal.update({"a": 100.0, "b": 0.0, "c": 1.0}, util, 10)
    assert cal.betas()["a"] == pytest.approx(beta["a"] * np.exp(0.5))
    assert cal.betas()["b"] == pytest.approx(beta["b"] * np.exp(-0.5))


def test_nothing_moves_while_the_policy_is_at_the_reference() -> None:
    cal = Calibrator(TASKS)
    cal.update({"a": 0.0, "b": 0.0, "c": 0.0}, {"a": 3.0, "b": 1.0, "c": 0.1}, 64)
    assert cal.betas() == {t: 0.04 for t in TASKS}


def test_high_utility_task_gets_lower_beta_within_a_few_rounds() -> None:
    """Both tasks reach the same KL: the useful one is let go, the other held; after 6 rounds
    (the demo's length) their betas are more than 2x apart."""
    cal = Calibrator(["hi", "lo"], CalibrationConfig())
    for _ in range(6):
        cal.update({"hi": 0.01, "lo": 0.01}, {"hi": 3.0, "lo": 1.0}, 128)
    assert cal.target_kls()["hi"] > cal.target_kls()["lo"]
    assert cal.betas()["lo"] / cal.betas()["hi"] >= 2.0


@settings(max_examples=50, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.floats(0, 10, allow_nan=False), min_size=3, max_size=3),
            st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=3),
            st.integers(0, 100_000),
        ),
        max_size=30,
    )
)
def test_beta_stays_within_bounds(steps: list) -> None:
    cfg = CalibrationConfig(beta_min=0.01, beta_init=0.05, beta_max=0.2, horizon=1.0)
    cal = Calibrator(TASKS, cfg)
    for kls, utils, n in steps:
        cal.update(dict(zip(TASKS, kls, strict=True)), dict(zip(TASKS, utils, strict=True)), n)
        b = np.array(list(cal.betas().values()))
        assert np.all((b >= cfg.beta_min) & (b <= cfg.beta_max))


def test_fixed_mode_and_factory() -> None:
    for name in ("uniform", "proportional", "ucb", "specialist:a", "astor_fixed_beta"):
        cal = make_calibrator(name, TASKS)
        cal.update({"a": 5.0, "b": 0.1}, {"a": 1.0, "b": 1.0, "c": 1.0}, 10_000)
        assert cal.config.mode == "fixed" and cal.betas() == {t: 0.04 for t in TASKS}
    for name in ("astor", "astor_no_synergy", "astor_no_prio"):
        cal = make_calibrator(name, TASKS)
        cal.update({"a": 5.0, "b": 0.1}, {"a": 1.0, "b": 1.0, "c": 1.0}, 10_000)
        assert cal.betas()["a"] > 0.04 > cal.betas()["b"]


def test_state_round_trip_through_json() -> None:
    cal = Calibrator(TASKS)
    cal.update({"a": 0.3, "b": 0.0}, {"a": 2.0, "b": 0.5, "c": 0.1}, 500)
    other = Calibrator(TASKS)
    other.load_state_dict(json.loads(json.dumps(cal.state_dict())))
    assert other.betas() == cal.betas() and other.target_kls() == cal.target_kls()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.update({"z": 0.1}, {"a": 1, "b": 1, "c": 1}, 1), "unknown task 'z'"),
        (lambda c: c.update({"a": -0.1}, {"a": 1, "b": 1, "c": 1}, 1), "finite and >= 0"),
        (lambda c: c.update({"a": 0.1}, {"a": 1}, 1), "utility missing"),
    ],
)
def test_bad_updates(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(Calibrator(TASKS))


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="mode"):
        CalibrationConfig(mode="sometimes")
    with pytest.raises(ValueError, match="beta_min"):
        CalibrationConfig(beta_init=2.0)
