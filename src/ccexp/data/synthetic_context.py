"""Latent layer of the synthetic generator: calendar, queue, agents and customers.

Everything here is sampled before any text exists. The dialogue renderer turns
these latents into turns, and the label model in ``synthetic`` scores them.
All randomness comes from ``derive_rng`` streams, so a conversation depends
only on (seed, index) and never on Python's salted ``hash()``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

from ccexp.data.synthetic_issues import ISSUES
from ccexp.data.synthetic_phrases import AGENT_NAMES, COMPANIES, FIRST_NAMES, LAST_NAMES

ISSUE_CATEGORIES: tuple[str, ...] = tuple(ISSUES)
JOURNEY_TYPES = (
    "first_contact", "follow_up", "escalation", "repeat_issue", "retention_save", "onboarding",
)
N_AGENTS = 1007
SKILLS = ("empathy", "technical", "communication", "efficiency", "protocol")
SHIFTS = ("day", "evening", "night")
TEMPERAMENTS = ("calm", "frustrated", "angry")
OUTCOMES = ("resolved", "partially", "unresolved", "escalated")

START_DATE = dt.date(2023, 1, 1)
SPAN_DAYS = 731  # 2023-01-01 .. 2024-12-31
LONG_WAIT_MINUTES = 5.0  # a wait the agent should acknowledge
LONG_HOLD_MINUTES = 4  # a single hold this long is a coachable miss

# Inbound volume by hour: business-hours heavy, thin overnight.
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 6, 9, 11, 12, 12, 11, 11, 11, 10, 9, 8, 7, 6, 5, 4, 2, 1)
_CUM_HOURS = tuple(sum(_HOUR_WEIGHTS[: i + 1]) for i in range(24))
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def derive_rng(*parts: object) -> random.Random:
    """An independent, reproducible random stream named by ``parts``."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Limit ``x`` to [lo, hi]."""
    return max(lo, min(x, hi))


# --- Agents -----------------------------------------------------------------
@dataclass(frozen=True)
class Agent:
    """One agent of the pool; skills are stable across all their contacts."""

    agent_id: str
    name: str
    shift: str
    skills: dict[str, float]


def _make_agent(seed: int, index: int) -> Agent:
    rng = derive_rng(seed, "agent", index)
    shift = rng.choices(SHIFTS, cum_weights=(60, 88, 100))[0]
    # A shared "talent" factor correlates the skills, as in real teams;
    # night shift is staffed by newer agents, hence slightly lower.
    talent = rng.betavariate(2.6, 2.0) * (0.88 if shift == "night" else 1.0)
    skills = {s: round(clamp(0.55 * talent + 0.45 * rng.betavariate(2.0, 2.0)), 3) for s in SKILLS}
    return Agent(f"AGT-{index + 1:04d}", rng.choice(AGENT_NAMES), shift, skills)


@lru_cache(maxsize=8)
def agent_pool(seed: int) -> tuple[Agent, ...]:
    """The ``N_AGENTS`` agents of a seed, ids AGT-0001 .. AGT-1007."""
    return tuple(_make_agent(seed, i) for i in range(N_AGENTS))


@lru_cache(maxsize=8)
def _agents_by_shift(seed: int) -> dict[str, tuple[Agent, ...]]:
    pool = agent_pool(seed)
    return {s: tuple(a for a in pool if a.shift == s) for s in SHIFTS}


def shift_for_hour(hour: int) -> str:
    """Which shift covers an hour of the day."""
    return "day" if 8 <= hour < 16 else "evening" if hour >= 16 else "night"


# --- Calendar ---------------------------------------------------------------
def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


@lru_cache(maxsize=16)
def us_holidays(year: int) -> dict[dt.date, str]:
    """The fixed list of US federal holidays (actual dates, not observed days)."""
    return {
        dt.date(year, 1, 1): "New Year's Day",
        _nth_weekday(year, 1, 0, 3): "Martin Luther King Jr. Day",
        _nth_weekday(year, 2, 0, 3): "Presidents' Day",
        _last_weekday(year, 5, 0): "Memorial Day",
        dt.date(year, 6, 19): "Juneteenth",
        dt.date(year, 7, 4): "Independence Day",
        _nth_weekday(year, 9, 0, 1): "Labor Day",
        _nth_weekday(year, 10, 0, 2): "Columbus Day",
        dt.date(year, 11, 11): "Veterans Day",
        _nth_weekday(year, 11, 3, 4): "Thanksgiving",
        dt.date(year, 12, 25): "Christmas Day",
    }


