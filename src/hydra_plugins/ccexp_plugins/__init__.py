"""ccexp's Hydra plugins: the Optuna sweeper and the SLURM launcher, with their failures in one
line, the basic sweeper, naming a job whose config does not compose, and the joblib launcher,
telling each job how many run at once. The configs name these
classes as ``_target_`` (conf/hparams_search/*, conf/hydra/launcher/slurm.yaml; joblib's config
node is stored below under the plugin's own name); Hydra takes plugins only from the
``hydra_plugins`` namespace."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import MutableSequence
from pathlib import Path
from unittest import mock

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper as _BasicSweeper
from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, HydraException
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _JoblibLauncher
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SlurmLauncher
import yaml
from joblib.externals.loky.process_executor import TerminatedWorkerError
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

from ccexp.config import KEYS_HINT, ConfigError, check_wandb_mode, did_you_mean, first_line, validate
from ccexp.config_errors import OBJECTIVE_MISSING, config_error_line
from ccexp.cores import JOBS_AT_ONCE_ENV, jobs_at_once
from ccexp.signals import raise_on_sigterm
from ccexp.sweep import (BATCH_STOPPED, WORKER_DIED, discard_unstarted, interruption, is_study, job_label,
                         record_failure, stop_batch)


def _stop(message: str, config: DictConfig | None = None) -> None:
    """One line and exit 2; ``config`` (the sweep's): its dir, which holds nothing yet, goes."""
    if config is not None:
        discard_unstarted(Path(str(config.hydra.sweep.dir)))
    print(f"ccexp: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _interruptible(work, stopped):
    """``work()`` with SIGTERM raising wherever it lands, as it does in a job's training; Ctrl-C or
    SIGTERM there goes to ``stopped(err)``, which says so in one line and exits. Any other exit (a
    job's, which said why itself; ``_stop``'s exit 2) passes."""
    restore_sigterm = raise_on_sigterm()
    try:
        return work()
    except KeyboardInterrupt as err:
        stopped(err)
    except SystemExit as err:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(err, SIGTERMException):
            raise
        stopped(err)
    finally:
        restore_sigterm()


def _stopped_anywhere(hydra: DictConfig, sweep):
    """``sweep()``, interruptible between jobs and while one is set up (its model loading), where
    Python's default ended the process without a word, an Optuna trial RUNNING for good and no
    summary, and Ctrl-C was a traceback: one line, the summary of the jobs that ran, the usual
    exit code. A job that was running says so itself."""
    started = time.time() - 1.0  # file mtimes can trail the clock by a tick
    return _interruptible(sweep, lambda err: _stopped_between_jobs(hydra, started, err))


def _stopped_between_jobs(hydra: DictConfig, started: float, err: BaseException) -> None:
    """A job whose dir Hydra had made, stopped before its run began, is marked failed with the line."""
    line, code = interruption(err)
    line = f"{line.split('; ')[0]} between the sweep's jobs"
    print(f"ccexp: error: {line}", file=sys.stderr, flush=True)
    stop_batch(hydra, started, err, line, code)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _config_keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of the task's config (not hydra's; a list's items by index), for "did you mean"."""
    if isinstance(node, DictConfig):
        children = [(str(k), v) for k, v in node.items_ex(resolve=False) if not (prefix == "" and k == "hydra")]
    elif isinstance(node, ListConfig):
        children = [(str(i), node._get_node(i)) for i in range(len(node))]
    else:
        return []
    keys = []
    for key, child in children:
        keys += [f"{prefix}{key}", *_config_keys(child, f"{prefix}{key}.")]
    return keys


def _repository(sweeper):
    loader = getattr(getattr(sweeper, "hydra_context", None), "config_loader", None)
    return getattr(loader, "repository", None)


def _is_group(sweeper, key: str) -> bool:
    """``method=lora``, ``experiment=...``: a config group choice, not a key (a ``_global_``
    group such as ``experiment`` is no node of the config at all)."""
    repository = _repository(sweeper)
    return repository is not None and repository.group_exists(key.replace(".", "/"))


def _check_group_options(sweeper, override, where: str) -> None:
    """trainer=choice(fast,nope): each trial drawing nope failed in Hydra's composition, the study
    carrying on; each option named is looked up once, before the study opens (the options
    themselves are whole configs Hydra composes and validates per trial)."""
    group = override.get_key_element().replace(".", "/")
    options = _repository(sweeper).get_group_options(group)
    missing = [str(v) for v in _searched_values(override) if str(v) not in options]
    if missing:
        raise ConfigError(f"{where}: {group} has no option {missing[0]} (expected one of {', '.join(options)})")


def _directions(sweeper) -> list[str]:
    """The study's directions as names: hydra.sweeper.direction is one or a list, each a string
    or optuna's enum (after the plugin's setup)."""
    given = sweeper.direction if isinstance(sweeper.direction, MutableSequence) else [sweeper.direction]
    return [str(getattr(direction, "name", direction)) for direction in given]


def _resolves_here(config: DictConfig) -> bool:
    """Whether the task's config (not Hydra's) resolves in the sweeper's process: a resolver
    (``${hydra:job.num}``, ``${oc.env:…}`` of a variable the job's node sets) may not, and is
    the job's to resolve; a key that is not there (``${method.dropoutt}``) is a typo, and
    ``validate`` says so."""
    try:
        for key in config:
            if key == "hydra":
                continue
            node = config[key]  # a top-level value resolves as it is read (seed=${hydra:job.num})
            if isinstance(node, DictConfig):
                OmegaConf.to_container(node, resolve=True)
    except InterpolationKeyError:
        return True
    except InterpolationResolutionError:
        return False
    return True


def check_study(sweeper, arguments: list[str]) -> None:
    """What the plugin would fail on with a traceback, or only after a trial has started (and
    stays RUNNING in the study for good): checked before the study is opened, as one line
    naming the key. ``sweeper``: the plugin's ``OptunaSweeperImpl`` after ``setup``."""
    # Here, not at the top: Hydra imports every plugin module at start-up, and optuna with its
    # SQL storage takes ~1 s to import (the plugin itself imports it lazily too).
    from hydra_plugins.hydra_optuna_sweeper import _impl as optuna_impl

    for key in ("n_trials", "n_jobs"):
        value = getattr(sweeper, key)
        if not _is_count(value):
            raise ConfigError(f"hydra.sweeper.{key}: expected an integer >= 1, got {value!r}")
    names = _directions(sweeper)
    wrong = [name for name in names if name not in ("minimize", "maximize")]
    if wrong or not names:
        raise ConfigError(f"objective.direction (the study's hydra.sweeper.direction): expected minimize or "
                          f"maximize, got {wrong[0] if wrong else []!r}")
    # What every trial would be refused on in run() (method.r=0; maximize val/loss): once, here,
    # not n_trials times, and before the study stores a direction against its metric for good.
    # A config with a value only a job can resolve (${hydra:job.num}; a variable its node sets)
    # is left to the trials.
    if _resolves_here(sweeper.config):
        objective = validate(sweeper.config).objective
        if len(names) == 1 and names[0] != objective.direction:
            raise ConfigError(f"hydra.sweeper.direction={names[0]}, but objective.direction={objective.direction}: "
                              "the study optimises objective.metric; set objective.direction instead")
    storage = sweeper.storage
    if isinstance(storage, str) and storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        folder = Path(storage.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"hydra.sweeper.storage: {storage}: {folder} is not a folder this user can write to")
    elif isinstance(storage, str) and not storage.startswith(("sqlite:", "redis")):
        from sqlalchemy import create_engine

        try:  # imports the URL's database driver, connecting to nothing: optuna's traceback otherwise
            create_engine(storage).dispose()
        except Exception as err:  # noqa: BLE001 - a missing driver, an unknown dialect, no URL at all
            raise ConfigError(f"hydra.sweeper.storage: {storage}: {first_line(err)} (expected sqlite:///<file>, or a "
                              "database URL whose driver is installed)") from None
    params = sweeper.params or {}  # a DictConfig; None without a search space
    task_keys = _config_keys(sweeper.config)
    parser = OverridesParser.create()
    for source, text in [("hydra.sweeper.params", f"{k}={v}") for k, v in params.items()] + \
                        [("the command line", a) for a in arguments]:
        try:
            override = parser.parse_override(text)
            optuna_impl.create_optuna_distribution_from_override(override)
        except Exception as err:  # noqa: BLE001 - Hydra's parse errors and optuna's range errors alike
            raise ConfigError(f"{source}: {text}: {str(err).splitlines()[0]}") from None
        key = override.get_key_element()
        # A new key (+key=...), a config group (method=...) and hydra's own keys are Hydra's to check.
        if override.is_add() or override.is_force_add() or override.is_delete() or key.startswith("hydra"):
            continue
        if "/" not in key and key not in task_keys and not _is_group(sweeper, key):
            hint = did_you_mean(key, task_keys, KEYS_HINT)
            raise ConfigError(f"{source}: {key} is not a key of the config ({hint})")
        if override.is_choice_sweep() and _is_group(sweeper, key):
            _check_group_options(sweeper, override, f"{source}: {text}")
        # A group's options (trainer=choice(fast,default)) are whole configs Hydra composes per trial:
        # only a leaf's values are checked here.
        if override.is_sweep_override() and key in task_keys and _resolves_here(sweeper.config) \
                and not isinstance(OmegaConf.select(sweeper.config, key), DictConfig):
            _check_searched_values(sweeper.config, override, f"{source}: {text}")


def _searched_values(override) -> list:
    """What a trial may set a searched key to, as far as a check can try: each choice, and an
    interval's or range's two ends (a value between them is refused only where an end is)."""
    value = override.value()
    if override.is_interval_sweep():
        return [value.start, value.end]
    values = list(override.sweep_iterator())
    return values if override.is_choice_sweep() else values[:1] + values[-1:]


def _check_searched_values(config: DictConfig, override, where: str) -> None:
    """choice(4,x): each trial that draws x would fail (15 of 20 did); each value is composed into
    the config and validated once, before the study opens."""
    key = override.get_key_element()
    for value in _searched_values(override):
        trial = config.copy()
        try:
            OmegaConf.update(trial, key, value, merge=False)
            validate(trial)
        except ConfigError as err:
            raise ConfigError(f"{where}: the value {value}: {err}") from None
        except Exception as err:  # noqa: BLE001 - omegaconf refusing the value for a typed node
            raise ConfigError(f"{where}: the value {value}: {key}: {first_line(err)}") from None


STUDY_SETTINGS = "ccexp_settings"  # the study's user attribute: the settings its first complete trial ran with
# Settings that do not change what a trial measures: how it is logged and judged, Hydra's own.
_NOT_MEASURED = ("hydra", "logger", "compare", "experiment_name")


def _settings(arguments: list[str]) -> list[str]:
    """The command line's settings that decide what a trial measures, as ``key=value`` in one
    spelling (``1e-3`` and ``0.001``, quoted or not, ``+key`` or ``key`` are one setting): not
    a searched value (``method.lr=interval(...)``: the search space, which may change), nor how
    a trial is logged or judged, nor Hydra's own (n_trials, the launcher, the sweep dir)."""
    settings = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() or key.split(".")[0].split("/")[0] in _NOT_MEASURED:
            continue
        settings[key] = "~" if override.is_delete() else repr(override.value())  # given twice: Hydra's last
    return sorted(f"{key}={value}" for key, value in settings.items())


def _open_study(sweeper):
    """The study in the sweeper's storage, or None where there is none yet (or no storage)."""
    import optuna

    if not sweeper.storage or sweeper.storage == "sqlite:///:memory:" or sweeper.study_name is None:
        return None
    try:
        return optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
    except KeyError:  # optuna 2.10: no such study in the storage
        return None


def _completed(study) -> bool:
    import optuna

    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def check_resumed_study(sweeper, arguments: list[str]) -> None:
    """A study resumed with other settings (trainer.max_steps=2, then 3) would mix trials that
    measured different things, and TPE would learn from both: refused in one line. A study
    with no complete trial yet (a mistyped objective.metric, fixed now) has nothing to mix."""
    study = _open_study(sweeper)
    wanted = _directions(sweeper)
    stored = [d.name.lower() for d in study.directions] if study is not None else wanted
    if stored != wanted:  # optuna refuses it in a traceback ("Cannot overwrite study direction")
        raise ConfigError(f"hydra.sweeper.study_name={sweeper.study_name}: the study was created to "
                          f"{' '.join(stored)}, this launch asks to {' '.join(wanted)}; a study's direction cannot "
                          "change: give a new hydra.sweeper.study_name")
    if study is not None:
        _check_search_space(sweeper, study, arguments)
    earlier = study.user_attrs.get(STUDY_SETTINGS) if study is not None else None
    now = _settings(arguments)
    if earlier is None or earlier == now or not _completed(study):
        return
    was, changed = [a for a in earlier if a not in now], [a for a in now if a not in earlier]
    raise ConfigError(f"hydra.sweeper.study_name={sweeper.study_name}: the study's trials ran with "
                      f"{' '.join(was) or 'no such override'}, this launch has {' '.join(changed) or 'none of it'}; "
                      "trials of other settings are not comparable: give the same settings, or a new "
                      "hydra.sweeper.study_name")


def _space(distribution) -> str:
    """A distribution as the line names it: choice(4, 8), LogUniform(low=0.0001, high=0.003)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    fields = ", ".join(f"{k}={v}" for k, v in vars(distribution).items() if not k.startswith("_"))
    return f"{type(distribution).__name__.removesuffix('Distribution')}({fields})"


def _check_search_space(sweeper, study, arguments: list[str]) -> None:
    """A key's choice list or scale (log or linear, int or float) unlike its past trials': optuna
    refuses it only when a trial asks for the key, in a traceback, leaving the trial RUNNING for
    good. New bounds of an interval or range, and keys added or dropped, it takes."""
    from hydra_plugins.hydra_optuna_sweeper import _impl as optuna_impl
    from optuna.distributions import check_distribution_compatibility

    params = [f"{k}={v}" for k, v in (sweeper.params or {}).items()]
    wanted, _ = optuna_impl.create_params_from_overrides(params + list(arguments))
    for trial in study.get_trials(deepcopy=False):
        for key, past in trial.distributions.items():
            if key not in wanted:
                continue
            try:
                check_distribution_compatibility(past, wanted[key])
            except ValueError:
                raise ConfigError(f"hydra.sweeper.study_name={sweeper.study_name}: {key}: the study's trials searched "
                                  f"{_space(past)}, this launch asks {_space(wanted[key])}; a study's choice lists "
                                  "and scales cannot change: give a new hydra.sweeper.study_name") from None


def record_study_settings(sweeper, arguments: list[str]) -> None:
    study = _open_study(sweeper)
    if study is not None and _completed(study) and STUDY_SETTINGS not in study.user_attrs:
        study.set_user_attr(STUDY_SETTINGS, _settings(arguments))


def _objective_missing(job) -> str | None:
    """The line of a job that ran without objective.metric in its metrics (its error.txt), else None."""
    hydra_cfg = getattr(job, "hydra_cfg", None)
    if hydra_cfg is None:
        return None
    error = Path(str(hydra_cfg.hydra.runtime.output_dir)) / "error.txt"
    line = error.read_text().strip() if error.is_file() else ""
    return line if line.startswith("objective.metric:") and OBJECTIVE_MISSING in line else None


class _StudyStopped(Exception):
    """Raised at the next batch's launch, after a batch whose trials lacked objective.metric."""


def _trial_numbers(sweeper) -> set[int]:
    """The numbers of the study's trials so far (none before it exists)."""
    study = _open_study(sweeper)
    return {trial.number for trial in study.get_trials(deepcopy=False)} if study is not None else set()


def _fail_unlaunched_trials(sweeper, earlier: set[int] = frozenset()) -> None:
    """This launch's trials still RUNNING (asked for a batch never launched, or stopped with their
    job by SIGTERM or Ctrl-C): FAIL, not RUNNING for good. ``earlier``: the trials the study held
    before this launch, left alone; a launch beside this one (another machine on the same
    storage) would still lose its running trials: one launch per study."""
    import optuna

    study = _open_study(sweeper)
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)) if study is not None else []:
        if trial.number not in earlier:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


