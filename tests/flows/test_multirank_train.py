"""`accelerate launch` of `astor train` with 2 CPU ranks over gloo, under DDP and under FSDP2:
one Prefect flow run, one MLflow run, and both ranks trained (astor_core.run.ranks); under
FSDP2 the follower also generated its share of the evaluation and joined the export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astor_core import TASKS
from tests.flows.conftest import mini_params

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 2

# Read in a separate process: Prefect's settings (PREFECT_HOME) are fixed when it is imported,
# and the test session's own PREFECT_HOME is another one.
READ_FLOW_RUNS = """
import json
from prefect import get_client
with get_client(sync_client=True) as client:
    print(json.dumps([[r.flow_id.hex, r.state_type.value] for r in client.read_flow_runs()]))
    print(json.dumps({f.id.hex: f.name for f in client.read_flows()}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "prefect-home" / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def _digest(model_dir: Path) -> str:
    from transformers import AutoModelForCausalLM

    from astor_core.run.ranks import weights_digest

    return weights_digest(AutoModelForCausalLM.from_pretrained(model_dir))


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["cpu_2proc.yaml", "cpu_2proc_fsdp.yaml"])
def test_two_rank_launch_one_flow_run_one_mlflow_run(
    mini_assets: Path, tmp_path: Path, launch: str
) -> None:
    params = mini_params(mini_assets)
    params["train"]["run_dir"] = str(tmp_path / "run")
    params["train"]["eval_every"] = ROUNDS
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(REPO / "configs" / "accelerate" / launch)]
    cmd += ["--num_processes", "2", "-m", "flows.cli", "train", "--config", str(config)]
    # the micro model's rewards are all 0 (no GRPO signal, zero gradients): AdamW's weight
    # decay still moves the weights at every optimiser step, so equal final weights on both
    # ranks, unlike the initial ones, show that both ranks stepped in lockstep
    cmd += ["--set", f"train.rounds={ROUNDS}", "--set", "trainer.weight_decay=0.1"]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420, check=False
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    # exactly one Prefect flow run (the training flow, completed) in the run's Prefect home
    read = subprocess.run(
        [sys.executable, "-c", READ_FLOW_RUNS],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    runs_line, flows_line = read.stdout.strip().splitlines()[-2:]
    names = json.loads(flows_line)
    assert [(names[f], state) for f, state in json.loads(runs_line)] == [
        ("astor-train", "COMPLETED")
    ]

    # exactly one MLflow run, with every round's metrics
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    (run,) = runs
    assert run.info.status == "FINISHED"
    for task in TASKS:
        history = client.get_metric_history(run.info.run_id, f"utility/{task}")
        assert sorted(m.step for m in history) == list(range(ROUNDS)), task
    # rank 0 trained on the whole round: both ranks' shards, gathered
    prompts, group = (
        params["scheduler"]["prompts_per_round"],
        params["scheduler"]["samples_per_prompt"],
    )
    per_round = [0] * ROUNDS
    for task in TASKS:
        for m in client.get_metric_history(run.info.run_id, f"rollouts/{task}"):
            per_round[m.step] += int(m.value)
    assert per_round == [prompts * group] * ROUNDS

    # both ranks trained: rank 1 sampled its half of every round, the final policy differs
    # from the initial model, rank 1 saved its own RNG state. DDP: rank 1's final weights are
    # rank 0's exported policy. FSDP2 (rank 1 holds shards): it generated its half of the
    # held-out prompts of the one evaluation and joined the export's gather.
    match = re.search(
        r"rank 1: followed (\d+) rounds, sampled (\d+) rollouts, "
        r"evaluated (\d+) prompts, joined (\d+) exports, weights (\w+)",
        log,
    )
    assert match, log[-6000:]
    assert int(match.group(1)) == ROUNDS
    assert int(match.group(2)) == ROUNDS * (prompts // 2) * group
    final = _digest(tmp_path / "run" / "policy")
    assert final != _digest(mini_assets / "tiny")
    if launch == "cpu_2proc.yaml":
        assert (int(match.group(3)), int(match.group(4))) == (0, 0)
        assert match.group(5) == final
    else:
        # rank 1's share (the smaller half) of each task's held-out items, some tasks may
        # have fewer than eval_items_per_task
        per_task = params["train"]["eval_items_per_task"]
        assert 0 < int(match.group(3)) <= len(TASKS) * (per_task // 2)
        assert int(match.group(4)) == 1
    last = tmp_path / "run" / "checkpoints" / f"round-{ROUNDS - 1:06d}"
    assert {"random_states_0.pkl", "random_states_1.pkl", "COMPLETE"} <= {
        p.name for p in last.iterdir()
    }
