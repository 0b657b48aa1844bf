"""Sweeps: every experiment= and hparams_search= composes and runs on the tiny model, a
multirun shares one W&B group and ends with a report, an Optuna study resumes and survives a
failed trial, and the launcher configs (joblib thread share, SLURM) compose."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import wandb_records
import yaml
from conftest import FAST, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ccexp.__main__ import CONFIG_DIR
from ccexp.compare import compare
from ccexp.config import ConfigError, validate
from ccexp.run import run

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (Path(CONFIG_DIR) / "hparams_search").glob("*.yaml"))
QUICK = ("eval.baseline=false", "eval.generate_examples=2")  # on top of FAST: a job in seconds


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccexp", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


@pytest.fixture
def as_hydra_job():
    """Resolve a composed config as a job would: with its Hydra config set."""
    def resolve(cfg):
        HydraConfig.instance().set_config(cfg)
        return OmegaConf.to_container(cfg.backend, resolve=True)
    yield resolve
    HydraConfig.instance().cfg = None


def test_experiment_and_search_groups_are_populated():
    assert set(EXPERIMENTS) == {"seed_hf_recipe", "qlora_vs_prompt_tuning", "method_comparison", "seed_mlx_small",
                                "small_vs_base"}
    assert set(SEARCHES) == {"lora_optuna", "prompt_tuning_optuna"}


def test_small_vs_base_runs(tmp_path):
    """The first real run's settings, cut to fast ones: its validation cadence and batch caps run."""
    metrics = run(compose_cfg("experiment=small_vs_base", *FAST, *QUICK, "trainer.max_steps=2"), tmp_path)
    assert metrics["status"] == "finished" and metrics["train/steps"] == 2
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (saved["experiment_name"], saved["trainer"]["limit_val_batches"]) == ("small_vs_base", 12)


def test_seed_hf_recipe_is_seed_000():
    rc = validate(compose_cfg("experiment=seed_hf_recipe"))
    assert (rc.method.name, rc.method.r, rc.method.alpha, rc.method.dropout, rc.method.lr) == ("lora", 16, 32, 0.05, 2e-5)
    assert rc.method.target_modules is None and rc.model.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj"]
    t = rc.trainer
    assert (t.max_epochs, t.batch_size, t.grad_accum, t.warmup_ratio, t.weight_decay) == (3, 4, 4, 0.03, 0.01)


def test_sweep_experiments_declare_their_sweep():
    cfg = compose_with_hydra("experiment=qlora_vs_prompt_tuning")
    assert dict(cfg.hydra.sweeper.params) == {"method": "qlora,prompt_tuning"}
    assert cfg.task_mix.name == "reply" and cfg.compare.metric == "test/reply/rougeL"
    assert cfg.method.name == "qlora"  # without -m: one run of the first swept method
    assert "test/reply/*" in cfg.compare.headline and "adapter/size_mb" in cfg.compare.headline
    cfg = compose_with_hydra("experiment=method_comparison")
    assert dict(cfg.hydra.sweeper.params) == {"method": "lora,qlora,prompt_tuning", "task_mix": "all,classification"}


def test_seed_hf_recipe_runs(tmp_path):
    metrics = run(compose_cfg("experiment=seed_hf_recipe", *FAST, *QUICK, "trainer.max_steps=1"), tmp_path)
    assert metrics["status"] == "finished" and metrics["train/steps"] == 1
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["grad_accum"] == 4


def test_qlora_vs_prompt_tuning_jobs_run_and_compare(tmp_path):
    """Each job of the sweep, run in-process, then the report over both."""
    methods = compose_with_hydra("experiment=qlora_vs_prompt_tuning").hydra.sweeper.params.method.split(",")
    for method in methods:
        metrics = run(compose_cfg("experiment=qlora_vs_prompt_tuning", f"method={method}", *FAST, *QUICK,
                                  "trainer.max_steps=2"), tmp_path / method)
        assert metrics["status"] == "finished" and "test/reply/acc" in metrics
    report = compare([tmp_path], plots=False)
    assert report["swept"] == ["method.name"]
    assert {"test/reply/acc", "val/loss", "adapter/size_mb"} <= set(report["columns"])
    assert report["best"]["adapter/size_mb"] == {"prompt_tuning"}  # a soft prompt is the smaller adapter


