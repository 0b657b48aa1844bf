"""``data=chatml``: train on a user's ChatML JSONL files (one conversation per line).

Each line becomes one example that learns its last assistant turn, as task ``chat`` with
reference ``{"reply": <that turn>}``. A line written by ``python -m ccexp.data export``
keeps its own ``task`` and ``reference``, so exported data is scored as it was generated.
"""

from __future__ import annotations

from pathlib import Path

from ccexp.config import DataConfig, DataSizeConfig
from ccexp.data.formats import read_chatml
from ccexp.data.splitting import holdout_splits, report_skipped, take
from ccexp.data.tasks import TASK_FIELDS


def _task_and_reference(row: dict) -> tuple[str, dict]:
    task, reference = row.get("task"), row.get("reference")
    if task in TASK_FIELDS and isinstance(reference, dict) and all(f in reference for f in TASK_FIELDS[task]):
        return task, reference
    return "chat", {"reply": row["messages"][-1]["content"]}


def chat_example(row: dict, path: str) -> dict:
    example_id = str(row.get("id") or f"{Path(path).name}:{row['line']}")
    task, reference = _task_and_reference(row)
    return {"id": example_id, "conversation_id": str(row.get("conversation_id") or example_id),
            "task": task, "messages": row["messages"], "reference": reference}


def load_chat(path: str, key: str) -> list[dict]:
    """Examples of one file; a line with an empty message is skipped and counted."""
    rows = read_chatml(path, key)
    usable = [r for r in rows if all(m["content"].strip() for m in r["messages"])]
    report_skipped(path, {"with an empty message": len(rows) - len(usable)}, len(rows))
    return [chat_example(row, path) for row in usable]


def build_chatml(data: DataConfig, size: DataSizeConfig) -> dict[str, list[dict]]:
    return take(holdout_splits(data, load_chat), size, data)
