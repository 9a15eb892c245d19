"""PolicyTrainer: per-task beta, per-task gradients, exact resume, crash-safe checkpoints."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from astor_core.policy.batches import Sample
from astor_core.policy.checkpoint import latest_checkpoint, load_checkpoint
from astor_core.policy.grpo import GRPOConfig
from astor_core.policy.rollout import RolloutConfig, SamplingParams
from astor_core.policy.steps import subset_grad
from astor_core.policy.trainer import PolicyTrainer, TrainerConfig


def _paired_samples(rng: random.Random, vocab: int, marker_a: int, marker_b: int) -> list[Sample]:
    """Task a and task b get the same prompts (apart from a task marker), completions and advantages."""
    samples = []
    for _ in range(4):
        body = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 6))]
        comp = [rng.randrange(3, vocab) for _ in range(rng.randint(2, 5))]
        adv = rng.uniform(-1, 1)
        samples.append(Sample("a", [marker_a] * 4 + body, comp, adv))
        samples.append(Sample("b", [marker_b] * 4 + body, comp, adv))
    return samples


def _gradient_before_each_step(trainer: PolicyTrainer) -> dict[str, torch.Tensor]:
    """seen["g"]: the accumulated subset gradient right before the latest optimiser step."""
    seen: dict[str, torch.Tensor] = {}
    orig = trainer.optimizer.step

    def spy(*a, **k):
        seen["g"] = subset_grad(trainer._subset).clone()
        return orig(*a, **k)

    trainer.optimizer.step = spy
    return seen


def test_higher_beta_task_stays_closer_to_reference(micro) -> None:
    model, tok = micro
    cfg = TrainerConfig(learning_rate=3e-3, max_grad_norm=0.0, micro_batch_size=8)
    trainer = PolicyTrainer(model, tok, cfg, cpu=True)
    samples = _paired_samples(random.Random(0), model.config.vocab_size, 3, 4)
    betas = {"a": 2.0, "b": 0.0}
    history = []
    for _ in range(20):
        result = trainer.step(samples, betas)
        history.append((result.per_task["a"]["kl"], result.per_task["b"]["kl"]))
    kl_a, kl_b = history[-1]
    assert kl_b > 0.01
    assert kl_a < 0.5 * kl_b, history


def test_task_gradients_sum_to_the_batch_gradient(micro) -> None:
    model, tok = micro
    cfg = TrainerConfig(
        learning_rate=0.0, max_grad_norm=0.0, micro_batch_size=3, grad_last_layers=2
    )
    trainer = PolicyTrainer(model, tok, cfg, cpu=True)
    rng = random.Random(1)
    samples = _paired_samples(rng, model.config.vocab_size, 3, 4)
    seen = _gradient_before_each_step(trainer)
    result = trainer.step(samples, {"a": 0.1, "b": 0.1})
    total = result.task_grads["a"] + result.task_grads["b"]
    assert torch.allclose(total, seen["g"], atol=1e-6)
    assert set(result.task_grads) == {"a", "b"}
    assert result.task_grads["a"].shape == (sum(p.numel() for p in trainer._subset),)


def test_task_gradients_leave_out_the_kl_pull(micro) -> None:
    """Away from the reference the KL term has a gradient; the per-task vectors (synergy's
    input) are the surrogate's alone: with zero advantages they are zero while the batch's
    gradient is not, and with advantages they sum to the batch's minus the KL part."""
    model, tok = micro
    cfg = TrainerConfig(learning_rate=0.0, max_grad_norm=0.0, micro_batch_size=3)
    trainer = PolicyTrainer(model, tok, cfg, cpu=True)
    with torch.no_grad():  # move the policy off its frozen reference
        for p in trainer._subset:
            p.add_(0.05 * torch.randn_like(p))
    samples = _paired_samples(random.Random(2), model.config.vocab_size, 3, 4)
    seen = _gradient_before_each_step(trainer)
    flat = [dataclasses.replace(s, advantage=0.0) for s in samples]
    result = trainer.step(flat, {"a": 1.0, "b": 1.0})
    assert float(seen["g"].abs().max()) > 1e-6  # the KL pull is there
    for task in ("a", "b"):
        assert float(result.task_grads[task].abs().max()) == 0.0
    with_kl = trainer.step(samples, {"a": 1.0, "b": 1.0})
    total_kl = seen["g"].clone()
    no_kl = trainer.step(samples, {"a": 0.0, "b": 0.0})
    for task in ("a", "b"):
        assert torch.allclose(with_kl.task_grads[task], no_kl.task_grads[task], atol=1e-6)
    assert not torch.allclose(total_kl, seen["g"], atol=1e-6)


