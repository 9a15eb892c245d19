"""Full fine-tuning vs LoRA GRPO from the same SFT model: held-out reward tables and curves.

    .venv/bin/python benchmarks/policy_grpo_curves.py --lr 3e-4 --out runs/grpo_full.json ...
    .venv/bin/python benchmarks/policy_grpo_curves.py --lr 3e-3 --lora-r 8 \\
        --out runs/grpo_lora.json --sft-eval-from runs/grpo_full.json ...
    .venv/bin/python benchmarks/lora_vs_full.py --full runs/grpo_full.json --lora runs/grpo_lora.json

Reads the numbers of benchmarks/policy_grpo_curves.py runs (one or more files per arm, e.g.
one per seed, merged after checking that they differ only in their seeds), refuses a pair
that differs in anything but the learning rate and the LoRA settings (same SFT model, pools,
seeds, rounds, rollouts and evaluation), and prints, per evaluation (greedy; sampled mean@k),
the held-out mean reward per task and averaged over the tasks for the SFT model and each
arm's seeds after the last round, with the average's change over SFT per seed. Writes the
markdown table to `--table` and a figure (held-out average vs round, and the training
reward per round, both arms) to `--plot`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Arguments that may differ between the two arms; every other one must match.
ARM_ARGS = frozenset({"lr", "lora_r", "lora_alpha", "plot", "out", "sft_eval_from", "threads"})


def mean(xs: list[float]) -> float:
    """Arithmetic mean.

    >>> mean([0.1, 0.3])
    0.2
    """
    return sum(xs) / len(xs)


def task_average(table: dict[str, dict], tasks: list[str]) -> float:
    """Held-out mean reward averaged over the tasks (each task weighs the same).

    >>> task_average({"a": {"mean_reward": 0.2}, "b": {"mean_reward": 0.4}}, ["a", "b"])
    0.30000000000000004
    """
    return mean([table[t]["mean_reward"] for t in tasks])


def merge_seeds(runs: list[dict]) -> dict:
    """One arm's runs (e.g. one file per seed) as one: same settings but the seeds, seeds unioned.

    >>> a = {"args": {"lr": 1, "seeds": [0]}, "sft": {}, "seeds": {"0": 1}}
    >>> b = {"args": {"lr": 1, "seeds": [1]}, "sft": {}, "seeds": {"1": 2}}
    >>> m = merge_seeds([a, b]); m["args"]["seeds"], m["seeds"]
    ([0, 1], {'0': 1, '1': 2})
    """
    merged = {"args": dict(runs[0]["args"]), "sft": runs[0]["sft"], "seeds": {}}
    for run in runs:
        other = {k: v for k, v in run["args"].items() if k not in ARM_ARGS | {"seeds"}}
        mine = {k: v for k, v in merged["args"].items() if k not in ARM_ARGS | {"seeds"}}
        if (
            other != mine
            or run["args"]["lr"] != merged["args"]["lr"]
            or run["sft"] != merged["sft"]
        ):
            raise SystemExit("one arm's files differ in more than their seeds")
        if set(run["seeds"]) & set(merged["seeds"]):
            raise SystemExit(f"seed {sorted(set(run['seeds']) & set(merged['seeds']))} twice")
        merged["seeds"].update(run["seeds"])
    merged["args"]["seeds"] = sorted(int(s) for s in merged["seeds"])
    return merged


def check_pair(full: dict, lora: dict) -> None:
    """Refuse two runs that differ in anything but the arm's own settings."""
    for key in sorted(set(full["args"]) | set(lora["args"])):
        if key in ARM_ARGS:
            continue
        a, b = full["args"].get(key), lora["args"].get(key)
        if a != b:
            raise SystemExit(f"the arms differ in {key}: {a!r} (full) vs {b!r} (LoRA)")
    if full["args"].get("lora_r", 0) != 0 or lora["args"].get("lora_r", 0) <= 0:
        raise SystemExit("the first file must be full fine-tuning (lora_r 0), the second LoRA")
    if full["sft"] != lora["sft"]:
        raise SystemExit("the arms' SFT evaluations differ: not the same model or items")


def at_round(run: dict, rnd: int | None) -> dict:
    """The curve point of round `rnd` (None: the last one).

    >>> at_round({"curve": [{"round": 0}, {"round": 5}, {"round": 10}]}, 5)
    {'round': 5}
    """
    if rnd is None:
        return run["curve"][-1]
    points = [p for p in run["curve"] if p["round"] == rnd]
    if not points:
        raise SystemExit(f"no held-out evaluation at round {rnd}")
    return points[0]


