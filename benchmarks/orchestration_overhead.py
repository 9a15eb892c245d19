"""Orchestration overhead: the training flow vs the same stage functions called directly.

Both sides run the demo's training (params.yaml: same rounds, eval rounds, seed, pools and SFT
model) from a fresh run folder, so they do the same compute:

- direct: the flow's body as a plain loop of the same ``astor_core.pipeline`` calls
  (validate pools, open the run, per round schedule -> rollout -> rewards -> update ->
  utility -> [eval] -> checkpoint, then the plots and the eval table); no Prefect, no MLflow;
- flow: ``flows.training.train_flow`` (Prefect task runs for every stage, MLflow logging of
  every round, the artefacts, the ephemeral Prefect API).

A round's wall time is the time between the ends of two consecutive rounds (the end is
taken after the checkpoint and, in the flow, after the round's MLflow logging: read back from
the timestamps of the logged metric). Round 1 is left out on both sides (it pays for lazy
initialisation). The per-round overhead is the acceptance figure (under 3% of a round's wall
time); the fixed start-up and finish cost (Prefect's ephemeral API start, MLflow run creation,
the artefact uploads) is reported separately, per run and spread over the demo's rounds.
The two sides alternate, so that changes of machine load hit both alike.

    .venv/bin/python benchmarks/orchestration_overhead.py [--repeats 2] [--config params.yaml]

Writes the figures to docs/PERFORMANCE.md ("Orchestration overhead").
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.cli._common import quiet_env  # noqa: E402

quiet_env(startup_timeout_s=180, PREFECT_LOGGING_LEVEL="WARNING")


def direct_run(config: str, overrides: list[str]) -> tuple[float, list[float]]:
    """Total wall time and the end time of each round, stage functions called in a plain loop."""
    from astor_core import pipeline
    from astor_core.config import load_config

    t0 = time.time()
    cfg = load_config(config, overrides)
    pipeline.validate_pools(cfg.data.pools_dir, cfg.data.validation)
    ctx = pipeline.open_run(cfg)
    ends = []
    while ctx.round < cfg.train.rounds:
        started = pipeline.now()
        plan = pipeline.schedule_round(ctx)
        batch = pipeline.rollout(ctx, plan)
        scored = [s for c in pipeline.reward_chunks(ctx, batch) for s in pipeline.score_chunk(c)]
        update = pipeline.train_round(ctx, batch, scored)
        stats = pipeline.recompute_utility(ctx, batch, scored, update)
        if pipeline.eval_due(ctx):
            stats["eval"] = pipeline.evaluate(ctx)
        stats["global"]["round_time_s"] = pipeline.now() - started
        pipeline.save_round(ctx, stats)
        ends.append(time.time())
    pipeline.plot_history(pipeline.load_history(ctx), ctx.tasks)
    pipeline.write_eval_table(ctx, pipeline.final_eval(ctx))
    return time.time() - t0, ends


def flow_run(config: str, overrides: list[str]) -> tuple[float, list[float]]:
    """Total wall time and the end time of each round (MLflow timestamp of its logged metrics)."""
    from mlflow.tracking import MlflowClient

    from flows.training import train_flow

    t0 = time.time()
    result = train_flow(config, overrides)
    total = time.time() - t0
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "round_time_s")
    return total, [m.timestamp / 1000.0 for m in sorted(history, key=lambda m: m.step)]


def round_times(ends: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. train.rounds=4",
    )
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    from astor_core.config import load_config

    cfg = load_config(args.config, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="astor-orch-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    # a fresh Prefect database, so the figure does not depend on how many runs the user's
    # ~/.prefect already holds (Prefect reads PREFECT_HOME when it is first imported)
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    load_before = os.getloadavg()
    rows: dict[str, dict[str, list[float]]] = {
        side: {"total": [], "rounds": []} for side in ("direct", "flow")
    }
    try:
        for rep in range(args.repeats):
            for side, fn in (("direct", direct_run), ("flow", flow_run)):
                over = args.overrides + [
                    f"train.run_dir={work}/{side}-{rep}",
                    "train.experiment=astor-orch-bench",
                ]
                total, ends = fn(args.config, over)
                rows[side]["total"].append(total)
                rows[side]["rounds"].append(sum(round_times(ends)))
                print(
                    f"repeat {rep} {side}: total {total:.1f} s, rounds 2..{len(ends)}: {round_times(ends)}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rounds = cfg.train.rounds
    measured = rounds - 1
    d_round = statistics.median(rows["direct"]["rounds"]) / measured
    f_round = statistics.median(rows["flow"]["rounds"]) / measured
    d_total = statistics.median(rows["direct"]["total"])
    f_total = statistics.median(rows["flow"]["total"])
    d_fixed = d_total - d_round * rounds
    f_fixed = f_total - f_round * rounds
    per_round = (f_round - d_round) / d_round
    fixed_extra = f_fixed - d_fixed
    overall = (f_total - d_total) / d_total
    load_after = os.getloadavg()
    lines = [
        f"Command: `.venv/bin/python benchmarks/orchestration_overhead.py --repeats {args.repeats}"
        + "".join(f" --set {o}" for o in args.overrides)
        + f"` (config `{args.config}`: {rounds} rounds, eval every {cfg.train.eval_every}, "
        f"B = {cfg.scheduler.prompts_per_round} prompts x G = {cfg.scheduler.samples_per_prompt}, "
        f"reward chunks of {cfg.train.reward_chunk_size}). Load average (1/5/15 min) before "
        f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after "
        f"{load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}.",
        "",
        "| side | mean round wall time, rounds 2..N (s) | fixed start-up + finish per run (s) | whole run (s) |",
        "|---|---|---|---|",
        f"| stage functions called directly | {d_round:.2f} | {d_fixed:.1f} | {d_total:.1f} |",
        f"| Prefect flow + MLflow | {f_round:.2f} | {f_fixed:.1f} | {f_total:.1f} |",
        "",
        f"Per-round orchestration overhead: **{per_round:+.1%}** of a round's wall time "
        f"({(f_round - d_round) * 1000:+.0f} ms per round; target: under 3%). "
        f"Fixed cost of the orchestration per run: {fixed_extra:+.1f} s (Prefect's ephemeral API "
        f"start, MLflow run, params, pool and policy artefacts), {fixed_extra / rounds:+.1f} s per "
        f"round over the demo's {rounds} rounds; whole run {overall:+.1%}. Medians over "
        f"{args.repeats} repeats; per-repeat figures in the command's output.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_doc:
        from benchmarks._perf_doc import machine, write_section

        write_section("Orchestration overhead", f"Machine: {machine()}.\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
