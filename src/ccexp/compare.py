"""``python -m ccexp.compare <sweep dir | run dirs> [--out DIR]``: the runs side by side, and a
recommendation for a stated business constraint.

Reads each run dir's ``metrics.json`` and ``config.yaml`` (no tracker account needed) and
writes ``compare.md``, ``compare.csv`` and PNG plots; prints the table. Columns are the config
values that differ between runs and the headline metrics (``compare.headline`` patterns);
a metric a run lacks shows "-". Failed runs are listed with their error and never recommended.
What is judged comes from the runs' ``compare`` config (conf/compare/), or from the flags.
"""

from __future__ import annotations

import csv
import math
import operator
import os
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from ccexp.cli import OneLineParser, output_dir, read_json_object, yaml_problem
from ccexp.config import CompareConfig, ConfigError, did_you_mean, numeric_keys, parse_constraint
from ccexp.sweep import job_label, natural_key


class CompareError(Exception):
    """Bad input (no runs, unreadable files): one line naming the file, exit 2."""


OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
GROUP_ORDER = ["model", "method", "backend", "task_mix", "data_size", "data", "trainer", "eval"]


@dataclass
class Run:
    dir: Path
    name: str = ""
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # nested, as in config.yaml
    flat: dict = field(default_factory=dict)    # dotted keys

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "unknown"))

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def error(self) -> str:
        path = self.dir / "error.txt"
        if path.is_file():
            return path.read_text(errors="replace").strip()
        if self.status == "running":  # run() writes it first and replaces it when the run ends
            return "it never ended (metrics.json still says running): killed, or still running"
        if not (self.dir / "metrics.json").is_file():
            return "no metrics.json: stopped before training began (killed while loading?)"
        return str(self.metrics.get("error", "" if self.finished else "no error recorded"))

    @property
    def error_sentence(self) -> str:
        return self.error.rstrip(". ")

    def value(self, key: str) -> Optional[float | int]:
        """The metric as a finite number, or None (missing, NaN, not a number)."""
        v = self.metrics.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return v if isinstance(v, int) else float(v)  # counts stay counts: "14,336", not "14,336.0"


# -- reading ------------------------------------------------------------------------------------

def _is_run_dir(path: Path) -> bool:
    # A Hydra job dir with no metrics is a run too: one killed before its first write.
    return (path / "metrics.json").is_file() or (path / "error.txt").is_file() or _is_job_dir(path)


def _is_job_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def find_run_dirs(path: Path) -> list[Path]:
    if not path.exists():
        raise CompareError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name != "metrics.json":
            raise CompareError(f"{path}: expected a run dir, a sweep dir or a metrics.json")
        path = path.parent
    if _is_run_dir(path):
        return [path]
    dirs = _run_dirs_below(path)
    if not dirs:
        raise CompareError(f"{path}: no runs found (no metrics.json or error.txt below it)")
    # A run's own evaluations (<run>/eval/<time>, from python -m ccexp.evaluate) are not runs of
    # the sweep: compared only when named.
    return sorted((d for d in dirs if not any(a in dirs for a in d.parents)), key=natural_key)


def _run_dirs_below(path: Path) -> set[Path]:
    dirs = {p.parent for name in ("metrics.json", "error.txt") for p in path.rglob(name)}
    return dirs | {p.parent.parent for p in path.rglob(".hydra/config.yaml")}


def nested_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run dirs inside other run dirs under ``paths`` (evaluations), which find_run_dirs leaves out."""
    found = set().union(*(_run_dirs_below(Path(p)) for p in paths if Path(p).is_dir()))
    return sorted((d for d in found if any(a in found for a in d.parents)), key=natural_key)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CompareError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CompareError(f"{path}: expected a mapping of config groups, got {type(data).__name__}")
    return data


def _resolved(tree: dict) -> dict:
    """Hydra's copy of a job config still holds interpolations; resolve what can be."""
    try:
        return OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    except OmegaConfBaseException:
        return tree


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value
    return flat


