"""Two levers against the orchestration overhead, measured (docs/PERFORMANCE.md, "Tenth session").

    .venv/bin/python benchmarks/orchestration_levers.py threads [--threads 1,2] [--repeats 2] [--rounds 5]
    .venv/bin/python benchmarks/orchestration_levers.py server-idle [--docket-interval-ms 2000]

- ``threads``: the demo's stage functions in a plain loop (`orchestration_overhead.direct_run`,
  no Prefect, no MLflow), one process per torch intra-op thread count, the counts alternated
  `repeats` times; prints every round's wall time. Would one torch thread, leaving a core to
  the orchestration's background work, cost less than that work?
- ``server-idle``: the CPU the temporary Prefect API server (`flows.servers.start_ephemeral_api`,
  the demo's settings) uses per minute with no flow running: Prefect's defaults, then with
  docket's worker polling at `--docket-interval-ms` (Prefect builds that worker with docket's
  defaults, 250 ms, and has no setting for them: the probe patches them in the server process
  through a `sitecustomize` module on PYTHONPATH, for this measurement only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# docket's defaults patched at interpreter start-up in the server process (probe only)
DOCKET_PATCH = """
from datetime import timedelta
import docket.worker as _w
_init = _w.Worker.__init__
_init.__defaults__ = tuple(
    timedelta(milliseconds={ms}) if d == timedelta(milliseconds=250) else d
    for d in _init.__defaults__
)
"""


def threads_child(threads: int, rounds: int, out: str) -> None:
    """One run of the plain stage loop with `threads` torch threads; the wall times of rounds
    2..N to `out`."""
    import torch

    torch.set_num_threads(threads)
    from benchmarks.orchestration_overhead import direct_run

    ends: list[float] = []
    with tempfile.TemporaryDirectory(prefix="astor-threads-") as work:
        overrides = [f"train.rounds={rounds}", f"train.run_dir={work}/run"]
        direct_run("params.yaml", overrides, lambda: ends.append(time.time()))  # type: ignore[arg-type]
    # rounds 2..N, as in orchestration_overhead (round 1 starts after the run's start-up)
    Path(out).write_text(json.dumps([b - a for a, b in itertools.pairwise(ends)]))


def threads(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.threads.split(",")]
    per_count: dict[int, list[float]] = {c: [] for c in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for c in counts if rep % 2 == 0 else counts[::-1]:
                out = f"{tmp}/{c}-{rep}.json"
                argv = [sys.executable, __file__, "threads-child", str(c), str(args.rounds), out]
                subprocess.run(argv, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
                rounds = json.loads(Path(out).read_text())
                per_count[c] += rounds
                print(f"{c} thread(s), repeat {rep}: rounds (s) {[round(r, 2) for r in rounds]}")
    means = {c: sum(r) / len(r) for c, r in per_count.items()}
    for c, rounds in per_count.items():
        print(
            f"{c} thread(s): rounds 2..N {min(rounds):.1f}-{max(rounds):.1f} s, "
            f"mean {means[c]:.2f} s ({means[c] / means[counts[-1]]:.2f}x the {counts[-1]}-thread mean)"
        )


def idle_cpu_per_minute(warmup_s: float, window_s: float) -> float:
    """Start the temporary API server as the demo does, wait `warmup_s`, then return its CPU
    (user + system) per minute over `window_s`."""
    import psutil

    from flows.servers import start_ephemeral_api

    proc = psutil.Process(start_ephemeral_api())
    time.sleep(warmup_s)
    c0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    time.sleep(window_s)
    return (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0) * 60


def server_idle_child(ms: int, warmup_s: float, window_s: float) -> None:
    from flows.cli._common import quiet_env

    with tempfile.TemporaryDirectory() as home:
        os.environ["PREFECT_HOME"] = home
        if ms:
            Path(home, "sitecustomize.py").write_text(DOCKET_PATCH.format(ms=ms))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [home, os.environ.get("PYTHONPATH")])
            )
        quiet_env(startup_timeout_s=180)
        print(json.dumps(idle_cpu_per_minute(warmup_s, window_s)))


def server_idle(args: argparse.Namespace) -> None:
    for label, ms in (
        ("Prefect's defaults (docket 250 ms)", 0),
        (f"docket {args.docket_interval_ms} ms", args.docket_interval_ms),
    ):
        argv = [
            sys.executable,
            __file__,
            "server-idle-child",
            str(ms),
            str(args.warmup_s),
            str(args.window_s),
        ]
        done = subprocess.run(argv, check=True, cwd=ROOT, capture_output=True, text=True)
        cpu = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"idle temporary API server, {label}: {cpu:.2f} CPU-s per minute")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "threads-child":
        return threads_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    if len(sys.argv) > 1 and sys.argv[1] == "server-idle-child":
        return server_idle_child(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("threads", help="round wall time per torch thread count, no orchestration")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(run=threads)
    p = sub.add_parser(
        "server-idle", help="idle API server CPU, docket's polling as built vs slower"
    )
    p.add_argument("--docket-interval-ms", type=int, default=2000)
    p.add_argument("--warmup-s", type=float, default=15.0)
    p.add_argument("--window-s", type=float, default=40.0)
    p.set_defaults(run=server_idle)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
