"""`dvc repro` of the whole pipeline (pools -> validate -> model -> SFT -> train -> evaluate)
in a throw-away git+DVC repo, then `dvc exp run -S train.scheduler=uniform` and
`dvc metrics diff` (integration, slow: a few minutes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import mini_params

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _params(repo: Path) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mini = mini_params(repo)
    params["data"].update(items_per_task=40, real_sources=[])
    params["data"]["validation"]["self_check_per_task"] = 2
    params["tiny"] = mini["tiny"]
    params["sft"] = {**params.get("sft", {}), "max_steps": 4, "batch_size": 8}
    params["rollout"] = mini["rollout"]
    params["trainer"] = mini["trainer"]
    params["scheduler"] = mini["scheduler"]
    params["train"] = {
        **mini["train"],
        "scheduler": "astor",
        "rounds": 2,
        "eval_every": 2,
        "run_dir": "runs/astor",
    }
    return params


def test_dvc_repro_whole_pipeline_then_experiment(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("astor_core", "flows"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data" / "raw", repo / "data" / "raw")
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text(yaml.safe_dump(_params(repo), sort_keys=False))
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(repo),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    dvc = [str(Path(bindir) / "dvc")]
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "config", "user.email", "ci@example.invalid"], repo, env)
    _run(["git", "config", "user.name", "ci"], repo, env)
    _run(dvc + ["init", "-q"], repo, env)

    out = _run(dvc + ["repro"], repo, env)
    for stage in ("build_pools", "validate_pools", "init_model", "sft", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out, stage
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(metrics["tasks"]) == {
        "code_reasoning",
        "code_generation",
        "unit_test_generation",
        "commit_message",
    }
    assert (repo / "runs" / "astor" / "rounds.csv").is_file()

    out = _run(dvc + ["repro"], repo, env)
    assert "Running stage" not in out

    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    out = _run(dvc + ["exp", "run", "-S", "train.scheduler=uniform"], repo, env)
    assert "Running stage 'train'" in out and "Running stage 'build_pools'" not in out
    diff = _run(dvc + ["metrics", "diff", "--all"], repo, env)
    assert "average_mean_reward" in diff
    shown = _run(dvc + ["exp", "show", "--csv"], repo, env)
    assert "uniform" in shown
