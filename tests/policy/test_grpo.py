"""The GRPO loss against TRL 1.16's own GRPOTrainer._compute_loss on fixed toy tensors."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from astor_core.method.advantages import group_advantages
from astor_core.policy.grpo import (
    GRPOConfig,
    betas_per_sample,
    grpo_loss,
    normaliser_for,
)

B, T = 6, 5


def _toy() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    mask[5, 4:] = 0
    return {
        "logps": -torch.rand(B, T, generator=g) * 3,
        "old": -torch.rand(B, T, generator=g) * 3,
        "ref": -torch.rand(B, T, generator=g) * 3,
        "adv": torch.randn(B, generator=g),
        "mask": mask,
    }


def _trl_loss(
    loss_type: str, beta: float, logps: torch.Tensor, d: dict, eps_low=0.2, eps_high=0.28, max_len=T
):
    """Call TRL's real GRPOTrainer._compute_loss on a minimal stub trainer."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    class _Acc:
        num_processes = 1

        def reduce(self, x, reduction="sum"):
            return x

        def gather(self, x):
            return x

        def gather_for_metrics(self, x):
            return x

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        accelerator=_Acc(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    stub.args.steps_per_generation = 1
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": d["mask"],
        "advantages": d["adv"],
        "old_per_token_logps": d["old"],
        "ref_per_token_logps": d["ref"],
        "num_items_in_batch": d["mask"].sum(),
    }
    return GRPOTrainer._compute_loss(stub, None, inputs)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_match_trl(loss_type: str, beta: float) -> None:
    d = _toy()
    cfg = GRPOConfig(
        loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28, max_completion_length=T
    )
    ours_lp = d["logps"].clone().requires_grad_(True)
    theirs_lp = d["logps"].clone().requires_grad_(True)
    ours = grpo_loss(ours_lp, d["adv"], d["mask"], cfg, d["old"], d["ref"], beta=beta).loss
    theirs = _trl_loss(loss_type, beta, theirs_lp, d)
    ours.backward()
    theirs.backward()
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert torch.allclose(ours_lp.grad, theirs_lp.grad, atol=1e-6, rtol=0)
    assert ours_lp.grad.abs().sum() > 0


def test_per_sample_beta_equals_scalar_when_uniform_and_differs_otherwise() -> None:
    d = _toy()
    cfg = GRPOConfig(loss_type="dapo")
    scalar = grpo_loss(d["logps"], d["adv"], d["mask"], cfg, d["old"], d["ref"], beta=0.1).loss
    tensor = grpo_loss(
        d["logps"], d["adv"], d["mask"], cfg, d["old"], d["ref"], beta=torch.full((B,), 0.1)
    ).loss
    assert torch.allclose(scalar, tensor, atol=1e-7)
    betas = betas_per_sample(["a", "b", "a", "b", "a", "b"], {"a": 0.1, "b": 0.5})
    mixed = grpo_loss(d["logps"], d["adv"], d["mask"], cfg, d["old"], d["ref"], beta=betas).loss
    assert abs(float(mixed) - float(scalar)) > 1e-4


def test_micro_batches_with_global_normaliser_sum_to_full_batch() -> None:
    d = _toy()
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        cfg = GRPOConfig(loss_type=loss_type, max_completion_length=T)
        full = grpo_loss(d["logps"], d["adv"], d["mask"], cfg, d["old"], d["ref"], beta=0.1).loss
        norm = normaliser_for(d["mask"], cfg)
        parts = sum(
            grpo_loss(
                d["logps"][s],
                d["adv"][s],
                d["mask"][s],
                cfg,
                d["old"][s],
                d["ref"][s],
                beta=0.1,
                normaliser=norm,
            ).loss
            for s in (slice(0, 2), slice(2, 5), slice(5, 6))
        )
        assert torch.allclose(full, parts, atol=1e-6), loss_type


