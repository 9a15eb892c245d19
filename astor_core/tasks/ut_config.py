"""Config of the unit-test-generation verifier: mutants, sandbox limits and what tests may use.

Public API: :class:`UnitTestConfig`.
"""

from __future__ import annotations

import builtins
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from astor_core.sandbox.api import Limits
from astor_core.tasks.mutation import (
    MutationConfig,
)

if TYPE_CHECKING:
    pass

_SAFE_BUILTINS: tuple[str, ...] = (
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "oct",
    "ord",
    "pow",
    "print",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "type",
    "zip",
    "Ellipsis",
    "NotImplemented",
    *sorted(
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    ),
)
"""Built-in names tests may use: values, containers, arithmetic and exception classes; not
getattr/vars/dir/globals/locals/eval/exec/compile/open/__import__/id/hash/format/object/super."""


@dataclass(frozen=True)
class UnitTestConfig:
    """Constants of the unit-test-generation verifier."""

    mutation: MutationConfig = field(default_factory=MutationConfig)
    """Which mutants of the reference to make (operators, cap, seed)."""
    limits: Limits = field(default_factory=lambda: Limits(wall_s=2.0, cpu_s=2.0))
    """Sandbox limits for one run of the tests (on the reference or one mutant)."""
    salvage_truncated: bool = True
    """Cut trailing lines that do not parse (a completion cut off by the token limit)."""
    drop_timeout_mutants: bool = True
    """Drop mutants that time out under the reference tests: each would cost a full timeout
    per completion, and a timeout says nothing about the assertions' quality."""
    allowed_imports: tuple[str, ...] = (
        "math",
        "cmath",
        "string",
        "re",
        "collections",
        "itertools",
        "functools",
        "operator",
        "typing",
        "heapq",
        "bisect",
        "copy",
        "random",
        "fractions",
        "decimal",
        "statistics",
    )
    """Modules the tests may import (top-level only); anything else is forbidden."""
    module_attributes: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("functools", ("reduce", "partial", "lru_cache", "cache", "cmp_to_key")),
        ("string", tuple(name for name in string.__all__ if name[0].islower())),
        (
            "typing",
            (
                "Any", "Callable", "Dict", "FrozenSet", "Iterable", "Iterator", "List",
                "Mapping", "Optional", "Sequence", "Set", "Tuple", "Union",
            ),
        ),
    )  # fmt: skip
    """Modules whose usable attributes are only these (the rest, e.g. string.Formatter,
    typing.get_type_hints, functools.singledispatch, reach attributes by name or eval)."""
    denied_attributes: tuple[str, ...] = (
        "operator.attrgetter",
        "operator.methodcaller",
        "operator.call",
    )
    """Attributes of other allowed modules that tests may not use (getters by name). Every
    other public attribute that is not itself a module is allowed."""
    allowed_builtins: tuple[str, ...] = _SAFE_BUILTINS
    """Built-in names the tests may use; any other name must be bound by the tests."""
    check_twin: bool = True
    """Also run the tests on `mutation.behaviour_twin` of the reference; failing there is
    "forbidden" (the tests looked at how the code is compiled, not at what it does)."""
    cache_size: int = 4096
    """Records whose filtered mutants are kept in memory (least recently used dropped)."""