def _fake_reward(completion_ids: list[int]) -> float:
    """A deterministic verifiable reward: the fraction of even token ids."""
    return sum(1 for t in completion_ids if t % 2 == 0) / max(len(completion_ids), 1)


def _run_rounds(trainer: PolicyTrainer, state: dict, start: int, stop: int, root: Path) -> None:
    prompts = ["def f(x):\n", "assert f(1) == ", "Commit message:\n"]
    tasks = ["code_generation", "code_reasoning", "commit_message"]
    for rnd in range(start, stop):
        rollouts = trainer.sample(prompts, 4)
        rewards = [_fake_reward(r.completion_ids) for r in rollouts]
        out = trainer.update(
            rollouts, rewards, [tasks[r.prompt_index] for r in rollouts], 4, state["betas"]
        )
        state["betas"] = {t: state["betas"][t] * (1.0 + 0.1 * out["kl"][t]) for t in tasks}
        state["history"].append(sum(rewards))
        trainer.save_checkpoint(root, rnd, state)


def _fresh(micro_dir: Path) -> PolicyTrainer:
    from astor_core.policy.model import ModelConfig, load_model

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(str(micro_dir), device="cpu", dtype="float32"))
    cfg = TrainerConfig(
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        warmup_steps=1,
        total_steps=6,
        micro_batch_size=5,
        deterministic=True,
        grpo=GRPOConfig(loss_type="dapo"),
    )
    rollout = RolloutConfig(batch_size=5, sampling=SamplingParams(max_new_tokens=8))
    return PolicyTrainer(model, tok, cfg, cpu=True, rollout=rollout)


def test_resume_is_exact(micro_dir: Path, tmp_path: Path) -> None:
    """2 rounds, stop, resume in a fresh trainer, 2 more == 4 rounds straight (bit-exact on CPU)."""
    betas = {"code_generation": 0.05, "code_reasoning": 0.05, "commit_message": 0.05}
    straight = _fresh(micro_dir)
    s_state = {"betas": dict(betas), "history": []}
    _run_rounds(straight, s_state, 0, 4, tmp_path / "straight")

    first = _fresh(micro_dir)
    _run_rounds(first, {"betas": dict(betas), "history": []}, 0, 2, tmp_path / "split")
    del first
    torch.manual_seed(12345)  # a resumed process starts from unrelated RNG state
    random.seed(999)
    second = _fresh(micro_dir)
    r_state = second.resume(tmp_path / "split")
    assert r_state is not None and len(r_state["history"]) == 2
    _run_rounds(second, r_state, 2, 4, tmp_path / "split")

    assert r_state == s_state  # extra state (betas, reward history) identical
    a = straight.unwrapped_model.state_dict()
    b = second.unwrapped_model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.scheduler.state_dict() == second.scheduler.state_dict()
    assert (
        s_state["history"][0] != s_state["history"][3]
        or s_state["history"][1] != s_state["history"][2]
    )


_WRITER = r"""
import os, sys, time
import torch
from astor_core.policy.model import ModelConfig, load_model
from astor_core.policy.trainer import PolicyTrainer, TrainerConfig
model, tok = load_model(ModelConfig(sys.argv[1], device="cpu"))
trainer = PolicyTrainer(model, tok, TrainerConfig(), cpu=True)
trainer.save_checkpoint(sys.argv[2], 0, {"round": 0})
real_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.05)
    real_fsync(fd)
os.fsync = slow_fsync
print("writing", flush=True)
for r in range(1, 100):
    trainer.save_checkpoint(sys.argv[2], r, {"round": r})
"""


