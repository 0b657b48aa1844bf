"""``data=chatml``: train on a user's ChatML JSONL files (one conversation per line).

Each line becomes one example that learns its last assistant turn, as task ``chat`` with
reference ``{"reply": <that turn>}``. A line written by ``python -m ccexp.data export``
keeps its own ``task`` and ``reference``, so exported data is scored as it was generated; the
reference must say what that last turn says, as scoring reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from operator import itemgetter
from pathlib import Path

from ccexp.config import ConfigError, DataConfig, DataSizeConfig
from ccexp.data.formats import read_chatml
from ccexp.data.splitting import holdout_splits, report_skipped, take
from ccexp.data.tasks import TASK_FIELDS

log = logging.getLogger("ccexp.data")

# What a reference field must hold, by its kind (scoring.FIELD_KINDS), in words for errors.
_KIND_WORDS = {"number": "a number", "label": "a label (non-blank text or a number)",
               "set": "a list of themes (non-blank text or numbers)", "text": "text"}


def _task_and_reference(row: dict, where: str) -> tuple[str, dict]:
    """A line that names one of ccexp's tasks (as export writes them) keeps it, and its
    reference is checked field by field, because the scores read those fields; a text task
    without a reference, or a line with no task ccexp knows, learns and is scored on its last
    assistant turn."""
    task, reference = row.get("task"), row.get("reference")
    last_turn = {"reply": row["messages"][-1]["content"]}
    if task is not None and not isinstance(task, str):
        raise ConfigError(f"{where}: 'task': expected a task name (text), got {json.dumps(task)[:60]}")
    if task not in TASK_FIELDS:
        return "chat", last_turn
    if reference is None and TASK_FIELDS[task] == ("reply",):
        return task, last_turn
    fields = TASK_FIELDS[task]
    if not isinstance(reference, dict) or any(f not in reference for f in fields):
        raise ConfigError(f"{where}: task {task!r} needs a 'reference' object with {', '.join(map(repr, fields))}")
    # Here, not at the top: ccexp.scoring imports ccexp.data.tasks, whose package imports this module.
    from ccexp.scoring import FIELD_KINDS, NUMBER_RANGES, as_number, parses

    for field in fields:
        kind, value = FIELD_KINDS[field], reference[field]
        # Labels are the user's own taxonomy (the instruction in their messages lists them);
        # number fields have the scale the accuracy bands assume. Checked before ``parses``,
        # which refuses an off-scale number too, to name the scale.
        low, high = NUMBER_RANGES.get(field, (None, None))
        number = as_number(value) if low is not None else None
        if number is not None and not low <= number <= high:
            raise ConfigError(f"{where}: reference {field!r}: expected a number from {low} to {high}, "
                              f"got {json.dumps(value)[:60]}")
        if not parses(kind, value, field):  # numbers finite, null only where it means "none"
            raise ConfigError(f"{where}: reference {field!r}: expected {_KIND_WORDS[kind]}, "
                              f"got {json.dumps(value)[:60]}")
    _check_agreement(task, reference, row["messages"][-1]["content"], where)
    return task, reference


def _check_agreement(task: str, reference: dict, turn: str, where: str) -> None:
    """The model learns the last assistant turn and is scored on the reference: they must say
    the same, as scoring reads the turn (its JSON parse, labels and "none" as scoring compares
    them, numbers exactly), or a model that learns the file perfectly scores 0."""
    from ccexp.config import EvalConfig
    from ccexp.scoring import score

    exact = EvalConfig(quality_band=0, csat_band=0, csat_band_100=0, churn_band=0)
    result = score({"task": task, "reference": reference}, turn, exact)
    if result["parsed"] is None:
        fields = ", ".join(map(repr, TASK_FIELDS[task]))
        raise ConfigError(f"{where}: task {task!r} is scored on one JSON object in the answer, but the assistant "
                          f"turn holds none ({json.dumps(turn, ensure_ascii=False)[:60]}); expected an object "
                          f"with {fields}")
    for field in TASK_FIELDS[task]:
        if not result["correct"][field]:
            said = result["parsed"].get(field, None)
            says = f"says {json.dumps(said, ensure_ascii=False)[:60]}" if field in result["parsed"] \
                else f"has no {field!r}"
            raise ConfigError(f"{where}: reference {field!r} is {json.dumps(reference[field], ensure_ascii=False)[:60]} "
                              f"but the assistant turn {says}")


def _given(value) -> str | None:
    """An id as text; 0 and false are ids (a conversation numbered from 0), null and "" are not."""
    if value is None or value == "":
        return None
    return json.dumps(value) if isinstance(value, bool) else str(value)


def chat_example(row: dict, path: str, where: str | None = None) -> dict:
    """``where``: how errors name the row (default: file:line)."""
    example_id = _given(row.get("id")) or f"{Path(path).name}:{row['line']}"
    task, reference = _task_and_reference(row, where or f"{path}:{row['line']}")
    return {"id": example_id, "conversation_id": _given(row.get("conversation_id")) or example_id,
            "task": task, "messages": row["messages"], "reference": reference}


conversation_id = itemgetter("conversation_id")  # what holdout_splits keeps together


def fold(text: str) -> str:
    """Text as the overlap checks compare it: case and spacing aside ("Reset my  password?" is
    "reset my password?")."""
    return " ".join(text.casefold().split())


def prompt_of(example: dict) -> str:
    """What the model is asked (every turn before the answer, case and spacing aside), for the
    train/val/test overlap check."""
    return json.dumps([{"role": m["role"], "content": fold(m["content"])} for m in example["messages"][:-1]],
                      ensure_ascii=False)


def turn_keys(messages: list[dict]) -> list[str]:
    """A digest of the messages up to each assistant turn, case and spacing aside; the last is
    the whole conversation's. Incremental: a 40-turn row costs 40 hashes, not 40 serializations."""
    digest, keys = hashlib.sha1(), []
    for m in messages:
        digest.update(json.dumps([m["role"], fold(m["content"])], ensure_ascii=False).encode("utf-8"))
        if m["role"] == "assistant":
            keys.append(digest.hexdigest())
    return keys


