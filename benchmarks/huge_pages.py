"""Benchmark: PyTorch's CPU tensors on transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, which
``import ccexp`` sets unless the environment already says) against 4 KB pages, on the same
training passes, in alternating child processes.

    python benchmarks/huge_pages.py [--model smollm2_135m] [--rounds 2] [--batches 4] [overrides ...]

The setting is read once, at a process's first tensor allocation, so each side runs in a child
process of its own: each round starts one child per side, in alternating order, so drift of the
machine's speed hits both alike. A child loads the model, runs every batch (ccexp's packed
training batches, forward + backward, eager) once untimed, then once timed, and reports its
seconds, its page faults during the timed passes and its peak RSS. Prints each round and the
ratio 4 KB / huge pages. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIDES = {"4k": "0", "huge": "1"}


def child(overrides: list[str], n_batches: int) -> dict:
    import torch

    from ccexp.backends.base import peak_rss_mb
    from ccexp.backends.lightning import TorchBackend
    from ccexp.bench.setup import compose_run_config
    from ccexp.bench.training import forward_backward, training_loader
    from ccexp.data import build_splits
    from ccexp.models import resolve_model_dir

    rc = compose_run_config(overrides)
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    backend = TorchBackend(rc, "cpu", resolve_model_dir(rc.model))
    batches = list(training_loader(backend, rc, splits["train"], splits["val"]))[:n_batches]
    backend.model.train()

    def run_pass(batch: dict, seed: int) -> float:
        torch.manual_seed(seed)  # the same dropout masks on both sides
        return forward_backward(backend, batch)

    for i, batch in enumerate(batches):  # first-touch allocations of every row length, untimed
        run_pass(batch, i)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tic = time.perf_counter()
    losses = [run_pass(batch, i) for i, batch in enumerate(batches)]
    return {"seconds": time.perf_counter() - tic, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            "peak_rss_mb": peak_rss_mb(), "losses": losses,
            "tokens": sum(int(b["n_computed"]) for b in batches), "precision": backend.precision}


def main() -> None:
    from hydra.errors import HydraException

    from ccexp.backends import speedups
    from ccexp.bench.setup import compose_run_config
    from ccexp.cli import OneLineParser, int_at_least
    from ccexp.config import ConfigError
    from ccexp.config_errors import config_error_line

    parser = OneLineParser(prog="huge_pages.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--rounds", type=int_at_least(1), default=2)
    parser.add_argument("--batches", type=int_at_least(1), default=4, help="training batches per child")
    parser.add_argument("--batch-size", type=int_at_least(1), default=4)
    parser.add_argument("--child", choices=sorted(SIDES), help=argparse.SUPPRESS)  # one side's process
    parser.add_argument("overrides", nargs="*", default=[], help="more config overrides, as for python -m ccexp")
    args = parser.parse_args()
    overrides = [f"model={args.model}", "backend=cpu", "logger=none", "backend.compile=false",
                 f"trainer.batch_size={args.batch_size}", f"data_size.train={args.batch_size * args.batches}",
                 *args.overrides]
    if args.child:
        print(json.dumps(child(overrides, args.batches)))
        return
    try:
        compose_run_config(overrides)  # bad overrides: one line here, not one per child
    except (ConfigError, HydraException) as err:
        parser.error(config_error_line(err))
    mode = speedups.huge_pages_mode()
    if mode in ("never", "unavailable"):
        parser.error(f"transparent huge pages are {mode} on this machine: nothing to compare")
    print(f"{args.model}: {args.batches} packed batches of {args.batch_size} per child, forward + backward, eager; "
          f"kernel THP mode: {mode}")
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    for r in range(args.rounds):
        order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]
        for side in order:
            env = {**os.environ, "THP_MEM_ALLOC_ENABLE": SIDES[side], "MALLOC_ARENA_MAX": "1"}
            proc = subprocess.run([sys.executable, __file__, "--child", side, "--model", args.model,
                                   "--batches", str(args.batches), "--batch-size", str(args.batch_size),
                                   *args.overrides], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                parser.error(f"the {side} child failed (exit {proc.returncode}): {tail}")
            results[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        small, huge = results["4k"][-1], results["huge"][-1]
        print(f"  round {r + 1}: 4 KB pages {small['seconds']:.2f} s ({small['faults']:,} faults), huge pages "
              f"{huge['seconds']:.2f} s ({huge['faults']:,} faults), ratio {small['seconds'] / huge['seconds']:.3f}")
    total = {side: sum(x["seconds"] for x in runs) for side, runs in results.items()}
    tokens = results["huge"][0]["tokens"] * args.rounds
    gap = max(abs(a - b) / abs(a) for x, y in zip(results["4k"], results["huge"]) for a, b in zip(x["losses"], y["losses"]))
    rss = {side: max(x["peak_rss_mb"] for x in runs) for side, runs in results.items()}
    print(f"  all rounds: 4 KB {total['4k']:.1f} s, huge {total['huge']:.1f} s: {total['4k'] / total['huge']:.3f}x "
          f"({tokens / total['huge']:.0f} vs {tokens / total['4k']:.0f} tok/s); peak RSS {rss['huge']:,.0f} vs "
          f"{rss['4k']:,.0f} MB; largest loss gap {gap:.1e} (relative)")


if __name__ == "__main__":
    main()
