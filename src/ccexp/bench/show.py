"""``python -m ccexp.bench.show RESULTS.json [MORE.json ...]``: the table of a bench run again,
read from its results file, or several runs side by side, a column each, with each ratio's range
over the runs that had the last one's machine and settings, and what the runs' machines and
settings differ in. Nothing is measured.

    python -m ccexp.bench.show benchmarks/results/2026-12-01_23-40-21.json
    python -m ccexp.bench.show benchmarks/results/2026-12-01_*.json   # the day's runs, oldest first
    python -m ccexp.bench.show                                        # the newest (by name) in benchmarks/results
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from ccexp.bench.report import RESULTS, ResultError, load_result, print_history, print_table, recorded_rows
from ccexp.cli import OneLineParser


def main(argv=None) -> None:
    parser = OneLineParser(prog="python -m ccexp.bench.show", description="Saved ccexp.bench results read back: "
                           "one run's table again, or several runs side by side. Nothing is measured.")
    parser.add_argument("files", nargs="*", type=Path, metavar="RESULTS.json",
                        help=f"results files python -m ccexp.bench wrote (default: the newest in {RESULTS})")
    args = parser.parse_args(argv)
    files = args.files or _newest(parser)
    seen: dict[Path, Path] = {}
    for path in files:  # twice the same run would read as two runs that agree: no noise
        if path.resolve() in seen:
            first = seen[path.resolve()]
            parser.error(f"{path}: given twice" + ("" if first == path else f" (also as {first})"))
        seen[path.resolve()] = path
    try:
        runs = [(_label(path, files), load_result(path)) for path in files]
    except ResultError as err:
        parser.error(str(err))
    # Piped or redirected, rich would fit the tables to 80 columns and cut a history's cells to
    # "2026-12…": wide enough for the tables instead (a terminal keeps its own width).
    console = Console() if sys.stdout.isatty() else Console(width=240)
    if len(runs) == 1:
        results = runs[0][1]
        rows, notes = recorded_rows(results, files[0])
        console.print(f"{files[0]} (run of {results.get('when', 'unknown time')})", markup=False)
        print_table(console, rows, results)
        for note in notes:
            console.print(note, markup=False)
    else:
        print_history(console, runs)


def _newest(parser) -> list[Path]:
    found = sorted(RESULTS.glob("*.json"))  # the bench names them by the time they were written
    if not found:
        parser.error(f"no results files in {RESULTS}/ (run python -m ccexp.bench, or name the files)")
    return found[-1:]


def _label(path: Path, files: list[Path]) -> str:
    """A column's heading: the file's name without .json, the whole path where two names clash."""
    return path.stem if sum(f.stem == path.stem for f in files) == 1 else str(path)


if __name__ == "__main__":
    main(sys.argv[1:])
