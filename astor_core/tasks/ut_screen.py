"""Static whitelist screen of generated unit tests (layer 1 of unit_test_generation's defences).

No execution: the tests must parse (a truncated last line is cut off), contain an `assert`,
call the function under test, and have an assert whose condition is not a constant; only
plain statements and expressions are allowed, protected names are only ever called, and no
attribute, builtin, import or string reaches code, frame or private internals (the full rule:
astor_core.tasks.unit_test_generation and docs/REWARDS.md).

Public API: :class:`Screened`, :func:`screen_tests`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from astor_core.tasks.base import (
    Reward,
)
from astor_core.tasks.ut_config import UnitTestConfig
from astor_core.tasks.ut_names import (
    _format_is_plain,
    _module_allows,
    _reference_names,
    _test_functions,
)

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Screened:
    """Tests that passed static screening, ready to run."""

    source: str
    """The (possibly truncated) test program."""
    n_asserts: int
    """Number of assert statements."""


def screen_tests(
    completion: str,
    entry_point: str,
    config: UnitTestConfig | None = None,
    reference: str = "",
) -> Screened | Reward:
    """Static checks on generated tests: a Screened program, or the zero Reward explaining why
    not. `reference` is the code under test (with its setup): every name it binds is held to
    the same rule as the entry point.

    >>> screen_tests("assert f(1) == 2\\nassert f(", "f")
    Screened(source='assert f(1) == 2', n_asserts=1)
    >>> screen_tests("assert True", "f").reason
    'trivial'
    >>> screen_tests("candidate = f\\nassert candidate(1) == 2", "f").n_asserts
    1
    >>> screen_tests("assert f.__code__.co_consts == (None, 1)", "f").info["detail"]
    'attribute .co_consts'
    >>> screen_tests("assert str(f) > ''", "f").info["detail"]
    'f is used other than by calling it'
    >>> screen_tests("import operator\\nassert operator.attrgetter('co_code')(g) == b''", "f").reason
    'forbidden'
    >>> screen_tests("print(f(1))", "f").reason
    'invalid_format'
    """
    cfg = config or UnitTestConfig()
    tree, source = _parse_prefix(completion, cfg.salvage_truncated)
    if tree is None:
        return Reward(0.0, "invalid_format", False, {"detail": "tests do not parse"})
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    if not asserts:
        return Reward(0.0, "invalid_format", False, {"detail": "no assert statement"})
    screen = _Screen(tree, entry_point, reference, cfg)
    problem = screen.problem()
    if problem:
        return Reward(0.0, "forbidden", False, {"detail": problem})
    if not screen.calls_entry_point():
        return Reward(0.0, "trivial", False, {"detail": f"tests never call {entry_point}"})
    if all(not any(isinstance(n, ast.Name) for n in ast.walk(a.test)) for a in asserts):
        return Reward(0.0, "trivial", False, {"detail": "every assert has a constant condition"})
    return Screened(source=source, n_asserts=len(asserts))


def _parse_prefix(text: str, salvage: bool) -> tuple[ast.Module | None, str]:
    lines = text.splitlines()
    stops = range(len(lines), 0, -1) if salvage else [len(lines)]
    for stop in stops:
        source = "\n".join(lines[:stop]).strip("\n")
        try:
            return ast.parse(source), source
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
    return None, ""


_ALLOWED_NODES: tuple[type, ...] = (
    # statements
    ast.Module, ast.Assert, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.For,
    ast.While, ast.If, ast.Pass, ast.Break, ast.Continue, ast.Import, ast.ImportFrom,
    ast.FunctionDef, ast.Return, ast.Try, ast.ExceptHandler, ast.Raise, ast.Delete,
    # expressions
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict,
    ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Compare, ast.Call,
    ast.JoinedStr, ast.FormattedValue, ast.Constant, ast.Attribute, ast.Subscript,
    ast.Starred, ast.Name, ast.List, ast.Tuple, ast.Slice,
    # parts
    ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop, ast.comprehension,
    ast.arguments, ast.arg, ast.keyword, ast.alias,
)  # fmt: skip
"""Node types a test may contain: no classes, `with`, `global`/`nonlocal`, `yield`, `await`,
`match` (none is needed to call a function and compare what it returns)."""

_INTERNAL_ATTRIBUTE = re.compile(r"_|(co|f|gi|cr|ag|tb)_")
"""Attribute names that reach private state or code, frame, generator or traceback internals."""

_DUNDER = re.compile(r"(?<![A-Za-z0-9_])__(?!main__)[A-Za-z][A-Za-z0-9_]*__(?![A-Za-z0-9_])")
"""A dunder name inside a string (what getattr-like routes would be handed); `"__main__"`, as
in `if __name__ == "__main__":`, names no attribute."""


class _Screen:
    """One pass of the whitelist over a test module (see the module docstring, layer 1)."""

    def __init__(self, tree: ast.Module, entry_point: str, reference: str, cfg: UnitTestConfig):
        self.tree = tree
        self.cfg = cfg
        self.parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        protected, modules, free = _reference_names(reference, entry_point, cfg)
        self.protected, self.modules, self.free = protected, dict(modules), set(free)
        self.defs = _test_functions(tree)
        self.roots = {name: name for name in self.protected}
        """Each name that stands for code under test -> the reference's name it stands for."""
        self.entry_point = entry_point
        self.bound: set[str] = set()

    def problem(self) -> str:
        """The first rule the tests break, or ""."""
        for node in ast.walk(self.tree):
            if not isinstance(node, _ALLOWED_NODES):
                return f"{type(node).__name__} is not allowed in tests"
        found = self._imports() or self._aliases()
        if found:
            return found
        self.bound = bound = self._bound_names()
        for node in ast.walk(self.tree):
            found = self._node_problem(node, bound)
            if found:
                return found
        return ""

    def calls_entry_point(self) -> bool:
        """Whether the tests call the entry point, under its name or an alias, or hand it to a
        test function or a built-in that can only call it."""
        names = {n for n, root in self.roots.items() if root == self.entry_point}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
                parent = self.parents.get(id(node))
                if not isinstance(parent, ast.Assign) and self._call_position(node, parent):
                    return True
        return False

    def _imports(self) -> str:
        allowed = set(self.cfg.allowed_imports)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name not in allowed:
                        return f"import of {alias.name}"
                    name = alias.asname or alias.name
                    if self.modules.get(name, alias.name) != alias.name:
                        return f"{name} names two modules"
                    self.modules[name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level or module not in allowed:
                    return f"import from {module or 'a relative module'}"
                for alias in node.names:
                    if not _module_allows(module, alias.name, self.cfg):
                        return f"import of {module}.{alias.name}"
                    self.free.add(alias.asname or alias.name)
        clash = set(self.roots) & (set(self.modules) | self.free)
        return f"the tests rebind {sorted(clash)[0]}" if clash else ""

    def _aliases(self) -> str:
        """Grow `roots` with `candidate = f` targets and the parameters of test functions that
        receive f, until nothing changes."""
        while True:
            before = len(self.roots)
            for node in ast.walk(self.tree):
                for name, root in self._new_aliases(node).items():
                    if name in self.modules or name in self.free:
                        return f"the tests rebind {name}"
                    known = self.roots.setdefault(name, root)
                    if known != root:
                        return f"{name} stands for both {known} and {root}"
            if len(self.roots) == before:
                return ""

    def _new_aliases(self, node: ast.AST) -> dict[str, str]:
        if self._is_alias(node):
            assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)
            return {
                t.id: self.roots[node.value.id] for t in node.targets if isinstance(t, ast.Name)
            }
        if not isinstance(node, ast.Call) or self._test_function(node) is None:
            return {}
        params = self._parameters(node)
        handed = [(params[0][i], a) for i, a in enumerate(node.args) if i < len(params[0])]
        handed += [(k.arg, k.value) for k in node.keywords if k.arg in params[1]]
        return {
            param: self.roots[a.id]
            for param, a in handed
            if param and isinstance(a, ast.Name) and a.id in self.roots
        }

    def _is_alias(self, node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Name)
            and node.value.id in self.roots
            and all(isinstance(t, ast.Name) for t in node.targets)
        )

    def _test_function(self, call: ast.Call) -> ast.FunctionDef | None:
        if isinstance(call.func, ast.Name) and call.func.id not in self.roots:
            return self.defs.get(call.func.id)
        return None

    def _parameters(self, call: ast.Call) -> tuple[list[str], set[str]]:
        """(positional parameters, keyword-passable parameters) of the test function called."""
        definition = self._test_function(call)
        assert definition is not None
        args = definition.args
        positional = [a.arg for a in (*args.posonlyargs, *args.args)]
        return positional, {a.arg for a in (*args.args, *args.kwonlyargs)}

    def _bound_names(self) -> set[str]:
        bound = set(self.free)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                bound.add(node.id)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.FunctionDef | ast.ExceptHandler) and node.name:
                bound.add(node.name)
        return bound

    def _node_problem(self, node: ast.AST, bound: set[str]) -> str:
        parent = self.parents.get(id(node))
        if isinstance(node, ast.Name):
            return self._name_problem(node, parent, bound)
        if isinstance(node, ast.FunctionDef | ast.ExceptHandler) and node.name in self.roots:
            return f"the tests rebind {node.name}"
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            return "decorators are not allowed in tests"
        if isinstance(node, ast.Attribute):
            if _INTERNAL_ATTRIBUTE.match(node.attr):
                return f"attribute .{node.attr}"
            if node.attr in ("format", "format_map") and not (
                isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and _format_is_plain(node.value.value)
            ):
                return "str.format on a template that is not a plain literal"
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if _DUNDER.search(text):
                return "a string spelling a dunder name"
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "type"
            and (len(node.args) != 1 or node.keywords)
        ):
            return "type() with other than one argument"
        return ""

    def _name_problem(self, node: ast.Name, parent: ast.AST | None, bound: set[str]) -> str:
        name = node.id
        if name in self.roots:
            if isinstance(node.ctx, ast.Load) and self._call_position(node, parent):
                return ""
            stored = isinstance(node.ctx, ast.Store) and name not in self.protected
            if stored and parent is not None and self._is_alias(parent):
                return ""
            return f"{name} is used other than by calling it"
        if name in self.modules:
            if (
                isinstance(node.ctx, ast.Load)
                and isinstance(parent, ast.Attribute)
                and parent.value is node
                and _module_allows(self.modules[name], parent.attr, self.cfg)
            ):
                return ""
            return f"module {name} is used other than through an allowed attribute"
        if name in bound or name == "__name__":
            return ""
        if name in self.cfg.allowed_builtins and isinstance(node.ctx, ast.Load):
            return ""
        return f"name {name} is not allowed in tests"

    def _call_position(self, node: ast.Name, parent: ast.AST | None) -> bool:
        """Called (`f(...)`), aliased (`c = f`) or handed to a test function (`check(f)`)."""
        if isinstance(parent, ast.Call) and parent.func is node:
            return True
        if isinstance(parent, ast.Assign) and parent.value is node:
            return self._is_alias(parent)
        if self._handed_to_caller(node, parent):
            return True
        if isinstance(parent, ast.keyword):
            parent = self.parents.get(id(parent))
        return (
            isinstance(parent, ast.Call)
            and parent.func is not node
            and self._test_function(parent) is not None
            and all(not (isinstance(a, ast.Starred) and a.value is node) for a in parent.args)
            and self._hands_to_parameter(parent, node)
        )

    def _handed_to_caller(self, node: ast.Name, parent: ast.AST | None) -> bool:
        """`map(f, xs)`, `filter(f, xs)`, `sorted(xs, key=f)`, `min`/`max(..., key=f)`,
        `functools.reduce(f, xs)`: built-ins that only ever call what they are handed."""
        if isinstance(parent, ast.keyword):
            call = self.parents.get(id(parent))
            return (
                parent.arg == "key"
                and isinstance(call, ast.Call)
                and self._builtin(call.func) in ("sorted", "min", "max")
            )
        if not isinstance(parent, ast.Call) or not parent.args or parent.args[0] is not node:
            return False
        func = parent.func
        if self._builtin(func) in ("map", "filter"):
            return True
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and self.modules.get(func.value.id) == "functools"
            and func.attr == "reduce"
        )

    def _builtin(self, func: ast.expr) -> str:
        """The built-in a call's callee names ("" if it is anything else, e.g. rebound)."""
        builtin = isinstance(func, ast.Name) and func.id in self.cfg.allowed_builtins
        if builtin and func.id not in self.bound and func.id not in self.roots:
            return func.id
        return ""

    def _hands_to_parameter(self, call: ast.Call, node: ast.Name) -> bool:
        positional, by_keyword = self._parameters(call)
        for i, a in enumerate(call.args):
            if a is node:
                return i < len(positional)
        return any(k.value is node and k.arg in by_keyword for k in call.keywords)
