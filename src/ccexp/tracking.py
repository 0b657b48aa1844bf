"""Experiment tracking: W&B (online with an API key, else offline under the run dir), CSV, none.

Never a network hang: without a key W&B runs offline and writes ``<run dir>/wandb/offline-run-*``,
which ``wandb sync`` uploads later; with a key but no way to reach W&B (an offline cluster node),
the run waits out one init timeout and then logs offline, saying so in one line.
"""

from __future__ import annotations

import csv
import json
import math
import netrc
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning.loggers import CSVLogger

from ccexp.config import LoggerConfig, first_line
from ccexp.resume import finished_metrics


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
        auth = netrc.netrc(path).authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg: LoggerConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    # wandb's own switch, read as wandb reads it (config.check_wandb_mode refuses what wandb
    # refuses): the mode ccexp passes to wandb.init overrides it.
    env = os.environ.get("WANDB_MODE", "")
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":  # wandb's older name for offline
        return "offline"
    return "online" if wandb_api_key_configured() else "offline"


# How long wandb.init waits for W&B before an online run logs offline instead.
INIT_TIMEOUT_S = 90


# Why W&B could not be reached, once it could not in this process: each later run (a sweep's jobs
# in one process) logs offline at once rather than wait out the init timeout again (90 s a job).
_unreachable: Optional[str] = None

# The W&B run id of a run dir's run: a resumed launch continues that W&B run.
WANDB_RUN_ID = Path("wandb") / "ccexp_run_id"


def build_logger(cfg: LoggerConfig, run_dir: Path, name: str, group: str, config: dict, tags: list[str],
                 resumed: Optional[Path] = None) -> Optional[Any]:
    """``resumed``: the checkpoint this launch resumes from; its run's W&B run goes on unless that
    run finished in another run dir (a branch: see ``continued_run``)."""
    if cfg.name == "none":
        return None
    if cfg.name == "csv":
        return csv_logger(run_dir)
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    def wandb_logger(mode: str) -> WandbLogger:
        # Lightning passes resume="allow": the id's run continues where it exists, starts where not
        logger = WandbLogger(
            id=run_id, project=cfg.project, entity=cfg.entity, name=name, group=group, tags=tags, config=config,
            save_dir=str(run_dir), mode=mode,
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", quiet=True),
        )
        # Lightning always hands wandb.init an ``anonymous`` setting (None unless asked), and wandb
        # 0.31 warns that the setting has no effect whenever it is given at all.
        logger._wandb_init.pop("anonymous", None)
        return logger

    mode = wandb_mode(cfg)
    if mode == "disabled":  # WANDB_MODE=disabled: no W&B run at all (metrics.json is the record)
        return None
    run_id = wandb_run_id(run_dir, resumed)
    global _unreachable
    if mode == "online" and _unreachable is not None:  # a sweep's next job: not another init timeout
        print(f"ccexp: warning: W&B online: not reached by an earlier run in this process ({_unreachable}); this "
              f"run logs offline to {run_dir / 'wandb'} (wandb sync uploads it later)", file=sys.stderr, flush=True)
        mode = "offline"
    if mode == "offline":
        offline_process(wandb)
    logger = wandb_logger(mode)
    if mode == "online":
        # The run starts here rather than at the first logged step: a W&B that cannot be reached
        # (or refuses the key) would otherwise fail the run mid-training, and fail it again when
        # the run is closed, each after the init timeout.
        earlier = set((run_dir / "wandb").glob("run-*"))
        try:
            logger.experiment
        except Exception as err:  # noqa: BLE001 - wandb's CommError, AuthenticationError, timeouts
            _unreachable = first_line(err)
            print(f"ccexp: warning: W&B online: {_unreachable}; this run logs offline to {run_dir / 'wandb'} "
                  "(wandb sync uploads it later)", file=sys.stderr, flush=True)
            # The wandb service keeps the failed attempt's run: the offline run, of the same id, failed
            # as "run ID ... is in use" at its first logged step, and the training with it.
            wandb.teardown()
            # The failed attempt's folder, which `wandb sync --sync-all` would take for a run of its own.
            for attempt in set((run_dir / "wandb").glob("run-*")) - earlier:
                shutil.rmtree(attempt, ignore_errors=True)
            offline_process(wandb)
            logger = wandb_logger("offline")
    return logger


def wandb_run_id(run_dir: Path, resumed: Optional[Path]) -> str:
    """The W&B run id of the checkpoint's run (``<its run dir>/wandb/ccexp_run_id``) when this
    launch continues that run, else a new one; kept in ``run_dir`` for the next launch. Offline,
    each launch writes its own ``offline-run-*-<id>`` folder: wandb 0.31's ``wandb sync`` uploads
    the folders of one id as one run, in order of start time."""
    saved = continued_run(run_dir, resumed)
    try:
        run_id = (saved / WANDB_RUN_ID).read_text().strip() if saved is not None else ""
    except OSError:  # its run logged to CSV or nothing, or ran before ccexp kept the id
        run_id = ""
    run_id = run_id or secrets.token_hex(4)  # 8 characters, as wandb's own ids
    (run_dir / WANDB_RUN_ID).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / WANDB_RUN_ID).write_text(run_id + "\n")
    return run_id


