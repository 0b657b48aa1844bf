"""Files in and out: UTF-8 text, JSON lines, ChatML JSONL and the mlx-lm data layout.

A ChatML line is ``{"messages": [{"role": ..., "content": ...}, ...]}``; ccexp writes its
``id``, ``task`` and ``reference`` next to the messages, so a written split reads back into
the same examples. Every problem in a file is a ``ConfigError`` of one line naming the file
(and line), because the user fixes the file, not the code.
"""

from __future__ import annotations

import csv
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
        what = "a directory, expected a file" if path.is_dir() else "no such file"
        raise ConfigError(f"{path}: {what} ({where}relative paths are resolved against {Path.cwd()})")
    return path


def read_text(path: str | Path, key: str = "") -> str:
    """The whole file as text; a missing file or one that is not UTF-8 fails in one line."""
    data = require_file(path, key).read_bytes()
    try:
        return data.decode("utf-8-sig")  # a BOM from a spreadsheet export is harmless
    except UnicodeDecodeError as err:
        at = err.start + 3 * data.startswith(b"\xef\xbb\xbf")  # utf-8-sig's offsets start after the BOM
        line = data.count(b"\n", 0, at) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {at}; re-save the file as UTF-8)") from None


class KeyGivenTwice(ValueError):
    """A JSON object naming one key twice: Python's reader keeps the last value, silently."""

    def __init__(self, key: str):
        super().__init__(f"key {key!r} given twice")


