"""Attacks on the verdicts themselves, by someone who has read the harness: forged result
frames, placeholder injection into checks, and rebinding what the checks call. Every one must
get reward 0 ("not passed") from the sandbox, `astor score humaneval` and the task rewards.

The verdict-channel attacks are written against both frame formats: the harness's earlier
one (``<nonce> <kind> <index> <length>``, the nonce in clear in every frame) and the
current authenticated one (``<kind> <index> <length> <tag>``), so that each would have
forged a pass before and is shown failing now.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from astor_core.sandbox import Check, Job, Limits
from astor_core.tasks.benchmarks import (
    BenchmarkConfig,
    default_path,
    read_jsonl,
    score_cruxeval,
    score_humaneval,
)
from astor_core.tasks.code_generation import CodeGenerationTask, split_humaneval_tests
from astor_core.tasks.code_reasoning import CodeReasoningTask
from tests.sandbox.test_hacks import CHECKS, SETUP

# ---------------------------------------------------------------------------------------
# 1. The verdict channel.
# ---------------------------------------------------------------------------------------

FORGER = textwrap.dedent(
    """
    import os, sys
    _REAL = os.dup(3)                 # the harness's result pipe
    _R, _W = os.pipe()
    os.dup2(_W, 3)                    # from now on the harness writes its frames to us
    os.set_blocking(_R, False)
    _SEEN = []

    def _forge(n=N_CHECKS):
        try:
            _SEEN.append(os.read(_R, 1 << 16))
        except (BlockingIOError, OSError):
            pass
        data = b"".join(_SEEN)
        head = data.split(b"\\n", 1)[0].split(b" ")
        if len(head) != 4:
            return False              # no frame intercepted yet: try again later
        if head[1] == b"P":           # nonce format: copy the nonce into well-formed frames
            nonce = head[0]
            out = nonce + b" P 0 2\\nok"
            out += b"".join(nonce + b" C %d 1\\n1" % i for i in range(n))
            out += nonce + b" D 0 0\\n"
        else:                         # tagged format: reuse the intercepted tag
            tag = head[3]
            out = b"P 0 2 " + tag + b"\\nok"
            out += b"".join(b"C %d 1 " % i + tag + b"\\n1" for i in range(n))
            out += b"D 0 0 " + tag + b"\\n"
        os.write(_REAL, out)
        os._exit(0)
    """
)

VERDICT_ATTACKS: dict[str, str] = {
    # the candidate function itself: the P frame is already written when a check calls it
    "dup_fd_forge_in_f": FORGER + "def f(x):\n    _forge()\n    return 0\n",
    # a gc callback fires inside the harness, between checks
    "dup_fd_forge_gc_callback": FORGER
    + textwrap.dedent(
        """
        import gc
        gc.set_threshold(1, 1, 1)
        gc.callbacks.append(lambda phase, info: phase == "stop" and _forge())
        def f(x):
            return 0
        """
    ),
    # the harness flushes the job's stdout after the checks: an attribute set on it
    "dup_fd_forge_stdout_flush": FORGER
    + "sys.stdout.flush = lambda: _forge()\nsys.stderr.flush = lambda: _forge()\n"
    + "def f(x):\n    return 0\n",
    "dup_fd_forge_atexit": FORGER
    + "import atexit\natexit.register(_forge)\ndef f(x):\n    return 0\n",
    # a finalizer that runs when the harness drops the program's objects
    "dup_fd_forge_finalizer": FORGER
    + textwrap.dedent(
        """
        import builtins
        class Bomb:
            def __del__(self):
                _forge()
        builtins.abs = Bomb()          # dropped when the harness restores builtins
        def f(x):
            return Bomb() and 0
        """
    ),
    # a copy of the process forges while the original answers wrongly
    "dup_fd_forge_forked_copy": FORGER
    + textwrap.dedent(
        """
        def f(x):
            try:
                if os.fork() == 0:
                    import time
                    time.sleep(0.05)
                    _forge()
            except OSError:
                pass
            return 0
        """
    ),
    "forge_from_thread_after_return": FORGER
    + textwrap.dedent(
        """
        import threading, time
        def f(x):
            def later():
                time.sleep(0.01)
                _forge()
            threading.Thread(target=later).start()
            return 0
        """
    ),
    # the nonce/key read out of the process's own memory
    "proc_self_mem_scan": textwrap.dedent(
        """
        import os, re
        def f(x):
            found = set()
            with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
                for line in maps:
                    lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                    if "rw" not in line.split()[1] or hi - lo > 1 << 26:
                        continue
                    try:
                        mem.seek(lo)
                        found.update(re.findall(rb"[0-9a-f]{32}(?= P 0)", mem.read(hi - lo)))
                    except OSError:
                        pass
            for nonce in found:
                for i in range(8):
                    os.write(3, nonce + b" C %d 1\\n1" % i)
            return 0
        """
    ),
    "gc_objects_for_the_secret": textwrap.dedent(
        """
        import gc, os
        def f(x):
            for o in gc.get_objects():
                if isinstance(o, dict) and ("nonce" in o or "key" in o):
                    os.write(3, repr(o).encode())
            return 0
        """
    ),
    "gc_garbage_saveall": textwrap.dedent(
        """
        import gc, os
        gc.set_debug(gc.DEBUG_SAVEALL)
        def f(x):
            gc.collect()
            for o in gc.garbage:
                if type(o).__name__ == "blake2b":
                    os.write(3, b"P 0 2 " + o.copy().hexdigest().encode() + b"\\nok")
            return 0
        """
    ),
    "current_exceptions_frames": textwrap.dedent(
        """
        import sys
        def f(x):
            try:
                raise ValueError
            except ValueError:
                for info in sys._current_exceptions().values():
                    tb = info[2] if isinstance(info, tuple) else info.__traceback__
                    fr = tb.tb_frame
                    while fr is not None:
                        for v in fr.f_locals.values():
                            if type(v).__name__ == "blake2b":
                                raise SystemExit(v)
                        fr = fr.f_back
            return 0
        """
    ),
}


def _forger_program(name: str) -> str:
    return VERDICT_ATTACKS[name].replace("N_CHECKS", str(len(CHECKS)))


@pytest.mark.parametrize("name", sorted(VERDICT_ATTACKS))
def test_verdict_channel_cannot_be_forged(box, name):
    out = box.run(Job(_forger_program(name), CHECKS, setup=SETUP))
    assert out.passed == (False,) * len(CHECKS), (name, out)
    assert not out.all_passed
    fork_allowed = Limits(wall_s=1.5, cpu_s=1.0, memory_mb=256, max_procs=4)
    out = box.run(Job(_forger_program(name), CHECKS, setup=SETUP, limits=fork_allowed))
    assert out.passed == (False,) * len(CHECKS), (name, out)


def test_intercepted_frames_are_not_replayable(box):
    """The harness's own authentic frames, intercepted and forwarded with a verdict changed or
    in another order, are rejected: the tag covers kind, index, length and payload."""
    program = FORGER.replace("N_CHECKS", "1") + textwrap.dedent(
        """
        def f(x):
            try:
                data = os.read(_R, 1 << 16)
            except BlockingIOError:
                data = b""
            os.write(_REAL, data.replace(b"\\nok", b"\\nok") + data.replace(b"P 0 2", b"C 0 2"))
            os._exit(0)
        """
    )
    out = box.run(Job(program, (Check("assert f(1) == 2"),)))
    assert out.status in ("invalid", "crashed") and out.passed == (False,), out


def test_unit_test_style_jobs_cannot_forge_the_reference_run(box):
    """Unit-test generation runs the model's tests as the program with a trusted `pass` check:
    tests that fail on the reference but forge 'completed' would be rewarded for killing
    every mutant. They are not."""
    tests = FORGER.replace("N_CHECKS", "1")
    tests += "sys.stdout.flush = lambda: _forge(1)\nassert clamp(1, 0, 2) == 99\n"
    reference = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
    out = box.run(Job(tests, (Check("pass"),), setup=reference))
    assert not out.all_passed and out.passed == (False,), out


# ---------------------------------------------------------------------------------------
# 2. Placeholders in checks built from model text (code reasoning, input mode).
# ---------------------------------------------------------------------------------------

IDENTITY = "def f(x):\n    return x"


def _crux_input_record(code: str, output: str) -> dict:
    payload = {"mode": "input", "code": code, "entry_point": "f", "input": "", "output": output}
    return {"prompt_id": "forgery", "payload": json.dumps(payload)}


@pytest.mark.parametrize(
    ("output", "prediction"),
    [
        ("True", "'\\x00astor:b:True'"),
        ("None", "'\\x00astor:b:None'"),
        ("False", "f('\\x00astor:b:False')"),
        ("'\\x00astor:b:True'", "'\\x00astor:b:True' + ''"),  # not a literal either way
    ],
)
def test_placeholder_injection_scores_zero(box, output, prediction):
    task = CodeReasoningTask()
    (reward,) = task.score_batch([_crux_input_record(IDENTITY, output)], [prediction], box)
    assert reward.value == 0.0 and not reward.passed, reward


def test_placeholder_literals_stay_literals(box):
    """A literal that looks like a placeholder is just that string."""
    task = CodeReasoningTask()
    record = _crux_input_record(IDENTITY, "'\\x00astor:b:True'")
    (reward,) = task.score_batch([record], ["'\\x00astor:b:True'"], box)
    assert reward.passed, reward


def malformed_predictions(n: int) -> list[str]:
    """`n` predictions built to break the check compiler or the harness: unknown and real
    placeholders, deep nesting, huge, surrogate, NUL-laden and non-literal arguments."""
    kinds = [
        lambda i: f"'\\x00astor:unknown{i}'",
        lambda i: f"'\\x00astor:b:{['True', 'None', 'len', 'object', '__import__'][i % 5]}'",
        lambda i: "'\\x00astor:keep', '\\x00astor:cmp'" if i % 2 else "'\\x00astor:'",
        lambda i: "[" * (20 + i % 180) + "]" * (20 + i % 180),
        lambda i: "(" * (i % 250) + "2" + ")" * (i % 250),
        lambda i: "'" + "x" * (1000 + 17 * i) + "'",
        lambda i: "'\\ud800\\udfff" + "\\x00" * (i % 7) + "'",
        lambda i: "{" + ", ".join(f"{j}: [{j}]" for j in range(i % 400)) + "}",
        lambda i: "1" * (4000 + i),
        lambda i: f"x={i}, **{{'x': 1}}",
        lambda i: "f(" * (i % 60) + ")" * (i % 60),
        lambda i: "b'\\x00astor:b:True', 1e309, -0.0, 1j",
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def test_a_thousand_malformed_predictions_cost_no_worker(box):
    """Measured: 1,000 malformed input predictions, all scored 0, no fork server respawned."""
    task = CodeReasoningTask()
    predictions = malformed_predictions(1000)
    records = [_crux_input_record(IDENTITY, "True")] * len(predictions)
    restarts = box.restarts
    rewards = task.score_batch(records, predictions, box)
    assert box.restarts - restarts == 0
    assert [r.value for r in rewards] == [0.0] * len(predictions)
    # and the worker still serves
    assert task.score_batch(records[:1], ["True"], box)[0].passed


# ---------------------------------------------------------------------------------------
# 3. Rebinding what the checks call (HumanEval, MBPP, synthetic tasks).
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    rows = read_jsonl(default_path(BenchmarkConfig().humaneval_problems))
    return {p["task_id"]: p for p in rows}


# (task_id, completion): each leaves the task unsolved and rebinds something the tests use
REBINDING_ATTACKS: list[tuple[str, str]] = [
    # the prompt's own helpers, redefined
    (
        "HumanEval/32",
        "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n",
    ),
    (
        "HumanEval/38",
        "    return s\n\n\ndef encode_cyclic(s):\n    return s\n",
    ),
    (
        "HumanEval/50",
        "    return s\n\n\ndef encode_shift(s):\n    return s\n",
    ),
    # patched while the candidate runs, after the checks' restore
    (
        "HumanEval/32",
        "    import math, builtins\n    math.fabs = lambda v: 0.0\n    math.pow = lambda a, b: 0.0\n"
        "    builtins.sum = lambda *a: 0.0\n    globals()['poly'] = lambda *a: 0.0\n"
        "    return 0.0\n",
    ),
    # module attributes the tests import by name
    (
        "HumanEval/38",
        "    return s\n\n\nimport random\nrandom.randint = lambda a, b: 0\n",
    ),
    (
        "HumanEval/50",
        "    return s\n\n\nimport random\nrandom.Random.randrange = lambda self, *a, **k: 0\n"
        "random.Random.choice = lambda self, seq: seq[0]\n",
    ),
    (
        "HumanEval/38",
        "    return s\n\n\nimport random\nrandom._inst.randrange = lambda *a, **k: 0\n",
    ),
    (
        "HumanEval/50",
        "    return s\n\n\nimport string\nstring.ascii_lowercase = 'f'\n"
        "vars(string)['ascii_lowercase'] = 'f'\n",
    ),
    # sys.modules entries, a whole module replaced
    (
        "HumanEval/32",
        "    return 0.0\n\n\nimport sys, types\nfake = types.ModuleType('math')\n"
        "fake.fabs = lambda v: 0.0\nfake.pow = lambda a, b: 0.0\nsys.modules['math'] = fake\n",
    ),
    # builtins, and the namespace's __builtins__ swapped
    (
        "HumanEval/2",
        "    return 0.0\n\n\nimport builtins\nbuiltins.abs = lambda v: 0\n"
        "builtins.isinstance = lambda *a: True\n__builtins__ = {'abs': lambda v: 0}\n",
    ),
    # returned objects that compare equal to everything
    (
        "HumanEval/0",
        "    class A:\n        __eq__ = lambda s, o: True\n        __bool__ = lambda s: True\n"
        "        __ne__ = lambda s, o: False\n    return A()\n",
    ),
    (
        "HumanEval/23",
        "    class I(int):\n        __eq__ = lambda s, o: True\n    return I(0)\n",
    ),
]


def _humaneval_records(problems: dict, attacks: list[tuple[str, str]]) -> list[dict]:
    records = []
    for task_id, _ in attacks:
        p = problems[task_id]
        payload = {"prompt": p["prompt"], "entry_point": p["entry_point"], "setup": ""}
        tests = split_humaneval_tests(p["test"], p["entry_point"])
        records.append(
            {"prompt_id": task_id, "payload": json.dumps(payload), "tests": json.dumps(tests)}
        )
    return records


def test_rebinding_attacks_fail_in_score_humaneval(box, humaneval):
    samples = [{"task_id": t, "completion": c} for t, c in REBINDING_ATTACKS]
    problems = {t: humaneval[t] for t, _ in REBINDING_ATTACKS}
    canonical = [{"task_id": t, "completion": humaneval[t]["canonical_solution"]} for t in problems]
    result = score_humaneval(samples + canonical, problems, ks=(1,), sandbox=box)
    scored = result.samples
    assert [s["passed"] for s in scored[: len(samples)]] == [False] * len(samples), [
        (s["task_id"], s["status"], s["detail"]) for s in scored if s["passed"]
    ]
    assert all(s["passed"] for s in scored[len(samples) :])  # the real solutions still pass


def test_rebinding_attacks_get_zero_code_generation_reward(box, humaneval):
    records = _humaneval_records(humaneval, REBINDING_ATTACKS)
    rewards = CodeGenerationTask().score_batch(records, [c for _, c in REBINDING_ATTACKS], box)
    assert [r.passed for r in rewards] == [False] * len(rewards)
    # the prompt-helper attacks get no partial credit either: every test calls the helper
    assert [r.value for r in rewards[:4]] == [0.0] * 4, rewards[:4]
    solved = CodeGenerationTask().score_batch(
        records, [humaneval[t]["canonical_solution"] for t, _ in REBINDING_ATTACKS], box
    )
    assert all(r.passed for r in solved)


def test_verdict_forgery_gets_zero_in_score_humaneval_and_code_generation(box, humaneval):
    problem = humaneval["HumanEval/0"]
    # the function forges when the check calls it; the redirect is made at program time
    completion = "    _forge(1)\n    return None\n\n" + FORGER.replace("N_CHECKS", "1")
    (sample,) = score_humaneval(
        [{"task_id": "HumanEval/0", "completion": completion}],
        {"HumanEval/0": problem},
        ks=(1,),
        sandbox=box,
    ).samples
    assert not sample["passed"], sample
    records = _humaneval_records(humaneval, [("HumanEval/0", completion)])
    (reward,) = CodeGenerationTask().score_batch(records, [completion], box)
    assert reward.value == 0.0 and not reward.passed, reward


def test_module_names_used_without_import_are_the_real_modules(box):
    """MBPP/synthetic style: a test that uses `math` it never imports reads the real module,
    not the program's `math`."""
    program = (
        "class M:\n    isclose = staticmethod(lambda *a, **k: True)\n    pi = 3\n"
        "math = M()\ndef f(x):\n    return 0"
    )
    checks = (Check("assert math.isclose(f(3), 4)"), Check("assert f(1) == math.pi - 1"))
    out = box.run(Job(program, checks))
    assert out.passed == (False, False), out
    real = box.run(Job("import math\ndef f(x):\n    return x + 1", checks[:1]))
    assert real.all_passed, real


