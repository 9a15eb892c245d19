"""Fixtures for flow tests: one Prefect test harness per session, a temporary MLflow SQLite
file, and a miniature run (small pools, a micro model) whose flow takes seconds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

from flows.cli._common import quiet_env

REPO = Path(__file__).resolve().parents[2]

_PREFECT_HOME = tempfile.mkdtemp(prefix="astor-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
# the CLI's own defaults (no analytics, the API server's settings), before Prefect is imported
quiet_env(startup_timeout_s=180, PREFECT_LOGGING_LEVEL="WARNING")


def mini_params(root: Path) -> dict:
    """A complete params file for a run of seconds, every path under root."""
    return {
        "data": {
            "items_per_task": 40,
            "real_sources": [],
            "raw_dir": str(REPO / "data" / "raw"),
            "pools_dir": str(root / "pools"),
            "stats_path": str(root / "pools_stats.json"),
            "validation": {"self_check_per_task": 2, "docs_dir": str(root / "gx_docs")},
        },
        "bootstrap": {"tiny_dir": str(root / "tiny")},
        "tiny": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "tokenizer": {"vocab_size": 400},
        },
        "model": {"name_or_path": str(root / "tiny"), "device": "cpu"},
        "rollout": {"batch_size": 32, "sampling": {"max_new_tokens": 12, "temperature": 1.0}},
        "trainer": {"micro_batch_size": 16, "learning_rate": 1e-3},
        "scheduler": {"prompts_per_round": 8, "samples_per_prompt": 2},
        "sandbox": {"workers": 1},
        "train": {
            "rounds": 3,
            "eval_every": 3,
            "eval_items_per_task": 3,
            "run_dir": str(root / "run"),
            "experiment": "astor-test",
            "reward_chunk_size": 8,
        },
    }


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (temporary database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mini_assets(tmp_path_factory) -> Path:
    """Pools and a micro model built once per session (read-only for the tests)."""
    from astor_core.config import load_config
    from astor_core.demo import ensure_pools, ensure_tiny_model

    root = tmp_path_factory.mktemp("mini-assets")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(mini_params(root)))
    cfg = load_config(params)
    ensure_pools(cfg.data)
    ensure_tiny_model(cfg)
    return root


@pytest.fixture
def mini_run(mini_assets: Path, tmp_path: Path, monkeypatch) -> Path:
    """A params file whose run dir and MLflow store are fresh for this test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = mini_params(mini_assets)
    params["train"]["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