def test_method_comparison_sweep(tmp_path):
    """The three methods as one multirun: a job dir each, one W&B group (offline), a report."""
    sweep_dir = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    # An objective this task mix does not compute: nothing in a plain sweep reads it, so the
    # jobs stand, each with a warning.
    proc = cli("-m", "experiment=method_comparison", "task_mix=classification", *FAST, *QUICK,
               "objective.metric=test/csat/mae", "logger=wandb", "logger.mode=offline", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ccexp: sweep {sweep_dir}: 3 jobs: 3 finished, 0 failed" in proc.stdout
    assert proc.stderr.count("ccexp: warning: objective.metric: 'test/csat/mae' is not among this run's metrics") == 3
    groups, methods, names = set(), [], []
    for job in ("0", "1", "2"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["status"] == "finished"
        run_file = next((sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb"))
        record = next(r.run for r in wandb_records.records(run_file) if r.WhichOneof("record_type") == "run")
        groups.add(record.run_group)
        methods += [t for t in record.tags if t.startswith("method=")]
        names.append(record.display_name)
    assert groups == {"2026-01-01_10-00-00"}
    # Named by what sets each job apart, not the command line all three share.
    assert names == ["method=lora", "method=qlora", "method=prompt_tuning"]
    assert methods == ["method=lora", "method=qlora", "method=prompt_tuning"]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (3, 3, 0)
    md = (sweep_dir / "compare.md").read_text()
    assert "## Recommendation" in md and "| `2` | finished | prompt_tuning |" in md
    for png in ("per_field_accuracy.png", "tradeoff.png", "training_curves.png"):
        assert (sweep_dir / png).is_file(), png


def test_a_sweep_job_whose_config_does_not_compose_is_named(tmp_path):
    """method.r swept with the three methods: prompt tuning has no rank. Hydra composes every job
    before launching any; the line says which job, not only which key."""
    sweep = tmp_path / "sweep"
    proc = cli("-m", "experiment=method_comparison", "method.r=8", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ccexp: error: sweep job method=prompt_tuning task_mix=all: method.r: not a key of the config (did you mean "
        "method.lr or method.name?); method=lora and method=qlora have it"]
    assert not sweep.exists()  # not even Hydra's multirun.yaml: no empty sweep left behind


def test_a_sweep_dir_run_again_reports_this_launch(tmp_path):
    """The same hydra.sweep.dir launched twice: the second report ranks its own job, not the one
    the first launch left behind, and job 0's dir loses the first launch's error.txt."""
    common = ("-m", *FAST, "eval.baseline=false", "eval.generate_examples=0", "eval.latency_examples=0",
              f"hydra.sweep.dir={tmp_path}")
    first = cli(*common, f"trainer.resume_from={tmp_path / 'nowhere'},null")  # job 0 fails as it starts
    assert first.returncode == 1 and (tmp_path / "0" / "error.txt").is_file(), first.stderr[-3000:]
    second = cli(*common, "method.r=8")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (f"ccexp: compare: the report covers this launch's 1 job, not the 1 run an earlier launch left in "
            f"{tmp_path} (1)") in second.stderr
    assert not (tmp_path / "0" / "error.txt").exists() and not (tmp_path / "0" / "traceback.txt").exists()
    md = (tmp_path / "compare.md").read_text()
    assert f"# Comparison: `{tmp_path / '0'}`" in md and "`1`" not in md


@pytest.mark.parametrize("name", SEARCHES)
def test_hparams_search_composes(name, tmp_path):
    cfg = compose_with_hydra(f"hparams_search={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize" and sweeper.max_failure_rate == 1.0
    assert sweeper.storage == f"sqlite:///multirun/optuna/{sweeper.study_name}/optuna.db"
    assert "method.lr" in sweeper.params and cfg.method.name == name.removesuffix("_optuna")
    rc = validate(cfg)
    assert (rc.compare.metric, rc.compare.direction) == ("val/loss", "minimize")  # the report ranks what was tuned
    # Its search space as the study checks it before opening: every searched key and value (only
    # lora_optuna ever runs below; a typo in another's key or a range was caught by no test).
    from hydra_plugins.ccexp_plugins import check_study

    check_study(_study(cfg, tmp_path), [])
    assert compose_with_hydra(f"hparams_search={name}", "objective.direction=maximize").hydra.sweeper.direction == "maximize"


def test_optuna_study_resumes_and_survives_a_failed_trial(tmp_path):
    """Two trials; the same command again adds a third (here a failing one: the same override,
    the checkpoint it reads from the environment one that is not there) to the same study.
    Another setting on resuming is refused."""
    common = ("-m", "hparams_search=lora_optuna", *FAST, "eval.baseline=false", "eval.generate_examples=0",
              "trainer.resume_from=${oc.env:CCEXP_TEST_RESUME,null}", f"hydra.sweep.dir={tmp_path}")
    first = cli(*common, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = cli(*common, "hydra.sweeper.n_trials=1", CCEXP_TEST_RESUME=str(tmp_path / "nowhere"))
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"ccexp: sweep {tmp_path}: 1 job: 0 finished, 1 failed" in second.stderr
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] == study.best_value
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/metrics.json"))
    assert statuses == ["failed", "finished", "finished"]  # one dir per trial, none overwritten
    other = cli(*common[:-1], "trainer.max_steps=3", common[-1], "hydra.sweeper.n_trials=1")
    assert other.returncode == 2, other.stderr[-3000:]
    assert other.stderr.splitlines()[-1].startswith(
        "ccexp: error: hydra.sweeper.study_name=lora: the study's trials ran with no such override, this launch has "
        "trainer.max_steps=3; trials of other settings are not comparable")
    assert len(optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 3


def test_a_trial_whose_objective_has_no_number_fails_everywhere(tmp_path):
    """Optuna records a trial whose objective is null (no answer gave a number) or NaN (a diverged
    run) as failed; its job said "finished", the summary "0 failed", the exit code 0."""
    proc = cli("-m", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=1", *FAST, "eval.baseline=false",
               "objective.metric=test/csat/mae", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"ccexp: sweep {tmp_path}: 1 job: 0 finished, 1 failed" in proc.stderr
    [job] = [p.parent for p in tmp_path.glob("*/error.txt")]
    assert (job / "error.txt").read_text() == (
        "objective.metric: test/csat/mae is null in this run's metrics (no answer gave a number), not a value to "
        "optimise; the Optuna trial is recorded as failed\n")
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["test/csat/mae"] is None  # the run's numbers stay
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_an_objective_no_run_reports_stops_the_study_in_one_line(tmp_path):
    """A typo in objective.metric: the first trial fails saying so (with the close keys), and the
    study stops there, since every trial would train and fail alike."""
    proc = cli("-m", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=3", "objective.metric=val/los", *FAST,
               "eval.baseline=false", "eval.generate_examples=0", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = ("objective.metric: 'val/los' is not among this run's metrics (did you mean val/loss or val/ppl?); a "
             "sweep gets no value from it\n")
    [job] = [p.parent for p in tmp_path.glob("*/error.txt")]
    assert (job / "error.txt").read_text() == error
    assert "ccexp: Optuna study stopped: objective.metric: 'val/los' is not among" in proc.stderr
    assert f"ccexp: sweep {tmp_path}: 1 job: 0 finished, 1 failed" in proc.stderr
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]  # the second asked, never launched: not RUNNING
    # Fixed, the same study runs: it had no complete trial, so nothing of other settings to mix.
    fixed = cli("-m", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=1", *FAST, "eval.baseline=false",
                "eval.generate_examples=0", f"hydra.sweep.dir={tmp_path}")
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def _study(cfg, tmp_path, **change):
    """The plugin's sweeper state as ``check_study`` sees it after ``setup``."""
    sweeper = cfg.hydra.sweeper
    state = dict(config=cfg, params=sweeper.params, n_trials=sweeper.n_trials, n_jobs=sweeper.n_jobs,
                 direction=sweeper.direction, storage=f"sqlite:///{tmp_path}/optuna.db")
    return SimpleNamespace(**{**state, **change})


@pytest.mark.parametrize("change,error", [
    ({"n_trials": 0}, "hydra.sweeper.n_trials: expected an integer >= 1, got 0"),
    ({"n_jobs": -1}, "hydra.sweeper.n_jobs: expected an integer >= 1, got -1"),
    ({"direction": "up"}, "objective.direction (the study's hydra.sweeper.direction): expected minimize or maximize, "
                          "got 'up'"),
    ({"storage": "sqlite:////nonexistent/dir/x.db"},
     "hydra.sweeper.storage: sqlite:////nonexistent/dir/x.db: /nonexistent/dir is not a folder this user can write to"),
    ({"storage": "postgresql://optuna@db/studies"},
     "hydra.sweeper.storage: postgresql://optuna@db/studies: No module named 'psycopg2' (expected sqlite:///<file>, "
     "or a database URL whose driver is installed)"),
    ({"storage": "optuna.db"}, "hydra.sweeper.storage: optuna.db: Could not parse SQLAlchemy URL from string "
                               "'optuna.db' (expected sqlite:///<file>, or a database URL whose driver is installed)"),
    ({"params": {"method.lr": "tag(log, interval(3e-3, 1e-4))"}},
     "hydra.sweeper.params: method.lr=tag(log, interval(3e-3, 1e-4)): The `low` value must be smaller than or equal "
     "to the `high` value (low=0.003, high=0.0001)."),
    ({"params": {"method.lr": "tag(log, interval(0, 3e-3))"}},
     "hydra.sweeper.params: method.lr=tag(log, interval(0, 3e-3)): The `low` value must be larger than 0 for a log "
     "distribution (low=0.0, high=0.003)."),
    ({"params": {"method.lr": "interval(0.2"}},
     "hydra.sweeper.params: method.lr=interval(0.2: no viable alternative at input 'interval(0.2'"),
    ({"params": {"method.rr": "choice(4, 8)"}},
     "hydra.sweeper.params: method.rr is not a key of the config (did you mean method.r or method.lr or method?)"),
])
def test_a_bad_study_is_refused_in_one_line_before_it_opens(change, error, tmp_path):
    """What the plugin fails on with a traceback (optuna's range checks, n_jobs=0 dividing), or
    only after a trial started (an unknown key: a trial left RUNNING in the study for good)."""
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna")
    check_study(_study(cfg, tmp_path), ["method.r=8", "+new_key=1", "compare.headline.0=val/loss"])  # as shipped
    with pytest.raises(ConfigError) as err:
        check_study(_study(cfg, tmp_path, **change), [])
    assert str(err.value) == error
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("overrides,error", [
    # every trial would be refused alike, n_trials times, each a FAIL in the study
    (["method.r=0"], "method.r: expected an integer >= 1, got 0"),
    # and this one after the study had stored "maximize" for good (the fixed command then failed on it)
    (["objective.direction=maximize"], "objective.direction: maximize, but lower val/loss is better; expected "
                                       "objective.direction=minimize"),
    # the plugin's own key, under objective.direction: it maximised val/loss while the report minimised it
    (["hydra.sweeper.direction=maximize"], "hydra.sweeper.direction=maximize, but objective.direction=minimize: "
                                           "the study optimises objective.metric; set objective.direction instead"),
])
def test_what_every_trial_would_fail_on_is_refused_before_the_study_opens(overrides, error, tmp_path):
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna", *overrides)
    with pytest.raises(ConfigError) as err:
        check_study(_study(cfg, tmp_path), [])
    assert str(err.value) == error
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("override", ["seed=${hydra:job.num}", "method.dropout=${oc.env:CCEXP_TEST_UNSET_ON_PURPOSE}"])
def test_a_value_read_from_the_jobs_runtime_is_left_to_its_trials(override, tmp_path):
    """${hydra:job.num}, or a variable only a SLURM node sets, resolves in the job, not in the
    sweeper: the check before the study opens leaves such a config to the trials."""
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna", override)
    check_study(_study(cfg, tmp_path), [])


def test_a_mistyped_interpolation_is_still_refused_before_the_study_opens(tmp_path):
    """Only a value the job's runtime resolves is left to the trials: ${method.dropoutt} is a
    typo every trial would fail on."""
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna", "method.dropout=${method.dropoutt}")
    with pytest.raises(ConfigError, match=r"^method\.dropout"):
        check_study(_study(cfg, tmp_path), [])


def test_a_study_without_a_direction_is_one_line(tmp_path):
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna")
    with pytest.raises(ConfigError) as err:
        check_study(_study(cfg, tmp_path, direction=[]), [])
    assert str(err.value) == "objective.direction (the study's hydra.sweeper.direction): expected minimize or " \
                             "maximize, got []"


def test_a_resumed_study_keeps_its_direction(tmp_path):
    """optuna refuses another direction for a stored study in a traceback ("Cannot overwrite study
    direction"); hydra.sweeper.* is no setting the resume check compared."""
    from hydra_plugins.ccexp_plugins import check_resumed_study

    cfg = compose_with_hydra("hparams_search=lora_optuna", "objective.metric=test/acc", "objective.direction=maximize")
    optuna.create_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db", direction="minimize")
    with pytest.raises(ConfigError) as err:
        check_resumed_study(_study(cfg, tmp_path, study_name="lora"), [])
    assert str(err.value) == ("hydra.sweeper.study_name=lora: the study was created to minimize, this launch asks "
                              "to maximize; a study's direction cannot change: give a new hydra.sweeper.study_name")


def test_a_bad_study_setting_stops_the_search_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=0", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr == "ccexp: error: hydra.sweeper.n_trials: expected an integer >= 1, got 0\n"
    assert not sweep.exists()  # made for the study's SQLite file; nothing in it


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is here")
def test_slurm_without_slurm_is_one_line(tmp_path):
    proc = cli("-m", "hydra/launcher=slurm", *FAST, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr == (
        "ccexp: error: hydra/launcher=slurm: no SLURM here (srun and sbatch are not on PATH); launch from the "
        "cluster, or use hydra/launcher=joblib on this machine\n")


def test_joblib_launcher_shares_the_cores(as_hydra_job):
    cores = len(os.sched_getaffinity(0))
    backend = as_hydra_job(compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    assert backend["num_threads"] == max(1, cores // min(2, cores))
    assert as_hydra_job(compose_with_hydra("hydra/launcher=joblib"))["num_threads"] == 1  # n_jobs -1: a job per core
    assert as_hydra_job(compose_with_hydra())["num_threads"] is None  # one job at a time: all cores
    assert as_hydra_job(compose_with_hydra("hydra/launcher=joblib", "backend.num_threads=3"))["num_threads"] == 3


def test_a_joblib_job_alone_gets_every_core(tmp_path):
    """The real launcher: a one-job sweep with n_jobs=-1 runs one job at a time, and its worker
    (the count pickled with the task) resolves backend.num_threads to all the cores, not
    cores // cores."""
    proc = cli("-m", "hydra/launcher=joblib", *FAST, "eval.baseline=false", "eval.generate_examples=0",
               "eval.latency_examples=0", "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deprecated" not in proc.stderr  # the launcher's node replaces the plugin's, no schema matching
    config = yaml.safe_load((tmp_path / "0" / "config.yaml").read_text())
    assert config["backend"]["num_threads"] == len(os.sched_getaffinity(0))


def test_joblib_jobs_share_the_cores_they_really_run_on(as_hydra_job, monkeypatch):
    """n_jobs=-1 on 16 cores: a sweep of 2 jobs runs 2 at once, 8 threads each (not 1 each, as
    16 at once would have); ccexp's launcher hands each job that count."""
    import hydra_plugins.ccexp_plugins as plugins

    from ccexp import cores

    monkeypatch.setattr(cores, "available_cores", lambda: 16)
    assert [cores.jobs_at_once(-1, n) for n in (1, 2, 40)] == [1, 2, 16]
    assert [cores.jobs_at_once(n, 3) for n in (-2, 2, 0)] == [3, 2, 1]
    launched = []
    monkeypatch.setattr(plugins._JoblibLauncher, "launch", lambda self, overrides, idx: launched.append(
        self.task_function(None)))
    launcher = plugins.JoblibLauncher(n_jobs=-1)
    launcher.setup(hydra_context=None, task_function=lambda cfg: os.environ[cores.JOBS_AT_ONCE_ENV], config=None)
    monkeypatch.setenv(cores.JOBS_AT_ONCE_ENV, "")  # restored after the test
    launcher.launch([["method=lora"], ["method=qlora"]], 0)
    launcher.launch([["method=lora"]], 2)  # an Optuna study's last, smaller batch
    assert launched == ["2", "1"]
    monkeypatch.setenv(cores.JOBS_AT_ONCE_ENV, "2")
    assert as_hydra_job(compose_with_hydra("hydra/launcher=joblib"))["num_threads"] == 8


def test_slurm_launcher_composes(as_hydra_job):
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.ccexp_plugins.SlurmLauncher"  # submitit's, checking for SLURM first
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.mem_gb) == ("gpu", 240, 1, 64)
    assert as_hydra_job(cfg)["num_threads"] == launcher.cpus_per_task == 8
    # A job killed at its time limit is requeued only where it resumes itself; else it would start over.
    assert (launcher.name, launcher.max_num_timeout) == ("ccexp", 0)
    assert compose_with_hydra("hydra/launcher=slurm", "trainer.resume_from=auto").hydra.launcher.max_num_timeout == 0
    assert compose_with_hydra("hydra/launcher=slurm", "trainer.resume_from=auto",  # checkpoints to resume from
                              "trainer.save_every_n_steps=100").hydra.launcher.max_num_timeout == 3


@pytest.mark.parametrize("override,error", [
    ("hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs: expected -1 (a job per core), -2 (all cores but one, and so "
                                "on) or an integer >= 1, got 0"),
    ("hydra.launcher.timeout=-1", "hydra.launcher.timeout: expected seconds > 0 that joblib waits for each job's "
                                  "result (or null: no limit), got -1"),
    # A typed field of the launcher's schema: Hydra's own line named the override only.
    ("hydra.launcher.n_jobs=abc", "hydra.launcher.n_jobs: expected an integer, got abc"),
    ("hydra.launcher.backend=threading", "hydra.launcher.backend: expected loky (or null), got 'threading': Hydra's "
                                         "joblib launcher runs each job in a loky process, its threads being "
                                         "incompatible with Hydra"),
])
def test_joblib_refusals_are_one_line(tmp_path, override, error):
    sweep = tmp_path / "multirun" / "2026-12-07" / "10-00-00"
    proc = cli("-m", "hydra/launcher=joblib", *FAST, "method=lora,prompt_tuning", override, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2 and proc.stderr == f"ccexp: error: {error}\n"
    # No empty sweep left behind (Hydra had written its multirun.yaml), nor its date folder.
    assert not (tmp_path / "multirun" / "2026-12-07").exists()


def test_ccexps_joblib_launcher_whatever_the_order_hydra_scans_plugins_in(tmp_path):
    """Hydra's plugin scan runs each hydra_plugins module again in path order: with src ahead of
    site-packages (or a wheel, where ccexp_plugins sorts first) the joblib plugin's node came
    last and replaced ccexp's, and n_jobs=0 was joblib's ValueError traceback."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = cli("-m", "hydra/launcher=joblib", *FAST, "hydra.launcher.n_jobs=0", f"hydra.sweep.dir={tmp_path / 's'}",
               PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 2 and proc.stderr.startswith("ccexp: error: hydra.launcher.n_jobs: expected -1"), \
        proc.stderr[-2000:]


def test_a_joblib_batch_past_its_timeout_is_failed_jobs_and_a_summary(tmp_path):
    """hydra.launcher.timeout: joblib stops the batch with multiprocessing's TimeoutError and a
    traceback, leaving job dirs with no record; the jobs are failed with why, then the summary."""
    proc = cli("-m", "hydra/launcher=joblib", *FAST, *QUICK, "method=lora,prompt_tuning", "hydra.launcher.timeout=2",
               f"hydra.sweep.dir={tmp_path}")
    line = "timed out: a job ran past hydra.launcher.timeout=2 s, and joblib stopped its batch"
    assert proc.returncode == 1 and f"ccexp: error: {line}\n" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    # A worker that had not made its job dir when the timeout fired (a loaded machine starts them
    # slowly) leaves a job the summary lists as not started; every job is one or the other.
    assert [(job["status"], job["error"]) for job in summary["runs"]] == [("failed", line)] * len(summary["runs"])
    started = {job["dir"] for job in summary["runs"]}
    assert started | {job["dir"] for job in summary.get("not_started", [])} == {"0", "1"}
    for name in started:
        assert (tmp_path / name / "error.txt").read_text() == line + "\n"


FAKE_SLURM = Path(__file__).parent / "fixtures" / "fake_slurm"  # sbatch, sacct, srun, ... stand-ins


def fake_slurm(tmp_path: Path, **env: str) -> dict:
    return {"PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(tmp_path / "slurm"),
            "FAKE_SLURM_PYTHON": sys.executable, **env}


def test_a_slurm_job_that_ends_without_a_result_is_a_failed_job(tmp_path):
    """A job killed at its time limit, out of memory or with its node, leaves no result: in the
    plugin, collecting the results raised and lost the whole sweep's summary. On a stand-in
    cluster whose second job's node is lost: that job is failed, the other's results stand."""
    sweep = tmp_path / "sweep"
    proc = cli("-m", "hydra/launcher=slurm", *FAST, *QUICK, "method=lora,prompt_tuning", f"hydra.sweep.dir={sweep}",
               **fake_slurm(tmp_path, FAKE_SLURM_LOST="1"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = "the SLURM job 4242_1 ended without a result (state NODE_FAIL: its node lost); it left no log (it never started)"
    assert f"ccexp: error: {line} (job 1, {sweep / '1'})" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(job["dir"], job["status"]) for job in summary["runs"]] == [("0", "finished"), ("1", "failed")]
    assert summary["runs"][1]["error"] == line == (sweep / "1" / "error.txt").read_text().strip()
    assert (sweep / "compare.md").is_file() and (sweep / "0" / "adapter").is_dir()


@pytest.mark.parametrize("signal_name,code,said", [("SIGINT", 130, "interrupted (Ctrl-C)"),
                                                   ("SIGTERM", 143, "interrupted by SIGTERM (kill, or a scheduler's time limit)")])
def test_a_slurm_sweep_stopped_while_it_waits_is_one_line(tmp_path, signal_name, code, said):
    """Ctrl-C (or kill) while the sweep waits on its queued SLURM jobs: a traceback from inside
    submitit's wait, before. One line: the jobs run on, how to stop them, where their report comes from."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "ccexp", "-m", "hydra/launcher=slurm", *FAST, "method=lora,prompt_tuning",
                             f"hydra.sweep.dir={sweep}"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **fake_slurm(tmp_path, FAKE_SLURM_PENDING="1")},
                            # Ctrl-C reaches it even where this runs in the background (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(600):  # submitit pickles the jobs once sbatch has queued them
        if (sweep / ".submitit" / "4242_1" / "4242_1_submitted.pkl").is_file() or proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(getattr(signal, signal_name))
    stderr = proc.communicate(timeout=300)[1]  # SIGTERM's handler imports Lightning: slow on a busy machine
    assert proc.returncode == code and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        f"ccexp: error: {said} while waiting for the SLURM job 4242 (2 tasks): it runs on (scancel 4242 stops it); "
        f"the report over what its jobs leave: python -m ccexp.compare {sweep}")


@pytest.mark.parametrize("override,error", [
    ("hydra.launcher.partition=gpux", "hydra/launcher=slurm: sbatch refused the sweep's jobs: Batch job submission "
                                      "failed: Invalid partition name specified"),
    ("hydra.launcher.cpus_per_task=-2", "hydra.launcher.cpus_per_task: expected an integer >= 1, got -2"),
    ("hydra.launcher.timeout_min=0", "hydra.launcher.timeout_min: expected an integer >= 1, got 0"),
    ("hydra.launcher.mem_gb=-1", "hydra.launcher.mem_gb: expected a number of GB > 0 (or null: the partition's "
                                 "default), got -1"),
])
def test_slurm_refusals_are_one_line(tmp_path, override, error):
    """What sbatch would take as written (--cpus-per-task=-2 fails each job on its node after the
    queue; --time=0 is no limit), and sbatch refusing the jobs: one line, before any job runs."""
    refuse = {"FAKE_SLURM_REFUSE": "Invalid partition name specified"} if "partition" in override else {}
    proc = cli("-m", "hydra/launcher=slurm", *FAST, "method=lora,prompt_tuning", override,
               f"hydra.sweep.dir={tmp_path / 'sweep'}", **fake_slurm(tmp_path, **refuse))
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == f"ccexp: error: {error}"
    assert "Traceback" not in proc.stderr and not (tmp_path / "slurm").exists()
    assert not (tmp_path / "sweep").exists()  # nor Hydra's multirun.yaml, nor the refused sbatch script


# A job that sends itself SIGTERM (kill, SLURM's time limit) or Ctrl-C at its third training step,
# through Lightning's own handling of both: `python -m ccexp` with the step patched.
_INTERRUPTING = """
import os, signal, sys
from hydra.core.hydra_config import HydraConfig
from ccexp.backends.lightning_modules import CompletionLM
how = sys.argv.pop()
step = CompletionLM.training_step
def interrupting(self, batch, batch_idx):
    stopping = self.global_step == 2 and HydraConfig.get().job.num == 1 and how != "SIGTERM in evaluation"
    if stopping:
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise KeyboardInterrupt
    loss = step(self, batch, batch_idx)
    if stopping:  # SIGTERM ends a step at its end, not in the middle
        print("the step signalled in ran on", file=sys.stderr)
    return loss
CompletionLM.training_step = interrupting
import ccexp.run
evaluate = ccexp.run.evaluate
def interrupted_evaluation(*args, **kwargs):  # SIGTERM after training, outside Lightning's own handling
    if how == "SIGTERM in evaluation" and HydraConfig.get().job.num == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(*args, **kwargs)
ccexp.run.evaluate = interrupted_evaluation
build_logger = ccexp.run.build_logger
def interrupted_setup(*args, **kwargs):  # SIGTERM while the job is set up (its model loading, a 7B's minutes)
    if how == "SIGTERM in setup" and HydraConfig.get().job.num == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return build_logger(*args, **kwargs)
ccexp.run.build_logger = interrupted_setup
import ccexp.sweep
run_name = ccexp.sweep.run_name
def interrupted_before_the_run(hydra, multirun):  # SIGTERM as Hydra starts the job, before its run
    if how == "SIGTERM between jobs" and hydra.job.num == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return run_name(hydra, multirun)
ccexp.sweep.run_name = interrupted_before_the_run
from ccexp.__main__ import cli
cli()
"""


@pytest.mark.parametrize("how,code", [("SIGTERM", 143), ("Ctrl-C", 130), ("SIGTERM in evaluation", 143)])
def test_an_interrupted_sweep_says_so_and_writes_its_summary(tmp_path, how, code):
    """SIGTERM or Ctrl-C in the second job: that job's error names the interruption and how to
    resume, the sweep's summary and report cover the jobs that ran, the exit code is 143 or 130
    (not Lightning's 0 for SIGTERM), and the third job never starts. SIGTERM after training too,
    where Python's default ended the process with the job's metrics.json saying "running"."""
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTING, "-m", "method=lora,qlora,prompt_tuning", *FAST, *QUICK,
                           "trainer.max_steps=4", f"hydra.sweep.dir={tmp_path}", how],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    hint = (f"training had finished (4 steps, adapter/ saved): python -m ccexp.evaluate adapter={tmp_path / '1'} "
            "evaluates it" if how == "SIGTERM in evaluation" else
            "no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed")
    line = ("interrupted by SIGTERM (kill, or a scheduler's time limit)" if how.startswith("SIGTERM") else
            "interrupted (Ctrl-C)") + f"; {hint}"
    assert (tmp_path / "1" / "error.txt").read_text() == line + "\n"
    assert json.loads((tmp_path / "1" / "metrics.json").read_text())["error"] == line
    assert ("the step signalled in ran on" in proc.stderr) == (how == "SIGTERM")
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (2, 1, 1)
    assert summary["not_started"] == [{"dir": "2", "overrides": "method=prompt_tuning"}]
    assert "; the sweep stopped there, 1 job not started (method=prompt_tuning)" in proc.stderr
    assert not (tmp_path / "2").exists()
    report = (tmp_path / "compare.md").read_text()
    assert "`2` (method=prompt_tuning): not started" in report
    assert f"ccexp: sweep {tmp_path}: 2 jobs: 1 finished, 1 failed (job 1: {line};" in proc.stderr


_STOPPING_WORKER = """
import os, signal
from hydra.core.hydra_config import HydraConfig
from ccexp.backends.lightning_modules import CompletionLM
step = CompletionLM.training_step
def stopping(self, batch, batch_idx):
    if self.global_step == 1 and HydraConfig.get().job.num == 1:
        os.kill(os.getpid(), getattr(signal, os.environ["CCEXP_TEST_SIGNAL"]))
    return step(self, batch, batch_idx)
CompletionLM.training_step = stopping
"""


def _joblib_sweep_with_hook(tmp_path, hook: str, signal_name: str, **popen):
    """A two-job joblib sweep whose processes run ``hook`` as sitecustomize.py (joblib starts its
    workers as fresh interpreters, which a monkeypatch would not reach): (process, sweep dir)."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(hook)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]),
           "CCEXP_TEST_SIGNAL": signal_name}
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "ccexp", "-m", "method=lora,qlora", "hydra/launcher=joblib",
                           "hydra.launcher.n_jobs=2", *FAST, *QUICK, "trainer.max_steps=4", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, timeout=600, env=env, **popen)
    return proc, sweep


@pytest.mark.parametrize("signal_name,code", [("SIGKILL", 1), ("SIGTERM", 143)])
def test_a_joblib_job_stopped_in_its_worker_ends_the_sweep_in_one_line(tmp_path, signal_name, code):
    """A joblib worker killed (SIGKILL: the out-of-memory killer) or its job interrupted (SIGTERM):
    joblib stops the batch, with a traceback of its own; the sweep instead marks the jobs that had
    no result as failed with one line saying why, writes its summary and report, and exits 1 or
    143. (A sitecustomize.py patches the training step in the workers, which joblib starts as
    fresh interpreters.)"""
    from ccexp.sweep import BATCH_STOPPED, WORKER_DIED

    proc, sweep = _joblib_sweep_with_hook(tmp_path, _STOPPING_WORKER, signal_name)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    why = WORKER_DIED if signal_name == "SIGKILL" else \
        "interrupted by SIGTERM (kill, or a scheduler's time limit); no checkpoint was saved " \
        "(trainer.save_every_n_steps), so it cannot be resumed"
    assert (sweep / "1" / "error.txt").read_text() == why + "\n"
    other = (sweep / "0" / "error.txt").read_text().strip() if (sweep / "0" / "error.txt").exists() else "finished"
    assert other in ("finished", WORKER_DIED, BATCH_STOPPED)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["jobs"] == 2 and summary["failed"] == 2 - (other == "finished")
    assert (sweep / "compare.md").is_file()


_STOPPING_THE_SWEEP = """
import os, signal, time
from hydra.core.hydra_config import HydraConfig
from ccexp.backends.lightning_modules import CompletionLM
step = CompletionLM.training_step
def stopping(self, batch, batch_idx):
    if self.global_step == 1 and HydraConfig.get().job.num == 1:
        if os.environ["CCEXP_TEST_SIGNAL"] == "SIGINT":  # Ctrl-C in a terminal: the sweep's whole process group
            os.killpg(os.getpgid(0), signal.SIGINT)
        else:  # kill <the sweep's pid>
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(30)
    return step(self, batch, batch_idx)
CompletionLM.training_step = stopping
"""


@pytest.mark.parametrize("signal_name,code,line", [
    ("SIGINT", 130, "interrupted (Ctrl-C)"), ("SIGTERM", 143, "interrupted by SIGTERM (kill, or a scheduler's time limit)")])
def test_a_joblib_sweep_stopped_in_its_main_process_ends_in_one_line(tmp_path, signal_name, code, line):
    """Ctrl-C reaches the sweep's main process too, and kill its pid that process only: joblib's
    traceback with no summary, the jobs left saying "running" (or, on SIGTERM, the workers
    training on, orphaned). Now the batch stops, each job without a result says how it goes on,
    and the summary and report are written."""
    # its own process group: the Ctrl-C it sends the group must not reach pytest
    proc, sweep = _joblib_sweep_with_hook(tmp_path, _STOPPING_THE_SWEEP, signal_name, start_new_session=True)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (sweep / "1" / "error.txt").read_text() == \
        f"{line}; no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed\n"
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["jobs"] == 2 and summary["runs"][1]["status"] == "failed"
    assert (sweep / "compare.md").is_file()


def test_a_studys_settings_are_what_its_trials_measure():
    """One spelling per setting (1e-3 is 0.001, quotes and + change nothing); the search space,
    logging, judging and Hydra's own overrides are no settings of the study."""
    from hydra_plugins.ccexp_plugins import _settings

    one = _settings(["method.dropout=1e-3", "objective.metric='val/loss'", "+trainer.max_steps=3", "logger=csv",
                     "method.lr=interval(1e-4,1e-3)", "compare.metric=test/acc", "hydra.sweeper.n_trials=2"])
    other = _settings(["trainer.max_steps=3", "method.dropout=0.001", "objective.metric=val/loss", "logger=none",
                       "hydra/launcher=joblib"])
    assert one == other == ["method.dropout=0.001", "objective.metric='val/loss'", "trainer.max_steps=3"]
    assert _settings(["trainer.max_steps=2", "method.dropout=0.1", "trainer.max_steps=3"]) == \
        _settings(["method.dropout=0.1", "trainer.max_steps=3"])  # a key given twice: Hydra takes the last


def test_a_slurm_jobs_dir_is_found_by_its_job_id(tmp_path):
    """The Optuna presets name a trial's dir by the time (${now:...}_num): resolved again when the
    results are collected, it would name another dir, and a lost job be recorded twice. The dir
    whose Hydra record has the job's SLURM id is the one it ran in (the latest, after a requeue)."""
    from hydra_plugins.ccexp_plugins import SlurmLauncher

    for name, job_id in (("2026-12-07_04-00-00_0", "4242_0"), ("2026-12-07_04-00-01_1", "4242_1")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"id": job_id}}}))
    launcher = SlurmLauncher.__new__(SlurmLauncher)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path), "subdir": "later_${hydra.job.num}"}}})
    launcher.hydra_context, launcher.started = None, 0.0
    assert launcher.job_dir(["method=lora"], 1, "4242_1") == tmp_path / "2026-12-07_04-00-01_1"
    assert launcher.job_dir(["method=lora"], 2, "4242_2") == tmp_path / "2"  # never started: the default layout


