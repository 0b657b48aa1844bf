"""Files in and out: UTF-8 text, JSON lines, ChatML JSONL and the mlx-lm data layout.

A ChatML line is ``{"messages": [{"role": ..., "content": ...}, ...]}``; ccexp writes its
``id``, ``task`` and ``reference`` next to the messages, so a written split reads back into
the same examples. Every problem in a file is a ``ConfigError`` of one line naming the file
(and line), because the user fixes the file, not the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from ccexp.config import ConfigError

ROLES = ("system", "user", "assistant")
# mlx-lm's LoRA trainer reads <dir>/train.jsonl, valid.jsonl and test.jsonl.
MLX_FILES = {"train": "train.jsonl", "val": "valid.jsonl", "test": "test.jsonl"}


def require_file(path: str | Path, key: str = "") -> Path:
    """The path, or a one-line error naming the config key and where relative paths start."""
    path = Path(path)
    if not path.is_file():
        where = f"{key}; " if key else ""
        raise ConfigError(f"{path}: no such file ({where}relative paths are resolved against {Path.cwd()})")
    return path


def read_text(path: str | Path, key: str = "") -> str:
    """The whole file as text; a missing file or one that is not UTF-8 fails in one line."""
    data = require_file(path, key).read_bytes()
    try:
        return data.decode("utf-8-sig")  # a BOM from a spreadsheet export is harmless
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None  # 0-based offset


def read_jsonl(path: str | Path, key: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line."""
    for number, line in enumerate(read_text(path, key).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def check_messages(row: dict, where: str) -> list[dict]:
    """The row's messages, checked: a list of {role, content} with known roles, ending with
    the assistant turn the model learns to write."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: no 'messages' list")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ConfigError(f"{where}: each message needs a 'role' and a string 'content'")
        if message.get("role") not in ROLES:
            raise ConfigError(f"{where}: unknown role {message.get('role')!r} (expected system, user or assistant)")
    if messages[-1]["role"] != "assistant":
        raise ConfigError(f"{where}: last message is from {messages[-1]['role']!r}, expected 'assistant'")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_chatml(path: str | Path, key: str = "") -> list[dict]:
    """Rows of a ChatML JSONL file: checked ``messages`` plus any other keys as written,
    and ``line``, the row's line number (for messages about it)."""
    rows = []
    for number, row in read_jsonl(path, key):
        rows.append({**row, "messages": check_messages(row, f"{path}:{number}"), "line": number})
    return rows


def _write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_chatml(examples: Iterable[dict], path: str | Path) -> Path:
    """One line per example: messages first, then id/conversation_id/task/reference when present."""
    keys = ("messages", "id", "conversation_id", "task", "reference")
    return _write_jsonl(({k: ex[k] for k in keys if k in ex} for ex in examples), path)


def write_mlx_layout(splits: dict[str, list[dict]], directory: str | Path) -> dict[str, Path]:
    """train.jsonl / valid.jsonl / test.jsonl with only ``messages`` per line (mlx_lm.lora --data DIR)."""
    directory = Path(directory)
    return {split: _write_jsonl(({"messages": ex["messages"]} for ex in splits[split]), directory / name)
            for split, name in MLX_FILES.items()}
