"""30-round GRPO with the uniform scheduler on the synthetic suite, from the SFT model, per seed.

    .venv/bin/python benchmarks/policy_grpo_curves.py --sft models/sft --rounds 30 --seeds 0 1 2

Each seed: a fresh PolicyTrainer from the SFT weights, the uniform scheduler (equal task
shares, uniform prompts, one fixed beta), `rounds` rounds of sample -> sandboxed reward ->
GRPO update (64 prompts x G = 16 per round by default, in 2 mini-batch optimiser steps of 32
prompts), greedy and sampled held-out evaluation every `eval_every` rounds, on the whole
held-out split by default. Writes the curves (held-out mean reward per task vs round, one line
per seed, the SFT level dashed) to docs/img/policy_grpo_curves.png and the numbers to
runs/policy_grpo_curves.json, and prints on how many tasks each seed beat the SFT model
(acceptance: >= 3 of 4 in every seed).

`--lora-r R` trains PEFT LoRA adapters of rank R (alpha `--lora-alpha`, every linear layer
of each block) instead of every weight; the reference is then the base with its adapters
disabled. LoRA wants a higher learning rate than full fine-tuning (on the tiny model 3x
raised the held-out reward like full fine-tuning, 10x did not); `--lr` is the one learning
rate of the run, so pass it explicitly. benchmarks/lora_vs_full.py
compares a full fine-tuning run's numbers with a LoRA run's (docs/PERFORMANCE.md, "LoRA vs
full fine-tuning").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft", default="models/sft")
    ap.add_argument("--pools", default="data/pools")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--prompts-per-round", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    ap.add_argument("--loss-type", default="dapo", choices=["grpo", "dapo", "dr_grpo"])
    ap.add_argument("--num-iterations", type=int, default=1, help="optimiser steps per round (mu)")
    ap.add_argument(
        "--steps-per-round",
        type=int,
        default=2,
        help="mini-batches per round, one optimiser step each (TRL's steps_per_generation)",
    )
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank; 0 = full fine-tuning")
    ap.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (scale alpha / r)")
    ap.add_argument(
        "--no-scale-rewards", action="store_true", help="centre group rewards only (Dr. GRPO)"
    )
    ap.add_argument(
        "--eval-per-task",
        type=int,
        default=0,
        help="held-out items per task, the first N by prompt_id (the training flow evaluates "
        "128); 0 = the whole held-out split (148-196 items per task on the default pools)",
    )
    ap.add_argument(
        "--eval-split",
        default="eval",
        choices=["eval", "validation", "test"],
        help="held-out items: the whole eval pool, or one of its halves "
        "(astor_core.evaluation.select_split: choose settings on validation, report test)",
    )
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument(
        "--eval-samples",
        type=int,
        default=4,
        help="sampled completions per held-out item (at the training temperature) for the "
        "sampled evaluation, next to the greedy one; 0 = greedy only",
    )
    ap.add_argument(
        "--sft-eval-from",
        default="",
        help="reuse the SFT evaluation of an earlier run's numbers file (same --sft, evaluation "
        "items, samples, tokens and temperature, else refused) instead of evaluating it again",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", default="docs/img/policy_grpo_curves.png")
    ap.add_argument("--out", default="runs/policy_grpo_curves.json")
    args = ap.parse_args()

    import pandas as pd
    import torch
    from accelerate.utils import set_seed

    from astor_core import TASKS
    from astor_core.evaluation import select_split
    from astor_core.method.scheduler import SchedulerConfig, make_scheduler
    from astor_core.method.utility import PromptFeedback, RoundFeedback
    from astor_core.policy.grpo import GRPOConfig
    from astor_core.policy.memory import LoRAConfig
    from astor_core.policy.model import ModelConfig, load_model
    from astor_core.policy.rollout import RolloutConfig, SamplingParams
    from astor_core.policy.stages import evaluate, prompts_for, score_rollouts, update
    from astor_core.policy.trainer import PolicyTrainer, TrainerConfig
    from astor_core.sandbox import default_sandbox

    torch.set_num_threads(args.threads)
    train = pd.read_parquet(Path(args.pools) / "train.parquet").to_dict(orient="records")
    eval_records = select_split(
        pd.read_parquet(Path(args.pools) / "eval.parquet").to_dict(orient="records"),
        args.eval_split,
    )
    by_id = {(r["task"], str(r["prompt_id"])): r for r in train}
    pools = {t: [pid for (task, pid) in by_id if task == t] for t in TASKS}
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    greedy = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    sandbox = default_sandbox()
    eval_items = args.eval_per_task or len(eval_records)

    model, tok = load_model(ModelConfig(args.sft))

    def held_out_tables(policy) -> dict[str, dict]:
        """Greedy (one completion per item) and, with --eval-samples, the sampling policy's
        expected reward (mean over eval_samples completions per item, fixed seed)."""
        tables = {
            "greedy": evaluate(policy, tok, eval_records, eval_items, greedy, sandbox=sandbox)
        }
        if args.eval_samples:
            sampled = SamplingParams(
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=12345
            )
            tables["sampled"] = evaluate(
                policy,
                tok,
                eval_records,
                eval_items,
                sampled,
                sandbox=sandbox,
                samples=args.eval_samples,
            )
        return tables

    sft_eval = _reused_sft_eval(args) if args.sft_eval_from else held_out_tables(model)
    results: dict[str, object] = {"sft": sft_eval, "seeds": {}, "args": vars(args)}
    sched_cfg = SchedulerConfig(
        prompts_per_round=args.prompts_per_round, samples_per_prompt=args.group_size
    )
    for seed in args.seeds:
        set_seed(seed)
        model, tok = load_model(ModelConfig(args.sft))
        trainer = PolicyTrainer(
            model,
            tok,
            TrainerConfig(
                learning_rate=args.lr,
                total_steps=args.rounds * args.num_iterations * args.steps_per_round,
                num_iterations=args.num_iterations,
                steps_per_round=args.steps_per_round,
                warmup_steps=args.warmup_steps,
                temperature=args.temperature,
                grpo=GRPOConfig(loss_type=args.loss_type, scale_rewards=not args.no_scale_rewards),
                lora=LoRAConfig(r=args.lora_r, alpha=args.lora_alpha),
            ),
            rollout=RolloutConfig(sampling=sampling),
        )
        scheduler = make_scheduler("uniform", pools, sched_cfg, seed)
        curve = [{"round": 0, "eval": sft_eval}]
        train_reward = []
        train_by_task: list[dict[str, float]] = []
        trainable = sum(p.numel() for p in trainer.unwrapped_model.parameters() if p.requires_grad)
        t0 = time.perf_counter()
        for rnd in range(args.rounds):
            plan = scheduler.plan(rnd)
            records = [by_id[item] for item in plan.items]
            G = plan.samples_per_prompt
            rollouts = trainer.sample(prompts_for(records), G, seed=seed * 100_003 + rnd)
            rewards = score_rollouts(records, rollouts, sandbox)
            out = update(trainer, records, rollouts, rewards, G, {t: args.beta for t in TASKS})
            scheduler.update(
                RoundFeedback(
                    round_idx=rnd,
                    prompts=[
                        PromptFeedback(
                            t,
                            pid,
                            rewards[i * G : (i + 1) * G],
                            out["advantages"][i * G : (i + 1) * G],
                        )
                        for i, (t, pid) in enumerate(plan.items)
                    ],
                    kl=out["kl"],
                )
            )
            train_reward.append(sum(rewards) / len(rewards))
            per_task: dict[str, list[float]] = {}
            for i, (t, _) in enumerate(plan.items):
                per_task.setdefault(t, []).extend(rewards[i * G : (i + 1) * G])
            train_by_task.append({t: sum(v) / len(v) for t, v in per_task.items()})
            if (rnd + 1) % args.eval_every == 0 or rnd + 1 == args.rounds:
                curve.append({"round": rnd + 1, "eval": held_out_tables(trainer.unwrapped_model)})
                # the numbers so far, so that a run stopped early still leaves its curve
                results["seeds"][str(seed)] = {"curve": curve, "train_reward": train_reward}
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=2))
            by_task = " ".join(f"{t[:6]} {v:.3f}" for t, v in sorted(train_by_task[-1].items()))
            print(
                f"seed {seed} round {rnd + 1}: train reward {train_reward[-1]:.3f} ({by_task}) "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
        final = curve[-1]["eval"]
        improved = {
            kind: [t for t in TASKS if table[t]["mean_reward"] > sft_eval[kind][t]["mean_reward"]]
            for kind, table in final.items()
        }
        results["seeds"][str(seed)] = {
            "curve": curve,
            "train_reward": train_reward,
            "train_reward_by_task": train_by_task,
            "improved": improved,
            "trainable_params": trainable,
            "seconds": time.perf_counter() - t0,
        }
        for kind, tasks in improved.items():
            print(
                f"seed {seed} ({kind}): improved over SFT on {len(tasks)}/4 tasks: {tasks}",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    _plot(results, TASKS, args.plot)
    ok = {
        kind: all(len(s["improved"][kind]) >= 3 for s in results["seeds"].values())
        for kind in sft_eval
    }
    print(json.dumps({"3_of_4_every_seed": ok, "plot": args.plot, "numbers": args.out}))


_EVAL_ARGS = (
    "sft",
    "pools",
    "eval_split",
    "eval_per_task",
    "eval_samples",
    "max_new_tokens",
    "temperature",
)
_EVAL_ARG_DEFAULTS = {"eval_split": "eval"}  # files written before the option: the whole pool


def _reused_sft_eval(args: argparse.Namespace) -> dict:
    """The SFT tables of an earlier run whose evaluation settings equal this run's."""
    earlier = json.loads(Path(args.sft_eval_from).read_text())
    for key in _EVAL_ARGS:
        theirs = earlier["args"].get(key, _EVAL_ARG_DEFAULTS.get(key))
        if theirs != getattr(args, key):
            raise SystemExit(
                f"--sft-eval-from {args.sft_eval_from}: {key} is {theirs!r} there, "
                f"{getattr(args, key)!r} here; the SFT evaluation cannot be reused"
            )
    return earlier["sft"]


def _plot(results, tasks, path: str) -> None:
    """One row per evaluation (greedy; sampled), one column per task, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["sft"])
    fig, axes = plt.subplots(
        len(kinds), len(tasks), figsize=(4 * len(tasks), 3.2 * len(kinds)), squeeze=False
    )
    for row, kind in zip(axes, kinds, strict=True):
        for ax, task in zip(row, tasks, strict=True):
            for seed, res in results["seeds"].items():
                xs = [p["round"] for p in res["curve"]]
                ys = [p["eval"][kind][task]["mean_reward"] for p in res["curve"]]
                ax.plot(xs, ys, marker="o", label=f"seed {seed}")
            ax.axhline(results["sft"][kind][task]["mean_reward"], ls="--", c="gray", label="SFT")
            ax.set_title(f"{task} ({kind})")
            ax.set_xlabel("round")
        row[0].set_ylabel(f"held-out mean reward ({kind})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
