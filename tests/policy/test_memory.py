"""Memory levers: LoRA (one base copy, disabled-adapter reference, adapter-only updates, merged
export, adapter checkpoints), gradient checkpointing, fp32 master weights under bf16."""

from __future__ import annotations

import copy
import dataclasses
import gc
import random
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

from astor_core.policy.batches import Sample
from astor_core.policy.grpo import k3_kl
from astor_core.policy.memory import LoRAConfig
from astor_core.policy.trainer import PolicyTrainer, TrainerConfig

LORA = TrainerConfig(
    lora=LoRAConfig(r=4, alpha=8), learning_rate=1e-2, max_grad_norm=0.0, micro_batch_size=4
)


def _samples(vocab: int, n: int = 8, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(
            "ab"[i % 2],
            [rng.randrange(3, vocab) for _ in range(rng.randint(3, 6))],
            [rng.randrange(3, vocab) for _ in range(rng.randint(2, 5))],
            rng.uniform(-1, 1),
        )
        for i in range(n)
    ]


def _perturb_adapters(trainer: PolicyTrainer) -> None:
    """LoRA's B starts at zero (policy == reference); give it values so the KL is not trivially 0."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in trainer.unwrapped_model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def _live_qwen_models() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on every live object touches deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(o, Qwen2ForCausalLM) for o in gc.get_objects())


def _storage_bytes(*modules: torch.nn.Module | None) -> int:
    """Bytes of the distinct storages behind the modules' parameters."""
    seen = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
        for m in modules
        if m is not None
        for p in m.parameters()
    }
    return sum(seen.values())


@pytest.mark.parametrize(("lora_r", "copies"), [(4, 1), (0, 2)])
def test_lora_keeps_one_copy_of_the_base_weights(micro, lora_r: int, copies: int) -> None:
    model, tok = micro
    base_bytes = _storage_bytes(model)
    before = _live_qwen_models() - 1  # the fixture's model is already alive
    trainer = PolicyTrainer(
        model, tok, dataclasses.replace(LORA, lora=LoRAConfig(r=lora_r)), cpu=True
    )
    del model
    assert _live_qwen_models() - before == copies
    assert (trainer.ref_model is None) == (lora_r > 0)
    adapter_bytes = sum(
        p.numel() * p.element_size()
        for n, p in trainer.unwrapped_model.named_parameters()
        if "lora_" in n
    )
    assert (adapter_bytes > 0) == (lora_r > 0)
    held = _storage_bytes(trainer.unwrapped_model, trainer.ref_model)
    assert held == copies * base_bytes + adapter_bytes


def test_disabled_adapter_reference_equals_a_frozen_copy(micro) -> None:
    model, tok = micro
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    trainer = PolicyTrainer(model, tok, LORA, cpu=True)
    _perturb_adapters(trainer)
    batch = trainer._batch_tensors(_samples(model.config.vocab_size))
    ids, att, n_c = batch["input_ids"], batch["attention_mask"], batch["completion_mask"].size(1)
    via_adapters = trainer.reference_logps(ids, att, n_c)
    with torch.no_grad():
        via_copy = trainer.completion_logps(frozen, ids, att, n_c)
        policy = trainer.completion_logps(trainer.model, ids, att, n_c)
    torch.testing.assert_close(via_adapters, via_copy, rtol=0, atol=1e-6)
    mask = batch["completion_mask"].bool()
    kl_adapters = k3_kl(policy, via_adapters)[mask].mean()
    kl_copy = k3_kl(policy, via_copy)[mask].mean()
    assert float(kl_adapters) > 1e-4  # the adapters moved the policy away from the base
    torch.testing.assert_close(kl_adapters, kl_copy, rtol=1e-5, atol=1e-8)
    assert trainer.unwrapped_model.training  # the reference pass restored train mode


def test_grpo_step_changes_only_adapter_weights(micro) -> None:
    model, tok = micro
    trainer = PolicyTrainer(model, tok, LORA, cpu=True)
    before = {n: p.detach().clone() for n, p in trainer.unwrapped_model.named_parameters()}
    result = trainer.step(_samples(model.config.vocab_size), {"a": 0.1, "b": 0.0})
    changed = {
        n
        for n, p in trainer.unwrapped_model.named_parameters()
        if not torch.equal(p.detach(), before[n])
    }
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert all("lora_" in n for n in trainer.subset_names)  # synergy uses the adapters
    assert all(g.abs().sum() > 0 for g in result.task_grads.values())


