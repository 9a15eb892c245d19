"""Beyond one process: the accelerate configs and the Dask reward fan-out (the 2-rank GRPO
update: tests/policy/test_multirank.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCEL_DIR = ROOT / "configs" / "accelerate"
HUMANEVAL = ROOT / "data" / "raw" / "humaneval" / "HumanEval.jsonl.gz"


@pytest.mark.parametrize(
    ("name", "kind", "processes"),
    [
        ("cpu_2proc.yaml", "MULTI_GPU", 2),
        ("cpu_2proc_fsdp.yaml", "FSDP", 2),
        ("single_gpu.yaml", "NO", 1),
        ("fsdp.yaml", "FSDP", 8),
        ("fsdp_multinode.yaml", "FSDP", 16),
        ("deepspeed_zero2.yaml", "DEEPSPEED", 8),
        ("deepspeed_zero3.yaml", "DEEPSPEED", 8),
    ],
)
def test_accelerate_config_loads(name: str, kind: str, processes: int) -> None:
    """accelerate's own loader accepts each config (it rejects unknown keys) with the intended layout."""
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(ACCEL_DIR / name))
    assert cfg.distributed_type.value == kind
    assert cfg.num_processes == processes
    if kind == "DEEPSPEED":
        stage = int(name.removesuffix(".yaml")[-1])
        assert cfg.deepspeed_config["zero_stage"] == stage
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2


def test_every_accelerate_config_is_tested() -> None:
    listed = {"cpu_2proc.yaml", "cpu_2proc_fsdp.yaml", "single_gpu.yaml", "fsdp.yaml"}
    listed |= {"fsdp_multinode.yaml"}
    listed |= {"deepspeed_zero2.yaml", "deepspeed_zero3.yaml"}
    assert {p.name for p in ACCEL_DIR.glob("*.yaml")} == listed


def test_make_task_runner_rejects_bad_input() -> None:
    from flows.runners import make_task_runner

    with pytest.raises(ValueError, match="'ray' is not one of"):
        make_task_runner("ray", 2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_task_runner("thread", 0)


def test_dask_runner_shapes_local_cluster() -> None:
    from flows.runners import DaskRunnerConfig, make_task_runner

    runner = make_task_runner("dask", 3, dask=DaskRunnerConfig(threads_per_worker=2))
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 2
    assert runner.cluster_kwargs["processes"] is True
    remote = make_task_runner("dask", 3, "tcp://scheduler:8786")
    assert remote.address == "tcp://scheduler:8786"


def _humaneval_batch(n: int) -> tuple[list[dict], list[str]]:
    """n HumanEval code-generation records; completions pass, fail, raise, break syntax, time out."""
    from astor_core.data.adapters import load_humaneval

    records = [r for r in load_humaneval(HUMANEVAL) if r["task"] == "code_generation"][:n]
    solutions = {}
    with gzip.open(HUMANEVAL, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            solutions[row["task_id"]] = row["canonical_solution"]
    wrong = [
        "    return None\n",
        "    raise ValueError('no')\n",
        "    return (\n",
        "    while True:\n        pass\n",
    ]
    completions = []
    for i, rec in enumerate(records):
        sid = json.loads(rec["payload"])["source_id"]
        completions.append(solutions[sid] if i % 2 == 0 else wrong[(i // 2) % len(wrong)])
    return records, completions


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.mark.integration
def test_dask_fanout_matches_thread_runner(prefect_api) -> None:
    """The training flow's reward fan-out gives the same rewards on 2 Dask worker processes as on threads."""
    from astor_core.run.stages import RewardChunk
    from flows.runners import make_task_runner
    from flows.training import reward_fanout

    records, completions = _humaneval_batch(10)
    n = len(records)
    chunks = [
        RewardChunk(
            tasks=["code_generation"] * len(records[i : i + 3]),
            records=records[i : i + 3],
            completions=completions[i : i + 3],
            indices=list(range(i, min(i + 3, n))),
            rewards_config={},
            sandbox_config={},
        )
        for i in range(0, n, 3)
    ]
    local = reward_fanout.with_options(task_runner=make_task_runner("thread", 2))(chunks, 0)
    dask = reward_fanout.with_options(task_runner=make_task_runner("dask", 2))(chunks, 0)
    assert len(local) == len(dask) == len(records)
    assert dask == local
    reasons = {r["reason"] for r in local}
    assert {"passed", "failed", "syntax", "timeout"} <= reasons, reasons
    assert [r["index"] for r in dask] == list(range(len(records)))
    assert [r["passed"] for r in local][::2] == [True] * 5
