"""One GRPO update step with astor_core's PolicyTrainer, run by tests/test_scaling.py both as
a plain process and under `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml`.

    python tests/_accelerate_step.py MODEL_DIR OUT_FILE [--seed N]

Every rank builds the same global batch (seeded); the trainer gives each rank its share and
all-reduces the gradients, so the updated weights must match one process on the whole batch.
Rank 0 writes the updated state dict, the batch metrics, the per-task statistics and the
per-task gradient vectors (all of them whole-batch figures, summed over ranks).
"""

from __future__ import annotations

import argparse
import random
from types import SimpleNamespace


def make_samples(seed: int, vocab: int, n: int) -> list:
    """A deterministic mixed-task batch: random prompts/completions and advantages."""
    from astor_core import TASKS
    from astor_core.policy.batches import Sample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        samples.append(
            Sample(
                task=TASKS[i % 2],
                prompt_ids=[rng.randrange(1, vocab) for _ in range(rng.randint(3, 8))],
                completion_ids=[rng.randrange(1, vocab) for _ in range(rng.randint(2, 6))],
                advantage=rng.uniform(-1.0, 1.0),
            )
        )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out_file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=12)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from astor_core import TASKS
    from astor_core.policy.trainer import PolicyTrainer, TrainerConfig

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    cfg = TrainerConfig(learning_rate=1e-3, micro_batch_size=4, max_grad_norm=1.0)
    trainer = PolicyTrainer(model, SimpleNamespace(pad_token_id=0), cfg, cpu=True)
    samples = make_samples(args.seed, model.config.vocab_size, args.samples)
    result = trainer.step(samples, {t: 0.05 for t in TASKS})
    acc = trainer.accelerator
    backend = acc.state.backend if acc.num_processes > 1 else "none"
    if acc.is_main_process:
        torch.save(
            {
                "world": acc.num_processes,
                "backend": backend,
                "distributed_type": str(acc.distributed_type),
                "state": {
                    k: v.detach().cpu() for k, v in trainer.unwrapped_model.state_dict().items()
                },
                "metrics": result.metrics,
                "per_task": result.per_task,
                "task_grads": result.task_grads,
            },
            args.out_file,
        )
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main()
