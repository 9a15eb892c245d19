"""Every astor_core module imports on its own, in a fresh interpreter, without Prefect or
MLflow (astor_core is the library; flows/ is the wiring)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import astor_core

REPO = Path(__file__).resolve().parents[1]


def test_every_astor_core_module_imports_without_prefect_or_mlflow() -> None:
    code = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import astor_core
        names = [m.name for m in pkgutil.walk_packages(astor_core.__path__, "astor_core.")]
        for name in names:
            importlib.import_module(name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "mlflow"))
        print(json.dumps({"imported": names, "bad": bad}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["bad"] == []
    on_disk = {
        m.name for m in pkgutil.walk_packages(astor_core.__path__, "astor_core.")
    }  # this process's view of the same tree
    assert set(result["imported"]) == on_disk
    assert {
        "astor_core.method.scheduler",
        "astor_core.run.stages",
        "astor_core.data.pools",
    } <= on_disk
