"""SIGTERM (kill, a scheduler's time limit) and SIGUSR1 (a scheduler's warning before it: SLURM's
``--signal=USR1@N``, Lightning's convention) as an exception wherever a run is, so that it is
recorded as one in Lightning's training loop is: error.txt, metrics.json, exit 143 (138 for
SIGUSR1), the sweep's summary. Python's default ends the process, metrics.json still saying
"running".

Lightning's training loop has its own SIGTERM handler, which stops at the end of the step and
then calls the handler it found: ours would raise in the middle of the step (a checkpoint half
written), so ``lightning_stops_itself`` puts the default back around ``trainer.fit`` and hands
SIGUSR1 to Lightning's SIGTERM handler there, each signal where its handler is ours (a launcher
may own SIGTERM and not SIGUSR1). With ours on SIGUSR1, Lightning's SLURM plugin
installs none of its own (it requeues the job with scontrol and trains on)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

STOPS = (signal.SIGTERM, signal.SIGUSR1)


def raise_sigterm(signum, frame) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    raise SIGTERMException(int(signum))  # the signal, for the line that names it (sweep.interruption)


def raise_on_sigterm() -> Callable[[], None]:
    """Install ``raise_sigterm`` on SIGTERM and SIGUSR1, in the main thread over the default
    handler only (a launcher's own, submitit's, which lets SLURM's requeue signal work, is kept);
    returns what puts the handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    ours = [s for s in STOPS if signal.getsignal(s) is signal.SIG_DFL]
    for signum in ours:
        signal.signal(signum, raise_sigterm)

    def restore() -> None:
        for signum in ours:
            signal.signal(signum, signal.SIG_DFL)
    return restore


@contextmanager
def lightning_stops_itself() -> Iterator[None]:
    """While Lightning trains or validates, each signal whose handler is ours stops at a step's
    end: SIGTERM by Lightning's own handler (the default put back, which it then finds), SIGUSR1
    handed to Lightning's part of its SIGTERM handler. Decided per signal: where a launcher owns
    SIGTERM, Lightning's handler calls the launcher's after its own, and SIGUSR1 (still ours)
    goes to Lightning's part only, the launcher's SIGTERM handler not being one for SIGUSR1."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    term = signal.getsignal(signal.SIGTERM) is raise_sigterm
    usr1 = signal.getsignal(signal.SIGUSR1) is raise_sigterm
    launchers = signal.getsignal(signal.SIGTERM)  # what Lightning finds on SIGTERM and calls after its own
    received: list[int] = []

    def as_sigterm(signum, frame) -> None:
        received.append(int(signum))
        handler = signal.getsignal(signal.SIGTERM)
        if not callable(handler) or handler is launchers or handler is raise_sigterm:
            raise_sigterm(signum, frame)  # outside Lightning's loop (before it sets its handler): at once
        lightnings(handler, launchers)(signum, frame)

    if term:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if usr1:
        signal.signal(signal.SIGUSR1, as_sigterm)
    try:
        yield
    except SIGTERMException as err:
        if received and not err.args:  # Lightning's own, raised at the step's end: say which signal
            raise SIGTERMException(received[0]) from err
        raise
    finally:
        if term:
            signal.signal(signal.SIGTERM, raise_sigterm)
        if usr1:
            signal.signal(signal.SIGUSR1, raise_sigterm)


def lightnings(handler: Callable, launchers) -> Callable:
    """Lightning's SIGTERM handler less the one it found there (a launcher's): Lightning 2.6 composes
    them (``_HandlersCompose``, its own first: it marks the trainer to stop at the step's end)."""
    composed = getattr(handler, "signal_handlers", None)
    if not isinstance(composed, list):  # not Lightning's composition: the handler as it is
        return handler

    def own(signum, frame) -> None:
        for part in composed:
            if part is not launchers and callable(part):
                part(signum, frame)
    return own
