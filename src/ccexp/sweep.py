"""Sweep bookkeeping: what a failed job leaves in its dir, and the summary after a multirun.

A job that raises writes ``error.txt`` (one line) and ``traceback.txt`` next to its
``metrics.json`` (``status: failed``); the sweep goes on. After the last job the
``SweepSummary`` callback counts the jobs of this launch, writes ``<sweep dir>/sweep_summary.json``
and the comparison report, prints one line, and exits 1 when any job failed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ccexp.config import ConfigError


def is_study(hydra: DictConfig) -> bool:
    """Whether ``hydra`` (HydraConfig, or a config's ``hydra`` node) runs an Optuna study."""
    return "Optuna" in str(hydra.sweeper.get("_target_", ""))


def sweep_group(sweep_dir: str) -> str:
    """The W&B group of a sweep: its dir's last two parts, multirun/<date>/<time> -> <date>_<time>
    (unique per sweep; an Optuna study's fixed dir gives all its launches one group)."""
    return "_".join(Path(sweep_dir).parts[-2:])


def run_name(hydra: DictConfig, multirun: bool) -> str:
    """A run's name in W&B: in a sweep, the overrides that set it apart from the sweep's other
    jobs (``method=qlora``), not the command line every job shares, which would come first and
    push the part that differs off the end of a dashboard's column; a single run, all of its
    overrides. ``hydra``: HydraConfig.get()."""
    # As typed: iterating the ListConfig would resolve an override's own ${...} (trainer.max_steps=${nope}).
    task = [str(o) for o in OmegaConf.to_container(hydra.overrides.task, resolve=False)]
    if multirun:
        swept = _swept_keys(hydra)
        task = [o for o in task if _override_key(o) in swept] or task
    return ",".join(task) or "default"


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _swept_keys(hydra: DictConfig) -> set[str]:
    """The keys a sweep varies: its sweeper's params (an experiment's sweep, an Optuna search
    space) and the command line's sweeps, as the sweep dir's multirun.yaml recorded them."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = {_override_key(str(k)) for k in (hydra.sweeper.get("params") or {})}
    try:
        recorded = yaml.safe_load((Path(hydra.sweep.dir) / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
        for override in OverridesParser.create().parse_overrides(list(recorded)):
            # The command line wins over the params: one value there is no sweep of that key.
            (keys.add if override.is_sweep_override() else keys.discard)(_override_key(override.input_line))
    except Exception:  # noqa: BLE001 - no multirun.yaml (a custom layout): the params alone
        pass
    return keys


RESUME_HINT = "on the torch backends, trainer.resume_from=<its run dir> resumes it where it saved a checkpoint (trainer.save_every_n_steps)"


def interruption(err: BaseException, run_dir: Path | None = None,
                 evaluated: Path | None = None) -> tuple[str, int] | None:
    """A stop the user or a scheduler asked for, as (one line, exit code), else None: SIGTERM
    (kill, SLURM's time limit) or SIGUSR1 (its warning, ``signals.py``), which Lightning turns into ``SIGTERMException``, a SystemExit of
    code 0, at the next step; Ctrl-C, which it turns into ``sys.exit(1)``. The line ends with how
    the run in ``run_dir`` goes on (``resume.resume_hint``; ``evaluated``: the run dir an
    evaluation was of), or the general hint without one."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from ccexp.resume import resume_hint

    hint = resume_hint(run_dir, evaluated) if run_dir is not None or evaluated is not None else RESUME_HINT
    if isinstance(err, SIGTERMException) and err.args == (signal.SIGUSR1,):  # signals.raise_sigterm's
        return f"interrupted by SIGUSR1 (a scheduler's warning before its time limit: SLURM's --signal); {hint}", 138
    if isinstance(err, SIGTERMException):
        return f"interrupted by SIGTERM (kill, or a scheduler's time limit); {hint}", 143
    if isinstance(err, KeyboardInterrupt) or isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt):
        return f"interrupted (Ctrl-C); {hint}", 130
    return None


def one_line(err: BaseException, run_dir: Path | None = None, evaluated: Path | None = None) -> str:
    """An error as one line: a ConfigError's own words, an interruption's (with how the run in
    ``run_dir`` goes on), else its type and first line."""
    stopped = interruption(err, run_dir, evaluated)
    if stopped is not None:
        return stopped[0]
    text = str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}".rstrip(": ")
    return text.splitlines()[0] if text else type(err).__name__


