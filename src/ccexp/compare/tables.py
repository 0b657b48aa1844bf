"""The comparison report's tables: compare.md, compare.csv and the terminal's."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table

from ccexp.compare.runs import (Run, SeedMean, column_label, fmt, higher_is_better, machines, memory_starts, named,
                                setting, trained)
from ccexp.config import CompareConfig


@dataclass
class Tables:
    """What every table shows: the runs, the config keys they differ in, the metric columns,
    each column's best runs (names), and the recommendation's paragraphs."""
    runs: list[Run]
    swept: list[str]
    columns: list[str]
    best: dict[str, set]
    paragraphs: list[str]
    means: list[SeedMean] = field(default_factory=list)  # where configurations repeat over seeds
    means_best: dict[str, set] = field(default_factory=dict)  # the best means' names, as ``best``


def _mean_cell(m: SeedMean, key: str) -> str:
    """"0.600 ± 0.020": a configuration's mean and its standard deviation over seeds (the mean
    alone over one seed)."""
    return fmt(m.value(key)) + (f" ± {fmt(m.sd[key])}" if key in m.sd else "")


def _seeds_cell(m: SeedMean) -> str:
    return m.flat["seed"] + (f" (of {m.planned})" if len(m.runs) < m.planned else "")


SEEDS_INTRO = ("Each configuration's finished runs as one: the mean ± the standard deviation over its seeds "
               "(the recommendation ranks these). Bold: the best mean per column within each scenario.")


def csv_rows(tables: Tables) -> list[dict]:
    runs, swept, columns, best = tables.runs, tables.swept, tables.columns, tables.best
    rows = []
    for r in runs:
        row = {"run": r.name, "status": r.status}
        row.update({column_label(k): r.flat.get(k) for k in swept})  # as the run's config.yaml has it
        row.update({k: r.value(k) for k in columns})
        row["error"] = "" if r.finished else r.error
        row["best_in"] = ";".join(k for k in columns if r.name in best[k])
        rows.append(row)
    return rows


def _arrow(key: str) -> str:
    return {True: " ↑", False: " ↓", None: ""}[higher_is_better(key)]


def run_counts(runs: list[Run], unstarted: Sequence = ()) -> str:
    """"3 runs: 2 finished, 1 failed", with the runs that never ended (killed) counted apart, and
    the jobs of a stopped sweep that never started."""
    finished = sum(r.finished for r in runs)
    failed = sum(r.status == "failed" for r in runs)
    unfinished = len(runs) - finished - failed
    return (f"{len(runs)} run{'s' * (len(runs) != 1)}: {finished} finished, {failed} failed"
            + (f", {unfinished} never ended (killed, or still running)" if unfinished else "")
            + (f"; {len(unstarted)} more job{'s' * (len(unstarted) != 1)} of the sweep not started"
               if unstarted else ""))


def resumed_note(runs: list[Run]) -> str:
    """The resumed runs, whose times and speed cover their resumed part only ("" when none)."""
    resumed = [f"`{r.name}` (from step {r.value('train/resumed_from_step')})" for r in runs
               if (r.value("train/resumed_from_step") or 0) > 0]
    return (f"Resumed: {', '.join(resumed)}: time/ columns and training speed cover the resumed part only, "
            "and are never bold.") if resumed else ""


def _evaluated(run: Run) -> str:
    """" (of <run dir>)": whose adapter an evaluation written outside that run's eval/ scored, which
    its name alone does not say; "" inside it, or where its environment.json predates the record."""
    adapter = run.environment.get("adapter") if isinstance(run.environment, dict) else None
    if not isinstance(adapter, str) or run.dir.parent.parent == Path(adapter).parent:
        return ""
    return f" (of {Path(adapter).parent})"


def evaluations_note(runs: list[Run]) -> str:
    """The evaluations beside runs that trained, whose times and memory hold no training ("" when none)."""
    if not any(trained(r) for r in runs):
        return ""
    evaluations = [f"`{r.name}`{_evaluated(r)}" for r in runs if r.finished and not trained(r)]
    many = len(evaluations) > 1
    return (f"Evaluations: {', '.join(evaluations)} trained nothing (python -m ccexp.evaluate): "
            f"{'their' if many else 'its'} time/ and memory/ values, time/eval_s aside, are not ranked against runs "
            "that trained.") if evaluations else ""


def machines_note(runs: list[Run]) -> str:
    """Which runs ran on which hardware, where the finished runs' machines differ ("" when not):
    their times and speeds compare machines as much as runs, so none is bold."""
    groups = machines(runs)
    if len(groups) < 2:
        return ""
    return ("Machines differ: " + "; ".join(f"{', '.join(f'`{r.name}`' for r in rs)} on {where}"
                                             for where, rs in groups.items())
            + ". Times, latencies and tokens/s compare the machines as much as the runs: none is bold "
            "(each run's is in its environment.json).")


def memory_note(runs: list[Run]) -> str:
    """The lowest and highest starting memory, where the finished runs started from different
    baselines ("" when not): their peaks compare those starts as much as the runs, so none is bold."""
    starts = memory_starts(runs)
    if not starts:
        return ""
    low, high = min(starts, key=starts.get), max(starts, key=starts.get)
    return (f"Memory baselines differ: the runs started holding {starts[low]:.0f} MB (`{low}`) to {starts[high]:.0f} "
            f"MB (`{high}`) (memory/start_mb; a sweep's later jobs in one process hold what earlier jobs loaded), so "
            "memory/ peaks compare those starts as much as the runs: none is bold.")


def report_title(sources: Sequence[str]) -> str:
    """compare.md's first line, naming the run dirs or sweep dirs it reports on."""
    return f"# Comparison: {', '.join(f'`{s}`' for s in sources)}"


