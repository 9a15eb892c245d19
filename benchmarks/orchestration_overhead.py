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
initialisation). Two per-round figures are reported against the 3% target:

- end to end: round k of repeat r does the same compute on both sides (same seed and
  config), so each pair gives one relative difference; the median over all pairs is
  robust to the VM's load swings (a round's time varies by 10-20% between repeats here);
- critical path: from Prefect's own task-run timeline, the part of each flow round during
  which no task run was running (creating task runs, passing results, MLflow logging).

The fixed start-up and finish cost (Prefect's ephemeral API start, MLflow run creation, the
artefact uploads) is reported separately, per run and spread over the demo's rounds. The two
sides alternate in a counterbalanced order (direct then flow in even repeats, flow then direct
in odd ones), so that neither side is always the first run of the process or the one after
the other (a probe of stage times found the process's first run up to 15% faster than its
later ones), and changes of machine load hit both alike; the flow side uses a fresh Prefect
home (PREFECT_HOME) in the temporary folder.

    .venv/bin/python benchmarks/orchestration_overhead.py [--repeats 4] [--config params.yaml]

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

# the environment `astor demo` runs with (Prefect's INFO logging included: the task runs' logs
# go to the API server as they do in the demo)
quiet_env(startup_timeout_s=180)


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


def api_server_cpu_s() -> float:
    """CPU seconds used so far by the temporary Prefect API server (this process's uvicorn
    child), 0 when there is none (PREFECT_API_URL set)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                times = child.cpu_times()
                return times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return 0.0


def flow_run(config: str, overrides: list[str]) -> tuple[float, list[float], list[float], float]:
    """Total wall time, the end time of each round (MLflow timestamp of its logged metrics),
    each round's orchestration time on the critical path (see `critical_path_gaps`), and
    the CPU seconds the API server used during the run."""
    from mlflow.tracking import MlflowClient

    from flows.training import train_flow

    cpu0 = api_server_cpu_s()
    t0 = time.time()
    state = train_flow(config, overrides, return_state=True)
    total = time.time() - t0
    server_cpu = api_server_cpu_s() - cpu0
    result = state.result()
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "round_time_s")
    ends = [m.timestamp / 1000.0 for m in sorted(history, key=lambda m: m.step)]
    from flows.servers import recorded_task_runs

    runs = recorded_task_runs(state.state_details.flow_run_id)
    return total, ends, critical_path_gaps(runs, ends), server_cpu


def critical_path_gaps(runs: list, ends: list[float]) -> list[float]:
    """Per round: its wall time (start of its `schedule-r<k>` task run to the start of the
    next round's, or to the round's MLflow log for the last) minus the time that some task
    run of the flow was running. What is left is orchestration on the critical path:
    creating task runs, passing results, the round's MLflow logging. It does not see a task
    run slowed down by the Prefect and MLflow threads or the API server sharing the CPU;
    the end-to-end comparison does."""
    spans = sorted(
        (r.start_time.timestamp(), r.end_time.timestamp())
        for r in runs
        if r.start_time is not None and r.end_time is not None
    )
    starts = sorted(
        r.start_time.timestamp()
        for r in runs
        if r.name.startswith("schedule-r") and r.start_time is not None
    )
    gaps = []
    for k, lo in enumerate(starts):
        hi = starts[k + 1] if k + 1 < len(starts) else ends[k]
        covered, reach = 0.0, lo
        for s, e in spans:
            s, e = max(s, reach), min(e, hi)
            if e > s:
                covered += e - s
                reach = e
        gaps.append(hi - lo - covered)
    return gaps


def _start_prefect() -> None:
    """Start the ephemeral API once, before the timed runs: every flow run of this process
    then uses it, as the repeats of a long-lived worker would. Its one-off cost (a fresh
    database's migrations included) is reported on its own."""
    from prefect import flow

    flow(name="astor-orch-bench-warmup")(lambda: None)()


def round_times(ends: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=4)
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
    t0 = time.time()
    _start_prefect()
    api_start = time.time() - t0
    print(f"Prefect's ephemeral API on a fresh home (database created): {api_start:.1f} s")
    totals: dict[str, list[float]] = {"direct": [], "flow": []}
    rounds_of: dict[str, list[list[float]]] = {"direct": [], "flow": []}
    gaps: list[float] = []
    server_cpus: list[float] = []
    try:
        for rep in range(args.repeats):
            for side in ("direct", "flow") if rep % 2 == 0 else ("flow", "direct"):
                over = args.overrides + [
                    f"train.run_dir={work}/{side}-{rep}",
                    "train.experiment=astor-orch-bench",
                ]
                if side == "direct":
                    total, ends = direct_run(args.config, over)
                else:
                    total, ends, round_gaps, server_cpu = flow_run(args.config, over)
                    gaps += round_gaps[1:]
                    server_cpus.append(server_cpu)
                totals[side].append(total)
                rounds_of[side].append(round_times(ends))
                print(
                    f"repeat {rep} {side}: total {total:.1f} s, rounds 2..{len(ends)}: "
                    + ", ".join(f"{t:.2f}" for t in round_times(ends))
                    + (
                        f"; critical-path gaps {', '.join(f'{g:.3f}' for g in round_gaps[1:])}"
                        if side == "flow"
                        else ""
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rounds = cfg.train.rounds
    # round k of repeat r does the same compute on both sides (same seed, same config)
    paired = [
        (f - d) / d
        for d_rep, f_rep in zip(rounds_of["direct"], rounds_of["flow"], strict=True)
        for d, f in zip(d_rep, f_rep, strict=True)
    ]
    d_round = statistics.mean(t for rep in rounds_of["direct"] for t in rep)
    f_round = statistics.mean(t for rep in rounds_of["flow"] for t in rep)
    d_total = statistics.median(totals["direct"])
    f_total = statistics.median(totals["flow"])
    d_fixed = d_total - d_round * rounds
    f_fixed = f_total - f_round * rounds
    per_round = statistics.median(paired)
    quartiles = statistics.quantiles(paired, n=4)
    gap = statistics.median(gaps)
    server_round = statistics.median(server_cpus) / rounds
    cores = os.cpu_count() or 1
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
        f"Per-round orchestration overhead, end to end: **{per_round:+.1%}** of a round's "
        f"wall time (median over the {len(paired)} pairs of the same round on both sides; "
        f"quartiles {quartiles[0]:+.1%} / {quartiles[2]:+.1%}; difference of the means "
        f"{(f_round - d_round) * 1000:+.0f} ms per round). Orchestration on the critical path "
        f"(Prefect's task-run timeline: a round's wall time minus the time some task run was "
        f"running): **{gap * 1000:.0f} ms per round, {gap / f_round:.1%}** of the flow's mean "
        f"round (median over {len(gaps)} rounds). The temporary API server used "
        f"{server_round:.2f} CPU-s per round (its whole run over the rounds, start-up excluded: "
        f"at most {server_round / (cores * f_round):.1%} of the {cores} cores' capacity in a "
        f"round, taken from the compute or from idle cores). Target: under 3%. "
        f"Fixed cost of the orchestration per run: {fixed_extra:+.1f} s (MLflow run, params, pool "
        f"and policy artefacts, the flow's pool validation cached), {fixed_extra / rounds:+.1f} s per "
        f"round over the demo's {rounds} rounds; whole run {overall:+.1%} (medians over "
        f"{args.repeats} repeats; per-repeat figures in the command's output). Once per "
        f"process: Prefect's ephemeral API start on a fresh home, {api_start:.1f} s.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_doc:
        from benchmarks._perf_doc import machine, write_section

        write_section("Orchestration overhead", f"Machine: {machine()}.\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
