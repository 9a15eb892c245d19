"""The GRPO update step: accelerate for device / mixed precision / processes, AdamW with a
transformers schedule, gradient clipping, per-task KL and per-task gradient vectors.

One `PolicyTrainer.step` consumes one round's samples (prompt ids, completion ids,
advantage, task) and the per-task betas, and makes exactly one optimiser step. Samples are
processed in task-homogeneous micro-batches whose losses use the whole batch's normaliser,
so the accumulated gradient equals the whole batch's gradient; the change of the gradient
on a parameter subset across one micro-batch is that micro-batch's contribution, so
summing those per task gives each task's gradient vector for the synergy estimate at no
extra backward pass.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from astor_core.policy.grpo import (
    GRPOConfig,
    betas_per_sample,
    group_advantages,
    grpo_loss,
    normaliser_for,
    tis_weights,
)
from astor_core.policy.memory import (
    LoRAConfig,
    adapters_disabled,
    apply_lora,
    check_master_weights,
    enable_gradient_checkpointing,
    is_peft,
    load_adapter_state,
    master_dtype,
    save_merged,
)
from astor_core.policy.rollout import (
    Rollout,
    RolloutConfig,
    RolloutEngine,
    check_training_sync,
    make_engine,
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


@dataclass(frozen=True)
class Sample:
    """One rollout ready for the update."""

    task: str
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None = None
    """The engine's log-probs of completion_ids (used when use_rollout_logprobs)."""
    engine_logprobs: list[float] | None = None
    """The engine's log-probs when old_logprobs are the trainer's (grpo.tis_cap > 0): the TIS denominator."""


@dataclass
class UpdateResult:
    """What one optimiser step measured."""

    metrics: dict[str, float]
    """Batch-level numbers: loss, grad_norm, lr, kl, clip_frac, tokens, samples."""
    per_task: dict[str, dict[str, float]]
    """task -> kl (token-mean k3), loss (its share of the loss), samples, tokens, clip_frac."""
    task_grads: dict[str, torch.Tensor]
    """task -> its gradient on the parameter subset, flattened to 1-D (CPU, float32)."""


def token_logps(logits: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) at `index`: TRL's selective_log_softmax (fused kernel on GPU)
    when TRL is installed, else its documented equivalent log_softmax + gather (a machine
    with only torch, transformers, accelerate and peft, e.g. benchmarks/gpu_grpo_round.py).

    >>> token_logps(torch.zeros(1, 1, 4), torch.tensor([[2]]), 1.0).exp()
    tensor([[0.2500]])
    """
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:
        return torch.gather((logits / temperature).log_softmax(-1), -1, index[..., None])[..., 0]
    return selective_log_softmax(logits, index, temperature)


def subset_parameter_names(
    model: torch.nn.Module, last_layers: int, patterns: Sequence[str]
) -> list[str]:
    """Trainable parameter names in the last `last_layers` blocks or matching any pattern."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    layer_ids = sorted({int(m.group(1)) for n in names if (m := re.search(r"layers\.(\d+)\.", n))})
    keep_layers = set(layer_ids[-last_layers:]) if last_layers > 0 else set()
    regexes = [re.compile(p) for p in patterns]
    chosen = []
    for n in names:
        m = re.search(r"layers\.(\d+)\.", n)
        if (m and int(m.group(1)) in keep_layers) or any(r.search(n) for r in regexes):
            chosen.append(n)
    if not chosen:
        raise ValueError(
            f"no parameter matches the gradient subset (last_layers={last_layers}, patterns={list(patterns)})"
        )
    return chosen


def mini_batches(samples: Sequence[Sample], group_size: int, steps: int) -> list[list[Sample]]:
    """A round's samples (prompt-major groups of `group_size`) split into `steps` mini-batches
    of whole groups, group g going to mini-batch g % steps, so that each optimiser step sees
    every task when the round lists its prompts task by task.

    >>> groups = [Sample("ab"[g // 2], [0], [g], 0.0) for g in range(4) for _ in range(2)]
    >>> [[(s.task, s.completion_ids[0]) for s in m][::2] for m in mini_batches(groups, 2, 2)]
    [[('a', 0), ('b', 2)], [('a', 1), ('b', 3)]]
    """
    if group_size < 1 or len(samples) % group_size:
        raise ValueError(f"{len(samples)} samples are not whole groups of {group_size}")
    n_groups = len(samples) // group_size
    if not 1 <= steps <= n_groups:
        raise ValueError(
            f"steps_per_round must be between 1 and the round's {n_groups} prompt groups, got {steps}"
        )
    minis: list[list[Sample]] = [[] for _ in range(steps)]
    for g in range(n_groups):
        minis[g % steps].extend(samples[g * group_size : (g + 1) * group_size])
    return minis


