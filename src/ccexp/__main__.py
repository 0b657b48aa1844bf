"""``python -m ccexp``: Hydra entry point. Returns the metric a sweep optimises (``objective``)."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import InterpolationKeyError

from ccexp.config import ConfigError, mix_given_whole
from ccexp.config_errors import config_error_line, objective_missing, objective_value, search_space_key_line

# A wheel carries the configs inside the package; a source checkout keeps them in ./conf.
_PACKAGED = Path(__file__).parent / "conf"
CONFIG_DIR = str(_PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    from ccexp.run import RunDirBusy, run
    from ccexp.sweep import interruption, is_study, record_failure, run_name, summarize_interrupted, sweep_group

    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    search = hc.runtime.choices.get("hparams_search")
    if search and not sweep:  # Hydra would run the task once, with the search's defaults: nothing searched
        print(f"ccexp: error: hparams_search={search}: an Optuna search runs with -m (python -m ccexp -m "
              f"hparams_search={search} ...); without it, it would be one run of the defaults", file=sys.stderr)
        sys.exit(2)
    name = run_name(hc, sweep)
    run_dir = Path(hc.runtime.output_dir)
    # An Optuna search reads objective.metric: a run that lacks it fails (its W&B run too), so
    # the trial is recorded as failed with the reason in the job's error.txt.
    searched = sweep and is_study(hc)
    mix_given_whole(cfg, hc.overrides.task)
    try:
        # In a sweep every job shares one W&B group, named after its sweep dir.
        metrics = run(cfg, run_dir, run_name=name, group=sweep_group(hc.sweep.dir) if sweep else None,
                      required_metric=cfg.objective.metric if searched else None)
    except Exception as err:  # noqa: BLE001 - recorded in the job dir; KeyboardInterrupt still stops all
        if sweep:  # one failed job must not stop the others; the sweep summary counts it
            # A dir another live run writes into (two sweeps started in the same second) is not this job's to mark.
            line = str(err) if isinstance(err, RunDirBusy) else record_failure(run_dir, err)
            print(f"ccexp: error: {line} (job {hc.job.num}, {run_dir})", file=sys.stderr)
            return None  # an Optuna study stops after a trial without objective.metric (ccexp_plugins)
        if isinstance(err, ConfigError):
            # Refused input: one line, and the run dir (which may hold an earlier run) left alone.
            print(f"ccexp: error: {err}", file=sys.stderr)
            sys.exit(2)
        record_failure(run_dir, err)
        raise
    except (KeyboardInterrupt, SystemExit) as err:  # SIGTERM or Ctrl-C while training: Lightning's SystemExit
        stopped = interruption(err, run_dir)  # its hint read from what the run left in its dir
        if stopped is None:
            raise
        line, code = stopped
        record_failure(run_dir, err)
        print(f"ccexp: error: {line} ({f'job {hc.job.num}, ' if sweep else ''}{run_dir})", file=sys.stderr)
        if sweep:
            summarize_interrupted(hc, line)
        sys.exit(code)
    key = cfg.objective.metric
    if key not in metrics:  # a typo, or a metric this run does not compute: no value, ever
        # Nothing reads it (an Optuna job has failed in run() instead): the run's results stand.
        print(f"ccexp: warning: {objective_missing(key, metrics)}", file=sys.stderr)
        return None
    return objective_value(metrics[key])


def _shown_config(args: list[str]) -> Optional[str]:
    """What --cfg (-c) asks Hydra to show: job, hydra or all; None without it."""
    for i, arg in enumerate(args):
        if arg.startswith("--cfg="):
            return arg.partition("=")[2]
        if arg in ("--cfg", "-c") and i + 1 < len(args):
            return args[i + 1]
    return None


def _unknown_flag_line(args: list[str]) -> Optional[str]:
    """Hydra's argparse answers a flag it does not take (--method=lora) or a bad flag value (--cfg
    jobs) with its usage block before the error: the line for it, else None."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise ConfigError(message)

    parser.error = refuse  # argparse reports every problem through it
    try:
        unknown = [a for a in parser.parse_known_args(args)[1] if a.startswith("-")]
    except ConfigError as err:
        return str(err)
    if not unknown:
        return None
    flag = unknown[0]
    meant = f"; settings are key=value, without dashes: {flag.lstrip('-')}" if "=" in flag else ""
    return f"{flag}: not a flag ccexp takes{meant}"