class BasicSweeper(_BasicSweeper):
    """Hydra's sweeper, which composes every job's config before launching any (a key one method
    lacks, swept with another: ``experiment=method_comparison method.r=8``), saying which job's
    does not compose; Hydra's own message names the key only. Each composed config is validated
    too (``method.lr=1e-3,1e-3x``: the typo found before the first job trains, not after)."""

    def sweep(self, arguments):
        # A value list with nothing in it (range(1,1)): Hydra launches 0 jobs and calls that a success.
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for override in parser.parse_overrides(self._parse_config() + list(arguments)):
            if override.is_sweep_override() and override.is_discrete_sweep() and \
                    not list(override.sweep_string_iterator()):
                hint = " (range(start, stop) stops before stop: range(1,2) is 1)" if override.is_range_sweep() else ""
                _stop(f"{override.input_line}: sweeps no value, so the sweep would have no job{hint}", self.config)
        return _stopped_anywhere(self.config.hydra, lambda: super(BasicSweeper, self).sweep(arguments))

    def validate_batch_is_legal(self, batch) -> None:
        for overrides in batch:
            try:
                config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                # A value only the job resolves (${hydra:job.num}) is the job's to check.
                if _resolves_here(config):
                    check_wandb_mode(validate(config).logger)
            except (HydraException, ConfigError) as err:
                discard_unstarted(Path(str(self.config.hydra.sweep.dir)))
                raise ConfigCompositionException(f"sweep job {job_label(overrides, batch)}: "
                                                 f"{config_error_line(err)}") from None


