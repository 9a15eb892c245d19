"""Round checkpoints that are either complete or invisible.

Layout: <root>/round-000003/ holds model/ (save_pretrained, loadable by any engine), the
accelerate state (optimizer, LR scheduler, RNG states of python, numpy, torch and CUDA,
written by `Accelerator.save_state`), extra.json (the caller's opaque state: scheduler,
calibration, ...) and round.json. Everything is written into a hidden temporary directory,
each file fsynced, then a COMPLETE marker is written and fsynced last, and the directory
is renamed into place (atomic on POSIX). `latest_checkpoint` only considers directories
holding COMPLETE, so a process killed mid-write leaves nothing that resume would load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
"""File written last into a finished checkpoint."""
_ROUND_RE = re.compile(r"^round-(\d{6})$")


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how many round checkpoints are kept."""

    root: str = "runs/checkpoints"
    """Directory holding one round-NNNNNN/ directory per saved round."""
    keep_last: int = 2
    """Complete checkpoints kept (older ones are deleted after a save); 0 keeps all."""
    every: int = 1
    """Save after every this many rounds."""


def round_dir(root: str | Path, round_idx: int) -> Path:
    """The directory of round `round_idx`.

    >>> round_dir("ck", 3).name
    'round-000003'
    """
    return Path(root) / f"round-{round_idx:06d}"


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_rounds(root: str | Path) -> list[int]:
    """Rounds with a complete checkpoint under root, ascending."""
    base = Path(root)
    if not base.is_dir():
        return []
    rounds = []
    for child in base.iterdir():
        m = _ROUND_RE.match(child.name)
        if m and (child / MARKER).is_file():
            rounds.append(int(m.group(1)))
    return sorted(rounds)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    rounds = complete_rounds(root)
    return round_dir(root, rounds[-1]) if rounds else None


def save_checkpoint(
    root: str | Path,
    round_idx: int,
    trainer: Any,
    extra: dict[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write round `round_idx` of `trainer` (a PolicyTrainer) plus `extra` atomically; return its dir.

    `extra` must be JSON-serialisable; it comes back unchanged from `load_checkpoint`.
    """
    base = Path(root)
    final = round_dir(base, round_idx)
    extra_text = json.dumps(extra or {}, sort_keys=True)  # fails before anything is written
    # Several ranks (astor_core.run.ranks): all write into rank 0's temporary directory
    # (save_state is called on every rank; each writes its RNG state), rank 0 alone writes
    # the rest, the marker and renames; barriers between the phases.
    acc = trainer.accelerator
    main, token = _shared_writer(acc)
    tmp = base / f".tmp-{final.name}-{token}"
    if main:
        base.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    acc.wait_for_everyone()
    trainer.save_state(tmp)
    acc.wait_for_everyone()
    if not main:
        acc.wait_for_everyone()  # rank 0 finishes the checkpoint
        return final
    (tmp / "extra.json").write_text(extra_text)
    (tmp / "round.json").write_text(json.dumps({"round": round_idx}))
    _fsync_tree(tmp)
    with open(tmp / MARKER, "w") as fh:
        fh.write(f"{round_idx}\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(base)
    if keep_last > 0:
        for old in complete_rounds(base)[:-keep_last]:
            shutil.rmtree(round_dir(base, old), ignore_errors=True)
    for stale in base.glob(".tmp-round-*"):
        if not stale.name.endswith(f"-{token}"):
            shutil.rmtree(stale, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _shared_writer(accelerator: Any) -> tuple[bool, int]:
    """(this rank writes the checkpoint's files, the temporary directory's suffix): rank 0's
    pid on every rank, so all ranks save into one directory (a later run removes a dead
    run's leftovers by their other suffix)."""
    token = [os.getpid()]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token, from_process=0)
    return bool(accelerator.is_main_process), int(token[0])


def load_checkpoint(path: str | Path, trainer: Any) -> tuple[int, dict[str, Any]]:
    """Restore `trainer` from a complete checkpoint dir; return (round, extra)."""
    ck = Path(path)
    if not (ck / MARKER).is_file():
        raise ValueError(
            f"checkpoint {ck} has no {MARKER} marker: it is incomplete and cannot be loaded"
        )
    trainer.load_state(ck)
    round_idx = int(json.loads((ck / "round.json").read_text())["round"])
    extra = json.loads((ck / "extra.json").read_text())
    return round_idx, extra


def resume(root: str | Path, trainer: Any) -> tuple[int, dict[str, Any]] | None:
    """Load the latest complete checkpoint under root into trainer; None when there is none."""
    ck = latest_checkpoint(root)
    return None if ck is None else load_checkpoint(ck, trainer)


def save_hook(accelerator: Any, tokenizer: Any) -> Any:
    """accelerate's save-state pre-hook for a trainer: each prepared model as a
    save_pretrained folder (model/, model_1/, ...; the tokenizer beside the first) instead of
    accelerate's raw weight files."""

    def hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        if accelerator.is_main_process:
            for i, m in enumerate(models):
                target = Path(output_dir) / ("model" if i == 0 else f"model_{i}")
                accelerator.unwrap_model(m).save_pretrained(target)
                if i == 0:
                    tokenizer.save_pretrained(target)
        weights.clear()

    return hook


def load_hook(accelerator: Any) -> Any:
    """accelerate's load-state pre-hook matching :func:`save_hook`: weights from each
    save_pretrained folder (LoRA adapters only for a PEFT model), tied weights allowed
    missing, anything else missing or unexpected an error."""

    def hook(models: list[Any], input_dir: str) -> None:
        from safetensors.torch import load_file

        from astor_core.policy.memory import is_peft, load_adapter_state

        for i in range(len(models)):
            model = accelerator.unwrap_model(models.pop(0))
            src = Path(input_dir) / ("model" if i == 0 else f"model_{i}")
            state: dict[str, Any] = {}
            for f in sorted(src.glob("*.safetensors")):
                state.update(load_file(str(f)))
            if not state:
                raise FileNotFoundError(f"no safetensors weights under {src}")
            if is_peft(model):  # model/ holds the adapters only; the base is the config's model
                load_adapter_state(model, state)
                continue
            missing, unexpected = model.load_state_dict(state, strict=False)
            tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
                n for n, _ in model.named_parameters()
            }
            bad = [k for k in missing if k not in tied]
            if bad or unexpected:
                raise ValueError(
                    f"checkpoint {src} does not match the model: missing {bad}, unexpected {unexpected}"
                )

    return hook