@pytest.mark.parametrize("state,why", [("TIMEOUT", "its time limit, hydra.launcher.timeout_min"),
                                       ("CANCELLED by 1000", "cancelled: scancel, or the cluster's administrator"),
                                       ("OUT_OF_MEMORY", "out of memory"),
                                       ("FAILED", "its process failed: a crash, or killed by a signal"),
                                       ("unknown", "its time limit, out of memory, or its node lost")])
def test_a_slurm_job_without_a_result_is_said_by_its_state(tmp_path, state, why):
    """A job scancel'd, or killed at its time limit, was said to have ended "(state CANCELLED: its
    time limit, out of memory, or its node lost)" whatever the state: now the state's own reason."""
    from submitit.core.utils import UncompletedJobError

    from hydra_plugins.ccexp_plugins import SlurmLauncher, _SlurmJob

    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"id": "4242_0"}}}))
    (tmp_path / "4242_0_0_log.err").write_text("slurmstepd: error: *** JOB 4242 ***\n")

    class Job:
        job_id, paths = "4242_0", SimpleNamespace(stderr=tmp_path / "4242_0_0_log.err")

        def results(self):
            raise UncompletedJobError("Job 4242_0 (task: 0) with path ... has not produced any output")

    launcher = SlurmLauncher.__new__(SlurmLauncher)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path), "subdir": "${hydra.job.num}"}}})
    launcher.hydra_context, launcher.started = None, 0.0
    job = Job()
    job.state = state
    _SlurmJob(launcher, job, ["method=lora"], 0).results()
    assert (tmp_path / "0" / "error.txt").read_text() == (f"the SLURM job 4242_0 ended without a result (state {state}: "
                                                         f"{why}); its log: {tmp_path / '4242_0_0_log.err'}\n")


