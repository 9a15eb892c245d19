"""Configs are type- and range-checked at load (pydantic over the dataclass configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from astor_core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_loads() -> None:
    cfg = load_config(REPO / "params.yaml")
    assert cfg.train.rounds >= 1 and cfg.scheduler.floor == 0.1
    assert isinstance(cfg.train.train_stage_tags, tuple)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.rounds=abc", "train.rounds"),
        ("train.rounds=-1", "train.rounds"),
        ("train.task_runner=threads", "train.task_runner"),
        ("train.scheduler=astro", "train.scheduler"),
        ("scheduler.floor=2", "scheduler.floor"),
        ("scheduler.utility.decay=x", "scheduler.utility.decay"),
        ("calibration.mode=bogus", "calibration.mode"),
        ("trainer.grpo.loss_type=ppo", "trainer.grpo.loss_type"),
        ("sandbox.limits.wall_s=fast", "sandbox.limits.wall_s"),
        ("train.roundz=3", "train.roundz"),
    ],
)
def test_a_bad_override_names_its_key_and_value(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "params.yaml", [override])
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith("-S override: ") and key.rsplit(".", 1)[-1] in message
    assert "\n" not in message


def test_a_wrong_type_in_the_file_names_the_file(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("scheduler:\n  prompts_per_round: many\n")
    with pytest.raises(ConfigError, match=r"params.yaml: scheduler.prompts_per_round = 'many'"):
        load_config(params)


def test_specialists_of_known_tasks_only() -> None:
    assert load_config(None, ["train.scheduler=specialist:code_generation"]).train.scheduler
    with pytest.raises(ConfigError, match="train.scheduler"):
        load_config(None, ["train.scheduler=specialist:poetry"])
    with pytest.raises(ConfigError, match="train.scheduler"):
        load_config(None, ["train.scheduler=code_generation"])


def test_not_yaml_is_one_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train: [\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(params)
    assert "\n" not in str(info.value)
