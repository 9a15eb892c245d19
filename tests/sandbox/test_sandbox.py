"""Sandbox API behaviour: verdicts, statuses, limits, configuration errors, check rewriting."""

from __future__ import annotations

import pytest

from astor_core.sandbox import (
    Check,
    Job,
    Limits,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
    _harness,
)
from astor_core.sandbox.worker import parse_answer


def test_checks_are_independent_and_ordered(box):
    job = Job(
        "def f(x):\n    return x * 2",
        (Check("assert f(2) == 4"), Check("assert f(2) == 5"), Check("f(3)", "eval"), Check("1/0")),
    )
    out = box.run(job)
    assert out.status == "ok"
    assert out.passed == (True, False, True, False)
    assert out.values == (None, None, "6", None)
    assert out.details[1].startswith("AssertionError") and out.details[3].startswith(
        "ZeroDivisionError"
    )


def test_statuses(box):
    assert box.run(Job("def f(:\n", (Check("pass"),))).status == "syntax_error"
    assert box.run(Job("raise ValueError('x')", (Check("pass"),))).status == "error"
    hang = box.run(
        Job("def f():\n    while True: pass", (Check("pass"), Check("f()"), Check("pass")))
    )
    # a verdict counts only when the job ends normally: the check confirmed before the
    # time limit hit does not count either
    assert hang.status == "timeout" and hang.passed == (False, False, False)
    assert hang.details[0] == "" and hang.details[2] == "not run"
    assert box.run(Job("pass", (Check("undefined_name"),))).passed == (False,)
    bad_check = box.run(Job("pass", (Check("assert ("),)))
    assert bad_check.status == "ok" and bad_check.passed == (False,)
    assert "compile" in bad_check.details[0]


def test_every_job_starts_from_the_same_random_state(box):
    """A job's verdict must not depend on which fork ran it: `random` is seeded once per server
    (SandboxConfig.random_seed), not reseeded in each child."""
    import random

    expected = repr(random.Random(SandboxConfig().random_seed).random())
    job = Job("import random\nX = random.random()", (Check("X", "eval"),))
    assert [o.values for o in box.run_many([job] * 6)] == [(expected,)] * 6


def test_preloaded_modules_keep_their_other_fork_hooks():
    """Only random's reseed is dropped while the server preloads: threading registers its own
    after-fork hook, which must still be installed (and the server must start)."""
    config = SandboxConfig(preload_modules=(*SandboxConfig().preload_modules, "threading"))
    with Sandbox(workers=1, config=config) as box:
        job = Job("import threading\nN = threading.active_count()", (Check("N", "eval"),))
        assert box.run(job).values == ("1",)


def test_syntax_errors_are_reported_with_their_reason(box):
    out = box.run(Job("x = (1,\n", (Check("pass"),)))
    assert out.status == "syntax_error" and "SyntaxError" in out.detail
    assert box.run(Job("x = 1\0", (Check("pass"),))).status == "syntax_error"
    assert box.run(Job("x = " + "(" * 300 + ")" * 300, (Check("pass"),))).status == "syntax_error"
    assert box.run(Job("pass", (Check("pass"),))).all_passed  # the server is still serving


def test_setup_runs_before_program_and_outputs_are_kept(box):
    out = box.run(Job("print('hello', VALUE)", (Check("assert VALUE == 3"),), setup="VALUE = 3"))
    assert out.all_passed and out.stdout == "hello 3\n"


def test_program_sees_a_private_writable_directory(box):
    program = (
        "open('scratch.txt', 'w').write('x' * 10)\nimport os\nSIZE = os.path.getsize('scratch.txt')"
    )
    assert box.run(Job(program, (Check("assert SIZE == 10"),))).all_passed
    # the next job starts from an empty directory
    assert box.run(Job("import os\nN = len(os.listdir('.'))", (Check("assert N == 0"),))).all_passed


def _answer(frames: bytes, exit_code: int = 0) -> dict:
    return {
        "frames": frames, "overflow": False, "timed_out": False, "exit_code": exit_code,
        "cpu_s": 0.0, "output": b"", "output_size": 0, "duration_s": 0.0,
    }  # fmt: skip


