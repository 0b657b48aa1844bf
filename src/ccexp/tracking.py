"""Experiment tracking: W&B (online with an API key, else offline under the run dir), CSV, none.

Never a network hang: without a key W&B runs offline and writes ``<run dir>/wandb/offline-run-*``,
which ``wandb sync`` uploads later.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Optional

from ccexp.config import LoggerConfig


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
    if os.environ.get("WANDB_MODE") in ("online", "offline"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_api_key_configured() else "offline"


def build_logger(cfg: LoggerConfig, run_dir: Path, name: str, group: str, config: dict, tags: list[str]) -> Optional[Any]:
    if cfg.name == "none":
        return None
    if cfg.name == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    return WandbLogger(
        project=cfg.project, entity=cfg.entity, name=name, group=group, tags=tags, config=config,
        save_dir=str(run_dir), mode=wandb_mode(cfg),
        settings=wandb.Settings(init_timeout=90, console="off", quiet=True),
    )


def finish_logger(logger: Optional[Any], metrics: dict[str, Any], failed: bool) -> None:
    """Put every scalar metric in the run summary and close the run (marked failed on error)."""
    if logger is None:
        return
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        run = logger.experiment
        run.summary.update(scalars)
        run.finish(exit_code=1 if failed else 0)
    else:
        if scalars:
            logger.log_metrics(scalars)
        logger.save()