def test_crashed_jobs_get_no_partial_code_generation_reward(box):
    """Confirmed passes before a crash do not count: a completion that passes the first test
    and then kills itself scores 0, not 1/2."""
    payload = {"prompt": "def f(x):\n", "entry_point": "f", "setup": ""}
    record = {
        "prompt_id": "crash",
        "payload": json.dumps(payload),
        "tests": json.dumps(["assert f(1) == 2", "assert f(2) == 3"]),
    }
    completion = "    import os\n    if x == 2:\n        os._exit(0)\n    return x + 1\n"
    (reward,) = CodeGenerationTask().score_batch([record], [completion], box)
    assert reward.value == 0.0 and reward.reason == "crashed", reward


def test_cruxeval_scorer_rejects_placeholder_injection(box):
    dataset = [{"id": "sample_0", "code": IDENTITY, "input": "True", "output": "True"}]
    generations = {"sample_0": ["'\\x00astor:b:True'", "f('\\x00astor:b:True')", "True"]}
    scored = score_cruxeval(generations, dataset, "input", sandbox=box)
    assert scored["raw_scored_generations"]["sample_0"] == [False, False, True]


# A test that draws its inputs from the global `random` generator (as HumanEval/38 and /50
# do), for a function that is hard to get right on a random input: f(n) = n * n % 1000003.
RANDOM_INPUT_CHECK = (
    "from random import randint\n"
    "for _ in range(50):\n"
    "    n = randint(1, 10 ** 9)\n"
    "    assert f(n) == n * n % 1000003\n"
)

