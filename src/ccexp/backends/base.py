"""The contract every backend fulfils, so one evaluation module scores them all.

A backend owns the model and its adapter. It trains on prepared examples, reports the answer
tokens' negative log-likelihood, and generates answers, each with the adapter on or off (off =
the base model, for the baseline). Scoring, metrics and files are the caller's business.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence


def peak_rss_mb() -> float:
    """The process's peak resident set size. Linux: VmHWM, which starts afresh at exec;
    ru_maxrss would carry over the peak of the parent that forked us (a sweep launcher, a
    benchmark). Elsewhere ru_maxrss (bytes on macOS)."""
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