def test_kill_during_checkpoint_write_leaves_nothing_half_written(
    micro_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(micro_dir), str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)  # inside the (slowed) write of round 1
    proc.kill()
    proc.wait()
    assert any(p.name.startswith(".tmp-round-") for p in root.iterdir()), (
        "kill did not land mid-write"
    )
    ck = latest_checkpoint(root)
    assert ck is not None and ck.name.startswith("round-")
    from astor_core.policy.model import ModelConfig, load_model

    model, tok = load_model(ModelConfig(str(micro_dir), device="cpu"))
    trainer = PolicyTrainer(model, tok, TrainerConfig(), cpu=True)
    round_idx, extra = load_checkpoint(ck, trainer)
    assert extra == {"round": round_idx}
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(next(p for p in root.iterdir() if p.name.startswith(".tmp-")), trainer)


def _engine_rollouts(
    probe: PolicyTrainer, n: int, seed: int, completion_len: int | None = None
) -> list:
    """`n` random rollouts in groups of 2 (5 prompt tokens; `completion_len` completion tokens,
    or 2-5 at random), with the probe's own log-probs standing in for the engine's."""
    from astor_core.policy.rollout import Rollout

    rng = random.Random(seed)
    vocab = probe.model.config.vocab_size
    rollouts = []
    for k in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(5)]
        comp = [rng.randrange(3, vocab) for _ in range(completion_len or rng.randint(2, 5))]
        ids = torch.tensor([prompt + comp])
        with torch.no_grad():
            lp = probe.completion_logps(probe.model, ids, torch.ones_like(ids), len(comp))
        rollouts.append(Rollout(k // 2, "p", "c", prompt, comp, lp[0].tolist(), "length"))
    return rollouts


def test_num_iterations_takes_mu_steps_with_the_rollout_logprobs_as_old(micro) -> None:
    """GRPO's mu: the same rollouts feed num_iterations optimiser steps; the engine's log-probs
    are the old policy, so later steps see a ratio away from 1 (and clip); the per-task
    gradient reported is the first, on-policy one."""
    import copy

    model, tok = micro
    twin = copy.deepcopy(model)
    probe = PolicyTrainer(copy.deepcopy(model), tok, TrainerConfig(), cpu=True)
    rollouts = _engine_rollouts(probe, 4, seed=2, completion_len=4)
    args = ([1.0, 0.0, 0.0, 1.0], ["a"] * 4, 2, {"a": 0.0})

    mu = PolicyTrainer(
        model, tok, TrainerConfig(learning_rate=5e-2, max_grad_norm=0.0, num_iterations=3), cpu=True
    )
    steps = {"n": 0}
    real_step = mu.optimizer.step

    def counting(*a, **k):
        steps["n"] += 1
        return real_step(*a, **k)

    mu.optimizer.step = counting
    out = mu.update(rollouts, *args)
    assert steps["n"] == 3
    assert out["metrics"]["clip_frac"] > 0.0

    one = PolicyTrainer(twin, tok, TrainerConfig(learning_rate=5e-2, max_grad_norm=0.0), cpu=True)
    single = one.update(rollouts, *args)
    assert single["metrics"]["clip_frac"] == 0.0
    torch.testing.assert_close(
        out["task_gradients"]["a"], single["task_gradients"]["a"], rtol=1e-4, atol=1e-6
    )


def _two_task_rollouts(probe: PolicyTrainer) -> tuple[list, list[float], list[str]]:
    """4 prompt groups of 2 rollouts (tasks a, a, b, b, prompt-major), with the probe's own
    log-probs as the engine's; rewards with spread in every group."""
    rollouts = _engine_rollouts(probe, 8, seed=5)
    return rollouts, [1.0, 0.0, 0.3, 0.9, 0.0, 1.0, 0.5, 0.2], ["a"] * 4 + ["b"] * 4


def test_steps_per_round_takes_one_step_per_mini_batch_of_whole_groups(micro) -> None:
    """steps_per_round = 2: two optimiser steps, each on half of the prompt groups and each
    with both tasks (groups dealt round-robin); with the weights held (lr 0), the mean of the
    steps' per-task gradients is the one-step gradient of the whole batch."""
    import copy

    model, tok = micro
    twin = copy.deepcopy(model)
    probe = PolicyTrainer(copy.deepcopy(model), tok, TrainerConfig(), cpu=True)
    rollouts, rewards, tasks = _two_task_rollouts(probe)
    cfg = TrainerConfig(
        learning_rate=0.0, max_grad_norm=0.0, grpo=GRPOConfig(loss_type="grpo"), steps_per_round=2
    )
    split = PolicyTrainer(model, tok, cfg, cpu=True)
    seen: list[list[str]] = []
    real_step = split.step

    def spy(samples, betas, use_old_logprobs=None):  # type: ignore[no-untyped-def]
        seen.append([s.task for s in samples])
        assert use_old_logprobs  # later steps are off-policy: the engine's log-probs are old
        return real_step(samples, betas, use_old_logprobs)

    split.step = spy  # type: ignore[method-assign]
    out = split.update(rollouts, rewards, tasks, 2, {"a": 0.1, "b": 0.1})
    assert seen == [["a", "a", "b", "b"], ["a", "a", "b", "b"]]
    assert out["metrics"]["samples"] == 8
    assert {t: v["samples"] for t, v in out["per_task"].items()} == {"a": 4, "b": 4}

    one = PolicyTrainer(twin, tok, dataclasses.replace(cfg, steps_per_round=1), cpu=True)
    whole = one.update(rollouts, rewards, tasks, 2, {"a": 0.1, "b": 0.1})
    for t in ("a", "b"):
        torch.testing.assert_close(
            out["task_gradients"][t], whole["task_gradients"][t], rtol=1e-4, atol=1e-6
        )
    assert out["kl"] == pytest.approx(whole["kl"], abs=1e-6)


def test_steps_per_round_must_fit_the_round(micro) -> None:
    model, tok = micro
    trainer = PolicyTrainer(model, tok, TrainerConfig(steps_per_round=5), cpu=True)
    rollouts, rewards, tasks = _two_task_rollouts(trainer)
    with pytest.raises(ValueError, match="steps_per_round must be between 1 and the round's 4"):
        trainer.update(rollouts, rewards, tasks, 2, {"a": 0.0, "b": 0.0})


def test_tis_update_equals_the_uncorrected_one_when_the_engine_agrees(micro) -> None:
    """grpo.tis_cap > 0: the trainer rescores the rollouts (old log-probs = its own) and
    weights each token by min(exp(old - engine), cap). Engine log-probs equal to the
    trainer's give the plain update; engine log-probs lower by 0.2 scale the gradient by
    e^0.2 (beta = 0; the loss itself is ~0 here, as group advantages sum to zero)."""
    import copy
    import dataclasses
    import math

    from astor_core.policy.grpo import GRPOConfig

    model, tok = micro
    probe = PolicyTrainer(copy.deepcopy(model), tok, TrainerConfig(), cpu=True)
    rollouts = _engine_rollouts(probe, 4, seed=3, completion_len=4)
    args = ([1.0, 0.0, 0.2, 0.9], ["a"] * 4, 2, {"a": 0.0})
    base = TrainerConfig(learning_rate=5e-2, max_grad_norm=0.0)
    tis = dataclasses.replace(base, grpo=GRPOConfig(tis_cap=2.0))

    def run(cfg: TrainerConfig, rolls: list) -> tuple[dict, dict]:
        trainer = PolicyTrainer(copy.deepcopy(model), tok, cfg, cpu=True)
        out = trainer.update(rolls, *args)
        return out, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    plain_out, plain_w = run(base, rollouts)
    tis_out, tis_w = run(tis, rollouts)
    plain_g = plain_out["task_gradients"]["a"]
    torch.testing.assert_close(tis_out["task_gradients"]["a"], plain_g, rtol=1e-4, atol=1e-7)
    for name, w in plain_w.items():
        torch.testing.assert_close(tis_w[name], w, rtol=1e-4, atol=1e-6)

    low = [dataclasses.replace(r, logprobs=[x - 0.2 for x in r.logprobs]) for r in rollouts]
    low_out, low_w = run(tis, low)
    torch.testing.assert_close(
        low_out["task_gradients"]["a"], plain_g * math.exp(0.2), rtol=1e-4, atol=1e-7
    )
    assert any(not torch.allclose(low_w[n], w) for n, w in plain_w.items())


def test_vllm_rollouts_without_weight_sync_are_refused_for_training(micro) -> None:
    from astor_core.config import ConfigError
    from astor_core.policy.rollout import RolloutConfig

    model, tok = micro
    stale = RolloutConfig(engine="vllm", vllm_weight_sync="none")
    trainer = PolicyTrainer(model, tok, TrainerConfig(), cpu=True, rollout=stale)
    with pytest.raises(ConfigError, match="vllm_weight_sync='none' serves stale weights"):
        trainer.sample(["x"], 2)