def merge_steps(results: Sequence[UpdateResult]) -> UpdateResult:
    """One result for the optimiser steps of one pass over a round's mini-batches: KL and
    clip fraction token-weighted, loss and gradient norm averaged over the steps, counts
    summed, the learning rate of the first step, and each task's gradient the mean of its
    mini-batch gradients (the full batch's gradient when the weights do not move between
    steps, as each mini-batch's loss is normalised over that mini-batch). One step: itself."""
    if len(results) == 1:
        return results[0]
    k = len(results)
    per_task: dict[str, dict[str, float]] = {}
    for r in results:
        for t, st in r.per_task.items():
            acc = per_task.setdefault(
                t, {"kl": 0.0, "loss": 0.0, "samples": 0.0, "tokens": 0.0, "clip_frac": 0.0}
            )
            acc["kl"] += st["kl"] * st["tokens"]
            acc["clip_frac"] += st["clip_frac"] * st["tokens"]
            acc["loss"] += st["loss"] / k
            acc["samples"] += st["samples"]
            acc["tokens"] += st["tokens"]
    for acc in per_task.values():
        acc["kl"] /= max(acc["tokens"], 1.0)
        acc["clip_frac"] /= max(acc["tokens"], 1.0)
    tokens = sum(r.metrics["tokens"] for r in results)
    metrics = {
        "loss": sum(r.metrics["loss"] for r in results) / k,
        "grad_norm": sum(r.metrics["grad_norm"] for r in results) / k,
        "lr": results[0].metrics["lr"],
        "kl": sum(r.metrics["kl"] * r.metrics["tokens"] for r in results) / max(tokens, 1.0),
        "clip_frac": sum(r.metrics["clip_frac"] * r.metrics["tokens"] for r in results)
        / max(tokens, 1.0),
        "tokens": tokens,
        "samples": sum(r.metrics["samples"] for r in results),
    }
    task_grads: dict[str, torch.Tensor] = {}
    for r in results:
        for t, g in r.task_grads.items():
            task_grads[t] = task_grads.get(t, torch.zeros_like(g)) + g / k
    return UpdateResult(metrics=metrics, per_task=per_task, task_grads=task_grads)


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
        from accelerate import Accelerator
        from transformers import get_scheduler

        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.cfg = cfg
        self.tokenizer = tokenizer
        model = self._apply_memory_levers(model)
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            cpu=cpu if cpu is not None else not torch.cuda.is_available(),
        )
        ref = self._reference_copy(model, ref_model)
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
        self.ref_model = None if ref is None else ref.to(self.accelerator.device)
        self.model.train()
        unwrapped = self.unwrapped_model
        self.subset_names = subset_parameter_names(
            unwrapped, cfg.grad_last_layers, cfg.grad_patterns
        )
        params = dict(unwrapped.named_parameters())
        self._subset = [params[n] for n in self.subset_names]
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)
        self.rollout_cfg = rollout or RolloutConfig()
        self._engine: RolloutEngine | None = None

    def _apply_memory_levers(self, model: torch.nn.Module) -> torch.nn.Module:
        """LoRA adapters and gradient checkpointing as configured; fp32 master weights checked."""
        if self.cfg.lora.enabled:
            model = apply_lora(model, self.cfg.lora)
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        check_master_weights(model, self.cfg.mixed_precision)
        return model

    def _reference_copy(
        self, model: torch.nn.Module, ref_model: torch.nn.Module | None
    ) -> torch.nn.Module | None:
        """The frozen reference model; None under LoRA (the base with adapters disabled is it)."""
        if self.cfg.lora.enabled:
            if ref_model is not None:
                raise ValueError(
                    "ref_model must be None with LoRA: the reference is the base model"
                )
            return None
        ref = ref_model if ref_model is not None else copy.deepcopy(model)
        ref.requires_grad_(False)
        ref.eval()
        return ref

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

    # ---- sampling ------------------------------------------------------------------------

    @property
    def engine(self) -> RolloutEngine:
        """The rollout engine (created on first use; weights synced before each sample call)."""
        if self._engine is None:
            self._engine = make_engine(self.rollout_cfg, self.unwrapped_model, self.tokenizer)
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
        tensor), per_task, metrics.
        """
        if not (len(rollouts) == len(rewards) == len(tasks)):
            raise ValueError(
                f"update: {len(rollouts)} rollouts, {len(rewards)} rewards, {len(tasks)} tasks must match"
            )
        g = self.cfg.grpo
        adv = group_advantages(
            torch.as_tensor(list(rewards), dtype=torch.float32),
            group_size,
            g.scale_rewards,
            g.adv_eps,
        )
        samples = [
            Sample(t, list(r.prompt_ids), list(r.completion_ids), float(a), list(r.logprobs))
            for r, t, a in zip(rollouts, tasks, adv.tolist(), strict=True)
        ]
        if g.tis_cap > 0:
            samples = with_trainer_old_logprobs(self, samples)
        minis = mini_batches(samples, group_size, self.cfg.steps_per_round)
        old = (
            self.cfg.use_rollout_logprobs
            or self.cfg.num_iterations > 1
            or self.cfg.steps_per_round > 1
            or g.tis_cap > 0
        )
        passes = [
            [self.step(mini, betas, use_old_logprobs=old) for mini in minis]
            for _ in range(self.cfg.num_iterations)
        ]
        result = merge_steps(passes[-1])  # what the last pass over the rollouts measured
        if len(passes) > 1:  # per-task gradients from the first pass, the one nearest on-policy
            result.task_grads = merge_steps(passes[0]).task_grads
        return {
            "advantages": adv.tolist(),
            "kl": {t: v["kl"] for t, v in result.per_task.items()},
            "task_gradients": result.task_grads,
            "per_task": result.per_task,
            "metrics": result.metrics,
        }

    # ---- persistence ---------------------------------------------------------------------

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
        """The current policy (model + tokenizer, LoRA adapters merged) as a save_pretrained directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_merged(self.unwrapped_model, out)
        self.tokenizer.save_pretrained(out)
        return out

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # ---- forward -------------------------------------------------------------------------

    def _batch_tensors(
        self, samples: Sequence[Sample], use_old_logprobs: bool = False
    ) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        p_len = max(len(s.prompt_ids) for s in samples)
        c_len = max(len(s.completion_ids) for s in samples)
        ids, att, cmask, old, eng = [], [], [], [], []
        for s in samples:
            np_, nc = len(s.prompt_ids), len(s.completion_ids)
            ids.append(
                [pad] * (p_len - np_) + s.prompt_ids + s.completion_ids + [pad] * (c_len - nc)
            )
            att.append([0] * (p_len - np_) + [1] * (np_ + nc) + [0] * (c_len - nc))
            cmask.append([1] * nc + [0] * (c_len - nc))
            if s.old_logprobs is not None:
                old.append(list(s.old_logprobs[:nc]) + [0.0] * (c_len - nc))
            if s.engine_logprobs is not None:
                eng.append(list(s.engine_logprobs[:nc]) + [0.0] * (c_len - nc))
        dev = self.accelerator.device
        out = {
            "input_ids": torch.tensor(ids, device=dev),
            "attention_mask": torch.tensor(att, device=dev),
            "completion_mask": torch.tensor(cmask, device=dev),
        }
        if use_old_logprobs:
            if len(old) != len(samples):
                raise ValueError(
                    "old log-probs requested (use_rollout_logprobs or num_iterations > 1) but "
                    "some samples carry no old_logprobs"
                )
            out["old_logps"] = torch.tensor(old, device=dev, dtype=torch.float32)
        if self.cfg.grpo.tis_cap > 0 and len(eng) == len(samples) and "old_logps" in out:
            engine = torch.tensor(eng, device=dev, dtype=torch.float32)
            out["tis_weight"] = tis_weights(out["old_logps"], engine, self.cfg.grpo.tis_cap)
        return out

    def completion_logps(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        n_completion: int,
    ) -> torch.Tensor:
        """Log-probs (B, n_completion) of the last n_completion tokens under softmax(logits / T).

        Positions come from the attention mask (as in generate), so left padding changes nothing.
        """
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=n_completion + 1,
            use_cache=False,  # a scoring pass: a KV cache would only hold memory
        ).logits[:, :-1, :]
        return token_logps(logits.float(), input_ids[:, -n_completion:], self.cfg.temperature)

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

    # ---- update --------------------------------------------------------------------------

    def _micro_batches(self, samples: Sequence[Sample]) -> list[tuple[str, list[Sample]]]:
        by_task: dict[str, list[Sample]] = {}
        for s in samples:
            by_task.setdefault(s.task, []).append(s)
        mb = self.cfg.micro_batch_size
        return [
            (t, rows[i : i + mb]) for t, rows in by_task.items() for i in range(0, len(rows), mb)
        ]

    def _subset_grad(self) -> torch.Tensor:
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                for p in self._subset
            ]
        )

    def step(
        self,
        samples: Sequence[Sample],
        betas: Mapping[str, float],
        use_old_logprobs: bool | None = None,
    ) -> UpdateResult:
        """One optimiser step on `samples` with per-task KL coefficients `betas`.

        `use_old_logprobs` (default: cfg.use_rollout_logprobs) takes each sample's old_logprobs
        as the denominator of the importance ratio; otherwise the ratio is 1 (on-policy)."""
        if use_old_logprobs is None:
            use_old_logprobs = self.cfg.use_rollout_logprobs
        if not samples:
            raise ValueError("PolicyTrainer.step got no samples")
        for k, s in enumerate(samples):
            if not s.completion_ids:
                raise ValueError(f"sample {k} (task {s.task}) has an empty completion")
        acc = self.accelerator
        world, rank = acc.num_processes, acc.process_index
        full_mask = torch.tensor([len(s.completion_ids) for s in samples])
        norm = normaliser_for(
            torch.arange(int(full_mask.max()))[None, :] < full_mask[:, None], self.cfg.grpo
        )
        local = list(samples)[rank::world]
        stats: dict[str, dict[str, float]] = {}
        task_grads: dict[str, torch.Tensor] = {}
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        prev = self._subset_grad()
        total_loss = 0.0
        for task, rows in self._micro_batches(local):
            batch = self._batch_tensors(rows, use_old_logprobs)
            n_c = batch["completion_mask"].size(1)
            with acc.no_sync(self.model), acc.autocast():
                logps = self.completion_logps(
                    self.model, batch["input_ids"], batch["attention_mask"], n_c
                )
                beta = betas_per_sample([r.task for r in rows], betas, device=acc.device)
                # always: the measured KL per task feeds calibration
                ref_logps = self.reference_logps(batch["input_ids"], batch["attention_mask"], n_c)
                adv = torch.tensor([r.advantage for r in rows], device=acc.device)
                out = grpo_loss(
                    logps,
                    adv,
                    batch["completion_mask"],
                    self.cfg.grpo,
                    old_logps=batch.get("old_logps"),
                    ref_logps=ref_logps,
                    beta=beta,
                    normaliser=norm,
                    tis_weight=batch.get("tis_weight"),
                )
                acc.backward(out.loss)
            now = self._subset_grad()
            task_grads[task] = task_grads.get(task, torch.zeros_like(now)) + (now - prev)
            prev = now
            m = batch["completion_mask"].float()
            st = stats.setdefault(
                task, {"kl_sum": 0.0, "tokens": 0.0, "samples": 0.0, "loss": 0.0, "clipped": 0.0}
            )
            st["kl_sum"] += float((out.per_token_kl * m).sum())
            st["tokens"] += float(m.sum())
            st["samples"] += len(rows)
            st["loss"] += float(out.loss.detach())
            st["clipped"] += float(out.clipped.float().sum())
            total_loss += float(out.loss.detach())
        if world > 1:
            self._all_reduce_grads()
            task_grads, stats, total_loss = self._reduce_task_stats(
                samples, task_grads, stats, total_loss
            )
        grad_norm = (
            float(acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm))
            if self.cfg.max_grad_norm > 0
            else float("nan")
        )
        lr = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        per_task = {
            t: {
                "kl": st["kl_sum"] / max(st["tokens"], 1.0),
                "loss": st["loss"],
                "samples": st["samples"],
                "tokens": st["tokens"],
                "clip_frac": st["clipped"] / max(st["tokens"], 1.0),
            }
            for t, st in stats.items()
        }
        tokens = sum(st["tokens"] for st in stats.values())
        metrics = {
            "loss": total_loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "kl": sum(st["kl_sum"] for st in stats.values()) / max(tokens, 1.0),
            "clip_frac": sum(st["clipped"] for st in stats.values()) / max(tokens, 1.0),
            "tokens": tokens,
            "samples": float(sum(st["samples"] for st in stats.values())),
        }
        return UpdateResult(
            metrics=metrics,
            per_task=per_task,
            task_grads={t: g.cpu() for t, g in task_grads.items()},
        )

    def _reduce_task_stats(
        self,
        samples: Sequence[Sample],
        task_grads: dict[str, torch.Tensor],
        stats: dict[str, dict[str, float]],
        total_loss: float,
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]], float]:
        """Sum per-task gradients and statistics over ranks.

        Every rank walks the same sorted task list (from the whole batch, which every rank
        holds), contributing zeros for tasks it has no sample of, so the collectives pair up
        task by task whatever each rank's share of the batch contains.
        """
        acc = self.accelerator
        keys = ("kl_sum", "tokens", "samples", "loss", "clipped")
        size = sum(p.numel() for p in self._subset)
        grads: dict[str, torch.Tensor] = {}
        merged: dict[str, dict[str, float]] = {}
        for t in sorted({s.task for s in samples}):
            g = task_grads.get(t, torch.zeros(size)).to(acc.device)
            grads[t] = acc.reduce(g, reduction="sum").cpu()
            local = stats.get(t, dict.fromkeys(keys, 0.0))
            vec = torch.tensor([local[k] for k in keys], dtype=torch.float64, device=acc.device)
            merged[t] = dict(zip(keys, acc.reduce(vec, reduction="sum").tolist(), strict=True))
        loss = acc.reduce(
            torch.tensor([total_loss], dtype=torch.float64, device=acc.device), reduction="sum"
        )
        return grads, merged, float(loss)

    def _all_reduce_grads(self) -> None:
        import torch.distributed as dist

        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    # ---- checkpoints ---------------------------------------------------------------------

    def _save_hook(
        self, models: list[torch.nn.Module], weights: list[Any], output_dir: str
    ) -> None:
        if self.accelerator.is_main_process:
            for i, m in enumerate(models):
                target = Path(output_dir) / ("model" if i == 0 else f"model_{i}")
                self.accelerator.unwrap_model(m).save_pretrained(target)
                if i == 0:
                    self.tokenizer.save_pretrained(target)
        weights.clear()

    def _load_hook(self, models: list[torch.nn.Module], input_dir: str) -> None:
        from safetensors.torch import load_file

        for i in range(len(models)):
            model = self.accelerator.unwrap_model(models.pop(0))
            src = Path(input_dir) / ("model" if i == 0 else f"model_{i}")
            state: dict[str, torch.Tensor] = {}
            for f in sorted(src.glob("*.safetensors")):
                state.update(load_file(str(f)))
            if not state:
                raise FileNotFoundError(f"no safetensors weights under {src}")
            if is_peft(model):  # model/ holds the adapters only; the base is the config's model
                load_adapter_state(model, state)
                continue
            missing, unexpected = model.load_state_dict(state, strict=False)
            tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
                n for n, _ in model.named_parameters()
            }
            bad = [k for k in missing if k not in tied]
            if bad or unexpected:
                raise ValueError(
                    f"checkpoint {src} does not match the model: missing {bad}, unexpected {unexpected}"
                )

    def save_state(self, directory: str | Path) -> None:
        """Model (save_pretrained under model/), optimiser, scheduler, RNG states into directory."""
        self.accelerator.save_state(str(directory))

    def load_state(self, directory: str | Path) -> None:
        """Inverse of save_state."""
        self.accelerator.load_state(str(directory))