def is_peak_season(day: dt.date) -> bool:
    """Holiday shopping and returns (Nov 15 - Jan 10) and back-to-school moves (Aug 20 - Sep 10)."""
    md = (day.month, day.day)
    return md >= (11, 15) or md <= (1, 10) or (8, 20) <= md <= (9, 10)


def time_of_day(hour: int) -> str:
    """Bucket an hour into morning / afternoon / evening / night."""
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    return "evening" if 17 <= hour < 21 else "night"


def _sample_moment(rng: random.Random) -> dt.datetime:
    if rng.random() < 0.04:  # contact spikes on holidays, when stores are shut
        year = rng.choice((2023, 2024))
        day = rng.choice(sorted(us_holidays(year)))
    else:
        day = START_DATE + dt.timedelta(days=rng.randrange(SPAN_DAYS))
    hour = rng.choices(range(24), cum_weights=_CUM_HOURS)[0]
    return dt.datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60))


def _queue_wait_seconds(rng: random.Random, moment: dt.datetime, channel: str) -> int:
    """Queue wait grows with seasonal and daily volume and with thin staffing."""
    day, hour = moment.date(), moment.hour
    mean = 2.6
    if is_peak_season(day):
        mean *= 1.9
    if day in us_holidays(day.year):
        mean *= 1.6
    if day.weekday() >= 5:
        mean *= 1.3  # fewer agents rostered at weekends
    if 10 <= hour < 15:
        mean *= 1.25  # lunchtime peak
    if hour < 7 or hour >= 22:
        mean *= 0.6
    if channel == "chat":
        mean *= 0.75  # chat agents work several sessions at once
    minutes = min(rng.gammavariate(1.4, mean / 1.4), 45.0)
    return max(5, int(minutes * 60))


def build_temporal(rng: random.Random, channel: str, history: dict) -> dict[str, object]:
    """The 18 temporal-context features shown in the transcript header."""
    moment = _sample_moment(rng)
    day, hour = moment.date(), moment.hour
    iso = day.isocalendar()
    is_holiday = day in us_holidays(day.year)
    is_weekend = day.weekday() >= 5
    wait = _queue_wait_seconds(rng, moment, channel)
    return {
        "timestamp": moment.isoformat(),
        "date": day.isoformat(),
        "time_of_day": time_of_day(hour),
        "hour": hour,
        "day_of_week": _DAY_NAMES[day.weekday()],
        "day_of_week_num": day.weekday(),
        "week_of_year": iso[1],
        "month": day.month,
        "quarter": (day.month - 1) // 3 + 1,
        "is_business_hours": (not is_weekend) and (not is_holiday) and 9 <= hour < 17,
        "is_weekend": is_weekend,
        "is_holiday": is_holiday,
        "peak_season": is_peak_season(day),
        "queue_wait_seconds": wait,
        "queue_wait_minutes": round(wait / 60, 1),
        "is_first_contact": history["prior_contacts"] == 0,
        "is_followup": history["is_followup"],
        # Extra feature: recency of the previous contact separates a scheduled
        # follow-up (days) from a problem that came back (weeks), and a fresh
        # repeat contact is a churn signal.
        "days_since_last_contact": history["days_since_last_contact"],
    }


# --- Customers ----------------------------------------------------------------
@dataclass(frozen=True)
class Customer:
    """The caller: history, loyalty and mood."""

    first_name: str
    last_name: str
    tenure_months: int
    prior_contacts: int
    temperament: str


# Prior contacts in the last 30 days, and days since the last one, per journey.
_HISTORY = {
    "first_contact": ((0, 0), None),
    "onboarding": ((0, 1), (2, 12)),
    "follow_up": ((1, 2), (1, 6)),
    "repeat_issue": ((2, 5), (5, 28)),
    "escalation": ((1, 4), (1, 20)),
    "retention_save": ((0, 3), (3, 29)),
}


def sample_history(rng: random.Random, journey: str) -> dict:
    """Contact history consistent with the journey type."""
    (lo, hi), gap = _HISTORY[journey]
    prior = rng.randint(lo, hi)
    days = rng.randint(*gap) if prior and gap else None
    followup = journey == "follow_up" or (journey == "escalation" and rng.random() < 0.5)
    return {"prior_contacts": prior, "days_since_last_contact": days, "is_followup": followup}


