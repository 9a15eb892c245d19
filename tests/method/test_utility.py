"""Tests of astor_core.method.utility: posteriors, informativeness, learning potential, synergy, utility."""

from __future__ import annotations

import numpy as np
import pytest

from astor_core.method.utility import (
    PromptFeedback,
    RoundFeedback,
    UtilityConfig,
    UtilityTracker,
    beta_informativeness,
    cosine_matrix,
)

POOLS = {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2"]}


def test_informativeness_is_expected_group_variance() -> None:
    rng = np.random.default_rng(0)
    for a, b in [(1.0, 1.0), (5.0, 2.0), (0.5, 3.0)]:
        p = rng.beta(a, b, size=400_000)
        assert beta_informativeness(np.array([a]), np.array([b]))[0] == pytest.approx(
            np.mean(p * (1 - p)), abs=2e-3
        )


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
    for r in range(1, 12):
        tr.update(RoundFeedback(r, []))
    assert tr.informative_fractions()[0] == 1.0  # the posterior decayed back: explorable again


def test_learning_potential_is_ema_of_abs_advantage_times_informative_fraction() -> None:
    cfg = UtilityConfig(lp_ema=0.5, lp_init=1.0)
    tr = UtilityTracker(POOLS, cfg)
    fb = RoundFeedback(
        0,
        [
            PromptFeedback("a", "a0", [1.0, 0.0], advantages=[0.4, -0.4]),
            PromptFeedback("a", "a1", [1.0, 1.0], advantages=[0.0, 0.0]),
        ],
    )
    tr.update(fb)
    assert tr.abs_adv[0] == pytest.approx(0.5 * 1.0 + 0.5 * 0.2)
    assert tr.abs_adv[1] == 1.0  # task b not trained: unchanged
    frac = tr.informative_fractions()
    assert tr.learning_potential()[0] == pytest.approx(0.6 * frac[0])
    assert tr.zero_variance_fraction[0] == pytest.approx(0.5)
    assert tr.mean_reward[0] == pytest.approx(0.75)
    assert tr.rollouts.tolist() == [4, 0]


def test_advantages_default_to_grpo() -> None:
    tr = UtilityTracker(POOLS, UtilityConfig(lp_ema=1.0))
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
    tr = UtilityTracker({"a": ["x"], "b": ["y"], "c": ["z"]}, UtilityConfig(synergy_ema=0.5))
    g = {
        "a": np.array([1.0, 0.0, 0.0]),
        "b": torch.tensor([1.0, 1.0, 0.0]),
        "c": -np.array([1.0, 0.0, 0.0]),
    }
    tr.update(RoundFeedback(0, [], gradients=g))
    assert tr.synergy[0, 1] == pytest.approx(0.5 * np.sqrt(0.5))
    assert tr.synergy[0, 2] == pytest.approx(-0.5)
    assert np.allclose(np.diag(tr.synergy), 1.0)
    assert np.allclose(tr.synergy, tr.synergy.T)
    # a task without a gradient this round leaves its row unchanged
    tr.update(RoundFeedback(1, [], gradients={"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0]}))
    assert tr.synergy[0, 1] == pytest.approx(0.5 * 0.5 * np.sqrt(0.5) + 0.5)
    assert tr.synergy[0, 2] == pytest.approx(-0.5)


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


def test_cosine_matrix_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        cosine_matrix({"a": [1.0, 0.0], "b": [1.0]}, ["a", "b"])


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
