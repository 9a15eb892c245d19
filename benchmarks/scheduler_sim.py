"""Schedulers on simulated learners: ASTOR vs uniform MTRL, proportional, DUMP-style UCB,
specialists and the ablations, on every shipped scenario (configs/scenarios/*.yaml).

One command: ``.venv/bin/python benchmarks/scheduler_sim.py`` (``--help`` for options). Same as
``astor bench scheduler --scenario all --seeds 10 --json outputs/bench/scheduler_sim.json``,
plus the tables written to docs/PERFORMANCE.md (section "Scheduler on simulated learners").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _perf_doc import machine, write_section  # noqa: E402

from astor_core.simulation import BENCH_SCHEDULERS, shipped_scenarios  # noqa: E402
from flows.cli.bench import compare_on_scenarios  # noqa: E402


def markdown(result: dict, command: str, header: str, seconds: float) -> str:
    lines = [
        f"Command: `{command}` (same as `astor bench scheduler --scenario all --seeds {result['seeds']}`).",
        f"Machine: {header}; wall time {seconds / 60:.1f} min.",
        "Metric: rollouts (sampled completions) until the mean held-out success over tasks reaches the",
        "scenario's target; a run that never reaches it counts as the full budget. Ratio = scheduler's",
        "mean over seeds / uniform MTRL's mean, same seeds, same run. AUC = area under mean success vs",
        "rollouts / budget. Simulator: astor_core/simulation_learners.py (dynamics fixed before evaluation).",
        "",
        "### Summary over scenarios",
        "",
        "| scheduler | mean ratio to uniform | worst ratio | mean AUC |",
        "|---|---|---|---|",
    ]
    for name, row in result["overall"].items():
        lines.append(
            f"| {name} | {row['mean_ratio_to_uniform']:.3f} | {row['max_ratio_to_uniform']:.3f} | {row['mean_auc']:.3f} |"
        )
    lines += ["", "### Per scenario: ratio of rollouts to target vs uniform (reached fraction)", ""]
    names = result["schedulers"]
    lines.append("| scenario | target | uniform rollouts | " + " | ".join(names) + " |")
    lines.append("|---" * (3 + len(names)) + "|")
    for scen, data in result["scenarios"].items():
        rows = data["results"]
        cells = [
            f"{rows[n]['ratio_to_uniform']:.2f}"
            + ("" if rows[n]["reached_fraction"] == 1 else f" ({rows[n]['reached_fraction']:.0%})")
            for n in names
        ]
        lines.append(
            f"| {scen} | {data['target_mean_success']} | {rows['uniform']['rollouts_to_target_mean']:.0f} "
            f"± {rows['uniform']['rollouts_to_target_std']:.0f} | " + " | ".join(cells) + " |"
        )
    lines += ["", "### Per scenario: AUC and final mean success", ""]
    lines.append("| scenario | " + " | ".join(f"{n} AUC / final" for n in names) + " |")
    lines.append("|---" * (1 + len(names)) + "|")
    for scen, data in result["scenarios"].items():
        rows = data["results"]
        lines.append(
            f"| {scen} | "
            + " | ".join(
                f"{rows[n]['auc_mean']:.3f} / {rows[n]['final_mean_success']:.3f}" for n in names
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "outputs" / "bench" / "scheduler_sim.json"
    )
    parser.add_argument("--no-doc", action="store_true", help="Do not update docs/PERFORMANCE.md.")
    args = parser.parse_args()
    header = machine()
    start = time.time()
    result = compare_on_scenarios(
        shipped_scenarios(), args.seeds, None, list(BENCH_SCHEDULERS), args.workers
    )
    seconds = time.time() - start
    result["machine"] = header
    result["date"] = datetime.now().isoformat(timespec="minutes")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    command = f".venv/bin/python benchmarks/scheduler_sim.py --seeds {args.seeds} --workers {args.workers}"
    text = markdown(result, command, header, seconds)
    print(text)
    if not args.no_doc:
        write_section("Scheduler on simulated learners", text)


if __name__ == "__main__":
    main()