def test_the_resume_hint_of_an_interrupted_run_is_its_own(tmp_path):
    """The hint was the same for every run: one without a checkpoint was told to resume (then
    refused), none was told the step, and one stopped while it evaluated (trained, adapter/
    saved) was sent to train again from its last checkpoint."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from ccexp.resume import find_checkpoint
    from ccexp.sweep import interruption

    def hint(run_dir):
        return interruption(SIGTERMException(), run_dir)[0].split("; ", 1)[1]

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / ".step_0000030.partial").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
    assert hint(run_dir) == "no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed"
    for step in (10, 20):
        (run_dir / "checkpoints" / f"step_{step:07d}").mkdir()
        (run_dir / "checkpoints" / f"step_{step:07d}" / "resume.json").write_text(json.dumps({"step": step}))
    assert hint(run_dir) == f"trainer.resume_from={run_dir} resumes it from step 20"
    (run_dir / "checkpoints" / "step_final").mkdir()  # not a step's name, and its state unreadable
    (run_dir / "checkpoints" / "step_final" / "resume.json").write_text("{")
    assert hint(run_dir) == f"trainer.resume_from={run_dir} resumes it"
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running", "train/steps": 40}))
    assert hint(run_dir) == (f"training had finished (40 steps, adapter/ saved): python -m ccexp.evaluate "
                             f"adapter={run_dir} evaluates it")
    # An evaluation runs again; an MLX run, which cannot resume, too.
    assert interruption(SIGTERMException(), tmp_path / "eval", tmp_path / "trained")[0].endswith(
        f"; python -m ccexp.evaluate adapter={tmp_path / 'trained'} evaluates it again")
    mlx = tmp_path / "mlx"
    (mlx / "checkpoints" / "step_0000010").mkdir(parents=True)
    (mlx / "environment.json").write_text(json.dumps({"device": "mlx"}))
    assert hint(mlx) == "backend=mlx runs cannot be resumed (trainer.resume_from is the torch backends'): run it again"
    # Resumed into a new run dir and stopped before that saved a checkpoint: the one it started from still resumes it
    origin, again = tmp_path / "origin", tmp_path / "again"
    (origin / "checkpoints" / "step_0000020").mkdir(parents=True)
    (origin / "checkpoints" / "step_0000020" / "resume.json").write_text(json.dumps({"step": 20}))
    again.mkdir()
    (again / "config.yaml").write_text(yaml.safe_dump({"trainer": {"resume_from": str(origin)}}))
    said = (f"trainer.resume_from={origin / 'checkpoints' / 'step_0000020'} resumes it from step 20 (the checkpoint "
            "it started from; it saved none of its own)")
    assert hint(again) == said
    # Named as the checkpoint: the origin's run dir, once that run finished, is refused as resume_from.
    (origin / "metrics.json").write_text(json.dumps({"status": "finished"}))
    assert hint(again) == said
    assert find_checkpoint(said.split()[0].partition("=")[2], again) == origin / "checkpoints" / "step_0000020"
    (again / "config.yaml").write_text(yaml.safe_dump({"trainer": {"resume_from": "auto"}}))
    assert hint(again) == "no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed"


@pytest.mark.parametrize("override,error", [
    ("method.r=choice(4,8,16,32,64)", "method.r: the study's trials searched choice(4, 8, 16, 32), this launch asks "
                                      "choice(4, 8, 16, 32, 64)"),
    ("method.lr=interval(1e-4,3e-3)", "method.lr: the study's trials searched LogUniform(low=0.0001, high=0.003), "
                                      "this launch asks Uniform(low=0.0001, high=0.003)"),
])
def test_a_resumed_study_with_another_choice_list_or_scale_is_refused(override, error, tmp_path):
    """optuna refuses a trial whose distribution is not the stored one's kind (another choice list,
    log for linear) in a traceback, after the trial started (RUNNING for good): refused before.
    New bounds of an interval are compatible and go on."""
    from hydra_plugins.ccexp_plugins import check_resumed_study

    cfg = compose_with_hydra("hparams_search=lora_optuna")
    study = optuna.create_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    study.add_trial(optuna.trial.create_trial(
        params={"method.r": 8, "method.lr": 1e-3}, value=1.0,
        distributions={"method.r": optuna.distributions.CategoricalDistribution((4, 8, 16, 32)),
                       "method.lr": optuna.distributions.LogUniformDistribution(1e-4, 3e-3)}))
    sweeper = _study(cfg, tmp_path, study_name="lora")
    check_resumed_study(sweeper, ["method.lr=tag(log, interval(1e-5, 1e-2))"])
    with pytest.raises(ConfigError) as err:
        check_resumed_study(sweeper, [override])
    assert str(err.value) == (f"hydra.sweeper.study_name=lora: {error}; a study's choice lists and scales cannot "
                              "change: give a new hydra.sweeper.study_name")


def test_an_empty_sweep_is_refused_in_one_line(tmp_path):
    """range(1,1) sweeps no value: Hydra launched 0 jobs, and the sweep "succeeded", leaving a dir."""
    sweep = tmp_path / "sweep"
    proc = cli("-m", *FAST, "trainer.max_steps=range(1,1)", "method.r=4,8", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: trainer.max_steps=range(1,1): sweeps no value, so the sweep would have no "
                           "job (range(start, stop) stops before stop: range(1,2) is 1)\n")
    assert not sweep.exists()


@pytest.mark.parametrize("source,override,error", [
    ("command line", "method.r=choice(4,x)", "the command line: method.r=choice(4,x): the value x: method.r: expected "
                                             "an integer, got x"),
    ("command line", "method.lr=tag(log, interval(1e-4, 20))", "the command line: method.lr=tag(log, interval(1e-4, "
     "20)): the value 20.0: method.lr: expected a learning rate in (0, 10), got 20.0"),
    ("params", "method.r=range(0, 8)", "hydra.sweeper.params: method.r=range(0, 8): the value 0: method.r: expected "
                                       "an integer >= 1, got 0"),
])
def test_a_search_space_value_a_trial_would_be_refused_on_is_refused_before_the_study_opens(
        source, override, error, tmp_path):
    """choice(4,x): each trial drawing x failed (15 of 20); each value and bound is checked once."""
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna")
    key, _, value = override.partition("=")
    change = {"params": {**cfg.hydra.sweeper.params, key: value}} if source == "params" else {}
    with pytest.raises(ConfigError) as err:
        check_study(_study(cfg, tmp_path, **change), [override] if source == "command line" else [])
    assert str(err.value) == error


@pytest.mark.parametrize("override", ["trainer=choice(fast,default)", "method=choice(lora,qlora)",
                                      "experiment=choice(small_vs_base,method_comparison)"])
def test_a_search_over_a_groups_options_is_left_to_hydra(override, tmp_path):
    """A group's options are Hydra's to compose per trial: checking each by putting its name in
    the group's place (trainer: "fast") refused every group search. Each name is looked up in
    the config repository the sweeper has (as in a real study), and only that."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    from ccexp.__main__ import CONFIG_DIR
    from hydra_plugins.ccexp_plugins import check_study

    cfg = compose_with_hydra("hparams_search=lora_optuna")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(f"file://{CONFIG_DIR}"))
    study = _study(cfg, tmp_path, hydra_context=SimpleNamespace(config_loader=loader))
    check_study(study, [override])
    with pytest.raises(ConfigError, match=r"has no option nope \(expected one of "):
        check_study(study, [override.replace(",", ",nope,")])


