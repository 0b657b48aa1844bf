"""Shared fixtures: composed configs and the tiny model (a 2-layer random Llama, built once)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Caches the tests would fill in the user's home (datasets' parquet cache: an entry per temporary
# file read) go to one folder of the temp dir; set before anything imports datasets or wandb.
for _name, _sub in (("HF_DATASETS_CACHE", "hf-datasets"), ("WANDB_CACHE_DIR", "wandb-cache"),
                    ("WANDB_DATA_DIR", "wandb-data")):
    os.environ.setdefault(_name, str(Path(tempfile.gettempdir()) / "ccexp-tests" / _sub))

import pytest  # noqa: E402 - after the cache settings
from hydra import compose, initialize_config_dir  # noqa: E402

from ccexp.__main__ import CONFIG_DIR  # noqa: E402


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# Small enough that a test trains in seconds; every run-level test starts from these.
FAST = ("model=tiny", "trainer=fast", "data_size=tiny", "data_size.train=12", "data_size.val=4",
        "data_size.test=6", "eval.generate_examples=6", "eval.max_new_tokens=8", "~eval.max_new_tokens_by_task",
        "logger=none")


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from ccexp.config import validate
    from ccexp.models import resolve_model_dir

    return resolve_model_dir(validate(compose_cfg("model=tiny")).model)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from ccexp.models import load_tokenizer

    return load_tokenizer(tiny_dir)