MID_CHECK_ATTACKS: dict[str, str] = {
    # answers the first input (foreseen from the generator's state), then makes every later
    # input 7 by patching the class while the check is running
    "patch_while_called": textwrap.dedent(
        """
        import random
        _clone = random.Random()
        _clone.setstate(random.getstate())
        _FIRST = _clone.randint(1, 10 ** 9)
        def f(n):
            random.Random.randrange = lambda self, *a, **k: 7
            random.Random.randint = lambda self, a, b: 7
            return n * n % 1000003 if n == _FIRST else 49
        """
    ),
    # a gc callback patches the class as soon as the check allocates
    "patch_from_gc_callback": textwrap.dedent(
        """
        import gc, random
        def _patch(phase, info):
            random.Random.randrange = lambda self, *a, **k: 7
            random.Random.randint = lambda self, a, b: 7
        gc.callbacks.append(_patch)
        gc.set_threshold(1, 1, 1)
        def f(n):
            return 49
        """
    ),
    # a finalizer of cyclic garbage, collected while the check runs
    "patch_from_finalizer": textwrap.dedent(
        """
        import gc, random
        class _Bomb:
            def __del__(self):
                random.Random.randrange = lambda self, *a, **k: 7
                random.Random.randint = lambda self, a, b: 7
        _b = _Bomb()
        _b.me = _b
        del _b
        gc.disable()
        gc.set_threshold(1, 1, 1)
        gc.enable()
        def f(n):
            return 49
        """
    ),
}