def test_a_group_option_that_does_not_exist_is_refused_before_the_study_opens(tmp_path):
    """trainer=choice(fast,nope): each trial drawing nope failed in Hydra's composition while the
    study went on; the option is looked up once, up front, and no study or sweep dir is made."""
    sweep = tmp_path / "s"
    proc = cli("-m", "hparams_search=lora_optuna", *FAST, "trainer=choice(fast,nope)", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: the command line: trainer=choice(fast,nope): trainer has no option nope "
                           "(expected one of default, fast)\n")
    assert not sweep.exists()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGTERM in setup", "SIGTERM between jobs"])
def test_an_interrupted_study_fails_its_running_trial(tmp_path, how):
    """SIGTERM in a trial: the study's summary is written and the exit code is 143, and the trial
    is FAIL in the study, not RUNNING for good. Also while the trial is set up (before its
    training) or before its run began, where Python's default ended the process without a word,
    the trial RUNNING for good."""
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTING, "-m", "hparams_search=lora_optuna",
                           "hydra.sweeper.n_trials=2", *FAST, *QUICK, "trainer.max_steps=4",
                           f"hydra.sweep.dir={tmp_path}", how], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 143, proc.stderr[-3000:]
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert "ccexp: sweep " in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (2, 1, 1)
    assert summary["runs"][1]["error"].startswith("interrupted by SIGTERM (kill, or a scheduler's time limit)")
    assert (tmp_path / summary["runs"][1]["dir"] / "error.txt").read_text() == summary["runs"][1]["error"] + "\n"