class OptunaSweeper(_OptunaSweeper):
    """The plugin's sweeper with its failures in one line: a bad study setting or search space
    before the study opens (``check_study``), and a study whose trials all failed, which ends in
    the plugin with ``ValueError: Record does not exist`` and a traceback when it asks for the
    best trial. Each failed job's error.txt says why, and the sweep summary still runs after it."""

    def sweep(self, arguments):
        try:
            check_study(self.sweeper, arguments)
            check_resumed_study(self.sweeper, arguments)
        except ConfigError as err:
            _stop(str(err), self.sweeper.config)
        # A trial without objective.metric (a typo): every trial would train and fail alike, so
        # the study stops after that batch (recorded FAIL), not after n_trials runs.
        launcher = self.sweeper.launcher
        launch, missing = launcher.launch, []

        def launch_unless_stopped(job_overrides, initial_job_idx):
            if missing:
                raise _StudyStopped
            returns = launch(job_overrides, initial_job_idx)
            missing.extend(line for line in map(_objective_missing, returns) if line)
            return returns

        launcher.launch = launch_unless_stopped
        earlier = _trial_numbers(self.sweeper)
        try:
            return _stopped_anywhere(self.sweeper.config.hydra, lambda: super(OptunaSweeper, self).sweep(arguments))
        except (SystemExit, KeyboardInterrupt):  # a trial stopped by SIGTERM or Ctrl-C: its job said so
            _fail_unlaunched_trials(self.sweeper, earlier)
            raise
        except _StudyStopped:
            _fail_unlaunched_trials(self.sweeper, earlier)
            print(f"ccexp: Optuna study stopped: {missing[0]}; every trial would train and fail alike",
                  file=sys.stderr, flush=True)
        except ValueError as err:
            # optuna 2.10's study.best_trial with no complete trial: the SQL storage's words, the in-memory one's
            if not any(words in str(err) for words in ("Record does not exist", "No trials are completed yet")):
                raise
            print("ccexp: Optuna study: no trial gave a value of objective.metric, so there are no best "
                  "parameters (each job's error.txt says why)", file=sys.stderr, flush=True)
        finally:
            launcher.launch = launch
            record_study_settings(self.sweeper, arguments)


