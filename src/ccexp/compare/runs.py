"""The comparison report's runs: reading run dirs (metrics.json, config.yaml, Hydra's copy), the
config keys a sweep varied, which way each metric is better, and how values are shown."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ccexp.cli import read_json_object, yaml_problem
from ccexp.config import higher_is_better
from ccexp.config_errors import numeric_keys
from ccexp.environment import anchor_relative_paths, hardware
from ccexp.sweep import job_label, natural_key


class CompareError(Exception):
    """Bad input (no runs, unreadable files): one line naming the file, exit 2."""


GROUP_ORDER = ["model", "method", "backend", "task_mix", "data_size", "data", "trainer", "eval"]


@dataclass
class Run:
    dir: Path
    name: str = ""
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # nested, as in config.yaml
    flat: dict = field(default_factory=dict)    # dotted keys
    environment: dict = field(default_factory=dict)  # environment.json: where it ran (runs before it: none)

    @property
    def hardware(self) -> Optional[str]:
        """The hardware its times were measured on, in words (None: not recorded)."""
        m = self.environment.get("machine")
        return hardware(m) if isinstance(m, dict) else None

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


def read_yaml(path: Path) -> dict:
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
        run.config = read_yaml(run_dir / "config.yaml")
        if isinstance(run.config, dict):  # its files by where they are: an evaluation of it records them so
            anchor_relative_paths(run.config, run_dir)
    elif (run_dir / ".hydra" / "config.yaml").is_file():  # the job failed before run() wrote its own
        run.config = _resolved(read_yaml(run_dir / ".hydra" / "config.yaml"))
    run.flat = _flatten(run.config)
    if (run_dir / "environment.json").is_file():
        run.environment = read_json_object(run_dir / "environment.json", CompareError, "a run's environment file")
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
    # A task a run's mix leaves out gets no examples: its weight is 0, not unknown, so a mix of
    # fewer tasks (an evaluation's task_mix.weights) is told apart from the run's own, not ranked with it.
    tasks = {k for r in runs for k in r.flat if k.startswith("task_mix.weights.")}
    for run in runs:
        if any(k.startswith("task_mix.weights.") for k in run.flat):
            run.flat = {**dict.fromkeys(sorted(tasks), 0), **run.flat}
    root = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    if root in dirs:  # a run and an evaluation inside it: named 0 and 0/eval/<time>, not . and eval/<time>
        root = root.parent
    for run in runs:
        run.name = str(run.dir.relative_to(root))
    return runs


# -- what to show -----------------------------------------------------------------------------

@dataclass
class SeedMean(Run):
    """One configuration's finished runs over several seeds, as one candidate: each metric their
    mean, ``sd`` its sample standard deviation. Ranking these, the report picks a configuration,
    not the luckiest seed. ``name`` lists the runs, ``flat["seed"]`` their seeds ("1,2,3")."""
    runs: list[Run] = field(default_factory=list)
    planned: int = 0  # the configuration's runs, finished or not
    sd: dict = field(default_factory=dict)


def seeded(runs: list[Run], swept: list[str]) -> bool:
    """Whether the runs repeat configurations over seeds: seed is swept and some configuration
    (every other swept key alike) has two finished runs. Where each seed goes with its own
    configuration, seed is one more setting, and runs are ranked one by one."""
    return "seed" in swept and any(len([r for r in g if r.finished]) > 1 for g in _by_configuration(runs, swept))


def _by_configuration(runs: list[Run], swept: list[str]) -> list[list[Run]]:
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        grouped.setdefault(tuple(repr(run.flat.get(k)) for k in swept if k != "seed"), []).append(run)
    return list(grouped.values())


def seed_means(runs: list[Run], swept: list[str]) -> list[SeedMean]:
    """The mean over seeds of each configuration with a finished run. A metric some finished
    seed has no number for is None: a mean over the others would claim seeds it does not hold.
    A value every seed shares (a count of answers) stays as it is."""
    means = []
    for group in _by_configuration(runs, swept):
        done = [r for r in group if r.finished]
        if not done:
            continue
        metrics: dict[str, Any] = {"status": "finished"}
        sd = {}
        for key in dict.fromkeys(k for r in done for k in numeric_keys(r.metrics)):
            values = [r.value(key) for r in done]
            if any(v is None for v in values):
                metrics[key] = None
                continue
            metrics[key] = values[0] if len(set(values)) == 1 else statistics.fmean(values)
            if len(values) > 1:
                sd[key] = statistics.stdev(values)
        seeds = ",".join(setting(r.flat.get("seed")) for r in done)
        means.append(SeedMean(dir=done[0].dir, name=", ".join(r.name for r in done), metrics=metrics,
                              config=done[0].config, flat={**done[0].flat, "seed": seeds},
                              environment=done[0].environment, runs=done, planned=len(group), sd=sd))
    return means


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
    # A run without the key (one that failed before writing its config) says nothing about it either.
    differing = [k for k in keys if len({repr(r.flat[k]) for r in runs if k in r.flat and known(r, k)}) > 1]
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


# What the runs are judged on: runs that differ in these answered other test questions (another
# task mix, dataset, test size, number of generated answers) or had them scored otherwise (a
# token cap that cuts answers, a band), so each value is a scenario of its own, with its own
# recommendation and best marks. Everything else (method, model, backend, trainer, their
# hyperparameters, the training data's size, and eval.baseline, eval.latency_examples and
# eval.batch_size, which add metrics or time them but leave the answers and their scores alone)
# is a choice the report ranks.
SCENARIO_GROUPS = ("task_mix.", "data.", "data_size.", "eval.generate_examples",
                   "eval.max_new_tokens",  # and eval.max_new_tokens_by_task.*
                   "eval.quality_band", "eval.csat_band", "eval.churn_band")  # csat_band: and csat_band_100


def scenarios(runs: list[Run], swept: list[str]) -> dict[str, list[Run]]:
    """The runs by scenario, labelled "For task_mix=all" ("" when there is one). A run that
    lacks a key (a failed run without its config, an older run) joins the first scenario its
    other values fit, rather than opening one of its own."""
    def value(run: Run, key: str):
        return run.flat.get(key)

    keys = [k for k in swept if k.startswith(SCENARIO_GROUPS) and k != "data_size.train"
            and len({repr(value(r, k)) for r in runs if value(r, k) is not None}) > 1]
    if len({value(r, "data_size.test") for r in runs if value(r, "data_size.test") is not None}) <= 1:
        # -m data_size=tiny,small data_size.test=188: more training data, one test set (the val
        # sets differ, so val/ columns compare runs over other validation examples)
        keys = [k for k in keys if not k.startswith("data_size.")]
    grouped: dict[str, list[Run]] = {}
    partial = []
    for run in runs:
        if any(value(run, k) is None for k in keys):
            partial.append(run)
            continue
        label = ", ".join(f"{column_label(k)}={setting(value(run, k))}" for k in keys)
        grouped.setdefault(f"For {label}" if label else "", []).append(run)
    for run in partial:
        fits = [label for label, group in grouped.items()
                if all(value(run, k) is None or repr(value(run, k)) == repr(value(group[0], k)) for k in keys)]
        grouped.setdefault(fits[0] if fits else f"For {describe(run, keys)}", []).append(run)
    return grouped


def by_val_size(runs: list[Run]) -> list[list[Run]]:
    """The runs by their number of validation examples: val/ metrics over 12 and over 188
    examples are no rivals."""
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(repr(run.flat.get("data_size.val")), []).append(run)
    return list(grouped.values())


def column_label(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def headline_columns(runs: list[Run], patterns: Sequence[str]) -> list[str]:
    present = sorted({k for r in runs for k in numeric_keys(r.metrics)})
    columns: list[str] = []
    for pattern in patterns:
        # A pattern's matches leave out the answer counts (".../answers"): sizes, not scores.
        columns += [k for k in present if (k == pattern or fnmatchcase(k, pattern) and not k.endswith("/answers"))
                    and k not in columns]
    return columns


def partly_timed(run: Run, key: str) -> bool:
    """A resumed run's times and training speed cover the resumed part only: no rival of a whole run's."""
    return (run.value("train/resumed_from_step") or 0) > 0 and \
        (key.startswith("time/") or key in ("train/seconds", "train/tokens_per_s"))


def trained(run: Run) -> bool:
    """Whether the run trained (python -m ccexp.evaluate of a saved adapter records no train/steps)."""
    return "train/steps" in run.metrics


def covers_training(key: str) -> bool:
    """A time or memory peak that holds a run's training: an evaluation's, over none, is no rival."""
    return key.startswith(("time/", "memory/")) and key != "time/eval_s"


def timed(key: str) -> bool:
    """A time or a speed: what the machine decides as much as the run (latency, tokens/s, time/)."""
    last = key.rsplit("/", 1)[-1]
    return key.startswith("time/") or "/latency/" in f"/{key}" or last.endswith("per_s") or key == "train/seconds"


def machines(runs: list[Run]) -> dict[str, list[Run]]:
    """The finished runs by the hardware their times were measured on; runs that did not record
    it (before environment.json) are a group of their own, as they may have run anywhere."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.finished:
            groups.setdefault(run.hardware or "a machine not recorded", []).append(run)
    return groups


