"""The synthetic suite: small generated Python functions, shared by all four tasks.

One grammar of function templates (arithmetic, string and list operations, conditionals,
loops) feeds every task, so the skills overlap on purpose: evaluating a function helps
code_reasoning and unit_test_generation, writing one from its spec is code_generation, and
reading a diff between two versions of one is commit_message.

Difficulty d uses the templates of level d: 0 is `return x + 3`, 1 two operations or a
string/list builtin, 2 a conditional, 3 a loop, 4 a loop with a conditional (or a while
loop). Generation is deterministic in (seed, task, difficulty) and unlimited: items are
drawn until the requested number of distinct prompts exists.

The generator executes only the code it generated itself (trusted) to compute outputs;
model output never runs here.
"""

from __future__ import annotations

import copy
import difflib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from astor_core.data.schema import PromptFormat, make_record
from astor_core.data.templates import (
    NUMERIC_SLOTS,
    SLOT_VALUES,
    TEMPLATES,
    Func,
    guard_message,
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic generator (the vocabulary is kept small on purpose)."""

    function_names: tuple[str, ...] = ("f", "g", "h", "calc", "step", "apply")
    """Function names the generator uses."""
    int_params: tuple[str, ...] = ("x", "n")
    """Names of a single int parameter."""
    int_pairs: tuple[tuple[str, str], ...] = (("x", "y"), ("n", "m"))
    """Names of two int parameters."""
    str_params: tuple[str, ...] = ("s", "w")
    """Names of a str parameter."""
    list_params: tuple[str, ...] = ("xs", "nums")
    """Names of a list parameter."""
    int_range: tuple[int, int] = (-5, 20)
    """Inclusive range of int arguments."""
    small_range: tuple[int, int] = (0, 6)
    """Inclusive range of int arguments used as a loop count."""
    big_range: tuple[int, int] = (1, 60)
    """Inclusive range of int arguments halved in a while loop."""
    alphabet: str = "abc"
    """Characters of str arguments and string literals."""
    str_len: tuple[int, int] = (0, 5)
    """Inclusive length range of str arguments."""
    list_len: tuple[int, int] = (0, 4)
    """Inclusive length range of list arguments (non-empty lists start at 1)."""
    list_items: tuple[int, int] = (0, 9)
    """Inclusive range of list items."""
    examples_in_prompt: int = 2
    """code_generation: doctest examples shown in the docstring."""
    generation_tests: int = 4
    """code_generation: hidden asserts per item (the examples included)."""
    unit_tests: int = 3
    """unit_test_generation: asserts in the reference completion."""
    input_mode_fraction: float = 0.5
    """code_reasoning: share of items asking for an input instead of the output."""
    two_edit_difficulty: int = 3
    """commit_message: from this difficulty on, a diff combines two edits."""
    diff_context: int = 3
    """commit_message: context lines in the unified diff."""
    max_prompt_chars: int = 400
    """Longest prompt kept (longer draws are discarded)."""
    max_completion_chars: int = 120
    """Longest reference completion kept."""
    max_draws_per_item: int = 60
    """Draws allowed per requested item before the generator gives up (space exhausted)."""
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    """Text around task content in prompts."""


class _Gen:
    """Random draws of functions, arguments and items for one (seed, task, difficulty)."""

    def __init__(self, cfg: SyntheticConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.rng = rng
        self._compiled: dict[str, Any] = {}

    # functions ------------------------------------------------------------------
    def func(self, level: int) -> Func:
        template = self.rng.choice([t for t in TEMPLATES if t.level == level])
        params = self._param_names(template.params)
        slots = tuple(
            (name, self.rng.choice(SLOT_VALUES[kind])[0]) for name, kind in template.slots
        )
        return Func(template, self.rng.choice(self.cfg.function_names), params, slots)

    def _param_names(self, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if len(kinds) == 2:
            return tuple(self.rng.choice(self.cfg.int_pairs))
        pool = self._pool(kinds[0])
        return (self.rng.choice(pool),)

    def _pool(self, kind: str) -> tuple[str, ...]:
        if kind in ("int", "small", "big"):
            return self.cfg.int_params
        return self.cfg.str_params if kind == "str" else self.cfg.list_params

    # arguments --------------------------------------------------------------------
    def arg(self, kind: str) -> Any:
        cfg, rng = self.cfg, self.rng
        if kind == "int":
            return rng.randint(*cfg.int_range)
        if kind == "small":
            return rng.randint(*cfg.small_range)
        if kind == "big":
            return rng.randint(*cfg.big_range)
        if kind == "str":
            return "".join(rng.choice(cfg.alphabet) for _ in range(rng.randint(*cfg.str_len)))
        low = 1 if kind == "nelist" else cfg.list_len[0]
        return [
            rng.randint(*cfg.list_items) for _ in range(rng.randint(low, max(low, cfg.list_len[1])))
        ]

    def args(self, func: Func) -> tuple[Any, ...]:
        return tuple(self.arg(kind) for kind in func.template.params)

    def call(self, func: Func, args: tuple[Any, ...]) -> Any:
        """Run the generated (trusted) function on a copy of args."""
        src = func.source()
        fn = self._compiled.get(src)
        if fn is None:
            namespace: dict[str, Any] = {}
            exec(compile(src, "<synthetic>", "exec"), namespace)  # trusted, generated here
            fn = self._compiled[src] = namespace[func.name]
        return fn(*copy.deepcopy(args))

    def distinct_cases(self, func: Func, n: int) -> list[tuple[str, str]]:
        """Up to n (call source, output repr) pairs with distinct calls, preferring distinct outputs."""
        cases: dict[str, str] = {}
        outputs: set[str] = set()
        for attempt in range(n * 8):
            args = self.args(func)
            call = f"{func.name}({', '.join(repr(a) for a in args)})"
            if call in cases:
                continue
            out = repr(self.call(func, args))
            if out in outputs and attempt < n * 4:
                continue
            cases[call] = out
            outputs.add(out)
            if len(cases) == n:
                break
        return list(cases.items())


def _code_reasoning(gen: _Gen, difficulty: int) -> dict[str, Any]:
    func = gen.func(difficulty)
    args = gen.args(func)
    arg_src = ", ".join(repr(a) for a in args)
    out = repr(gen.call(func, args))
    mode = "input" if gen.rng.random() < gen.cfg.input_mode_fraction else "output"
    payload = {
        "mode": mode,
        "code": func.source(),
        "entry_point": func.name,
        "input": arg_src,
        "output": out,
    }
    reference = out if mode == "output" else arg_src
    return make_record("code_reasoning", "synthetic", difficulty, payload, reference)


def _code_generation(gen: _Gen, difficulty: int) -> dict[str, Any]:
    cfg = gen.cfg
    func = gen.func(difficulty)
    cases = gen.distinct_cases(func, cfg.generation_tests)
    examples = "".join(
        f"    >>> {call}\n    {out}\n" for call, out in cases[: cfg.examples_in_prompt]
    )
    prompt = f'{func.signature()}\n    """{func.doc()}\n{examples}    """\n'
    payload = {"prompt": prompt, "entry_point": func.name, "setup": ""}
    tests = [f"assert {call} == {out}" for call, out in cases]
    return make_record("code_generation", "synthetic", difficulty, payload, func.body(), tests)


def _unit_test_generation(gen: _Gen, difficulty: int) -> dict[str, Any]:
    cfg = gen.cfg
    func = gen.func(difficulty)
    code = func.source()
    asserts = [f"assert {call} == {out}" for call, out in gen.distinct_cases(func, cfg.unit_tests)]
    while len(asserts) > 1 and len("\n".join(asserts)) + 1 > cfg.max_completion_chars:
        asserts.pop()
    payload = {
        "prompt": cfg.prompt_format.unit_test_prompt(code, func.name),
        "code": code,
        "entry_point": func.name,
        "setup": "",
    }
    return make_record(
        "unit_test_generation", "synthetic", difficulty, payload, "\n".join(asserts) + "\n", asserts
    )


def _edit(gen: _Gen, func: Func, used: set[str]) -> tuple[Func, str, str] | None:
    """One random edit of func: (edited func, message, edit kind); None if the kind does not apply."""
    rng, cfg = gen.rng, gen.cfg
    kind = rng.choice(
        [
            "rename_function",
            "rename_parameter",
            "constant",
            "operator",
            "comparison",
            "literal",
            "guard",
            "docstring",
        ]
    )
    if kind in used:
        return None
    slots = func.slot_map
    if kind == "rename_function":
        names = [n for n in cfg.function_names if n != func.name]
        if not names:
            return None  # a one-name vocabulary has nothing to rename to
        new = rng.choice(names)
        return replace(func, name=new), f"Rename function {func.name} to {new}", kind
    if kind == "rename_parameter":
        i = rng.randrange(len(func.params))
        pool = gen._pool(func.template.params[i])
        if func.template.params[i] in ("int", "small", "big"):
            pool = pool + tuple(p for pair in cfg.int_pairs for p in pair)
        free = sorted({p for p in pool if p not in func.params})
        if not free:
            return None  # no other name of this kind in the vocabulary
        new = rng.choice(free)
        params = func.params[:i] + (new,) + func.params[i + 1 :]
        msg = f"Rename parameter {func.params[i]} to {new} in {func.name}"
        return replace(func, params=params), msg, kind
    kinds = dict(func.template.slots)
    wanted = {
        "constant": NUMERIC_SLOTS,
        "operator": {"op", "addop"},
        "comparison": {"cmp"},
        "literal": {"lit", "ch"},
    }
    if kind in wanted:
        names = [n for n, k in func.template.slots if k in wanted[kind]]
        if not names:
            return None
        name = rng.choice(names)
        old = slots[name]
        new = rng.choice([v for v, _ in SLOT_VALUES[kinds[name]] if v != old])
        if (
            kind == "constant"
            and sum(1 for v in slots.values() if v == old and not isinstance(v, str)) > 1
        ):
            return None  # ambiguous message
        slots[name] = new
        edited = replace(func, slots=tuple(slots.items()))
        msg = {
            "constant": f"Change constant {old} to {new} in {func.name}",
            "operator": f"Use {new} instead of {old} in {func.name}",
            "comparison": f"Change comparison {old} to {new} in {func.name}",
            "literal": f"Change string '{old}' to '{new}' in {func.name}",
        }[kind]
        return edited, msg, kind
    if kind == "guard":
        if func.guard:
            return None
        return replace(func, guard=True), guard_message(func), kind
    if func.docstring:
        return None
    return replace(func, docstring=func.doc()), f"Add docstring to function {func.name}", kind


def _commit_message(gen: _Gen, difficulty: int) -> dict[str, Any]:
    cfg = gen.cfg
    before = gen.func(difficulty)
    n_edits = 2 if difficulty >= cfg.two_edit_difficulty else 1
    after, messages, used = before, [], set()
    while len(messages) < n_edits:
        result = _edit(gen, after, used)
        if result is None:
            continue
        after, msg, kind = result
        messages.append(msg)
        used.add(kind)
    fname = {"int": "calc.py", "small": "calc.py", "big": "calc.py", "str": "text.py"}.get(
        before.template.params[0], "lists.py"
    )
    diff = "\n".join(
        difflib.unified_diff(
            before.source().splitlines(),
            after.source().splitlines(),
            f"a/{fname}",
            f"b/{fname}",
            n=cfg.diff_context,
            lineterm="",
        )
    )
    message = messages[0] + "".join(f" and {m[0].lower()}{m[1:]}" for m in messages[1:])
    payload = {"diff": diff, "prompt": cfg.prompt_format.commit_prompt(diff)}
    return make_record("commit_message", "synthetic", difficulty, payload, message)


_MAKERS = {
    "code_reasoning": _code_reasoning,
    "code_generation": _code_generation,
    "unit_test_generation": _unit_test_generation,
    "commit_message": _commit_message,
}


def prompt_text(record: dict[str, Any]) -> str:
    """The text a model sees before its completion (for length bounds)."""
    import json

    payload = json.loads(record["payload"])
    if record["task"] == "code_reasoning":
        return payload["code"] + payload["input"] + payload["output"]
    return payload["prompt"]


def iter_items(
    task: str, difficulty: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()
) -> Iterator[dict[str, Any]]:
    """Endless stream of distinct records for (task, difficulty), deterministic in seed.

    Raises RuntimeError when max_draws_per_item draws in a row give nothing new (the
    template space at this difficulty is exhausted).
    """
    if task not in _MAKERS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_MAKERS)}")
    if not any(t.level == difficulty for t in TEMPLATES):
        raise ValueError(f"difficulty {difficulty} has no templates (levels 0-4)")
    gen = _Gen(cfg, random.Random(f"astor-synthetic:{seed}:{task}:{difficulty}"))
    seen: set[str] = set()
    misses = 0
    while True:
        record = _MAKERS[task](gen, difficulty)
        fits = (
            len(prompt_text(record)) <= cfg.max_prompt_chars
            and 0 < len(record["reference"]) <= cfg.max_completion_chars
        )
        if not fits or record["prompt_id"] in seen:
            misses += 1
            if misses >= cfg.max_draws_per_item:
                raise RuntimeError(
                    f"synthetic space exhausted for task={task} difficulty={difficulty} "
                    f"after {len(seen)} distinct items"
                )
            continue
        misses = 0
        seen.add(record["prompt_id"])
        yield record


def generate(
    task: str, difficulty: int, n: int, seed: int, cfg: SyntheticConfig = SyntheticConfig()
) -> list[dict[str, Any]]:
    """The first n distinct records of `iter_items` (split still 'train'; see splits.py)."""
    stream = iter_items(task, difficulty, seed, cfg)
    return [next(stream) for _ in range(n)]
