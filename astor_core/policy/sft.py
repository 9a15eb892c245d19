"""Supervised warm start with TRL's SFTTrainer on the pools' reference completions.

Each train record becomes one prompt-completion pair (prompt = its task's format_prompt,
completion = its reference), a TRL prompt-completion dataset; TRL appends eos to each
completion, so the model learns where to stop. `SFTConfig.completion_only_loss` selects
TRL's completion-only loss; the tiny from-scratch default trains on prompt tokens too
(docs/POLICY.md gives the measurement behind that choice).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from astor_core import TASKS


@dataclass(frozen=True)
class SFTConfig:
    """The warm-start run (maps onto TRL's SFTConfig)."""

    epochs: float = 4.0
    """Passes over the training pairs (the tiny model needs optimiser steps: docs/POLICY.md)."""
    max_steps: int = -1
    """Stop after this many optimiser steps (-1: run all epochs)."""
    learning_rate: float = 1.5e-3
    """Peak AdamW learning rate (measured: 6e-3 and 3e-3 end at a higher loss than 1e-3..1.5e-3)."""
    lr_scheduler_type: str = "cosine"
    """transformers scheduler name."""
    warmup_steps: int = 40
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    batch_size: int = 8
    """Sequences per optimiser step."""
    max_length: int = 512
    """Longest prompt+completion in tokens; longer pairs are truncated (prompt kept, completion end cut)."""
    max_records_per_task: int = 0
    """Use at most this many train records of each task (0: all)."""
    completion_only_loss: bool = False
    """Train on completion tokens only (TRL's option); False also trains on the prompt, 5x more signal per token for a from-scratch model."""
    group_by_length: bool = True
    """Batch pairs of similar length (less padding: about a third fewer tokens computed)."""
    seed: int = 0
    """Seed of data order, dropout and sampling."""
    logging_steps: int = 100
    """Report the training loss every this many steps (to run_sft's `log`)."""
    num_threads: int = 0
    """torch CPU threads for the run (0: torch's default, all cores; 1 is faster only when other jobs share a 2-core CPU, see docs/POLICY.md)."""


def sft_pairs(
    records: Sequence[Mapping[str, Any]], max_per_task: int = 0, seed: int = 0
) -> list[dict[str, str]]:
    """Prompt-completion pairs from train records (at most max_per_task per task, 0: all)."""
    from astor_core.tasks import get_task

    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec["task"] not in TASKS:
            raise ValueError(f"record {rec.get('prompt_id')}: unknown task {rec['task']!r}")
        by_task.setdefault(rec["task"], []).append(rec)
    rng = random.Random(seed)
    pairs = []
    for task, recs in sorted(by_task.items()):
        if max_per_task and len(recs) > max_per_task:
            recs = rng.sample(recs, max_per_task)
        verifier = get_task(task)
        pairs += [
            {"prompt": verifier.format_prompt(r), "completion": str(r["reference"])} for r in recs
        ]
    rng.shuffle(pairs)
    return pairs


def run_sft(
    model_path: str | Path,
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    cfg: SFTConfig = SFTConfig(),
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Fine-tune the model at model_path on the records' references; save model + tokenizer to out_dir.

    Every `cfg.logging_steps` steps one progress line goes to `log` (e.g. a Prefect run
    logger's `info`, or stderr in the CLI), instead of the dict transformers prints to
    stdout. Returns the final training metrics (train_loss, train_runtime, steps).
    """
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from astor_core.policy.model import load_tokenizer

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    pairs = sft_pairs(records, cfg.max_records_per_task, cfg.seed)
    if not pairs:
        raise ValueError("no train records to fine-tune on")
    tokenizer = load_tokenizer(str(model_path))
    tokenizer.padding_side = "right"  # training pads on the right; generation reloads with left
    out = Path(out_dir)
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    # TRL turns checkpointing on by default; transformers >= 5.23 names it
    # activation_checkpointing and warns on the old name, older releases know only the old one.
    names = {f.name for f in fields(TRLSFTConfig)}
    no_ckpt = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    args = TRLSFTConfig(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=min(cfg.warmup_steps, max(1, steps_per_epoch)),
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=cfg.completion_only_loss,
        packing=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        disable_tqdm=True,
        **{no_ckpt: False},
    )
    trainer = SFTTrainer(
        model=str(model_path),
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # its dicts went to stdout, the CLIs' JSON channel
    if log is not None:
        trainer.add_callback(_progress_callback(log))
    result = trainer.train()
    tokenizer.padding_side = "left"
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "train_loss": float(result.training_loss),
        "train_runtime_s": float(result.metrics.get("train_runtime", 0.0)),
        "steps": float(result.global_step),
        "pairs": float(len(pairs)),
    }


def _progress_callback(log: Callable[[str], None]) -> Any:
    """A transformers TrainerCallback that sends each logged step to `log` as one line."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                acc = logs.get("mean_token_accuracy")
                log(
                    f"SFT step {state.global_step}/{state.max_steps} (epoch {state.epoch or 0:.2f}):"
                    f" loss {float(logs['loss']):.3f}"
                    + (f", token accuracy {float(acc):.3f}" if acc is not None else "")
                )

    return ProgressLines()


SFT_PROFILES: dict[str, SFTConfig] = {
    "default": SFTConfig(),
    "fast": SFTConfig(epochs=1.0),
    "full": SFTConfig(epochs=5.0, learning_rate=1e-3),
}
"""Named SFT settings: default (= params.yaml `sft:`, the demo's), fast (a smoke run), full (5 epochs)."""
