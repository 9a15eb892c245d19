"""User errors end every `astor` command with one line and a non-zero exit, before any flow
starts; `astor --debug` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from astor_core.data.pools import PoolsMissing
from flows.cli import app

REPO = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """`astor ARGS` in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as info:
        app(list(args), prog_name="astor")
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.rounds=abc", "-S override: train.rounds = 'abc': expected a valid integer"),
        ("scheduler.floor=2", "-S override: scheduler.floor = 2: must be in [0, 1]"),
        ("calibration.mode=bogus", "-S override: calibration.mode = 'bogus': must be 'adaptive'"),
    ],
)
def test_a_bad_override_exits_2_with_one_line(capsys, override: str, expected: str) -> None:
    code, err = _run(capsys, "train", "-S", override)
    assert code == 2, err
    assert err.startswith(f"error: {expected}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_every_run_command_checks_the_config_first(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (
        ["demo"],
        ["compare", "--quick"],
        ["serve"],
        ["evaluate"],
        ["bootstrap", "tiny"],
    ):
        code, err = _run(capsys, *command, "-S", "train.rounds=abc")
        assert code == 2, (command, err)
        assert err.startswith("error: -S override: train.rounds"), (command, err)
    assert list(tmp_path.iterdir()) == []  # nothing ran: no pools, models or runs


def test_missing_pools_is_one_line_and_debug_raises(capsys, tmp_path: Path) -> None:
    missing = f"data.pools_dir={tmp_path / 'none'}"
    code, err = _run(capsys, "train", "-S", missing)
    assert code == 2 and err.startswith("error: pool file ") and "astor pools build" in err
    with pytest.raises(PoolsMissing):
        app(["--debug", "train", "-S", missing], prog_name="astor")


def test_the_command_line_prints_one_line_for_a_wrong_type_in_the_params_file(
    tmp_path: Path,
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  eval_every: [3]\n")
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "-c", str(params)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    line = f"error: {params}: train.eval_every = [3]: expected a valid integer"
    assert out.stderr.startswith(line), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # nothing ran
