"""The policy's weights as a vLLM server loads them: shards gathered, LoRA adapters merged,
names those of the plain transformers model, pushed from rank 0 only.

Gathering is a collective (every rank enters :func:`vllm_weights`); with
``cpu_offload`` torch's `get_model_state_dict` hands the full tensors to rank 0 only and an
empty dict to the others, so one rank holds the full model at a time, in host memory. LoRA
adapters are merged with PEFT's own `merge_adapter` around the gather and unmerged after,
so the live policy keeps its adapters and the server gets base + B·A·scale. The naming
follows TRL's `VLLMGeneration._iter_named_params` (trl 1.16): PEFT's `base_model.model.`
prefix and `.base_layer` infix removed, adapter tensors dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Protocol

import torch

from astor_core.policy.memory import is_peft


class WeightReceiver(Protocol):
    """What the weights are pushed to (TRL's `VLLMClient` satisfies it)."""

    def update_named_params(
        self,
        metadata: list[tuple[str, str, list[int]]],
        named_params: Iterator[tuple[str, torch.Tensor]],
    ) -> None: ...

    def reset_prefix_cache(self) -> None: ...


def vllm_name(name: str) -> str | None:
    """The name vLLM loads a parameter under, or None for a LoRA adapter tensor (merged away).

    >>> vllm_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
    'model.layers.0.self_attn.q_proj.weight'
    >>> vllm_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") is None
    True
    >>> vllm_name("model.norm.weight")
    'model.norm.weight'
    """
    if ".lora_" in name or "original_module" in name:
        return None
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    return name.replace("modules_to_save.default.", "")


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextlib.contextmanager
def merged_adapters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """PEFT adapters merged into the base weights inside the block, unmerged on exit."""
    if not is_peft(model):
        yield model
        return
    model.merge_adapter()
    try:
        yield model
    finally:
        model.unmerge_adapter()


@contextlib.contextmanager
def vllm_weights(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Full, merged parameters under vLLM's names on rank 0 ({} on other ranks), valid
    inside the block only: without sharding the tensors are the live (merged) parameters
    themselves, which the adapters' unmerge restores on exit. Collective.

    Tied weights appear once (the names of `named_parameters`, as vLLM expects); buffers
    are left out (the server computes its own).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    params = {n for n, _ in model.named_parameters()}
    with merged_adapters(model):
        state = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        out: dict[str, torch.Tensor] = {}
        for name, tensor in state.items():
            target = vllm_name(name) if name in params else None
            if target is not None:
                out[target] = tensor
        yield out


def metadata(state: Mapping[str, torch.Tensor]) -> list[tuple[str, str, list[int]]]:
    """(name, vLLM dtype name, shape) per tensor, in push order (what the server is told first).

    >>> metadata({"w": torch.zeros(2, 3, dtype=torch.bfloat16)})
    [('w', 'bfloat16', [2, 3])]
    """
    return [(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in state.items()]


def push_weights(
    model: torch.nn.Module, receiver: WeightReceiver | None, device: torch.device | str
) -> int:
    """Gather and merge on every rank, push from rank 0 (one tensor on `device` at a time);
    the number of tensors pushed (0 on other ranks). `receiver` may be None off rank 0."""
    with vllm_weights(model) as state:
        if _rank() != 0:
            return 0
        if receiver is None:
            raise ValueError("rank 0 needs a weight receiver to push the policy to")
        receiver.update_named_params(
            metadata(state), ((n, t.to(device, non_blocking=True)) for n, t in state.items())
        )
    receiver.reset_prefix_cache()
    return len(state)


def is_main_rank() -> bool:
    """This process is rank 0 (or the only one)."""
    return _rank() == 0
