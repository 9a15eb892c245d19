"""Unit-test generation attacks: tests that tell the reference from its mutants by looking at
how the code is compiled (code objects, bytecode, source, line numbers, addresses, timing)
instead of what it does. Every one must score 0, through the full verifier and, with the
static screen skipped, through the runtime layers alone (guarded setup and twin).

A control shows the code-object attacks are real: on an unguarded reference they pass and
they kill mutants.
"""

from __future__ import annotations

import json
from types import CodeType

import pytest

from astor_core.sandbox import Check, Job, Limits
from astor_core.tasks.mutation import behaviour_twin, canonical, generate_mutants
from astor_core.tasks.unit_test_generation import UnitTestGenerationTask
from astor_core.tasks.ut_screen import Screened, screen_tests

CODE = (
    "def step(x, k=2):\n"
    "    # scale big values, shift small ones\n"
    "    if x > 10:\n"
    "        return x * k\n"
    "    return x + 1\n"
)
REF_TESTS = [
    "assert step(11) == 22",
    "assert step(10) == 11",
    "assert step(3) == 4",
    "assert step(12, 3) == 36",
    "assert step(0) == 1",
]
LIMITS = Limits(wall_s=2.0, cpu_s=2.0)


def _code_of(source: str, name: str) -> CodeType:
    module = compile(source, "<setup>", "exec", dont_inherit=True)
    return next(c for c in module.co_consts if isinstance(c, CodeType) and c.co_name == name)


REF = _code_of(canonical(CODE), "step")
FACTS = {
    "code": CODE,
    "co_code": REF.co_code,
    "consts": REF.co_consts,
    "bytes_text": str(REF.co_code),
    "line": REF.co_firstlineno + 1,  # the line of `if x > 10`, where step(None) raises
}

