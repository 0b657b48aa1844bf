"""The benchmark's turns: sides alternate step by step, each keeps its own random stream, and a
failing side is named instead of leaving the others waiting."""

from __future__ import annotations

import random
import sys

import pytest
import torch

from ccexp.bench.turns import StepClock, Turns


def _draws(steps: int, log: list):
    def side(pass_turn):
        out = []
        for _ in range(steps):
            out.append((torch.rand(3), random.random()))
            log.append(steps)
            pass_turn()
        return out
    return side


def test_sides_alternate_and_draw_as_if_alone():
    log: list[int] = []
    turns = Turns(["a", "b", "c"])
    together = turns.run({"a": _draws(3, log), "b": _draws(2, log), "c": _draws(3, log)}, seed=7)
    # Round robin; the side that finishes first leaves the round.
    assert turns.order == ["a", "b", "c", "a", "b", "c", "a", "c"]
    assert log == [3, 2, 3, 3, 2, 3, 3, 3]
    alone = Turns(["a"]).run({"a": _draws(3, [])}, seed=7)["a"]
    for name in ("a", "c"):
        for (t1, p1), (t2, p2) in zip(together[name], alone):
            assert torch.equal(t1, t2) and p1 == p2, name


def test_a_swapped_pair_trades_places_every_other_round():
    turns = Turns(["a", "b", "c"], swap=("a", "b"))
    together = turns.run({"a": _draws(3, []), "b": _draws(3, []), "c": _draws(2, [])}, seed=7)
    # a and b each follow c and each other equally often (c leaves after its second step).
    assert turns.order == ["a", "b", "c", "b", "a", "c", "a", "b"]
    alone = Turns(["a"]).run({"a": _draws(3, [])}, seed=7)["a"]
    for (t1, p1), (t2, p2) in zip(together["b"], alone):  # the random streams follow the side, not the slot
        assert torch.equal(t1, t2) and p1 == p2
    with pytest.raises(ValueError, match="swap"):
        Turns(["a", "b"], swap=("a", "z"))


def test_a_failing_side_is_named_and_the_others_stop():
    def broken(pass_turn):
        pass_turn()
        raise ValueError("out of memory")

    steps: list[str] = []

    def healthy(pass_turn):
        for _ in range(100):
            steps.append("ok")
            pass_turn()

    with pytest.raises(ValueError, match="out of memory") as failure:
        Turns(["healthy", "broken"]).run({"healthy": healthy, "broken": broken}, seed=0)
    if sys.version_info >= (3, 11):  # exception notes
        assert failure.value.__notes__ == ["raised by the benchmark side 'broken'"]
    assert len(steps) == 2  # its first step, and the one before it learned of the failure


def test_step_clock_leaves_out_the_wait_for_the_turn(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("ccexp.bench.turns.time.perf_counter", lambda: now[0])

    def wait(seconds):
        return lambda: now.__setitem__(0, now[0] + seconds)

    clock = StepClock()
    now[0] += 2.0  # a step
    clock.step_end(wait(30.0))  # the other sides' steps
    now[0] += 3.0
    clock.step_end(wait(0.0))
    assert clock.seconds == [2.0, 3.0]
