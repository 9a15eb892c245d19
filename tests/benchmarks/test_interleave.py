"""benchmarks/_interleave.py: two processes' rounds in turns, each frozen with its children."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks._interleave import Interleaver, SideFailed, overlap

ROOT = Path(__file__).resolve().parents[2]

SIDE = """
import json, subprocess, sys, time
sys.path.insert(0, {root!r})
from benchmarks._interleave import RoundBarrier
out, rounds = sys.argv[1], int(sys.argv[2])
# a background child that keeps writing timestamps: it must be frozen with its parent
child = subprocess.Popen([sys.executable, "-c", (
    "import sys, time\\nf = open(sys.argv[1], 'a')\\n"
    "while True:\\n    f.write(repr(time.time()) + '\\\\n'); f.flush(); time.sleep(0.002)"
), out + ".child"])
time.sleep(0.2)
barrier = RoundBarrier()
for _ in range(rounds):
    t = time.time()
    while time.time() - t < 0.15:
        pass
    barrier()
child.kill()
child.wait()
json.dump({{"rounds": barrier.rounds, "ends": barrier.ends, "pauses": barrier.pauses}}, open(out, "w"))
"""


def _active(res: dict) -> list[tuple[float, float]]:
    """A side's active intervals of rounds 2..N: from a resume to the next round end."""
    return [(p[1], e) for p, e in zip(res["pauses"], res["ends"][1:], strict=False)]


def test_sides_take_turns_and_their_children_are_frozen_meanwhile(tmp_path: Path) -> None:
    script = tmp_path / "side.py"
    script.write_text(SIDE.format(root=str(ROOT)))
    rounds = 4
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    inter = Interleaver(
        [[sys.executable, str(script), str(o), str(rounds)] for o in outs],
        [tmp_path / "a.log", tmp_path / "b.log"],
    )
    try:
        inter.run(lambda k: (0, 1) if k % 2 == 0 else (1, 0))
    finally:
        inter.kill()
    a, b = (json.loads(o.read_text()) for o in outs)
    assert len(a["rounds"]) == len(b["rounds"]) == rounds - 1
    assert all(0.15 <= t < 1.0 for t in a["rounds"] + b["rounds"])
    act_a, act_b = _active(a), _active(b)
    # never both running, and the order alternates: a first in even rounds (k = 2, 4)
    for k, (ra, rb) in enumerate(zip(act_a, act_b, strict=True), start=2):
        assert overlap(ra[0], ra[1], [rb]) == 0.0
        assert (ra[1] <= rb[0]) == (k % 2 == 0)
    # each side's child wrote nothing while the other side had its turn
    for mine, other in ((tmp_path / "a.json.child", act_b), (tmp_path / "b.json.child", act_a)):
        stamps = [float(x) for x in mine.read_text().split()]
        assert stamps
        inside = [t for t in stamps if any(lo + 0.02 < t < hi - 0.02 for lo, hi in other)]
        assert inside == []


def test_a_failing_side_is_reported_with_its_output(tmp_path: Path) -> None:
    inter = Interleaver(
        [[sys.executable, "-c", "print('boom'); raise SystemExit(3)"]], [tmp_path / "x.log"]
    )
    with pytest.raises(SideFailed, match="exited 3:\nboom"):
        inter.run(lambda k: (0,))
    inter.kill()
