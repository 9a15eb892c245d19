"""`astor evaluate`: any saved policy on any pools directory, greedy or sampled mean@k."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from astor_core.evaluation import heldout_split
from flows.cli import app
from tests.flows.conftest import mini_params


def _params(mini_assets: Path, tmp_path: Path) -> Path:
    params = mini_params(mini_assets)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_greedy_and_sampled_mean_at_k_on_any_pools_dir(mini_assets: Path, tmp_path: Path) -> None:
    params = _params(mini_assets, tmp_path)
    runner = CliRunner()
    model = str(mini_assets / "tiny")
    pools = f"data.pools_dir={mini_assets / 'pools'}"
    greedy_out = tmp_path / "greedy.json"
    res = runner.invoke(
        app,
        ["evaluate", "-c", str(params), "--model", model, "-S", pools, "--items", "2"]
        + ["--out", str(greedy_out)],
    )
    assert res.exit_code == 0, res.output
    greedy = json.loads(greedy_out.read_text())
    assert greedy["samples"] == 1 and greedy["temperature"] == 0.0
    assert set(greedy["tasks"]) == {
        "code_reasoning",
        "code_generation",
        "unit_test_generation",
        "commit_message",
    }
    for task, row in greedy["tasks"].items():
        assert row["items"] == 2.0 and 0.0 <= row["mean_reward"] <= 1.0
        assert len(greedy["item_rewards"][task]) == 2
    sampled_out = tmp_path / "sampled.json"
    res = runner.invoke(
        app,
        ["evaluate", "-c", str(params), "--model", model, "-S", pools, "--items", "0"]
        + ["--samples", "3", "--temperature", "1.0", "--out", str(sampled_out)],
    )
    assert res.exit_code == 0, res.output
    sampled = json.loads(sampled_out.read_text())
    assert sampled["samples"] == 3 and sampled["temperature"] == 1.0
    for row in sampled["tasks"].values():
        assert row["samples"] == 3.0 and row["items"] > 2  # --items 0: the whole eval pool
        assert row["solve_rate"] <= row["pass_at_k"]
    # the held-out halves: every item of the test half, none of the validation half
    test_out = tmp_path / "test.json"
    res = runner.invoke(
        app,
        ["evaluate", "-c", str(params), "--model", model, "-S", pools, "--items", "0"]
        + ["--split", "test", "--out", str(test_out)],
    )
    assert res.exit_code == 0, res.output
    halves = json.loads(test_out.read_text())
    assert halves["split"] == "test"
    for task, items in halves["item_rewards"].items():
        assert {heldout_split(p) for p in items} == {"test"}
        assert 0 < len(items) < len(sampled["item_rewards"][task])


def test_bad_arguments_fail_with_one_line_and_write_nothing(
    mini_assets: Path, tmp_path: Path
) -> None:
    params = _params(mini_assets, tmp_path)
    runner = CliRunner()
    out = tmp_path / "m.json"
    base = ["evaluate", "-c", str(params), "--out", str(out)]
    cases = [
        (
            ["--model", str(mini_assets / "tiny"), "--samples", "4", "--temperature", "0"],
            "needs --temperature > 0",
        ),
        (["--model", str(tmp_path)], "has no config.json"),
        (
            ["--model", str(mini_assets / "tiny"), "-S", f"data.pools_dir={tmp_path}"],
            "does not exist",
        ),
        (["--model", str(mini_assets / "tiny"), "--split", "bogus"], "--split must be one of"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, base + extra)
        assert res.exit_code != 0 and message in res.output, res.output
        assert not out.exists()


def test_demo_scores_the_sft_start_on_the_runs_eval_items(
    mini_assets: Path, tmp_path: Path
) -> None:
    from astor_core.config import load_config
    from astor_core.demo import evaluate_start_policy

    cfg = load_config(_params(mini_assets, tmp_path))
    table = evaluate_start_policy(cfg)
    assert set(table) == {
        "code_reasoning",
        "code_generation",
        "unit_test_generation",
        "commit_message",
    }
    from astor_core import TASKS
    from astor_core.data.pools import read_records
    from astor_core.evaluation import in_run_eval_items

    # the run's items: the first eval_items_per_task of the validation half, per task
    expected = in_run_eval_items(
        read_records(cfg.data.pools_dir, "eval"), TASKS, cfg.train.eval_items_per_task
    )
    for task, row in table.items():
        assert 0 < row["items"] == len(expected[task]) <= cfg.train.eval_items_per_task
