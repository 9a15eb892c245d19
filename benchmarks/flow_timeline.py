"""Timeline of one training flow run: every task run's start, duration and the gap before it.

    .venv/bin/python benchmarks/flow_timeline.py [--rounds 6] [--config params.yaml] [-S key=value ...]

Runs `flows.training.train_flow` on the demo config in a temporary run folder and MLflow
store, then reads the flow run's task runs back from the Prefect API. A gap is time the flow
spends between two task runs (orchestration: parameter handling, task-run creation, tag
concurrency leases, MLflow logging); the figures behind docs/PERFORMANCE.md "Orchestration
overhead: where it goes" come from this command.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.cli._common import quiet_env  # noqa: E402

quiet_env(startup_timeout_s=180, PREFECT_LOGGING_LEVEL="WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="astor-timeline-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    from flows.training import train_flow

    overrides = [f"train.run_dir={work}/run", f"train.rounds={args.rounds}", *args.overrides]
    state = train_flow(args.config, overrides, return_state=True)
    from flows.servers import recorded_task_runs

    runs = recorded_task_runs(state.state_details.flow_run_id)
    t0 = runs[0].start_time
    prev_end = None
    print(f"{'task run':36s} {'start s':>8s} {'dur s':>7s} {'gap s':>7s}")
    for run in runs:
        if run.start_time is None or run.end_time is None:
            continue
        gap = (run.start_time - prev_end).total_seconds() if prev_end else 0.0
        start = (run.start_time - t0).total_seconds()
        dur = (run.end_time - run.start_time).total_seconds()
        print(f"{run.name:36s} {start:8.2f} {dur:7.2f} {gap:7.2f}")
        prev_end = max(prev_end, run.end_time) if prev_end else run.end_time


if __name__ == "__main__":
    main()
