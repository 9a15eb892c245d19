"""benchmarks/lora_vs_full.py: the pair check and the held-out table of the two arms."""

from __future__ import annotations

import copy

import pytest

from benchmarks.lora_vs_full import check_pair, table_rows, task_average

TASKS = ["a", "b"]


def _run(lr: float, lora_r: int, finals: dict[str, dict[str, float]]) -> dict:
    """A policy_grpo_curves.py numbers file: SFT at 0.2 / 0.4, one final eval per seed."""
    sft = {"greedy": {"a": {"mean_reward": 0.2}, "b": {"mean_reward": 0.4}}}
    return {
        "args": {"lr": lr, "lora_r": lora_r, "lora_alpha": 32, "rounds": 2, "seeds": [0, 1]},
        "sft": sft,
        "seeds": {
            seed: {
                "curve": [
                    {"round": 0, "eval": sft},
                    {"round": 2, "eval": {"greedy": {t: {"mean_reward": v} for t, v in f.items()}}},
                ],
                "train_reward": [0.1, 0.2],
            }
            for seed, f in finals.items()
        },
    }


def test_table_reports_each_seed_and_the_change_of_the_task_average() -> None:
    full = _run(3e-4, 0, {"0": {"a": 0.3, "b": 0.5}, "1": {"a": 0.2, "b": 0.4}})
    lora = _run(3e-3, 8, {"0": {"a": 0.2, "b": 0.3}, "1": {"a": 0.2, "b": 0.3}})
    check_pair(full, lora)
    rows = table_rows(full, lora, TASKS)
    assert rows[2] == "| greedy | SFT | 0.200 | 0.400 | 0.300 | |"
    assert "| greedy | full (lr 0.0003), seed 0, round 2 | 0.300 | 0.500 | 0.400 | +0.100 |" in rows
    assert "| greedy | full: mean of 2 seeds | 0.250 | 0.450 | 0.350 | +0.050 |" in rows
    assert "| greedy | LoRA r 8: mean of 2 seeds | 0.200 | 0.300 | 0.250 | -0.050 |" in rows
    assert task_average(full["sft"]["greedy"], TASKS) == pytest.approx(0.3)


def test_pair_that_differs_beyond_the_arm_settings_is_refused() -> None:
    full = _run(3e-4, 0, {"0": {"a": 0.3, "b": 0.5}})
    lora = _run(3e-3, 8, {"0": {"a": 0.3, "b": 0.5}})
    lora["args"]["rounds"] = 3
    with pytest.raises(SystemExit, match="differ in rounds"):
        check_pair(full, lora)
    lora = _run(3e-3, 8, {"0": {"a": 0.3, "b": 0.5}})
    lora["sft"] = copy.deepcopy(full["sft"])
    lora["sft"]["greedy"]["a"]["mean_reward"] = 0.25
    with pytest.raises(SystemExit, match="SFT evaluations differ"):
        check_pair(full, lora)
    with pytest.raises(SystemExit, match="must be full fine-tuning"):
        check_pair(lora, full)
