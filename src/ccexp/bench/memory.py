"""Peak memory of a training step, in a fresh process per method (peak RSS never goes
down, so two methods cannot share a process): peak RSS on the CPU, peak allocated GPU memory
on CUDA. ``python -m ccexp.bench.memory <overrides>`` prints one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ccexp.backends.base import current_rss_mb


class ProbeError(RuntimeError):
    """A memory probe's process failed; the message is one line: the method and the child's last error line."""


def measure(method: str, overrides: list[str]) -> dict:
    """Run in a child process: build the backend for ``method``, train, report memory."""
    proc = subprocess.run([sys.executable, "-m", "ccexp.bench.memory", *overrides, f"method={method}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        # A child killed by the kernel (out of memory) writes nothing: its signal says why.
        why = (proc.stderr.strip().splitlines() or [f"killed by signal {-proc.returncode}" if proc.returncode < 0
                                                     else f"exit status {proc.returncode}, no error output"])[-1]
        raise ProbeError(f"the {method} memory probe (a child process) failed: {why}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise ProbeError(f"the {method} memory probe (a child process) printed no results line: "
                         f"{proc.stdout.strip()[-200:]!r}") from None


def main(overrides: list[str]) -> None:
    import torch

    from ccexp.backends import resolve_backend
    from ccexp.backends.lightning import TorchBackend
    from ccexp.bench.setup import compose_run_config
    from ccexp.data import build_splits
    from ccexp.models import resolve_model_dir

    rc = compose_run_config(overrides)
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    model_dir = resolve_model_dir(rc.model)
    device = resolve_backend(rc.backend.name)
    before = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else current_rss_mb()
    backend = TorchBackend(rc, device, model_dir)
    weights = sum(t.numel() * t.element_size() for t in [*backend.model.parameters(), *backend.model.buffers()])
    with tempfile.TemporaryDirectory() as tmp:
        stats = backend.fit(splits["train"], splits["val"], None, Path(tmp))
    print(json.dumps({"peak_mb": backend.peak_memory_mb(), "before_model_mb": before, "steps": stats["train/steps"],
                      "tokens": stats["train/tokens"],
                      "measure": "peak allocated GPU memory" if device == "cuda" else "peak RSS",
                      "weights_mb": weights / 2**20, "torch_threads": torch.get_num_threads(),
                      "gradient_checkpointing": rc.method.gradient_checkpointing,
                      "release_freed_memory": rc.backend.release_freed_memory and device == "cpu"}))


if __name__ == "__main__":
    main(sys.argv[1:])
