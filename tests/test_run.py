"""End to end: python -m ccexp's run() on the tiny model for each method, W&B offline, the
Hydra CLI, and the real embedded model for a few steps."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import torch
import wandb_records
from conftest import FAST, compose_cfg
from peft import PeftModel

from ccexp.config import ConfigError
from ccexp.data.tasks import FREE_TEXT_TASKS
from ccexp.models import load_model
from ccexp.run import RunDirBusy, claimed, run

RUN_FILES = ("config.yaml", "environment.json", "metrics.json", "predictions.jsonl", "adapter/adapter_config.json",
             "adapter/adapter_model.safetensors")


def test_your_own_model_directory_trains_and_evaluates(tmp_path, tiny_dir):
    """model=local model.path=<dir>: the README's way to bring a model (the tiny model's files here)."""
    quick = [o for o in FAST if not o.startswith("model=")]
    metrics = run(compose_cfg(*quick, "model=local", f"model.path={tiny_dir}", "eval.baseline=false",
                              "eval.generate_examples=2"), tmp_path)
    assert metrics["status"] == "finished" and metrics["params/trainable"] == 14_336  # the tiny model's LoRA


@pytest.mark.parametrize("method", ["lora", "qlora", "prompt_tuning"])
def test_run_each_method_on_tiny(method, tmp_path, tiny_dir, capsys):
    metrics = run(compose_cfg(*FAST, f"method={method}", "logger=csv"), tmp_path)
    # The summary's adapter size: a soft prompt's few KB in KB (it read "0.00 MB").
    size = metrics["adapter/size_mb"]
    assert (f"adapter {size:.2f} MB," if size >= 0.1 else f"adapter {size * 1024:.1f} KB,") in capsys.readouterr().out
    assert size >= 0.1 or f"{size * 1024:.1f}" != "0.0"
    for name in RUN_FILES:
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["train/steps"] == 4
    for key in ("val/loss", "val/ppl", "test/ppl", "baseline/test/ppl", "test/json_valid",
                "baseline/test/json_valid", "delta/val/loss", "adapter/size_mb", "params/trainable",
                "test/quality_score/mae", "test/quality_score/within_10", "test/csat/within_15_of_100",
                "test/issue_category/macro_f1", "test/coaching/rougeL", "test/coaching/theme_coverage",
                "test/churn_risk/parse_rate", "test/latency/p50_s", "test/latency/p95_s",
                "test/latency/ttft_p50_s", "test/latency/tokens_per_s", "memory/peak_mb", "train/tokens_per_s",
                "baseline/test/latency/p50_s", "baseline/test/coaching/rougeL", "baseline/test/csat/within_15_of_100"):
        assert key in saved, key
    assert saved["test/latency/p95_s"] >= saved["test/latency/p50_s"] > saved["test/latency/ttft_p50_s"] > 0
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12  # 6 generated answers x (adapter, baseline)
    assert {p["model"] for p in predictions} == {"adapter", "baseline"}
    # Metrics agree with the prediction records they came from.
    adapter = [p for p in predictions if p["model"] == "adapter" and p["task"] not in FREE_TEXT_TASKS]
    assert saved["test/json_valid"] == pytest.approx(sum(p["json_valid"] for p in adapter) / len(adapter))
    assert all(p["json_valid"] is None for p in predictions if p["task"] in FREE_TEXT_TASKS)  # no JSON asked for
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert metrics["val/loss"] == saved["val/loss"]
    # The curve holds the validations only: the final val/loss (the best adapter's) drew a point at
    # the last step the curve never had. The final row has every other metric, a null one as NaN.
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["val/loss"]] == [h["step"] for h in saved["train/val_history"]]
    final = [r for r in rows if r.get("test/acc")]
    assert len(final) == 1 and all(k in final[0] for k, v in saved.items() if isinstance(v, (int, float, type(None)))
                                   and k not in ("val/loss", "val/ppl"))
    assert all(final[0][k] == "nan" for k, v in saved.items() if v is None)
    # Where it ran and on what code: the report ranks times only among runs of one machine.
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["machine"]["threads"] == __import__("torch").get_num_threads() and env["machine"]["cpu"]
    assert env["versions"]["peft"] == __import__("peft").__version__ and "commit" in env
    assert env["device"] == "cpu" and env["precision"] in ("bf16-mixed", "32-true")  # what backend.precision=auto became
    # The saved adapter opens with plain peft.
    PeftModel.from_pretrained(load_model(tiny_dir, __import__("torch").float32), tmp_path / "adapter")


def test_wandb_offline_run_is_stored_under_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    metrics = run(compose_cfg(*FAST, "logger=wandb", "eval.baseline=false", "logger.adapter_artifact=true"), tmp_path)
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run_file = next(offline[0].glob("run-*.wandb"))
    summary = wandb_records.summary(run_file)
    assert summary["predictions/_type"] == "table-file" and summary["predictions/nrows"] == 6  # the wandb.Table
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"
               for r in wandb_records.records(run_file))
    scalars = {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert len(scalars) > 20
    config = {item.key: json.loads(item.value_json) for r in wandb_records.records(run_file)
              for item in (r.run.config.update if r.WhichOneof("record_type") == "run" else
                           r.config.update if r.WhichOneof("record_type") == "config" else [])}
    assert config["environment"] == json.loads((tmp_path / "environment.json").read_text())
    assert config["method"]["name"] == "lora"
    for key, value in scalars.items():
        assert summary[key] == (None if value is None else pytest.approx(value, nan_ok=True)), key


def test_wandb_that_cannot_be_reached_logs_offline_in_one_line(tmp_path, monkeypatch, capsys):
    """A key but no network (an offline cluster node): W&B's init fails once, at the start, and the
    run logs offline instead of failing mid-training and again at its close; the process's later
    runs log offline at once (a six-job sweep waited 6 x 90 s)."""
    import wandb

    from ccexp import tracking
    from ccexp.config import LoggerConfig
    from ccexp.tracking import build_logger, finish_logger

    monkeypatch.setattr(tracking, "_unreachable", None)

    real_init, modes = wandb.init, []

    def init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":
            # wandb leaves the failed attempt's folder, which `wandb sync --sync-all` would take for a run
            (tmp_path / "wandb" / "run-20261207_000000-abcd1234" / "logs").mkdir(parents=True)
            raise wandb.errors.CommError("Failed to get resume status: context deadline exceeded")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = build_logger(LoggerConfig(mode="online"), tmp_path, "run", "group", {"seed": 1}, [])
    assert modes == ["online"]
    assert capsys.readouterr().err == (
        "ccexp: warning: W&B online: Failed to get resume status: context deadline exceeded; this run logs offline "
        f"to {tmp_path / 'wandb'} (wandb sync uploads it later)\n")
    assert logger.experiment.offline
    assert [p.name for p in (tmp_path / "wandb").glob("run-*")] == []
    finish_logger(logger, {"val/loss": 1.5}, failed=False)
    assert modes == ["online", "offline"]  # one attempt online, then never again
    assert wandb_records.summary(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))["val/loss"] == 1.5
    # A later run in this process (a sweep's next job) does not wait out the init timeout again.
    capsys.readouterr()  # wandb's own lines as the first run closed
    logger = build_logger(LoggerConfig(mode="online"), tmp_path / "next", "run", "group", {"seed": 1}, [])
    assert capsys.readouterr().err == (
        "ccexp: warning: W&B online: not reached by an earlier run in this process (Failed to get resume status: "
        f"context deadline exceeded); this run logs offline to {tmp_path / 'next' / 'wandb'} (wandb sync uploads it "
        "later)\n")
    finish_logger(logger, {"val/loss": 1.0}, failed=False)
    assert modes == ["online", "offline", "offline"]


def test_wandb_that_cannot_be_reached_keeps_the_run_and_its_results(tmp_path):
    """The real wandb, a key and nothing listening at WANDB_BASE_URL: the offline run that follows
    the failed online attempt had failed too ("run ID ... is in use": the wandb service still held
    the attempt's run), and with it the training. Another process: wandb keeps process-wide state."""
    script = f"""
from pathlib import Path
from ccexp import tracking
from ccexp.config import LoggerConfig
tracking.INIT_TIMEOUT_S = 2  # the failed attempt's wait, 90 s in a run
logger = tracking.build_logger(LoggerConfig(), Path({str(tmp_path)!r}), "run", "group", {{"seed": 1}}, [])
logger.log_metrics({{"train/loss": 1.0}}, step=1)
tracking.finish_logger(logger, {{"val/loss": 1.5}}, failed=False)
"""
    # Not this process's wandb service (WANDB_SERVICE, set by the tests before): the script's own.
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_SERVICE")}
    env.update(WANDB_API_KEY="k" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-800:]
    assert "ccexp: warning: W&B online: " in out.stderr and "this run logs offline" in out.stderr
    [run_file] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert wandb_records.summary(run_file)["val/loss"] == 1.5
    assert [p.name for p in (tmp_path / "wandb").glob("run-*")] == []


def test_an_offline_wandb_run_sends_nothing(tmp_path):
    """An offline run logs to its folder only: wandb 0.31's telemetry had posted to its server
    from offline runs (it read the process's settings, which the run's mode did not change).
    Another process: audit hooks cannot be removed, and wandb keeps process-wide state."""
    script = f"""
import atexit, sys
asked = []
sys.addaudithook(lambda event, args: asked.append(args[0]) if event == "socket.getaddrinfo" else None)
atexit.register(lambda: print("looked up:", asked))  # the first registered runs last: after wandb's own flush
from ccexp.config import LoggerConfig
from ccexp.tracking import build_logger, finish_logger
from pathlib import Path
logger = build_logger(LoggerConfig(mode="offline"), Path({str(tmp_path)!r}), "run", "group", {{"seed": 1}}, [])
logger.log_metrics({{"train/loss": 1.0}}, step=1)
finish_logger(logger, {{"val/loss": 1.5}}, failed=False)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert "looked up: []" in out.stdout, out.stdout
    assert wandb_records.summary(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))["val/loss"] == 1.5


def test_csv_logs_of_an_earlier_launch_in_the_run_dir_are_kept(tmp_path):
    """trainer.resume_from=auto after a requeue runs in the same dir: Lightning's CSV logger would
    delete the curve logged before the checkpoint."""
    from ccexp.config import LoggerConfig
    from ccexp.tracking import build_logger

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step,train/loss\n1,2.5\n")
    logger = build_logger(LoggerConfig(name="csv"), tmp_path, "run", "group", {}, [])
    logger.log_metrics({"train/loss": 2.0}, step=5)
    logger.save()
    [kept] = tmp_path.glob("csv.until_*/metrics.csv")
    assert kept.read_text() == "step,train/loss\n1,2.5\n"
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[1:] == ["5,2.0"]


@pytest.mark.parametrize("env,mode", [("disabled", None), ("dryrun", "offline"), ("offline", "offline")])
def test_wandb_mode_from_the_environment_is_wandbs_own(tmp_path, monkeypatch, env, mode):
    """WANDB_MODE=disabled means no W&B run (it made an offline one, and with a key went online
    and waited out the init timeout); dryrun is wandb's older name for offline."""
    from ccexp.config import LoggerConfig
    from ccexp.tracking import build_logger, wandb_mode

    monkeypatch.setenv("WANDB_MODE", env)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(LoggerConfig()) == (mode or "disabled")
    if mode is None:
        assert build_logger(LoggerConfig(), tmp_path, "run", "group", {}, []) is None
        assert not (tmp_path / "wandb").exists()


def test_csv_final_row_of_a_run_stopped_in_training_is_at_its_last_step(tmp_path):
    """No train/steps when training was stopped (SIGTERM, an error): the final row went to step 0,
    behind the curve."""
    from ccexp.config import LoggerConfig
    from ccexp.tracking import build_logger, finish_logger

    logger = build_logger(LoggerConfig(name="csv"), tmp_path, "run", "group", {}, [])
    for step in (1, 2, 3):
        logger.log_metrics({"train/loss": 2.0 / step}, step=step)
    logger.save()
    logger.log_metrics({"train/loss": 0.5}, step=4)  # not yet written
    finish_logger(logger, {"time/setup_s": 1.5, "status": "failed"}, failed=True)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), r["time/setup_s"]) for r in rows][-2:] == [(4, ""), (4, "1.5")]
    # Requeued and resumed (its curve kept beside), then stopped before it logged a step: the
    # final row goes after the kept curve, not to step 0.
    again = build_logger(LoggerConfig(name="csv"), tmp_path, "run", "group", {}, [])
    finish_logger(again, {"time/setup_s": 2.5, "status": "failed"}, failed=True)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        assert [(int(r["step"]), r["time/setup_s"]) for r in csv.DictReader(f)] == [(4, "2.5")]
    import pickle

    assert pickle.loads(pickle.dumps(again)).last_step == 4  # a launcher may ship it to a worker


