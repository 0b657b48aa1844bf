"""build_splits: sizes, task shares, no conversation in two splits, determinism."""

from __future__ import annotations

import json

from ccexp.config import DataConfig, DataSizeConfig, TaskMixConfig
from ccexp.data import allocate, build_splits

ALL6 = {"quality": 1, "csat": 1, "issue": 1, "churn": 1, "journey": 1, "coaching": 1}


def test_allocate_is_exact_and_proportional():
    assert allocate({"a": 1, "b": 1}, 5) in ({"a": 3, "b": 2}, {"a": 2, "b": 3})
    assert allocate({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}
    counts = allocate(ALL6, 100)
    assert sum(counts.values()) == 100 and max(counts.values()) - min(counts.values()) <= 1


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
