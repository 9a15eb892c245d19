"""Deterministic AST mutation of a reference implementation (mutation testing).

Each mutant applies exactly one operator at one site of the parsed source. Sites are
enumerated in `ast.walk` order, ordered by line; mutants that unparse to the original or to an
earlier mutant are dropped, and when there are more than `max_mutants` a subset is drawn with a
random generator seeded by the config seed and the source's hash, so the same source and
config always give the same mutants.

Operators (names used in MutationConfig.operators):
- arithmetic: `+`<->`-`, `*`->`/`, `/`->`*`, `//`->`/`, `%`->`//`, `**`->`*`, `&`<->`|`,
  `^`->`&`, `<<`<->`>>`, in binary and augmented assignments;
- compare_boundary: `<`<->`<=`, `>`<->`>=`, `==`<->`!=`, `in`<->`not in`, `is`<->`is not`;
- compare_negate: `<`->`>=`, `<=`->`>`, `>`->`<=`, `>=`->`<`;
- constant: integer and float constants c -> c + 1 and c - 1;
- string: a non-empty string constant -> "", an empty one -> "X" (docstrings and f-string
  parts are left alone);
- boolean: `and`<->`or`, `True`<->`False`;
- unary: `not x` -> `x`, `-x` -> `x`;
- return_value: `return <expr>` -> `return None`;
- delete_statement: a statement inside a function body -> `pass`;
- loop_control: `break`<->`continue`.

`canonical` is the form every mutant has (`ast.unparse`); `behaviour_twin` is a recompilation of
the same program that behaves identically but whose code objects differ (bytecode, constants,
local names, line numbers): a test that tells the two apart is not testing behaviour.
"""

from __future__ import annotations

import ast
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

OPERATORS: tuple[str, ...] = (
    "arithmetic",
    "compare_boundary",
    "compare_negate",
    "constant",
    "string",
    "boolean",
    "unary",
    "return_value",
    "delete_statement",
    "loop_control",
)
"""Every mutation operator this module implements."""

_ARITH: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,),
    ast.Sub: (ast.Add,),
    ast.Mult: (ast.Div,),
    ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Div,),
    ast.Mod: (ast.FloorDiv,),
    ast.Pow: (ast.Mult,),
    ast.BitAnd: (ast.BitOr,),
    ast.BitOr: (ast.BitAnd,),
    ast.BitXor: (ast.BitAnd,),
    ast.LShift: (ast.RShift,),
    ast.RShift: (ast.LShift,),
}
_BOUNDARY: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_NEGATE: dict[type, type] = {ast.Lt: ast.GtE, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.GtE: ast.Lt}


