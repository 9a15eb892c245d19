"""What a GRPO update consumes: :class:`Sample` records, split into mini-batches (one
optimiser step each) and task-homogeneous micro-batches (one forward/backward each), padded
into tensors; and the log-probabilities of completion tokens."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from astor_core.policy.grpo import tis_weights


@dataclass(frozen=True)
class Sample:
    """One rollout ready for the update."""

    task: str
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None = None
    """The engine's log-probs of completion_ids (used when use_rollout_logprobs)."""
    engine_logprobs: list[float] | None = None
    """The engine's log-probs when old_logprobs are the trainer's (grpo.tis_cap > 0): the TIS denominator."""


def token_logps(logits: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) at `index`: TRL's selective_log_softmax (fused kernel on GPU)
    when TRL is installed, else its documented equivalent log_softmax + gather (a machine
    with only torch, transformers, accelerate and peft, e.g. benchmarks/gpu_grpo_round.py).

    >>> token_logps(torch.zeros(1, 1, 4), torch.tensor([[2]]), 1.0).exp()
    tensor([[0.2500]])
    """
    try:
        from trl.trainer.utils import selective_log_softmax
    except ImportError:
        return torch.gather((logits / temperature).log_softmax(-1), -1, index[..., None])[..., 0]
    return selective_log_softmax(logits, index, temperature)


def subset_parameter_names(
    model: torch.nn.Module, last_layers: int, patterns: Sequence[str]
) -> list[str]:
    """Trainable parameter names in the last `last_layers` blocks or matching any pattern."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    layer_ids = sorted({int(m.group(1)) for n in names if (m := re.search(r"layers\.(\d+)\.", n))})
    keep_layers = set(layer_ids[-last_layers:]) if last_layers > 0 else set()
    regexes = [re.compile(p) for p in patterns]
    chosen = []
    for n in names:
        m = re.search(r"layers\.(\d+)\.", n)
        if (m and int(m.group(1)) in keep_layers) or any(r.search(n) for r in regexes):
            chosen.append(n)
    if not chosen:
        raise ValueError(
            f"no parameter matches the gradient subset (last_layers={last_layers}, patterns={list(patterns)})"
        )
    return chosen


def mini_batches(samples: Sequence[Sample], group_size: int, steps: int) -> list[list[Sample]]:
    """A round's samples (prompt-major groups of `group_size`) split into `steps` mini-batches
    of whole groups, group g going to mini-batch g % steps, so that each optimiser step sees
    every task when the round lists its prompts task by task.

    >>> groups = [Sample("ab"[g // 2], [0], [g], 0.0) for g in range(4) for _ in range(2)]
    >>> [[(s.task, s.completion_ids[0]) for s in m][::2] for m in mini_batches(groups, 2, 2)]
    [[('a', 0), ('b', 2)], [('a', 1), ('b', 3)]]
    """
    if group_size < 1 or len(samples) % group_size:
        raise ValueError(f"{len(samples)} samples are not whole groups of {group_size}")
    n_groups = len(samples) // group_size
    if not 1 <= steps <= n_groups:
        raise ValueError(
            f"steps_per_round must be between 1 and the round's {n_groups} prompt groups, got {steps}"
        )
    minis: list[list[Sample]] = [[] for _ in range(steps)]
    for g in range(n_groups):
        minis[g % steps].extend(samples[g * group_size : (g + 1) * group_size])
    return minis


def micro_batches(samples: Sequence[Sample], size: int) -> list[tuple[str, list[Sample]]]:
    """Task-homogeneous micro-batches of at most `size` samples, task after task (in the
    order tasks first appear), so each micro-batch's gradient belongs to one task.

    >>> rows = [Sample(t, [0], [1], 0.0) for t in "abab"]
    >>> [(t, len(m)) for t, m in micro_batches(rows, 1)]
    [('a', 1), ('a', 1), ('b', 1), ('b', 1)]
    """
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    return [
        (t, rows[i : i + size]) for t, rows in by_task.items() for i in range(0, len(rows), size)
    ]


