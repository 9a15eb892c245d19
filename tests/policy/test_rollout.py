"""TransformersEngine: grouping, left padding, stop handling, log-probs consistent with the trainer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from astor_core.policy.rollout import (
    RolloutConfig,
    SamplingParams,
    TransformersEngine,
    finish_completion,
    group_rollouts,
)
from astor_core.policy.trainer import PolicyTrainer, TrainerConfig

PROMPTS = ["def f(x):\n    return", "Commit message:\n", "assert f(1) == "]


def test_rollouts_are_grouped_prompt_major(micro) -> None:
    model, tok = micro
    engine = TransformersEngine(model, tok, RolloutConfig(batch_size=4))
    out = engine.generate(PROMPTS, 3, SamplingParams(max_new_tokens=6, seed=0))
    assert [r.prompt_index for r in out] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [len(g) for g in group_rollouts(out)] == [3, 3, 3]
    for r in out:
        assert r.prompt == PROMPTS[r.prompt_index]
        assert tok.decode(r.prompt_ids) == r.prompt
        assert 1 <= len(r.completion_ids) <= 6 and len(r.logprobs) == len(r.completion_ids)
        assert r.finish_reason in ("stop", "length")
        assert all(lp <= 0 for lp in r.logprobs)
        if r.finish_reason == "length":
            assert len(r.completion_ids) == 6


def test_same_seed_same_rollouts_and_batching_does_not_matter_for_greedy(micro) -> None:
    model, tok = micro
    params = SamplingParams(max_new_tokens=8, seed=3)
    a = TransformersEngine(model, tok, RolloutConfig(batch_size=2)).generate(PROMPTS, 2, params)
    b = TransformersEngine(model, tok, RolloutConfig(batch_size=2)).generate(PROMPTS, 2, params)
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    alone = [
        TransformersEngine(model, tok).generate([p], 1, greedy)[0].completion_ids for p in PROMPTS
    ]
    batched = [
        r.completion_ids for r in TransformersEngine(model, tok).generate(PROMPTS, 1, greedy)
    ]
    assert alone == batched  # left padding does not change what a prompt produces


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_match_trainer_recomputation(micro, temperature: float) -> None:
    model, tok = micro
    engine = TransformersEngine(model, tok, RolloutConfig(batch_size=8))
    out = engine.generate(
        PROMPTS, 2, SamplingParams(max_new_tokens=7, temperature=temperature, seed=1)
    )
    trainer = PolicyTrainer(model, tok, TrainerConfig(temperature=temperature), cpu=True)
    from astor_core.policy.batches import Sample

    samples = [Sample("t", r.prompt_ids, r.completion_ids, 0.0, r.logprobs) for r in out]
    batch = trainer._batch_tensors(samples)
    n_c = batch["completion_mask"].size(1)
    with torch.no_grad():
        lp = trainer.completion_logps(
            trainer.model, batch["input_ids"], batch["attention_mask"], n_c
        )
    for k, r in enumerate(out):
        got = lp[k, : len(r.completion_ids)]
        assert torch.allclose(got, torch.tensor(r.logprobs), atol=1e-4), k


def test_stop_strings_cut_text_and_keep_tokens(micro) -> None:
    _, tok = micro
    ids = tok("    return x\n\nassert f(1)")["input_ids"]
    kept, text, finish = finish_completion(tok, ids, {tok.eos_token_id}, ["\n\n"])
    assert text == "    return x" and finish == "stop"
    assert tok.decode(kept).startswith("    return x\n\n") and len(kept) < len(ids)
    kept, text, finish = finish_completion(
        tok, ids + [tok.eos_token_id] + ids, {tok.eos_token_id}, []
    )
    assert finish == "stop" and kept[-1] == tok.eos_token_id and text == tok.decode(ids)
    kept, text, finish = finish_completion(tok, ids, {tok.eos_token_id}, [])
    assert finish == "length" and kept == ids


def test_long_prompts_are_cut_from_the_left(micro) -> None:
    model, tok = micro
    engine = TransformersEngine(model, tok, RolloutConfig(max_prompt_tokens=5))
    r = engine.generate(["x = 1\n" * 20], 1, SamplingParams(max_new_tokens=2))[0]
    assert len(r.prompt_ids) == 5


@pytest.mark.gpu
@pytest.mark.skipif(
    "ASTOR_VLLM_URL" not in os.environ, reason="needs a vLLM server: set ASTOR_VLLM_URL"
)
def test_vllm_engine_against_a_real_server(micro) -> None:
    from astor_core.policy.rollout import VLLMEngine

    _, tok = micro
    cfg = RolloutConfig(
        engine="vllm", vllm_base_url=os.environ["ASTOR_VLLM_URL"], vllm_weight_sync="none"
    )
    out = VLLMEngine(tok, cfg).generate(PROMPTS, 2, SamplingParams(max_new_tokens=8, seed=0))
    assert [r.prompt_index for r in out] == [0, 0, 1, 1, 2, 2]
    assert all(len(r.logprobs) == len(r.completion_ids) > 0 for r in out)


# ---- VLLMEngine against a fake OpenAI-compatible server (HTTP side, CPU) ----------------


def test_vllm_engine_end_to_end_against_a_fake_server(micro) -> None:
    """VLLMEngine.generate over HTTP returns what the server's model sampled, prompt-major,
    with the engine's token ids and log-probs, and sends vLLM's request fields."""
    from astor_core.policy.rollout import VLLMEngine
    from tests.policy.fake_vllm import FakeVLLMServer

    model, tok = micro
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop=("\n\n",))
    local = TransformersEngine(model, tok).generate(PROMPTS, 2, params)
    with FakeVLLMServer(model, tok) as server:
        cfg = RolloutConfig(engine="vllm", vllm_base_url=server.url, vllm_weight_sync="none")
        engine = VLLMEngine(tok, cfg)
        out = engine.generate(PROMPTS, 2, params)
        body = server.requests[-1]
    assert engine.model_name == "models/policy"
    assert [r.prompt_index for r in out] == [0, 0, 1, 1, 2, 2]
    for got, want in zip(out, local, strict=True):
        assert got.completion == want.completion
        assert got.completion_ids == want.completion_ids
        assert got.prompt_ids == want.prompt_ids
        assert got.finish_reason == want.finish_reason
        assert got.logprobs == pytest.approx(want.logprobs)
    assert body["prompt"] == PROMPTS and body["n"] == 2 and body["max_tokens"] == 6
    assert body["logprobs"] == 0 and body["return_token_ids"] is True
    assert body["top_k"] == -1 and body["stop"] == ["\n\n"]


def test_vllm_engine_fails_loudly_on_server_errors(micro) -> None:
    from astor_core.policy.rollout import VLLMEngine
    from tests.policy.fake_vllm import FakeVLLMServer

    model, tok = micro
    params = SamplingParams(max_new_tokens=3, temperature=0.0)
    with FakeVLLMServer(model, tok) as server:
        cfg = RolloutConfig(engine="vllm", vllm_base_url=server.url, vllm_weight_sync="none")
        engine = VLLMEngine(tok, cfg)
        server.fail_next = 500
        with pytest.raises(RuntimeError, match="vLLM /v1/completions failed: 500"):
            engine.generate(PROMPTS[:1], 2, params)
        server.drop_choices = 1
        with pytest.raises(RuntimeError, match="returned 1 choices for 1 prompts x n=2"):
            engine.generate(PROMPTS[:1], 2, params)


def _synced_worker(rank: int, model_dir: str, init: str, out_dir: str) -> None:
    """One of 2 gloo ranks: rank 0 has 2 prompts, rank 1 none; batch size 1, synced."""
    import json
    from datetime import timedelta

    import torch.distributed as dist

    from astor_core.policy.model import ModelConfig, load_model

    # a mismatched collective fails after a minute instead of hanging the test session
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        model, tok = load_model(ModelConfig(model_dir, device="cpu", dtype="float32"))
        engine = TransformersEngine(model, tok, RolloutConfig(batch_size=1), synced_ranks=True)
        calls = []
        inner = engine._generate_batch

        def counted(ids: list[list[int]], p: SamplingParams) -> list[tuple[list[int], list[float]]]:
            calls.append(len(ids))
            return inner(ids, p)

        engine._generate_batch = counted  # type: ignore[method-assign]
        prompts = ["def add(a, b):", "x = 1\n"] if rank == 0 else []
        params = SamplingParams(max_new_tokens=6, temperature=0.0)
        done = [r.completion_ids for r in engine.generate(prompts, 1, params)]
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"calls": calls, "ids": done}))
    finally:
        dist.destroy_process_group()


def test_synced_ranks_make_equal_generate_calls(micro_dir: Path, tmp_path: Path) -> None:
    """With sharded weights every generate call is a collective: a rank with fewer batches
    (here none) runs dummy calls, so 2 gloo ranks finish (unsynced they would hang), and the
    busy rank's greedy completions are a single process's."""
    import json

    import torch.multiprocessing as mp

    from astor_core.policy.model import ModelConfig, load_model

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_synced_worker, args=(str(micro_dir), init, str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert got[0]["calls"] == [1, 1] and got[1]["calls"] == [1, 1]
    assert got[1]["ids"] == []
    model, tok = load_model(ModelConfig(str(micro_dir), device="cpu", dtype="float32"))
    alone = TransformersEngine(model, tok, RolloutConfig(batch_size=1)).generate(
        ["def add(a, b):", "x = 1\n"], 1, SamplingParams(max_new_tokens=6, temperature=0.0)
    )
    assert got[0]["ids"] == [r.completion_ids for r in alone]
