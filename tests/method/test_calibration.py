"""Tests of astor_core.method.calibration: utility-scaled KL targets and per-task controllers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astor_core.method.calibration import (
    CalibrationConfig,
    Calibrator,
    beta_targets,
    kl_targets,
    make_calibrator,
)

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


def test_beta_targets_follow_utility_at_fixed_geometric_mean() -> None:
    cfg = CalibrationConfig(beta_init=0.04, kappa=1.0)
    b = beta_targets(np.array([4.0, 1.0, 1.0]), cfg)  # mean 2: ratios 2, 0.5, 0.5
    assert b[1] / b[0] == pytest.approx(4.0) and b[1] == pytest.approx(b[2])
    assert np.exp(np.mean(np.log(b))) == pytest.approx(0.04)
    assert np.all(beta_targets(np.array([1.0, np.nan]), cfg) == 0.04)
    assert np.all(beta_targets(np.array([-1.0, -2.0]), cfg) == 0.04)


def test_controller_step_in_log_space_with_horizon_in_rounds() -> None:
    cfg = CalibrationConfig(beta_init=0.04, horizon=2.0, err_clip=1.0, kappa=1.0)
    cal = Calibrator(["a", "b"], cfg)
    util = {"a": 1.5, "b": 0.5}  # ratios 1.5, 0.5 -> targets 0.04 / 1.5 * g, 0.04 / 0.5 * g
    target = beta_targets(np.array([1.5, 0.5]), cfg)
    cal.update({"a": 0.01, "b": 0.01}, util, 64)
    step = np.clip(np.log(target / 0.04), -1, 1) / 2
    assert list(cal.betas().values()) == pytest.approx((0.04 * np.exp(step)).tolist())
    assert cal.kl_run == pytest.approx(0.01)
    assert cal.target_kls()["a"] == pytest.approx(0.015)  # KL_run * ratio: tracked
    for _ in range(30):
        cal.update({"a": 0.01, "b": 0.01}, util, 64)
    assert list(cal.betas().values()) == pytest.approx(target.tolist())


def test_betas_act_without_kl_and_stay_put_for_equal_utilities() -> None:
    cal = Calibrator(TASKS)
    cal.update({}, {"a": 1.0, "b": 1.0, "c": 1.0}, 64)
    assert cal.betas() == pytest.approx({t: 0.04 for t in TASKS})
    cal.update({}, {"a": 3.0, "b": 1.0, "c": 1.0}, 64)
    assert cal.betas()["a"] < 0.04 < cal.betas()["b"]


def test_high_utility_task_gets_lower_beta_within_a_few_rounds() -> None:
    """A task worth twice another: after 6 rounds (the demo's length) their betas are more
    than 2x apart, whatever KL they reach."""
    cal = Calibrator(["hi", "lo"], CalibrationConfig())
    for _ in range(6):
        cal.update({"hi": 0.01, "lo": 0.01}, {"hi": 2.0, "lo": 1.0}, 128)
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
        cal.update({"a": 5.0, "b": 0.1}, {"a": 0.2, "b": 2.0, "c": 1.0}, 10_000)
        assert cal.config.mode == "fixed" and cal.betas() == {t: 0.04 for t in TASKS}
    for name in ("astor", "astor_no_synergy", "astor_no_prio"):
        cal = make_calibrator(name, TASKS)
        cal.update({"a": 5.0, "b": 0.1}, {"a": 0.2, "b": 2.0, "c": 1.0}, 10_000)
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
