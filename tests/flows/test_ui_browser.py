"""The UIs as a user sees them: headless Chromium on the Prefect page of a finished flow run
and on the MLflow comparison of two runs (ASTOR vs uniform), all served on loopback.

Runs scripts/ui_screenshots.py end to end (real `prefect server`, real `mlflow ui`, two
real `astor train` runs on the miniature config) and checks what the browser rendered.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from astor_core import TASKS
from flows import servers
from flows.tracking import PER_TASK_SERIES
from tests.flows.conftest import REPO, mini_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRIPT = REPO / "scripts" / "ui_screenshots.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("ui_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MISSING = _script_module().chromium_missing()


@pytest.mark.skipif(MISSING is not None, reason=f"no headless browser: {MISSING}")
@pytest.mark.timeout(1200)
def test_prefect_and_mlflow_pages_in_chromium(mini_assets: Path, tmp_path: Path) -> None:
    params = mini_params(mini_assets)
    params["train"].update(rounds=2, eval_every=2)
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    out, workdir = tmp_path / "img", tmp_path / "ui"
    argv = [sys.executable, str(SCRIPT), "--config", str(config), "--out", str(out)]
    proc = subprocess.run(
        [*argv, "--workdir", str(workdir)],
        # a user's shell: none of the PREFECT_* settings this test session made for itself
        env=servers.child_env(drop=[k for k in os.environ if k.startswith("PREFECT_")]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    manifest = json.loads((workdir / "pages" / "manifest.json").read_text())
    page = {k: Path(v["text"]).read_text() for k, v in manifest["pages"].items()}

    # Prefect: the ASTOR flow run, finished, with a task run for every stage
    flow_run = manifest["flow_run"]
    assert flow_run["state"] == "COMPLETED"
    assert flow_run["name"] in page["prefect_flow_run"]
    assert "Completed" in page["prefect_flow_run"] and "astor-train" in page["prefect_flow_run"]
    assert "round 1 done" in page["prefect_flow_run"]  # the per-round log line
    for stage in ("validate-pools", "schedule-r1", "rollout", "sandboxed-reward", "train-round"):
        assert stage in page["prefect_task_runs"], stage
    for stage in ("update-scheduler-and-kl", "evaluate", "checkpoint"):
        assert stage in page["prefect_task_runs"], stage

    # MLflow: both runs compared, every per-task series in the comparison table
    names = [r["run_name"] for r in manifest["runs"].values()]
    assert set(manifest["runs"]) == {"astor", "uniform"}
    for name in names:
        assert name in page["mlflow_compare"] and name in page["mlflow_charts"]
    table = set(manifest["mlflow_compare_metrics"])
    wanted = {f"{series}/{task}" for series in PER_TASK_SERIES for task in TASKS}
    assert not wanted - table, sorted(wanted - table)
    for task in TASKS:
        assert f"utility/{task}" in page["mlflow_compare"]  # the rows in the screenshot
        assert f"utility/{task}" in page["mlflow_charts"]  # one chart per task

    # the screenshots are real renderings of a full window
    for key in ("prefect_flow_run", "mlflow_compare", "mlflow_charts"):
        path = Path(manifest["screenshots"][key])
        assert path.parent == out
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width == 1440 and img.height >= 900
            assert len(img.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50  # not blank
