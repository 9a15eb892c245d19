"""Tests of astor_core.method.calibration: utility-scaled KL targets and per-task controllers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astor_core.method.calibration import CalibrationConfig, Calibrator, kl_targets, make_calibrator

TASKS = ["a", "b", "c"]


@settings(max_examples=100, deadline=None)
@given(u=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=6))
def test_targets_are_clipped_and_robust(u: list[float]) -> None:
    cfg = CalibrationConfig()
    t = kl_targets(np.asarray(u), cfg)
    assert np.all(np.isfinite(t))
    assert np.all((t >= cfg.target_min) & (t <= cfg.target_max))
    if np.mean(u) <= 0:
        assert np.all(t == cfg.kl_base)


def test_targets_follow_utility_ratio() -> None:
    cfg = CalibrationConfig(kappa=0.5, kl_base=0.04, target_max=1.0)
    t = kl_targets(np.array([4.0, 1.0, 1.0]), cfg)  # mean 2
    assert t.tolist() == pytest.approx(
        [0.04 * np.sqrt(2.0), 0.04 * np.sqrt(0.5), 0.04 * np.sqrt(0.5)]
    )
    assert np.all(kl_targets(np.array([1.0, np.nan]), cfg) == 0.04)


def test_controller_step_matches_ziegler() -> None:
    cfg = CalibrationConfig(beta_init=0.1, kl_base=0.05, horizon=1000)
    cal = Calibrator(TASKS, cfg)
    util = {"a": 1.0, "b": 1.0, "c": 1.0}
    cal.update({"a": 0.1, "b": 0.05 * 0.9, "c": 0.0}, util, {"a": 100, "b": 100, "c": 0})
    beta = cal.betas()
    assert beta["a"] == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))  # error clipped at +0.2
    assert beta["b"] == pytest.approx(0.1 * (1 - 0.1 * 100 / 1000))
    assert beta["c"] == 0.1  # no samples: unchanged


def test_high_utility_task_gets_lower_beta_over_time() -> None:
    cal = Calibrator(["hi", "lo"], CalibrationConfig(horizon=500))
    for _ in range(200):  # both tasks move equally far from the reference
        cal.update({"hi": 0.05, "lo": 0.05}, {"hi": 3.0, "lo": 0.2}, 128)
    assert cal.target_kls()["hi"] > cal.target_kls()["lo"]
    assert cal.betas()["hi"] < cal.betas()["lo"]


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
    cfg = CalibrationConfig(beta_min=0.01, beta_init=0.05, beta_max=0.2, horizon=100)
    cal = Calibrator(TASKS, cfg)
    for kls, utils, n in steps:
        cal.update(dict(zip(TASKS, kls, strict=True)), dict(zip(TASKS, utils, strict=True)), n)
        b = np.array(list(cal.betas().values()))
        assert np.all((b >= cfg.beta_min) & (b <= cfg.beta_max))


def test_fixed_mode_and_factory() -> None:
    for name in ("uniform", "proportional", "ucb", "specialist:a", "astor_fixed_beta"):
        cal = make_calibrator(name, TASKS)
        cal.update({"a": 5.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, 10_000)
        assert cal.config.mode == "fixed" and cal.betas() == {t: 0.04 for t in TASKS}
    for name in ("astor", "astor_no_synergy", "astor_no_prio"):
        cal = make_calibrator(name, TASKS)
        cal.update({"a": 5.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, 10_000)
        assert cal.betas()["a"] > 0.04


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