ATTACKS: dict[str, str] = {
    "attrgetter_code": (
        "import operator\n"
        "step(0)\n"
        "assert operator.attrgetter('__code__')(step).co_code == {co_code!r}\n"
    ),
    "attrgetter_dotted": (
        "from operator import attrgetter\n"
        "step(0)\n"
        "assert attrgetter('__code__.co_consts')(step) == {consts!r}\n"
    ),
    "format_fields": "step(0)\nassert '{{0.__code__.co_code}}'.format(step) == {bytes_text!r}\n",
    "format_built_template": (
        "t = '{{0.' + '_' * 2 + 'code' + '_' * 2 + '.co_code}}'\n"
        "step(0)\n"
        "assert t.format(step) == {bytes_text!r}\n"
    ),
    "getattr_concat": "step(0)\nassert getattr(step, '__' + 'code__').co_consts == {consts!r}\n",
    "attrgetter_chr": (
        "import operator\n"
        "name = chr(95) * 2 + 'code' + chr(95) * 2\n"
        "step(0)\n"
        "assert operator.attrgetter(name)(step).co_consts == {consts!r}\n"
    ),
    "methodcaller": (
        "import operator\n"
        "step(0)\n"
        "get = operator.methodcaller('__getattribute__', '__code__')\n"
        "assert get(step).co_consts == {consts!r}\n"
    ),
    "builtins_exec_compare": (
        "import operator\n"
        "b = operator.attrgetter('__self__')(abs)\n"
        "ns = {{}}\n"
        "b.exec({code!r}, ns)\n"
        "get = operator.attrgetter('__code__.co_code')\n"
        "step(0)\n"
        "assert get(step) == get(ns['step'])\n"
    ),
    "builtins_name_exec": (
        "ns = {{}}\n__builtins__.exec({code!r}, ns)\n"
        "assert step.__code__.co_code == ns['step'].__code__.co_code and step(0) == 1\n"
    ),
    "string_formatter": (
        "import string\n"
        "step(0)\n"
        "get = string.Formatter().get_field\n"
        "assert get('0.__code__.co_consts', (step,), {{}})[0] == {consts!r}\n"
    ),
    "typing_eval": (
        "import typing\n"
        "def probe(x: 'step.__code__.co_consts'):\n    pass\n"
        "step(0)\n"
        "assert typing.get_type_hints(probe)['x'] == {consts!r}\n"
    ),
    "dunder_code_direct": "assert step.__code__.co_consts == {consts!r} and step(0) == 1\n",
    "firstlineno": "assert step.__code__.co_firstlineno == 1 and step(0) == 1\n",
    "inspect_getsource": "import inspect\nassert 'x * k' in inspect.getsource(step) and step(0) == 1\n",
    "dis_opnames": (
        "import dis\n"
        "ops = [i.argrepr for i in dis.get_instructions(step) if i.opname == 'BINARY_OP']\n"
        "assert ops == ['*', '+'] and step(0) == 1\n"
    ),
    "defaults": "assert step.__defaults__ == (2,) and step(0) == 1\n",
    "globals_os": (
        "os = step.__globals__['__builtins__'].__import__('os')\n"
        "assert os.sep == '/' and step(0) == 1\n"
    ),
    "closure": "assert step.__closure__ is None and step(0) == 1\n",
    "qualname_name": "assert step.__qualname__ == step.__name__ == 'step' and step(0) == 1\n",
    "id_hash": "assert id(step) > 0 and hash(step) != 0 and step(0) == 1\n",
    "repr_address": "assert '0x' in repr(step) and step(0) == 1\n",
    "alias_then_introspect": (
        "candidate = step\n"
        "def check(c):\n    assert c.__code__.co_consts == {consts!r}\n"
        "check(candidate)\n"
    ),
    "alias_id": "candidate = step\nassert id(candidate) % 2 == 0 or candidate(0) == 1\n",
    "lambda_default": "g = lambda s=step: s\nassert g()(0) == 1\n",
    "vars_lookup": "assert vars()['step'](0) == 1\n",
    "decorator": "@step\ndef g():\n    pass\nassert step(0) == 1\n",
    "import_os": "import os\nassert os.getcwd() and step(0) == 1\n",
    "os_via_statistics": (
        "import statistics\n"
        "os = statistics.sys.modules['os']\n"
        "assert os.sep == '/' and step(0) == 1\n"
    ),
    "os_via_builtins": (
        "import operator\n"
        "os = operator.attrgetter('__self__')(abs).__import__('os')\n"
        "assert os.sep == '/' and step(0) == 1\n"
    ),
    "timing": (
        "import time\n"
        "t = time.perf_counter()\n"
        "for i in range(1000):\n    step(i)\n"
        "assert time.perf_counter() - t < 1.0\n"
    ),
    "timing_via_statistics": (
        "import statistics\n"
        "clock = statistics.sys.modules['time'].perf_counter\n"
        "t = clock()\nstep(0)\nassert clock() - t < 1.0\n"
    ),
    "traceback_lineno": (
        "try:\n    step(None)\n"
        "except TypeError as e:\n    assert e.__traceback__.tb_next.tb_lineno == {line}\n"
    ),
    "traceback_text": (
        "import traceback\n"
        "try:\n    step(None)\n"
        "except TypeError:\n    assert 'line {line}' in traceback.format_exc()\n"
    ),
    "getframe": "import sys\nassert sys._getframe().f_globals['step'] is step and step(0) == 1\n",
    "generator_frame": (
        "g = (step(i) for i in [0])\nassert g.gi_frame.f_globals['step'] and next(g) == 1\n"
    ),
    "always_equal_class": (
        "class Probe:\n    def __eq__(self, other):\n        return True\n"
        "assert step(0) == Probe()\n"
    ),
    "type_three_args": "P = type('P', (), {{}})\nassert step(0) == 1 and P\n",
    "module_valued_attribute": "import re\nassert re.functools.reduce and step(0) == 1\n",
    "shadowed_test_function": (
        "def check(a):\n    return a\n"
        "def outer():\n    def check(c):\n        return c(0)\n"
        "g = check(step)\n"
        "assert '0x' in str(g) and step(0) == 1\n"
    ),
    "builtin_named_test_function": (
        "g = repr(step)\ndef repr(c):\n    return c(0)\nassert '0x' in g and step(0) == 1\n"
    ),
    "shadow_what_the_guard_calls": (
        "def type(x):\n    return 0\n"
        "import operator\n"
        "step(0)\n"
        "assert operator.attrgetter('__code__')(step).co_consts == {consts!r}\n"
    ),
    "rebind_entry_point": "def step(x, k=2):\n    return 1\nassert step(0) == 1\n",
}
"""Each attack, formatted with FACTS about the reference as compiled in the sandbox."""

WORKING = ("attrgetter_code", "attrgetter_dotted", "format_fields", "builtins_exec_compare")
"""Attacks that, on an unguarded reference and its mutants, pass and kill (the control)."""


def attack(name: str) -> str:
    return ATTACKS[name].format(**FACTS)


def ut_record() -> dict:
    payload = {"prompt": CODE, "code": CODE, "entry_point": "step", "setup": ""}
    return {
        "prompt_id": "ut-introspection",
        "task": "unit_test_generation",
        "source": "synthetic",
        "split": "train",
        "difficulty": 0,
        "payload": json.dumps(payload),
        "reference": "\n".join(REF_TESTS),
        "tests": json.dumps(REF_TESTS),
    }


@pytest.fixture(scope="module")
def task() -> UnitTestGenerationTask:
    return UnitTestGenerationTask()


