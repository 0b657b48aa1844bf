"""Each speed-up keeps results equivalent: the optimised path's loss curve matches the plain one
on the tiny model within a tolerance (bf16 rounding), and the benchmark's sides do the same work."""

from __future__ import annotations

import pytest
from conftest import FAST, compose_cfg

from ccexp.run import run

QUIET = (*FAST, "eval.generate_examples=0", "eval.baseline=false", "trainer.val_every_n_steps=1",
         "trainer.early_stopping_patience=0", "backend=cpu", "backend.precision=bf16-mixed")


def test_bf16_base_weights_match_fp32_weights_under_autocast(tmp_path):
    plain = run(compose_cfg(*QUIET, "backend.base_dtype=float32"), tmp_path / "fp32")
    fast = run(compose_cfg(*QUIET, "backend.base_dtype=bfloat16"), tmp_path / "bf16")
    a = [h["val_loss"] for h in plain["train/val_history"]]
    b = [h["val_loss"] for h in fast["train/val_history"]]
    assert len(a) == len(b) == 4
    assert b == pytest.approx(a, rel=2e-3)
    assert a[-1] < a[0] and b[-1] < b[0]  # both still learn