def sample_tenure(rng: random.Random, journey: str) -> int:
    """Months as a customer: brand new for onboarding, long-tailed otherwise."""
    if journey == "onboarding":
        return rng.randint(0, 1)
    return int(clamp(rng.lognormvariate(3.0, 0.95), 1, 180))


def sample_temperament(rng: random.Random, journey: str, prior: int, wait_min: float) -> str:
    """Mood on arrival: repeat contacts and long queues make customers angrier."""
    irritation = rng.random() * 0.7 + 0.08 * prior + 0.03 * min(wait_min, 15)
    irritation += {"repeat_issue": 0.25, "escalation": 0.3, "retention_save": 0.15}.get(journey, 0.0)
    return "calm" if irritation < 0.55 else "frustrated" if irritation < 0.9 else "angry"


def pick_agent(rng: random.Random, seed: int, hour: int) -> Agent:
    """An agent from the shift on duty at ``hour``."""
    return rng.choice(_agents_by_shift(seed)[shift_for_hour(hour)])


def sample_outcome(rng: random.Random, issue: str, journey: str, agent: Agent, temporal: dict) -> str:
    """Resolution outcome: skilled agents and simple issues resolve more."""
    complexity = ISSUES[issue]["complexity"]
    tech = agent.skills["technical"]
    p_escalate = 0.05 + 0.14 * complexity * (1 - tech) + (0.3 if journey == "escalation" else 0.0)
    if not temporal["is_business_hours"]:
        p_escalate += 0.04  # specialist teams are off shift
    p_resolve = clamp(0.38 + 0.5 * tech - 0.35 * complexity + (0.08 if journey == "first_contact" else 0.0))
    r = rng.random()
    if r < p_escalate:
        return "escalated"
    r = (r - p_escalate) / (1 - p_escalate)
    if r < p_resolve:
        return "resolved"
    return "partially" if r < p_resolve + (1 - p_resolve) * 0.5 else "unresolved"


# --- Whole-conversation latents -------------------------------------------------
# Issue mix (roughly what a telco-plus-retail contact centre sees).
_ISSUE_WEIGHTS = (12, 13, 10, 9, 8, 11, 10, 9, 10, 8)
# Journey mix, then per-issue tilts: cancellations become save attempts,
# setup problems come from new customers, faults recur.
_JOURNEY_WEIGHTS = (22, 16, 14, 16, 14, 16)
_JOURNEY_TILT = {
    "cancellation": {"retention_save": 3.5},
    "technical_setup": {"onboarding": 2.0},
    "account_access": {"onboarding": 1.6},
    "plan_upgrade": {"onboarding": 1.5, "retention_save": 0.5},
    "internet_connectivity": {"repeat_issue": 1.6},
    "product_defect": {"repeat_issue": 1.4},
    "billing_dispute": {"escalation": 1.4, "follow_up": 1.2},
    "refund": {"escalation": 1.3, "follow_up": 1.3},
    "delivery": {"follow_up": 1.5},
    "general_inquiry": {"escalation": 0.4, "retention_save": 0.5},
}


@dataclass(frozen=True)
class Latents:
    """Everything the text and the labels are generated from."""

    index: int
    channel: str
    company: str
    issue: str
    secondary: str | None
    journey: str
    temporal: dict[str, object]
    agent: Agent
    customer: Customer
    outcome: str
    threat: bool  # the customer says they may cancel or leave
    has_pii: bool
    behaviours: dict[str, bool | None]  # None = not applicable to this contact
    holds: tuple[int, ...]  # minutes of each hold, in order
    fillers: int  # inefficient turns (asks to repeat, slow system)
    steps: int  # investigation exchanges


