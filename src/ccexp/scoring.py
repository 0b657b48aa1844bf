"""Parsing model answers and scoring them field by field. Pure functions, shared by backends.

A careful user reads a reply that wraps valid JSON in prose or a code fence; an answer with
no JSON object, several, or one cut off is invalid (ambiguous), and never crashes evaluation.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

from ccexp.config import EvalConfig
from ccexp.data.formats import KeyGivenTwice, once_each
from ccexp.data.tasks import FREE_TEXT_TASKS, TASK_FIELDS, label_text


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")  # Python's reader takes NaN and Infinity; JSON does not


# Nesting deeper than any answer: refused here, not by Python's parser, whose limit is the
# interpreter's recursion limit (torch's compiler raises it to 10,000 once imported).
MAX_DEPTH = 100


def _closing_brace(text: str, start: int) -> tuple[Optional[int], int]:
    """Where the object opened at ``start`` closes (braces inside strings skipped), or None when
    the text ends first (an answer cut off at the token cap); and the deepest nesting of objects
    and arrays on the way."""
    braces = nested = deepest = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            braces += c == "{"
            nested += 1
            deepest = max(deepest, nested)
        elif c in "}]":
            nested -= 1
            braces -= c == "}"
            if braces == 0:
                return i, deepest
    return None, deepest


def parse_json_answer(text: str) -> Optional[dict]:
    """The one JSON object in a model answer (in prose, in a code fence or bare), or None: no
    object, several, or one left open (cut off at the token cap, even with a whole object
    before it or nested inside it). Brace groups that are not JSON ("{name}" in prose) are
    skipped whole, never searched for a fragment; nothing a model writes raises here."""
    objects, pos = [], 0
    while (start := text.find("{", pos)) != -1:
        end, deepest = _closing_brace(text, start)
        if end is None:
            return None
        try:
            if deepest > MAX_DEPTH:
                raise ValueError("nested past MAX_DEPTH")
            # once_each: {"csat": 1, "csat": 4} says two things (Python's reader keeps the last)
            value = json.loads(text[start : end + 1], parse_constant=_not_json, object_pairs_hook=once_each)
        except KeyGivenTwice:  # before ValueError, which it is: JSON, so no brace group to skip as prose
            return None
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth / digit limits
            value = None
        if isinstance(value, dict):
            objects.append(value)
        pos = end + 1
    return objects[0] if len(objects) == 1 else None


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def as_number(value: Any, percent: bool = True) -> Optional[float]:
    """A finite number, from a JSON number or a numeric string ("4", and "80%" where ``percent``:
    a 0-100 scale); else None. NaN, Infinity and magnitudes past 1e15 (no score on any scale,
    and enough of them would turn a mean absolute error into inf, which metrics.json cannot
    hold) are no score."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            text = value.strip()
            if percent and text.endswith("%"):
                text = text[:-1].rstrip()  # "80 %" too, as many languages space it
            if not _NUMBER.fullmatch(text):  # float() also takes "1_000", "٣" and "inf"
                return None
            number = float(text)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and abs(number) < 1e15 else None


def _label(value: Any) -> Optional[str]:
    if value is None:
        return None
    return str(value).strip().lower().replace(" ", "_").replace("-", "_")


def _within(band: float, name: str):
    def check(pred: Any, ref: Any) -> bool:
        p, r = on_scale(pred, name), as_number(ref, takes_percent(name))
        return p is not None and r is not None and abs(p - r) <= band + 1e-9

    return check


def _same_label(pred: Any, ref: Any) -> bool:
    return _label(pred) == _label(ref)


def null_answer(field: str, value: Any) -> Any:
    """None for "null" or "none" written as text where null is an answer (no second issue)."""
    if field in NULLABLE_FIELDS and isinstance(value, str) and value.strip().lower() in ("null", "none"):
        return None
    return value


def canonical_label(field: str, value: Any) -> str:
    """The form two labels are compared in: the user's own labels (``label``) exactly, spelled
    as the importers write them (``label_text``: true, 1 for 1.0); ours case-, space- and
    hyphen-insensitively; null (no secondary issue) is a class of its own."""
    if null_answer(field, value) is None:
        return "<null>"
    return label_text(value) if field == "label" else str(_label(value))


def same_text(pred: Any, ref: Any) -> bool:
    """A reply's exact match, spacing aside (a model's line breaks and double spaces are no other
    reply); case and punctuation count. The field check and the ``exact_match`` metric both."""
    return " ".join(str(pred).split()) == " ".join(str(ref).split())


