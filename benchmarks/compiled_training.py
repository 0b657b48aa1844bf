"""Benchmark: ``backend.compile`` (norms and MLPs compiled for training) against the same model's
eager modules, on the same batches, alternating in one process.

    python benchmarks/compiled_training.py [--model smollm2_135m] [--rounds 3] [--batches 4] [overrides ...]

One model, its norms and MLPs wrapped by ``speedups.compile_for_training``; each round runs the
same forward + backward passes (ccexp's packed training batches) once eager and once compiled,
in alternating order, so drift of the machine's speed hits both alike. Prints the compiling time
(the first compiled passes, inductor's on-disk cache included as found), each round's seconds and
the ratio eager / compiled, and the largest gap between the two sides' losses: under bf16
autocast the compiled norms keep float32 where HF's round to bf16, so their losses are the nearer
to a float32 run's (SmolLM2, two packed batches: fp32 2.0602 / 1.9620, compiled 2.0604 / 1.9631,
eager 2.0720 / 1.9745). Not a timed test.
"""

from __future__ import annotations

import time

import torch
from hydra.errors import HydraException

from ccexp.backends import speedups
from ccexp.bench.setup import compose_run_config
from ccexp.cli import OneLineParser, int_at_least
from ccexp.config import ConfigError
from ccexp.config_errors import config_error_line
from ccexp.data import build_splits


def main() -> None:
    parser = OneLineParser(prog="compiled_training.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--rounds", type=int_at_least(1), default=3)
    parser.add_argument("--batches", type=int_at_least(1), default=4, help="training batches per round")
    parser.add_argument("--batch-size", type=int_at_least(1), default=4)
    parser.add_argument("overrides", nargs="*", default=[], help="more config overrides, as for python -m ccexp")
    args = parser.parse_args()
    if speedups.cpp_compiler() is None:
        parser.error("no C++ compiler found (g++ or $CXX): torch.compile's CPU code needs one")
    try:
        rc = compose_run_config([f"model={args.model}", "backend=cpu", "logger=none", "backend.compile=false",
                                 f"trainer.batch_size={args.batch_size}",
                                 f"data_size.train={args.batch_size * args.batches}", *args.overrides])
    except (ConfigError, HydraException) as err:  # e.g. --model nosuch: one line, not a traceback
        parser.error(config_error_line(err))
    # Imported once the arguments are good: bitsandbytes prints a line as it loads.
    from ccexp.backends.lightning import TorchBackend
    from ccexp.bench.training import forward_backward, training_loader
    from ccexp.models import resolve_model_dir

    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    backend = TorchBackend(rc, "cpu", resolve_model_dir(rc.model))
    batches = list(training_loader(backend, rc, splits["train"], splits["val"]))[: args.batches]
    backend.model.train()
    forward_backward(backend, batches[0])  # first-touch allocations, outside every timing
    n = speedups.compile_for_training(backend.model)
    start = time.perf_counter()
    for batch in batches:  # every row length once: dynamic shapes compile once, then run
        forward_backward(backend, batch)
    compile_s = time.perf_counter() - start
    tokens = sum(int(b["n_computed"]) for b in batches)
    print(f"{args.model}: {n} modules compiled; {len(batches)} packed batches of {args.batch_size} "
          f"({tokens:,} tokens computed) per round, precision {backend.precision}")
    print(f"  first compiled passes (compiling included): {compile_s:.1f} s")
    totals = {"eager": 0.0, "compiled": 0.0}
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        order = ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")
        seconds = {}
        for mode in order:
            # force_eager: the compiled modules run their own forward, as with backend.compile=false.
            with torch.compiler.set_stance("default" if mode == "compiled" else "force_eager"):
                tic = time.perf_counter()
                for batch in batches:
                    # Dropout draws its masks from the same seed each time: the same passes, both ways.
                    torch.manual_seed(r)
                    losses[mode].append(forward_backward(backend, batch))
                seconds[mode] = time.perf_counter() - tic
            totals[mode] += seconds[mode]
        print(f"  round {r + 1}: eager {seconds['eager']:.2f} s, compiled {seconds['compiled']:.2f} s, "
              f"ratio {seconds['eager'] / seconds['compiled']:.3f}")
    gap = max(abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["compiled"]))
    print(f"  all rounds: eager {totals['eager']:.1f} s, compiled {totals['compiled']:.1f} s: "
          f"{totals['eager'] / totals['compiled']:.3f}x ({tokens * args.rounds / totals['compiled']:.0f} vs "
          f"{tokens * args.rounds / totals['eager']:.0f} tok/s); largest loss gap {gap:.1e} (relative)")
    steps = args.rounds * len(batches)
    eager_step, compiled_step = totals["eager"] / steps, totals["compiled"] / steps
    if eager_step > compiled_step:  # compiling's cost beyond the passes it ran, over each step's saving
        extra = compile_s - len(batches) * compiled_step
        print(f"  compiling pays back after ~{max(extra, 0.0) / (eager_step - compiled_step):.0f} steps "
              f"({eager_step:.2f} vs {compiled_step:.2f} s per step)")
    else:
        print("  compiling does not pay on this machine")


if __name__ == "__main__":
    main()