def test_a_swept_value_every_run_would_refuse_stops_the_sweep_before_any_job(tmp_path):
    """A typo in the second value (1e-3x): found only when its job ran, after the first trained."""
    sweep = tmp_path / "sweep"
    proc = cli("-m", *FAST, "method.lr=1e-3,1e-3x", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr == "ccexp: error: sweep job method.lr=1e-3x: method.lr: expected a number, got 1e-3x\n"
    assert not sweep.exists()


@pytest.mark.parametrize("search", [[], ["hparams_search=lora_optuna"]])
def test_a_search_space_key_under_hydra_sweeper_params_is_one_line(search, tmp_path):
    """Its keys hold a dot (method.r): hydra.sweeper.params.method.r is params.method's r, which
    gave a did-you-mean naming what was typed (Optuna) or an AssertionError's traceback (basic)."""
    proc = cli("-m", *search, *FAST, "hydra.sweeper.params.method.r='choice(4,8)'", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 2
    assert proc.stderr == (
        "ccexp: error: hydra.sweeper.params.method.r='choice(4,8)': the search space's keys hold a dot (method.r), "
        "which Hydra reads here as a key r under hydra.sweeper.params.method; search-space keys are given on the "
        "command line, with -m: method.r='choice(4,8)'\n")
    assert not (tmp_path / "s").exists()


def test_a_search_space_key_under_hydra_sweeper_params_is_named_when_hydra_refuses_it():
    """Composed without the command line's check (the Optuna sweeper's params: a did-you-mean of the key typed)."""
    from hydra.errors import HydraException

    from ccexp.config_errors import config_error_line

    with pytest.raises(HydraException) as err:
        compose_with_hydra("hparams_search=lora_optuna", "hydra.sweeper.params.method.r=8")
    assert config_error_line(err.value) == (
        "hydra.sweeper.params.method.r=<its values>: the search space's keys hold a dot (method.r), which Hydra reads "
        "here as a key r under hydra.sweeper.params.method; search-space keys are given on the command line, with -m: "
        "method.r=<its values>")


def test_the_slurm_launchers_hydra_config_printed_resolved_is_one_line():
    """--cfg hydra leaves the job's keys out, which max_num_timeout reads: a traceback, now one
    line pointing at --cfg all, which resolves it."""
    proc = cli("hydra/launcher=slurm", "--cfg", "hydra", "--resolve")
    assert proc.returncode == 2
    assert proc.stderr == (
        "ccexp: error: --cfg hydra --resolve: a hydra setting reads trainer.resume_from, a key of the job's config, "
        "which --cfg hydra leaves out; --cfg all --resolve shows both resolved\n")
    assert cli("hydra/launcher=slurm", "--cfg=hydra", "--resolve").stderr == proc.stderr


@pytest.mark.parametrize("flags", [["--cfg", "job", "--resolve"], ["--cfg", "all", "--resolve"], list(FAST)])
def test_an_override_naming_no_key_is_one_line_naming_it(flags, tmp_path):
    """trainer.max_steps='${nope}': --cfg job/all were told about --cfg hydra, and a run failed in a
    traceback before validation (the run's name read the override, resolving it)."""
    proc = cli(*flags, "trainer.max_steps=${nope}", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith("ccexp: error: trainer.max_steps: ")
    assert "Traceback" not in proc.stderr and "--cfg hydra" not in proc.stderr


def test_an_empty_choice_says_it_needs_a_value(tmp_path):
    """choice(): the hint was to quote it (a value with parentheses), which only hides the mistake."""
    proc = cli("-m", *FAST, "trainer.max_steps=choice()", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 2
    assert proc.stderr == ("ccexp: error: trainer.max_steps=choice(): not an override Hydra can read (Error parsing "
                           "override 'trainer.max_steps=choice()'; choice() needs at least one value: "
                           "trainer.max_steps=choice(a,b))\n")
    assert not (tmp_path / "s").exists()
