"""Name rules of the unit-test screen: which names the code under test binds, which module
attributes tests may use, which functions the tests define, and plain str.format templates.

Used by :mod:`astor_core.tasks.ut_screen`.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import re
import string
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

from astor_core.tasks.ut_config import UnitTestConfig

if TYPE_CHECKING:
    pass

_PLAIN_FIELD = re.compile(r"[A-Za-z0-9_]*")
"""A str.format field that names an argument and reaches nothing inside it."""


@functools.lru_cache(maxsize=64)
def _public_attributes(module: str) -> frozenset[str]:
    """The public attributes of a standard module that are not modules themselves (so that
    `statistics.sys` or `fractions.re` do not lead anywhere else)."""
    mod = importlib.import_module(module)
    return frozenset(
        name
        for name, value in vars(mod).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )


def _module_allows(module: str, attribute: str, cfg: UnitTestConfig) -> bool:
    """Whether tests may use `module.attribute` (module already in allowed_imports)."""
    listed = dict(cfg.module_attributes)
    if module in listed:
        return attribute in listed[module]
    if f"{module}.{attribute}" in cfg.denied_attributes:
        return False
    return attribute in _public_attributes(module)


def _format_is_plain(template: str) -> bool:
    """A literal str.format template whose fields only name arguments (no `{0.attr}`, `{0[k]}`).

    >>> _format_is_plain("{} and {0:>{width}}"), _format_is_plain("{0.__code__}")
    (True, False)
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return False
    return all(
        (name is None or _PLAIN_FIELD.fullmatch(name) is not None)
        and (not spec or _format_is_plain(spec))
        for _, name, spec, _ in parts
    )


def _test_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Functions the tests define at module level whose name nothing else binds (no parameter,
    variable, import or built-in of that name), so a call by that name always reaches them.

    >>> tree = ast.parse("def check(c): pass\\ndef repr(c): pass\\ng = lambda check: 0")
    >>> list(_test_functions(tree)), list(_test_functions(ast.parse("def check(c): pass")))
    ([], ['check'])
    """
    counts: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names = [node.id]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.FunctionDef | ast.ExceptHandler) and node.name:
            names = [node.name]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and counts[n.name] == 1 and not hasattr(builtins, n.name)
    }


@functools.lru_cache(maxsize=256)  # a GRPO group screens many completions of one record
def _reference_names(
    reference: str, entry_point: str, cfg: UnitTestConfig
) -> tuple[frozenset[str], Mapping[str, str], frozenset[str]]:
    """(protected, modules, free): the names the code under test binds at module level that the
    tests may only call (functions, classes, other modules, and its globals, which mutants
    change too: reading `N` is not calling anything); the allowed modules it imports (usable as
    the tests' own imports); and the allowed module attributes it imports (usable freely).

    >>> code = "import math, os\\nfrom typing import List\\nN = 3\\ndef f(x): return x\\nclass C: ..."
    >>> protected, modules, free = _reference_names(code, "f", UnitTestConfig())
    >>> sorted(protected), dict(modules), set(free)
    (['C', 'N', 'f', 'os'], {'math': 'math'}, {'List'})
    """
    protected: set[str] = {entry_point}
    modules: dict[str, str] = {}
    free: set[str] = set()
    try:
        tree = ast.parse(reference)
    except (SyntaxError, ValueError):
        return frozenset(protected), types.MappingProxyType(modules), frozenset(free)
    allowed = set(cfg.allowed_imports)
    for node in _module_level(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                if alias.name in allowed:
                    modules[name] = alias.name
                else:
                    protected.add(name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name
                if node.module in allowed and _module_allows(node.module, alias.name, cfg):
                    free.add(name)
                else:
                    protected.add(name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            protected.add(node.name)
        else:
            protected.update(_stored_names(node))
    for name in protected & set(modules):
        del modules[name]
    return frozenset(protected), types.MappingProxyType(modules), frozenset(free - protected)


def _stored_names(node: ast.AST) -> set[str]:
    """Names a module-level statement binds itself (not those bound in its nested bodies)."""
    names = {node.name} if isinstance(node, ast.ExceptHandler) and node.name else set()
    for name, value in ast.iter_fields(node):
        if name in _BODIES:
            continue
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, ast.AST):
                names.update(
                    n.id
                    for n in ast.walk(part)
                    if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
                )
    return names


_BODIES = ("body", "orelse", "finalbody", "handlers")


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements that run at module level (inside if/try/for/while too, not in functions)."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for name in _BODIES:
                todo.extend(getattr(node, name, []))
    return out
