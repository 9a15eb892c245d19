"""GRPO update throughput of PolicyTrainer.step on this machine (tiny model, CPU by default).

    .venv/bin/python benchmarks/policy_update.py [--model models/sft] [--samples 64]

Builds one round of real rollouts (n per prompt from the train pools), then times
PolicyTrainer.step with the configured micro-batch size and, as the baseline in the same
run, with one sequence per micro-batch. Prints JSON: samples/s and tokens/s of each and the
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/sft")
    ap.add_argument("--pools", default="data/pools")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd
    import torch

    from astor_core import TASKS
    from astor_core.policy.batches import Sample
    from astor_core.policy.model import ModelConfig, load_model, num_parameters
    from astor_core.policy.rollout import RolloutConfig, SamplingParams, TransformersEngine
    from astor_core.policy.stages import prompts_for
    from astor_core.policy.trainer import PolicyTrainer, TrainerConfig

    torch.set_num_threads(args.threads)
    frame = pd.read_parquet(os.path.join(args.pools, "train.parquet"))
    k = args.samples // args.n
    records = frame.groupby("task").head(k // 4 + 1).head(k).to_dict(orient="records")
    model, tok = load_model(ModelConfig(args.model))
    rollouts = TransformersEngine(model, tok, RolloutConfig()).generate(
        prompts_for(records), args.n, SamplingParams(max_new_tokens=64, seed=0)
    )
    rng = random.Random(0)
    samples = [
        Sample(records[r.prompt_index]["task"], r.prompt_ids, r.completion_ids, rng.uniform(-1, 1))
        for r in rollouts
    ]
    tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    betas = {t: 0.04 for t in TASKS}

    def run(micro: int) -> dict[str, float]:
        m, _ = load_model(ModelConfig(args.model))
        trainer = PolicyTrainer(m, tok, TrainerConfig(micro_batch_size=micro))
        trainer.step(samples[: args.n], betas)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            trainer.step(samples, betas)
            times.append(time.perf_counter() - t)
        dt = min(times)
        return {"seconds": dt, "samples_per_s": len(samples) / dt, "tokens_per_s": tokens / dt}

    batched = run(args.micro_batch)
    single = run(1)
    print(
        json.dumps(
            {
                "benchmark": "policy_update",
                "model_parameters": num_parameters(model),
                "samples": len(samples),
                "tokens": tokens,
                "threads": args.threads,
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
                "micro_batched": batched,
                "one_per_micro_batch": single,
                "speedup": batched["samples_per_s"] / single["samples_per_s"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