def test_cli_writes_a_run_dir(tmp_path):
    # 8 steps of 6 batches per epoch: two epochs, which the progress bar counts as such.
    proc = subprocess.run([sys.executable, "-m", "ccexp", *FAST, "trainer.max_steps=8", "logger=wandb",
                           "logger.mode=offline", "eval.baseline=false", f"hydra.run.dir={tmp_path}/run"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_API_KEY": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train/steps"] == 8
    assert "base model vs fine-tuned" in proc.stdout and "Epoch 1/1" in proc.stdout
    # Lightning's advert for its cloud logger is dropped from the console and the run's log; its other lines stay.
    log = (tmp_path / "run" / "__main__.log").read_text()
    console = proc.stdout + proc.stderr
    assert "GPU available" in log and "litlogger" not in log + console
    # Nor do library warnings the user cannot act on reach the console: Lightning's use of a
    # pytree class torch deprecates, wandb's about the "anonymous" setting Lightning passes it.
    assert "LeafSpec" not in console and "anonymous" not in console
    assert "Loading weights" not in console  # transformers' bar for a model that loads in a second


def test_a_refused_command_leaves_an_earlier_run_in_its_dir_alone(tmp_path):
    """hydra.run.dir of a finished run given again with bad input (a bad value; a checkpoint that
    does not fit): one line, and the run's config.yaml and metrics.json as they were, no error.txt."""
    run_dir = tmp_path / "run"
    run(compose_cfg(*FAST, "eval.baseline=false", "eval.generate_examples=0", "eval.latency_examples=0"), run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.json")}
    for bad in ("backend.num_threads=0", f"trainer.resume_from={tmp_path / 'nowhere'}"):
        proc = subprocess.run([sys.executable, "-m", "ccexp", *FAST, bad, f"hydra.run.dir={run_dir}"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
        assert {name: (run_dir / name).read_bytes() for name in before} == before
        assert not (run_dir / "error.txt").exists()


def test_a_run_dir_another_live_run_writes_into_is_refused(tmp_path):
    """Two runs given one dir (hydra.run.dir twice, or outputs/<date>/<time> of two runs started in
    the same second) wrote into it together: one's config.yaml and adapter beside the other's
    metrics.json, or a crash in the csv logger. The second is refused, writing nothing there, and
    the dir takes a run again once the first has ended."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with claimed(run_dir):  # the first run, still going
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(RunDirBusy, match=rf"{run_dir}: another run \({holder}\) is writing into this dir"):
            run(compose_cfg(*FAST, "logger=csv"), run_dir)
    assert [p.name for p in run_dir.iterdir()] == [".ccexp.lock"]
    with claimed(run_dir):  # let go when it ended
        pass


def test_embedded_model_end_to_end(tmp_path):
    """The real SmolLM2-135M for a few steps: the default pipeline, just shorter."""
    cfg = compose_cfg("trainer=fast", "data_size.train=8", "data_size.val=4", "data_size.test=4",
                      "eval.generate_examples=2", "eval.max_new_tokens=24", "logger=none")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "finished"
    assert metrics["val/loss"] < metrics["baseline/val/loss"]  # even 4 steps help on answer tokens
    assert metrics["params/trainable"] == 30 * 16 * ((576 + 576) * 2 + (576 + 192) * 2)


def test_early_stopping_and_best_adapter(tmp_path, caplog):
    """With a vanishing learning rate validation never improves: training stops after
    `patience` checks, and the adapter kept is the one from the first validation."""
    with caplog.at_level("INFO", logger="ccexp"):
        metrics = run(compose_cfg(*FAST, "trainer.max_steps=50", "trainer.val_every_n_steps=1",
                                  "trainer.early_stopping_patience=2", "method.lr=1e-12", "trainer.save_every_n_steps=2",
                                  "eval.generate_examples=0", "eval.baseline=false"), tmp_path)
    assert metrics["train/early_stopped"] == 1.0
    assert ("stopped early at step 3: val/loss had not improved for trainer.early_stopping_patience=2 validations; "
            "the adapter is the best step's (1)") in caplog.messages
    assert metrics["train/steps"] == 3  # validations at steps 1 (best), 2 and 3 (no improvement)
    assert metrics["train/best_step"] == 1
    assert [h["step"] for h in metrics["train/val_history"]] == [1, 2, 3]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000002"]


def test_the_trainer_keys_reach_the_optimizer_and_the_clipping(tmp_path, monkeypatch):
    """trainer.weight_decay, warmup_ratio and max_grad_norm are what training uses: a dropped one
    runs on torch's default (AdamW's weight decay 0.01, where ccexp's default is 0) without a word."""
    import pytorch_lightning as pl

    from ccexp.backends import build_backend

    seen: dict = {"lr": []}

    class Look(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["clip"] = trainer.gradient_clip_val
            seen["decay"] = {g["weight_decay"] for g in trainer.optimizers[0].param_groups}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["lr"].append(trainer.optimizers[0].param_groups[0]["lr"])

    def backend_with_look(*args):
        backend = build_backend(*args)
        backend.fit_callbacks.append(Look())
        return backend

    monkeypatch.setattr("ccexp.run.build_backend", backend_with_look)
    run(compose_cfg(*FAST, "trainer.weight_decay=0.07", "trainer.warmup_ratio=0.5", "trainer.max_grad_norm=0.3",
                    "method.lr=1e-3", "backend=cpu", "eval.generate_examples=0", "eval.baseline=false"), tmp_path)
    assert (seen["clip"], seen["decay"]) == (0.3, {0.07})
    # 4 steps, 2 of them warm-up: linear up from 0, then linear down to 0 at the last step's end.
    assert seen["lr"] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])


def test_same_seed_same_run(tmp_path):
    overrides = (*FAST, "eval.generate_examples=0", "eval.baseline=false")
    a = run(compose_cfg(*overrides), tmp_path / "a")
    b = run(compose_cfg(*overrides), tmp_path / "b")
    c = run(compose_cfg(*overrides, "seed=7"), tmp_path / "c")
    assert a["val/loss"] == b["val/loss"] and a["train/val_history"] == b["train/val_history"]
    assert c["val/loss"] != a["val/loss"]


@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM resets on Linux only")
def test_a_run_reports_its_own_peak_memory(tmp_path):
    """Hydra's basic launcher runs a sweep's jobs in one process: each reports its own peak, not
    the largest of the jobs before it."""
    from ccexp.backends.base import peak_rss_mb

    big = torch.ones(750_000_000)  # 3 GB, as an earlier, larger job would have held
    del big
    before = peak_rss_mb()
    metrics = run(compose_cfg(*FAST, "eval.generate_examples=0", "eval.baseline=false"), tmp_path)
    assert metrics["memory/peak_mb"] < before - 2000


def test_a_run_records_the_memory_it_started_from(tmp_path, monkeypatch):
    """A sweep's later jobs in one process start holding what earlier jobs loaded: each run says
    what it started from (the resident set once its peak is reset), so a report can tell."""
    calls = []
    monkeypatch.setattr("ccexp.run.reset_peak_memory", lambda: calls.append("reset"))
    monkeypatch.setattr("ccexp.run.current_rss_mb", lambda: calls.append("start") or 123.0)
    metrics = run(compose_cfg(*FAST, "eval.generate_examples=0", "eval.baseline=false"), tmp_path)
    assert calls == ["reset", "start"] and metrics["memory/start_mb"] == 123.0
    assert json.loads((tmp_path / "metrics.json").read_text())["memory/start_mb"] == 123.0
    # A GPU's peak is its own memory, reset per run: the host's start says nothing about it.
    monkeypatch.setattr("ccexp.backends.lightning.TorchBackend.peak_is_host_memory", lambda self: False)
    metrics = run(compose_cfg(*FAST, "eval.generate_examples=0", "eval.baseline=false"), tmp_path / "gpu")
    assert "memory/start_mb" not in metrics


def test_failed_jobs_do_not_stop_the_sweep(tmp_path):
    """Errors found only as a job runs (a resume_from dir that is not there; nope_proj, found only
    once the model is built) each leave a failed job dir with its error; the other job finishes;
    the sweep says how many failed and exits 1. (A value validate() refuses, method.r=-1, stops
    the sweep before any job: tests/test_sweeps.py.)"""
    nowhere = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "ccexp", "-m", *FAST, "eval.baseline=false", "eval.generate_examples=0",
                           "method.target_modules=[q_proj],[nope_proj]", f"trainer.resume_from={nowhere},null",
                           f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    status = {job: json.loads((tmp_path / job / "metrics.json").read_text())["status"] for job in "0123"}
    assert status == {"0": "failed", "1": "finished", "2": "failed", "3": "failed"}
    resume = (f"trainer.resume_from={nowhere}: no such directory; expected a run dir with checkpoints/ or one of its "
              "checkpoints/step_NNNNNNN")
    assert (tmp_path / "0" / "error.txt").read_text() == resume + "\n"
    assert (tmp_path / "3" / "error.txt").read_text() == (
        "method.target_modules: ['nope_proj'] name no linear layer of this model (its linear layers: down_proj, "
        "gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj)\n")
    assert "Traceback" in (tmp_path / "3" / "traceback.txt").read_text()
    assert f"ccexp: error: {resume} (job 0, {tmp_path / '0'})" in proc.stderr
    assert f"ccexp: sweep {tmp_path}: 4 jobs: 1 finished, 3 failed (job 0: trainer.resume_from" in proc.stderr
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (4, 1, 3)
    assert "## Failed runs" in (tmp_path / "compare.md").read_text()


def test_failed_run_closes_wandb_as_failed(tmp_path, monkeypatch):
    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr("ccexp.run.evaluate", broken_evaluation)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run(compose_cfg(*FAST, "logger=wandb", "logger.mode=offline", "eval.baseline=false"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["train/steps"] == 4  # what it did before failing is kept
    run_file = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    exits = [r.exit.exit_code for r in wandb_records.records(run_file) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]


def test_a_search_run_without_its_objective_fails_with_its_tracker_run(tmp_path):
    """An Optuna job's run() is asked for objective.metric: without it the run fails, and its
    W&B run closes as failed with the reason in its summary (it had closed as a success)."""
    with pytest.raises(ConfigError, match=r"objective.metric: 'val/los' is not among this run's metrics \(did you "):
        run(compose_cfg(*FAST, "logger=wandb", "logger.mode=offline", "eval.baseline=false",
                        "eval.generate_examples=0"), tmp_path, required_metric="val/los")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"].startswith("objective.metric: 'val/los'")
    assert (tmp_path / "predictions.jsonl").is_file()  # what it generated is kept
    run_file = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    exits = [r.exit.exit_code for r in wandb_records.records(run_file) if r.WhichOneof("record_type") == "exit"]
    summary = wandb_records.summary(run_file)
    assert exits == [1] and summary["status"] == "failed" and summary["error"] == metrics["error"]


RESUMABLE = (*FAST, "trainer.max_steps=8", "trainer.val_every_n_steps=2", "trainer.save_every_n_steps=3",
             "trainer.limit_val_batches=null", "eval.generate_examples=0", "eval.baseline=false")


def test_a_resumed_run_is_the_whole_run(tmp_path):
    """12 examples in batches of 2: 6 steps an epoch. Resumed mid-epoch (step 3) or from the epoch's
    last step, whose validation ran before the checkpoint (step 6), training goes on exactly as the
    whole run did: the same batches, dropout masks, optimizer state, validations and best adapter."""
    from safetensors.torch import load_file

    whole = run(compose_cfg(*RESUMABLE), tmp_path / "whole")
    checkpoints = tmp_path / "whole" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000003", "step_0000006"]
    state = torch.load(checkpoints / "step_0000003" / "trainer_state.ckpt", weights_only=False)
    assert all("lora_" in key for key in state["state_dict"])  # the adapter, not the frozen base
    weights = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    for step in (3, 6):
        resumed = run(compose_cfg(*RESUMABLE, f"trainer.resume_from={checkpoints / f'step_{step:07d}'}"),
                      tmp_path / str(step))
        assert resumed["train/resumed_from_step"] == step
        for key in ("train/val_history", "train/steps", "train/epochs", "train/best_step", "train/tokens", "val/loss"):
            assert resumed[key] == whole[key], key
        again = load_file(tmp_path / str(step) / "adapter" / "adapter_model.safetensors")
        assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_run_resumed_from_an_epochs_last_step_without_validation_goes_on(tmp_path):
    """Validations every 4 steps, a checkpoint at step 6, the first epoch's last: saved at that
    batch's end, the resumed run took the epoch for done twice and stopped at step 6, finished.
    Runs of max_steps and of max_epochs alike."""
    from safetensors.torch import load_file

    for name, steps in (("steps", ("trainer.val_every_n_steps=4",)),  # max_steps=8
                        ("epochs", ("trainer.val_every_n_steps=4", "trainer.max_steps=-1", "trainer.max_epochs=2"))):
        common = (*RESUMABLE, *steps)
        whole = run(compose_cfg(*common), tmp_path / name / "whole")
        resumed = run(compose_cfg(*common, "trainer.resume_from="
                                  f"{tmp_path / name / 'whole' / 'checkpoints' / 'step_0000006'}"), tmp_path / name / "resumed")
        assert resumed["train/resumed_from_step"] == 6 and whole["train/steps"] == {"steps": 8, "epochs": 12}[name]
        for key in ("train/val_history", "train/steps", "train/epochs", "train/best_step", "train/tokens", "val/loss"):
            assert resumed[key] == whole[key], (name, key)
        weights, again = (load_file(tmp_path / name / d / "adapter" / "adapter_model.safetensors")
                          for d in ("whole", "resumed"))
        assert all(torch.equal(weights[k], again[k]) for k in weights), name


def test_a_resumed_qlora_run_is_the_whole_run(tmp_path):
    """QLoRA resumed between two validations (step 3 of validations at 2 and 4): on CPUs with
    AVX512-BF16, bitsandbytes would re-lay the 4-bit base out (scales in bf16) at the whole run's
    first validation and not before the resumed run's, so the two trained on different bases."""
    from safetensors.torch import load_file

    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("bitsandbytes re-lays 4-bit weights out only on CPUs with AVX512-BF16")
    common = (*RESUMABLE, "method=qlora", "trainer.max_steps=5")
    whole = run(compose_cfg(*common), tmp_path / "whole")
    resumed = run(compose_cfg(*common, f"trainer.resume_from={tmp_path / 'whole' / 'checkpoints' / 'step_0000003'}"),
                  tmp_path / "resumed")
    assert resumed["train/resumed_from_step"] == 3 and resumed["train/val_history"] == whole["train/val_history"]
    weights, again = (load_file(tmp_path / d / "adapter" / "adapter_model.safetensors") for d in ("whole", "resumed"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_named_run_dir_passes_over_a_damaged_latest_checkpoint_aloud(tmp_path, caplog):
    """auto warned when the latest step had no resume.json; a run dir named by path resumed from
    the step before it with an info line only. Naming its checkpoints/ folder was answered with
    checkpoints/checkpoints."""
    from ccexp.resume import STATE, find_checkpoint

    checkpoints = tmp_path / "job" / "checkpoints"
    (checkpoints / "step_0000003").mkdir(parents=True)
    (checkpoints / "step_0000003" / STATE).write_text("{}")
    (checkpoints / "step_0000006").mkdir()
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        assert find_checkpoint(str(tmp_path / "job"), tmp_path / "x") == checkpoints / "step_0000003"
    assert caplog.messages == [f"trainer.resume_from={tmp_path / 'job'}: passing over step_0000006 (no resume.json: "
                               "damaged); resuming from step_0000003"]
    with pytest.raises(ConfigError) as err:
        find_checkpoint(str(checkpoints), tmp_path / "x")
    assert str(err.value) == (f"trainer.resume_from={checkpoints}: a run's checkpoints folder; expected its run dir "
                              f"(trainer.resume_from={tmp_path / 'job'}) or one of its checkpoints/step_NNNNNNN")


def test_resume_auto_and_bad_checkpoints(tmp_path, caplog):
    """auto starts afresh where the run dir holds no checkpoint, and resumes where it does (a
    requeued job); a path without one, or another configuration, is refused in one line."""
    first = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "trainer.resume_from=auto"), tmp_path / "job")
    assert first["train/resumed_from_step"] == 0
    killed = json.dumps({"status": "running"})  # what a job killed after its last checkpoint leaves
    (tmp_path / "job" / "metrics.json").write_text(killed)
    again = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "trainer.resume_from=auto"), tmp_path / "job")
    assert again["train/resumed_from_step"] == 3 and again["train/val_history"] == first["train/val_history"]
    assert again["train/tokens_per_s"] is None  # resumed at its last step: no step ran, no speed
    (tmp_path / "empty").mkdir()
    (tmp_path / "mlx" / "checkpoints" / "step_0000003").mkdir(parents=True)  # an adapter-only checkpoint
    cases = [(str(tmp_path / "nope"), "no such directory"), (str(tmp_path / "empty"), "no checkpoint to resume"),
             (str(tmp_path / "mlx"), "step_0000003 has no resume.json: an adapter-only checkpoint"),
             (str(tmp_path / "mlx" / "checkpoints" / "step_0000003"), "step_0000003 has no resume.json")]
    for path, error in cases:
        with pytest.raises(ConfigError, match=error) as err:
            run(compose_cfg(*RESUMABLE, f"trainer.resume_from={path}"), tmp_path / "x")
        assert "\n" not in str(err.value)
    # auto in a run dir whose checkpoints are adapter-only: refused, not started afresh over them.
    with pytest.raises(ConfigError) as err:
        run(compose_cfg(*RESUMABLE, "trainer.resume_from=auto"), tmp_path / "mlx")
    assert str(err.value) == (f"trainer.resume_from=auto: {tmp_path / 'mlx' / 'checkpoints' / 'step_0000003'} has no "
                              "resume.json: an adapter-only checkpoint (backend=mlx saves those) or a damaged one; "
                              "expected a run dir of a backend=cpu or cuda run, or a new one")
    # auto past a damaged latest checkpoint: the whole one before it, and the one passed over said.
    (tmp_path / "job" / "checkpoints" / "step_0000006").mkdir()
    (tmp_path / "job" / "metrics.json").write_text(killed)
    with caplog.at_level(logging.WARNING, logger="ccexp"):
        again = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "trainer.resume_from=auto"), tmp_path / "job")
    assert again["train/resumed_from_step"] == 3
    assert "trainer.resume_from=auto: passing over step_0000006 (no resume.json: damaged); resuming from " \
           "step_0000003" in caplog.messages
    (tmp_path / "job" / "checkpoints" / "step_0000006").rmdir()
    (tmp_path / "job" / "metrics.json").write_text(killed)
    with pytest.raises(ConfigError, match=r"method\.r is 4 here but 16 in the checkpoint's run") as err:
        run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "method.r=4", f"trainer.resume_from={tmp_path / 'job'}"),
            tmp_path / "y")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"method\.name is 'qlora' here but 'lora' in the checkpoint's run"):
        run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "method=qlora", f"trainer.resume_from={tmp_path / 'job'}"),
            tmp_path / "y")  # the method, not a field that follows from it (gradient_checkpointing)
    # A checkpoint damaged after it was saved: its trainer state cut short, then gone.
    [checkpoint] = (tmp_path / "job" / "checkpoints").glob("step_*")
    state = checkpoint / "trainer_state.ckpt"
    state.write_bytes(state.read_bytes()[:200])
    damaged = "the checkpoint is damaged: resume from an earlier one, or start a new run without trainer.resume_from"
    with pytest.raises(ConfigError, match=rf"^{state}: unreadable \(.*\); {damaged}$"):
        run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", f"trainer.resume_from={checkpoint}"), tmp_path / "z")
    state.unlink()
    with pytest.raises(ConfigError, match=rf"^{state}: no such file; {damaged}$"):
        run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", f"trainer.resume_from={checkpoint}"), tmp_path / "z")


