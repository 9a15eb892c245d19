"""AST mutation operators: determinism, dedup, cap, and each operator."""

from __future__ import annotations

import ast

import pytest

from astor_core.tasks.mutation import (
    OPERATORS,
    TWIN_LOCAL,
    MutationConfig,
    behaviour_twin,
    canonical,
    generate_mutants,
)

SOURCE = '''
def f(xs, k=2):
    """Docstring stays."""
    out = []
    for x in xs:
        if not x > 0 and x != -1:
            break
        out.append(x * k % 3)
    total = 0
    total += len(out)
    return f"{out}" + "a" if total else ""
'''


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_operator_produces_parsable_distinct_mutants(operator: str) -> None:
    mutants = generate_mutants(SOURCE, MutationConfig(operators=(operator,), max_mutants=1000))
    assert mutants, operator
    original = ast.unparse(ast.parse(SOURCE))
    sources = [m.source for m in mutants]
    assert len(set(sources)) == len(sources)
    for m in mutants:
        assert m.operator == operator
        assert m.source != original
        ast.parse(m.source)
        assert '"""Docstring stays."""' in m.source or "'Docstring stays.'" in m.source


def test_specific_mutations_exist() -> None:
    descriptions = {
        m.description for m in generate_mutants(SOURCE, MutationConfig(max_mutants=1000))
    }
    for expected in [
        "Gt -> GtE",
        "Gt -> LtE",
        "NotEq -> Eq",
        "And -> Or",
        "Mult -> Div",
        "Mod -> FloorDiv",
        "Add -> Sub",
        "Break -> Continue",
        "2 -> 3",
        "0 -> 1",
        "drop Not",
        "drop USub",
        "return -> return None",
        "'a' -> ''",
        "'' -> 'X'",
    ]:
        assert expected in descriptions, expected


def test_deterministic_and_capped() -> None:
    cfg = MutationConfig(max_mutants=7)
    first = generate_mutants(SOURCE, cfg)
    assert len(first) == 7
    assert first == generate_mutants(SOURCE, cfg)
    assert first != generate_mutants(SOURCE, MutationConfig(max_mutants=7, seed=1))
    every = generate_mutants(SOURCE, MutationConfig(max_mutants=1000))
    assert all(m in every for m in first)


def test_module_level_statements_are_not_deleted() -> None:
    mutants = generate_mutants(
        "import math\nX = 1\n", MutationConfig(operators=("delete_statement",))
    )
    assert mutants == []


def test_unknown_operator_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mutation operators"):
        MutationConfig(operators=("flip_everything",))


def _functions(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<setup>", "exec"), namespace)  # trusted test sources only
    return namespace


def test_canonical_is_the_form_of_every_mutant() -> None:
    original = canonical(SOURCE)
    for m in generate_mutants(SOURCE, MutationConfig(max_mutants=1000)):
        if m.operator != "delete_statement":  # deleting a loop or an `if` shortens the code
            assert len(m.source.splitlines()) == len(original.splitlines()), m
    assert canonical(original) == original


def test_behaviour_twin_behaves_alike_and_compiles_differently() -> None:
    ref, twin = _functions(canonical(SOURCE))["f"], _functions(behaviour_twin(SOURCE))["f"]
    for xs in ([], [1, 2, 3], [5, -1, 4], [0], [2, 7, 9]):
        assert ref(xs) == twin(xs) and ref(xs, 5) == twin(xs, 5)
    assert ref.__doc__ == twin.__doc__ == "Docstring stays."
    assert ref.__code__.co_code != twin.__code__.co_code
    assert ref.__code__.co_consts != twin.__code__.co_consts
    assert ref.__code__.co_firstlineno != twin.__code__.co_firstlineno
    assert TWIN_LOCAL in twin.__code__.co_varnames


def test_behaviour_twin_leaves_functions_that_see_their_locals() -> None:
    source = "def f(a):\n    b = a + 1\n    return sorted(locals())\n"
    assert _functions(behaviour_twin(source))["f"](1) == ["a", "b"]
    nested = "def g(x):\n    def h():\n        return x\n    return h()\n"
    assert behaviour_twin(nested).count(TWIN_LOCAL) == 2
    assert _functions(behaviour_twin(nested))["g"](4) == 4
