"""Splits for the file importers: which rows go to train/val/test, and how many are kept.

A source hands over its rows (already parsed, with unusable ones counted and reported);
``holdout_splits`` reads val/test from their files or holds out seeded 10% slices of the
training file, and ``take`` applies data_size: the first N of a seeded shuffle, saying how
many of how many it kept.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Callable, TypeVar

from ccexp.config import ConfigError, DataConfig, DataSizeConfig

log = logging.getLogger("ccexp.data")

SPLITS = ("train", "val", "test")
HOLDOUT = 0.1  # share of the training file held out for each of val and test when their path is null

Row = TypeVar("Row")


def report_skipped(path: str, skipped: dict[str, int], total: int, noun: str = "rows") -> None:
    """One log line for the rows a source could not use (never dropped silently)."""
    if sum(skipped.values()):
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
        log.warning("%s: skipped %d of %d %s (%s)", path, sum(skipped.values()), total, noun, reasons)


def holdout_splits(data: DataConfig, load: Callable[[str, str], list[Row]],
                   conversation: Callable[[Row], str] | None = None,
                   content: Callable[[Row], str] | None = None) -> dict[str, list[Row]]:
    """Rows per split. ``load(path, key)`` reads one file; val/test without a path are
    seeded HOLDOUT slices of the training rows, which keep their file order. With
    ``conversation`` (a row's conversation id), rows of one conversation are held out together,
    so no conversation is in two splits; without it every row is a conversation of its own.
    With ``content`` (what a model is asked: a row's prompt or text), single-row conversations
    that ask the same thing are held out together too (``_groups``), held-out rows that still
    ask what a train row asks are counted in a warning, and val/test files are checked against
    train and test against val: a file whose every row is in the other is refused (the same
    file twice), some rows in both are counted in a warning."""
    train = load(data.train_path, "data.train_path")
    if not train:
        raise ConfigError(f"{data.train_path}: no usable rows for the train split")
    splits = {s: load(getattr(data, f"{s}_path"), f"data.{s}_path")
              for s in ("val", "test") if getattr(data, f"{s}_path") is not None}
    if content is not None:
        _refuse_same_file(data, train, splits, content)
    held = [s for s in ("val", "test") if s not in splits]
    rows_of: dict[str, list[int]] = {}  # conversation -> its rows, conversations in file order
    for i, group in enumerate(_groups(train, conversation, content)):
        rows_of.setdefault(group, []).append(i)
    order = list(rows_of.values())
    random.Random(f"{data.seed}/holdout").shuffle(order)
    n = max(1, round(len(train) * HOLDOUT))  # at least one row, so a small file still splits
    if held and len(train) <= n * len(held):
        paths = " / ".join(f"data.{s}_path" for s in held)
        raise ConfigError(f"{data.train_path}: {len(train)} usable rows are too few to hold out "
                          f"{' and '.join(held)} rows; give {paths}")
    if held and len(order) <= len(held):
        raise ConfigError(f"{data.train_path}: {len(order)} conversations are too few to hold out "
                          f"{' and '.join(held)} conversations whole; give "
                          + " / ".join(f"data.{s}_path" for s in held))
    for split in held:  # whole conversations, in shuffled order, those that fit in n rows
        taken: list[int] = []
        for rows in list(order):
            if len(order) == 1 or len(taken) >= n:  # the last conversation stays for train
                break
            if len(taken) + len(rows) <= n:
                taken += rows
                order.remove(rows)
        if not taken:  # every conversation is longer than n rows: the shortest one, said
            rows = min(order, key=len)
            taken, _ = list(rows), order.remove(rows)
            log.warning("%s: no conversation fits in a %d-row %s holdout (10%% of %d rows); holding out the "
                        "shortest, %d rows (%.0f%%); give data.%s_path to choose", data.train_path, n, split,
                        len(train), len(taken), 100 * len(taken) / len(train), split)
        splits[split] = [train[i] for i in sorted(taken)]
    splits["train"] = [train[i] for i in sorted(i for rows in order for i in rows)]
    if content is not None:
        _report_overlap(data, splits, held, content)
    for split in SPLITS:
        if not splits[split]:
            path = getattr(data, f"{split}_path") or data.train_path
            raise ConfigError(f"{path}: no usable rows for the {split} split")
    return {s: splits[s] for s in SPLITS}


def _groups(rows: list[Row], conversation: Callable[[Row], str] | None,
            content: Callable[[Row], str] | None) -> list[str]:
    """Each row's group, held out whole: its conversation; and rows that are a conversation of
    their own (a line without a conversation id) and ask the same thing are one group, so a
    file that repeats its lines cannot put a copy in test and one in train. Conversations of
    several rows are never joined: many open alike ("Hi"), and joining through any shared
    prompt would chain them into one group."""
    keys = [conversation(row) if conversation else str(i) for i, row in enumerate(rows)]
    if content is None:
        return keys
    size = Counter(keys)
    first_with: dict[str, str] = {}  # a single row's content -> the group of the first such row
    return [first_with.setdefault(content(row), key) if size[key] == 1 else key for key, row in zip(keys, rows)]


def _report_overlap(data: DataConfig, splits: dict[str, list[Row]], held: list[str],
                    content: Callable[[Row], str]) -> None:
    """Val/test rows that ask what a train row asks, and test rows that ask what a val row asks
    (validation picks the best step): counted in a warning. Counted in the final splits, after
    the holdout: a given test file's row that is also in the training file may sit in the val
    slice held out of it, and the warning says where it is."""
    seen = {content(row) for row in splits["train"]}
    for split in ("val", "test"):
        shared = sum(content(row) in seen for row in splits[split])
        if shared and split in held:  # a conversation repeated under another id
            log.warning("%s: %d of %d %s rows held out of it ask what a train row asks: their scores measure memory",
                        data.train_path, shared, len(splits[split]), split)
        elif shared:
            log.warning("%s: %d of %d %s rows are also in the train split (%s): their scores measure "
                        "memory", getattr(data, f"{split}_path"), shared, len(splits[split]), split, data.train_path)
    val = {content(row) for row in splits["val"]}
    shared = sum(content(row) in val for row in splits["test"])
    if shared:  # each split named by its file, or as held out of the training file
        log.warning("%s: %d of %d test rows%s are also in the val split (%s): the best step is chosen on them",
                    data.test_path or data.train_path, shared, len(splits["test"]),
                    "" if data.test_path else " held out of it", data.val_path or f"held out of {data.train_path}")


def _refuse_same_file(data: DataConfig, train: list[Row], given: dict[str, list[Row]],
                      content: Callable[[Row], str]) -> None:
    """Scores on rows the model trained on measure memory, not what it learned: a val/test file
    whose every row is in the training file (or a test file whose every row is in the val file)
    is the same file twice, refused before the holdout."""
    seen = {content(row) for row in train}
    for split, rows in given.items():
        if rows and all(content(row) in seen for row in rows):
            raise ConfigError(f"{getattr(data, f'{split}_path')}: all {len(rows)} {split} rows are also in the train "
                              f"split ({data.train_path}); expected held-out rows (the same file twice?)")
    if len(given) == 2:  # validation picks the best step: on test rows, the test score is chosen by itself
        val = {content(row) for row in given["val"]}
        if given["test"] and all(content(row) in val for row in given["test"]):
            raise ConfigError(f"{data.test_path}: all {len(given['test'])} test rows are also in the val split "
                              f"({data.val_path}); expected held-out rows (the same file twice?)")


def _shuffle(rows: list, seed: int, split: str) -> None:
    random.Random(f"{seed}/{split}").shuffle(rows)


def take(splits: dict[str, list[Row]], size: DataSizeConfig, data: DataConfig) -> dict[str, list[Row]]:
    """data_size caps each split: the first N rows after a seeded shuffle (all when fewer)."""
    out = {}
    for split in SPLITS:
        rows, wanted = list(splits[split]), getattr(size, split)
        _shuffle(rows, data.seed, split)
        where = getattr(data, f"{split}_path") or data.train_path
        if len(rows) < wanted:
            has = "1 example" if len(rows) == 1 else f"{len(rows)} examples"
            log.warning("%s: the %s split has %s, fewer than data_size.%s=%d; using %s",
                        where, split, has, split, wanted, "it" if len(rows) == 1 else f"all {len(rows)}")
        elif len(rows) > wanted:  # said, so a capped split is never mistaken for the whole file
            log.info("%s: the %s split uses %d of its %d examples (data_size=%s; data_size.%s=%d uses all)",
                     where, split, wanted, len(rows), size.name, split, len(rows))
        out[split] = rows[:wanted]
    return out


def unshuffled(rows: list[Row], seed: int, split: str) -> list[Row]:
    """The rows in the order that ``take``'s shuffle (data.seed ``seed``, every row kept) puts
    back as they are: an export read back trains in its source's order (the batches), not in a
    second shuffle of it."""
    where = list(range(len(rows)))
    _shuffle(where, seed, split)  # the shuffle's i-th row is the file's where[i]-th
    out: list = [None] * len(rows)
    for i, row in zip(where, rows):
        out[i] = row
    return out
