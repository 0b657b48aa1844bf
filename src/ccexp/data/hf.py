"""Hugging Face ``datasets`` in and out: ``data=hf`` trains on a ``DatasetDict`` saved with
``save_to_disk`` (or parquet files, the Hub's format); ``to_dataset_dict`` turns any source's
splits into one, which ``python -m ccexp.data export`` saves beside the JSONL files.

Rows need a ``messages`` column (the chat format of the Hub's SFT datasets), checked like a
ChatML line. ``reference`` is stored as a JSON string: each task has its own fields, and an
Arrow column would give every row every task's fields, null-filled — a different reference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ccexp.config import ConfigError, DataConfig, DataSizeConfig
from ccexp.data.chatml import (chat_example, check_unique_ids, conversation_id, join_turns, prompt_of,
                                report_earlier_turns)
from ccexp.data.formats import KeyGivenTwice, check_messages, loads
from ccexp.data.splitting import SPLITS, holdout_splits, report_skipped, take

# What save_to_disk / the Hub call our splits (the first name is the one export writes).
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}

log = logging.getLogger("ccexp.data")


def to_dataset_dict(splits: dict[str, list[dict]]):
    """A ``datasets.DatasetDict`` (train / validation / test) of ccexp examples."""
    from datasets import Dataset, DatasetDict

    def rows(examples: list[dict]) -> dict[str, list]:
        return {"id": [ex["id"] for ex in examples],
                "conversation_id": [ex["conversation_id"] for ex in examples],
                "task": [ex["task"] for ex in examples],
                "messages": [ex["messages"] for ex in examples],
                "reference": [json.dumps(ex["reference"], ensure_ascii=False) for ex in examples]}

    return DatasetDict({SPLIT_NAMES[s][0]: Dataset.from_dict(rows(splits[s])) for s in SPLITS})


def _open(path: str, key: str):
    """A Dataset or DatasetDict from a save_to_disk directory or a parquet file."""
    import datasets
    from datasets import Dataset, load_from_disk

    datasets.disable_progress_bars()  # from_parquet's "Generating train split" bar, on stderr
    p = Path(path)
    if p.is_dir():
        if not (p / "dataset_dict.json").exists() and not (p / "dataset_info.json").exists():
            raise ConfigError(f"{path}: not a directory written by datasets' save_to_disk ({key}: expected "
                              "dataset_dict.json or dataset_info.json inside)")
        try:
            return load_from_disk(str(p))
        except Exception as err:  # datasets' and pyarrow's many error types
            raise ConfigError(f"{path}: datasets' load_from_disk cannot open it ({_why_unloadable(p, err)}; {key})") \
                from None
    if p.is_file() and p.suffix == ".parquet":
        # datasets logs a broken file's error itself (twice, by two loggers) before raising it;
        # the one line below says it.
        quiet = [logging.getLogger(n) for n in ("datasets", "datasets.packaged_modules.parquet.parquet")]
        levels = [q.level for q in quiet]
        try:
            for q in quiet:
                q.setLevel(logging.CRITICAL)
            return Dataset.from_parquet(str(p))
        except Exception as err:  # pyarrow's many error types; the first line says what broke
            raise ConfigError(f"{path}: unreadable parquet ({str(err).splitlines()[0]})") from None
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)
    if p.is_file():
        raise ConfigError(f"{path}: expected a save_to_disk directory or a .parquet file ({key})")
    raise ConfigError(f"{path}: no such file or directory ({key}; relative paths are resolved against {Path.cwd()})")


def _why_unloadable(directory: Path, err: Exception) -> str:
    """What load_from_disk failed on, in a few words: a split saved with no rows (datasets
    writes it without a data file and then cannot read it back) or the error's first line."""
    empty = []
    for state in sorted(directory.glob("*/state.json")):
        try:
            if not json.loads(state.read_text()).get("_data_files"):
                empty.append(state.parent.name)
        except (OSError, ValueError):
            pass
    if empty:
        return f"split {', '.join(empty)} has no rows; drop it or give it rows"
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def _rows(dataset, path: str) -> list[dict]:
    if "messages" not in dataset.column_names:
        raise ConfigError(f"{path}: no 'messages' column (columns: {', '.join(dataset.column_names)})")
    rows = []
    for number, row in enumerate(dataset, start=1):
        where = f"{path}: row {number}"
        reference: Any = row.get("reference")
        if isinstance(reference, str):
            try:
                reference = loads(reference)
            except KeyGivenTwice as err:
                raise ConfigError(f"{where}: 'reference': {err}") from None
            except json.JSONDecodeError:
                raise ConfigError(f"{where}: 'reference' is not JSON ({reference[:40]!r})") from None
        rows.append({**row, "reference": reference, "messages": check_messages(row, where), "line": number})
    return rows


