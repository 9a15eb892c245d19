"""Unit-test generation: write asserts for a given function; rewarded by mutants killed.

The completion (the model's tests) is untrusted, so it is the sandboxed *program*; the
function under test (the reference, a behaviour-identical twin of it, or one mutant) is
trusted *setup*, and a single trusted `pass` check confirms that the tests ran to the end
without an assertion failing.

A test earns reward only for what it observes by *calling* the code. Three layers keep it
from telling the reference from a mutant any other way (reading `f.__code__`, comparing
bytecode, line numbers, addresses):

1. Static screening, no execution (`screen_tests`), a whitelist: the tests must parse (a
   truncated last line is cut off), contain an `assert`, call the function under test, and
   have an assert whose condition is not a constant (else "trivial"). Only plain statements
   and expressions are allowed (no classes, `with`, `global`, decorators); the function under
   test and every name the reference binds are only ever *called* (or aliased,
   `candidate = f`, or handed to a test-defined function whose parameter is then held to the
   same rule); other names must be bound by the tests, be whitelisted builtins (no `getattr`,
   `id`, `hash`, `vars`, `eval`...) or modules from `allowed_imports`, whose attributes are
   limited to their public, non-module ones minus getters by name (`operator.attrgetter`...);
   no attribute starting with `_` or naming code, frame, generator or traceback internals
   (`co_*`, `f_*`, `gi_*`, `tb_*`...); `str.format` only on a literal template without
   attribute or index fields; no string spelling a dunder name. Anything else: "forbidden".
2. What runs is indistinguishable by introspection: the reference is run in the same
   `mutation.canonical` form as the mutants (same names, module, line numbers, no source),
   and `_GUARD`, appended to every setup, installs an audit hook that refuses reads of
   `__code__`, `__defaults__` and `__kwdefaults__` of any function of the tests' namespace
   and of generator and frame internals.
3. The tests must pass on the reference *and* on `mutation.behaviour_twin` of it (same
   behaviour, different bytecode, constants, locals and line numbers); failing only on the
   twin is "forbidden", failing on the reference is 0 with the sandbox's reason.

Mutants come from astor_core.tasks.mutation; the ones the record's own reference tests do not
kill are treated as equivalent and dropped (cached per record). Reward = the fraction of the
remaining mutants the tests kill (fail on); with no mutants left the reward is 1 for tests
that pass on the reference.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import importlib
import re
import string
import types
from collections import OrderedDict
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
from astor_core.tasks.mutation import (
    Mutant,
    MutationConfig,
    behaviour_twin,
    canonical,
    generate_mutants,
)

if TYPE_CHECKING:
    from astor_core.sandbox import Sandbox

_DONE = Check("pass")
"""The trusted check confirming that the program (the tests) completed."""

_GUARD = """
def _astor_guard(namespace):
    import sys
    kind = type
    function = kind(_astor_guard)
    refuse = AttributeError
    own = frozenset(("__code__", "__defaults__", "__kwdefaults__"))
    internals = frozenset(
        ("gi_code", "gi_frame", "cr_code", "cr_frame", "ag_code", "ag_frame", "tb_frame", "f_code")
    )

    def hook(event, args):
        if event == "object.__getattr__":
            name = args[1]
            if name in internals or (
                name in own and kind(args[0]) is function and args[0].__globals__ is namespace
            ):
                raise refuse("unit tests may not read " + name)

    sys.addaudithook(hook)


