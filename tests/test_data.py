"""build_splits: sizes, task shares, no conversation in two splits, determinism."""

from __future__ import annotations

import json

import pytest

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, TaskMixConfig
from ccexp.data import allocate, build_splits

ALL6 = {"quality": 1, "csat": 1, "issue": 1, "churn": 1, "journey": 1, "coaching": 1}


def test_allocate_is_exact_and_proportional():
    assert allocate({"a": 1, "b": 1}, 5) in ({"a": 3, "b": 2}, {"a": 2, "b": 3})
    assert allocate({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}
    counts = allocate(ALL6, 100)
    assert sum(counts.values()) == 100 and max(counts.values()) - min(counts.values()) <= 1


def test_allocate_survives_huge_finite_weights():
    """Two weights of 1e308 sum past the largest float: shares must not become NaN."""
    assert allocate({"a": 1e308, "b": 1e308}, 4) == {"a": 2, "b": 2}
    assert allocate({"a": 1e308, "b": 1e-308}, 3) == {"a": 3, "b": 0}


def test_splits_sizes_tasks_and_disjoint_conversations():
    splits = build_splits(DataConfig(seed=7), DataSizeConfig(train=60, val=12, test=12), TaskMixConfig(weights=ALL6))
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 12, "test": 12}
    assert {ex["task"] for ex in splits["train"]} == set(ALL6)
    ids = [{ex["conversation_id"] for ex in split} for split in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for ex in splits["train"]:
        assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
        assert json.loads(ex["messages"][-1]["content"]) == ex["reference"]


def test_mix_weights_and_determinism():
    mix = TaskMixConfig(weights={"issue": 3, "journey": 1})
    a = build_splits(DataConfig(seed=1), DataSizeConfig(train=40, val=4, test=4), mix)
    b = build_splits(DataConfig(seed=1), DataSizeConfig(train=40, val=4, test=4), mix)
    c = build_splits(DataConfig(seed=2), DataSizeConfig(train=40, val=4, test=4), mix)
    assert a == b and a != c
    assert sum(ex["task"] == "issue" for ex in a["train"]) == 30


def test_a_split_is_the_same_whatever_the_other_splits_sizes():
    """A data_size sweep with one test size is scored on one test set, and a smaller size's val
    and test conversations are never a larger size's training conversations."""
    mix = TaskMixConfig(weights=ALL6)
    small = build_splits(DataConfig(seed=3), DataSizeConfig(train=30, val=6, test=12), mix)
    large = build_splits(DataConfig(seed=3), DataSizeConfig(train=120, val=24, test=12), mix)
    assert small["test"] == large["test"]
    larger_test = build_splits(DataConfig(seed=3), DataSizeConfig(train=30, val=6, test=24), mix)["test"]
    assert [ex["conversation_id"] for ex in larger_test[:12]] == [ex["conversation_id"] for ex in small["test"]]
    trained = {ex["conversation_id"] for ex in large["train"]}
    assert {ex["conversation_id"] for ex in small["train"]} <= trained
    assert not trained & {ex["conversation_id"] for split in ("val", "test") for ex in small[split] + larger_test}


def test_a_synthetic_split_past_the_generators_range_is_one_line():
    with pytest.raises(ConfigError, match=r"^data_size\.train: expected at most 1,000,000 for data=synthetic"):
        build_splits(DataConfig(), DataSizeConfig(train=1_000_001, val=1, test=1), TaskMixConfig(weights=ALL6))