def load_split(path: str, key: str, split: str | None = None) -> list[dict]:
    """Examples of one split: ``split`` picks it from a DatasetDict (None = the training split)."""
    opened = _open(path, key)
    if hasattr(opened, "keys"):  # a DatasetDict
        names = SPLIT_NAMES[split or "train"]
        name = next((n for n in names if n in opened), None)
        if name is None:
            raise ConfigError(f"{path}: no {' / '.join(names)} split (has: {', '.join(opened)}; {key})")
        opened, path = opened[name], f"{path}[{name}]"
    rows = _rows(opened, path)
    usable = [r for r in rows if all(m["content"].strip() for m in r["messages"])]
    report_skipped(path, {"with an empty message": len(rows) - len(usable)}, len(rows))
    examples = [chat_example(row, path, f"{path}: row {row['line']}") for row in usable]
    check_unique_ids(examples, [(f"{path}: row {row['line']}", f"row {row['line']}") for row in usable])
    join_turns(examples, usable)
    return examples


def build_hf(data: DataConfig, size: DataSizeConfig) -> dict[str, list[dict]]:
    """A DatasetDict directory gives its own validation/test splits when data.val_path /
    data.test_path are null; what it lacks is held out of train as for every importer."""
    loaded: dict[str, list[dict]] = {}  # by key: a split read for a check is not read again

    def load(path: str, key: str) -> list[dict]:
        if key not in loaded:
            loaded[key] = load_split(path, key, next((s for s in ("val", "test") if key == f"data.{s}_path"), None))
        return loaded[key]

    opened = _open(data.train_path, "data.train_path")
    if hasattr(opened, "keys"):
        known = {n for names in SPLIT_NAMES.values() for n in names}
        unused = [n for n in opened if n not in known]
        if unused:  # said, never dropped silently
            log.warning("%s: split%s %s not used (ccexp reads %s)", data.train_path, "s" * (len(unused) > 1),
                        ", ".join(unused), "; ".join(" / ".join(n) for n in SPLIT_NAMES.values()))
        own = {f"{s}_path": data.train_path for s in ("val", "test")
               if getattr(data, f"{s}_path") is None and any(n in opened for n in SPLIT_NAMES[s])}
        for split in ("val", "test"):  # a second validation split (validation and dev): said
            present = [n for n in SPLIT_NAMES[split] if n in opened]
            if f"{split}_path" in own and len(present) > 1:
                log.warning("%s: split %s is the %s split; %s not used", data.train_path, present[0], split,
                            ", ".join(present[1:]))
        if len(own) == 2 and {prompt_of(ex) for ex in load(data.train_path, "data.val_path")} <= \
                {prompt_of(ex) for ex in load(data.train_path, "data.test_path")}:
            # Some Hub datasets publish their test split again as validation: choosing the best
            # step on it would choose on the test rows. Validation is held out of train instead.
            log.warning("%s: its validation split repeats its test split; validation is held out of train "
                        "instead (data.val_path=<file> gives one)", data.train_path)
            del own["val_path"]
            del loaded["data.val_path"]  # data.val_path is null now: no split of that key is read
        data = replace(data, **own)
    splits = holdout_splits(data, load, conversation_id, prompt_of)
    report_earlier_turns(data, splits)
    return take(splits, size, data)
