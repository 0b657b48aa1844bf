"""The contract every backend fulfils, so one evaluation module scores them all.

A backend owns the model and its adapter. It trains on prepared examples, reports the answer
tokens' negative log-likelihood, and generates answers, each with the adapter on or off (off =
the base model, for the baseline). Scoring, metrics and files are the caller's business.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ccexp.config import ConfigError


class AdapterMismatch(ConfigError):
    """A saved adapter's setting that the config loading it does not give. Where that config's
    value came from (an override, or the run's own config.yaml beside another run's adapter) is
    the caller's to say: ``line`` words it either way."""

    def __init__(self, file: Path, field: str, saved: Any, live: Any, key: str):
        self.file, self.field, self.saved, self.live, self.key = file, field, saved, live, key
        super().__init__(self.line("expected the adapter's own setting"))

    def line(self, advice: str, config: Path | None = None) -> str:
        """``config``: the file that gave the value (a run's config.yaml); None: this run's config."""
        if config is None:
            given = f"this run's {self.key} gives {self.live!r}" if self.live is not None else \
                f"this run's config sets no {self.key}"
        else:
            given = f"the run's {config} gives {self.key} {self.live!r}" if self.live is not None else \
                f"the run's {config} sets no {self.key}"
        return f"{self.file}: the adapter has {self.field}={self.saved!r}, {given}; {advice}"


def check_saved_config(file: Path, live: dict, fields: dict[str, str], layout: str) -> None:
    """A saved adapter's config against the one this run built: each of ``fields`` (a dotted path
    in the JSON -> the ccexp key that sets it) must agree, or one line names the first that does
    not (an AdapterMismatch). Evaluating with another alpha or base would score another model
    silently. Lists compare as sets (target modules); a field the file lacks (an older ccexp's) is
    not compared."""
    from ccexp.cli import read_json_object

    if not file.is_file():
        raise ConfigError(f"{file}: no such file; expected an adapter saved by ccexp ({layout})")
    saved = read_json_object(file, ConfigError, f"an adapter config saved by ccexp ({layout})")
    for path, key in fields.items():
        want, have, present = saved, live, True
        for part in path.split("."):
            present = present and isinstance(want, dict) and part in want
            want = want.get(part) if isinstance(want, dict) else None
            have = have.get(part) if isinstance(have, dict) else None
        if isinstance(want, list) and isinstance(have, list):
            want, have = sorted(want), sorted(have)
        if present and want != have:
            raise AdapterMismatch(file, path, want, have, key)


def perplexity(loss: float) -> float:
    """exp(loss), per answer token: infinite where a float cannot hold it (a diverged run's loss
    past 709), never a capped number that reads as measured."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def reset_peak_memory() -> None:
    """Start the peak-memory counters afresh, so a run reports its own peak. Hydra's basic
    launcher runs a sweep's jobs one after another in one process, where VmHWM (and a GPU's
    peak) would carry every earlier job's peak: a sweep's memory column only ever rose, in job
    order. The freed memory of earlier jobs is handed back first (collected, then glibc's free
    pages returned), so the new peak starts near what the process still holds. Off Linux the
    resident-set peak cannot be reset (ru_maxrss only grows)."""
    import gc

    gc.collect()
    glibc_call("malloc_trim", 0)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    mlx = sys.modules.get("mlx.core")
    if mlx is not None:
        mlx.reset_peak_memory()
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS (proc(5))


def glibc_call(function: str, *args: int) -> bool:
    """glibc's ``function(*args)`` (``mallopt``, ``malloc_trim``): its result as a bool; False where
    there is no glibc (macOS, musl) or it refused."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or not name:
        return False
    try:
        return bool(getattr(ctypes.CDLL(name), function)(*args))
    except (OSError, AttributeError):
        return False


def current_rss_mb() -> float | None:
    """The process's resident set now (VmRSS), in MiB; None off Linux. At a run's start it is what
    the run's peak cannot go below: in a sweep's later jobs, what earlier jobs left loaded too
    (torch's and mlx's libraries and modules, allocator pages), which no reset gives back."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 2**10
    except (OSError, StopIteration):
        return None


def peak_rss_mb() -> float:
    """The process's peak resident set size. Linux: VmHWM, which starts afresh at exec and at
    ``reset_peak_memory``; ru_maxrss would carry over the peak of the parent that forked us (a
    sweep launcher, a benchmark). Elsewhere ru_maxrss (bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


@dataclass
class Generation:
    texts: list[str]
    """Decoded answers, in the order of the prompts."""
    seconds: list[float]
    """Per-prompt wall time (a batch's time shared by its rows)."""
    new_tokens: list[int]
    """Tokens generated per prompt (up to and including EOS)."""
    first_token_seconds: list[float]
    """Per-prompt wall time until its batch's first new token (prefill + one step)."""

    def __post_init__(self) -> None:
        # Evaluation zips these lists with its examples: a short one would drop predictions.
        counts = {len(self.texts), len(self.seconds), len(self.new_tokens), len(self.first_token_seconds)}
        if len(counts) != 1:
            raise ValueError(f"Generation: {len(self.texts)} texts, {len(self.seconds)} timings, "
                             f"{len(self.new_tokens)} token counts, {len(self.first_token_seconds)} first-token "
                             "timings; expected one of each per prompt")


class Backend(Protocol):
    name: str

    def fit(self, train: Sequence[dict], val: Sequence[dict], logger: Any, run_dir: Path,
            checkpoint: Path | None = None) -> dict[str, float]:
        """Train the adapter, keep the best by validation loss; return train/* statistics. With
        ``checkpoint`` (``ccexp.resume``), continue the run that saved it from there."""

    def nll(self, examples: Sequence[dict], adapter: bool = True) -> tuple[float, int]:
        """Summed NLL of the answer tokens and their count."""

    def generate(self, prompts: Sequence[list[dict]], max_new_tokens: int, adapter: bool = True) -> Generation:
        """Greedy answers to chat prompts (message lists ending before the assistant turn)."""

    def save_adapter(self, path: Path) -> None:
        """Write the adapter in its standard layout (peft for torch)."""

    def load_adapter(self, path: Path) -> None:
        """Load weights written by save_adapter into this backend's adapter (same method and
        settings); a mismatch is a ConfigError naming the file."""

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters."""

    def peak_memory_mb(self) -> float:
        """Peak memory so far in MiB: accelerator memory on a GPU, resident set size on a CPU."""

    def peak_is_host_memory(self) -> bool:
        """Whether ``peak_memory_mb`` is the process's resident set (a CPU run), which starts at
        what the process holds already; a GPU's peak starts at its own reset."""