def continued_run(run_dir: Path, resumed: Optional[Path]) -> Optional[Path]:
    """The run dir whose W&B run this launch goes on with: the checkpoint's own, where it is this
    run dir (auto, a requeued job) or its run did not finish (resume_from=<an interrupted run>).
    A checkpoint of a finished run starts a branch, a W&B run of its own: resume="allow" under the
    finished run's id would write over its history and summary, and two branches would be one run."""
    if resumed is None:
        return None
    earlier = resumed.parent.parent  # <run dir>/checkpoints/step_N
    if earlier.resolve() == run_dir.resolve() or finished_metrics(earlier) is None:
        return earlier
    return None


def offline_process(wandb) -> None:
    """wandb 0.31 sends usage telemetry (histograms of its own timings) to its server from an
    offline run too: it asks the process-wide settings, not the run's, whether it is offline,
    and a run made offline by ``wandb.init(mode="offline")`` posted to api.forge.coreweave.com.
    Offline process-wide as well, then. A later online run in the process (a sweep's next job)
    still goes online: the run's own mode wins."""
    wandb.setup(settings=wandb.Settings(mode="offline"))


class StepCSVLogger(CSVLogger):
    """Lightning's CSV logger in ``<run dir>/csv``, knowing the last step it was given: the final
    row of a run stopped in training goes there (Lightning's default is the count of rows not
    yet written, 0 after a flush)."""

    def __init__(self, run_dir: Path, last_step: int = 0):
        super().__init__(save_dir=str(run_dir), name="csv", version="")
        self.last_step = last_step

    def log_metrics(self, metrics, step=None):
        if step is not None:
            self.last_step = max(self.last_step, int(step))
        super().log_metrics(metrics, step)


def csv_logger(run_dir: Path) -> StepCSVLogger:
    earlier, last_step = run_dir / "csv", 0
    if earlier.is_dir() and any(earlier.iterdir()):
        # An earlier launch in this run dir (trainer.resume_from=auto after a requeue): Lightning
        # would delete its metrics.csv, the curve before the checkpoint with it. Kept beside; this
        # launch's steps go on from its last.
        last_step = _last_step(earlier / "metrics.csv")
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(earlier.stat().st_mtime))
        kept = run_dir / f"csv.until_{stamp}"
        n = 1
        while kept.exists():  # two launches within a second
            kept, n = run_dir / f"csv.until_{stamp}.{n}", n + 1
        earlier.rename(kept)
    return StepCSVLogger(run_dir, last_step)


def _last_step(path: Path) -> int:
    try:
        with open(path, newline="") as f:
            return max((int(float(row["step"])) for row in csv.DictReader(f) if row.get("step")), default=0)
    except (OSError, ValueError, KeyError):  # no file, a damaged one: the curve starts at 0 as before
        return 0


def finish_logger(logger: Optional[Any], metrics: dict[str, Any], failed: bool) -> None:
    """Put every scalar metric in the run summary and close the run (marked failed on error)."""
    if logger is None:
        return
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        run = logger.experiment
        # null metrics (e.g. an MAE with no numeric answer) stay visible as null, as in metrics.json
        run.summary.update({**scalars, **{k: None for k, v in metrics.items() if v is None}})
        if failed:  # why, next to the exit code
            run.summary.update({"status": metrics.get("status", "failed"), "error": metrics.get("error", "")})
        run.finish(exit_code=1 if failed else 0)
    else:
        # At the last training step, after the curves (not at step 0); the curves' own keys left
        # out: the final val/loss is the best adapter's, a point at the last step the curve never
        # had (metrics.json has it). No value (an MAE with no numeric answer) is NaN, not left out.
        final = {k: math.nan if v is None else v for k, v in metrics.items()
                 if (v is None or k in scalars) and k not in CURVES}
        if final:
            # A run stopped in training has no train/steps: its last logged step, not Lightning's
            # default (the count of rows not yet written, 0 after a flush).
            step = metrics.get("train/steps")
            logger.log_metrics(final, step=step if step is not None else logger.last_step)
        logger.save()


# What the backends log during training, step by step (the loss and validation curves).
CURVES = ("train/loss", "train/lr", "val/loss", "val/ppl")


def log_predictions(logger: Optional[Any], predictions: list[dict]) -> None:
    """The prediction records as a W&B table (``predictions.jsonl`` has them for every logger)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or not predictions:
        return
    columns = ["id", "task", "model", "reference", "raw", "json_valid", "correct", "seconds"]
    rows = [[r["id"], r["task"], r["model"], json.dumps(r["reference"]), r["raw"], r["json_valid"],
             json.dumps(r["correct"]), r["seconds"]] for r in predictions]
    logger.log_table(key="predictions", columns=columns, data=rows)


def log_adapter(logger: Optional[Any], cfg: LoggerConfig, adapter_dir: Path, run_name: str) -> None:
    """The adapter as a W&B model artifact: by default only when online (offline runs keep it
    in the run dir, and ``wandb sync`` would upload megabytes nobody asked for)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    run = logger.experiment
    wanted = cfg.adapter_artifact if cfg.adapter_artifact is not None else not run.offline
    if not wanted:
        return
    import wandb

    artifact = wandb.Artifact(name=f"adapter-{run.id}", type="model", metadata={"run_name": run_name})
    artifact.add_dir(str(adapter_dir))
    run.log_artifact(artifact)
