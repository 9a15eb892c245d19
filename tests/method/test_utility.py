"""Tests of astor_core.method.utility: posterior updates, learning potential, synergy, utility."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astor_core.method.utility import (
    PromptFeedback,
    RoundFeedback,
    UtilityConfig,
    UtilityTracker,
)

POOLS = {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2"]}


def test_fractional_update_then_decay_toward_prior() -> None:
    cfg = UtilityConfig(decay=0.5)
    tr = UtilityTracker(POOLS, cfg)
    tr.update(RoundFeedback(0, [PromptFeedback("a", "a1", [1.0, 0.5, 0.0, 0.25])]))
    post = tr.posteriors
    # decay happens before the evidence is added; the prior stays where it is
    assert post.a["a"][1] == pytest.approx(1.0 + 1.75)
    assert post.b["a"][1] == pytest.approx(1.0 + 2.25)
    assert post.a["a"][0] == 1.0 and post.b["b"][2] == 1.0
    tr.update(RoundFeedback(1, []))
    assert post.a["a"][1] == pytest.approx(1.0 + 0.5 * 1.75)
    assert post.b["a"][1] == pytest.approx(1.0 + 0.5 * 2.25)


def test_solved_prompts_stop_being_informative_and_resurface() -> None:
    tr = UtilityTracker(POOLS, UtilityConfig(decay=0.8))
    tr.update(RoundFeedback(0, [PromptFeedback("a", p, [1.0] * 8) for p in ("a0", "a1")]))
    assert tr.informative_fractions()[0] == pytest.approx(0.5)
    assert tr.informative_fractions()[1] == 1.0
    for r in range(1, 15):
        tr.update(RoundFeedback(r, []))
    assert tr.informative_fractions()[0] == 1.0  # the posterior decayed back: explorable again


def test_learning_potential_is_ema_of_reward_spread_times_informative_fraction() -> None:
    cfg = UtilityConfig(lp_ema=0.5, lp_init=0.5)
    tr = UtilityTracker(POOLS, cfg)
    fb = RoundFeedback(
        0,
        [
            PromptFeedback("a", "a0", [1.0, 0.0], advantages=[0.4, -0.4]),
            PromptFeedback("a", "a1", [1.0, 1.0], advantages=[0.0, 0.0]),
        ],
    )
    tr.update(fb)
    # spread: mean |R - mean R| over the 4 rollouts = (0.5 + 0.5 + 0 + 0) / 4; the first
    # measurement replaces the optimistic initial value
    assert tr.abs_adv[0] == pytest.approx(0.25)
    assert tr.abs_adv[1] == 0.5  # task b not trained: still optimistic
    frac = tr.informative_fractions()
    assert tr.learning_potential()[0] == pytest.approx(0.25 * frac[0])
    assert tr.zero_variance_fraction[0] == pytest.approx(0.5)
    assert tr.mean_reward[0] == pytest.approx(0.75)
    assert tr.rollouts.tolist() == [4, 0]
    tr.update(RoundFeedback(1, [PromptFeedback("a", "a2", [1.0, 1.0])]))
    assert tr.abs_adv[0] == pytest.approx(0.5 * 0.25 + 0.5 * 0.0)  # then an EMA
    # the paper's signal: the trainer's |advantage| per rollout
    norm = UtilityTracker(POOLS, UtilityConfig(lp_ema=0.5, lp_init=1.0, lp_signal="normalised"))
    norm.update(fb)
    assert norm.abs_adv[0] == pytest.approx(0.2)


def test_noisy_flat_rewards_cannot_inflate_learning_potential() -> None:
    """Groups of BLEU-like scores 0.5 +- 0.05 (a task that is noisy but not learnable from
    these groups) vs binary groups at p = 0.5: GRPO's std-normalised |A| is ~1 for both, so the
    paper's signal ranks them equal; the spread ranks the noisy task 10x lower."""
    rng = np.random.default_rng(0)
    pools = {"noisy": [f"n{i}" for i in range(50)], "binary": [f"b{i}" for i in range(50)]}
    fb = [
        PromptFeedback("noisy", f"n{i}", (0.5 + 0.05 * rng.choice([-1, 1], 8)).tolist())
        for i in range(20)
    ]
    fb += [PromptFeedback("binary", f"b{i}", [1.0, 0.0] * 4) for i in range(20)]
    spread = UtilityTracker(pools, UtilityConfig(lp_ema=1.0))
    spread.update(RoundFeedback(0, fb))
    assert spread.abs_adv[1] / spread.abs_adv[0] > 5
    assert spread.learning_potential()[1] > 5 * spread.learning_potential()[0]
    normalised = UtilityTracker(pools, UtilityConfig(lp_ema=1.0, lp_signal="normalised"))
    normalised.update(RoundFeedback(0, fb))
    assert normalised.abs_adv[0] > 0.8 * normalised.abs_adv[1]