# hydra.launcher fields sbatch would take as written (--cpus-per-task=-2, --time=0: no limit),
# failing each job only on its node after the queue, or never: (least value, what it is).
SLURM_COUNTS = {"cpus_per_task": 1, "timeout_min": 1, "tasks_per_node": 1, "nodes": 1, "array_parallelism": 1,
                "gpus_per_node": 0, "max_num_timeout": 0}


def check_slurm_resources(params: dict) -> None:
    for key, least in SLURM_COUNTS.items():
        value = params.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise ConfigError(f"hydra.launcher.{key}: expected an integer >= {least}, got {value!r}")
    mem = params.get("mem_gb")
    if mem is not None and not (isinstance(mem, (int, float)) and not isinstance(mem, bool) and mem > 0):
        raise ConfigError(f"hydra.launcher.mem_gb: expected a number of GB > 0 (or null: the partition's "
                          f"default), got {mem!r}")


class SlurmLauncher(_SlurmLauncher):
    """submitit's launcher with its failures in one line: no SLURM here, resources sbatch would
    take as written, sbatch refusing the jobs (a wrong partition, account or QoS); and a job that
    ends without a result (killed at its time limit, out of memory, its node lost), which in the
    plugin raises when the sweep collects the results and loses the whole sweep's summary, is a
    failed job like any other: marked in its dir, counted by the summary."""

    def launch(self, job_overrides, initial_job_idx):
        import submitit
        from submitit.core.utils import FailedJobError

        if shutil.which("srun") is None or shutil.which("sbatch") is None:
            _stop("hydra/launcher=slurm: no SLURM here (srun and sbatch are not on PATH); launch from "
                  "the cluster, or use hydra/launcher=joblib on this machine", self.config)
        try:
            check_slurm_resources(self.params)
        except ConfigError as err:
            _stop(str(err), self.config)
        submit = submitit.AutoExecutor.map_array
        self.started = time.time() - 1.0  # file mtimes can trail the clock by a tick
        submitted = []

        def map_array(executor, fn, overrides, *rest):
            try:
                jobs = submit(executor, fn, overrides, *rest)
            except FailedJobError as err:
                self._discard_refused_submission()
                _stop(f"hydra/launcher=slurm: sbatch refused the sweep's jobs: "
                      f"{_last_line(err).removeprefix('sbatch: error: ')}", self.config)
            submitted.extend(jobs)
            return [_SlurmJob(self, job, job_overrides, num) for job, job_overrides, num in zip(jobs, overrides, rest[1])]

        # The plugin builds its executor inside launch and collects every job's result in one
        # list: the executor's map_array, for this call only, hands it jobs that settle alone.
        def launch():
            with mock.patch.object(submitit.AutoExecutor, "map_array", map_array):
                return super(SlurmLauncher, self).launch(job_overrides, initial_job_idx)

        # kill <this pid> while it waits: said as Ctrl-C is
        return _interruptible(launch, lambda err: self._stopped_waiting(err, submitted))

    def _stopped_waiting(self, err: BaseException, submitted: list) -> None:
        """Ctrl-C or SIGTERM while the sweep waits on its SLURM jobs: they are the cluster's and
        run on (hours of them may be done), so they are not cancelled; one line says how to stop
        them and where their results go, not the plugin's traceback from inside submitit's wait."""
        line, code = interruption(err)
        sweep_dir = self.config.hydra.sweep.dir
        if submitted:
            array = sorted({str(job.job_id).split("_")[0] for job in submitted})
            line = (f"{line.split('; ')[0]} while waiting for the SLURM job {' '.join(array)} "
                    f"({len(submitted)} task{'s' if len(submitted) != 1 else ''}): it runs on (scancel {' '.join(array)} stops it)"
                    f"{'; the study records its trials as failed' if is_study(self.config.hydra) else ''}; "
                    f"the report over what its jobs leave: python -m ccexp.compare {sweep_dir}")
        else:
            line = f"{line.split('; ')[0]} before the SLURM jobs were submitted"
        print(f"ccexp: error: {line}", file=sys.stderr, flush=True)
        sys.exit(code)

    def _discard_refused_submission(self) -> None:
        """What submitit wrote for the jobs sbatch refused (its script and the pickled jobs, in the
        sweep's .submitit/ before a job id names a folder): gone, so that the sweep dir, holding
        nothing else, goes too. An earlier launch's files there are older and kept."""
        folder = Path(str(self.config.hydra.sweep.dir)) / ".submitit"
        try:
            for path in folder.iterdir() if folder.is_dir() else []:
                if path.is_file() and path.stat().st_mtime >= self.started:
                    path.unlink()
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:  # another process writing there: it is theirs
            pass

    def job_dir(self, overrides: list[str], num: int, job_id: str) -> Path:
        """Where job ``num`` ran: the job dir whose Hydra record has its SLURM job id (a subdir
        named by the time, as the Optuna presets name trials, resolves to another name here), the
        latest where a requeued job made several; for a job that never started, its sweep subdir
        as it would have resolved it."""
        sweep_dir, ran = Path(str(self.config.hydra.sweep.dir)), []
        for record in sweep_dir.rglob(".hydra/hydra.yaml"):
            if record.stat().st_mtime < self.started:  # an earlier launch's job in the same dir
                continue
            try:
                job = ((yaml.safe_load(record.read_text()) or {}).get("hydra") or {}).get("job") or {}
            except (OSError, yaml.YAMLError):
                continue
            if str(job.get("id")) == job_id:
                ran.append(record.parent.parent)
        if ran:
            return max(ran, key=lambda d: (d / ".hydra" / "hydra.yaml").stat().st_mtime)
        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config.hydra.job):
                config.hydra.job.num, config.hydra.job.id = num, job_id
            return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        except Exception:  # noqa: BLE001 - a subdir of another kind: the default layout
            return Path(str(self.config.hydra.sweep.dir)) / str(num)


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