def _signed(key: bytes, kind: bytes, index: int, payload: bytes) -> bytes:
    import hashlib

    return _harness.frame(hashlib.blake2b(key=key, digest_size=16), kind, index, payload)


def test_forged_frames_are_rejected():
    job = Job("pass", (Check("pass"),))
    key = b"k" * 32
    good = _signed(key, b"P", 0, b"ok") + _signed(key, b"C", 0, b"1") + _signed(key, b"D", 0, b"")
    assert parse_answer(_answer(good), key, job, Limits()).all_passed
    # the same frames under another key (a guess, or another job's), an unsigned frame, a
    # flipped verdict under a copied tag, a replayed frame: all invalid
    other = b"x" * 32
    forged = [
        _signed(other, b"P", 0, b"ok")
        + _signed(other, b"C", 0, b"1")
        + _signed(other, b"D", 0, b""),
        _signed(key, b"P", 0, b"ok") + b"C 0 1 " + b"0" * 32 + b"\n1" + _signed(key, b"D", 0, b""),
        _signed(key, b"P", 0, b"ok") + _signed(key, b"C", 0, b"0").replace(b"\n0", b"\n1"),
        good + _signed(key, b"C", 0, b"1"),
    ]
    for frames in forged:
        out = parse_answer(_answer(frames), key, job, Limits())
        assert out.status == "invalid" and out.passed == (False,), frames
    # well-formed, authentic frames, but the job did not end normally: nothing counts
    crashed = parse_answer(_answer(good, exit_code=-9), key, job, Limits())
    assert crashed.status == "crashed" and crashed.passed == (False,)


def test_is_plain_and_rewrite():
    assert _harness.is_plain({"a": [1, 2.5, (None, b"x")]})
    assert not _harness.is_plain([object()])
    code = _harness.compile_check("assert abs(f(1) - 2) < 1e-9", "exec")
    names = {type(c).__name__ for c in code.co_consts}
    assert "function" in names and "builtin_function_or_method" in names  # helpers are constants
    with pytest.raises(TypeError):
        exec(code, {"f": lambda x: type("E", (), {"__sub__": lambda s, o: 0})()})
    exec(code, {"f": lambda x: x + 1})


def test_missing_bwrap_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="scripts/setup.sh"):
        Sandbox(config=SandboxConfig(bwrap_path="/nonexistent/bwrap"))


def test_isolation_off_warns_loudly_but_still_confirms_checks():
    with pytest.warns(RuntimeWarning, match="ISOLATION IS OFF"):
        box = Sandbox(workers=1, config=SandboxConfig(isolation=False))
    with box:
        assert box.run(Job("def f(x):\n    return x + 1", (Check("assert f(1) == 2"),))).all_passed
        forged = box.run(Job("import sys\nsys.exit(0)", (Check("assert f(1) == 2"),)))
        assert forged.passed == (False,)


def test_default_sandbox_is_shared():
    from astor_core.sandbox import default_sandbox

    first = default_sandbox()
    assert default_sandbox() is first
    assert first.run(Job("x = 1", (Check("assert x == 1"),))).all_passed


def test_shared_sandbox_is_one_pool_per_config_rebuilt_once_closed():
    from astor_core.sandbox import SandboxConfig, shared_sandbox

    cfg = SandboxConfig(workers=1)
    box = shared_sandbox(cfg)
    assert shared_sandbox(SandboxConfig(workers=1)) is box  # equal configs share a pool
    assert shared_sandbox(SandboxConfig(workers=1, tmpfs_mb=64)) is not box
    box.close()
    assert box.closed
    again = shared_sandbox(cfg)
    assert again is not box and not again.closed
    assert again.run(Job("x = 1", (Check("assert x == 1"),))).all_passed


# CRUXEval sample_566 and sample_621 (reference code; output mode), verbatim.
CRUX_566 = (
    "def f(string, code):\n    t = ''\n    try:\n        t = string.encode(code)\n"
    "        if t.endswith(b'\\n'):\n            t = t[:-1]\n        t = t.decode('UTF-8')\n"
    "        return t\n    except:\n        return t"
)
CRUX_621 = (
    "def f(text, encoding):\n    try:\n        return text.encode(encoding)\n"
    "    except LookupError:\n        return str(LookupError)"
)