# Runs whose starting resident sets (memory/start_mb) differ by more than this share of the lowest
# started from different baselines: their peaks hold those starts, not only what each run used.
MEMORY_START_SPREAD = 0.1


def memory_starts(runs: list[Run]) -> dict[str, float]:
    """The finished runs' memory/start_mb by name where those starts differ (an earlier sweep job's
    libraries and pages still resident in the process); {} where they are alike or not recorded."""
    starts = {r.name: r.value("memory/start_mb") for r in runs if r.finished}
    starts = {name: v for name, v in starts.items() if isinstance(v, (int, float))}
    if len(starts) < 2 or max(starts.values()) <= min(starts.values()) * (1 + MEMORY_START_SPREAD):
        return {}
    return starts


def same(value: float | int) -> float | int:
    """A metric as the report compares it: a float to 12 significant digits, past which float
    sums of one value differ (2/3 as 0.6666666666666667 and 0.6666666666666666); a count as it is."""
    return float(f"{value:.12g}") if isinstance(value, float) else value


def best_runs(runs: list[Run], key: str) -> set[str]:
    """Names of the finished runs holding the best value of key (ties all marked), among runs of
    one scenario (``scenarios``)."""
    higher = higher_is_better(key)
    values = {r.name: same(r.value(key)) for r in runs
              if r.finished and r.value(key) is not None and not partly_timed(r, key)}
    if covers_training(key) and any(trained(r) for r in runs if r.name in values):
        values = {r.name: values[r.name] for r in runs if r.name in values and trained(r)}
    if higher is None or len(values) < 2:
        return set()
    if timed(key) and len(machines([r for r in runs if r.name in values])) > 1:
        return set()  # a faster machine, not a faster run (machines_note says so)
    if key.startswith("memory/") and memory_starts([r for r in runs if r.name in values]):
        return set()  # a higher start, not a hungrier run (memory_note says so)
    if len(set(values.values())) == 1:
        return set()  # all equal: nothing to single out
    best = (max if higher else min)(values.values())
    return {name for name, v in values.items() if v == best}


def recorded_as_null(runs: Sequence[Run], *keys: str) -> bool:
    """Whether some run has one of ``keys`` in its metrics.json, with no number (null: no answer
    gave one), so the sentence says "no finished run has a number for K", not "reports K"."""
    return any(key in run.metrics for run in runs for key in keys)


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
    return f"`{run.name}`" + (f" ({values})" if values else "")


def describe(run: Run, swept: list[str]) -> str:
    """'method=lora, task_mix=all': the run's swept values ("" when nothing was swept)."""
    return ", ".join(f"{column_label(k)}={setting(run.flat.get(k))}" for k in swept)
