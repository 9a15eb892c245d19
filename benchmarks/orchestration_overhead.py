"""Orchestration overhead: the training flow vs the same stage functions called directly.

Both sides run the demo's training (params.yaml: same rounds, eval rounds, seed, pools and SFT
model) from a fresh run folder, so they do the same compute, each in its own process:

- direct: the flow's body as a plain loop of the same ``astor_core.run`` calls
  (validate pools, open the run, per round schedule -> rollout -> rewards -> update ->
  utility -> [eval] -> checkpoint, then the plots and the eval table); no Prefect, no MLflow;
- flow: ``flows.training.train_flow`` (Prefect task runs for every stage, MLflow logging of
  every round, the artefacts, the ephemeral Prefect API server it starts).

The two processes take turns, one round at a time (benchmarks/_interleave.py): at the end of
each round a side freezes itself and every process it started (SIGSTOP: the flow's API
server, the sandbox workers) and the other side runs its round. So the two rounds of a pair
run seconds apart instead of a run apart (on this VM a whole run is 10-30% faster or slower
than the one a minute later), and work the flow leaves in the background (the API server
persisting events, MLflow's asynchronous write) is done in the flow's next turn, competing
with the flow's next round as in a normal run, never charged to the direct side. The order
within a pair alternates (direct first in even rounds, flow first in odd ones) and so does
the order the sides start in across repeats. A round ends after its checkpoint (direct) or
after its MLflow logging (flow). Round 1 is left out on both sides (it pays for lazy
initialisation). Two per-round figures are reported against the 3% target:

- end to end: round k does the same compute on both sides (same seed and config), so each
  pair gives one relative difference; the median over all pairs is reported;
- critical path: from Prefect's own task-run timeline, the part of each flow round during
  which no task run was running (creating task runs, passing results, MLflow logging).

The fixed start-up and finish cost (Prefect's ephemeral API start, MLflow run creation, the
artefact uploads) is reported separately, per run and spread over the demo's rounds.

    .venv/bin/python benchmarks/orchestration_overhead.py [--repeats 4] [--config params.yaml]
    .venv/bin/python benchmarks/orchestration_overhead.py --aa [--repeats 4]

Writes the figures to docs/PERFORMANCE.md ("Orchestration overhead"). With --aa both sides
are the flow (each with its own Prefect and MLflow stores): every difference is then noise,
and the section "Orchestration overhead: A/A noise floor" gets the resolution the end-to-end
figure is read with.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._interleave import Interleaver, RoundBarrier, overlap  # noqa: E402
from flows.cli._common import quiet_env  # noqa: E402

# the environment `astor demo` runs with (Prefect's INFO logging included: the task runs' logs
# go to the API server as they do in the demo)
quiet_env(startup_timeout_s=180)

SIDES = ("direct", "flow")


def direct_run(config: str, overrides: list[str], barrier: RoundBarrier) -> None:
    """The flow's body as a plain loop of stage functions; `barrier()` after each round."""
    from astor_core.config import load_config
    from astor_core.data.pools import read_pools
    from astor_core.data.validation import validate_pools_dir
    from astor_core.run import report, stages, store
    from astor_core.run.context import open_run

    cfg = load_config(config, overrides)
    pools = read_pools(cfg.data.pools_dir)
    validate_pools_dir(cfg.data.pools_dir, cfg.data.validation, contents=pools.files)
    ctx = open_run(cfg, pools)
    while ctx.round < cfg.train.rounds:
        started = stages.now()
        plan = stages.schedule_round(ctx)
        batch = stages.rollout(ctx, plan)
        scored = [s for c in stages.reward_chunks(ctx, batch) for s in stages.score_chunk(c)]
        update = stages.train_round(ctx, batch, scored)
        stats = stages.update_scheduler_and_kl(ctx, batch, scored, update)
        if stages.eval_due(ctx):
            stats = stats.with_eval(stages.evaluate(ctx))
        stats = stats.with_metrics(round_time_s=stages.now() - started)
        store.save_round(ctx, stats)
        barrier()
    report.plot_history(store.load_history(ctx.run_dir, ctx.round), ctx.tasks)
    report.write_eval_table(ctx, report.final_eval(ctx))