def table_rows(full: dict, lora: dict, tasks: list[str], rnd: int | None = None) -> list[str]:
    """Markdown rows: eval kind, run, per-task reward, task average, average - SFT."""
    head = "| eval | run | " + " | ".join(tasks) + " | average | average - SFT |"
    rows = [head, "|" + "---|" * (len(tasks) + 4)]
    for kind in full["sft"]:
        sft = full["sft"][kind]
        base = task_average(sft, tasks)
        cells = " | ".join(f"{sft[t]['mean_reward']:.3f}" for t in tasks)
        rows.append(f"| {kind} | SFT | {cells} | {base:.3f} | |")
        for name, res in (("full", full), (f"LoRA r {lora['args']['lora_r']}", lora)):
            points = [at_round(run, rnd) for run in res["seeds"].values()]
            finals = [p["eval"][kind] for p in points]
            for seed, point, final in zip(res["seeds"], points, finals, strict=True):
                avg = task_average(final, tasks)
                cells = " | ".join(f"{final[t]['mean_reward']:.3f}" for t in tasks)
                rows.append(
                    f"| {kind} | {name} (lr {res['args']['lr']:g}), seed {seed}, "
                    f"round {point['round']} | {cells} | {avg:.3f} | {avg - base:+.3f} |"
                )
            per_task = [mean([f[t]["mean_reward"] for f in finals]) for t in tasks]
            avg = mean(per_task)
            cells = " | ".join(f"{v:.3f}" for v in per_task)
            rows.append(
                f"| {kind} | {name}: mean of {len(finals)} seeds | {cells} | {avg:.3f} "
                f"| {avg - base:+.3f} |"
            )
    return rows


def _plot(full: dict, lora: dict, tasks: list[str], path: str) -> None:
    """Held-out task average vs round per eval kind, and the training reward per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(full["sft"])
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(4.5 * (len(kinds) + 1), 3.4))
    arms = (("full", full, "tab:blue"), (f"LoRA r {lora['args']['lora_r']}", lora, "tab:orange"))
    for ax, kind in zip(axes, kinds, strict=False):
        for name, res, colour in arms:
            for i, (seed, run) in enumerate(res["seeds"].items()):
                xs = [p["round"] for p in run["curve"]]
                ys = [task_average(p["eval"][kind], tasks) for p in run["curve"]]
                ls = ["-", "--", ":"][i % 3]
                ax.plot(xs, ys, marker="o", ls=ls, c=colour, label=f"{name} seed {seed}")
        ax.set_title(f"held-out task average ({kind})")
        ax.set_xlabel("round")
    ax = axes[-1]
    for _, res, colour in arms:
        for i, run in enumerate(res["seeds"].values()):
            ys = run["train_reward"]
            ax.plot(range(1, len(ys) + 1), ys, ls=["-", "--", ":"][i % 3], c=colour, alpha=0.8)
    ax.set_title("training reward (sampled, fresh prompts)")
    ax.set_xlabel("round")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--full", nargs="+", required=True, help="full fine-tuning numbers (policy_grpo_curves.py)"
    )
    ap.add_argument(
        "--lora", nargs="+", required=True, help="LoRA numbers (policy_grpo_curves.py --lora-r R)"
    )
    ap.add_argument(
        "--round", type=int, default=None, help="compare at this round (default: each run's last)"
    )
    ap.add_argument("--plot", default="docs/img/lora_vs_full.png")
    ap.add_argument("--table", default="runs/lora_vs_full.md")
    args = ap.parse_args()

    from astor_core import TASKS

    full = merge_seeds([json.loads(Path(f).read_text()) for f in args.full])
    lora = merge_seeds([json.loads(Path(f).read_text()) for f in args.lora])
    check_pair(full, lora)
    tasks = list(TASKS)
    rows = table_rows(full, lora, tasks, args.round)
    for name, res in (("full", full), ("LoRA", lora)):
        for seed, run in res["seeds"].items():
            tr = run["train_reward"]
            k = max(1, len(tr) // 3)
            rows.append(
                f"\n{name} seed {seed}: {run.get('trainable_params', '?')} trainable parameters, "
                f"{run.get('seconds', float('nan')):.0f} s; training reward, mean of the first "
                f"{k} rounds -> the last {k}: {mean(tr[:k]):.3f} -> {mean(tr[-k:]):.3f}"
            )
    text = "\n".join(rows)
    print(text)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(text + "\n")
    _plot(full, lora, tasks, args.plot)
    print(json.dumps({"plot": args.plot, "table": args.table}))


if __name__ == "__main__":
    main()