def sample_behaviours(rng: random.Random, agent: Agent, temporal: dict, outcome: str) -> dict:
    """Which good practices the agent performs; probabilities follow their skills."""
    s = agent.skills
    empathy = rng.random() < 0.35 + 0.63 * s["empathy"]
    long_wait = float(temporal["queue_wait_minutes"]) >= LONG_WAIT_MINUTES
    return {
        "greet": rng.random() < 0.45 + 0.55 * s["communication"],
        "ack_wait": (rng.random() < 0.15 + 0.8 * s["empathy"]) if long_wait else None,
        "verify": rng.random() < 0.55 + 0.45 * s["protocol"],
        "empathy": empathy,
        "dismissive": (not empathy) and rng.random() < 0.5 * (1 - s["empathy"]),
        "clear_explanation": rng.random() < 0.35 + 0.35 * s["technical"] + 0.3 * s["communication"],
        "confirm": rng.random() < 0.45 + 0.55 * s["communication"],
        "next_steps": rng.random() < 0.45 + 0.3 * s["protocol"] + 0.25 * s["communication"],
        "close": rng.random() < 0.45 + 0.55 * s["communication"],
        "escalation_protocol": (rng.random() < 0.25 + 0.75 * s["protocol"]) if outcome == "escalated" else None,
    }


def sample_holds(rng: random.Random, agent: Agent, complexity: float) -> tuple[int, ...]:
    """Hold lengths in minutes; slow agents hold more often and for longer."""
    slow = 1 - agent.skills["efficiency"]
    holds = []
    for _ in range(2):
        if rng.random() < 0.15 + 0.3 * complexity + 0.2 * slow:
            long = rng.random() < 0.08 + 0.6 * slow**1.5
            holds.append(rng.randint(LONG_HOLD_MINUTES, 12) if long else rng.randint(1, LONG_HOLD_MINUTES - 1))
    return tuple(holds)


def cancels_account(issue: str, journey: str, outcome: str) -> bool:
    """The contact ends with a cancellation carried out: a failed save ("I've processed the
    cancellation"), or a cancellation request granted."""
    if journey == "retention_save":
        return outcome == "unresolved"
    return issue == "cancellation" and outcome in ("resolved", "partially")


def sample_latents(seed: int, index: int) -> Latents:
    """Draw every latent of conversation ``index`` from its own stream."""
    rng = derive_rng(seed, "latent", index)
    issue = rng.choices(ISSUE_CATEGORIES, weights=_ISSUE_WEIGHTS)[0]
    tilt = _JOURNEY_TILT.get(issue, {})
    weights = [w * tilt.get(j, 1.0) for j, w in zip(JOURNEY_TYPES, _JOURNEY_WEIGHTS, strict=True)]
    journey = rng.choices(JOURNEY_TYPES, weights=weights)[0]
    secondary = None
    if rng.random() < 0.25:
        secondary = rng.choice([c for c in ISSUE_CATEGORIES if c != issue])
    history = sample_history(rng, journey)
    channel = "call" if rng.random() < 0.65 else "chat"
    temporal = build_temporal(rng, channel, history)
    agent = pick_agent(rng, seed, int(temporal["hour"]))
    temperament = sample_temperament(rng, journey, history["prior_contacts"], float(temporal["queue_wait_minutes"]))
    customer = Customer(
        first_name=rng.choice(FIRST_NAMES),
        last_name=rng.choice(LAST_NAMES),
        tenure_months=sample_tenure(rng, journey),
        prior_contacts=history["prior_contacts"],
        temperament=temperament,
    )
    outcome = sample_outcome(rng, issue, journey, agent, temporal)
    if secondary == "plan_upgrade" and cancels_account(issue, journey, outcome):
        secondary = None  # "thinking about upgrading to Fiber 900 too" once the account is cancelled
    threat = journey == "retention_save" or issue == "cancellation"
    threat = threat or rng.random() < {"angry": 0.35, "frustrated": 0.1}.get(temperament, 0.0)
    complexity = ISSUES[issue]["complexity"]
    slow = 1 - agent.skills["efficiency"]
    return Latents(
        index=index,
        channel=channel,
        company=rng.choice(COMPANIES),
        issue=issue,
        secondary=secondary,
        journey=journey,
        temporal=temporal,
        agent=agent,
        customer=customer,
        outcome=outcome,
        threat=threat,
        has_pii=rng.random() < 0.15,
        behaviours=sample_behaviours(rng, agent, temporal, outcome),
        holds=sample_holds(rng, agent, complexity),
        fillers=sum(rng.random() < 0.3 * slow for _ in range(3)),
        steps=min(len(ISSUES[issue]["steps"]), int(complexity * 2.2 + rng.random() * 1.4 + 0.8 * slow)),
    )