def test_export_merges_the_adapters_into_a_plain_model(micro, tmp_path) -> None:
    model, tok = micro
    trainer = PolicyTrainer(model, tok, LORA, cpu=True)
    _perturb_adapters(trainer)
    trainer.export(tmp_path / "policy")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "policy", dtype=torch.float32)
    assert not any("lora" in n for n, _ in plain.named_parameters())
    batch = trainer._batch_tensors(_samples(plain.config.vocab_size))
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"].size(1))
    with torch.no_grad():
        torch.testing.assert_close(
            trainer.completion_logps(plain, *args),
            trainer.completion_logps(trainer.model, *args),
            rtol=0,
            atol=1e-5,
        )
    assert any("lora_" in n for n, _ in trainer.unwrapped_model.named_parameters())


def test_lora_checkpoint_resumes_the_adapters(micro, micro_dir, tmp_path) -> None:
    from astor_core.policy.model import ModelConfig, load_model

    model, tok = micro
    trainer = PolicyTrainer(model, tok, LORA, cpu=True)
    samples = _samples(model.config.vocab_size)
    trainer.step(samples, {"a": 0.1, "b": 0.1})
    trainer.save_checkpoint(tmp_path, 1, {"k": 1})
    again, _ = load_model(ModelConfig(str(micro_dir), device="cpu", dtype="float32"))
    other = PolicyTrainer(again, tok, LORA, cpu=True)
    assert other.resume(tmp_path) == {"k": 1}
    a = trainer.step(samples, {"a": 0.1, "b": 0.1})
    b = other.step(samples, {"a": 0.1, "b": 0.1})
    assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-6)
    for (n, p), (_, q) in zip(
        trainer.unwrapped_model.named_parameters(),
        other.unwrapped_model.named_parameters(),
        strict=True,
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=n)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_gradient_checkpointing_gives_the_same_step(micro, lora_r: int) -> None:
    model, tok = micro
    cfg = dataclasses.replace(LORA, lora=LoRAConfig(r=lora_r), grad_last_layers=2)
    torch.manual_seed(0)  # the same LoRA A initialisation in both
    plain = PolicyTrainer(copy.deepcopy(model), tok, cfg, cpu=True)
    torch.manual_seed(0)
    ckpt = PolicyTrainer(
        model, tok, dataclasses.replace(cfg, gradient_checkpointing=True), cpu=True
    )
    assert ckpt.unwrapped_model.is_activation_checkpointing
    assert not plain.unwrapped_model.is_activation_checkpointing
    samples = _samples(model.config.vocab_size, n=12, seed=3)
    a = plain.step(samples, {"a": 0.2, "b": 0.0})
    b = ckpt.step(samples, {"a": 0.2, "b": 0.0})
    assert a.metrics["loss"] == pytest.approx(b.metrics["loss"], rel=1e-5)
    for t in a.task_grads:
        torch.testing.assert_close(a.task_grads[t], b.task_grads[t], rtol=1e-4, atol=1e-7)
    for (n, p), (_, q) in zip(
        plain.unwrapped_model.named_parameters(),
        ckpt.unwrapped_model.named_parameters(),
        strict=True,
    ):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


@pytest.fixture()
def fresh_accelerate_state():
    """accelerate keeps one process-wide mixed-precision setting; reset it around the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_mixed_precision_keeps_fp32_master_weights(micro, fresh_accelerate_state) -> None:
    model, tok = micro
    with pytest.raises(ValueError, match="fp32 trainable weights"):
        PolicyTrainer(
            copy.deepcopy(model).to(torch.bfloat16),
            tok,
            TrainerConfig(mixed_precision="bf16"),
            cpu=True,
        )
    trainer = PolicyTrainer(model, tok, TrainerConfig(mixed_precision="bf16"), cpu=True)
    result = trainer.step(_samples(model.config.vocab_size), {"a": 0.1, "b": 0.1})
    assert all(p.dtype == torch.float32 for p in trainer.unwrapped_model.parameters())
    assert all(
        s.dtype == torch.float32
        for st in trainer.optimizer.state.values()
        for s in st.values()
        if torch.is_tensor(s) and s.dim() > 0
    )
    assert result.metrics["tokens"] > 0
    with trainer.accelerator.autocast():  # the matmuls run in bf16 over the fp32 weights
        logits = trainer.model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert torch.equal(
        logits, logits.bfloat16().float()
    )  # bf16 values (accelerate upcasts outputs)
    assert not torch.equal(
        trainer.unwrapped_model.lm_head.weight,
        trainer.unwrapped_model.lm_head.weight.bfloat16().float(),
    )
