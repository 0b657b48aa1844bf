"""``data=csv`` / ``data=jsonl``: text classification from a table with a column mapping.

Each row becomes one ``classify`` example: the instruction, the allowed labels (the sorted
distinct labels of the train split, so the model is never asked for a label it cannot have
seen) and the text; the answer is ``{"label": "<label>"}``, scored by exact match.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Iterator, NamedTuple

from ccexp.config import ConfigError, DataConfig, DataSizeConfig
from ccexp.data.chatml import fold
from ccexp.data.formats import no_column, read_csv, read_jsonl
from ccexp.data.splitting import holdout_splits, report_skipped, take
from ccexp.data.tasks import SYSTEM_PROMPT, label_text

log = logging.getLogger("ccexp.data")


class Row(NamedTuple):
    id: str
    text: str
    label: str


def _jsonl_records(path: str, key: str, needed: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    for number, row in read_jsonl(path, key):
        for column in needed:
            if column not in row:
                raise no_column(path if number == 1 else f"{path}:{number}", column, row)
        yield number, row


# A missing value written as text: an export's NaN (``astype(str)`` turns it into "nan"), pandas'
# <NA>, SQL's NULL. Not a class to learn. "None", "N/A" and "NA" stay labels: LUIS's "None"
# intent, a region "NA" and an "N/A" category are real classes in real data.
MISSING_LABELS = frozenset({"nan", "NaN", "-nan", "-NaN", "<NA>", "NULL", "null"})


def _cell(value, where: str, column: str) -> str:
    """A cell as text: JSON strings as written, numbers and true/false as JSON writes them (so 1
    and 1.0, or true and "true", are one label); null and NaN (pandas' missing value) as empty,
    so the row is counted as skipped; anything else names the line."""
    if value is None or isinstance(value, float) and value != value:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, float) and value in (math.inf, -math.inf):
        # bool is an int: a binary label. Infinity (Python's json reads it; 1e400 too) is no label.
        raise ConfigError(f"{where}: {column!r}: expected text, a number or true/false, got "
                          f"{json.dumps(value)[:60]}")
    return label_text(value)


def load_rows(data: DataConfig, path: str, key: str) -> list[Row]:
    """Rows of one file with a text and a label; others are skipped and counted."""
    records = partial(read_csv, path, key) if data.name == "csv" else partial(_jsonl_records, path, key)
    rows, total = [], 0
    skipped = {"with empty text": 0, "with no label": 0, "with a missing-value label (NaN, <NA>, NULL)": 0}
    for number, record in records((data.text_column, data.label_column)):
        total += 1
        where = f"{path}:{number}"
        text, label = (_cell(record.get(c), where, c) for c in (data.text_column, data.label_column))
        if not text or not label or label in MISSING_LABELS:
            skipped["with empty text" if not text else "with no label" if not label else
                    "with a missing-value label (NaN, <NA>, NULL)"] += 1
            continue
        # Ids number a CSV's records (as they always have, so runs' predictions still join) and a JSONL's lines.
        rows.append(Row(f"{data.task_name}/{Path(path).name}:{total if data.name == 'csv' else number}", text, label))
    report_skipped(path, skipped, total)
    return rows


def classify_prompt(data: DataConfig, labels: list[str], text: str) -> str:
    allowed = ", ".join(f'"{label}"' for label in labels)
    return (f'{data.instruction} Answer with one JSON object {{"label": <the {data.task_name}>}}, '
            f"the {data.task_name} being one of {allowed}.\n\nCustomer: {text}")


def classify_example(data: DataConfig, labels: list[str], row: Row) -> dict:
    reference = {"label": row.label}
    return {"id": row.id, "conversation_id": row.id, "task": "classify", "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": classify_prompt(data, labels, row.text)},
        {"role": "assistant", "content": json.dumps(reference, separators=(",", ": "), ensure_ascii=False)},
    ], "reference": reference}


def _same_text(row: Row) -> str:
    """Texts equal but for case and spacing are one conversation (labelled alike or not): held
    out together, never in two splits ("reset my password?" is common in real support data)."""
    return fold(row.text)


def build_tabular(data: DataConfig, size: DataSizeConfig) -> dict[str, list[dict]]:
    splits = holdout_splits(data, lambda path, key: load_rows(data, path, key), _same_text, _same_text)
    labels = sorted({row.label for row in splits["train"]})
    if len(labels) < 2:  # nothing to tell apart: most likely data.label_column names the wrong column
        raise ConfigError(f"{data.train_path}: every train row has the {data.label_column!r} {labels[0]!r}; "
                          f"expected at least two labels (data.label_column={data.label_column})")
    for split in ("val", "test"):
        unseen = sum(row.label not in labels for row in splits[split])
        if unseen:
            log.warning("%s: %d %s examples have a label the train split lacks (they cannot be answered)",
                        getattr(data, f"{split}_path") or data.train_path, unseen, split)
    kept = take(splits, size, data)
    return {split: [classify_example(data, labels, row) for row in rows] for split, rows in kept.items()}
