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
    acc = getattr(trainer, "accelerator", None)
    main = acc is None or acc.is_main_process
    base = Path(root)
    final = round_dir(base, round_idx)
    writer = _writer_id(acc)
    tmp = base / f".tmp-{final.name}-{writer}"  # one directory all ranks write their shards into
    extra_text = json.dumps(extra or {}, sort_keys=True)  # fails before anything is written
    if main:
        base.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier(acc)
    trainer.save_state(tmp)
    _barrier(acc)
    if main:
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
            if not stale.name.endswith(f"-{writer}"):
                shutil.rmtree(stale, ignore_errors=True)
    _barrier(acc)
    return final


def _writer_id(accelerator: Any) -> int:
    """The main process's pid (the same on every rank): names the temporary directory."""
    if accelerator is None or accelerator.num_processes == 1:
        return os.getpid()
    from accelerate.utils import broadcast_object_list

    return int(broadcast_object_list([os.getpid()])[0])


def _barrier(accelerator: Any) -> None:
    """Every rank waits here (nothing to wait for in one process)."""
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


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
        for i, m in enumerate(models):
            # Sharded (FSDP2 / ZeRO-3): accelerate saved the shards itself; model/ gets the
            # gathered full weights (a collective on every rank) for engines and export.
            target = Path(output_dir) / ("model" if i == 0 else f"model_{i}")
            if sharded(accelerator):  # every rank, as transformers asks of distributed saves
                accelerator.unwrap_model(m).save_pretrained(
                    target,
                    state_dict=accelerator.get_state_dict(m),
                    is_main_process=accelerator.is_main_process,
                )
            elif accelerator.is_main_process:
                accelerator.unwrap_model(m).save_pretrained(target)
            if i == 0 and accelerator.is_main_process:
                tokenizer.save_pretrained(target)
        weights.clear()

    return hook


def sharded(accelerator: Any) -> bool:
    """Weights live in shards across ranks (FSDP, DeepSpeed): accelerate saves them."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def load_hook(accelerator: Any) -> Any:
    """accelerate's load-state pre-hook matching :func:`save_hook`: weights from each
    save_pretrained folder (LoRA adapters only for a PEFT model), tied weights allowed
    missing, anything else missing or unexpected an error."""

    def hook(models: list[Any], input_dir: str) -> None:
        # Sharded runs get no model here: accelerate loads their shards itself.
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
