"""ASTOR: utility-guided multi-task RL for code LLMs (schedule-and-calibrate).

The library is pure Python + torch: it imports no Prefect and no MLflow (flows/ does).
"""

__version__ = "0.1.0"

TASKS: tuple[str, ...] = (
    "code_reasoning",
    "code_generation",
    "unit_test_generation",
    "commit_message",
)
"""The four coding tasks, in the paper's developer-workflow order."""
