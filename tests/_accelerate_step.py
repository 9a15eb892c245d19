"""GRPO update steps with astor_core's PolicyTrainer, run by tests/test_scaling.py and
tests/policy/test_multirank.py both as a plain process and under `accelerate launch` with a
2-rank CPU config (configs/accelerate/cpu_2proc.yaml: DDP; cpu_2proc_fsdp.yaml: FSDP2).

    python tests/_accelerate_step.py MODEL_DIR OUT_FILE [--steps N] [--save CK] [--resume CK]

Every rank builds the same global batches (seeded; step k uses seed + k): three tasks of
uneven sizes, so a rank sometimes holds a placeholder micro-batch. The trainer gives each
rank its share and sums the gradients over ranks, so the updated weights must match one
process on the whole batch. `--save CK` writes a round checkpoint after the last step;
`--resume CK` loads the latest one under CK first and continues with the next step's batch;
`--export DIR` exports the policy at the end (`PolicyTrainer.export`, on every rank).
Rank 0 writes the full updated state dict (gathered from the shards under FSDP2), and per
step the batch metrics, the per-task statistics and the per-task gradient vectors (all of
them whole-batch figures, summed over ranks).
"""

from __future__ import annotations

import argparse
import random

TASKS_USED = 3
"""Tasks in the batch (13 samples: 5 + 4 + 4, micro-batch 2: uneven chunks on 2 ranks)."""


class _GivenIds:
    """The batches hold token ids already: the trainer only reads the pad id."""

    pad_token_id = 0

    def save_pretrained(self, directory: str) -> None:
        """Nothing to save beside the model."""


def make_samples(seed: int, vocab: int, n: int) -> list:
    """A deterministic mixed-task batch: random prompts/completions and advantages."""
    from astor_core import TASKS
    from astor_core.policy.batches import Sample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        samples.append(
            Sample(
                task=TASKS[i % TASKS_USED],
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
    parser.add_argument("--samples", type=int, default=13)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--save", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--export", default=None)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from astor_core import TASKS
    from astor_core.policy.trainer import PolicyTrainer, TrainerConfig

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    cfg = TrainerConfig(  # a decaying LR: a second scheduler step per update would show
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        total_steps=4,
        micro_batch_size=2,
        max_grad_norm=1.0,
    )
    trainer = PolicyTrainer(model, _GivenIds(), cfg, cpu=True)
    first = 0
    if args.resume:
        extra = trainer.resume(args.resume)
        assert extra is not None, f"no checkpoint under {args.resume}"
        first = int(extra["next_step"])
    steps = []
    for k in range(first, first + args.steps):
        samples = make_samples(args.seed + k, model.config.vocab_size, args.samples)
        steps.append(trainer.step(samples, {t: 0.05 for t in TASKS}))
    if args.save:
        trainer.save_checkpoint(args.save, first + args.steps, {"next_step": first + args.steps})
    if args.export:
        trainer.export(args.export)
    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.model)  # gathered from the shards: a collective
    if acc.is_main_process:
        torch.save(
            {
                "world": acc.num_processes,
                "backend": acc.state.backend if acc.num_processes > 1 else "none",
                "distributed_type": str(acc.distributed_type),
                "fsdp2": acc.is_fsdp2,
                "state": {k: v.detach().cpu() for k, v in state.items()},
                "steps": [
                    {"metrics": r.metrics, "per_task": r.per_task, "task_grads": r.task_grads}
                    for r in steps
                ],
            },
            args.out_file,
        )
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main()