_astor_guard(globals())
del _astor_guard
"""
"""Trusted code appended to the reference, its twin and every mutant: once the code under test
is defined, reading the code (or defaults) of any function in the tests' namespace raises. The
hook closes over its own references to `type` and the namespace, so the tests cannot rebind
what it uses, and it can never be removed."""

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


@dataclass
class UnitTestGenerationTask:
    """Generated asserts rewarded by the fraction of non-equivalent mutants they kill."""

    config: UnitTestConfig = field(default_factory=UnitTestConfig)
    """The verifier's constants."""
    name: str = "unit_test_generation"
    """Task name (one of astor_core.TASKS)."""
    _cache: OrderedDict[str, tuple[Mutant, ...]] = field(default_factory=OrderedDict, repr=False)

    def format_prompt(self, record: Mapping[str, Any]) -> str:
        """The text the model continues: the reference source plus a tests header."""
        return str(_payload(record)["prompt"])

    def score_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        completions: Sequence[str],
        sandbox: Sandbox | None = None,
    ) -> list[Reward]:
        """Screen; run on the reference and its twin; then on the filtered mutants; all in
        batches."""
        check_lengths(records, completions)
        payloads = [_payload(r) for r in records]
        rewards: dict[int, Reward] = {}
        screened: dict[int, Screened] = {}
        for i, (payload, completion) in enumerate(zip(payloads, completions, strict=True)):
            result = screen_tests(
                completion, payload["entry_point"], self.config, _reference(payload)
            )
            if isinstance(result, Reward):
                rewards[i] = result
            else:
                screened[i] = result
        if screened:
            rewards.update(self.run_screened(records, screened, sandbox))
        return [rewards[i] for i in range(len(records))]

    def run_screened(
        self,
        records: Sequence[Mapping[str, Any]],
        tests: Mapping[int, Screened],
        sandbox: Sandbox | None = None,
    ) -> dict[int, Reward]:
        """Rewards of the tests `tests[i]` for `records[i]`, which passed the static screen:
        layers 2 and 3 (guarded setup, reference and twin), then the mutants."""
        box = resolve_sandbox(sandbox)
        payloads = {i: _payload(records[i]) for i in tests}
        on_ref = {
            i: (_setup(payloads[i], canonical(payloads[i]["code"])), s.source)
            for i, s in tests.items()
        }
        on_twin = {
            i: (_setup(payloads[i], behaviour_twin(payloads[i]["code"])), s.source)
            for i, s in tests.items()
            if self.config.check_twin
        }
        outcomes = run_unique([*on_ref.values(), *on_twin.values()], self._job, box)
        rewards: dict[int, Reward] = {}
        valid: dict[int, Screened] = {}
        for i, s in tests.items():
            verdict = _reference_verdict(outcomes[on_ref[i]], outcomes.get(on_twin.get(i)))
            if verdict is None:
                valid[i] = s
            else:
                rewards[i] = verdict
        # the mutants that the reference tests kill, then the tests on each of them
        mutants = self.filtered_mutants([records[i] for i in valid], box)
        keys = [
            (_setup(payloads[i], m.source), valid[i].source)
            for i, ms in zip(valid, mutants, strict=True)
            for m in ms
        ]
        on_mutants = run_unique(keys, self._job, box)
        for i, ms in zip(valid, mutants, strict=True):
            killed = [
                not on_mutants[(_setup(payloads[i], m.source), valid[i].source)].all_passed
                for m in ms
            ]
            rewards[i] = mutation_reward(killed, valid[i].n_asserts, [m.description for m in ms])
        return rewards

    def filtered_mutants(
        self, records: Sequence[Mapping[str, Any]], sandbox: Sandbox | None = None
    ) -> list[tuple[Mutant, ...]]:
        """Per record, the mutants its reference tests kill (cached); one sandbox batch for all misses."""
        keys = [self._cache_key(r) for r in records]
        missing = {k: r for k, r in zip(keys, records, strict=True) if k not in self._cache}
        if missing:
            self._fill_cache(missing, resolve_sandbox(sandbox))
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
        return out

    def _fill_cache(self, records: Mapping[str, Mapping[str, Any]], box: Sandbox) -> None:
        plans: dict[str, tuple[dict[str, Any], tuple[str, ...], list[Mutant]]] = {}
        jobs: list[Job] = []
        for key, record in records.items():
            payload = _payload(record)
            tests = tuple(parse_tests(record))
            ms = generate_mutants(payload["code"], self.config.mutation)
            plans[key] = (payload, tests, ms)
            if tests:
                checks = tuple(Check(t) for t in tests)
                setup = payload.get("setup", "")
                jobs.append(
                    Job(
                        program=payload["code"],
                        setup=setup,
                        checks=checks,
                        limits=self.config.limits,
                    )
                )
                jobs.extend(
                    Job(program=m.source, setup=setup, checks=checks, limits=self.config.limits)
                    for m in ms
                )
        outcomes = iter(box.run_many(jobs)) if jobs else iter(())
        for key, (_, tests, ms) in plans.items():
            if not tests:  # nothing to filter with: every mutant is kept
                self._cache[key] = tuple(ms)
                continue
            reference: Outcome = next(outcomes)
            if not reference.all_passed:
                raise RecordError(
                    f"record {record_id(records[key])}: the reference code fails its own tests "
                    f"({reference.status}: {reference.detail})"
                )
            kept = []
            for m in ms:
                outcome = next(outcomes)
                if outcome.all_passed:
                    continue  # not killed by the reference tests: treated as equivalent
                if outcome.status == "timeout" and self.config.drop_timeout_mutants:
                    continue
                kept.append(m)
            self._cache[key] = tuple(kept)

    def _cache_key(self, record: Mapping[str, Any]) -> str:
        payload = _payload(record)
        blob = repr(
            (payload["code"], payload.get("setup", ""), parse_tests(record), self.config.mutation)
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _job(self, key: tuple[str, str]) -> Job:
        return Job(program=key[1], setup=key[0], checks=(_DONE,), limits=self.config.limits)


def mutation_reward(
    killed: Sequence[bool], n_asserts: int, descriptions: Sequence[str] = ()
) -> Reward:
    """Reward for tests that pass on the reference: the fraction of mutants they kill.

    >>> mutation_reward([True, True, False], 4).value
    0.6666666666666666
    >>> mutation_reward([True, True], 2).reason, mutation_reward([], 1).value
    ('passed', 1.0)
    >>> mutation_reward([False], 1).reason
    'survived'
    """
    n = len(killed)
    n_killed = sum(1 for k in killed if k)
    value = n_killed / n if n else 1.0
    info: dict[str, Any] = {"n_mutants": n, "n_killed": n_killed, "n_asserts": n_asserts}
    if descriptions:
        info["survivors"] = [d for d, k in zip(descriptions, killed, strict=True) if not k]
    return Reward(value, "passed" if n_killed == n else "survived", n_killed == n, info)


def _reference_verdict(on_ref: Outcome, on_twin: Outcome | None) -> Reward | None:
    """None when the tests pass on the reference and its twin, else the zero Reward saying why.

    >>> ok, bad = Outcome("ok", (True,)), Outcome("error", (), "AssertionError: ")
    >>> _reference_verdict(ok, ok) is None, _reference_verdict(bad, ok).reason
    (True, 'failed')
    >>> _reference_verdict(ok, bad).reason
    'forbidden'
    """
    if not on_ref.all_passed:
        # an assertion (or any exception) on the reference is a failed test file
        reason = "failed" if on_ref.status == "error" else reason_for_status(on_ref.status, False)
        return Reward(0.0, reason, False, {"detail": f"fails on the reference: {on_ref.detail}"})
    if on_twin is None or on_twin.all_passed:
        return None
    if on_twin.status in ("timeout", "memory"):  # a resource limit, not introspection
        reason = reason_for_status(on_twin.status, False)
        return Reward(0.0, reason, False, {"detail": "hit a limit on the reference's twin"})
    detail = (
        "passes on the reference but fails on a behaviour-identical recompilation of it (it "
        f"reads how the code is compiled, or depends on what varies between runs): {on_twin.detail}"
    )
    return Reward(0.0, "forbidden", False, {"detail": detail})


def _reference(payload: Mapping[str, Any]) -> str:
    """The code under test as the tests see it (setup and code), for the static screen."""
    return f"{payload.get('setup', '')}\n{payload['code']}"


def _setup(payload: Mapping[str, Any], code: str) -> str:
    """What runs before the tests: the record's setup, the code under test, then `_GUARD`."""
    setup = payload.get("setup", "")
    return f"{setup}\n{code}\n{_GUARD}" if setup else f"{code}\n{_GUARD}"


def _payload(record: Mapping[str, Any]) -> dict[str, Any]:
    payload = parse_payload(record, ["prompt", "code", "entry_point"])
    if not isinstance(payload["code"], str) or not payload["code"].strip():
        raise RecordError(f"record {record_id(record)}: payload.code must be non-empty source")
    return payload
