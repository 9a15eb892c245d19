"""The four coding tasks: prompt format, completion parsing and verifiable reward.

>>> sorted(REGISTRY) == sorted(TASKS)
True
>>> get_task("commit_message").name
'commit_message'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from astor_core import TASKS
from astor_core.tasks.base import REASONS, RecordError, Reward, Task
from astor_core.tasks.code_generation import (
    CodeGenerationConfig,
    CodeGenerationTask,
    split_humaneval_tests,
)
from astor_core.tasks.code_reasoning import CodeReasoningConfig, CodeReasoningTask
from astor_core.tasks.commit_message import CommitMessageConfig, CommitMessageTask
from astor_core.tasks.mutation import MutationConfig
from astor_core.tasks.unit_test_generation import UnitTestGenerationTask
from astor_core.tasks.ut_config import UnitTestConfig


@dataclass(frozen=True)
class RewardConfig:
    """Every reward constant, one section per task (params.yaml `rewards:` maps onto it)."""

    code_reasoning: CodeReasoningConfig = field(default_factory=CodeReasoningConfig)
    """Code-reasoning verifier (prediction parsing, sandbox limits)."""
    code_generation: CodeGenerationConfig = field(default_factory=CodeGenerationConfig)
    """Code-generation verifier (sandbox limits)."""
    unit_test_generation: UnitTestConfig = field(default_factory=UnitTestConfig)
    """Unit-test verifier (mutation operators, mutant cap, screening rules)."""
    commit_message: CommitMessageConfig = field(default_factory=CommitMessageConfig)
    """Commit-message metric (B-Norm, ROUGE-L or a mix)."""


REGISTRY: dict[str, Callable[[RewardConfig], Task]] = {
    "code_reasoning": lambda c: CodeReasoningTask(c.code_reasoning),
    "code_generation": lambda c: CodeGenerationTask(c.code_generation),
    "unit_test_generation": lambda c: UnitTestGenerationTask(c.unit_test_generation),
    "commit_message": lambda c: CommitMessageTask(c.commit_message),
}
"""Task name -> constructor taking the RewardConfig."""


def get_task(name: str, config: RewardConfig | None = None) -> Task:
    """A fresh task verifier by name (one of astor_core.TASKS)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(REGISTRY)}")
    return REGISTRY[name](config or RewardConfig())


def score_mixed(
    tasks: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    sandbox: Any = None,
    config: RewardConfig | None = None,
) -> list[Reward]:
    """Reward of each completion from its own task's verifier (completions of several tasks
    in any order; one `score_batch` per task), in input order.

    >>> [r.value for r in score_mixed([], [], [])]
    []
    """
    where: dict[str, list[int]] = {}
    for pos, name in enumerate(tasks):
        where.setdefault(name, []).append(pos)
    out: list[Reward | None] = [None] * len(tasks)
    for name, positions in where.items():
        rewards = get_task(name, config).score_batch(
            [records[p] for p in positions], [completions[p] for p in positions], sandbox
        )
        for p, reward in zip(positions, rewards, strict=True):
            out[p] = reward
    return out  # type: ignore[return-value]


__all__ = [
    "REASONS",
    "REGISTRY",
    "TASKS",
    "CodeGenerationConfig",
    "CodeReasoningConfig",
    "CommitMessageConfig",
    "MutationConfig",
    "RecordError",
    "Reward",
    "RewardConfig",
    "Task",
    "UnitTestConfig",
    "get_task",
    "score_mixed",
    "split_humaneval_tests",
]
