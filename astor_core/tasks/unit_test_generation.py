"""Unit-test generation: write asserts for a given function; rewarded by mutants killed.

The completion (the model's tests) is untrusted, so it is the sandboxed *program*; the
function under test (the reference, a behaviour-identical twin of it, or one mutant) is
trusted *setup*, and a single trusted `pass` check confirms that the tests ran to the end
without an assertion failing.

A test earns reward only for what it observes by *calling* the code. Three layers keep it
from telling the reference from a mutant any other way (reading `f.__code__`, comparing
bytecode, line numbers, addresses):

1. Static screening, no execution (`ut_screen.screen_tests`), a whitelist: the tests must parse (a
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

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from astor_core.sandbox.api import Check, Job, Outcome
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
    behaviour_twin,
    canonical,
    generate_mutants,
)
from astor_core.tasks.ut_config import UnitTestConfig
from astor_core.tasks.ut_screen import Screened, screen_tests

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