def record_failure(job_dir: Path, err: BaseException, line: str | None = None) -> str:
    """Write error.txt (``line``, else the error's one line) and traceback.txt, mark metrics.json
    failed (creating it when the job died before run() wrote one); return the one-line error."""
    line = line or one_line(err, job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "error.txt").write_text(line + "\n")
    (job_dir / "traceback.txt").write_text("".join(traceback.format_exception(err)))
    path = job_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        metrics = {}
    metrics.update(status="failed", error=line)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return line


def discard_unstarted(sweep_dir: Path) -> None:
    """A sweep refused before any job ran leaves the dir Hydra made with only its multirun.yaml
    (an Optuna study's, made for its SQLite file, with nothing): an empty sweep in the user's
    multirun/ (and in a report over it). Removed, with its multirun/<date> folder where that is
    left empty; anything else in them is kept."""
    try:
        if sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] in ([], ["multirun.yaml"]):
            (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
            sweep_dir.rmdir()
            day = sweep_dir.parent
            if day.parent.name == "multirun" and not any(day.iterdir()):
                day.rmdir()
    except OSError:  # another process writing there: it is theirs
        pass


def _job_dirs(sweep_dir: Path, since: float) -> list[Path]:
    """Job dirs written by this launch (an Optuna study's dir also holds earlier launches)."""
    dirs = [p.parent for p in sweep_dir.rglob("metrics.json") if p.stat().st_mtime >= since]
    return sorted(dirs, key=lambda d: natural_key(d.relative_to(sweep_dir)))


def job_label(job: list[str], jobs: list[list[str]]) -> str:
    """A sweep job by the overrides that set it apart from the others (the command line's, which
    every job holds, left out): "method=prompt_tuning task_mix=all"."""
    own = [o for o in job if sum(o in other for other in jobs) < len(jobs)]
    return " ".join(own or job)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def natural_key(path: Path) -> list[tuple]:
    """Job dirs in job order: 2 before 10, numbers before names."""
    return [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in path.parts]


class SweepSummary(Callback):
    """hydra.callbacks.sweep_summary: counts finished and failed jobs after a multirun."""

    running: "SweepSummary | None" = None  # the sweep of this process, for summarize_interrupted()

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # file mtimes can trail the clock by a tick
        # The Optuna sweeper opens its SQLite study in the sweep dir before any job creates it.
        try:
            Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        except OSError:  # Hydra's own mkdir raises it next, which ccexp.__main__ says in one line
            pass
        SweepSummary.running = self

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.summarize(Path(config.hydra.sweep.dir), is_study(config.hydra))

    def summarize(self, sweep_dir: Path, study: bool, interrupted: str | None = None) -> None:
        """``interrupted``: a job was stopped by SIGTERM or Ctrl-C. Hydra never reaches
        on_multirun_end then, so ``summarize_interrupted`` calls this, and its caller exits."""
        SweepSummary.running = None
        jobs = []
        for job_dir in _job_dirs(sweep_dir, self.started):
            metrics = json.loads((job_dir / "metrics.json").read_text())
            job = {"dir": str(job_dir.relative_to(sweep_dir)), "status": metrics.get("status", "unknown")}
            if job["status"] != "finished":
                job["error"] = metrics.get("error", "stopped without an error (killed?)")
            jobs.append(job)
        failed = [j for j in jobs if j["status"] != "finished"]
        summary = {"sweep_dir": str(sweep_dir), "jobs": len(jobs), "finished": len(jobs) - len(failed),
                   "failed": len(failed), "runs": jobs}
        if interrupted:
            from ccexp.compare.runs import unstarted_jobs

            summary["not_started"] = [{"dir": name, "overrides": job} for name, job in unstarted_jobs(sweep_dir)]
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(summary, indent=2))
        if self.report and jobs:
            # An Optuna study's report ranks all its trials, of every launch; a sweep's, its own jobs.
            self._write_report(sweep_dir, None if study else [sweep_dir / job["dir"] for job in jobs])
        line = (f"ccexp: sweep {sweep_dir}: {_count(len(jobs), 'job')}: "
                f"{summary['finished']} finished, {len(failed)} failed")
        if failed:
            first = failed[0]
            line += f" (job {first['dir']}: {first['error']}; see {sweep_dir / first['dir'] / 'error.txt'})"
        if interrupted:
            left = summary["not_started"]
            line += "; the sweep stopped there" + (
                f", {_count(len(left), 'job')} not started ({', '.join(j['overrides'] for j in left[:3])}"
                f"{', …' if len(left) > 3 else ''})" if left else "")
        print(line, file=sys.stderr if failed else sys.stdout, flush=True)
        if failed and not interrupted:
            sys.exit(1)  # a sweep with failed jobs is not a success, even though the others ran

    @staticmethod
    def _write_report(sweep_dir: Path, launched: list[Path] | None) -> None:
        """The comparison report in the sweep dir: over the dir, or over ``launched`` (this launch's
        job dirs) when the dir also holds runs of an earlier launch (the same hydra.sweep.dir run
        again), which would otherwise be ranked, and recommended, as if this launch had run them."""
        from ccexp.compare import CompareError, compare, find_run_dirs

        try:
            paths = [sweep_dir]
            earlier = sorted(set(find_run_dirs(sweep_dir)) - set(launched), key=natural_key) if launched else []
            if earlier:
                names = ", ".join(str(d.relative_to(sweep_dir)) for d in earlier[:3]) + (", …" if len(earlier) > 3 else "")
                print(f"ccexp: compare: the report covers this launch's {_count(len(launched), 'job')}, not the "
                      f"{_count(len(earlier), 'run')} an earlier launch left in {sweep_dir} ({names})",
                      file=sys.stderr, flush=True)
                paths = launched
            compare(paths, out=sweep_dir)
        except CompareError as err:  # the jobs' results stand; the report is a convenience
            print(f"ccexp: compare: {err}", file=sys.stderr)


