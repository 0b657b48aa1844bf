"""Sweeps: every hparams_search= composes, an Optuna study resumes and survives a failed
trial, and the launcher configs (joblib thread share, SLURM) compose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ccexp.__main__ import CONFIG_DIR
from ccexp.config import validate

SEARCHES = sorted(p.stem for p in (Path(CONFIG_DIR) / "hparams_search").glob("*.yaml"))


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccexp", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def as_hydra_job():
    """Resolve a composed config as a job would: with its Hydra config set."""
    def resolve(cfg):
        HydraConfig.instance().set_config(cfg)
        return OmegaConf.to_container(cfg.backend, resolve=True)
    yield resolve
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("name", SEARCHES)
def test_hparams_search_composes(name):
    assert set(SEARCHES) == {"lora_optuna", "prompt_tuning_optuna"}
    cfg = compose_with_hydra(f"hparams_search={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize" and sweeper.max_failure_rate == 1.0
    assert sweeper.storage == f"sqlite:///multirun/optuna/{sweeper.study_name}/optuna.db"
    assert "method.lr" in sweeper.params and cfg.method.name == name.removesuffix("_optuna")
    validate(cfg)
    assert compose_with_hydra(f"hparams_search={name}", "objective.direction=maximize").hydra.sweeper.direction == "maximize"


def test_optuna_study_resumes_and_survives_a_failed_trial(tmp_path):
    """Two trials; the same command again adds a third (here a failing one) to the same study."""
    common = ("-m", "hparams_search=lora_optuna", *FAST, "eval.baseline=false", "eval.generate_examples=0",
              f"hydra.sweep.dir={tmp_path}")
    first = cli(*common, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = cli(*common, "hydra.sweeper.n_trials=1", "method.r=-1")
    assert second.returncode == 1, second.stderr[-3000:]
    assert f"ccexp: sweep {tmp_path}: 1 job: 0 finished, 1 failed" in second.stderr
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] == study.best_value
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/metrics.json"))
    assert statuses == ["failed", "finished", "finished"]  # one dir per trial, none overwritten


def test_joblib_launcher_shares_the_cores(as_hydra_job):
    cores = len(os.sched_getaffinity(0))
    backend = as_hydra_job(compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    assert backend["num_threads"] == max(1, cores // min(2, cores))
    assert as_hydra_job(compose_with_hydra("hydra/launcher=joblib"))["num_threads"] == 1  # n_jobs -1: a job per core
    assert as_hydra_job(compose_with_hydra())["num_threads"] is None  # one job at a time: all cores
    assert as_hydra_job(compose_with_hydra("hydra/launcher=joblib", "backend.num_threads=3"))["num_threads"] == 3


def test_slurm_launcher_composes(as_hydra_job):
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.mem_gb) == ("gpu", 240, 1, 64)
    assert as_hydra_job(cfg)["num_threads"] == launcher.cpus_per_task == 8
