"""SIGTERM (kill, a scheduler's time limit) as an exception wherever a run is, so that it is
recorded as one in Lightning's training loop is: error.txt, metrics.json, exit 143, the sweep's
summary. Python's default ends the process, metrics.json still saying "running".

Lightning's training loop has its own handler, which stops at the end of the step and then calls
the handler it found: ours would raise in the middle of the step (a checkpoint half written), so
``lightning_stops_itself`` puts the default back around ``trainer.fit``."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


def raise_sigterm(signum, frame) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    raise SIGTERMException()


def raise_on_sigterm() -> Callable[[], None]:
    """Install ``raise_sigterm``, in the main thread over the default handler only (a launcher's
    own, submitit's, which lets SLURM's requeue signal work, is kept); returns what puts the
    handler back."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, raise_sigterm)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def lightning_stops_itself() -> Iterator[None]:
    """The default handler while Lightning trains or validates, where ours is installed."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not raise_sigterm:
        yield
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, raise_sigterm)