def summarize_interrupted(hydra: DictConfig, line: str) -> None:
    """A sweep stopped by SIGTERM or Ctrl-C in one of its jobs (``hydra``: HydraConfig.get()):
    its summary and report for the jobs that ran, as at a sweep's end. The basic and Optuna
    sweepers run their jobs in this process, where the callback waits."""
    if SweepSummary.running is not None:
        SweepSummary.running.summarize(Path(hydra.sweep.dir), is_study(hydra), line)


WORKER_DIED = ("a joblib worker process died (killed: out of memory? each job loads its own model, so lower "
               "hydra.launcher.n_jobs), and joblib stopped the jobs running beside it")
BATCH_STOPPED = "stopped with its batch: another job of it was interrupted (SIGTERM or Ctrl-C)"


def stop_batch(hydra: DictConfig, since: float, err: BaseException, line: str | None, code: int) -> None:
    """joblib stopped a batch of jobs: a worker died (the out-of-memory killer, kill -9), a job
    was interrupted in its worker, or the sweep in its own process (or any sweep between its
    jobs: ``ccexp_plugins._stopped_anywhere``). Each job dir of the batch
    (Hydra's ``.hydra/`` written since ``since``) that has no result yet, or still says running,
    is marked failed with ``line`` (None: ``err``'s line, with how that job goes on); the
    summary and report cover what ran, and the sweep exits with ``code``, not loky's traceback."""
    sweep_dir = Path(hydra.sweep.dir)
    for config in sweep_dir.rglob(".hydra/config.yaml"):
        job_dir = config.parent.parent
        if config.stat().st_mtime < since:
            continue
        try:
            status = json.loads((job_dir / "metrics.json").read_text()).get("status")
        except (OSError, ValueError):
            status = None  # killed while loading its model: no metrics.json yet
        if status in (None, "running"):
            record_failure(job_dir, err, line)
    summarize_interrupted(hydra, line or one_line(err))
    sys.exit(code)