def batch_tensors(
    samples: Sequence[Sample],
    pad_id: int,
    device: torch.device,
    use_old_logprobs: bool = False,
    tis_cap: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Prompts left-padded, completions right-padded: input_ids, attention_mask,
    completion_mask and, when asked, old_logps (B, completion length); with tis_cap > 0 and
    every sample carrying engine log-probs, tis_weight (grpo.tis_weights).

    >>> t = batch_tensors([Sample("a", [5], [6, 7], 0.0), Sample("a", [8, 9], [4], 0.0)], 0, "cpu")
    >>> t["input_ids"].tolist(), t["completion_mask"].tolist()
    ([[0, 5, 6, 7], [8, 9, 4, 0]], [[1, 1], [1, 0]])
    """
    p_len = max(len(s.prompt_ids) for s in samples)
    c_len = max(len(s.completion_ids) for s in samples)
    ids, att, cmask, old, eng = [], [], [], [], []
    for s in samples:
        np_, nc = len(s.prompt_ids), len(s.completion_ids)
        ids.append(
            [pad_id] * (p_len - np_) + s.prompt_ids + s.completion_ids + [pad_id] * (c_len - nc)
        )
        att.append([0] * (p_len - np_) + [1] * (np_ + nc) + [0] * (c_len - nc))
        cmask.append([1] * nc + [0] * (c_len - nc))
        if s.old_logprobs is not None:
            old.append(list(s.old_logprobs[:nc]) + [0.0] * (c_len - nc))
        if s.engine_logprobs is not None:
            eng.append(list(s.engine_logprobs[:nc]) + [0.0] * (c_len - nc))
    out = {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(att, device=device),
        "completion_mask": torch.tensor(cmask, device=device),
    }
    if use_old_logprobs:
        if len(old) != len(samples):
            raise ValueError(
                "old log-probs requested (use_rollout_logprobs or num_iterations > 1) but "
                "some samples carry no old_logprobs"
            )
        out["old_logps"] = torch.tensor(old, device=device, dtype=torch.float32)
    if tis_cap > 0 and len(eng) == len(samples) and "old_logps" in out:
        engine = torch.tensor(eng, device=device, dtype=torch.float32)
        out["tis_weight"] = tis_weights(out["old_logps"], engine, tis_cap)
    return out


def completion_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_completion: int,
    temperature: float,
) -> torch.Tensor:
    """Log-probs (B, n_completion) of the last n_completion tokens under softmax(logits / T).

    Positions come from the attention mask (as in generate), so left padding changes nothing.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=n_completion + 1,
        use_cache=False,  # a scoring pass: a KV cache would only hold memory
    ).logits[:, :-1, :]
    return token_logps(logits.float(), input_ids[:, -n_completion:], temperature)


def with_trainer_old_logprobs(trainer: Any, samples: Sequence[Sample]) -> list[Sample]:
    """The samples, in order, with `trainer`'s own log-probs (current weights, i.e. those
    that sampled them; no gradient) as old_logprobs and the engine's moved to
    engine_logprobs: the ratio's denominator is then the trainer's, and the engine/trainer
    mismatch goes into the TIS weight (one extra forward pass per round)."""
    out: dict[int, Sample] = {}
    index = {id(s): k for k, s in enumerate(samples)}
    trainer.model.eval()
    try:
        for _, rows in micro_batches(samples, trainer.cfg.micro_batch_size):
            batch = trainer._batch_tensors(rows)
            n_c = batch["completion_mask"].size(1)
            with torch.no_grad(), trainer.accelerator.autocast():
                logps = trainer.completion_logps(
                    trainer.model, batch["input_ids"], batch["attention_mask"], n_c
                )
            for s, row in zip(rows, logps.float().cpu().tolist(), strict=True):
                engine = s.engine_logprobs if s.engine_logprobs is not None else s.old_logprobs
                if engine is None:
                    raise ValueError(
                        f"TIS needs the engine's log-probs; a {s.task} sample has none"
                    )
                out[index[id(s)]] = dataclasses.replace(
                    s, old_logprobs=row[: len(s.completion_ids)], engine_logprobs=list(engine)
                )
    finally:
        trainer.model.train()
    return [out[k] for k in range(len(samples))]