def with_trainer_old_logprobs(trainer: PolicyTrainer, samples: Sequence[Sample]) -> list[Sample]:
    """The samples, in order, with the trainer's own log-probs (current weights, i.e. those
    that sampled them; no gradient) as old_logprobs and the engine's moved to
    engine_logprobs: the ratio's denominator is then the trainer's, and the engine/trainer
    mismatch goes into the TIS weight (one extra forward pass per round)."""
    out: dict[int, Sample] = {}
    index = {id(s): k for k, s in enumerate(samples)}
    trainer.model.eval()
    try:
        for _, rows in trainer._micro_batches(samples):
            batch = trainer._batch_tensors(rows)
            n_c = batch["completion_mask"].size(1)
            with torch.no_grad(), trainer.accelerator.autocast():
                logps = trainer.completion_logps(
                    trainer.model, batch["input_ids"], batch["attention_mask"], n_c
                )
            for s, row in zip(rows, logps.float().cpu().tolist(), strict=True):
                engine = s.engine_logprobs if s.engine_logprobs is not None else s.old_logprobs
                if engine is None:
                    raise ValueError(
                        f"TIS needs the engine's log-probs; a {s.task} sample has none"
                    )
                out[index[id(s)]] = dataclasses.replace(
                    s, old_logprobs=row[: len(s.completion_ids)], engine_logprobs=list(engine)
                )
    finally:
        trainer.model.train()
    return [out[k] for k in range(len(samples))]
