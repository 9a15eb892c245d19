"""Code generation (HumanEval / MBPP style): continue a prompt into a working function.

The sandboxed program is `payload.prompt + completion` (HumanEval's convention); the
record's tests are trusted `exec` checks run after it, each confirmed separately, so the
reward is the fraction of tests passed and `info['all_passed']` says whether all did. The
prompt's own definitions (imports, helpers such as HumanEval/32's `poly`) are trusted: they
go to the sandbox as `Job.trusted`, so a completion that redefines them changes nothing the
tests call. A job that does not end normally scores 0, whatever it confirmed before.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from astor_core.sandbox.api import Check, Job, Limits, Outcome
from astor_core.tasks.base import (
    RecordError,
    Reward,
    check_lengths,
    parse_payload,
    parse_tests,
    reason_for_status,
    record_id,
    resolve_sandbox,
    run_unique,
)

if TYPE_CHECKING:
    from astor_core.sandbox import Sandbox


@dataclass(frozen=True)
class CodeGenerationConfig:
    """Constants of the code-generation verifier."""

    limits: Limits | None = None
    """Sandbox limits for program plus all tests; None takes the sandbox's defaults."""


def trusted_prelude(prompt: str, entry_point: str) -> str:
    """The prompt's top-level statements other than the entry point's definition (helper
    functions, constants, and the imports they use): what the tests may call that the model
    must not redefine. Imports that only annotations read (``from typing import List``) are
    left out: the sandbox drops annotations from trusted code, and restoring a module it
    imports costs every test. "" when the prompt does not parse on its own.

    >>> src = "import math\\nfrom typing import List\\n"
    >>> src += "def poly(xs: List[float], x):\\n    return math.fsum(xs)\\n"
    >>> print(trusted_prelude(src + "def find_zero(xs: List[float]):\\n    '''doc'''\\n", "find_zero"))
    import math
    def poly(xs: List[float], x):
        return math.fsum(xs)
    """
    try:
        module = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    keep = [
        node
        for node in module.body
        if not (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point
        )
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    imports = (ast.Import, ast.ImportFrom)
    read = _names_read_outside_annotations([n for n in keep if not isinstance(n, imports)])
    keep = [
        node
        for node in keep
        if not isinstance(node, imports)
        or any((a.asname or a.name).split(".")[0] in read for a in node.names)
    ]
    return "\n".join(ast.unparse(node) for node in keep)


def _names_read_outside_annotations(nodes: list[ast.stmt]) -> set[str]:
    """Names the statements load, not counting annotations (argument, return, variable).

    >>> tree = ast.parse("def f(x: List[int]) -> Dict:\\n    return math.pi")
    >>> sorted(_names_read_outside_annotations(tree.body))
    ['math']
    """
    skip: set[int] = set()
    for node in nodes:
        for sub in ast.walk(node):
            annotations: list[ast.AST | None] = []
            if isinstance(sub, ast.arg | ast.AnnAssign):
                annotations.append(sub.annotation)
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                annotations.append(sub.returns)
            for ann in annotations:
                if ann is not None:
                    skip.update(id(n) for n in ast.walk(ann))
    return {
        sub.id
        for node in nodes
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and id(sub) not in skip
    }


def split_humaneval_tests(
    test_src: str, entry_point: str, inline_candidate: bool = False
) -> list[str]:
    """Turn HumanEval's `def check(candidate): ...` into independent assert snippets.

    Each statement of `check` that contains an `assert` becomes one snippet, preceded by
    the test module's other top-level code (e.g. METADATA, helpers), `candidate = <entry
    point>`, and the assert-free statements of `check` that come before it (imports,
    seeded generators). Asserts whose condition is a constant (HumanEval's `assert True,
    "This prints if this assert fails"`) test nothing and are dropped. When the source has
    no `check` function or no usable assert, the fallback is one snippet that defines the
    test code and calls `check(<entry point>)`. With `inline_candidate`, `candidate` is
    renamed to the entry point instead (plain asserts on the function, as a model would
    write them for unit-test generation).

    >>> src = "def check(candidate):\\n    import math\\n    assert candidate(1) == 2\\n"
    >>> src += "    assert True\\n    for x in range(3):\\n        assert candidate(x) > x\\n"
    >>> for snippet in split_humaneval_tests(src, "inc"):
    ...     print(snippet, end="\\n---\\n")
    candidate = inc
    import math
    assert candidate(1) == 2
    ---
    candidate = inc
    import math
    for x in range(3):
        assert candidate(x) > x
    ---
    """
    fallback = [f"{test_src.rstrip()}\n\ncheck({entry_point})"]
    try:
        module = ast.parse(test_src)
    except SyntaxError:
        return fallback
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or [a.arg for a in checks[0].args.args] != ["candidate"]:
        return fallback
    if inline_candidate:
        checks[0] = _RenameCandidate(entry_point).visit(checks[0])
    preamble = [ast.unparse(n) for n in module.body if n is not checks[0]]
    setup: list[str] = []
    snippets: list[str] = []
    for stmt in checks[0].body:
        asserts = [n for n in ast.walk(stmt) if isinstance(n, ast.Assert)]
        if not asserts:
            setup.append(ast.unparse(stmt))
        elif isinstance(stmt, ast.Assert) and _is_constant(stmt.test):
            continue
        else:
            bind = [] if inline_candidate else [f"candidate = {entry_point}"]
            snippets.append("\n".join([*preamble, *bind, *setup, ast.unparse(stmt)]))
    return snippets or fallback


class _RenameCandidate(ast.NodeTransformer):
    def __init__(self, entry_point: str) -> None:
        self.entry_point = entry_point

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id == "candidate":
            return ast.copy_location(ast.Name(id=self.entry_point, ctx=node.ctx), node)
        return node


def _is_constant(expr: ast.expr) -> bool:
    try:
        ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


@dataclass
class CodeGenerationTask:
    """Function completion scored by the fraction of the record's tests passed."""

    config: CodeGenerationConfig = field(default_factory=CodeGenerationConfig)
    """The verifier's constants."""
    name: str = "code_generation"
    """Task name (one of astor_core.TASKS)."""

    def format_prompt(self, record: Mapping[str, Any]) -> str:
        """The text the model continues: payload.prompt."""
        return str(parse_payload(record, ["prompt", "entry_point"])["prompt"])

    def score_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        completions: Sequence[str],
        sandbox: Sandbox | None = None,
    ) -> list[Reward]:
        """Run each prompt + completion with the record's tests as checks, in one batch."""
        check_lengths(records, completions)
        keys: list[tuple[str, str, tuple[str, ...]]] = []
        for record, completion in zip(records, completions, strict=True):
            payload = parse_payload(record, ["prompt", "entry_point"])
            tests = parse_tests(record)
            if not tests:
                raise RecordError(f"record {record_id(record)}: code_generation needs tests")
            keys.append(
                (
                    payload.get("setup", ""),
                    payload["prompt"] + completion,
                    tuple(tests),
                    trusted_prelude(payload["prompt"], payload["entry_point"]),
                )
            )
        outcomes = run_unique(
            keys,
            lambda k: Job(
                program=k[1],
                setup=k[0],
                checks=tuple(Check(t) for t in k[2]),
                limits=self.config.limits,
                trusted=k[3],
            ),
            resolve_sandbox(sandbox),
        )
        return [reward_from_outcome(outcomes[k], len(k[2])) for k in keys]


def reward_from_outcome(outcome: Outcome, n_tests: int) -> Reward:
    """Fraction of the tests the harness confirmed passed, 0 unless the job ended normally;
    the reason comes from the status.

    >>> reward_from_outcome(Outcome("ok", (True, False)), 2)
    Reward(value=0.5, reason='failed', passed=False, info={'all_passed': False, 'n_passed': 1, 'n_tests': 2, 'detail': ''})
    >>> reward_from_outcome(Outcome("syntax_error", (False,), detail="line 1"), 1).reason
    'syntax'
    >>> reward_from_outcome(Outcome("crashed", (True, True)), 2).value
    0.0
    """
    n_passed = sum(1 for p in outcome.passed if p) if outcome.status == "ok" else 0
    all_passed = outcome.status == "ok" and n_passed == n_tests
    return Reward(
        value=n_passed / n_tests,
        reason=reason_for_status(outcome.status, all_passed),
        passed=all_passed,
        info={
            "all_passed": all_passed,
            "n_passed": n_passed,
            "n_tests": n_tests,
            "detail": outcome.detail,
        },
    )