def _same_set(pred: Any, ref: Any) -> bool:
    if not isinstance(pred, list):
        return False
    return {_label(x) for x in pred} == {_label(x) for x in ref}


# What each answer field holds; decides its parse check and which aggregate metrics it gets.
FIELD_KINDS: dict[str, str] = {
    "quality_score": "number", "csat": "number", "churn_risk": "number",
    "effectiveness": "label", "issue_category": "label", "secondary_category": "label",
    "journey_type": "label", "label": "label",
    "coaching": "set", "reply": "text",
}


NULLABLE_FIELDS = ("secondary_category",)  # null is an answer there: "no second issue"
# The scale of each number field, as the task instructions state it: a reference outside it
# (a 0-10 quality score, CSAT on 0-10) would make the accuracy bands meaningless.
NUMBER_RANGES: dict[str, tuple[int, int]] = {"quality_score": (0, 100), "csat": (1, 5), "churn_risk": (0, 100)}


def takes_percent(name: str) -> bool:
    """Whether "80%" is a value of the number field ``name``: on a 0-100 scale (quality, churn
    risk), not on CSAT's 1-5, where "1%" is no rating."""
    return NUMBER_RANGES.get(name, (0, 100)) == (0, 100)


def on_scale(value: Any, name: str) -> Optional[float]:
    """The number field ``name``'s value where it lies on the scale the task asks for (edges
    included), else None: 110 is no 0-100 score and 80 no 1-5 rating, however near the
    reference, and would put a 0-100 error into a 1-5 MAE."""
    number = as_number(value, percent=takes_percent(name))
    low, high = NUMBER_RANGES.get(name, (-math.inf, math.inf))
    return number if number is not None and low <= number <= high else None


def _says_something(item: Any) -> bool:
    """A label or theme with content: non-blank text or a number ("" or "  " names no class, and
    would count as parsed, a class of its own in macro-F1). true/false is neither."""
    if isinstance(item, str):
        return bool(item.strip())
    return isinstance(item, (int, float)) and not isinstance(item, bool)


def parses(kind: str, value: Any, name: str = "") -> bool:
    """Whether a parsed field has a usable value of its kind (a number on the field's scale, a
    label, a list, text). Null is a label only where it means something (``NULLABLE_FIELDS``)."""
    if kind == "number":
        return on_scale(value, name) is not None
    if kind == "label":
        if value is None:
            return name in NULLABLE_FIELDS
        # true/false is a label of the user's own (a binary column), never one of ours.
        return _says_something(value) or (isinstance(value, bool) and name == "label")
    if kind == "set":  # [] is an answer ("no coaching needed"); [""] or [null] is none
        return isinstance(value, list) and all(map(_says_something, value))
    return isinstance(value, str) and bool(value.strip())  # an empty reply is no answer


def field_checks(cfg: EvalConfig) -> dict[str, Any]:
    """Field -> predicate(pred, ref). Bands come from config, edges inclusive; a number off its
    field's scale is never within one."""
    return {
        "quality_score": _within(cfg.quality_band, "quality_score"),
        "effectiveness": _same_label,
        "csat": _within(cfg.csat_band, "csat"),
        "issue_category": _same_label,
        "secondary_category": _same_label,
        "churn_risk": _within(cfg.churn_band, "churn_risk"),
        "journey_type": _same_label,
        "coaching": _same_set,
        "reply": same_text,
        "label": lambda pred, ref: pred is not None and canonical_label("label", pred) == canonical_label("label", ref),
    }


def score(example: dict, raw: str, cfg: EvalConfig) -> dict:
    """One prediction record: the parsed fields, which of them parse, which are correct."""
    task, reference = example["task"], example["reference"]
    checks = field_checks(cfg)
    if task in FREE_TEXT_TASKS:
        parsed: Optional[dict] = {TASK_FIELDS[task][0]: raw}
    else:
        parsed = parse_json_answer(raw)
    field_parsed, correct = {}, {}
    for name in TASK_FIELDS[task]:
        present = parsed is not None and name in parsed
        value = null_answer(name, parsed[name]) if present else None
        field_parsed[name] = bool(present and parses(FIELD_KINDS[name], value, name))
        # An answer that is no value of its kind (off-scale, blank) is never right.
        correct[name] = bool(field_parsed[name] and checks[name](value, reference.get(name)))
    # Free text involves no JSON: null, so a reader of predictions.jsonl never counts it as valid JSON.
    json_valid = None if task in FREE_TEXT_TASKS else parsed is not None
    return {"parsed": parsed, "json_valid": json_valid, "field_parsed": field_parsed, "correct": correct}
