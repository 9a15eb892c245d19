"""The GRPO update step: accelerate for device / mixed precision / processes, AdamW with a
transformers schedule, gradient clipping, per-task KL and per-task gradient vectors.

One `PolicyTrainer.step` makes exactly one optimiser step on task-homogeneous micro-batches
whose losses use the whole batch's normaliser (so the accumulated gradient is the batch's).
Each micro-batch backpropagates its policy-gradient part first: the change of the gradient
on a parameter subset is then its task's surrogate gradient (the synergy's input); its KL
part follows.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astor_core.method.advantages import group_advantages
from astor_core.policy.batches import (
    Sample,
    batch_tensors,
    completion_logps,
    mini_batches,
    subset_parameter_names,
    with_trainer_old_logprobs,
)
from astor_core.policy.checkpoint import load_hook, save_hook, sharded
from astor_core.policy.grpo import GRPOConfig, betas_per_sample, grpo_loss, normaliser_for
from astor_core.policy.memory import (
    LoRAConfig,
    adapters_disabled,
    apply_memory_levers,
    frozen_reference,
    is_peft,
    master_dtype,
    save_merged,
)
from astor_core.policy.multirank import (
    full_vector,
    make_accelerator,
    rank_micro_batches,
    sum_fsdp_gradients,
)
from astor_core.policy.rollout import (
    Rollout,
    RolloutConfig,
    RolloutEngine,
    check_training_sync,
    make_engine,
)
from astor_core.policy.steps import (
    StepStats,
    UpdateResult,
    all_reduce_grads,
    optimiser_step,
    round_of_steps,
    subset_grad,
)


@dataclass(frozen=True)
class TrainerConfig:
    """Optimiser, schedule and bookkeeping of the GRPO update."""

    learning_rate: float = 5e-5
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.99
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler_type: str = "constant_with_warmup"
    """transformers get_scheduler name (linear, cosine, constant_with_warmup, ...)."""
    warmup_steps: int = 0
    """Linear warm-up optimiser steps."""
    total_steps: int = 1000
    """Optimiser steps the schedule spans (rounds x steps_per_round x num_iterations)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (<= 0 disables clipping)."""
    micro_batch_size: int = 16
    """Sequences per forward/backward pass (the batch is accumulated)."""
    temperature: float = 1.0
    """Sampling temperature; log-probabilities use softmax(logits / temperature), as at rollout time."""
    use_rollout_logprobs: bool = False
    """Use the engine's log-probs as old log-probs (off-policy engines, e.g. vLLM); False: on-policy ratio 1."""
    num_iterations: int = 1
    """Optimiser steps per round on the same rollouts (GRPO's mu, TRL's num_iterations); above 1 the engine's log-probs are the old log-probs, so the clipped ratio bounds each further step."""
    steps_per_round: int = 1
    """Mini-batches a round's rollouts are split into, one optimiser step each (TRL's steps_per_generation, verl's ppo_mini_batch_size); whole prompt groups, dealt round-robin so every step mixes the tasks; above 1 the engine's log-probs are the old log-probs."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, bf16 or fp16 (autocast over fp32 master weights; from_config loads fp32)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (non-reentrant): less memory, ~1 more forward."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """PEFT LoRA adapters; on, the reference is the base with adapters disabled (no second copy)."""
    grad_last_layers: int = 1
    """Per-task gradient vectors cover the last N transformer blocks (names containing layers.<i>.)."""
    grad_patterns: tuple[str, ...] = ()
    """Extra regexes of parameter names added to the per-task gradient subset (e.g. 'norm')."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True): bit-exact reruns on CPU (slower on GPU)."""
    keep_checkpoints: int = 2
    """Complete round checkpoints kept on disk (0 keeps all)."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Advantage and loss settings (from_config takes params.yaml's grpo section)."""

    def __post_init__(self) -> None:
        for name in ("num_iterations", "steps_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class PolicyTrainer:
    """Holds the policy, its frozen reference, the optimiser and the LR schedule."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        cfg: TrainerConfig = TrainerConfig(),
        ref_model: torch.nn.Module | None = None,
        cpu: bool | None = None,
        rollout: RolloutConfig | None = None,
    ) -> None:
        from transformers import get_scheduler

        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.cfg = cfg
        self.tokenizer = tokenizer
        model = apply_memory_levers(
            model, cfg.lora, cfg.gradient_checkpointing, cfg.mixed_precision
        )
        self.accelerator = make_accelerator(
            cfg.mixed_precision,
            cpu if cpu is not None else not torch.cuda.is_available(),
            cfg.micro_batch_size,
            cfg.max_grad_norm,
        )
        ref = frozen_reference(model, ref_model, cfg.lora.enabled)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        scheduler = get_scheduler(
            cfg.lr_scheduler_type,
            optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=cfg.total_steps,
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            model, optimizer, scheduler
        )
        if self.accelerator.is_fsdp2:
            sum_fsdp_gradients(self.model)
        self.ref_model = None if ref is None else ref.to(self.accelerator.device)
        self.model.train()
        unwrapped = self.unwrapped_model
        self.subset_names = subset_parameter_names(
            unwrapped, cfg.grad_last_layers, cfg.grad_patterns
        )
        params = dict(unwrapped.named_parameters())
        self._subset = [params[n] for n in self.subset_names]
        self.accelerator.register_save_state_pre_hook(save_hook(self.accelerator, tokenizer))
        self.accelerator.register_load_state_pre_hook(load_hook(self.accelerator))
        self.rollout_cfg = rollout or RolloutConfig()
        self._engine: RolloutEngine | None = None

    @classmethod
    def from_config(cls, cfg: Any, seed: int = 0) -> PolicyTrainer:
        """Build from a run config (sections model, rollout, grpo, trainer; missing ones take defaults)."""
        from accelerate.utils import set_seed

        from astor_core.policy.model import ModelConfig, load_model

        sections = getattr(cfg, "sections", {})
        set_seed(seed)
        trainer_cfg = sections.get("trainer", TrainerConfig())
        model_cfg = sections.get("model", ModelConfig())
        dtype = master_dtype(model_cfg.dtype, trainer_cfg.mixed_precision)
        model_cfg = dataclasses.replace(model_cfg, dtype=dtype)
        model, tokenizer = load_model(model_cfg)
        if "grpo" in sections:
            trainer_cfg = dataclasses.replace(trainer_cfg, grpo=sections["grpo"])
        rollout = sections.get("rollout", RolloutConfig())
        if (
            trainer_cfg.temperature != rollout.sampling.temperature
            and rollout.sampling.temperature > 0
        ):
            trainer_cfg = dataclasses.replace(trainer_cfg, temperature=rollout.sampling.temperature)
        return cls(model, tokenizer, trainer_cfg, rollout=rollout)

    @property
    def engine(self) -> RolloutEngine:
        """The rollout engine (created on first use; weights synced before each sample call)."""
        if self._engine is None:
            self._engine = make_engine(
                self.rollout_cfg, self.unwrapped_model, self.tokenizer, self.spread
            )
        return self._engine

    def sample(self, prompts: list[str], n: int, seed: int | None = None) -> list[Rollout]:
        """n rollouts per prompt from the current policy with the configured sampling params."""
        check_training_sync(self.rollout_cfg)
        self.engine.sync_weights(self.unwrapped_model)
        params = self.rollout_cfg.sampling
        if seed is not None:
            params = dataclasses.replace(params, seed=seed)
        return self.engine.generate(prompts, n, params)

    def greedy(self, prompts: list[str]) -> list[str]:
        """One greedy completion per prompt (held-out evaluation)."""
        self.engine.sync_weights(self.unwrapped_model)
        params = dataclasses.replace(self.rollout_cfg.sampling, temperature=0.0, seed=None)
        return [r.completion for r in self.engine.generate(prompts, 1, params)]

    def update(
        self,
        rollouts: Sequence[Rollout],
        rewards: Sequence[float],
        tasks: Sequence[str],
        group_size: int,
        betas: Mapping[str, float],
    ) -> dict[str, Any]:
        """Advantages from the rewards (per prompt group), then one step; plain-dict result.

        Keys: advantages (per rollout), kl (task -> measured KL), task_gradients (task -> 1-D
        tensor; None under DeepSpeed, which does not expose them), per_task, metrics.
        """
        if not (len(rollouts) == len(rewards) == len(tasks)):
            raise ValueError(
                f"update: {len(rollouts)} rollouts, {len(rewards)} rewards, {len(tasks)} tasks must match"
            )
        adv = group_advantages(
            np.asarray(rewards, dtype=np.float64), group_size, scale=self.cfg.grpo.scale_rewards
        ).astype(np.float32)  # the float32 values the loss sees, as the scheduler reads them
        samples = [
            Sample(t, list(r.prompt_ids), list(r.completion_ids), float(a), list(r.logprobs))
            for r, t, a in zip(rollouts, tasks, adv.tolist(), strict=True)
        ]
        cfg = self.cfg
        if cfg.grpo.tis_cap > 0:
            samples = with_trainer_old_logprobs(self, samples)
        result = round_of_steps(
            lambda mini, old: self.step(mini, betas, use_old_logprobs=old),
            mini_batches(samples, group_size, cfg.steps_per_round),
            cfg.num_iterations,
            cfg.use_rollout_logprobs
            or cfg.num_iterations > 1
            or cfg.steps_per_round > 1
            or cfg.grpo.tis_cap > 0,
        )
        return {
            "advantages": adv.tolist(),
            "kl": {t: v["kl"] for t, v in result.per_task.items()},
            "task_gradients": result.task_grads or None,  # None: not measured (DeepSpeed)
            "per_task": result.per_task,
            "metrics": result.metrics,
        }

    def save_checkpoint(self, root: str | Path, round_idx: int, extra: dict[str, Any]) -> Path:
        """Atomic round checkpoint (see astor_core.policy.checkpoint)."""
        from astor_core.policy.checkpoint import save_checkpoint

        return save_checkpoint(root, round_idx, self, extra, keep_last=self.cfg.keep_checkpoints)

    def resume(self, root: str | Path) -> dict[str, Any] | None:
        """Load the latest complete checkpoint under root; its extra state, or None when none."""
        from astor_core.policy.checkpoint import resume

        found = resume(root, self)
        return None if found is None else found[1]

    def export(self, directory: str | Path) -> Path:
        """The current policy (model + tokenizer, LoRA adapters merged) as a save_pretrained
        directory, written by the main process. Sharded (FSDP, DeepSpeed) it is a collective
        that every rank must call: the full weights are gathered first."""
        acc = self.accelerator
        out = Path(directory)
        full = None
        if sharded(acc):
            if is_peft(self.unwrapped_model):
                raise ValueError(
                    "export: merging the LoRA adapters of a sharded model is not supported"
                )
            full = acc.get_state_dict(self.model)
        if full is not None:  # on every rank, as transformers asks of distributed saves
            self.unwrapped_model.save_pretrained(
                out, state_dict=full, is_main_process=acc.is_main_process
            )
        elif acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            save_merged(self.unwrapped_model, out)
        if acc.is_main_process:
            self.tokenizer.save_pretrained(out)
        if full is not None:
            acc.wait_for_everyone()
        return out

    @property
    def spread(self) -> bool:
        """The weights are sharded over more than one rank (FSDP, DeepSpeed): every forward,
        generation included, and the export are collectives all ranks must join."""
        return sharded(self.accelerator) and self.accelerator.num_processes > 1

    @property
    def _deepspeed(self) -> bool:
        """The model is a DeepSpeed engine (ZeRO through accelerate)."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _batch_tensors(
        self, samples: Sequence[Sample], use_old_logprobs: bool = False
    ) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return batch_tensors(
            samples, pad, self.accelerator.device, use_old_logprobs, self.cfg.grpo.tis_cap
        )

    def completion_logps(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        n_completion: int,
    ) -> torch.Tensor:
        """Log-probs (B, n_completion) of the last n_completion tokens under softmax(logits / T)
        (astor_core.policy.batches.completion_logps)."""
        return completion_logps(
            model, input_ids, attention_mask, n_completion, self.cfg.temperature
        )

    def reference_logps(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int
    ) -> torch.Tensor:
        """completion_logps under the reference policy (no gradient): the frozen copy, or
        under LoRA the policy's own base with its adapters disabled."""
        with torch.no_grad():
            if self.ref_model is not None:
                return self.completion_logps(
                    self.ref_model, input_ids, attention_mask, n_completion
                )
            with adapters_disabled(self.unwrapped_model):
                return self.completion_logps(self.model, input_ids, attention_mask, n_completion)

    def step(
        self,
        samples: Sequence[Sample],
        betas: Mapping[str, float],
        use_old_logprobs: bool | None = None,
    ) -> UpdateResult:
        """One optimiser step on `samples` with per-task KL coefficients `betas`.

        `use_old_logprobs` (default: cfg.use_rollout_logprobs) takes each sample's old_logprobs
        as the denominator of the importance ratio; otherwise the ratio is 1 (on-policy).
        Per micro-batch: forward, reference forward, loss and backward, then its task's
        gradient; then the reduction over ranks, the optimiser step and the metrics."""
        if use_old_logprobs is None:
            use_old_logprobs = self.cfg.use_rollout_logprobs
        if not samples:
            raise ValueError("PolicyTrainer.step got no samples")
        for k, s in enumerate(samples):
            if not s.completion_ids:
                raise ValueError(f"sample {k} (task {s.task}) has an empty completion")
        acc = self.accelerator
        lengths = torch.tensor([len(s.completion_ids) for s in samples])
        norm = normaliser_for(
            torch.arange(int(lengths.max()))[None, :] < lengths[:, None], self.cfg.grpo
        )
        stats = StepStats()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        prev = self._subset_grad()
        for mb in rank_micro_batches(
            samples, self.cfg.micro_batch_size, acc.process_index, acc.num_processes
        ):
            batch = self._batch_tensors(mb.rows, use_old_logprobs)
            weight = 1.0 if mb.live else 0.0
            out = self._loss(mb.rows, batch, betas, norm, weight)
            self._task_gradient(stats, mb.task, prev)
            prev = self._kl_backward(out, weight)
            if mb.live:
                stats.add(mb.task, len(mb.rows), out, batch["completion_mask"])
        deepspeed = self._deepspeed
        if deepspeed:  # no per-task gradient vectors (see _subset_grad)
            stats.grads = {}
        if acc.num_processes > 1:
            if acc.is_fsdp2:  # reduce-scattered after every backward: sums of shards
                stats.grads = {t: full_vector(self._subset, g) for t, g in stats.grads.items()}
            elif not deepspeed:  # DeepSpeed reduces in its backward / step
                all_reduce_grads(self.model)
            stats.reduce(
                acc,
                {s.task for s in samples},
                0 if deepspeed else sum(p.numel() for p in self._subset),
                grads_summed=acc.is_fsdp2,
            )
        grad_norm, lr = optimiser_step(
            acc, self.model, self.optimizer, self.scheduler, self.cfg.max_grad_norm
        )
        return stats.result(grad_norm, lr)

    def _forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The policy's log-probs of the micro-batch's completion tokens (with gradient)."""
        n_c = batch["completion_mask"].size(1)
        return self.completion_logps(self.model, batch["input_ids"], batch["attention_mask"], n_c)

    def _reference_forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The reference's log-probs, always: the measured KL per task feeds calibration."""
        n_c = batch["completion_mask"].size(1)
        return self.reference_logps(batch["input_ids"], batch["attention_mask"], n_c)

    def _sync_context(self) -> Any:
        """Gradient reduction during the micro-batches: DDP accumulates locally (no_sync) and
        the step all-reduces once; FSDP2 reduce-scatters after every backward, as its
        `no_sync` (set_requires_gradient_sync(False)) would keep the accumulated gradient out
        of `p.grad` until a synced backward and so hide the per-task gradients."""
        if self.accelerator.is_fsdp2:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.model)

    def _loss(
        self,
        rows: Sequence[Sample],
        batch: Mapping[str, torch.Tensor],
        betas: Mapping[str, float],
        norm: Any,
        weight: float = 1.0,
    ) -> Any:
        """Forward, reference forward, the GRPO loss with each sample's task beta, and the
        backward of its policy-gradient part times `weight` (0: a placeholder micro-batch);
        the KL part follows in :meth:`_kl_backward`, after the task's gradient has been read,
        so the synergy sees the surrogate's gradient alone."""
        acc = self.accelerator
        with self._sync_context(), acc.autocast():
            out = grpo_loss(
                self._forward(batch),
                torch.tensor([r.advantage for r in rows], device=acc.device),
                batch["completion_mask"],
                self.cfg.grpo,
                old_logps=batch.get("old_logps"),
                ref_logps=self._reference_forward(batch),
                beta=betas_per_sample([r.task for r in rows], betas, device=acc.device),
                normaliser=norm,
                tis_weight=batch.get("tis_weight"),
            )
            if self._deepspeed:  # one backward: no per-task vector is read in between, and
                # ZeRO-3 frees the gathered weights a retained graph would need again
                self._backward((out.pg_loss + out.kl_loss) * weight)
            else:
                self._backward(out.pg_loss * weight, retain_graph=out.kl_loss.requires_grad)
        return out

    def _kl_backward(self, out: Any, weight: float = 1.0) -> torch.Tensor:
        """Backward of the micro-batch's KL part (times `weight`); the subset gradient after
        it (the baseline of the next micro-batch's task gradient)."""
        if out.kl_loss.requires_grad and not self._deepspeed:
            with self._sync_context():
                self._backward(out.kl_loss * weight)
        return self._subset_grad()

    def _backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """accelerate's backward; under DeepSpeed the engine's own, which only accumulates
        (the config's managed_gradient_accumulation is off: the step is the boundary) and
        averages over ranks, hence the loss times the world size (each rank's loss already
        carries the whole batch's normaliser)."""
        acc = self.accelerator
        if self._deepspeed:
            self.model.backward(loss * acc.num_processes, retain_graph=retain_graph)
        else:
            acc.backward(loss, retain_graph=retain_graph)

    def _subset_grad(self) -> torch.Tensor:
        """The flattened gradient of the per-task subset so far (this rank's shards under
        FSDP2); an empty vector under DeepSpeed, whose ZeRO optimiser keeps gradients in its
        own partitions, readable only at the step (`safe_get_full_grad` refuses before)."""
        if self._deepspeed:
            return torch.zeros(0)
        return subset_grad(self._subset)

    def _task_gradient(self, stats: StepStats, task: str, prev: torch.Tensor) -> torch.Tensor:
        """Credit the micro-batch's change of the subset gradient (its policy-gradient part)
        to its task."""
        now = self._subset_grad()
        stats.add_gradient(task, now - prev)
        return now

    def save_state(self, directory: str | Path) -> None:
        """Model (save_pretrained under model/), optimiser, scheduler, RNG states into directory."""
        self.accelerator.save_state(str(directory))

    def load_state(self, directory: str | Path) -> None:
        """Inverse of save_state."""
        self.accelerator.load_state(str(directory))
