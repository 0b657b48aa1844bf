"""``python -m ccexp``: Hydra entry point. Returns the metric a sweep optimises."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ccexp.config import ConfigError

# A wheel carries the configs inside the package; a source checkout keeps them in ./conf.
_PACKAGED = Path(__file__).parent / "conf"
CONFIG_DIR = str(_PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    # bitsandbytes warns at import that it cannot fetch optional CPU kernels from the hub;
    # we never download at run time, and its built-in CPU path is what runs.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from ccexp.run import run

    hc = HydraConfig.get()
    name = ",".join(hc.overrides.task) or "default"
    sweep = hc.mode == RunMode.MULTIRUN
    # In a sweep every job of one multirun shares a W&B group named after its sweep dir.
    group = Path(hc.sweep.dir).name if sweep else None
    try:
        metrics = run(cfg, Path(hc.runtime.output_dir), run_name=name, group=group)
    except ConfigError as err:
        print(f"ccexp: error: {err}", file=sys.stderr)
        if sweep:  # one bad sweep point must not stop the other jobs
            return float("nan")
        sys.exit(2)
    return float(metrics.get("val/loss", float("nan")))


if __name__ == "__main__":
    main()