def flow_run(config: str, overrides: list[str], barrier: RoundBarrier) -> dict:
    """`train_flow`, with `barrier()` after each round's MLflow logging; returns the
    orchestration time on the critical path of each round (see `critical_path_gaps`)."""
    from flows import tracking
    from flows.servers import recorded_task_runs
    from flows.training import train_flow

    log_round = tracking.RunTracker.log_round

    def log_round_then_barrier(self, step, metrics):  # type: ignore[no-untyped-def]
        log_round(self, step, metrics)
        barrier()

    tracking.RunTracker.log_round = log_round_then_barrier
    state = train_flow(config, overrides, return_state=True)
    state.result()
    runs = recorded_task_runs(state.state_details.flow_run_id)
    return {"gaps": critical_path_gaps(runs, barrier.ends, barrier.pauses)}


def critical_path_gaps(
    runs: list, ends: list[float], pauses: list[tuple[float, float]]
) -> list[float]:
    """Per round: its wall time (start of its `schedule-r<k>` task run to the start of the
    next round's, or to the round's end for the last), less the time it was frozen
    (`pauses`) and the time that some task run of the flow was running. What is left is
    orchestration on the critical path: creating task runs, passing results, the round's
    MLflow logging. It does not see a task run slowed down by the Prefect and MLflow threads
    or the API server sharing the CPU; the end-to-end comparison does."""
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
        gaps.append(hi - lo - covered - overlap(lo, hi, pauses))
    return gaps


STAGES = (
    "stages.schedule_round", "stages.rollout", "stages.score_chunk", "stages.train_round",
    "stages.update_scheduler_and_kl", "stages.evaluate", "store.save_round",
)  # fmt: skip
"""The stage functions both sides call (modules of `astor_core.run`), timed per round."""


def time_stages(per_round: list[dict[str, float]]) -> None:
    """Wrap each stage function of `astor_core.run` with a timer adding its wall time
    to `per_round[-1]` (both sides look the functions up on the module at call time)."""
    import functools
    import importlib

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                bucket = per_round[-1]
                bucket[name] = bucket.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    for dotted in STAGES:
        module_name, name = dotted.split(".")
        module = importlib.import_module(f"astor_core.run.{module_name}")
        setattr(module, name, timed(name, getattr(module, name)))