def load_run(run_dir: Path) -> Run:
    path = run_dir / "metrics.json"
    metrics = read_json_object(path, CompareError, "a metrics file") if path.is_file() else \
        {"status": "failed" if (run_dir / "error.txt").is_file() else "unfinished"}
    run = Run(dir=run_dir, metrics=metrics)
    if (run_dir / "config.yaml").is_file():
        run.config = _read_yaml(run_dir / "config.yaml")
    elif (run_dir / ".hydra" / "config.yaml").is_file():  # the job failed before run() wrote its own
        run.config = _resolved(_read_yaml(run_dir / ".hydra" / "config.yaml"))
    run.flat = _flatten(run.config)
    return run


def unstarted_jobs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(job dir name, its overrides) of each job a basic Hydra sweep launched in ``sweep_dir``
    (its multirun.yaml) that has no job dir: the sweep stopped (killed, out of time) before it,
    or it is still queued. Empty where that cannot be told: an Optuna study, job dirs not named
    by job number, a sweep over config files (glob) or shuffled, no multirun.yaml."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = (yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}).get("hydra", {})
        if not str(hydra["sweeper"]["_target_"]).endswith("BasicSweeper") or \
                str(hydra["sweep"]["subdir"]) != "${hydra.job.num}":
            return []
        params = [f"{k}={v}" for k, v in (hydra["sweeper"].get("params") or {}).items()]
        if any("shuffle(" in o for o in params + list(hydra["overrides"]["task"])):
            return []  # expanded again, a shuffled sweep would come out in another order
        overrides = OverridesParser.create().parse_overrides(params + list(hydra["overrides"]["task"]))
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:  # noqa: BLE001 - no multirun.yaml, another layout, a sweep Hydra needs its config to expand
        return []
    return [(str(i), job_label(job, jobs)) for i, job in enumerate(jobs) if not (sweep_dir / str(i)).exists()]


def load_runs(paths: Sequence[Path]) -> list[Run]:
    dirs = list(dict.fromkeys(d.resolve() for p in paths for d in find_run_dirs(Path(p))))
    runs = [load_run(d) for d in dirs]
    root = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    for run in runs:
        run.name = str(run.dir.relative_to(root))
    return runs


# -- what to show -----------------------------------------------------------------------------

def _key_rank(key: str) -> tuple:
    group = key.split(".")[0]
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), not key.endswith(".name"), key)


