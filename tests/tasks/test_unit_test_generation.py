"""Unit-test generation: screening, reference run, equivalent-mutant filtering, kill fraction."""

from __future__ import annotations

import statistics

import pytest

from astor_core.tasks import RecordError, get_task, split_humaneval_tests
from astor_core.tasks.unit_test_generation import UnitTestGenerationTask
from astor_core.tasks.ut_config import UnitTestConfig
from astor_core.tasks.ut_screen import Screened, screen_tests
from tests.tasks.conftest import record

CODE = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n"
REF_TESTS = [
    "assert clamp(5, 0, 10) == 5",
    "assert clamp(-1, 0, 10) == 0",
    "assert clamp(11, 0, 10) == 10",
    "assert clamp(0, 0, 10) == 0",
    "assert clamp(10, 0, 10) == 10",
]


def ut_record(code: str = CODE, tests: list[str] = REF_TESTS, entry_point: str = "clamp") -> dict:
    payload = {
        "prompt": f"{code}\n# Unit tests for {entry_point}\n",
        "code": code,
        "entry_point": entry_point,
        "setup": "",
    }
    return record("unit_test_generation", payload, reference="\n".join(tests), tests=tests)


def humaneval_record(p: dict, tests: list[str]) -> dict:
    code = p["prompt"] + p["canonical_solution"]
    return ut_record(code, tests, p["entry_point"])


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("assert True\n", "trivial"),
        ("x = clamp(1, 0, 2)\nassert 1 == 1\n", "trivial"),
        ("assert 3 == 3\n", "trivial"),
        ("assert clamp.__defaults__ is None\n", "forbidden"),
        ("assert clamp.__code__.co_consts[0] is None and clamp(1, 0, 2) == 1\n", "forbidden"),
        ("assert getattr(clamp, 'x', 1) == 1 and clamp(1, 0, 2) == 1\n", "forbidden"),
        ("import inspect\nassert clamp(1, 0, 2) == 1\n", "forbidden"),
        ("import operator\nassert operator.attrgetter('real')(clamp(1, 0, 2)) == 1\n", "forbidden"),
        ("assert '{0.real}'.format(clamp(1, 0, 2)) == '1'\n", "forbidden"),
        ("import statistics\nassert statistics.sys and clamp(1, 0, 2) == 1\n", "forbidden"),
        ("assert str(clamp) and clamp(1, 0, 2) == 1\n", "forbidden"),
        ("assert id(1) and clamp(1, 0, 2) == 1\n", "forbidden"),
        ("class T:\n    pass\nassert clamp(1, 0, 2) == 1\n", "forbidden"),
        ("name = '__code__'\nassert clamp(1, 0, 2) == 1\n", "forbidden"),
        ("def check(c):\n    return c\nassert check(clamp)(1, 0, 2) == 1\n", "forbidden"),
        ("g = (clamp(i, 0, 2) for i in [1])\nassert g.gi_code and next(g) == 1\n", "forbidden"),
        ("print(clamp(1, 0, 2))\n", "invalid_format"),
        ("def broken(:\n", "invalid_format"),
        ("", "invalid_format"),
    ],
)
def test_screening_rejects_without_running(completion: str, reason: str) -> None:
    result = screen_tests(completion, "clamp")
    assert not isinstance(result, Screened)
    assert (result.reason, result.value, result.passed) == (reason, 0.0, False)


def test_screening_keeps_good_tests_and_cuts_truncation() -> None:
    result = screen_tests(
        "import math\nr = clamp(1, 0, 2)\nassert r == 1\nassert clamp(5, 0,", "clamp"
    )
    assert result == Screened(source="import math\nr = clamp(1, 0, 2)\nassert r == 1", n_asserts=1)
    assert not isinstance(
        screen_tests("assert clamp(1, 0,", "clamp", UnitTestConfig(salvage_truncated=False)),
        Screened,
    )


@pytest.mark.parametrize(
    "completion",
    [
        "candidate = clamp\nassert candidate(1, 0, 2) == 1\n",
        "def check(candidate):\n    assert candidate(1, 0, 2) == 1\ncheck(clamp)\n",
        "def check(*, fn):\n    assert fn(1, 0, 2) == 1\ncheck(fn=clamp)\n",
        "assert list(map(clamp, [5, 11], [0, 0], [10, 10])) == [5, 10]\n",
        "assert sorted([3, -4], key=lambda v: clamp(v, 0, 2)) == [-4, 3]\n",
        "import math\nassert math.isclose(clamp(0.5, 0, 2), 0.5)\n",
        "assert '{} {x:>{w}}'.format(clamp(1, 0, 2), x=1, w=3) == '1   1'\n",
        "try:\n    clamp(None, 0, 2)\nexcept TypeError as e:\n    assert 'not supported' in str(e)\n",
        "assert clamp(int(math.sqrt(16)), 0, 2) == 2\n",  # a module the reference imports
        "assert clamp('Yellow__Dirty__Fellow', 'A', 'Z') == 'Yellow__Dirty__Fellow'\n",
        "if __name__ == '__main__':\n    assert clamp(1, 0, 2) == 1\n",
    ],
)
def test_screening_keeps_plain_behaviour_tests(completion: str) -> None:
    reference = "import math, os\n" + CODE
    assert isinstance(screen_tests(completion, "clamp", reference=reference), Screened)