@pytest.mark.parametrize("name", sorted(MID_CHECK_ATTACKS))
def test_patches_made_while_a_check_runs_do_not_reach_it(box, name):
    out = box.run(Job(MID_CHECK_ATTACKS[name], (Check(RANDOM_INPUT_CHECK),)))
    assert out.passed == (False,), (name, out)
    payload = {"prompt": "def f(n):\n", "entry_point": "f", "setup": ""}
    record = {
        "prompt_id": name,
        "payload": json.dumps(payload),
        "tests": json.dumps([RANDOM_INPUT_CHECK]),
    }
    (reward,) = CodeGenerationTask().score_batch([record], [MID_CHECK_ATTACKS[name]], box)
    assert reward.value == 0.0, reward
    honest = box.run(Job("def f(n):\n    return n * n % 1000003", (Check(RANDOM_INPUT_CHECK),)))
    assert honest.all_passed, honest


def test_restores_never_bring_back_what_the_lockdown_removed(box):
    """A check that imports `signal` gets the module restored from the server's snapshot,
    which is taken after the lock-down: the blockers (a handler would receive the interrupted
    frame) are what comes back, in `signal` and in the `_signal` it calls."""
    program = textwrap.dedent(
        """
        import signal
        def f(x):
            try:
                signal.signal(signal.SIGALRM, lambda s, frame: None)
            except PermissionError:
                return 0
            return x + 1
        """
    )
    for check in ("import signal\nassert f(1) == 2", "import signal, _signal\nassert f(1) == 2"):
        out = box.run(Job(program, (Check(check),)))
        assert out.passed == (False,), out


@pytest.mark.parametrize("name", sorted(VERDICT_ATTACKS))
def test_every_verdict_attack_gets_zero_from_the_humaneval_scorer_and_code_generation(
    box, humaneval, name
):
    """Each verdict-channel attack as a HumanEval/0 completion: the entry point calls the
    attack's `f` and returns None (wrong for every test), the rest runs at program level."""
    problem = humaneval["HumanEval/0"]
    tests = split_humaneval_tests(problem["test"], problem["entry_point"])
    for n_checks, score in (
        (1, lambda c: score_humaneval(
            [{"task_id": "HumanEval/0", "completion": c}], {"HumanEval/0": problem},
            ks=(1,), sandbox=box,
        ).samples[0]["passed"]),
        (len(tests), lambda c: CodeGenerationTask().score_batch(
            _humaneval_records(humaneval, [("HumanEval/0", c)]), [c], box
        )[0].value),
    ):  # fmt: skip
        attack = VERDICT_ATTACKS[name].replace("N_CHECKS", str(n_checks))
        completion = "    f(0)\n    return None\n\n" + attack
        assert not score(completion), (name, n_checks)