_NOT_AXES = ("compare.", "logger.", "experiment_name")


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between runs (a run that failed before writing
    config.yaml counts with Hydra's copy of its config). A group's fields that follow from its
    choice (method.lr when method.name differs and each method has one lr) are left out."""
    def known(run: Run, key: str) -> bool:  # an unresolved ${...} says nothing about the value
        return "${" not in str(run.flat.get(key, ""))

    # The compare block says how to judge the runs, the logger and experiment_name where they were
    # recorded, not how they ran: never a swept axis (a split of the recommendation by logger).
    keys = sorted({k for r in runs for k in r.flat if not k.startswith(_NOT_AXES)})
    differing = [k for k in keys if len({repr(r.flat.get(k)) for r in runs if known(r, k)}) > 1]
    chosen = {k[: -len(".name")] for k in differing if k.endswith(".name")}
    shown = []
    for key in differing:
        # the chosen group the key belongs to, at any depth (task_mix.weights.churn is task_mix's)
        group = next((g for g in chosen if key.startswith(g + ".")), None)
        if group is not None and not key.endswith(".name"):
            by_choice: dict[str, set] = {}
            for r in runs:
                by_choice.setdefault(repr(r.flat.get(f"{group}.name")), set()).add(repr(r.flat.get(key)))
            if all(len(v) == 1 for v in by_choice.values()):
                continue
        shown.append(key)
    return sorted(shown, key=_key_rank)


def column_label(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def higher_is_better(key: str) -> Optional[bool]:
    """Direction of a metric from its key: None = neither (parameter counts, unknown keys)."""
    last = key.rsplit("/", 1)[-1].lower()
    if key.startswith("params/"):
        return None
    if last.endswith("per_s"):
        return True
    if key.startswith("time/") or last.endswith(("loss", "ppl", "mae", "rmse", "_s", "_mb", "seconds")) \
            or "seconds" in last:
        return False
    if last in ("acc", "json_valid", "em", "exact_match", "parse_rate", "theme_coverage", "generated") \
            or last.startswith(("bleu", "rouge", "within_")) or last.endswith("f1"):
        return True
    return None


def headline_columns(runs: list[Run], patterns: Sequence[str]) -> list[str]:
    present = sorted({k for r in runs for k in numeric_keys(r.metrics)})
    columns: list[str] = []
    for pattern in patterns:
        # A pattern's matches leave out the answer counts (".../answers"): sizes, not scores.
        columns += [k for k in present if (k == pattern or fnmatchcase(k, pattern) and not k.endswith("/answers"))
                    and k not in columns]
    return columns


def best_runs(runs: list[Run], key: str) -> set[str]:
    """Names of the finished runs holding the best value of key (ties all marked)."""
    higher = higher_is_better(key)
    values = {r.name: r.value(key) for r in runs if r.finished and r.value(key) is not None}
    if higher is None or len(values) < 2:
        return set()
    if len(set(values.values())) == 1:
        return set()  # all equal: nothing to single out
    best = (max if higher else min)(values.values())
    return {name for name, v in values.items() if v == best}


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.001 else f"{value:.2e}"


def setting(value: Any) -> str:
    """A config value as the report shows it: a float to 4 significant digits, so that the
    learning rates an Optuna search picks (0.0013 and 0.0016) stay apart; else as ``fmt``."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return fmt(value)


def named(run: Run, swept: list[str]) -> str:
    """"`1` (method=lora)": the run and its swept values (nothing swept: the name alone)."""
    values = describe(run, swept)
    return f"`{run.name}`" + (f" ({values})" if values != run.name else "")


def describe(run: Run, swept: list[str]) -> str:
    """'method=lora, task_mix=all': the run's swept values."""
    return ", ".join(f"{column_label(k)}={setting(run.flat.get(k))}" for k in swept) or run.name


# -- recommendation -----------------------------------------------------------------------------

def _violations(run: Run, constraints: list[tuple[str, str, float]]) -> list[str]:
    out = []
    for key, op, limit in constraints:
        value = run.value(key)
        if value is None:
            out.append(f"lacks {key}")
        elif not OPS[op](value, limit):
            out.append(f"{key} {fmt(value)} {NEGATED[op]} {limit:g}")
    return out


TIE_BREAKS = ("val/loss", "adapter/size_mb")  # lower wins, in this order


def _or_inf(value: Optional[float]) -> float:
    return math.inf if value is None else value


def _tie_note(best: Run, up: Run, method: str) -> str:
    for key in TIE_BREAKS:
        a, b = best.value(key), up.value(key)
        if a is not None and b is not None and a < b:
            return f", a tie: {method} is picked for its lower {key} ({fmt(a)} vs {fmt(b)})."
    return ", a tie: the runs give no reason to prefer one (picked by run order)."


def _recommend_scenario(runs: list[Run], cc: CompareConfig, swept: list[str], scenario: str) -> str:
    metric, maximize = cc.metric, cc.direction == "maximize"
    finished = [r for r in runs if r.finished]
    failed = [r for r in runs if not r.finished]
    head = f"**{scenario}:** " if scenario else ""
    failed_note = ""
    all_failed = all(r.status == "failed" for r in failed)  # else some never ended (killed)
    if failed:
        failed_note = (f" {len(failed)} run{'s' if len(failed) > 1 else ''} "
                       f"{'failed' if all_failed else 'did not finish'} and "
                       f"{'are' if len(failed) > 1 else 'is'} excluded: "
                       + "; ".join(f"{named(r, swept)}: {r.error_sentence}" for r in failed) + ".")
    if not finished:
        return head + f"No recommendation: {f'all {len(runs)} runs failed' if all_failed else 'no run finished'}." \
            + failed_note
    constraints = [parse_constraint(c) for c in cc.constraints]
    checked = [c for c in constraints if any(r.value(c[0]) is not None for r in finished)]
    unchecked = [c for c in constraints if c not in checked]
    unchecked_note = "".join(f" Not checked: `{k} {op} {v:g}`, no run reports {k}." for k, op, v in unchecked)
    scored = [r for r in finished if r.value(metric) is not None]
    # A finished run without a finite value is named, not silently left out of the ranking.
    unranked_note = "".join(
        f" Not ranked: {named(r, swept)} reports "
        f"{'no finite' if metric in r.metrics else 'no'} {metric}." for r in finished if r.value(metric) is None)
    if not scored:
        reported = {k for r in finished for k in numeric_keys(r.metrics)}
        nearest = did_you_mean(metric, reported, "see a run's metrics.json for the keys")
        hint = "" if any(metric in r.metrics for r in finished) else f" ({nearest})"  # a typo, not a null
        return head + (f"No recommendation: no finished run reports {metric} (compare.metric){hint}."
                       + failed_note + unchecked_note)

    def rank(rs: list[Run]) -> list[Run]:  # ties go to the lower val/loss, then the smaller adapter
        rs = sorted(rs, key=lambda r: [_or_inf(r.value(k)) for k in TIE_BREAKS])
        return sorted(rs, key=lambda r: r.value(metric), reverse=maximize)

    eligible = rank([r for r in scored if not _violations(r, checked)])
    excluded = [r for r in rank(scored) if _violations(r, checked)]
    limits = ", ".join(f"{k} {op} {v:g}" for k, op, v in checked)
    excluded_note = "" if not excluded else " Outside the constraints: " + "; ".join(
        f"{named(r, swept)}: {', '.join(_violations(r, checked))}" for r in excluded) + "."
    if not eligible:
        top = rank(scored)[0]
        return head + (f"**No run meets the constraints** ({limits}).{excluded_note} Without them the best "
                       f"would be {top.flat.get('method.name', top.name)} (`{top.name}`, {metric} "
                       f"{fmt(top.value(metric))}).{unranked_note}{failed_note}{unchecked_note}")
    best = eligible[0]
    method = best.flat.get("method.name", "?")
    others = [r for r in eligible[1:] if r.flat.get("method.name") != method] or eligible[1:]
    text = (f"{head}**Recommend {method}** — run `{best.name}` ({describe(best, swept)}) has the "
            f"{'highest' if maximize else 'lowest'} {metric}, {fmt(best.value(metric))}")
    if checked:
        text += ", and meets " + " and ".join(f"{k} {fmt(best.value(k))} {op} {v:g}" for k, op, v in checked)
    text += f"; {len(scored)} finished run{'s' if len(scored) > 1 else ''} compared."
    if others:
        up = others[0]
        gap = best.value(metric) - up.value(metric)
        text += (f" Runner-up: {up.flat.get('method.name', '?')} (`{up.name}`, {describe(up, swept)}) with "
                 f"{fmt(up.value(metric))}" + (f", {abs(gap):.3f} {'lower' if maximize else 'higher'}." if gap else
                 _tie_note(best, up, method)))
    else:
        text += f" No other {'ranked ' if unranked_note else ''}run meets the constraints, so there is no runner-up."
    n, which = _answers_behind(best, metric)
    if n:
        text += f" {metric} comes from {n} {which} per run: one answer moves it by {1 / n:.3f} or more."
    return text + excluded_note + unranked_note + failed_note + unchecked_note


def _answers_behind(run: Run, metric: str) -> tuple[int | None, str]:
    """How many generated answers a rate is over, and what they are: test/acc all of them (the
    test split can hold fewer than eval.generate_examples asks for); a field's or a task's rate
    only the answers that ask for it (``.../answers``, e.g. 3 of 18 for one task of six); the
    valid-JSON rate the answers of JSON tasks (``test/json/answers``: reply drafts are free text)."""
    if metric == "test/json_valid":
        n = run.value("test/json/answers")
        return (int(n), "test answers of JSON tasks") if n else (None, "")
    if metric == "test/acc":
        n = run.value("test/generated")
        n = int(n) if n is not None else run.flat.get("eval.generate_examples")
        return (n, "generated test answers") if isinstance(n, int) and n > 0 else (None, "")
    if metric.startswith("test/") and metric.endswith(("/acc", "/parse_rate", "/exact_match")):
        n = run.value(metric.rsplit("/", 1)[0] + "/answers")
        subject = metric.removeprefix("test/").rsplit("/", 1)[0].removeprefix("task/")
        return (int(n), f"test answers that ask for {subject}") if n else (None, "")
    return None, ""


def recommend(runs: list[Run], cc: CompareConfig, swept: list[str]) -> list[str]:
    """One paragraph per scenario (the swept values other than the method's)."""
    scenario_keys = [k for k in swept if not k.startswith("method.")]
    scenarios: dict[str, list[Run]] = {}
    for run in runs:
        label = ", ".join(f"{column_label(k)}={setting(run.flat.get(k))}" for k in scenario_keys)
        scenarios.setdefault(f"For {label}" if label else "", []).append(run)
    return [_recommend_scenario(rs, cc, swept, label) for label, rs in scenarios.items()]


# -- output -------------------------------------------------------------------------------------

def _rows(runs: list[Run], swept: list[str], columns: list[str], best: dict[str, set]) -> list[dict]:
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


def write_markdown(path: Path, runs, swept, columns, best, paragraphs, plots, sources, cc, unstarted=()) -> None:
    lines = [f"# Comparison: {', '.join(f'`{s}`' for s in sources)}", "",
             f"{run_counts(runs, unstarted)}. "
             f"Ranked by `{cc.metric}` ({cc.direction})"
             + (f" within {', '.join(f'`{c}`' for c in cc.constraints)}." if cc.constraints else "."), "",
             "## Recommendation", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    header = ["run", "status"] + [column_label(k) for k in swept] + [k + _arrow(k) for k in columns]
    lines += ["## Runs", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in runs:
        cells = [f"`{r.name}`", r.status] + [setting(r.flat.get(k)) for k in swept]
        cells += [f"**{fmt(r.value(k))}**" if r.name in best[k] else fmt(r.value(k)) for k in columns]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Bold: the best finished run per column (↑ higher is better, ↓ lower). "
              "\"-\": the run did not report it.", ""]
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
    if plots:
        lines += ["## Plots", ""]
        for title, filename in plots:
            lines += [f"### {title}", "", f"![{title}]({filename})", ""]
    path.write_text("\n".join(lines))


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def print_table(runs, swept, columns, best, paragraphs, console: Console) -> None:
    """Runs as columns and metrics as rows (a terminal is narrow; a sweep has few runs), or
    runs as rows when there are many of them (an Optuna study)."""
    title = "ccexp: runs side by side (bold = best)"
    labels = [("status", lambda r: r.status if r.finished else f"[red]{r.status}[/]")]
    labels += [(column_label(k), lambda r, k=k: setting(r.flat.get(k))) for k in swept]
    metrics = [(k + _arrow(k), lambda r, k=k: f"[bold green]{fmt(r.value(k))}[/]" if r.name in best[k]
                else fmt(r.value(k))) for k in columns]
    if len(runs) <= 8:
        table = Table(title=title)
        # fold, never cut: two labels cut to the same "test/la…" would be two rows of nothing
        table.add_column("run", overflow="fold")
        for r in runs:
            table.add_column(r.name, justify="right", overflow="fold")
        for label, cell in labels + metrics:
            table.add_row(label, *[cell(r) for r in runs])
    else:
        table = Table(title=title)
        for label, _ in [("run", None)] + labels:
            table.add_column(label, no_wrap=True)
        for label, _ in metrics:  # fold, never cut: a narrow terminal wraps a number rather than hiding it
            table.add_column(label, justify="right", overflow="fold")
        for r in runs:
            table.add_row(r.name, *[cell(r) for _, cell in labels + metrics])
    console.print(table)
    for paragraph in paragraphs:
        console.print(paragraph.replace("**", "").replace("`", ""), highlight=False)


# The flag that settles each way recorded compare blocks can differ.
JUDGED_BY = {"metric": "--metric", "direction": "--direction", "constraints": "--constraint or --no-constraints"}


def recorded_compare_config(runs: list[Run], given: Sequence[str] = ()) -> dict:
    """The compare block the runs recorded in config.yaml; runs from before it existed (or
    hand-written ones) get conf/compare/default.yaml. Runs that record different ways to judge
    them (two sweeps side by side) need the flag for each way that ``given`` does not settle;
    their headline columns are joined."""
    blocks = [(run, run.config["compare"]) for run in runs if isinstance(run.config.get("compare"), dict)]
    if not blocks:
        from ccexp.__main__ import CONFIG_DIR

        return _read_yaml(Path(CONFIG_DIR) / "compare" / "default.yaml")
    first_run, first = blocks[0]
    for key, flag in JUDGED_BY.items():
        other = next(((r, b) for r, b in blocks if b.get(key) != first.get(key)), None)
        if other is not None and key not in given:
            raise CompareError(f"the runs record different compare.{key} ({first_run.name}: {first.get(key)!r}, "
                               f"{other[0].name}: {other[1].get(key)!r}); give python -m ccexp.compare {flag} to "
                               "judge them alike")
    headline = [h for _, b in blocks for h in (b.get("headline") if isinstance(b.get("headline"), list) else [])]
    return {**first, "headline": list(dict.fromkeys(headline)) or first.get("headline")}


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
    try:
        return CompareConfig(**{**recorded, **given})
    except (TypeError, ConfigError) as err:
        raise CompareError(f"compare config recorded in the runs' config.yaml: {err}") from None


def compare(paths: Sequence[Path], out: Optional[Path] = None, cc: Optional[CompareConfig] = None,
            plots: bool = True, console: Optional[Console] = None) -> dict:
    """Read the runs under paths, write compare.md/.csv and plots to out, print the table.
    cc defaults to the compare config the runs recorded. Returns what was written."""
    runs = load_runs(paths)
    if cc is None:
        cc = recorded_config(runs)
    out = Path(out) if out is not None else (Path(paths[0]) if len(paths) == 1 and Path(paths[0]).is_dir()
                                             else Path("compare"))
    output_dir(out, CompareError, "--out", create=True)
    console = console or Console()
    named = {r.dir for r in runs}
    nested = [d for d in nested_run_dirs(paths) if d.resolve() not in named]
    if nested:
        console.print(f"left out {len(nested)} evaluation{'s' * (len(nested) > 1)} inside the runs "
                      f"({', '.join(map(str, nested[:3]))}{', …' if len(nested) > 3 else ''}): name "
                      f"{'them' if len(nested) > 1 else 'it'} to compare", markup=False, highlight=False)
    swept = swept_keys(runs)
    columns = headline_columns(runs, cc.headline)
    best = {k: best_runs(runs, k) for k in columns}
    paragraphs = recommend(runs, cc, swept)
    written_plots = []
    if plots:
        from ccexp.compare_plots import write_plots

        written_plots = write_plots(runs, out, cc, swept)
    unstarted = [(name if len(paths) == 1 else str(Path(p) / name), job)
                 for p in paths if Path(p).is_dir() for name, job in unstarted_jobs(Path(p))]
    write_markdown(out / "compare.md", runs, swept, columns, best, paragraphs, written_plots,
                   [str(p) for p in paths], cc, unstarted)
    write_csv(out / "compare.csv", _rows(runs, swept, columns, best))
    print_table(runs, swept, columns, best, paragraphs, console)
    return {"runs": runs, "swept": swept, "columns": columns, "best": best, "recommendation": paragraphs,
            "plots": [out / f for _, f in written_plots], "markdown": out / "compare.md", "csv": out / "compare.csv"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="python -m ccexp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep dir (multirun/<date>/<time>) or run dirs")
    parser.add_argument("--out", type=Path, help="where compare.md/.csv and the plots go (default: the sweep dir)")
    parser.add_argument("--metric", help="rank by this metric (default: the runs' compare.metric, test/acc)")
    parser.add_argument("--direction", choices=["maximize", "minimize"], help="default: compare.direction")
    parser.add_argument("--constraint", action="append", metavar="'METRIC<=N'",
                        help="a limit a recommended run must meet; repeat for several (replaces compare.constraints)")
    parser.add_argument("--no-constraints", action="store_true", help="ignore compare.constraints")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        limits = [parse_constraint(text, "--constraint") for text in args.constraint or []]  # before any file is read
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


if __name__ == "__main__":
    sys.exit(main())