def once_each(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s ``object_pairs_hook`` for objects whose keys are all different (the data
    readers' and scoring's): a key given twice raises ``KeyGivenTwice`` naming it."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        raise KeyGivenTwice(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return value


def loads(text: str):
    """``json.loads``, except that an object giving a key twice raises ``KeyGivenTwice``
    ({"intent": "refund", "intent": "fx"} would otherwise train as fx)."""
    return json.loads(text, object_pairs_hook=once_each)


def no_column(where: str, column: str, columns: Iterable) -> ConfigError:
    """A missing column, listing the file's; a column equal but for spaces or case ("text,
    category" exported with a space) is named, and the columns quoted so its space shows."""
    columns = [str(c) for c in columns]
    near = next((c for c in columns if c.strip().casefold() == column.strip().casefold()), None)
    if near is None:
        return ConfigError(f"{where}: no column {column!r} (columns: {', '.join(columns)})")
    return ConfigError(f"{where}: no column {column!r} (columns: {', '.join(map(repr, columns))}); did you mean "
                       f"{near!r}? (spaces and case in the header are part of a name)")


# A JSON array given as JSON Lines (IBM's dev.json, say).
_ARRAY_HINT = "; the file looks like one JSON array, expected JSON Lines (an object per line)"


def read_jsonl(path: str | Path, key: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line. Lines end at \\n only: JSON strings may hold
    U+2028, U+2029 or U+0085 unescaped (ccexp's own export writes them so), which
    ``str.splitlines`` would take for line ends."""
    for number, line in enumerate(read_text(path, key).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = loads(line)
        except KeyGivenTwice as err:
            raise ConfigError(f"{path}:{number}: {err}") from None
        except json.JSONDecodeError as err:
            # A .json file holding one array breaks on its first line; pretty-printed objects (one
            # over several lines) on a line of their own "{": say what the file is.
            hint = _ARRAY_HINT if number == 1 and line.strip() in ("[", "[{") else \
                "; the object goes on past the line's end: pretty-printed JSON? expected JSON Lines (an object " \
                "per line)" if line.strip() == "{" else ""
            raise ConfigError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno}){hint}") from None
        except (ValueError, RecursionError) as err:  # a 5,000-digit number; nesting deeper than Python recurses
            raise ConfigError(f"{path}:{number}: invalid JSON ({err.__class__.__name__}: "
                              f"{str(err).splitlines()[0]})") from None
        if "\\u" in line.lower():  # an escaped half of a UTF-16 pair reads, and then no UTF-8 writer takes it
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as err:
                raise ConfigError(f"{path}:{number}: a lone UTF-16 surrogate ({err.object[err.start]!a}), expected "
                                  "valid Unicode (an escape \\ud800-\\udfff without its pair)") from None
        if not isinstance(value, dict):
            got = "null" if value is None else type(value).__name__
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {got}"
                              f"{_ARRAY_HINT if number == 1 and isinstance(value, list) else ''}")
        yield number, value


# Fields of any length: a long transcript in one cell is valid CSV (the csv module stops at 128 KiB).
csv.field_size_limit(2**31 - 1)


def read_csv(path: str | Path, key: str = "", needed: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(line the record starts on, {column: value}) per record of a CSV file with a header row,
    streamed (twcs.csv is 500 MB). Blank lines are skipped; anything that would shift or invent
    values fails in one line naming the line: a record with more or fewer fields than the header
    (an unquoted comma), a quote never closed, the header again (files joined), a column named
    twice, or a ``needed`` column missing."""
    try:
        with open(require_file(path, key), encoding="utf-8-sig", newline="") as f:
            # strict: a quote left open fails at the end of the file instead of swallowing the rest.
            reader = csv.reader(f, strict=True)
            line = 0  # the last line read
            try:
                header = next(reader, [])
                line = reader.line_num
                # A needed column named twice: which one is the text? (Unread ones, or the blank
                # names of a spreadsheet's empty columns, change nothing.)
                twice = next((c for i, c in enumerate(header) if c in needed and c in header[:i]), None)
                if twice is not None:
                    raise ConfigError(f"{path}:1: column {twice!r} appears twice in the header")
                if needed and not header:
                    raise ConfigError(f"{path}: an empty file, expected a header row ({', '.join(needed)}) and rows")
                if header and len(header) <= 2 and header[0].lower().startswith("sep="):  # Excel writes it above the header
                    raise ConfigError(f"{path}:1: Excel's delimiter line {','.join(header)!r}, expected the header "
                                      "row (delete that line)")
                for column in needed:
                    if column not in header:
                        # One column whose name holds ; or a tab: another delimiter than the comma.
                        sep = next((d for d in (";", "\t", "|") if len(header) == 1 and d in header[0]), None)
                        hint = f"; the header holds {sep!r}: save the file comma-separated" if sep else ""
                        if header and header[0].lstrip().startswith("["):  # an array: not JSON Lines either
                            raise ConfigError(f"{path}: one JSON array, not CSV (no header row with {column!r}); "
                                              "expected CSV, or JSON Lines (an object per line) for data=jsonl / "
                                              "data=chatml")
                        if header and header[0].lstrip().startswith("{"):  # JSON Lines read as CSV
                            raise ConfigError(f"{path}: JSON, not CSV (no header row with {column!r}); "
                                              "expected data=jsonl (or data=chatml) for a JSON Lines file")
                        if hint:
                            raise ConfigError(f"{path}: no column {column!r} (columns: {', '.join(header)}){hint}")
                        raise no_column(str(path), column, header)
                for record in reader:
                    start, line = line + 1, reader.line_num
                    if not record or len(record) == 1 and not record[0].strip(" \t\x1a"):
                        continue  # a blank line (spaces, or DOS's end-of-file Ctrl-Z)
                    # The header again, maybe with the BOM of a second "CSV UTF-8" file glued on.
                    if [cell.lstrip("\ufeff").strip() for cell in record] == [cell.strip() for cell in header]:
                        raise ConfigError(f"{path}:{start}: the header row again (two files joined together?)")
                    if len(record) != len(header):
                        hint = ("a comma in a value needs the value quoted" if len(record) > len(header)
                                else "a line cut short?")
                        raise ConfigError(f"{path}:{start}: {len(record)} field{'s' * (len(record) != 1)}, "
                                          f"the header has {len(header)} ({hint})")
                    # NUL is no text: a binary file, or one corrupted in transfer (Python's csv reader
                    # takes it into the value, and the model would train on it)
                    nul = next((c for c, cell in zip(header, record) if "\0" in cell), None)
                    if nul is not None:
                        raise ConfigError(f"{path}:{start}: a NUL byte in column {nul!r}; expected text (a binary "
                                          "or damaged file?)")
                    yield start, dict(zip(header, record))
            except csv.Error as err:
                if "unexpected end of data" in str(err):
                    raise ConfigError(f"{path}:{line + 1}: a quoted field opened here is never closed") from None
                if reader.line_num > line + 1:  # the record ran over lines: name where it began
                    raise ConfigError(f"{path}:{line + 1}: invalid CSV in the record that starts here ({err}, "
                                      f"on line {reader.line_num}; a quote opened on line {line + 1}?)") from None
                raise ConfigError(f"{path}:{reader.line_num}: invalid CSV ({err})") from None
    except UnicodeDecodeError:
        read_text(path, key)  # raises, naming the line and byte
        raise


def check_messages(row: dict, where: str) -> list[dict]:
    """The row's messages, checked: a list of {role, content} with known roles, ending with
    the assistant turn the model learns to write."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: no 'messages' list")
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ConfigError(f"{where}: each message needs a 'role' and a string 'content'")
        if "role" not in message:
            raise ConfigError(f"{where}: message {number} has no 'role' "
                              "(expected system, user or assistant)")
        if message.get("role") not in ROLES:
            raise ConfigError(f"{where}: unknown role {message.get('role')!r} (expected system, user or assistant)")
    if messages[-1]["role"] != "assistant":
        raise ConfigError(f"{where}: last message is from {messages[-1]['role']!r}, expected 'assistant'")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise ConfigError(f"{where}: no user message before the last (assistant) one: nothing for it to answer")
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
