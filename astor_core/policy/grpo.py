"""GRPO loss in plain torch: group advantages, clipped surrogate, per-sample k3 KL.

The formulas follow TRL's `GRPOTrainer._compute_loss` (trl 1.16,
trl/trainer/grpo_trainer.py) so that, with one beta for every sample, loss and gradient
equal TRL's (tests/policy/test_grpo.py checks this against TRL itself). The one
extension is that the KL coefficient is a per-sample tensor: ASTOR's calibration gives
each task its own beta_k, and a sample's penalty uses the beta of its task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

LossType = Literal["grpo", "dapo", "dr_grpo"]


@dataclass(frozen=True)
class GRPOConfig:
    """How rewards become advantages and how token losses are aggregated."""

    loss_type: LossType = "dapo"
    """Aggregation: grpo (per-sequence mean, then mean), dapo (sum / total tokens), dr_grpo (sum / (B * max_completion_len))."""
    epsilon_low: float = 0.2
    """Lower clip range of the importance ratio (ratio >= 1 - epsilon_low)."""
    epsilon_high: float = 0.2
    """Upper clip range of the importance ratio (ratio <= 1 + epsilon_high); DAPO uses 0.28."""
    scale_rewards: bool = True
    """Divide group-centred rewards by the group's standard deviation (False gives Dr. GRPO's
    advantages); astor_core.method.advantages.group_advantages computes them."""
    max_completion_length: int = 128
    """Completion length used as the dr_grpo normaliser (the sampling budget, not the batch's max)."""
    tis_cap: float = 0.0
    """Truncated importance sampling: weight each token's policy-gradient loss by min(pi_trainer_old / pi_engine, tis_cap) to correct the engine/trainer log-prob mismatch (e.g. vLLM); 0 disables it."""

    def __post_init__(self) -> None:
        if self.tis_cap < 0:
            raise ValueError(f"grpo.tis_cap must be >= 0 (0 disables TIS), got {self.tis_cap}")


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference): exp(r - l) - (r - l) - 1 >= 0.

    >>> float(k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])))
    0.0
    """
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def betas_per_sample(
    tasks: Sequence[str], betas: Mapping[str, float], device: torch.device | str | None = None
) -> torch.Tensor:
    """Map each sample's task to its KL coefficient.

    >>> betas_per_sample(["a", "b", "a"], {"a": 0.1, "b": 0.0}).tolist()
    [0.10000000149011612, 0.0, 0.10000000149011612]
    """
    missing = sorted({t for t in tasks if t not in betas})
    if missing:
        raise KeyError(f"no beta for task(s) {missing}; betas cover {sorted(betas)}")
    return torch.tensor([float(betas[t]) for t in tasks], dtype=torch.float32, device=device)


def tis_weights(old_logps: torch.Tensor, engine_logps: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance-sampling weights min(exp(old - engine), cap), no gradient.

    `old_logps` are the trainer's log-probs of the sampled tokens under the weights that
    sampled them, `engine_logps` the rollout engine's for the same tokens; the weight
    corrects for the engine sampling from a slightly different distribution (kernels,
    precision) than the one the trainer differentiates (Yao et al. 2025, "Your efficient
    RL framework secretly brings you off-policy RL training"; verl's `tis_imp_ratio_cap`).

    >>> tis_weights(torch.tensor([[-1.0, -2.0, -1.0]]), torch.tensor([[-1.0, -1.0, -3.0]]), 2.0)
    tensor([[1.0000, 0.3679, 2.0000]])
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0, got {cap}")
    return torch.exp(old_logps.detach() - engine_logps.detach()).clamp(max=cap)


@dataclass(frozen=True)
class LossNormaliser:
    """Batch-wide quantities the aggregation divides by, fixed before micro-batching.

    Computing them once for the whole batch makes the sum of micro-batch losses equal
    the loss of the whole batch, whatever the micro-batch split.
    """

    num_sequences: int
    """Sequences in the whole batch (grpo: mean over sequences)."""
    num_tokens: int
    """Completion tokens in the whole batch (dapo)."""
    max_completion_length: int
    """dr_grpo's per-sequence length budget."""


