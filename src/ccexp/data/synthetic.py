"""Seeded generator of synthetic contact-center conversations with labels.

Generative story, per conversation (each step has its own random stream keyed
by (seed, index), so conversation i never depends on how many are generated):

1. Latents (``synthetic_context``): issue (+ sometimes a second one), journey,
   contact history, channel, temporal context, an agent from a pool of 1,007
   with stable skills, the customer (tenure, mood), the outcome, and which good
   practices the agent performs.
2. Clean labels, from latents that the text makes visible: behaviours
   performed or missed, holds, outcome, wait, mood, tenure, threats to leave.
3. Text (``synthetic_dialogue``): turns rendered from the latents; the
   customer's last line leans towards the clean CSAT without giving it away.
4. Label noise (``NOISE``), documented with its accuracy ceiling by
   ``noise_report``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

from ccexp.data.synthetic_context import (
    ISSUE_CATEGORIES,
    JOURNEY_TYPES,
    LONG_HOLD_MINUTES,
    N_AGENTS,
    Agent,
    Latents,
    agent_pool,
    derive_rng,
    sample_latents,
)
from ccexp.data.synthetic_dialogue import render_dialogue

__all__ = [
    "COACHING_THEMES",
    "EFFECTIVENESS",
    "EFFECTIVENESS_BANDS",
    "ISSUE_CATEGORIES",
    "JOURNEY_TYPES",
    "LABEL_FIELDS",
    "NOISE",
    "N_AGENTS",
    "Agent",
    "Conversation",
    "agent_pool",
    "effectiveness_for",
    "generate_conversations",
    "noise_report",
    "render_transcript",
]

EFFECTIVENESS = ("poor", "fair", "good", "excellent")
# Lower bound of each effectiveness band on the 0-100 quality score.
EFFECTIVENESS_BANDS = ((0, "poor"), (55, "fair"), (70, "good"), (85, "excellent"))

# Ordered by priority: when an agent misses more than MAX_COACHING behaviours,
# the first ones in this order are kept. Each maps to one behaviour flag.
COACHING_THEMES = (
    "follow the escalation protocol",  # cold transfer: no briefing, no reference number
    "verify the customer's identity",  # no security question before using the account
    "show more empathy",  # no acknowledgement of the customer's problem
    "explain the resolution clearly",  # vague or jargon explanation
    "confirm the issue is resolved",  # never checks the fix or the plan with the customer
    "offer the next steps",  # no "you'll get an email / technician on ..." line
    "avoid long holds",  # a hold of LONG_HOLD_MINUTES or more
    "acknowledge the wait time",  # queue wait >= 5 min and no apology for it
)
MAX_COACHING = 3
_THEME_FLAG = dict(zip(COACHING_THEMES, (
    "escalation_protocol", "verify", "empathy", "clear_explanation", "confirm", "next_steps",
    "no_long_hold", "ack_wait",
), strict=True))

LABEL_FIELDS = (
    "quality_score", "effectiveness", "csat", "issue_category", "secondary_category",
    "churn_risk", "journey_type", "coaching",
)
NOISE: dict[str, dict[str, object]] = {
    "quality_score": {"kind": "gaussian", "sd": 3.0},
    "effectiveness": {"kind": "derived", "from": "quality_score"},
    "csat": {"kind": "flip_adjacent", "p": 0.06},
    "issue_category": {"kind": "flip", "p": 0.03},
    "secondary_category": {"kind": "flip", "p": 0.03},
    "churn_risk": {"kind": "gaussian", "sd": 6.0},
    "journey_type": {"kind": "flip", "p": 0.04},
    "coaching": {"kind": "toggle_one", "p": 0.05},
}


@dataclass(frozen=True)
class Conversation:
    """One generated contact: temporal context, turns and (noisy) labels.

    ``latents`` holds the hidden variables behind the text (agent id and
    skills, outcome, behaviours, clean labels, placed personal data); it is
    for analysis and tests, never shown to a model.
    """

    id: str
    temporal: dict[str, object]
    turns: tuple[tuple[str, str], ...]
    labels: dict[str, object]
    latents: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


# --- Clean labels ---------------------------------------------------------------
def effectiveness_for(score: float) -> str:
    """The effectiveness band of a quality score."""
    name = EFFECTIVENESS_BANDS[0][1]
    for lower, band in EFFECTIVENESS_BANDS:
        if score >= lower:
            name = band
    return name


def _flags(lat: Latents) -> dict[str, bool | None]:
    flags = dict(lat.behaviours)
    flags["no_long_hold"] = all(m < LONG_HOLD_MINUTES for m in lat.holds)
    return flags


def _quality(lat: Latents) -> float:
    """Points for each practice visible in the transcript (max 100)."""
    f = _flags(lat)
    points = {"greet": 6, "verify": 10, "empathy": 14, "clear_explanation": 16, "confirm": 9,
              "next_steps": 9, "no_long_hold": 8, "close": 6}
    score = sum(p for key, p in points.items() if f[key])
    score += 4 if f["ack_wait"] is not False else 0  # full marks when not applicable
    score += 8 if f["escalation_protocol"] is not False else 0
    score += {"resolved": 10, "partially": 6, "escalated": 5, "unresolved": 0}[lat.outcome]
    score -= 12 if f["dismissive"] else 0
    score -= 3 * lat.fillers
    return max(0.0, float(score))


def _wait_minutes(lat: Latents) -> float:
    return float(lat.temporal["queue_wait_minutes"])


def _csat(lat: Latents) -> int:
    """Satisfaction from outcome, queue wait, mood and how the agent behaved."""
    f = _flags(lat)
    x = 3.0 + {"resolved": 1.1, "partially": 0.0, "escalated": -0.4, "unresolved": -1.3}[lat.outcome]
    if f["escalation_protocol"]:
        x += 0.3  # a warm handover softens an escalation
    x -= min(0.1 * max(0.0, _wait_minutes(lat) - 3.0), 1.2)
    x += {"calm": 0.35, "frustrated": -0.1, "angry": -0.55}[lat.customer.temperament]
    x += 0.35 if f["empathy"] else -0.2
    x += 0.2 if f["clear_explanation"] else -0.2
    x -= 0.3 if f["dismissive"] else 0.0
    x -= 0.0 if f["no_long_hold"] else 0.35
    x += 0.2 if f["ack_wait"] else 0.0
    return int(min(5, max(1, math.floor(x + 0.5))))


def _tenure_risk(months: int) -> float:
    """New customers leave more easily; buckets match how tenure is phrased."""
    return 18.0 if months < 6 else 10.0 if months < 24 else 4.0 if months < 60 else 0.0


def _churn(lat: Latents, csat: int) -> float:
    """Churn risk from loyalty, threats, outcome, queue wait, repeat contacts and their recency,
    and a cancellation carried out.

    Every term is readable from the transcript: tenure is stated, threats are
    spoken, contact history is in the header or the customer's words.
    """
    c = 12.0 + _tenure_risk(lat.customer.tenure_months)
    c += 28.0 if lat.threat else 0.0
    c += {"resolved": 0.0, "partially": 10.0, "escalated": 10.0, "unresolved": 22.0}[lat.outcome]
    if lat.journey == "retention_save" and lat.outcome == "resolved":
        c -= 12.0  # accepted a retention offer
    c += min(1.5 * max(0.0, _wait_minutes(lat) - 3.0), 15.0)
    c += 0.0 if lat.temporal["is_first_contact"] else 6.0  # shown in the header
    c += 10.0 if lat.journey == "repeat_issue" else 0.0  # "this is the third time..."
    days = lat.temporal["days_since_last_contact"]
    if days is not None and days <= 7 and not lat.temporal["is_followup"]:
        c += 5.0  # back within a week unasked (header): what was done last time did not hold
    if lat.issue == "cancellation" and lat.journey != "retention_save" and lat.outcome in ("resolved", "partially"):
        c += 35.0  # the cancellation went through ("I've scheduled the cancellation"): leaving, or cutting back
    c += 5.0 * (3 - csat)
    return min(100.0, max(0.0, c))


def _coaching(flags: dict[str, bool | None]) -> list[str]:
    missed = [t for t in COACHING_THEMES if flags[_THEME_FLAG[t]] is False]
    return missed[:MAX_COACHING]


def clean_labels(lat: Latents) -> dict[str, object]:
    """Noise-free labels: what a perfect reader of the transcript would give."""
    quality = round(_quality(lat))
    csat = _csat(lat)
    return {
        "quality_score": quality,
        "effectiveness": effectiveness_for(quality),
        "csat": csat,
        "issue_category": lat.issue,
        "secondary_category": lat.secondary,
        "churn_risk": round(_churn(lat, csat)),
        "journey_type": lat.journey,
        "coaching": _coaching(_flags(lat)),
    }


# --- Label noise ----------------------------------------------------------------
def _gauss_score(rng: random.Random, value: object, sd: float) -> int:
    return int(min(100, max(0, round(float(value) + rng.gauss(0.0, sd)))))


def add_noise(labels: dict[str, object], rng: random.Random) -> dict[str, object]:
    """Apply ``NOISE`` to clean labels (annotator disagreement, in effect)."""
    out = dict(labels)
    out["quality_score"] = _gauss_score(rng, labels["quality_score"], NOISE["quality_score"]["sd"])
    out["effectiveness"] = effectiveness_for(out["quality_score"])
    out["churn_risk"] = _gauss_score(rng, labels["churn_risk"], NOISE["churn_risk"]["sd"])
    if rng.random() < NOISE["csat"]["p"]:
        csat = int(labels["csat"])
        out["csat"] = csat + (rng.choice((-1, 1)) if 1 < csat < 5 else (1 if csat == 1 else -1))
    if rng.random() < NOISE["issue_category"]["p"]:
        taken = (labels["issue_category"], labels["secondary_category"])
        out["issue_category"] = rng.choice([c for c in ISSUE_CATEGORIES if c not in taken])
    if rng.random() < NOISE["secondary_category"]["p"]:
        options = [None, *ISSUE_CATEGORIES]
        out["secondary_category"] = rng.choice(
            [c for c in options if c not in (labels["secondary_category"], out["issue_category"])])
    if rng.random() < NOISE["journey_type"]["p"]:
        out["journey_type"] = rng.choice([j for j in JOURNEY_TYPES if j != labels["journey_type"]])
    if rng.random() < NOISE["coaching"]["p"]:
        themes = set(labels["coaching"]) ^ {rng.choice(COACHING_THEMES)}
        out["coaching"] = [t for t in COACHING_THEMES if t in themes][:MAX_COACHING]
    return out


# --- Public API ---------------------------------------------------------------------
def _latent_summary(lat: Latents, clean: dict, pii: list) -> dict[str, object]:
    return {
        "agent_id": lat.agent.agent_id,
        "agent_shift": lat.agent.shift,
        "agent_skills": dict(lat.agent.skills),
        "channel": lat.channel,
        "company": lat.company,
        "tenure_months": lat.customer.tenure_months,
        "prior_contacts": lat.customer.prior_contacts,
        "temperament": lat.customer.temperament,
        "outcome": lat.outcome,
        "threat": lat.threat,
        "behaviours": dict(lat.behaviours),
        "holds": list(lat.holds),
        "fillers": lat.fillers,
        "clean_labels": clean,
        "pii": pii,
    }


def make_conversation(seed: int, index: int) -> Conversation:
    """Generate conversation ``index`` of ``seed``."""
    lat = sample_latents(seed, index)
    clean = clean_labels(lat)
    turns, pii = render_dialogue(lat, seed, int(clean["csat"]))
    labels = add_noise(clean, derive_rng(seed, "noise", index))
    return Conversation(f"conv-{index:06d}", dict(lat.temporal), turns, labels,
                        _latent_summary(lat, clean, pii))


def generate_conversations(n: int, seed: int, start: int = 0) -> list[Conversation]:
    """``n`` conversations from index ``start``; the same seed always gives the same list."""
    return [make_conversation(seed, i) for i in range(start, start + n)]


def _format_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render_transcript(conv: Conversation) -> str:
    """The text a model reads: temporal context block, then the turns."""
    lines = ["[TEMPORAL CONTEXT]"]
    lines += [f"{key}: {_format_value(value)}" for key, value in conv.temporal.items()]
    lines += ["", "[CONVERSATION]"]
    for speaker, text in conv.turns:
        lines.append(text if speaker == "system" else f"{speaker.capitalize()}: {text}")
    return "\n".join(lines)


_CEILING_SEED, _CEILING_N = 20240601, 10000


@lru_cache(maxsize=1)
def _clean_and_noisy() -> tuple[tuple[dict, dict], ...]:
    """The simulation's label pairs, drawn once: only latents are sampled, no text, but
    10,000 of them still take about a second, and every band setting scores the same pairs."""
    pairs = []
    for i in range(_CEILING_N):
        clean = clean_labels(sample_latents(_CEILING_SEED, i))
        pairs.append((clean, add_noise(clean, derive_rng(_CEILING_SEED, "noise", i))))
    return tuple(pairs)


def noise_report(checks: dict) -> dict[str, dict]:
    """Label noise per field and the best accuracy a perfect reader can reach.

    The ceiling is estimated by simulation: for ``_CEILING_N`` conversations of
    a fixed seed, a reader who recovers the clean labels exactly from the text
    is scored against the noisy labels by ``checks`` (scoring.field_checks of the
    run's eval config), so the ceiling moves with the bands evaluation uses.
    """
    pairs = _clean_and_noisy()
    method = f"simulation: perfect reader vs noisy labels, seed={_CEILING_SEED}, n={_CEILING_N}"
    report = {}
    for name in LABEL_FIELDS:
        hits = sum(bool(checks[name](clean[name], noisy[name])) for clean, noisy in pairs)
        report[name] = {**NOISE[name], "ceiling": round(hits / _CEILING_N, 4), "ceiling_method": method}
    return report
