"""benchmarks/gpu_grpo_round.py: the 1.5B shape, and a CPU smoke run of the whole script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from astor_core.policy.model import num_parameters
from benchmarks.gpu_grpo_round import parse_args, qwen25_coder_15b_config

ROOT = Path(__file__).resolve().parents[2]


def test_config_has_the_qwen25_coder_15b_parameter_count() -> None:
    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen25_coder_15b_config())
    assert num_parameters(model) == 1_543_714_304  # Qwen2.5-1.5B's published 1.54 B, tied head


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--modes", "lora,half"])


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_phase(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_grpo_round.py"), "--tiny"]
        + ["--device", "cpu", "--modes", "lora,full+ckpt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_grpo_round.json").read_text())
    lora, full = report["modes"]["lora"], report["modes"]["full+ckpt"]
    assert 0 < lora["trainable_params"] < full["trainable_params"] == full["params"]
    assert lora["flops_per_token"] == 6 * lora["params"]
    assert full["flops_per_token"] == 8 * full["params"]
    for r in (lora, full):
        assert r["update_tokens_per_s"] > 0 and r["tokens"] == 4 * 4 * (16 + 16)
    assert report["generate"]["new_tokens_per_s"] > 0
    assert "| lora |" in proc.stdout and "| HF generate bf16 |" in proc.stdout