def test_advantages_default_to_grpo_in_normalised_mode() -> None:
    tr = UtilityTracker(POOLS, UtilityConfig(lp_ema=1.0, lp_signal="normalised"))
    tr.update(RoundFeedback(0, [PromptFeedback("b", "b0", [1.0, 0.0, 0.0, 0.0])]))
    r = np.array([1.0, 0.0, 0.0, 0.0])
    expected = np.abs((r - r.mean()) / (r.std(ddof=1) + 1e-4)).mean()  # docs/METHOD.md
    assert tr.abs_adv[1] == pytest.approx(expected)


def test_utility_formula_with_synergy() -> None:
    tr = UtilityTracker({"a": ["x"], "b": ["y"], "c": ["z"]}, UtilityConfig(eta=0.5, lp_init=1.0))
    tr.abs_adv = np.array([0.2, 0.4, 0.6])
    tr.synergy = np.array([[1.0, 0.5, -0.5], [0.5, 1.0, 0.0], [-0.5, 0.0, 1.0]])
    lp = tr.learning_potential()
    assert lp.tolist() == pytest.approx([0.2, 0.4, 0.6])  # all prompts at the prior: informative
    expected = lp + 0.5 * np.array([0.5 * 0.4 - 0.5 * 0.6, 0.5 * 0.2, -0.5 * 0.2])
    assert tr.utilities() == pytest.approx(expected)
    assert tr.utilities(eta=0.0) == pytest.approx(lp)


