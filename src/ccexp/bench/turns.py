"""Training sides that take turns, one optimizer step each, so machine drift hits them alike.

Run one after the other, the sides of a ratio see different machines: on a shared 2-core VM the
same step took 14 to 22 s within minutes, and a Lightning-vs-bare-loop ratio of the same kernels
read 0.93 in one run and 0.998 in the next. In turns, step k of every side runs within a few
seconds of the others' step k: drift shared by all cancels out of the ratios.

Each side runs its own loop (Lightning's, HF Trainer's, a bare one) in a thread of its own, and
at the end of every optimizer step hands the turn on and waits for it to come back (``pass_turn``).
Only the side whose turn it is runs: model loading, steps, validation and scoring included, so
nothing timed ever overlaps another side's work. Each side times its steps from getting the turn
back, not from its previous step's end.

The random number generators (torch's, CUDA's, Python's, NumPy's) are process-wide: each side
gets its own state back with its turn, so dropout masks and batch orders are drawn as if that
side ran alone. So is the heap, on purpose: glibc gives every thread a malloc arena of its own,
which keeps the memory its tensors freed. Three SmolLM2 sides held ~5 GB each between their
steps and ran a 24 GB VM out of memory; in one shared arena (as one thread after another had)
each side's step reuses what the others freed, and the three peaked at 14.7 GB. The bench
command starts with ``MALLOC_ARENA_MAX=1``; ``run`` also asks ``mallopt`` for it, which helps
callers in a process of their own less (arenas made before it stay).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ccexp.backends.speedups import M_ARENA_MAX, mallopt


class Aborted(Exception):
    """Raised in the other sides once one side failed: their results would be of no use."""


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, random.getstate(), np.random.get_state()


def _set_rng_state(state: tuple) -> None:
    cpu, cuda, py, np_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(py)
    np.random.set_state(np_state)


class Turns:
    """Round-robin turns between named sides, in the order given; a side that returns or fails
    leaves the round. ``order`` lists the turns as they were taken (one entry per pass).

    ``swap``: two sides that trade places every other round. A step runs on the caches and heap
    the step before it left, so a side that always follows the same other side is always timed
    after that side's memory traffic: with ccexp, the bare loop and HF Trainer in a fixed order,
    ccexp's step always came after HF's (fp32 weights, padded batches) and the bare loop's after
    ccexp's, which has the same shapes, and the Lightning-vs-bare ratio read 0.95–0.99 from the
    same kernels. Swapped, each of the pair follows the other and the third side equally often."""

    def __init__(self, names: Sequence[str], swap: tuple[str, str] | None = None):
        if swap is not None and not set(swap) <= set(names):
            raise ValueError(f"Turns: swap {swap} names sides not in {list(names)}")
        self.names, self.swap = list(names), swap
        self._cond = threading.Condition()
        self._active = list(self.names)
        self._turn = self.names[0]
        self._failed: tuple[str, BaseException] | None = None
        self._rng: dict[str, tuple] = {}
        self.order: list[str] = []

    def run(self, sides: dict[str, Callable[[Callable[[], None]], object]], seed: int) -> dict[str, object]:
        """Run ``sides[name](pass_turn)`` for every name, in turns; their results by name. Every
        side starts from the random state ``seed`` gives. The first failure is raised here as it
        was (a ConfigError stays one, for the bench's one-line errors), with a note naming the side."""
        if list(sides) != self.names:
            raise ValueError(f"Turns: sides {list(sides)} are not the ones named, {self.names}")
        mallopt(M_ARENA_MAX, 1)  # before the threads start: new threads then share the main arena
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        start = _rng_state()
        self._rng = {name: start for name in self.names}
        results: dict[str, object] = {}

        def body(name: str) -> None:
            try:
                self._wait(name)
                results[name] = sides[name](lambda: self.pass_turn(name))
            except Aborted:
                pass
            except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
                with self._cond:
                    self._failed = self._failed or (name, err)
            finally:
                self._leave(name)

        # Daemon threads: a Ctrl-C in the main thread ends the process, not just the wait.
        threads = [threading.Thread(target=body, args=(name,), name=f"bench-{name}", daemon=True)
                   for name in self.names]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1.0)
        if self._failed is not None:
            name, err = self._failed
            if hasattr(err, "add_note"):  # Python 3.11+
                err.add_note(f"raised by the benchmark side {name!r}")
            raise err
        return results

    def pass_turn(self, name: str) -> None:
        """Called by side ``name`` at the end of a step: the next side in the round runs; this
        returns when the turn is back (with this side's random state)."""
        with self._cond:
            self.order.append(name)
            self._rng[name] = _rng_state()
            self._advance(name)
        self._wait(name)

    def _wait(self, name: str) -> None:
        with self._cond:
            while self._turn != name and self._failed is None:
                self._cond.wait()
            if self._failed is not None and self._failed[0] != name:
                raise Aborted
            _set_rng_state(self._rng[name])

    def _advance(self, name: str) -> None:
        """Give the turn to the side after ``name`` in the round (``name`` itself if alone); at the
        round's end, the ``swap`` pair trade places first."""
        at = self._active.index(name) + 1
        if at == len(self._active):
            at = 0
            if self.swap is not None and set(self.swap) <= set(self._active):
                i, j = (self._active.index(n) for n in self.swap)
                self._active[i], self._active[j] = self._active[j], self._active[i]
        self._turn = self._active[at]
        self._cond.notify_all()

    def _leave(self, name: str) -> None:
        with self._cond:
            if name not in self._active:
                return
            if self._turn == name and len(self._active) > 1:
                self._advance(name)
            self._active.remove(name)
            if not self._active:
                self._turn = None
            self._cond.notify_all()


class StepClock:
    """Seconds per step, each from the previous step's end (or ``start``) to this one's, less
    the time spent waiting for the turn in between."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync, self.seconds, self._since = sync, [], time.perf_counter()

    def start(self) -> None:
        self._since = time.perf_counter()

    def step_end(self, pass_turn: Callable[[], None]) -> None:
        self.sync()
        self.seconds.append(time.perf_counter() - self._since)
        pass_turn()
        self._since = time.perf_counter()
