"""The benchmark's configuration: the project's own config groups plus overrides."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from ccexp.config import RunConfig, mix_given_whole, validate


def compose_run_config(overrides: list[str]) -> RunConfig:
    from ccexp.__main__ import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    mix_given_whole(cfg, overrides)  # task_mix.weights={...} is the mix, as python -m ccexp trains it
    return validate(cfg)