def test_stdlib_modules_that_are_not_preloaded_import_fine(box):
    """Regression: the import system's own marshal.loads of .pyc files was blocked."""
    jobs = [
        Job("import difflib\nR = difflib.SequenceMatcher(None, 'abc', 'abd').ratio()",
            (Check("assert abs(R - 2 / 3) < 1e-9"),)),
        Job("import pprint\nS = pprint.pformat({'a': [1, 2]})", (Check("assert S == \"{'a': [1, 2]}\""),)),
        Job("B = 'x'.encode('shift_jis')", (Check("B", "eval"),)),
        Job(CRUX_566, (Check('f("towaru", "UTF-8")', "eval"),)),
        Job(CRUX_621, (Check("f('13:45:56', 'shift_jis')", "eval"),)),
    ]  # fmt: skip
    outs = box.run_many(jobs)
    assert [o.status for o in outs] == ["ok"] * len(jobs), [o.detail for o in outs]
    assert all(o.all_passed for o in outs)
    assert [o.values[0] for o in outs[2:]] == ["b'x'", "'towaru'", "b'13:45:56'"]


def test_bytecode_stays_unloadable_even_through_imports(box):
    """marshal.loads stays blocked: neither a direct call nor a planted .pyc builds code."""
    direct = "import marshal\nc = marshal.loads(marshal.dumps(compile('x = 1', 's', 'exec')))"
    planted = (
        "import importlib.util, marshal, sys\n"
        "sys.implementation.cache_tag = 'cpython-311'\n"
        "code = compile('def f(x):\\n    return x + 1', 'evil.py', 'exec')\n"
        "header = importlib.util.MAGIC_NUMBER + bytes(12)\n"
        "open('evil.pyc', 'wb').write(header + marshal.dumps(code))\n"
        "sys.path.insert(0, '.')\n"
        "try:\n    from evil import f\nexcept BaseException:\n    pass\n"
    )
    for program in (direct, planted):
        out = box.run(Job(program, (Check("assert f(1) == 2"),)))
        assert out.passed == (False,), out
        assert "marshal.loads" in out.detail, out


def test_large_writes_are_output_limit_not_error(box):
    """Regression: a write refused by RLIMIT_FSIZE must read output_limit, never error."""
    programs = [
        "print('x' * 10**6)\ndef f(x):\n    return x + 1",
        "open('big.txt', 'w').write('x' * 10**6)\ndef f(x):\n    return x + 1",
        "import sys\nsys.stdout.write('y' * 10**6)\ndef f(x):\n    return x + 1",
        "def f(x):\n    open('big.txt', 'w').write('x' * 10**6)\n    return x + 1",
    ]
    jobs = [Job(p, (Check("assert f(1) == 2"),)) for p in programs]
    for out in box.run_many(jobs):
        assert out.status == "output_limit" and out.passed == (False,), out


def test_server_lost_mid_batch_costs_only_the_job_in_flight():
    """run_many sends batches; a server killed from outside fails the job it was running,
    and the rest of its batch runs on a respawned server, in order."""
    import os
    import threading
    import time

    with Sandbox(workers=1, limits=Limits(wall_s=3.0, cpu_s=3.0)) as box:
        jobs = [
            Job(f"import time\ntime.sleep(0.15)\nx = {i}", (Check(f"assert x == {i}"),))
            for i in range(8)
        ]
        pid = box.server_pids()[0]
        killer = threading.Timer(0.5, lambda: os.killpg(pid, 9))
        killer.start()
        t0 = time.monotonic()
        outs = box.run_many(jobs)
        killer.join()
        assert time.monotonic() - t0 < 10
        statuses = [o.status for o in outs]
        assert statuses.count("crashed") == 1, statuses
        assert all(o.all_passed for o in outs if o.status != "crashed"), outs
        assert box.restarts == 1
