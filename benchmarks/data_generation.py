"""Benchmark: generating the synthetic `full` corpus (issue target: < 60 s on 2 cores), and
determinism (same seed -> byte-identical ChatML files).

    python benchmarks/data_generation.py [--size full|small|tiny] [--task-mix all|analytics_json|...]

Prints the wall time of each step and its ratio to the 60 s budget; not a timed test.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from hydra.errors import HydraException

from ccexp.bench.setup import compose_run_config
from ccexp.cli import OneLineParser
from ccexp.config import ConfigError
from ccexp.config_errors import config_error_line
from ccexp.data import build_splits
from ccexp.data.formats import write_chatml

BUDGET_S = 60.0


def _digest(splits: dict, out: Path) -> str:
    sha = hashlib.sha256()
    for split, examples in splits.items():
        path = out / f"{split}.jsonl"
        write_chatml(examples, path)
        sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def main() -> None:
    parser = OneLineParser(prog="data_generation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full")
    parser.add_argument("--task-mix", default="all")
    args = parser.parse_args()
    try:
        rc = compose_run_config([f"data_size={args.size}", f"task_mix={args.task_mix}"])
    except (ConfigError, HydraException) as err:  # e.g. --size huge: one line, not a traceback
        parser.error(config_error_line(err))
    timings, digests = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):
            start = time.perf_counter()
            splits = build_splits(rc.data, rc.data_size, rc.task_mix)
            timings.append(time.perf_counter() - start)
            digests.append(_digest(splits, Path(tmp) / str(attempt)))
    n = sum(len(v) for v in splits.values())
    print(f"data_size={args.size} task_mix={args.task_mix}: {n:,} examples "
          f"({', '.join(f'{k} {len(v):,}' for k, v in splits.items())})")
    for i, secs in enumerate(timings):
        print(f"  generation run {i + 1}: {secs:6.1f} s   {secs / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget "
              f"({n / secs:,.0f} examples/s)")
    same = digests[0] == digests[1]
    print(f"  deterministic: {'yes' if same else 'NO'} (sha256 of ChatML files {digests[0]} / {digests[1]})")


if __name__ == "__main__":
    main()