def main_thread_switches() -> tuple[int, int]:
    """Context switches of this process's main thread so far: (voluntary, involuntary).
    Voluntary ones are waits (e.g. for the GIL), involuntary ones preemptions by another
    runnable thread or process (e.g. Prefect's threads or its API server)."""
    status = Path(f"/proc/self/task/{os.getpid()}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def side_main(side: str, config: str, overrides: list[str], out: str) -> None:
    """One measured process: run `side`, freezing at each round end; write its figures."""
    stage_times: list[dict[str, float]] = [{}]
    time_stages(stage_times)
    server_cpu: list[float] = []
    own_cpu: list[float] = []
    switches: list[tuple[int, int]] = []
    server: list[psutil.Process] = []  # the flow's temporary API server, once started

    def round_marks() -> None:
        times = os.times()
        own_cpu.append(times.user + times.system)
        server_cpu.append(sum(server[0].cpu_times()[:2]) if server else 0.0)  # user + system
        stage_times.append({})
        switches.append(main_thread_switches())

    barrier = RoundBarrier(on_round_end=round_marks)
    t0 = time.time()
    extra: dict = {}
    if side == "direct":
        direct_run(config, overrides, barrier)
    else:
        from flows.servers import start_ephemeral_api

        pid = start_ephemeral_api()  # as `astor train` / `astor demo` do (None: a real server)
        if pid is not None:
            server.append(psutil.Process(pid))
        extra = flow_run(config, overrides, barrier)
    total = time.time() - t0 - sum(b - a for a, b in barrier.pauses)
    result = {
        "rounds": barrier.rounds,
        "total": total,
        "server_cpu": server_cpu[-1] - server_cpu[0],
        "own_cpu": [b - a for a, b in itertools.pairwise(own_cpu)],
        "stages": stage_times[1:-1],
        "switches": [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(switches)],
        **extra,
    }
    Path(out).write_text(json.dumps(result))


def _side_order(k: int) -> tuple[int, int]:
    """Round k's turn order: direct first in even rounds, flow first in odd ones."""
    return (0, 1) if k % 2 == 0 else (1, 0)


def run_repeat(
    args: argparse.Namespace, work: Path, rep: int, sides: tuple[str, str] = SIDES
) -> dict[str, dict]:
    """One repeat: both sides in their own processes, their rounds in turns. Results are
    keyed by side, or by 'flow-a' / 'flow-b' when both sides are the flow (the A/A run).
    Each side keeps its own Prefect home and MLflow store across the repeats: two flows
    sharing one would share two SQLite files (one side's frozen writer holding a lock the
    other waits on)."""
    labels = sides if sides[0] != sides[1] else (f"{sides[0]}-a", f"{sides[1]}-b")
    argvs, logs, outs = [], [], []
    for side, label in zip(sides, labels, strict=True):
        out = work / f"{label}-{rep}.json"
        argv = [sys.executable, __file__, "--side", side, "--side-out", str(out)]
        argv += ["--config", args.config, "--state-dir", str(work / f"state-{label}")]
        for o in [*args.overrides, f"train.run_dir={work}/{label}-{rep}"]:
            argv += ["--set", o]
        argvs.append(argv + ["--set", "train.experiment=astor-orch-bench"])
        logs.append(work / f"{label}-{rep}.log")
        outs.append(out)
    # the side that starts first alternates too (it starts while the other is not running)
    start_order = [0, 1] if rep % 2 == 0 else [1, 0]
    inter = Interleaver([argvs[i] for i in start_order], [logs[i] for i in start_order])
    try:
        inter.run(lambda k: [start_order.index(i) for i in _side_order(k)])
    finally:
        inter.kill()
    return {label: json.loads(out.read_text()) for label, out in zip(labels, outs, strict=True)}


def paired(results: list[dict[str, dict]], a: str, b: str) -> list[float]:
    """(b - a) / a for every round k of every repeat: the same compute on both sides."""
    return [
        (tb - ta) / ta
        for res in results
        for ta, tb in zip(res[a]["rounds"], res[b]["rounds"], strict=True)
    ]


def stage_table(results: list[dict[str, dict]]) -> list[str]:
    """Mean wall time per round of each stage function on both sides, and of the rest of
    the round (orchestration, and the direct loop's own few lines)."""

    def means(side: str) -> dict[str, float]:
        rounds = [r for res in results for r in res[side]["stages"]]
        out = {
            name: statistics.mean(r.get(name, 0.0) for r in rounds)
            for name in (s.split(".")[1] for s in STAGES)
        }
        total = statistics.mean(t for res in results for t in res[side]["rounds"])
        out["rest of the round"] = total - sum(out.values())
        return out

    d, f = means("direct"), means("flow")

    def switches(side: str, i: int) -> float:
        return statistics.mean(s[i] for res in results for s in res[side]["switches"])

    lines = [
        "Where a round's time goes (mean per round, rounds 2..N; the stage functions timed "
        "inside both sides; in the flow a stage's time includes only the function, not its "
        "task run):",
        "",
        "| stage function | direct (ms) | flow (ms) | flow - direct (ms) |",
        "|---|---|---|---|",
    ]
    for name in d:
        lines.append(
            f"| {name} | {d[name] * 1000:.0f} | {f[name] * 1000:.0f} | "
            f"{(f[name] - d[name]) * 1000:+.0f} |"
        )
    lines += [
        "",
        f"Context switches of the main thread per round (it runs every stage): voluntary "
        f"(waits, e.g. for the GIL) {switches('direct', 0):.0f} direct, {switches('flow', 0):.0f} "
        f"flow; involuntary (preempted by another thread or process) "
        f"{switches('direct', 1):.0f} direct, {switches('flow', 1):.0f} flow.",
    ]
    return [*lines, ""]


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
    parser.add_argument(
        "--aa",
        action="store_true",
        help="A/A run: the flow against itself, same interleaving; the benchmark's noise floor",
    )
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--side-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.state_dir:  # this side's own stores, set before Prefect and MLflow load
            Path(args.state_dir).mkdir(parents=True, exist_ok=True)
            os.environ["PREFECT_HOME"] = str(Path(args.state_dir) / "prefect")
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(args.state_dir) / 'mlflow.db'}"
        side_main(args.side, args.config, args.overrides, args.side_out)
        return
    from astor_core.config import load_config

    cfg = load_config(args.config, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="astor-orch-"))
    # each side gets fresh Prefect and MLflow stores under `work` (run_repeat), so the
    # figures do not depend on how many runs the user's stores already hold
    load_before = os.getloadavg()
    sides: tuple[str, str] = ("flow", "flow") if args.aa else SIDES
    results: list[dict[str, dict]] = []
    try:
        for rep in range(args.repeats):
            res = run_repeat(args, work, rep, sides)
            results.append(res)
            for label, r in res.items():
                print(
                    f"repeat {rep} {label}: total {r['total']:.1f} s, rounds 2..: "
                    + ", ".join(f"{t:.2f}" for t in r["rounds"])
                    + "; process CPU-s per round: "
                    + ", ".join(f"{t:.2f}" for t in r["own_cpu"])
                    + (
                        f"; critical-path gaps {', '.join(f'{g:.3f}' for g in r['gaps'][1:])}"
                        if "gaps" in r
                        else ""
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.aa:
        report_aa(args, results, load_before)
    else:
        report(args, cfg, results, load_before)


def load_sentence(before: tuple[float, float, float]) -> str:
    """The machine's load average before the run (`before`) and now, for the doc."""
    after = os.getloadavg()
    return (
        f"Load average (1/5/15 min) before {before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, "
        f"after {after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f}."
    )


def report_aa(args: argparse.Namespace, results: list[dict[str, dict]], load_before) -> None:  # type: ignore[no-untyped-def]
    """The A/A figures: the flow against itself, so every difference is the benchmark's
    noise (the VM, the interleaving), the resolution the overhead figure is read with."""
    pairs = paired(results, "flow-a", "flow-b")
    q = statistics.quantiles(pairs, n=4)
    # the median of n paired differences is known to about 1.25 * sd / sqrt(n)
    resolution = 1.25 * statistics.stdev(pairs) / len(pairs) ** 0.5
    lines = [
        f"Command: `.venv/bin/python benchmarks/orchestration_overhead.py --aa --repeats "
        f"{args.repeats}" + "".join(f" --set {o}" for o in args.overrides) + "` (the flow "
        "against itself, each with its own Prefect and MLflow stores, with the overhead run's "
        "interleaving). " + load_sentence(load_before),
        "",
        f"Paired round differences (flow b - flow a) / flow a over {len(pairs)} pairs: median "
        f"**{statistics.median(pairs):+.1%}**, quartiles {q[0]:+.1%} / {q[2]:+.1%}, mean "
        f"{statistics.mean(pairs):+.1%}, standard deviation {statistics.stdev(pairs):.1%}. "
        f"Both sides are the same program, so these are noise: the median of {len(pairs)} "
        f"pairs is known to about +-{resolution:.1%} (1.25 sd / sqrt(n); the pairs of one "
        f"repeat share their two processes, so this is a lower bound), the resolution of "
        f'the end-to-end figure in "Orchestration overhead" for as many pairs.',
    ]
    print("\n".join(lines))
    if not args.no_doc:
        from benchmarks._perf_doc import machine, write_section

        write_section(
            "Orchestration overhead: A/A noise floor",
            f"Machine: {machine()}.\n\n" + "\n".join(lines),
        )


def report(args: argparse.Namespace, cfg, results: list[dict[str, dict]], load_before) -> None:  # type: ignore[no-untyped-def]
    rounds = cfg.train.rounds
    # round k of a repeat does the same compute on both sides (same seed, same config)
    pairs = paired(results, "direct", "flow")
    d_round = statistics.mean(t for res in results for t in res["direct"]["rounds"])
    f_round = statistics.mean(t for res in results for t in res["flow"]["rounds"])
    d_total = statistics.median(res["direct"]["total"] for res in results)
    f_total = statistics.median(res["flow"]["total"] for res in results)
    d_fixed = d_total - d_round * rounds
    f_fixed = f_total - f_round * rounds
    per_round = statistics.median(pairs)
    quartiles = statistics.quantiles(pairs, n=4)
    gaps = [g for res in results for g in res["flow"]["gaps"][1:]]
    gap = statistics.median(gaps)
    server_round = statistics.median(res["flow"]["server_cpu"] for res in results) / (rounds - 1)
    d_cpu = statistics.mean(t for res in results for t in res["direct"]["own_cpu"])
    f_cpu = statistics.mean(t for res in results for t in res["flow"]["own_cpu"])
    cores = os.cpu_count() or 1
    fixed_extra = f_fixed - d_fixed
    overall = (f_total - d_total) / d_total
    lines = [
        f"Command: `.venv/bin/python benchmarks/orchestration_overhead.py --repeats {args.repeats}"
        + "".join(f" --set {o}" for o in args.overrides)
        + f"` (config `{args.config}`: {rounds} rounds, eval every {cfg.train.eval_every}, "
        f"B = {cfg.scheduler.prompts_per_round} prompts x G = {cfg.scheduler.samples_per_prompt}, "
        f"reward chunks of {cfg.train.reward_chunk_size}; the two sides' rounds in turns, each "
        f"side frozen with the processes it started while the other runs). "
        + load_sentence(load_before),
        "",
        "| side | mean round wall time, rounds 2..N (s) | fixed start-up + finish per run (s) | whole run (s) |",
        "|---|---|---|---|",
        f"| stage functions called directly | {d_round:.2f} | {d_fixed:.1f} | {d_total:.1f} |",
        f"| Prefect flow + MLflow | {f_round:.2f} | {f_fixed:.1f} | {f_total:.1f} |",
        "",
        f"Per-round orchestration overhead, end to end: **{per_round:+.1%}** of a round's "
        f"wall time (median over the {len(pairs)} pairs of the same round on both sides; "
        f"quartiles {quartiles[0]:+.1%} / {quartiles[2]:+.1%}; difference of the means "
        f"{(f_round - d_round) * 1000:+.0f} ms per round, {(f_round - d_round) / d_round:+.1%}). "
        f"Orchestration on the critical path "
        f"(Prefect's task-run timeline: a round's wall time minus the time some task run was "
        f"running): **{gap * 1000:.0f} ms per round, {gap / f_round:.1%}** of the flow's mean "
        f"round (median over {len(gaps)} rounds). The temporary API server used "
        f"{server_round:.2f} CPU-s per round (rounds 2..N: "
        f"{server_round / (cores * f_round):.1%} of the {cores} cores' capacity in a "
        f"round, taken from the compute or from idle cores); the flow's own process "
        f"{f_cpu:.2f} CPU-s per round against the direct side's {d_cpu:.2f} "
        f"({(f_cpu - d_cpu) / d_cpu:+.1%}). Target: under 3%. "
        f"Fixed cost of the orchestration per run: {fixed_extra:+.1f} s (Prefect's API start, "
        f"MLflow run, params, pool and policy artefacts; the flow's pool validation is cached, "
        f"the direct side validates every run), {fixed_extra / rounds:+.1f} s per "
        f"round over the demo's {rounds} rounds; whole run {overall:+.1%} (medians over "
        f"{args.repeats} repeats; per-repeat figures in the command's output).",
        "",
        *stage_table(results),
    ]
    print("\n".join(lines))
    if not args.no_doc:
        from benchmarks._perf_doc import machine, write_section

        write_section("Orchestration overhead", f"Machine: {machine()}.\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
