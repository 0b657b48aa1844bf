"""Data: examples are plain dicts ``{id, conversation_id, task, messages, reference}``.

Plain dicts, not an Arrow table, because each task's ``reference`` has its own fields (a
``datasets`` column would null-fill every task's fields into every row); ``to_dataset_dict``
gives the same splits as a ``datasets.DatasetDict`` (reference as JSON) for notebooks and the
Hub, and ``data=hf`` reads one back.

``build_splits`` is the one entry the run uses; every source (the synthetic generator, or an
importer of the user's files: one module each) returns train/val/test lists of such
examples, with no conversation in two splits.
"""

from __future__ import annotations

import random

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, TaskMixConfig
from ccexp.data.chatml import build_chatml
from ccexp.data.hf import build_hf, to_dataset_dict
from ccexp.data.synthetic import generate_conversations
from ccexp.data.tabular import build_tabular
from ccexp.data.twcs import build_twcs
from ccexp.data.tasks import task_examples

SPLITS = ("train", "val", "test")
__all__ = ["SPLITS", "build_splits", "to_dataset_dict"]


def allocate(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n examples over tasks by weight (largest remainder: counts sum to n exactly)."""
    # Relative to the largest first: finite weights near the float limit would sum to inf.
    largest = max(weights.values())
    scaled = {task: w / largest for task, w in weights.items()}
    total = sum(scaled.values())
    exact = {task: n * w / total for task, w in scaled.items()}
    counts = {task: int(v) for task, v in exact.items()}
    by_remainder = sorted(exact, key=lambda t: (counts[t] - exact[t], t))
    for task in by_remainder[: n - sum(counts.values())]:
        counts[task] += 1
    return counts


def build_splits(data: DataConfig, size: DataSizeConfig, mix: TaskMixConfig) -> dict[str, list[dict]]:
    """Train/val/test examples from ``data.name``'s source; files are read here, not when
    the config is validated. The importers have one task each and ignore ``mix``."""
    importers = {"chatml": build_chatml, "hf": build_hf, "csv": build_tabular, "jsonl": build_tabular, "twcs": build_twcs}
    if data.name in importers:
        return importers[data.name](data, size)
    return build_synthetic(data, size, mix)


# Each split draws its conversations from its own range of the generator's indices, so a split
# is the same conversations whatever the other splits' sizes: data_size=tiny's 18 test
# conversations are the first 18 of small's and full's, a data_size sweep with one data_size.test
# is scored on one test set, and no size trains on another size's val or test conversations.
SPLIT_START = {"train": 0, "test": 1_000_000, "val": 2_000_000}
SPLIT_RANGE = 1_000_000


def build_synthetic(data: DataConfig, size: DataSizeConfig, mix: TaskMixConfig) -> dict[str, list[dict]]:
    """One conversation per example: the most variety for a given token budget, and splits
    that share no conversation by construction."""
    sizes = {"train": size.train, "val": size.val, "test": size.test}
    splits = {}
    for split in SPLITS:
        if sizes[split] > SPLIT_RANGE:
            raise ConfigError(f"data_size.{split}: expected at most {SPLIT_RANGE:,} for data=synthetic (each split "
                              f"draws from its own {SPLIT_RANGE:,} conversations), got {sizes[split]:,}")
        convs = generate_conversations(sizes[split], seed=data.seed, start=SPLIT_START[split])
        tasks = [t for t, c in allocate(mix.weights, len(convs)).items() for _ in range(c)]
        random.Random(f"{data.seed}/{split}").shuffle(tasks)
        splits[split] = [task_examples(conv, [task])[0] for conv, task in zip(convs, tasks)]
    return splits