def write_markdown(path: Path, tables: Tables, cc: CompareConfig, sources: Sequence[str],
                   plots: Sequence[tuple[str, str]] = (), unstarted: Sequence[tuple[str, str]] = (),
                   plot_notes: Sequence[str] = ()) -> None:
    """compare.md: how the runs were judged, the recommendation, the runs, failed runs and
    unstarted jobs, and the plots (title, file name) with what they left out (plot_notes)."""
    runs, swept, columns, best, paragraphs = tables.runs, tables.swept, tables.columns, tables.best, tables.paragraphs
    lines = [report_title(sources), "",
             f"{run_counts(runs, unstarted)}. "
             f"Ranked by `{cc.metric}` ({cc.direction})"
             + (f" within {', '.join(f'`{c}`' for c in cc.constraints)}." if cc.constraints else "."), "",
             "## Recommendation", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    header = ["run", "status"] + [column_label(k) for k in swept] + [k + _arrow(k) for k in columns]
    lines += ["## Runs", ""] + _markdown_table(header, [
        [f"`{r.name}`", r.status] + [setting(r.flat.get(k)) for k in swept]
        + [f"**{fmt(r.value(k))}**" if r.name in best[k] else fmt(r.value(k)) for k in columns] for r in runs])
    lines += ["", "Bold: the best finished run per column within each scenario (↑ higher is better, ↓ lower; "
              "val/ columns among runs of one validation set). \"-\": the run did not report it.", ""]
    if tables.means:
        configured = [k for k in swept if k != "seed"]
        header = ["runs"] + [column_label(k) for k in configured] + ["seeds"] + [k + _arrow(k) for k in columns]
        lines += ["## Across seeds", "", SEEDS_INTRO, ""] + _markdown_table(header, [
            [f"`{m.name}`"] + [setting(m.flat.get(k)) for k in configured] + [_seeds_cell(m)]
            + [f"**{_mean_cell(m, k)}**" if m.name in tables.means_best[k] else _mean_cell(m, k) for k in columns]
            for m in tables.means]) + [""]
    for note in (resumed_note(runs), evaluations_note(runs), machines_note(runs), memory_note(runs)):
        if note:
            lines += [note, ""]
    failed = [r for r in runs if not r.finished]
    if failed or unstarted:
        lines += ["## Failed runs", ""]
        for r in failed:
            tb = r.dir / "traceback.txt"
            lines.append(f"- {named(r, swept)}: {r.error_sentence}"
                         + (f" (traceback: `{r.name}/traceback.txt`)" if tb.is_file() else ""))
        for name, overrides in unstarted:
            lines.append(f"- `{name}` ({overrides}): not started (no job dir): the sweep stopped before it, or it "
                         "is still queued")
        lines.append("")
    if plots or plot_notes:
        lines += ["## Plots", ""]
        if plot_notes:
            lines += [f"- {note}" for note in plot_notes] + [""]
        for title, filename in plots:
            lines += [f"### {title}", "", f"![{title}]({filename})", ""]
    path.write_text("\n".join(lines))


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines, a | inside a cell escaped."""
    return ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
            for cells in [header, ["---"] * len(header), *rows]]


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def print_table(tables: Tables, console: Console) -> None:
    """The runs, then (where configurations repeat over seeds) their means, and the recommendation."""
    runs, swept, columns, best, paragraphs = tables.runs, tables.swept, tables.columns, tables.best, tables.paragraphs
    labels = [("status", lambda r: r.status if r.finished else f"[red]{r.status}[/]")]
    labels += [(column_label(k), lambda r, k=k: setting(r.flat.get(k))) for k in swept]
    metrics = [(k + _arrow(k), lambda r, k=k: f"[bold green]{fmt(r.value(k))}[/]" if r.name in best[k]
                else fmt(r.value(k))) for k in columns]
    console.print(_table("ccexp: runs side by side (bold = best)", runs, labels + metrics, len(labels) + 1))
    if tables.means:
        labels = [(column_label(k), lambda m, k=k: setting(m.flat.get(k))) for k in swept if k != "seed"]
        labels.append(("seeds", _seeds_cell))
        metrics = [(k + _arrow(k), lambda m, k=k: f"[bold green]{_mean_cell(m, k)}[/]" if m.name in tables.means_best[k]
                    else _mean_cell(m, k)) for k in columns]
        console.print(_table("ccexp: mean ± sd over seeds (bold = best mean)", tables.means, labels + metrics,
                             len(labels) + 1))
    for paragraph in [*paragraphs, resumed_note(runs), evaluations_note(runs), machines_note(runs),
                      memory_note(runs)]:
        if paragraph:
            console.print(paragraph.replace("**", "").replace("`", ""), highlight=False)


def _table(title: str, runs: Sequence[Run], rows: list[tuple[str, Callable[[Run], str]]], settings: int) -> Table:
    """Runs as columns and rows (label, cell) as rows (a terminal is narrow; a sweep has few runs), or
    runs as rows when there are many of them (an Optuna study); the first ``settings`` columns of
    that layout (the name and config values) never wrap."""
    table = Table(title=title)
    first = "runs" if isinstance(runs[0], SeedMean) else "run"
    if len(runs) <= 8:
        # fold, never cut: two labels cut to the same "test/la…" would be two rows of nothing
        table.add_column(first, overflow="fold")
        for r in runs:
            table.add_column(r.name, justify="right", overflow="fold")
        for label, cell in rows:
            table.add_row(label, *[cell(r) for r in runs])
        return table
    for i, label in enumerate([first] + [label for label, _ in rows]):
        if i < settings:
            table.add_column(label, no_wrap=True)
        else:  # fold, never cut: a narrow terminal wraps a number rather than hiding it
            table.add_column(label, justify="right", overflow="fold")
    for r in runs:
        table.add_row(r.name, *[cell(r) for _, cell in rows])
    return table
