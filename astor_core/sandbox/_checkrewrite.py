"""Rewrite trusted check code so that untrusted values cannot forge a verdict (stdlib only).

Every comparison, arithmetic operator and truth test in a check is routed through harness
helpers that first require plain built-in values; module attribute loads go through a helper
that returns the attribute the real module had before untrusted code ran; builtin names become
constants. Helpers are referenced as placeholder string constants that the harness replaces by
the real objects after compiling (`_harness.compile_check`), so no name lookup can redirect them.
Each compile draws its own random placeholder prefix, which the check's text (model text, e.g.
a CRUXEval input prediction) cannot contain: its own string literals are never substituted.

This module holds no state: the sandbox child runs it, and classes defined here are reachable
from untrusted code (``object.__subclasses__``), so it must never reference harness objects.
"""

import ast
import builtins

PLACEHOLDER = "\x00astor:"
"""Start of the string constants that stand for helpers (``keep``...) and builtins (``b:len``);
the harness appends a per-compile random token (see ``_harness.compile_check``)."""

BUILTIN_NAMES = frozenset(dir(builtins))
"""Names that, when not bound by the check itself, resolve to the real builtin."""


def _const(prefix: str, name: str) -> ast.Constant:
    return ast.Constant(prefix + name)


def _call(prefix: str, helper: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_const(prefix, helper), args=list(args), keywords=[])


def _bound_names(tree: ast.AST) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif (
            isinstance(node, ast.ExceptHandler)
            and node.name
            or isinstance(node, (ast.MatchAs, ast.MatchStar))
            and node.name
        ):
            names.add(node.name)
    return names


class _Rewriter(ast.NodeTransformer):
    def __init__(self, bound: set, prefix: str):
        self.bound = bound
        self.prefix = prefix

    def _test(self, node: ast.expr) -> ast.expr:
        return _call(self.prefix, "keep", self.visit(node))

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if (
            isinstance(node.ctx, ast.Load)
            and node.id in BUILTIN_NAMES
            and node.id not in self.bound
        ):
            return ast.copy_location(_const(self.prefix, "b:" + node.id), node)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        args = [self.visit(node.left), ops, *[self.visit(c) for c in node.comparators]]
        return ast.copy_location(_call(self.prefix, "cmp", *args), node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        op = ast.Constant(type(node.op).__name__)
        return ast.copy_location(
            _call(self.prefix, "binop", op, self.visit(node.left), self.visit(node.right)), node
        )

    def visit_Call(self, node: ast.Call) -> ast.expr:
        func = self.visit(node.func)
        args = [self.visit(a) for a in node.args]
        keywords = [self.visit(k) for k in node.keywords]
        return ast.copy_location(
            ast.Call(func=_const(self.prefix, "call"), args=[func, *args], keywords=keywords),
            node,
        )

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        node.operand = self._test(node.operand)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        node.values = [self._test(v) for v in node.values]
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        if isinstance(node.ctx, ast.Load):
            return ast.copy_location(
                _call(self.prefix, "attr", self.visit(node.value), ast.Constant(node.attr)), node
            )
        self.generic_visit(node)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        if isinstance(node.target, ast.Name):
            load = ast.Name(node.target.id, ast.Load())
            value = _call(
                self.prefix,
                "binop",
                ast.Constant(type(node.op).__name__),
                self.visit(load),
                self.visit(node.value),
            )
            return ast.copy_location(
                ast.Assign([ast.Name(node.target.id, ast.Store())], value), node
            )
        self.generic_visit(node)
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        node.test = self._test(node.test)
        if node.msg is not None:
            node.msg = self.visit(node.msg)
        return node

    def visit_If(self, node):
        node.test = self._test(node.test)
        node.body = [self.visit(s) for s in node.body]
        node.orelse = [self.visit(s) for s in node.orelse]
        return node

    visit_While = visit_If

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        node.test = self._test(node.test)
        node.body = self.visit(node.body)
        node.orelse = self.visit(node.orelse)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.comprehension:
        node.target = self.visit(node.target)
        node.iter = self.visit(node.iter)
        node.ifs = [self._test(i) for i in node.ifs]
        return node


def imported_modules(tree: ast.AST) -> tuple:
    """Absolute module names a check imports, with their parent packages (``a.b`` -> ``a``,
    ``a.b``; ``from a import b`` also lists ``a.b`` in case it is a submodule)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            full = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            full = [node.module] + [node.module + "." + a.name for a in node.names if a.name != "*"]
        else:
            continue
        for name in full:
            parts = name.split(".")
            names.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
    return tuple(dict.fromkeys(names))


def restored_modules(tree: ast.AST) -> tuple:
    """(module, names) pairs for what a check imports: ``import a.b`` restores all of ``a`` and
    ``a.b`` (names None), ``from a import x, y`` only ``a.x`` and ``a.y`` (and what they hold).

    >>> restored_modules(ast.parse("import os.path\\nfrom random import randint as r"))
    (('os', None), ('os.path', None), ('random', ('randint',)))
    """
    found: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                for i in range(len(parts)):
                    found[".".join(parts[: i + 1])] = None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = tuple(a.name for a in node.names if a.name != "*")
            if len(names) < len(node.names):  # a star import reads the whole module
                found[node.module] = None
            elif node.module not in found:
                found[node.module] = names
            elif found[node.module] is not None:
                found[node.module] = tuple(dict.fromkeys(found[node.module] + names))
    return tuple(found.items())


def free_names(tree: ast.AST) -> tuple:
    """Names a check reads but neither binds nor gets from builtins (they come from the
    program's namespace, e.g. the entry point, or a module the check uses without importing).

    >>> free_names(ast.parse("import math\\nx = 1\\nassert f(x) == math.pi + len(y)"))
    ('f', 'y')
    """
    bound = _bound_names(tree)
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id not in bound
            and node.id not in BUILTIN_NAMES
        ):
            names.append(node.id)
    return tuple(dict.fromkeys(names))


def rewrite_check(source: str, kind: str, prefix: str = PLACEHOLDER) -> ast.AST:
    """Parse a trusted check and route every comparison, operator, truth test, module
    attribute and builtin name through the harness helpers (as constants named by `prefix`)."""
    tree = ast.parse(source, mode="eval" if kind == "eval" else "exec")
    new = _Rewriter(_bound_names(tree), prefix).visit(tree)
    if kind == "eval":
        new.body = _call(prefix, "keep", new.body)
    return ast.fix_missing_locations(new)
