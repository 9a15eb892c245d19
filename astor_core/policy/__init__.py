"""The policy side of a round: model, rollouts, the GRPO update and its checkpoints."""

import os

import torch

if torch.version.cuda is None and torch.version.hip is None:
    # A CPU build of torch: DeepSpeed (dev extra; imported by accelerate's unwrap_model and
    # transformers' save_pretrained when installed) can only use its CPU accelerator, and
    # when it has to detect that itself it logs a warning to stdout, inside CLI output.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
