"""Memory levers of the GRPO update: LoRA adapters (PEFT), gradient checkpointing, and fp32
master weights under bf16 autocast.

With LoRA on, the policy is a `peft.PeftModel` around the base model and the reference
policy is that same base with its adapters disabled (`PeftModel.disable_adapter`), so the
base weights live once in memory instead of twice. Gradient checkpointing recomputes each
block's activations in the backward pass (non-reentrant, so frozen inputs need no
`requires_grad` trick). Mixed precision keeps trainable weights and AdamW states in fp32
and runs the matmuls in bf16 under accelerate's autocast; `check_master_weights` refuses a
half-precision trainable weight, which would silently make the optimiser pure bf16.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class LoRAConfig:
    """PEFT LoRA adapters on the policy (r = 0 trains every weight)."""

    r: int = 0
    """Adapter rank; 0 disables LoRA (full fine-tuning)."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input during training."""
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    """Module names that get adapters (every linear layer of a Qwen2/Llama block)."""

    def __post_init__(self) -> None:
        if self.r < 0:
            raise ValueError(f"lora.r must be >= 0, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")

    @property
    def enabled(self) -> bool:
        """LoRA is on.

        >>> LoRAConfig().enabled, LoRAConfig(r=8).enabled
        (False, True)
        """
        return self.r > 0


def is_peft(model: torch.nn.Module) -> bool:
    """The model is a PEFT model (adapters on a base)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def apply_lora(model: torch.nn.Module, cfg: LoRAConfig) -> torch.nn.Module:
    """The model wrapped with fresh LoRA adapters (base weights frozen, shared, not copied)."""
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass (non-reentrant checkpointing)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The base policy (adapters off, eval mode) for reference log-probs; restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


def check_master_weights(model: torch.nn.Module, mixed_precision: str) -> None:
    """Under mixed precision every trainable weight must be fp32 (the master copy AdamW updates)."""
    if mixed_precision == "no":
        return
    low = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if low:
        raise ValueError(
            f"mixed_precision={mixed_precision} needs fp32 trainable weights (fp32 master), but "
            f"{low[0]} is {dict(model.named_parameters())[low[0]].dtype}: load the model with "
            "model.dtype=float32"
        )


def master_dtype(dtype: str, mixed_precision: str) -> str:
    """The weights dtype to load: float32 under mixed precision when the model's is `auto`
    (which would be bf16 on CUDA, i.e. no fp32 master), otherwise unchanged.

    >>> master_dtype("auto", "bf16"), master_dtype("auto", "no"), master_dtype("bfloat16", "bf16")
    ('float32', 'auto', 'bfloat16')
    """
    return "float32" if mixed_precision != "no" and dtype == "auto" else dtype


def save_merged(model: torch.nn.Module, directory: str | Path) -> None:
    """save_pretrained of a plain transformers model: LoRA adapters merged into a copy of the
    base (the live policy keeps its adapters), otherwise the model itself."""
    if not is_peft(model):
        model.save_pretrained(directory)
        return
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(directory)
    del merged


def load_adapter_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights written by PeftModel.save_pretrained into `model`'s adapters."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected or not state:
        raise ValueError(f"adapter checkpoint does not match the model: unexpected {unexpected}")


def apply_memory_levers(
    model: torch.nn.Module, lora: LoRAConfig, gradient_checkpointing: bool, mixed_precision: str
) -> torch.nn.Module:
    """LoRA adapters and gradient checkpointing as configured; fp32 master weights checked."""
    if lora.enabled:
        model = apply_lora(model, lora)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    check_master_weights(model, mixed_precision)
    return model


def frozen_reference(
    model: torch.nn.Module, ref_model: torch.nn.Module | None, lora: bool
) -> torch.nn.Module | None:
    """The frozen reference model; None under LoRA (the base with adapters disabled is it)."""
    if lora:
        if ref_model is not None:
            raise ValueError("ref_model must be None with LoRA: the reference is the base model")
        return None
    ref = ref_model if ref_model is not None else copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref
