"""``python -m ccexp.compare <sweep dir | run dirs> [--out DIR]``: the runs side by side, and a
recommendation for a stated business constraint.

Reads each run dir's ``metrics.json`` and ``config.yaml`` (no tracker account needed) and
writes ``compare.md``, ``compare.csv`` and PNG plots; prints the table. Columns are the config
values that differ between runs and the headline metrics (``compare.headline`` patterns);
a metric a run lacks shows "-". Failed runs are listed with their error and never recommended.
What is judged comes from the runs' ``compare`` config (conf/compare/), or from the flags.

runs.py reads the run dirs, recommend.py writes the recommendation, tables.py and plots.py
the outputs; this module puts them together for the command and for a sweep's end.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console

from ccexp.cli import OneLineParser, output_dir, user_path
from ccexp.compare.recommend import recommend
from ccexp.compare.runs import (CompareError, Run, best_runs, by_val_size, find_run_dirs, headline_columns,
                                higher_is_better, load_runs, nested_run_dirs, read_yaml, scenarios, seed_means, seeded,
                                swept_keys, unstarted_jobs)
from ccexp.compare.tables import Tables, csv_rows, print_table, write_csv, write_markdown
from ccexp.config import CompareConfig, ConfigError, check_direction, did_you_mean, parse_constraint
from ccexp.config_errors import numeric_keys

__all__ = ["CompareError", "compare", "find_run_dirs", "higher_is_better", "load_runs", "main"]

# Every plot a report may write (plots.write_plots): ./compare holds the last report of several run dirs.
PLOT_FILES = ("per_field_accuracy.png", "tradeoff.png", "training_curves.png")

# The flag that settles each way recorded compare blocks can differ.
JUDGED_BY = {"metric": "--metric", "direction": "--direction", "constraints": "--constraint or --no-constraints"}


def recorded_compare_config(runs: list[Run], given: Sequence[str] = ()) -> dict:
    """The compare block the runs recorded in config.yaml; runs from before it existed (or
    hand-written ones) get conf/compare/default.yaml. Runs that record different ways to judge
    them (two sweeps side by side) need the flag for each way that ``given`` does not settle;
    their headline columns are joined."""
    blocks = _judging_blocks(runs)
    if not blocks:
        return read_yaml(_default_compare_path())
    first_run, first = blocks[0]
    for key, flag in JUDGED_BY.items():
        other = next(((r, b) for r, b in blocks if b.get(key) != first.get(key)), None)
        if other is not None and key not in given:
            raise CompareError(f"the runs record different compare.{key} ({first_run.name}: {first.get(key)!r}, "
                               f"{other[0].name}: {other[1].get(key)!r}); give python -m ccexp.compare {flag} to "
                               "judge them alike")
    headline = [h for _, b in blocks for h in (b.get("headline") if isinstance(b.get("headline"), list) else [])]
    return {**first, "headline": list(dict.fromkeys(headline)) or first.get("headline")}


def _judging_blocks(runs: list[Run]) -> list[tuple[Run, dict]]:
    """(run, its compare block) of the runs that recorded one, the finished runs' only where any
    did: a trial that failed on a mistyped objective.metric (which compare.metric follows in a
    search) recorded the typo, fixed in the study's later trials."""
    blocks = [(run, run.config["compare"]) for run in runs if isinstance(run.config.get("compare"), dict)]
    return [(run, block) for run, block in blocks if run.finished] or blocks


def _default_compare_path() -> Path:
    from ccexp.__main__ import CONFIG_DIR

    return Path(CONFIG_DIR) / "compare" / "default.yaml"


def check_reported(runs: list[Run], key: str, flag: str) -> None:
    """A key typed on the command line that no finished run has, even as null, is a typo: one
    line with the nearest keys, not a report ranked by nothing or a limit left unchecked. With
    no finished run there is nothing to tell a typo by, and the report says why none finished.
    (Recorded constraints a sweep's runs lack stay a "Not checked" note: the experiment chose them.)"""
    finished = [r for r in runs if r.finished]
    if finished and not any(key in r.metrics for r in finished):
        reported = {k for r in finished for k in numeric_keys(r.metrics)}
        hint = did_you_mean(key, reported, "see a run's metrics.json for the keys")
        raise CompareError(f"{flag}: no finished run reports {key} ({hint})")
    values = [r.metrics[key] for r in finished if r.metrics.get(key) is not None]
    if values and not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise CompareError(f"{flag}: {key} is not a number in the runs' metrics.json (a {type(values[0]).__name__}); "
                           "expected a metric to rank by or limit")