def test_synergy_from_gradient_vectors_numpy_and_torch() -> None:
    torch = pytest.importorskip("torch")
    tr = UtilityTracker({"a": ["x"], "b": ["y"], "c": ["z"]}, UtilityConfig(synergy_z=0.0))
    g = {
        "a": np.array([1.0, 0.0, 0.0]),
        "b": torch.tensor([1.0, 1.0, 0.0]),
        "c": -np.array([1.0, 0.0, 0.0]),
    }
    tr.update(RoundFeedback(0, [], pg_gradients=g))
    assert tr.synergy_raw[0, 1] == pytest.approx(np.sqrt(0.5))
    assert tr.synergy[0, 1] == pytest.approx(np.sqrt(0.5))  # z = 0: no shrinkage
    assert tr.synergy[0, 2] == pytest.approx(-1.0)
    assert np.allclose(np.diag(tr.synergy), 1.0)
    assert np.allclose(tr.synergy, tr.synergy.T)
    assert tr.synergy_floor[0, 2] == pytest.approx(1.0)  # one coordinate: no evidence at all
    # sums accumulate (decay 0.9): a task without a gradient this round keeps its sum
    tr.update(RoundFeedback(1, [], pg_gradients={"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0]}))
    sa, sb = np.array([1.9, 0.0, 0.0]), np.array([1.9, 0.9, 0.0])
    assert tr.synergy_raw[0, 1] == pytest.approx(sa @ sb / np.linalg.norm(sa) / np.linalg.norm(sb))
    assert tr.synergy_raw[0, 2] == pytest.approx(-1.0)


def test_synergy_skips_tasks_without_signal_and_prefers_pg_gradients() -> None:
    pools = {"a": ["x"], "b": ["y"]}
    tr = UtilityTracker(pools, UtilityConfig(synergy_z=0.0))
    fb = [PromptFeedback("a", "x", [1.0, 0.0]), PromptFeedback("b", "y", [1.0, 1.0])]
    kl_only = {"a": [1.0, 0.0], "b": [1.0, 0.0]}  # b's vector is a pure KL pull: skipped
    tr.update(RoundFeedback(0, fb, gradients=kl_only))
    assert np.isnan(tr.synergy_raw[0, 1]) and tr.synergy[0, 1] == 0.0
    tr2 = UtilityTracker(pools, UtilityConfig(synergy_z=0.0))
    fb2 = [PromptFeedback("a", "x", [1.0, 0.0]), PromptFeedback("b", "y", [1.0, 0.0])]
    tr2.update(
        RoundFeedback(0, fb2, gradients=kl_only, pg_gradients={"a": [1.0, 0.0], "b": [0.0, 1.0]})
    )
    assert tr2.synergy_raw[0, 1] == pytest.approx(0.0)  # the pg-only vectors were used


def test_accumulated_synergy_clears_its_noise_floor() -> None:
    """Two tasks share a direction that is 30x weaker per round than each round's noise
    (one round's cosine sits inside the 1/sqrt(d) band); summed over rounds the estimate
    clears 3x its reported floor, and a pair without transfer stays inside it."""
    rng = np.random.default_rng(0)
    d = 20_000
    shared = rng.standard_normal(d) / np.sqrt(d)
    other = rng.standard_normal(d) / np.sqrt(d)
    tr = UtilityTracker(
        {"a": ["x"], "b": ["y"], "c": ["z"]},
        UtilityConfig(synergy_decay=1.0, synergy_sketch_dim=4096),
    )
    first = None
    for r in range(60):
        g = {
            "a": shared + 6 * rng.standard_normal(d) / np.sqrt(d),
            "b": shared + 6 * rng.standard_normal(d) / np.sqrt(d),
            "c": other + 6 * rng.standard_normal(d) / np.sqrt(d),
        }
        tr.update(RoundFeedback(r, [], pg_gradients=g))
        if first is None:
            first = (tr.synergy_raw[0, 1], tr.synergy_floor[0, 1])
    assert abs(first[0]) < 3 * first[1]  # one round: inside the noise band
    assert tr.synergy_raw[0, 1] > 3 * tr.synergy_floor[0, 1]
    assert abs(tr.synergy_raw[0, 2]) < 3 * tr.synergy_floor[0, 2]
    assert tr.synergy[0, 1] > 0 and tr.synergy[0, 2] == pytest.approx(0.0, abs=1e-12)
    state = json.loads(json.dumps(tr.state_dict()))
    other_tr = UtilityTracker({"a": ["x"], "b": ["y"], "c": ["z"]}, tr.config)
    other_tr.load_state_dict(state)
    assert np.allclose(other_tr.synergy_estimator.sums, tr.synergy_estimator.sums)


def test_synergy_from_ready_matrix_and_nan_keeps() -> None:
    tr = UtilityTracker({"a": ["x"], "b": ["y"]}, UtilityConfig(synergy_ema=1.0))
    tr.update(RoundFeedback(0, [], synergy=[[1.0, -0.3], [-0.3, 1.0]]))
    assert tr.synergy[0, 1] == pytest.approx(-0.3)
    tr.update(RoundFeedback(1, [], synergy=[[np.nan, np.nan], [np.nan, np.nan]]))
    assert tr.synergy[0, 1] == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="2x2"):
        tr.observe_synergy(np.eye(3))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tr.observe_synergy([[1.0, 2.0], [2.0, 1.0]])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (PromptFeedback("a", "nope", [1.0]), "not in the pool of task 'a'"),
        (PromptFeedback("zzz", "a0", [1.0]), "unknown task 'zzz'"),
        (PromptFeedback("a", "a0", [1.5]), r"record 0 \(a/a0\): rewards"),
        (PromptFeedback("a", "a0", []), "non-empty"),
        (PromptFeedback("a", "a0", [1.0, 0.0], advantages=[1.0]), "advantages must be 2"),
    ],
)
def test_bad_feedback_names_the_record_and_changes_nothing(
    item: PromptFeedback, message: str
) -> None:
    tr = UtilityTracker(POOLS)
    before = tr.state_dict()
    with pytest.raises(ValueError, match=message):
        tr.update(RoundFeedback(0, [item]))
    assert tr.state_dict() == before


def test_duplicate_prompt_ids_rejected() -> None:
    with pytest.raises(ValueError, match="'x' appears twice"):
        UtilityTracker({"a": ["x", "y", "x"]})


def test_state_round_trip() -> None:
    tr = UtilityTracker(POOLS)
    tr.update(RoundFeedback(0, [PromptFeedback("a", "a2", [1.0, 0.0])], kl={"a": 0.1}))
    other = UtilityTracker(POOLS)
    other.load_state_dict(tr.state_dict())
    assert other.state_dict() == tr.state_dict()
    assert np.array_equal(other.utilities(), tr.utilities())