def test_sigterm_outside_lightnings_loop_is_recorded(tmp_path, monkeypatch):
    """SIGTERM while the torch backend builds its batches (before Lightning's loop, whose own
    handler ends a step first): raised and recorded, not the process ended with metrics.json
    saying "running"; the default handler back afterwards."""
    import signal

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    import ccexp.backends.lightning as lightning_backend

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # else the run keeps the handler it finds
    batches = lightning_backend.ChatDataModule

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return batches(*args, **kwargs)

    monkeypatch.setattr(lightning_backend, "ChatDataModule", terminated)
    with pytest.raises(SIGTERMException):
        run(compose_cfg(*FAST, "eval.baseline=false"), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["error"].startswith("interrupted by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_training_leaves_the_model_on_its_device(tmp_path, monkeypatch):
    """Lightning's teardown after every fit and validate moves the module to the CPU: after GPU
    training, evaluation sent its batches to the GPU and the weights were on the CPU (and a 7B
    base was copied ~15 GB each way). A no-op on a CPU, so the move itself is what is checked."""
    from ccexp.backends.lightning_modules import CompletionLM

    def cpu(self):
        raise AssertionError("the model was moved to the CPU")

    monkeypatch.setattr(CompletionLM, "cpu", cpu)
    metrics = run(compose_cfg(*FAST, "trainer.max_steps=2", "eval.baseline=false", "eval.generate_examples=0",
                              "eval.latency_examples=0"), tmp_path)
    assert metrics["status"] == "finished"


def _saved_checkpoint(tmp_path, config: dict):
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000020"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "resume.json").write_text(json.dumps({"step": 20, "config": config}))
    return checkpoint


def test_resume_compares_the_precision_a_run_trained_in_not_what_was_typed(tmp_path, monkeypatch):
    """backend.precision=auto is bf16-mixed on an AVX512-BF16 CPU and 32-true without: a checkpoint
    of auto on one resumed with auto on the other was taken (results differ), and bf16-mixed typed
    on the other refused as not 'auto'. What each became is compared, both named when they differ."""
    import ccexp.backends.lightning as lightning_backend
    from ccexp.config import validate
    from ccexp.resume import check_resumable, training_config

    def config(precision: str, bf16_cpu: bool) -> dict:
        monkeypatch.setattr(lightning_backend, "cpu_has_bf16", lambda: bf16_cpu)
        return training_config(validate(compose_cfg(*RESUMABLE, f"backend.precision={precision}")), "cpu")

    checkpoint = _saved_checkpoint(tmp_path, config("auto", bf16_cpu=True))
    assert check_resumable(checkpoint, config("bf16-mixed", bf16_cpu=False)) == 20
    with pytest.raises(ConfigError) as err:
        check_resumable(checkpoint, config("auto", bf16_cpu=False))
    assert str(err.value) == (f"trainer.resume_from={checkpoint}: backend.precision is 'auto' (32-true) here but "
                              "'auto' (bf16-mixed) in the checkpoint's run; a resumed run continues the same "
                              "configuration (set it back, or start a new run without trainer.resume_from)")
    # A checkpoint of an earlier ccexp, without what its precision became: what it has, compared.
    old = config("auto", bf16_cpu=True)
    for key in ("resolved_precision", "resolved_base_dtype"):
        old["backend"].pop(key)
    checkpoint = _saved_checkpoint(tmp_path, old)
    assert check_resumable(checkpoint, config("auto", bf16_cpu=False)) == 20
    with pytest.raises(ConfigError, match=r"backend\.precision is 'bf16-mixed' here but 'auto' in the checkpoint"):
        check_resumable(checkpoint, config("bf16-mixed", bf16_cpu=True))


def test_a_finished_run_is_not_resumed(tmp_path, caplog):
    """trainer.resume_from=<a finished run dir> retrained from its last checkpoint and evaluated
    again over its metrics.json: refused in one line (exit 2 at the command line) naming the
    evaluate command, the run dir untouched. auto in it (a requeued SLURM job that had finished)
    is a no-op that returns the run's metrics: the sweep and an Optuna study record the result
    it has, and error.txt is never written over a finished run."""
    run_dir = tmp_path / "job"
    first = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "trainer.resume_from=auto"), run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as err:
        run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", f"trainer.resume_from={run_dir}"), tmp_path / "new")
    assert str(err.value) == (f"trainer.resume_from={run_dir}: {run_dir} finished (metrics.json: status finished); "
                              "nothing to resume; its adapter is evaluated with python -m ccexp.evaluate "
                              f"adapter={run_dir}")
    with caplog.at_level(logging.INFO, logger="ccexp"):
        again = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3", "trainer.resume_from=auto"), run_dir)
    assert again == json.loads((run_dir / "metrics.json").read_text()) and again["val/loss"] == first["val/loss"]
    assert f"trainer.resume_from=auto: {run_dir} finished (metrics.json: status finished); nothing to resume" \
        in caplog.messages[-1]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # A checkpoint of a finished run named itself is resumed: a branch from that step.
    resumed = run(compose_cfg(*RESUMABLE, "trainer.max_steps=3",
                              f"trainer.resume_from={run_dir / 'checkpoints' / 'step_0000003'}"), tmp_path / "branch")
    assert resumed["train/resumed_from_step"] == 3


def test_the_summary_of_a_resumed_run_says_which_steps_ran_here(tmp_path):
    """Resumed from step 20 of 56: "trained 56 steps in 26s" read as if 56 steps took 26 s; the
    steps of this launch are named, and tokens/s is theirs (train/tokens counts the whole run)."""
    from rich.console import Console

    from ccexp.report import print_summary

    metrics = {"train/steps": 56, "train/seconds": 26.0, "train/resumed_from_step": 20, "train/tokens": 57344,
               "train/tokens_per_s": 1445.0, "train/best_step": 50, "adapter/size_mb": 0.06, "params/trainable": 14336}
    console = Console(record=True, width=200)
    print_summary(metrics, tmp_path, console)
    assert "trained 56 steps (36 here, resumed from step 20) in 26s (1445 tokens/s); best step 50" in console.export_text()
    console = Console(record=True, width=200)
    print_summary({**metrics, "train/resumed_from_step": 0}, tmp_path, console)
    assert "trained 56 steps in 26s (1445 tokens/s)" in console.export_text()


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    """Each launch of a resumed run was a W&B run of its own, the first left failed: the W&B run
    id is kept in the run dir and a resumed launch logs under it (offline, each launch's
    offline-run-*-<id> folder, which wandb sync uploads as one run, in order of start time)."""
    first = _wandb_launch(tmp_path / "job", failed=True)
    checkpoint = tmp_path / "job" / "checkpoints" / "step_0000003"
    assert _wandb_launch(tmp_path / "job", checkpoint) == first  # auto, in the same dir
    # resume_from=<an interrupted run> into a new run dir is how README continues a stopped run:
    # its W&B run was left failed, and this launch is the rest of it, so it goes on under its id.
    assert _wandb_launch(tmp_path / "elsewhere", checkpoint) == first
    # offline-run-<time>-<id>, and -1 after it for a second launch within the same second
    assert {p.name.split("-")[3] for p in tmp_path.glob("*/wandb/offline-run-*")} == {first}
    assert len(list(tmp_path.glob("*/wandb/offline-run-*"))) == 3
    assert _wandb_launch(tmp_path / "job") != first  # hydra.run.dir given again without resume_from: a new run


def test_a_branch_from_a_finished_run_is_a_wandb_run_of_its_own(tmp_path):
    """A branch (resume_from=<finished run>/checkpoints/step_N into a new run dir) took the
    finished run's W&B id with resume="allow": it reopened that run and wrote over its history and
    summary, and two branches were one W&B run. A branch now has an id of its own, which its own
    requeued launch (auto, in its dir) keeps."""
    done = _wandb_launch(tmp_path / "done")
    (tmp_path / "done" / "metrics.json").write_text(json.dumps({"status": "finished"}))
    checkpoint = tmp_path / "done" / "checkpoints" / "step_0000003"
    branch = _wandb_launch(tmp_path / "branch", checkpoint, failed=True)
    other = _wandb_launch(tmp_path / "other", checkpoint)
    assert len({done, branch, other}) == 3
    assert _wandb_launch(tmp_path / "branch", tmp_path / "branch" / "checkpoints" / "step_0000005") == branch


def _wandb_launch(run_dir, checkpoint=None, failed=False) -> str:
    """One offline W&B launch into ``run_dir`` (resuming ``checkpoint``): its W&B run id."""
    from ccexp.config import LoggerConfig
    from ccexp.tracking import build_logger, finish_logger

    logger = build_logger(LoggerConfig(mode="offline"), run_dir, "run", "group", {}, [], resumed=checkpoint)
    logger.log_metrics({"train/loss": 1.0}, step=1)
    finish_logger(logger, {"status": "failed" if failed else "finished"}, failed=failed)
    return logger.experiment.id


_SIGUSR1_AT = """
import os, signal, sys
import ccexp.backends.lightning as lightning_backend
from ccexp.backends.lightning_modules import CompletionLM
where = sys.argv.pop()
step, batches = CompletionLM.training_step, lightning_backend.ChatDataModule
def at_step(self, batch, batch_idx):
    if self.global_step == 2:
        os.kill(os.getpid(), signal.SIGUSR1)
    return step(self, batch, batch_idx)
def building_batches(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGUSR1)
    return batches(*args, **kwargs)
if where == "in training":
    CompletionLM.training_step = at_step
else:
    lightning_backend.ChatDataModule = building_batches
from ccexp.__main__ import cli
cli()
"""


@pytest.mark.parametrize("where", ["in training", "before training"])
def test_sigusr1_stops_a_run_as_sigterm_does(tmp_path, where):
    """SIGUSR1 (SLURM's --signal=USR1@N warning, Lightning's convention) ended the process at
    once: exit 138, metrics.json saying "running", no error.txt. Now as SIGTERM: in training at
    the end of the step (its checkpoint whole), said in one line, exit 138."""
    proc = subprocess.run([sys.executable, "-c", _SIGUSR1_AT, *RESUMABLE, "trainer.save_every_n_steps=2",
                           f"hydra.run.dir={tmp_path}", where], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 138, proc.stderr[-2000:]
    error = (tmp_path / "error.txt").read_text().strip()
    hint = (f"trainer.resume_from={tmp_path} resumes it from step 2" if where == "in training" else
            "no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed")
    assert error == f"interrupted by SIGUSR1 (a scheduler's warning before its time limit: SLURM's --signal); {hint}"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
    assert proc.stderr.splitlines()[-1] == f"ccexp: error: {error} ({tmp_path})"


@pytest.mark.parametrize("override,key", [
    ("eval.max_new_tokens=2048", "eval.max_new_tokens=2048"),
    ("+eval.max_new_tokens_by_task.issue=1900", "eval.max_new_tokens_by_task.issue=1900"),
])
def test_an_answer_cap_that_leaves_the_prompt_no_room_is_refused(override, key, tmp_path, tiny_dir):
    """Generation keeps context - cap prompt tokens: a cap at the tiny model's 2,048 positions cut
    every prompt to one token, and the run scored those answers as the model's, without a word."""
    with pytest.raises(ConfigError) as err:
        run(compose_cfg(*FAST, "task_mix=classification", override), tmp_path)
    assert str(err.value) == (f"{key}: leaves a prompt fewer than half of model.max_seq_len=512 tokens within the "
                              "model's context (max_position_embeddings=2048); expected at most 1792")
    assert not (tmp_path / "metrics.json").exists()