def recorded_config(runs: list[Run], **overrides) -> CompareConfig:
    """The runs' recorded compare config with the command line's overrides (None = not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "metric" in given and "direction" not in given:
        # The direction follows the metric asked for (val/loss: minimize), not the recorded one's.
        higher = higher_is_better(given["metric"])
        if higher is not None:
            given["direction"] = "maximize" if higher else "minimize"
        elif given["metric"] != recorded_compare_config(runs, list(JUDGED_BY)).get("metric"):  # the recorded
            # metric keeps its recorded direction; any other needs --direction
            raise CompareError(f"--metric {given['metric']}: its key does not say whether higher is better; "
                               "give --direction maximize or minimize")
    recorded = recorded_compare_config(runs, list(given))
    if "direction" in given:  # the flag against its metric, named as the flag
        try:
            check_direction(given.get("metric", recorded.get("metric", CompareConfig.metric)), given["direction"],
                            "--direction", assign=" ")
        except ConfigError as err:
            raise CompareError(str(err)) from None
    try:
        return CompareConfig(**{**recorded, **given})
    except (TypeError, ConfigError) as err:  # named by the file that judges (the first run's that records one)
        blocks = _judging_blocks(runs)
        where = blocks[0][0].dir / "config.yaml" if blocks else _default_compare_path()
        raise CompareError(f"compare config recorded in {where}: {err}") from None


def compare(paths: Sequence[Path], out: Optional[Path] = None, cc: Optional[CompareConfig] = None,
            plots: bool = True, console: Optional[Console] = None) -> dict:
    """Read the runs under paths, write compare.md/.csv and plots to out, print the table.
    cc defaults to the compare config the runs recorded. Returns what was written."""
    runs = load_runs(paths)
    if cc is None:
        cc = recorded_config(runs)
    shared = out is None and not (len(paths) == 1 and Path(paths[0]).is_dir())
    out = Path("compare") if shared else Path(out) if out is not None else Path(paths[0])
    output_dir(out, CompareError, "--out", create=True)
    if shared:  # ./compare is every multi-dir report's: one over other runs stays unless --out names it
        earlier = (out / "compare.md").read_text(errors="replace").split("\n", 1)[0] \
            if (out / "compare.md").is_file() else ""
        # Its title's dirs, as given: the same runs in another order or spelling are its own report
        sources = re.findall(r"`([^`]+)`", earlier) if earlier.startswith("# Comparison: ") else []
        if sources and {Path(s).resolve() for s in sources} != {Path(p).resolve() for p in paths}:
            raise CompareError(f"{out / 'compare.md'}: the report on {', '.join(sources)} is there; give --out DIR "
                               "for this one, or remove it first")
    console = console or Console()
    named = {r.dir for r in runs}
    nested = [d for d in nested_run_dirs(paths) if d.resolve() not in named]
    if nested:
        console.print(f"left out {len(nested)} evaluation{'s' * (len(nested) > 1)} inside the runs "
                      f"({', '.join(map(str, nested[:3]))}{', …' if len(nested) > 3 else ''}): name "
                      f"{'them' if len(nested) > 1 else 'it'} to compare", markup=False, highlight=False)
    swept = swept_keys(runs)
    columns = headline_columns(runs, cc.headline)
    # Marked within each scenario: a val/loss over another task mix's validation set is no rival,
    # nor (in one scenario of several data sizes) one over another number of validation examples.
    groups = scenarios(runs, swept)
    best = _marked(groups.values(), columns)
    # A sweep over seeds is also read by configuration, each the mean of its seeds.
    means = {label: seed_means(group, swept) for label, group in groups.items() if seeded(group, swept)}
    unstarted = [(name if len(paths) == 1 else str(Path(p) / name), job)
                 for p in paths if Path(p).is_dir() for name, job in unstarted_jobs(Path(p))]
    tables = Tables(runs, swept, columns, best, recommend(groups, cc, swept, unstarted, means),
                    [m for group in means.values() for m in group], _marked(means.values(), columns))
    written_plots, plot_notes = [], []
    for filename in PLOT_FILES:  # an earlier report's plot, not drawn now, would picture other runs
        (out / filename).unlink(missing_ok=True)
    if plots:
        from ccexp.compare.plots import write_plots

        written_plots, plot_notes = write_plots(runs, out, cc, swept)
    write_markdown(out / "compare.md", tables, cc, [str(p) for p in paths], written_plots, unstarted, plot_notes)
    write_csv(out / "compare.csv", csv_rows(tables))
    print_table(tables, console)
    for note in plot_notes:
        console.print(note.replace("`", ""), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote compare.md, compare.csv{f' and {len(written_plots)} plots' if written_plots else ''} "
                  f"to {out}", markup=False, highlight=False, soft_wrap=True)
    return {"runs": runs, "swept": swept, "columns": columns, "best": best, "recommendation": tables.paragraphs,
            "plots": [out / f for _, f in written_plots], "markdown": out / "compare.md", "csv": out / "compare.csv"}


def _marked(groups, columns: list[str]) -> dict[str, set]:
    """Each column's best runs (names), marked within each scenario of ``groups``, and a val/
    column among its runs of one validation set."""
    return {k: set().union(*(best_runs(same_val, k) for group in groups
                             for same_val in (by_val_size(group) if "val/" in k else [group]))) for k in columns}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="python -m ccexp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=user_path, help="a sweep dir (multirun/<date>/<time>) or run dirs")
    parser.add_argument("--out", type=user_path, help="where compare.md/.csv and the plots go (default: the one dir "
                        "given; ./compare for several)")
    parser.add_argument("--metric", help="rank by this metric (default: the runs' compare.metric, test/acc)")
    parser.add_argument("--direction", choices=["maximize", "minimize"], help="default: compare.direction")
    given = parser.add_mutually_exclusive_group()  # --no-constraints would drop a stated --constraint
    given.add_argument("--constraint", action="append", metavar="'METRIC<=N'",
                        help="a limit a recommended run must meet; repeat for several (replaces compare.constraints)")
    given.add_argument("--no-constraints", action="store_true", help="ignore compare.constraints")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        limits = [parse_constraint(text, "--constraint") for text in args.constraint or []]  # before any file is read
        if args.metric is not None and not args.metric.strip():
            raise CompareError(f"--metric: expected a metrics.json key such as test/acc, got {args.metric!r}")
        runs = load_runs(args.paths)
        if args.metric is not None:
            check_reported(runs, args.metric, f"--metric {args.metric}")
        for (key, _, _), text in zip(limits, args.constraint or []):
            check_reported(runs, key, f"--constraint {text!r}")
        runs_cc = recorded_config(runs, metric=args.metric, direction=args.direction,
                                  constraints=[] if args.no_constraints else args.constraint)
        compare(args.paths, args.out, runs_cc, plots=not args.no_plots)
    except (CompareError, ConfigError) as err:
        print(f"ccexp.compare: error: {err}", file=sys.stderr)
        return 2
    return 0