def _dir_not_made(err: OSError) -> Optional[str]:
    """The line for Hydra failing to make the run or sweep dir (a file there or above it, a
    read-only place), before any job ran: it raised mkdir's error in a traceback. None for
    anything else, a job's own error included (a single run's keeps its traceback)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames or frames[-1].name not in ("mkdir", "makedirs") or any(
            f.filename == __file__ and f.name == "main" for f in frames):
        return None
    which = "hydra.sweep.dir" if {"-m", "--multirun"} & set(sys.argv[1:]) else "hydra.run.dir"
    why = "a file, not a folder" if Path(str(err.filename)).is_file() else err.strerror or str(err)
    return (f"{err.filename}: cannot make the {which.split('.')[1]} dir there ({why}); expected {which} to name a "
            "folder you can write to")


def cli() -> None:
    """``python -m ccexp`` and the ``ccexp`` command: ``main`` with Hydra's own errors in one line
    (exit 2, as ccexp's config errors). HYDRA_FULL_ERROR=1 set by the user keeps Hydra's output."""
    from hydra_plugins.ccexp_plugins import store_nodes_after_the_scan

    store_nodes_after_the_scan()
    flag_line = _unknown_flag_line(sys.argv[1:])
    if flag_line:
        print(f"ccexp: error: {flag_line} (--help for usage)", file=sys.stderr)
        sys.exit(2)
    for arg in sys.argv[1:]:  # before Hydra, whose basic sweeper fails on it in an assertion
        line = None if arg.startswith("-") else search_space_key_line(arg)
        if line:
            print(f"ccexp: error: {line}", file=sys.stderr)
            sys.exit(2)
    before = os.environ.get("HYDRA_FULL_ERROR")
    if before == "1":  # as Hydra reads it
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them
    try:
        main()
    except HydraException as err:
        print(f"ccexp: error: {config_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except InterpolationKeyError as err:
        key = re.search(r"Interpolation key '([^']+)' not found", str(err))
        if key is None:
            raise
        if _shown_config(sys.argv[1:]) == "hydra":
            # --cfg hydra drops the job's keys before resolving; a hydra setting that reads one (the
            # SLURM launcher's max_num_timeout: trainer.resume_from; a search's direction) cannot
            # resolve there. omegaconf does not say which setting it was resolving.
            print(f"ccexp: error: --cfg hydra --resolve: a hydra setting reads {key.group(1)}, a key of the job's "
                  "config, which --cfg hydra leaves out; --cfg all --resolve shows both resolved", file=sys.stderr)
        else:  # the user's own ${...} (trainer.max_steps='${nope}')
            given = next((a.partition("=")[0] for a in sys.argv[1:] if "${" + key.group(1) in a), "the config")
            print(f"ccexp: error: {given}: ${{{key.group(1)}}} names no key of the config (python -m ccexp --cfg job "
                  "lists the keys)", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        line = _dir_not_made(err)
        if line is None:
            raise
        print(f"ccexp: error: {line}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:  # Hydra's own checks, raised (not printed) under HYDRA_FULL_ERROR
        nulled = next((a for a in sys.argv[1:] if re.fullmatch(r"[+~]?[\w/]+=null", a)), None)
        if str(err).startswith("Config group override must be a string") and nulled:  # method=null
            group = nulled.lstrip("+~").partition("=")[0]
            options = ", ".join(sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")))
            print(f"ccexp: error: {nulled}: a config group takes the name of one of its options (conf/{group}/: "
                  f"{options}); ~{group} leaves out an optional one", file=sys.stderr)
            sys.exit(2)
        if not str(err).startswith("Only one of --run, --multirun, --cfg"):
            raise
        print("ccexp: error: one of -m (--multirun), --cfg and --info at a time, as Hydra takes them; a sweep's "
              "config: --cfg job without -m shows its first job's, --cfg hydra its hydra.sweeper.params", file=sys.stderr)
        sys.exit(2)
    finally:
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


if __name__ == "__main__":
    cli()
