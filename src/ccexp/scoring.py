"""Parsing model answers and scoring them field by field. Pure functions, shared by backends.

A careful user reads a reply that wraps valid JSON in prose or a code fence; an answer with
no JSON object, or with several, is invalid (ambiguous), and never crashes evaluation.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from ccexp.config import EvalConfig
from ccexp.data.tasks import FREE_TEXT_TASKS, TASK_FIELDS

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_json_answer(text: str) -> Optional[dict]:
    """The JSON object in a model answer, or None when there is none or it is ambiguous."""
    text = text.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    decoder, objects, pos = json.JSONDecoder(), [], 0
    while (start := text.find("{", pos)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(value, dict):
            objects.append(value)
        pos = end
    return objects[0] if len(objects) == 1 else None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%"))
        except ValueError:
            return None
    return None


def _label(value: Any) -> Optional[str]:
    if value is None:
        return None
    return str(value).strip().lower().replace(" ", "_").replace("-", "_")


def _within(band: float):
    def check(pred: Any, ref: Any) -> bool:
        p, r = _number(pred), _number(ref)
        return p is not None and r is not None and abs(p - r) <= band + 1e-9

    return check


def _same_label(pred: Any, ref: Any) -> bool:
    return _label(pred) == _label(ref)


def _same_set(pred: Any, ref: Any) -> bool:
    if not isinstance(pred, list):
        return False
    return {_label(x) for x in pred} == {_label(x) for x in ref}


def field_checks(cfg: EvalConfig) -> dict[str, Any]:
    """Field -> predicate(pred, ref). Bands come from config, edges inclusive."""
    return {
        "quality_score": _within(cfg.quality_band),
        "effectiveness": _same_label,
        "csat": _within(cfg.csat_band),
        "issue_category": _same_label,
        "secondary_category": _same_label,
        "churn_risk": _within(cfg.churn_band),
        "journey_type": _same_label,
        "coaching": _same_set,
        "reply": lambda pred, ref: " ".join(str(pred).split()) == " ".join(str(ref).split()),
        "label": lambda pred, ref: pred is not None and str(pred).strip() == str(ref),  # exact: labels are the user's
    }


def score(example: dict, raw: str, cfg: EvalConfig) -> dict:
    """One prediction record: the parsed fields and which of them are correct."""
    task, reference = example["task"], example["reference"]
    checks = field_checks(cfg)
    if task in FREE_TEXT_TASKS:
        parsed: Optional[dict] = {TASK_FIELDS[task][0]: raw}
    else:
        parsed = parse_json_answer(raw)
    correct = {}
    for name in TASK_FIELDS[task]:
        present = parsed is not None and name in parsed
        correct[name] = bool(present and checks[name](parsed[name], reference.get(name)))
    return {"parsed": parsed, "json_valid": parsed is not None, "correct": correct}


def summarize(records: list[dict], prefix: str) -> dict[str, float]:
    """Rates over prediction records: JSON validity, per-field and per-task accuracy."""
    metrics: dict[str, float] = {}
    json_records = [r for r in records if r["task"] not in FREE_TEXT_TASKS]
    if json_records:
        metrics[f"{prefix}json_valid"] = sum(r["json_valid"] for r in json_records) / len(json_records)
    fields: dict[str, list[bool]] = {}
    tasks: dict[str, list[bool]] = {}
    for r in records:
        for name, ok in r["correct"].items():
            fields.setdefault(name, []).append(ok)
        tasks.setdefault(r["task"], []).append(all(r["correct"].values()))
    for name, oks in sorted(fields.items()):
        metrics[f"{prefix}{name}/acc"] = sum(oks) / len(oks)
    for task, oks in sorted(tasks.items()):
        metrics[f"{prefix}task/{task}/acc"] = sum(oks) / len(oks)
    if tasks:
        metrics[f"{prefix}acc"] = sum(sum(o) / len(o) for o in tasks.values()) / len(tasks)
    return metrics
