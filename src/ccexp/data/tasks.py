"""Task views: one conversation -> chat-format training examples.

Analytics tasks ask for a compact JSON object whose keys (``TASK_FIELDS``) and
allowed values are spelled out in the instruction, so a small model can comply;
``reply`` asks for the agent's next message, as plain text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

from ccexp.data import synthetic_phrases as P

from ccexp.data.synthetic import (
    COACHING_THEMES,
    EFFECTIVENESS_BANDS,
    ISSUE_CATEGORIES,
    JOURNEY_TYPES,
    MAX_COACHING,
    Conversation,
    render_transcript,
)
from ccexp.data.synthetic_issues import ISSUES

ANALYTICS_TASKS = ("quality", "csat", "issue", "churn", "journey", "coaching")
ALL_TASKS = (*ANALYTICS_TASKS, "all_in_one", "reply")

TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "quality": ("quality_score", "effectiveness"),
    "csat": ("csat",),
    "issue": ("issue_category", "secondary_category"),
    "churn": ("churn_risk",),
    "journey": ("journey_type",),
    "coaching": ("coaching",),
}
TASK_FIELDS["all_in_one"] = tuple(f for t in ANALYTICS_TASKS for f in TASK_FIELDS[t])
TASK_FIELDS["reply"] = ("reply",)

# Tasks of the file importers (ccexp.data.chatml, tabular, twcs; twcs uses ``reply``):
# ``chat`` = the last assistant turn of a user's ChatML file, ``classify`` = one label per text.
IMPORTER_TASKS = ("chat", "classify")
TASK_FIELDS["chat"] = ("reply",)
TASK_FIELDS["classify"] = ("label",)
# Answered in plain text, scored on the whole answer; every other task answers in JSON.
FREE_TEXT_TASKS = ("reply", "chat")


def label_text(value) -> str:
    """A label (``classify``'s) as text, one spelling per value: true as JSON writes it, 1 for
    1.0. The importers write references so, and the scorer reads answers so."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()

SYSTEM_PROMPT = (
    "You are a contact-center analytics assistant. Read the interaction and answer exactly "
    "as instructed: a single compact JSON object for analytics questions, or only the "
    "agent's next message for reply questions."
)


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _bands() -> str:
    bounds = [lo for lo, _ in EFFECTIVENESS_BANDS] + [101]
    return ", ".join(f'"{name}" ({lo}-{bounds[i + 1] - 1})' for i, (lo, name) in enumerate(EFFECTIVENESS_BANDS))


# What each JSON key must hold; quoted in the instructions verbatim.
FIELD_SPECS: dict[str, str] = {
    "quality_score": "integer 0-100 for how well the agent handled the contact",
    "effectiveness": f"one of {_bands()}, the band of quality_score",
    "csat": "integer 1-5, the customer's satisfaction",
    "issue_category": f"the main issue, one of {_quoted(ISSUE_CATEGORIES)}",
    "secondary_category": "a second issue the customer raised, from the same list, or null",
    "churn_risk": "integer 0-100, how likely the customer is to leave",
    "journey_type": f"one of {_quoted(JOURNEY_TYPES)}",
    "coaching": (f"list of up to {MAX_COACHING} things the agent missed, from {_quoted(COACHING_THEMES)}, "
                 "most important first in that order; [] if none"),
}

_TASK_ASK = {
    "quality": "Rate the agent's performance in this interaction.",
    "csat": "Predict the customer's satisfaction score for this interaction.",
    "issue": "Classify what the customer contacted us about.",
    "churn": "Estimate the risk that this customer will cancel or leave.",
    "journey": "Identify where this contact sits in the customer's journey.",
    "coaching": "List the coaching points for the agent in this interaction.",
    "all_in_one": "Analyse this interaction.",
}
REPLY_INSTRUCTION = (
    "Continue this contact-center conversation. Write the agent's next message only, "
    "as plain text."
)


def instruction(task: str) -> str:
    """The user instruction for ``task``: what to do and the exact answer format."""
    if task == "reply":
        return REPLY_INSTRUCTION
    keys = "; ".join(f'"{name}": {FIELD_SPECS[name]}' for name in TASK_FIELDS[task])
    return f"{_TASK_ASK[task]} Answer with one JSON object with these keys: {keys}."


def phrase_pattern(template: str) -> re.Pattern:
    """A phrase bank's line as a pattern: its slots ({team}, {ref}) match any text."""
    return re.compile(".+?".join(re.escape(part) for part in re.split(r"\{\w+\}", template)), re.IGNORECASE)


# Not a reply to teach or score: holds and fillers, canned and in about half the calls (a constant
# "let me look into that, can I place you on a brief hold?" had scored BLEU 0.15), and the poor
# practice the coaching labels mark down (a vague explanation, a cold transfer, a brush-off, a
# curt close). A close ("Alright.") is a whole turn: found anywhere, it would also drop the real
# answers that open with the same acknowledgement.
NOT_A_REPLY = tuple(phrase_pattern(line) for line in (
    *P.HOLD_ASK, *(ask for ask, _ in P.FILLER), *P.ESCALATE_COLD, *P.DISMISSIVE, *P.NO_VERIFY_LOOKUP,
    *P.GREET_POOR, *(bad for issue in ISSUES.values() for bad in issue["explain_bad"]))) + tuple(
    re.compile(rf"^{re.escape(line)}$", re.IGNORECASE) for line in P.CLOSE_POOR if line)


def reply_turn_index(conv: Conversation) -> int:
    """The agent turn to predict: an agent turn right after a customer turn, nearest the middle
    of the call, whose text does not already occur earlier (so the answer cannot be copied from
    the prompt), and is neither a hold, a filler nor poor practice where the call has another."""
    turns = conv.turns
    middle = len(turns) / 2
    candidates = [i for i in range(1, len(turns)) if turns[i][0] == "agent" and turns[i - 1][0] == "customer"]
    first_new = None
    for i in sorted(candidates, key=lambda i: (abs(i - middle), i)):
        canned = any(p.search(turns[i][1]) for p in NOT_A_REPLY)
        if canned and first_new is not None:
            continue  # a fallback is kept already: no need to render this prefix
        if turns[i][1] in render_transcript(dataclasses.replace(conv, turns=turns[:i])):
            continue
        if not canned:
            return i
        first_new = i
    if first_new is None:
        raise ValueError(f"{conv.id}: no agent turn follows a customer turn")
    return first_new


def _copy(value: object) -> object:
    """Lists are copied so an example never aliases the conversation's labels."""
    return list(value) if isinstance(value, list) else value


def _answer(task: str, conv: Conversation) -> tuple[dict, str, str]:
    """(reference, user content, assistant content) for one task."""
    if task == "reply":
        i = reply_turn_index(conv)
        text = conv.turns[i][1]
        prefix = render_transcript(dataclasses.replace(conv, turns=conv.turns[:i]))
        return {"reply": text}, f"{REPLY_INSTRUCTION}\n\n{prefix}", text
    reference = {name: _copy(conv.labels[name]) for name in TASK_FIELDS[task]}
    user = f"{instruction(task)}\n\n{render_transcript(conv)}"
    return reference, user, json.dumps(reference, separators=(",", ": "))


def task_examples(conv: Conversation, tasks: Sequence[str]) -> list[dict]:
    """One chat example per task in ``tasks``, in that order."""
    examples = []
    for task in tasks:
        if task not in ALL_TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {ALL_TASKS}")
        reference, user, answer = _answer(task, conv)
        examples.append({
            "id": f"{conv.id}/{task}",
            "conversation_id": conv.id,
            "task": task,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ],
            "reference": reference,
        })
    return examples