# Why a SLURM job ended without a result, by its state ("CANCELLED by 1000": the first word).
_ENDED = {"TIMEOUT": "its time limit, hydra.launcher.timeout_min", "OUT_OF_MEMORY": "out of memory",
          "NODE_FAIL": "its node lost", "CANCELLED": "cancelled: scancel, or the cluster's administrator",
          "PREEMPTED": "preempted by a job of higher priority", "BOOT_FAIL": "its node failed to start",
          "DEADLINE": "past its deadline", "FAILED": "its process failed: a crash, or killed by a signal",
          "COMPLETED": "its process exited without writing a result"}
_ENDED_ANYHOW = "its time limit, out of memory, or its node lost"  # sacct unreachable, or a state not above


class _SlurmJob:
    """A submitted job whose ``results()`` never raises: a job that ended without a result is
    recorded failed in its dir (unless it wrote why itself, as a job stopped by SIGTERM does),
    said in one line, and returned as a failed job's result (None, as ccexp's task returns)."""

    def __init__(self, launcher: SlurmLauncher, job, overrides: list[str], num: int):
        self.launcher, self.job, self.overrides, self.num = launcher, job, overrides, num

    def results(self):
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return self.job.results()
        except (UncompletedJobError, FailedJobError) as err:
            job_dir = self.launcher.job_dir(self.overrides, self.num, str(self.job.job_id))
            try:
                status = json.loads((job_dir / "metrics.json").read_text()).get("status")
            except (OSError, ValueError):
                status = None  # killed before run() wrote one, or never started
            if status in (None, "running"):
                state = self._state()
                why = (f"failed in submitit: {_last_line(err)}" if isinstance(err, FailedJobError) else
                       f"ended without a result (state {state}: "
                       f"{_ENDED.get(state.split()[0] if state else state, _ENDED_ANYHOW)})")
                log = self.job.paths.stderr
                line = f"the SLURM job {self.job.job_id} {why}; " + (
                    f"its log: {log}" if log.is_file() else "it left no log (it never started)")
                record_failure(job_dir, err, line)
                print(f"ccexp: error: {line} (job {self.num}, {job_dir})", file=sys.stderr, flush=True)
            return [JobReturn(overrides=list(self.overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED,
                              _return_value=None)]

    def _state(self) -> str:
        try:
            return self.job.state
        except Exception:  # noqa: BLE001 - sacct unreachable
            return "unknown"


def _counted(task_function, at_once: int, cfg):
    """A job in a joblib worker, told how many jobs run side by side (``threads_per_job``)."""
    os.environ[JOBS_AT_ONCE_ENV] = str(at_once)
    return task_function(cfg)


class JoblibLauncher(_JoblibLauncher):
    """joblib's launcher, telling each job how many jobs run at once: n_jobs=-1 means one per
    core, but a sweep of 2 jobs on 16 cores runs 2, and each can have 8 threads, not 1. (A
    job's config is composed again in the worker from the overrides, so the count travels with
    the task, not in the config.)"""

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._task = task_function

    def launch(self, job_overrides, initial_job_idx):
        n_jobs, timeout = self.joblib.get("n_jobs", -1), self.joblib.get("timeout")
        # joblib's own words for these are a traceback, after the sweep dir was made.
        if n_jobs is not None and (not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0):
            _stop(f"hydra.launcher.n_jobs: expected -1 (a job per core), -2 (all cores but one, and so on) or an "
                  f"integer >= 1, got {n_jobs!r}", self.config)
        backend = self.joblib.get("backend")
        if backend not in (None, "loky"):  # Hydra's plugin runs loky whatever is asked, without a word
            _stop(f"hydra.launcher.backend: expected loky (or null), got {backend!r}: Hydra's joblib launcher runs "
                  "each job in a loky process, its threads being incompatible with Hydra", self.config)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            _stop(f"hydra.launcher.timeout: expected seconds > 0 that joblib waits for each job's result (or null: "
                  f"no limit), got {timeout:g}", self.config)
        at_once = jobs_at_once(1 if n_jobs is None else int(n_jobs), len(job_overrides))  # joblib: None = 1
        self.task_function = functools.partial(_counted, self._task, at_once)
        started = time.time() - 1.0  # file mtimes can trail the clock by a tick
        # kill <this pid> stops the sweep as Ctrl-C does: joblib then stops the workers, where
        # Python's default ended this process alone, without a summary, the workers training on
        restore_sigterm = raise_on_sigterm()
        try:
            return super().launch(job_overrides, initial_job_idx)
        except KeyboardInterrupt as err:  # Ctrl-C reaches this process too
            self._stopped_here(started, err)
        except TerminatedWorkerError as err:
            print(f"ccexp: error: {WORKER_DIED} ({type(err).__name__})", file=sys.stderr, flush=True)
            stop_batch(self.config.hydra, started, err, WORKER_DIED, 1)
        except (TimeoutError, multiprocessing.TimeoutError) as err:  # joblib raises multiprocessing's
            line = f"timed out: a job ran past hydra.launcher.timeout={timeout:g} s, and joblib stopped its batch"
            print(f"ccexp: error: {line}", file=sys.stderr, flush=True)
            stop_batch(self.config.hydra, started, err, line, 1)
        except SystemExit as err:  # a job interrupted in its worker (SIGTERM, Ctrl-C) said so and exited
            from pytorch_lightning.utilities.exceptions import SIGTERMException

            if isinstance(err, SIGTERMException):  # raise_on_sigterm's, in this process
                self._stopped_here(started, err)
            stop_batch(self.config.hydra, started, err, BATCH_STOPPED, err.code if isinstance(err.code, int) else 1)
        finally:
            restore_sigterm()

    def _stopped_here(self, started: float, err: BaseException) -> None:
        """The sweep itself interrupted (Ctrl-C, SIGTERM), joblib having stopped the workers: each
        job without a result is marked with the interruption and how that job goes on."""
        line, code = interruption(err)
        print(f"ccexp: error: {line.split('; ')[0]}; joblib stopped the batch", file=sys.stderr, flush=True)
        stop_batch(self.config.hydra, started, err, None, code)


def store_nodes() -> None:
    """hydra/launcher=joblib and the default hydra/sweeper=basic: the plugins' own fields and
    defaults, with ccexp's classes, stored under their names so that they replace the nodes
    rather than shadowing them with files."""
    ConfigStore.instance().store(group="hydra/launcher", name="joblib", provider="ccexp",
                                 node=JobLibLauncherConf(_target_="hydra_plugins.ccexp_plugins.JoblibLauncher"))
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", provider="ccexp",
                                 node=BasicSweeperConf(_target_="hydra_plugins.ccexp_plugins.BasicSweeper"))


def store_nodes_after_the_scan() -> None:
    """Hydra's plugin scan runs every module under hydra_plugins again, in path order: where the
    joblib plugin's comes after this one (``src`` ahead of site-packages on the path; a wheel,
    whose ``ccexp_plugins`` sorts first), its node replaced ccexp's, and Hydra's own launcher ran
    (n_jobs=0 a traceback, cores not shared). The scan is made now, once (Hydra keeps it), and
    ccexp's nodes stored after it."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    store_nodes()


store_nodes()