def test_screening_holds_every_name_of_the_reference_to_calls_only() -> None:
    reference = "import os\nLIMIT = 7\ndef helper(x):\n    return x\n" + CODE
    for completion in (
        "assert os.sep == '/' and clamp(1, 0, 2) == 1\n",
        "assert helper.__name__ and clamp(1, 0, 2) == 1\n",
        "def helper(x):\n    return 0\nassert clamp(1, 0, 2) == 1\n",
        "assert clamp(LIMIT, 0, 2) == 2\n",  # a global, which mutants change too
    ):
        result = screen_tests(completion, "clamp", reference=reference)
        assert not isinstance(result, Screened) and result.reason == "forbidden", completion
    ok = "assert helper(clamp(1, 0, 2)) == 1\n"
    assert isinstance(screen_tests(ok, "clamp", reference=reference), Screened)


def test_rewards_and_reasons_end_to_end(sandbox) -> None:
    task = get_task("unit_test_generation")
    rec = ut_record()
    completions = [
        "\n".join(REF_TESTS),  # the reference tests: kill every non-equivalent mutant
        "assert clamp(5, 0, 10) == 5\n",  # weak: passes, kills only some
        "assert clamp(5, 0, 10) == 6\n",  # wrong value: fails on the reference
        "assert True\n",
        "while True:\n    clamp(1, 0, 2)\n",  # no assert
        "assert clamp(1, 0, 2) == 1\nwhile True:\n    pass\n",  # times out on the reference
    ]
    rewards = task.score_batch([rec] * len(completions), completions, sandbox=sandbox)
    assert [r.reason for r in rewards] == [
        "passed",
        "survived",
        "failed",
        "trivial",
        "invalid_format",
        "timeout",
    ]
    assert rewards[0].value == 1.0 and rewards[0].passed
    assert 0.0 < rewards[1].value < 1.0 and not rewards[1].passed
    assert rewards[1].info["survivors"]
    assert [r.value for r in rewards[2:]] == [0.0] * 4
    assert rewards[0].info["n_mutants"] == rewards[1].info["n_mutants"] > 5


def test_equivalent_mutants_are_filtered_and_cached(sandbox) -> None:
    # `x < 0` -> `x <= 0` returns -0 == 0 at x == 0: an equivalent mutant.
    code = "def absval(x):\n    if x < 0:\n        return -x\n    return x\n"
    tests = ["assert absval(5) == 5", "assert absval(-3) == 3", "assert absval(0) == 0"]
    task = UnitTestGenerationTask()
    [kept] = task.filtered_mutants([ut_record(code, tests, "absval")], sandbox)
    from astor_core.tasks.mutation import generate_mutants

    everything = generate_mutants(code)
    assert 0 < len(kept) < len(everything)
    assert all(m in everything for m in kept)
    assert "Lt -> LtE" in {m.description for m in everything}
    assert "Lt -> LtE" not in {m.description for m in kept}
    assert task.filtered_mutants([ut_record(code, tests, "absval")], sandbox=None) == [
        kept
    ]  # cached: no sandbox needed


def test_reference_failing_its_own_tests_is_a_record_error(sandbox) -> None:
    rec = ut_record(tests=["assert clamp(5, 0, 10) == 4"])
    with pytest.raises(
        RecordError, match=rf"record {rec['prompt_id']}: the reference code fails its own tests"
    ):
        get_task("unit_test_generation").score_batch(
            [rec], ["assert clamp(1, 0, 2) == 1"], sandbox=sandbox
        )


def humaneval_scores(problems: list[dict], sandbox) -> dict[str, list[float]]:
    """Mean mutation reward of HumanEval's own tests (inlined asserts) on HumanEval problems."""
    task = UnitTestGenerationTask()
    blocks = [
        "\n".join(split_humaneval_tests(p["test"], p["entry_point"], inline_candidate=True))
        for p in problems
    ]
    snippets = [split_humaneval_tests(p["test"], p["entry_point"]) for p in problems]
    raw = task.score_batch([humaneval_record(p, []) for p in problems], blocks, sandbox=sandbox)
    filtered = task.score_batch(
        [humaneval_record(p, s) for p, s in zip(problems, snippets, strict=True)],
        blocks,
        sandbox=sandbox,
    )
    # held out: mutants filtered with the even asserts, scored with the odd ones
    odd = [
        "\n".join(split_humaneval_tests(p["test"], p["entry_point"], True)[1::2]) for p in problems
    ]
    pairs = [(p, s, o) for p, s, o in zip(problems, snippets, odd, strict=True) if o]
    held = task.score_batch(
        [humaneval_record(p, s[0::2]) for p, s, _ in pairs], [o for *_, o in pairs], sandbox=sandbox
    )
    return {
        "raw": [r.value for r in raw],
        "filtered": [r.value for r in filtered],
        "held_out": [r.value for r in held],
    }


def test_humaneval_tests_kill_mutants_subset(sandbox, humaneval) -> None:
    scores = humaneval_scores(list(humaneval.values())[:5], sandbox)
    assert statistics.mean(scores["raw"]) > 0.5
    assert scores["filtered"] == [1.0] * 5  # by construction: survivors of these tests were dropped


@pytest.mark.slow
def test_humaneval_tests_kill_mutants_20_problems(sandbox, humaneval) -> None:
    scores = humaneval_scores(list(humaneval.values())[:20], sandbox)
    print({k: round(statistics.mean(v), 3) for k, v in scores.items()})
    assert statistics.mean(scores["raw"]) > 0.8
    assert scores["filtered"] == [1.0] * 20
    assert statistics.mean(scores["held_out"]) > 0.5