@dataclass(frozen=True)
class MutationConfig:
    """Which mutants to make of a reference implementation."""

    operators: tuple[str, ...] = OPERATORS
    """Mutation operators to apply (a subset of mutation.OPERATORS)."""
    max_mutants: int = 20
    """Cap on mutants per source; a deterministic subset is kept when there are more."""
    seed: int = 0
    """Seed (mixed with the source's hash) for choosing the subset when capping."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.operators) - set(OPERATORS))
        if unknown:
            raise ValueError(f"unknown mutation operators {unknown}; known: {OPERATORS}")
        if self.max_mutants < 0:
            raise ValueError("max_mutants must be >= 0")


@dataclass(frozen=True)
class Mutant:
    """One mutated version of the source."""

    operator: str
    """The operator that made it."""
    line: int
    """Line of the mutated node in the original source."""
    description: str
    """What changed, e.g. 'Add -> Sub'."""
    source: str
    """The mutated program (ast.unparse of the mutated tree)."""


# An edit: (operator, description, function mutating a node of a fresh tree in place,
# given that tree's child -> parent map).
_Apply = Callable[[ast.AST, dict[int, ast.AST]], None]
_Edit = tuple[str, str, _Apply]


def generate_mutants(source: str, config: MutationConfig | None = None) -> list[Mutant]:
    """All single-site mutants of `source` under `config`, deduplicated and capped.

    >>> for m in generate_mutants("def f(x):\\n    return x + 1"):
    ...     print(m.operator, "|", m.description, "|", m.source.splitlines()[-1].strip())
    return_value | return -> return None | return None
    delete_statement | delete line 2 | pass
    arithmetic | Add -> Sub | return x - 1
    constant | 1 -> 2 | return x + 2
    constant | 1 -> 0 | return x + 0
    """
    cfg = config or MutationConfig()
    tree = ast.parse(source)
    original = ast.unparse(tree)
    parents = _parents(tree)
    nodes = list(ast.walk(tree))
    sites = [
        (index, edit)
        for index, node in enumerate(nodes)
        for edit in _edits(node, parents, cfg.operators)
    ]
    sites.sort(key=lambda site: (getattr(nodes[site[0]], "lineno", 0), site[0]))
    seen = {original}
    mutants: list[Mutant] = []
    for index, (operator, description, apply) in sites:
        fresh = ast.parse(source)
        node = next(n for i, n in enumerate(ast.walk(fresh)) if i == index)
        line = getattr(node, "lineno", 0)
        apply(node, _parents(fresh))
        mutated = ast.unparse(fresh)
        if mutated in seen:
            continue
        seen.add(mutated)
        mutants.append(Mutant(operator, line, description, mutated))
    if len(mutants) <= cfg.max_mutants:
        return mutants
    digest = hashlib.sha256(source.encode()).hexdigest()
    keep = sorted(
        random.Random(f"{cfg.seed}:{digest}").sample(range(len(mutants)), cfg.max_mutants)
    )
    return [mutants[i] for i in keep]


TWIN_LOCAL = "_astor_twin"
"""Name of the dead local that `behaviour_twin` stores in each function (a fresh constant)."""

_DYNAMIC_SCOPE = frozenset({"locals", "vars", "dir", "eval", "exec", "globals"})
"""Names whose use lets a function see its own locals: a dead local would change what it sees."""


def canonical(source: str) -> str:
    """`source` as every mutant is written (`ast.unparse` of its tree): the reference and its
    mutants then differ only at the mutated site, not in formatting or line numbers.

    >>> canonical("def f(x):  # add one\\n\\n    return (x+1)\\n")
    'def f(x):\\n    return x + 1'
    """
    return ast.unparse(ast.parse(source))


def behaviour_twin(source: str, offset: int = 3) -> str:
    """A program that behaves as `source` does but compiles to different code objects.

    Each function (that does not look at its own locals) first stores a distinct constant in
    a dead local, which changes its bytecode, constants, local names and every later line
    number; `offset` blank lines shift the rest. Only introspection can tell the two apart.

    >>> print(behaviour_twin("def f(x):\\n    return x + 1", offset=1))
    <BLANKLINE>
    def f(x):
        _astor_twin = 31337
        return x + 1
    >>> behaviour_twin("f = lambda x: x", offset=0)
    'f = lambda x: x'
    """
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for number, node in enumerate(functions):
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names & _DYNAMIC_SCOPE or TWIN_LOCAL in names:
            continue
        has_doc = (
            isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
        )
        store = ast.Assign(
            targets=[ast.Name(TWIN_LOCAL, ast.Store())], value=ast.Constant(31337 + number)
        )
        node.body.insert(1 if has_doc else 0, store)
    return "\n" * offset + ast.unparse(ast.fix_missing_locations(tree))


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _edits(
    node: ast.AST, parents: dict[int, ast.AST], operators: tuple[str, ...]
) -> Iterator[_Edit]:
    ops = set(operators)
    if "arithmetic" in ops and isinstance(node, ast.BinOp | ast.AugAssign):
        for new in _ARITH.get(type(node.op), ()):
            yield (
                "arithmetic",
                f"{type(node.op).__name__} -> {new.__name__}",
                _set_attr("op", new()),
            )
    if isinstance(node, ast.Compare):
        for pos, op in enumerate(node.ops):
            if "compare_boundary" in ops and type(op) in _BOUNDARY:
                new = _BOUNDARY[type(op)]
                yield (
                    "compare_boundary",
                    f"{type(op).__name__} -> {new.__name__}",
                    _set_cmp(pos, new),
                )
            if "compare_negate" in ops and type(op) in _NEGATE:
                new = _NEGATE[type(op)]
                yield "compare_negate", f"{type(op).__name__} -> {new.__name__}", _set_cmp(pos, new)
    if isinstance(node, ast.Constant):
        yield from _constant_edits(node, parents, ops)
    if "boolean" in ops and isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield "boolean", f"{type(node.op).__name__} -> {new.__name__}", _set_attr("op", new())
    if "unary" in ops and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield "unary", f"drop {type(node.op).__name__}", _unwrap
    returns_value = isinstance(node, ast.Return) and node.value is not None
    if "return_value" in ops and returns_value and not _is_none(node.value):
        yield "return_value", "return -> return None", _set_attr("value", ast.Constant(None))
    if "loop_control" in ops and isinstance(node, ast.Break | ast.Continue):
        new = ast.Continue if isinstance(node, ast.Break) else ast.Break
        yield "loop_control", f"{type(node).__name__} -> {new.__name__}", _swap_stmt(new)
    if "delete_statement" in ops and isinstance(node, ast.stmt) and _deletable(node, parents):
        yield "delete_statement", f"delete line {node.lineno}", _swap_stmt(ast.Pass)


def _constant_edits(
    node: ast.Constant, parents: dict[int, ast.AST], ops: set[str]
) -> Iterator[_Edit]:
    parent = parents.get(id(node))
    value = node.value
    if isinstance(value, bool):
        if "boolean" in ops:
            yield "boolean", f"{value} -> {not value}", _set_attr("value", not value)
    elif isinstance(value, int | float):
        if "constant" in ops:
            for new in (value + 1, value - 1):
                yield "constant", f"{value!r} -> {new!r}", _set_attr("value", new)
    elif isinstance(value, str) and "string" in ops:
        if isinstance(parent, ast.JoinedStr | ast.FormattedValue | ast.Expr):
            return  # f-string parts and docstrings
        new_s = "" if value else "X"
        yield "string", f"{value!r} -> {new_s!r}", _set_attr("value", new_s)


def _is_none(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _deletable(node: ast.stmt, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    if parent is None or isinstance(parent, ast.Module) or isinstance(node, ast.Pass):
        return False
    return not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))


def _set_attr(name: str, value: object) -> _Apply:
    def apply(node: ast.AST, parents: dict[int, ast.AST]) -> None:
        setattr(node, name, value)

    return apply


def _set_cmp(pos: int, new: type) -> _Apply:
    def apply(node: ast.AST, parents: dict[int, ast.AST]) -> None:
        assert isinstance(node, ast.Compare)
        node.ops = [new() if i == pos else op for i, op in enumerate(node.ops)]

    return apply


def _unwrap(node: ast.AST, parents: dict[int, ast.AST]) -> None:
    """Replace a unary operation by its operand."""
    assert isinstance(node, ast.UnaryOp)
    _replace(node, parents, node.operand)


def _swap_stmt(new: type[ast.stmt]) -> _Apply:
    def apply(node: ast.AST, parents: dict[int, ast.AST]) -> None:
        _replace(node, parents, ast.copy_location(new(), node))

    return apply


def _replace(node: ast.AST, parents: dict[int, ast.AST], new: ast.AST) -> None:
    parent = parents[id(node)]
    for name, value in ast.iter_fields(parent):
        if value is node:
            setattr(parent, name, new)
            return
        if isinstance(value, list) and any(v is node for v in value):
            setattr(parent, name, [new if v is node else v for v in value])
            return
    raise LookupError("node not found in its parent")  # pragma: no cover