def join_turns(examples: list[dict], rows: list[dict]) -> None:
    """Rows without a ``conversation_id`` whose messages start another row's (a call written
    one line per assistant turn, the usual SFT layout) get one conversation_id, so they are held
    out together: else a test answer sits word for word in a training prompt. Each row joins
    the row of its longest earlier turns, unless other rows extend those turns too: a common
    opening line ("Hi" / "How can I help?") would chain every call into one conversation.
    A row without an id takes that of the nearest row it extends that has one (the rows it
    continues), else the first given among the joined rows (rows extending it), else the first
    row's id."""
    keys = [turn_keys(ex["messages"]) for ex in examples]
    first = {}  # a whole conversation's digest -> the first row holding it (a repeated line is one node)
    for i, k in enumerate(keys):
        first.setdefault(k[-1], i)
    parent: dict[int, int] = {}
    for i, k in enumerate(keys):
        if first[k[-1]] == i:
            p = next((first[key] for key in reversed(k[:-1]) if key in first), None)
            if p is not None:
                parent[i] = p
    extensions = Counter(parent.values())
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        root = first[k[-1]]
        while root in parent and extensions[parent[root]] == 1:
            root = parent[root]
        groups.setdefault(root, []).append(i)
    has_id = [bool(_given(row.get("conversation_id"))) for row in rows]
    for root, members in groups.items():
        given = [examples[i]["conversation_id"] for i in members if has_id[i]]
        for i in members:
            if not has_id[i]:
                nearest = _nearest_given(first[keys[i][-1]], root, parent, has_id)
                examples[i]["conversation_id"] = (examples[nearest]["conversation_id"] if nearest is not None
                                                  else given[0] if given else examples[min(members)]["id"])


def _nearest_given(node: int, root: int, parent: dict[int, int], has_id: list[bool]) -> int | None:
    """The nearest row from ``node`` up to its group's ``root`` with a given conversation_id: the
    row whose turns this one extends last, so the two are held out together."""
    while True:
        if has_id[node]:
            return node
        if node == root or node not in parent:
            return None
        node = parent[node]


def load_chat(path: str, key: str) -> list[dict]:
    """Examples of one file; a line with an empty message is skipped and counted."""
    rows = read_chatml(path, key)
    usable = [r for r in rows if all(m["content"].strip() for m in r["messages"])]
    report_skipped(path, {"with an empty message": len(rows) - len(usable)}, len(rows))
    examples = [chat_example(row, path) for row in usable]
    check_unique_ids(examples, [(f"{path}:{row['line']}", f"line {row['line']}") for row in usable])
    join_turns(examples, usable)
    return examples


def report_earlier_turns(data: DataConfig, splits: dict[str, list[dict]]) -> None:
    """Val/test rows whose whole conversation starts a train row (rows of one call in two files,
    or split by their given conversation_ids): the train row's prompt holds their answer, so
    their scores measure memory. Counted in a warning, as for rows in both splits."""
    earlier = {key for ex in splits["train"] for key in turn_keys(ex["messages"])[:-1]}
    for split in ("val", "test"):
        shared = sum(turn_keys(ex["messages"])[-1] in earlier for ex in splits[split])
        path = getattr(data, f"{split}_path")
        if shared and path is None:
            log.warning("%s: %d of %d %s rows held out of it are earlier turns of a train row: their answers are "
                        "in its prompt", data.train_path, shared, len(splits[split]), split)
        elif shared:
            log.warning("%s: %d of %d %s rows are earlier turns of a train row (%s): their answers are in its "
                        "prompt", path, shared, len(splits[split]), split, data.train_path)


def check_unique_ids(examples: list[dict], rows: list[tuple[str, str]]) -> None:
    """Ids name examples in predictions.jsonl and, by default, their conversation (kept in one
    split): two rows with one id would be scored as one and glued into one conversation.
    ``rows``: how an error names each example's row, in full and within its file."""
    first: dict[str, str] = {}
    for example, (where, row) in zip(examples, rows):
        seen = first.setdefault(example["id"], row)
        if seen != row:
            raise ConfigError(f"{where}: id {example['id']!r} is already the id of {seen}; "
                              "expected one id per row (conversation_id groups rows)")


def build_chatml(data: DataConfig, size: DataSizeConfig) -> dict[str, list[dict]]:
    splits = holdout_splits(data, load_chat, conversation_id, prompt_of)
    report_earlier_turns(data, splits)
    return take(splits, size, data)
