"""One experiment, top to bottom: validate, data, model, train, evaluate, write, report."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ccexp import resume
from ccexp.backends import build_backend, resolve_backend
from ccexp.backends.base import current_rss_mb, reset_peak_memory
from ccexp.config import ConfigError, RunConfig, check_wandb_mode, validate
from ccexp.config_errors import objective_missing, objective_not_a_number, objective_value
from ccexp.data import build_splits
from ccexp.environment import code_and_versions, machine
from ccexp.evaluate import check_answer_caps, evaluate
from ccexp.models import hold_lock, resolve_model_dir
from ccexp.report import print_summary
from ccexp.signals import raise_on_sigterm
from ccexp.sweep import one_line
from ccexp.tracking import build_logger, finish_logger, log_adapter, log_predictions

log = logging.getLogger("ccexp")


def run(cfg: DictConfig, run_dir: Path, run_name: str = "default", group: str | None = None,
        adapter: Path | None = None, required_metric: str | None = None) -> dict:
    """Train and evaluate one configuration; return its metrics (also written to run_dir).
    With ``adapter`` (a saved adapter dir) nothing is trained: that adapter is evaluated.
    ``required_metric`` (what a search reads): a run without it fails, tracker run included."""
    start = time.perf_counter()
    # Every bad key fails here, before any model is loaded.
    rc: RunConfig = validate(cfg, unread_fields=adapter is None)
    check_wandb_mode(rc.logger)
    device = resolve_backend(rc.backend.name)
    if rc.backend.num_threads:
        torch.set_num_threads(rc.backend.num_threads)
    pl.seed_everything(rc.seed, workers=True, verbose=False)
    reset_peak_memory()  # this run's own peak, not an earlier sweep job's in this process
    start_mb = current_rss_mb()  # what it starts from: in a sweep, what earlier jobs left loaded
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # under a file, a read-only or virtual file system (/proc)
        raise ConfigError(f"{run_dir}: cannot create the run dir ({err.strerror or err})") from None
    with claimed(run_dir):  # until its metrics are written, whichever way it ends
        done = resume.finished_already(rc, run_dir) if adapter is None else None
        if done is not None:  # trainer.resume_from=auto in a finished run's dir: nothing to do
            return done
        checkpoint = resume.prepare(rc, device, run_dir) if adapter is None else None
        splits = build_splits(rc.data, rc.data_size, rc.task_mix)
        model_dir = resolve_model_dir(rc.model)
        check_answer_caps(rc.eval, rc.model.max_seq_len, model_dir, (ex["task"] for ex in splits["test"]))
        if adapter is None and device != "mlx":  # before the model loads, not at the first step
            from ccexp.backends.speedups import check_compiler

            check_compiler(rc.backend.compile, device)
        backend = build_backend(device, rc, model_dir, [ex["messages"][-1]["content"] for ex in splits["train"]])
        # Every check has passed: only now does the run write into its dir, which may hold an earlier
        # run (hydra.run.dir given again, resume_from=auto) that a refused command must leave as it was.
        for stale in ("error.txt", "traceback.txt"):  # an earlier failed job's, in a sweep dir run again
            (run_dir / stale).unlink(missing_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        # Where it ran and on what code: the report ranks times only among runs of one machine.
        # What "auto" became: backend.precision=auto is bf16 autocast on a CPU with bf16 dot products,
        # fp32 without, the model's dtype on MLX; config.yaml says only "auto".
        env = {"machine": machine(device, every_gpu=True), "device": device, "precision": backend.precision,
               **code_and_versions()}
        if adapter is not None:  # an evaluation written elsewhere (out=) records whose adapter it scored
            env["adapter"] = str(adapter.resolve())
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        trainable, total = backend.parameter_counts()
        log.info("%s on %s (%s): %d train / %d val / %d test examples; %s trainable of %s parameters",
                 rc.method.name, device, getattr(backend, "precision", ""), len(splits["train"]),
                 len(splits["val"]), len(splits["test"]), f"{trainable:,}", f"{total:,}")

        tags = [f"method={rc.method.name}", f"backend={device}", f"task_mix={rc.task_mix.name}",
                f"data_size={rc.data_size.name}", f"data={rc.data.name}", f"model={rc.model.name}"]
        logger = build_logger(rc.logger, run_dir, run_name, group or rc.experiment_name,
                              {**OmegaConf.to_container(cfg, resolve=True), "environment": env}, tags,
                              resumed=checkpoint)
        metrics: dict = {"status": "failed"}
        restore_sigterm = raise_on_sigterm()
        try:
            # Replaced when the run ends, whichever way: a run killed while training (out of memory,
            # a SLURM time limit) still says so to the comparison report. A bad config stops
            # before this, with no metrics at all.
            (run_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
            metrics["time/setup_s"] = time.perf_counter() - start
            if adapter is None:
                metrics.update(backend.fit(splits["train"], splits["val"], logger, run_dir, checkpoint))
                if metrics.get("train/early_stopped"):  # Lightning's own last word is "max_epochs reached"
                    log.info("stopped early at step %d: val/loss had not improved for "
                             "trainer.early_stopping_patience=%d validations; the adapter is the best step's (%s)",
                             metrics["train/steps"], rc.trainer.early_stopping_patience, metrics.get("train/best_step"))
                adapter_dir = run_dir / "adapter"
                backend.save_adapter(adapter_dir)
                # Trained: a run stopped from here on is evaluated, not trained again (resume.resume_hint)
                (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "running"}, indent=2,
                                                                 sort_keys=True))
            else:
                backend.load_adapter(adapter)
                adapter_dir = adapter
            # An evaluation trained nothing: its seconds are the saved adapter's loading, and a
            # "training" peak or time would read as a rival to runs that trained.
            before_eval = "time/fit_s" if adapter is None else "time/load_s"
            metrics[before_eval] = time.perf_counter() - start - metrics["time/setup_s"]
            if adapter is None:
                metrics["memory/train_peak_mb"] = backend.peak_memory_mb()
            scores, predictions = evaluate(backend, splits, rc.eval)
            metrics.update(scores)
            metrics["memory/peak_mb"] = backend.peak_memory_mb()
            if start_mb is not None and backend.peak_is_host_memory():  # a GPU's peak does not start there
                metrics["memory/start_mb"] = start_mb
            metrics["time/total_s"] = time.perf_counter() - start
            metrics["time/eval_s"] = metrics["time/total_s"] - metrics["time/setup_s"] - metrics[before_eval]
            metrics.update({
                "params/trainable": trainable, "params/total": total, "params/trainable_pct": 100.0 * trainable / total,
                "adapter/size_mb": adapter_size_mb(adapter_dir),
            })
            with open(run_dir / "predictions.jsonl", "w") as f:  # kept whatever follows
                for record in predictions:
                    f.write(json.dumps(record) + "\n")
            if required_metric is not None and required_metric not in metrics:
                raise ConfigError(objective_missing(required_metric, metrics))
            if required_metric is not None and objective_value(metrics[required_metric]) is None:
                # Optuna records a failed trial: so do the job, the sweep's summary and its exit code.
                raise ConfigError(objective_not_a_number(required_metric, metrics[required_metric]))
            metrics["status"] = "finished"
            log_predictions(logger, predictions)
            if adapter is None:
                log_adapter(logger, rc.logger, adapter_dir, run_name)
            return metrics
        except BaseException as err:  # SIGTERM and Ctrl-C too (Lightning's SystemExit): said, not "failed" alone
            metrics["error"] = one_line(err, run_dir, adapter and adapter.parent)  # in the tracker's summary too
            raise
        finally:
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            try:
                finish_logger(logger, metrics, failed=metrics["status"] != "finished")
            except Exception as err:  # noqa: BLE001 - the tracker's failure must not replace the run's own error
                log.warning("the tracker could not close the run (%s); %s has the results", one_line(err),
                            run_dir / "metrics.json")
            if metrics["status"] == "finished":
                print_summary(metrics, run_dir)
            restore_sigterm()


LOCK_FILE = ".ccexp.lock"  # claimed()'s, in every run dir


class RunDirBusy(ConfigError):
    """The run dir is another live run's: refused without writing into it (its files are that run's)."""


@contextmanager
def claimed(run_dir: Path):
    """The run dir held by this run until it ends (an flock, let go by the system if the process
    dies): two runs given one dir (hydra.run.dir twice, or outputs/<date>/<time> of two runs
    started in the same second) wrote each other's config, adapter and metrics into it, one
    run's metrics beside the other's config. The lock file keeps the holder's pid for the line."""
    try:
        lock = open(run_dir / LOCK_FILE, "a+")
    except OSError as err:  # a read-only dir: said before the model loads, not at the first write
        raise ConfigError(f"{run_dir}: cannot write into the run dir ({err.strerror or err})") from None
    with lock:
        if not hold_lock(lock):
            lock.seek(0)
            holder = lock.read().strip()
            raise RunDirBusy(f"{run_dir}: another run{f' ({holder})' if holder else ''} is writing into this "
                             "dir; expected a dir of its own: give hydra.run.dir (or hydra.sweep.dir) another "
                             "path")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")  # a cluster's runs share the file system
        lock.flush()
        yield


# What each backend saves as the adapter: peft's config and weights (.bin from an older peft) and
# QLoRA's 4-bit base (lightning.py); mlx-lm's LoRA layout (mlx_lora.py); the MLX soft prompt (mlx_prompt.py).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "quantization.json",
                 "adapters.safetensors", "prompt_embeddings.safetensors", "prompt_config.json")


def adapter_size_mb(adapter_dir: Path) -> float:
    """What serving the adapter ships: its weights and configs, not the model card peft writes nor
    anything else put in the folder (an evaluation's results written there once counted)."""
    return sum((adapter_dir / name).stat().st_size for name in ADAPTER_FILES if (adapter_dir / name).is_file()) / 2**20