def test_group_advantages_match_trl_formula() -> None:
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25, 0.3, 0.3, 0.3, 0.3])
    G = 4
    grouped = rewards.view(-1, G)
    mean = grouped.mean(1).repeat_interleave(G)
    std = nanstd(grouped, dim=1).repeat_interleave(G)
    expected = (rewards - mean) / (std + 1e-4)
    got = torch.as_tensor(group_advantages(rewards.numpy(), G), dtype=torch.float32)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.all(got[4:] == 0)  # a constant group carries no signal
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(rewards[:7].numpy(), G)


def test_missing_beta_and_missing_reference_are_errors() -> None:
    d = _toy()
    with pytest.raises(KeyError, match="no beta for task"):
        betas_per_sample(["a", "c"], {"a": 0.1})
    with pytest.raises(ValueError, match="no reference"):
        grpo_loss(d["logps"], d["adv"], d["mask"], GRPOConfig(), beta=0.1)


# ---- truncated importance sampling -------------------------------------------------------


def test_tis_weights_are_the_capped_likelihood_ratio() -> None:
    from astor_core.policy.grpo import tis_weights

    old = torch.tensor([[-1.0, -0.5, -3.0, -2.0]], requires_grad=True)
    engine = torch.tensor([[-1.0, -1.5, -1.0, -2.5]])
    w = tis_weights(old, engine, cap=2.0)
    expected = torch.tensor([[1.0, min(2.0, torch.e), torch.exp(torch.tensor(-2.0)), 1.6487213]])
    torch.testing.assert_close(w, expected)
    assert not w.requires_grad  # a weight, not a path for the gradient
    with pytest.raises(ValueError, match="cap must be > 0"):
        tis_weights(old, engine, cap=0.0)
    with pytest.raises(ValueError, match="tis_cap must be >= 0"):
        GRPOConfig(tis_cap=-1.0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_tis_loss_equals_the_uncorrected_one_when_engine_and_trainer_agree(loss_type) -> None:
    from astor_core.policy.grpo import tis_weights

    t = _toy()
    cfg = GRPOConfig(loss_type=loss_type, tis_cap=2.0)
    args = (t["adv"], t["mask"], cfg)
    kwargs = {"old_logps": t["old"], "ref_logps": t["ref"], "beta": 0.04}
    plain = grpo_loss(t["logps"], *args, **kwargs).loss
    same = grpo_loss(
        t["logps"], *args, **kwargs, tis_weight=tis_weights(t["old"], t["old"], 2.0)
    ).loss
    torch.testing.assert_close(same, plain, rtol=0, atol=0)


def test_tis_scales_the_surrogate_token_by_token_not_the_kl() -> None:
    """Engine log-probs lower by d on every token: each surrogate term is weighted by
    min(e^d, cap); with beta = 0 the loss scales by exactly that, the KL term does not."""
    from astor_core.policy.grpo import tis_weights

    t = _toy()
    for d, cap in ((0.1, 5.0), (1.0, 1.5)):
        cfg = GRPOConfig(loss_type="dapo", tis_cap=cap)
        w = tis_weights(t["old"], t["old"] - d, cap)
        base = grpo_loss(t["logps"], t["adv"], t["mask"], cfg, old_logps=t["old"]).loss
        tis = grpo_loss(t["logps"], t["adv"], t["mask"], cfg, old_logps=t["old"], tis_weight=w).loss
        torch.testing.assert_close(tis, base * min(float(torch.exp(torch.tensor(d))), cap))
    kl_only = GRPOConfig(tis_cap=2.0)
    zero_adv = torch.zeros(B)
    kwargs = {"old_logps": t["old"], "ref_logps": t["ref"], "beta": 0.1}
    w = tis_weights(t["old"], t["old"] - 0.5, 2.0)
    torch.testing.assert_close(
        grpo_loss(t["logps"], zero_adv, t["mask"], kl_only, **kwargs, tis_weight=w).loss,
        grpo_loss(t["logps"], zero_adv, t["mask"], kl_only, **kwargs).loss,
    )