def test_every_attack_scores_zero(box, task) -> None:
    names = list(ATTACKS)
    rewards = task.score_batch([ut_record()] * len(names), [attack(n) for n in names], box)
    got = {n: (r.value, r.reason) for n, r in zip(names, rewards, strict=True)}
    assert {n: v for n, (v, _) in got.items()} == dict.fromkeys(names, 0.0), got
    assert {reason for _, reason in got.values()} == {"forbidden"}, got


def test_attacks_get_nothing_from_the_runtime_layers_alone(box, task) -> None:
    """The static screen skipped, the guarded setup and the twin leave introspection nothing:
    an attack kills what its plain call `step(0) == 1` kills (or nothing), and 0 without one."""
    names = [*ATTACKS, "behaviour_only"]
    programs = [*(attack(n) for n in ATTACKS), "assert step(0) == 1\n"]
    screened = {i: Screened(p, 1) for i, p in enumerate(programs)}
    rewards = task.run_screened([ut_record()] * len(names), screened, box)
    got = {n: (rewards[i].value, rewards[i].reason) for i, n in enumerate(names)}
    behaviour = got.pop("behaviour_only")[0]
    assert 0.0 < behaviour < 1.0
    assert {n: v for n, (v, _) in got.items() if v not in (0.0, behaviour)} == {}
    pure = [n for n in ATTACKS if "(0) == 1" not in ATTACKS[n]]
    assert {n: got[n][0] for n in pure} == dict.fromkeys(pure, 0.0)
    guarded = ("attrgetter_code", "builtins_exec_compare", "defaults", "typing_eval")
    for name in (*guarded, "shadow_what_the_guard_calls"):
        assert got[name] == (0.0, "failed"), (name, got[name])  # the guard: fails on the reference
    assert got["traceback_lineno"] == (0.0, "forbidden")  # the twin: passes on the reference only


@pytest.mark.parametrize("name", WORKING)
def test_control_the_attacks_work_on_an_unguarded_reference(box, name: str) -> None:
    program = attack(name)
    mutants = generate_mutants(CODE)
    jobs = [
        Job(program=program, setup=setup, checks=(Check("pass"),), limits=LIMITS)
        for setup in [canonical(CODE), *(m.source for m in mutants)]
    ]
    on_ref, *on_mutants = box.run_many(jobs)
    assert on_ref.all_passed, on_ref
    killed = sum(not o.all_passed for o in on_mutants)
    assert killed >= 3, (name, killed)


def test_the_twin_behaves_alike_and_compiles_differently(box) -> None:
    twin = _code_of(behaviour_twin(CODE), "step")
    assert twin.co_code != REF.co_code and twin.co_consts != REF.co_consts
    assert twin.co_varnames != REF.co_varnames and twin.co_firstlineno != REF.co_firstlineno
    jobs = [
        Job(program="", setup=setup, checks=tuple(Check(t) for t in REF_TESTS), limits=LIMITS)
        for setup in (canonical(CODE), behaviour_twin(CODE))
    ]
    assert all(o.all_passed for o in box.run_many(jobs))


def test_legit_tests_still_score(box, task) -> None:
    legit = {
        "asserts": "\n".join(REF_TESTS),
        "alias": "candidate = step\n"
        + "\n".join(t.replace("step(", "candidate(") for t in REF_TESTS),
        "check_function": (
            "def check(candidate):\n"
            + "".join(f"    {t.replace('step(', 'candidate(')}\n" for t in REF_TESTS)
            + "check(step)\n"
        ),
        "builtins_that_call": (
            "import functools, math\n"
            "assert list(map(step, [11, 10, 3, 0])) == [22, 11, 4, 1]\n"
            "assert sorted([12, 3], key=step) == [3, 12]\n"
            "assert functools.reduce(lambda a, b: a + step(b, 3), [12, 0], 0) == 37\n"
            "assert math.isclose(step(2.5), 3.5)\n"
            "try:\n    step(None)\n    assert False\nexcept TypeError as e:\n    assert str(e)\n"
            "assert '{} {}'.format(step(0), step(11)) == '1 22'\n"
        ),
    }
    rewards = task.score_batch([ut_record()] * len(legit), list(legit.values()), box)
    got = {n: (r.value, r.reason) for n, r in zip(legit, rewards, strict=True)}
    assert got == dict.fromkeys(legit, (1.0, "passed")), got


def test_screen_reasons_name_the_route() -> None:
    detail = {
        name: screen_tests(attack(name), "step", reference=CODE).info["detail"]
        for name in ("attrgetter_code", "os_via_statistics", "format_built_template", "id_hash")
    }
    assert detail == {
        "attrgetter_code": "attribute .co_code",
        "os_via_statistics": "module statistics is used other than through an allowed attribute",
        "format_built_template": "str.format on a template that is not a plain literal",
        "id_hash": "name id is not allowed in tests",
    }