def normaliser_for(completion_mask: torch.Tensor, cfg: GRPOConfig) -> LossNormaliser:
    """The normaliser of a batch given its full completion mask (B, T)."""
    return LossNormaliser(
        num_sequences=int(completion_mask.size(0)),
        num_tokens=int(completion_mask.sum().item()),
        max_completion_length=cfg.max_completion_length,
    )


@dataclass
class LossOutput:
    """A loss and the per-token pieces it was built from (detached, for metrics)."""

    loss: torch.Tensor
    """pg_loss + kl_loss."""
    pg_loss: torch.Tensor
    """The clipped surrogate's part (what the synergy's per-task gradients are taken from)."""
    kl_loss: torch.Tensor
    """The beta * k3 KL part (0 without a reference)."""
    per_token_kl: torch.Tensor
    clipped: torch.Tensor
    """Boolean (B, T): tokens where the clipped branch was the active one."""


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    cfg: GRPOConfig,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: torch.Tensor | float = 0.0,
    normaliser: LossNormaliser | None = None,
    tis_weight: torch.Tensor | None = None,
) -> LossOutput:
    """GRPO clipped surrogate + beta * k3 KL, aggregated by cfg.loss_type.

    logps, old_logps, ref_logps, completion_mask: (B, T); advantages: (B,);
    beta: a float or a (B,) tensor (one coefficient per sample, from its task).
    `old_logps=None` means single-iteration on-policy (ratio 1, TRL's default).
    `normaliser` is the whole batch's when this is one micro-batch of it.
    `tis_weight` (B, T), from :func:`tis_weights`, scales each token's surrogate (not its KL).
    """
    mask = completion_mask.to(logps.dtype)
    if old_logps is None:
        old_logps = logps.detach()
    ratio = torch.exp(logps - old_logps)
    clipped_ratio = torch.clamp(ratio, 1 - cfg.epsilon_low, 1 + cfg.epsilon_high)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    loss1 = ratio * adv
    loss2 = clipped_ratio * adv
    per_token_loss = -torch.min(loss1, loss2)
    if tis_weight is not None:
        per_token_loss = per_token_loss * tis_weight
    beta_t = torch.as_tensor(beta, dtype=logps.dtype, device=logps.device)
    if ref_logps is not None:
        per_token_kl = k3_kl(logps, ref_logps)
        coef = beta_t.unsqueeze(1) if beta_t.dim() == 1 else beta_t
        per_token_kl_loss = coef * per_token_kl
    else:
        if bool((beta_t != 0).any()):
            raise ValueError("beta is non-zero but no reference log-probabilities were given")
        per_token_kl = torch.zeros_like(logps)
        per_token_kl_loss = per_token_kl
    norm = normaliser or normaliser_for(completion_mask, cfg)
    # the aggregation is linear, so the two parts add up to the loss of their per-token sum
    pg_loss = _aggregate(per_token_loss * mask, mask, cfg, norm)
    kl_loss = _aggregate(per_token_kl_loss * mask, mask, cfg, norm)
    clipped = (loss2 < loss1).detach() & completion_mask.bool()
    return LossOutput(
        loss=pg_loss + kl_loss,
        pg_loss=pg_loss,
        kl_loss=kl_loss,
        per_token_kl=per_token_kl.detach(),
        clipped=clipped,
    )


def _aggregate(
    masked: torch.Tensor, mask: torch.Tensor, cfg: GRPOConfig, norm: LossNormaliser
) -> torch.Tensor:
    """Masked per-token losses (B, T) to one scalar by cfg.loss_type (TRL's three rules)."""
    if cfg.loss_type == "grpo":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / norm.num_sequences
    if cfg.loss_type == "dapo":
        return masked.sum() / max(norm.num_tokens, 1)
    if cfg.loss_type == "dr_grpo":
        return masked.sum() / (norm.num_sequences * norm.max_completion_length)
    raise ValueError(f"unknown loss_type {cfg.loss_type!r}; expected grpo, dapo or dr_grpo")
