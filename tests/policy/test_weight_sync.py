"""Weight sync to a vLLM server: full state dict under vLLM's names, LoRA merged (PEFT's own
merge) and unmerged after, pushed once through a receiver with TRL VLLMClient's methods."""

from __future__ import annotations

import copy

import torch

from astor_core.policy.memory import LoRAConfig, apply_lora
from astor_core.policy.rollout import RolloutConfig, VLLMEngine
from astor_core.policy.weight_sync import push_weights, vllm_weights
from tests.policy.fake_vllm import FakeVLLMServer


class Receiver:
    """Records what TRL's VLLMClient would broadcast."""

    def __init__(self) -> None:
        self.pushed: list[tuple[list, dict[str, torch.Tensor]]] = []
        self.resets = 0

    def update_named_params(self, metadata, named_params) -> None:
        self.pushed.append((metadata, {n: t.clone() for n, t in named_params}))

    def reset_prefix_cache(self) -> None:
        self.resets += 1


def _lora_model(model: torch.nn.Module) -> torch.nn.Module:
    peft = apply_lora(model, LoRAConfig(r=4, alpha=8))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return peft


def test_plain_model_pushes_its_parameters_under_their_own_names(micro) -> None:
    model, _ = micro
    params = dict(model.named_parameters())
    with vllm_weights(model) as state:
        assert list(state) == list(params)  # tied lm_head appears once, as vLLM expects
        for name, tensor in state.items():
            assert torch.equal(tensor, params[name].detach())


def test_lora_is_merged_for_the_push_and_unmerged_after(micro) -> None:
    model, tok = micro
    peft = _lora_model(copy.deepcopy(model))
    ids = torch.tensor([[5, 6, 7, 8]])
    before = peft(input_ids=ids).logits.detach()
    merged = copy.deepcopy(peft).merge_and_unload()
    expected = dict(merged.named_parameters())

    receiver = Receiver()
    assert push_weights(peft, receiver, "cpu") == len(expected)
    ((meta, pushed),) = receiver.pushed
    assert receiver.resets == 1
    assert [m[0] for m in meta] == list(pushed) == list(expected)
    assert all(m[1] == "float32" and m[2] == list(pushed[m[0]].shape) for m in meta)
    for name, tensor in pushed.items():
        torch.testing.assert_close(tensor, expected[name].detach(), rtol=1e-6, atol=1e-6)
    base = dict(model.named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(pushed[q], base[q])  # the adapters are in the pushed weight
    torch.testing.assert_close(peft(input_ids=ids).logits.detach(), before)  # unmerged again
    assert any("lora_A" in n for n, _ in peft.named_parameters())


def test_vllm_engine_sync_pushes_through_the_client(micro) -> None:
    model, tok = micro
    receiver = Receiver()
    with FakeVLLMServer(model, tok) as server:
        engine = VLLMEngine(tok, RolloutConfig(engine="vllm", vllm_base_url=server.url))
        engine._client = receiver  # TRL's VLLMClient needs vLLM and CUDA for its NCCL group
        engine.sync_weights(model)
        none = VLLMEngine(
            tok, RolloutConfig(engine="vllm", vllm_base_url=server.url, vllm_weight_sync="none")
        )
        none.sync_weights(model)  # evaluation against a fixed server: nothing pushed
    assert len(receiver.pushed) == 1
    assert set(receiver.pushed[0][1]) == {n for n, _ in model.named_parameters()}
