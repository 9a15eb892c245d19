"""The template grammar of the synthetic suite (astor_core.data.synthetic): function shapes
per difficulty level, the values their slots take, and :class:`Func`, one concrete function
drawn from a template (with the commit edits' guard and docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPS: dict[str, str] = {"+": "plus", "-": "minus", "*": "times"}
"""Arithmetic operators and their English words."""
CMPS: dict[str, str] = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}
"""Comparison operators and their English words."""


@dataclass(frozen=True)
class Template:
    """A function shape: parameter kinds, body and docstring as format strings, slots."""

    key: str
    level: int
    params: tuple[str, ...]
    """Parameter kinds: int, small, big, str, list, nelist (non-empty list)."""
    returns: str
    """Return kind: int, str or list."""
    body: str
    """Body lines (no base indent) with {p0}, {p1} and slot placeholders."""
    doc: str
    """One-sentence spec; slot words are available as {slot_w}."""
    slots: tuple[tuple[str, str], ...] = ()
    """(slot name, slot kind) pairs; kinds are keys of SLOT_VALUES."""


def _t(
    key: str, level: int, params: str, returns: str, body: str, doc: str, **slots: str
) -> Template:
    return Template(key, level, tuple(params.split()), returns, body, doc, tuple(slots.items()))


TEMPLATES: tuple[Template, ...] = (
    _t(
        "affine0",
        0,
        "int",
        "int",
        "return {p0} {op} {c}",
        "Return {p0} {op_w} {c}.",
        op="op",
        c="c",
    ),
    _t("left0", 0, "int", "int", "return {c} {op} {p0}", "Return {c} {op_w} {p0}.", op="op", c="c"),
    _t(
        "concat0",
        0,
        "str",
        "str",
        "return {p0} + '{lit}'",
        "Return {p0} followed by '{lit}'.",
        lit="lit",
    ),
    _t(
        "affine1",
        1,
        "int",
        "int",
        "return {p0} * {c} {op} {d}",
        "Return {p0} times {c} {op_w} {d}.",
        c="c",
        op="addop",
        d="c",
    ),
    _t(
        "paren1",
        1,
        "int",
        "int",
        "return ({p0} {op} {c}) * {d}",
        "Return {p0} {op_w} {c}, all times {d}.",
        op="addop",
        c="c",
        d="c",
    ),
    _t("pair1", 1, "int int", "int", "return {p0} {op} {p1}", "Return {p0} {op_w} {p1}.", op="op"),
    _t("upper1", 1, "str", "str", "return {p0}.upper()", "Return {p0} in upper case."),
    _t("reverse1", 1, "str", "str", "return {p0}[::-1]", "Return {p0} reversed."),
    _t("repeat1", 1, "str", "str", "return {p0} * {c}", "Return {p0} repeated {c} times.", c="c3"),
    _t(
        "len1",
        1,
        "str",
        "int",
        "return len({p0}) {op} {c}",
        "Return the length of {p0} {op_w} {c}.",
        op="addop",
        c="c",
    ),
    _t("sum1", 1, "list", "int", "return sum({p0})", "Return the sum of {p0}."),
    _t("max1", 1, "nelist", "int", "return max({p0})", "Return the largest item of {p0}."),
    _t("first1", 1, "nelist", "int", "return {p0}[0]", "Return the first item of {p0}."),
    _t("last1", 1, "nelist", "int", "return {p0}[-1]", "Return the last item of {p0}."),
    _t(
        "append1", 1, "list", "list", "return {p0} + [{c}]", "Return {p0} with {c} appended.", c="c"
    ),
    _t(
        "sorted1",
        1,
        "list",
        "list",
        "return sorted({p0})",
        "Return {p0} sorted in increasing order.",
    ),
    _t(
        "cond2",
        2,
        "int",
        "int",
        "if {p0} {cmp} {c}:\n    return {p0} {op} {d}\nreturn {p0} {op2} {e}",
        "If {p0} is {cmp_w} {c}, return {p0} {op_w} {d}; otherwise return {p0} {op2_w} {e}.",
        cmp="cmp",
        c="c",
        op="op",
        d="c",
        op2="op",
        e="c",
    ),
    _t(
        "clamp2",
        2,
        "int",
        "int",
        "if {p0} {cmp} {c}:\n    return {c}\nreturn {p0}",
        "If {p0} is {cmp_w} {c}, return {c}; otherwise return {p0}.",
        cmp="cmp",
        c="c",
    ),
    _t(
        "parity2",
        2,
        "int",
        "int",
        "if {p0} % 2 == 0:\n    return {p0} // 2\nreturn {p0} {op} {c}",
        "Return half of {p0} if it is even, else {p0} {op_w} {c}.",
        op="op",
        c="c",
    ),
    _t(
        "pick2",
        2,
        "int int",
        "int",
        "if {p0} {cmp} {p1}:\n    return {p0}\nreturn {p1}",
        "Return {p0} if it is {cmp_w} {p1}, else {p1}.",
        cmp="cmp",
    ),
    _t(
        "strcond2",
        2,
        "str",
        "str",
        "if len({p0}) {cmp} {c}:\n    return {p0}.upper()\nreturn {p0}",
        "Return {p0} in upper case if its length is {cmp_w} {c}, else {p0} unchanged.",
        cmp="cmp",
        c="c4",
    ),
    _t(
        "index2",
        2,
        "list",
        "int",
        "if {c} in {p0}:\n    return {p0}.index({c})\nreturn -1",
        "Return the index of {c} in {p0}, or -1 if it is absent.",
        c="c",
    ),
    _t(
        "sumloop3",
        3,
        "list",
        "int",
        "t = {c0}\nfor v in {p0}:\n    t += v * {c}\nreturn t",
        "Return {c0} plus the sum of each item of {p0} times {c}.",
        c0="c0",
        c="c",
    ),
    _t(
        "rangeloop3",
        3,
        "small",
        "int",
        "t = 0\nfor i in range({p0}):\n    t += i {op} {c}\nreturn t",
        "Return the sum of i {op_w} {c} for every i from 0 below {p0}.",
        op="op",
        c="c",
    ),
    _t(
        "maploop3",
        3,
        "list",
        "list",
        "r = []\nfor v in {p0}:\n    r.append(v {op} {c})\nreturn r",
        "Return a list of each item of {p0} {op_w} {c}.",
        op="op",
        c="c",
    ),
    _t(
        "strloop3",
        3,
        "str",
        "str",
        "r = ''\nfor ch in {p0}:\n    r = r + ch * {c}\nreturn r",
        "Return {p0} with each character repeated {c} times.",
        c="c3",
    ),
    _t(
        "revloop3",
        3,
        "str",
        "str",
        "r = ''\nfor ch in {p0}:\n    r = ch + r\nreturn r + '{lit}'",
        "Return {p0} reversed, followed by '{lit}'.",
        lit="lit",
    ),
    _t(
        "condsum4",
        4,
        "list",
        "int",
        "t = 0\nfor v in {p0}:\n    if v {cmp} {c}:\n        t += v\nreturn t",
        "Return the sum of the items of {p0} that are {cmp_w} {c}.",
        cmp="cmp",
        c="c",
    ),
    _t(
        "count4",
        4,
        "str",
        "int",
        "k = 0\nfor ch in {p0}:\n    if ch == '{ch}':\n        k += {c}\nreturn k",
        "Return {c} times the number of '{ch}' characters in {p0}.",
        ch="ch",
        c="c3",
    ),
    _t(
        "filter4",
        4,
        "list",
        "list",
        "r = []\nfor v in {p0}:\n    if v % 2 == {bit}:\n        r.append(v {op} {c})\nreturn r",
        "Return each {bit_w} item of {p0} {op_w} {c}, in order.",
        bit="bit",
        op="op",
        c="c",
    ),
    _t(
        "halve4",
        4,
        "big",
        "int",
        "k = 0\nwhile {p0} > {c}:\n    {p0} = {p0} // 2\n    k += 1\nreturn k",
        "Return how many halvings (rounding down) bring {p0} to at most {c}.",
        c="c",
    ),
    _t(
        "extreme4",
        4,
        "nelist",
        "int",
        "m = {p0}[0]\nfor v in {p0}:\n    if v {ext} m:\n        m = v\nreturn m",
        "Return the {ext_w} item of {p0}.",
        ext="ext",
    ),
    _t(
        "capital4",
        4,
        "str",
        "str",
        "r = ''\nfor ch in {p0}:\n    if ch == '{ch}':\n        r += ch.upper()\n    else:\n        r += ch\nreturn r",
        "Return {p0} with every '{ch}' in upper case.",
        ch="ch",
    ),
)
"""The template grammar, all levels."""

SLOT_VALUES: dict[str, tuple[tuple[Any, str], ...]] = {
    "c": tuple((i, str(i)) for i in range(1, 10)),
    "c0": tuple((i, str(i)) for i in range(0, 6)),
    "c3": tuple((i, str(i)) for i in range(1, 4)),
    "c4": tuple((i, str(i)) for i in range(0, 5)),
    "op": tuple(OPS.items()),
    "addop": (("+", "plus"), ("-", "minus")),
    "cmp": tuple(CMPS.items()),
    "lit": (("a", "a"), ("b", "b"), ("c", "c"), ("ab", "ab"), ("bc", "bc"), ("ca", "ca")),
    "ch": (("a", "a"), ("b", "b"), ("c", "c")),
    "bit": ((0, "even"), (1, "odd")),
    "ext": ((">", "largest"), ("<", "smallest")),
}
"""Values (and words) each slot kind can take."""

NUMERIC_SLOTS = frozenset({"c", "c0", "c3", "c4"})


@dataclass(frozen=True)
class Func:
    """A concrete generated function: a template with its names and slot values."""

    template: Template
    name: str
    params: tuple[str, ...]
    slots: tuple[tuple[str, Any], ...]
    guard: bool = False
    """An early-return guard was added in front of the body (commit edits)."""
    docstring: str = ""
    """A docstring line was added (commit edits)."""

    @property
    def slot_map(self) -> dict[str, Any]:
        return dict(self.slots)

    def _fmt(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"p{i}": p for i, p in enumerate(self.params)}
        kinds = dict(self.template.slots)
        for name, value in self.slots:
            out[name] = value
            out[f"{name}_w"] = dict(SLOT_VALUES[kinds[name]])[value]
        return out

    def body_lines(self) -> list[str]:
        lines = self.template.body.format(**self._fmt()).split("\n")
        if self.guard:
            lines = guard_lines(self) + lines
        if self.docstring:
            lines = [f'"""{self.docstring}"""'] + lines
        return lines

    def doc(self) -> str:
        return self.template.doc.format(**self._fmt())

    def signature(self) -> str:
        return f"def {self.name}({', '.join(self.params)}):"

    def body(self) -> str:
        return "".join(f"    {line}\n" for line in self.body_lines())

    def source(self) -> str:
        return self.signature() + "\n" + self.body()


def guard_lines(func: Func) -> list[str]:
    p0, kind = func.params[0], func.template.params[0]
    empty = {"int": "0", "str": "''", "list": "[]"}[func.template.returns]
    cond = f"{p0} < 0" if kind in ("int", "small", "big") else f"not {p0}"
    return [f"if {cond}:", f"    return {empty}"]


def guard_message(func: Func) -> str:
    p0, kind = func.params[0], func.template.params[0]
    if kind in ("int", "small", "big"):
        return f"Return early when {p0} is negative in {func.name}"
    return f"Return early when {p0} is empty in {func.name}"
