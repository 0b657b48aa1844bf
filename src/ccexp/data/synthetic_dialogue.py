"""Render a conversation's latents into turns.

The renderer is faithful: every behaviour flag in ``Latents.behaviours`` maps to
one phrase bank (performed) or to its absence / a poor variant (missed), so the
labels computed from the flags are readable from the text. Wording, slot values,
disfluencies and turn order details come from a separate "text" random stream.
"""

from __future__ import annotations

import datetime as dt
import random

from ccexp.data import synthetic_phrases as P
from ccexp.data.synthetic_context import LONG_WAIT_MINUTES, Latents, derive_rng
from ccexp.data.synthetic_issues import ISSUES

Turn = tuple[str, str]
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
# Issues where a customer might read out a card number.
_PAYMENT_ISSUES = ("billing_dispute", "refund", "delivery", "product_defect", "cancellation", "plan_upgrade")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# --- Slot values ------------------------------------------------------------------
def tenure_phrase(months: int) -> str:
    """How long someone has been a customer, in the words people use."""
    if months < 1:
        return "less than a month"
    if months < 12:
        return "a month" if months == 1 else f"{months} months"
    if months < 24:
        return "over a year"
    return f"{months // 12} years"


def _days_ago(days: int | None, day: dt.date, rng: random.Random) -> str:
    """When the previous contact was, phrased to fit "my call from ..." and "fixed ..."."""
    if days is None:
        return "recently"
    if days == 1:
        return "yesterday"
    if days < 7:
        return rng.choice((f"{days} days ago", f"last {_WEEKDAYS[(day - dt.timedelta(days=days)).weekday()]}"))
    return "last week" if days < 14 else f"{days // 7} weeks ago"


def _card(rng: random.Random) -> str:
    """A fake, Luhn-valid 16-digit card number, in one of the usual layouts."""
    digits = [rng.choice((4, 5))] + [rng.randrange(10) for _ in range(14)]
    total = sum(d if i % 2 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    sep = rng.choice((" ", "-", ""))
    return sep.join(s[i:i + 4] for i in range(0, 16, 4))


def _phone(rng: random.Random) -> str:
    area, line = rng.randint(201, 989), rng.randrange(10000)
    return rng.choice((f"({area}) 555-{line:04d}", f"{area}-555-{line:04d}", f"+1 {area} 555 {line:04d}"))


def _joined_ago(tenure_months: int, days_since_last_contact, rng: random.Random) -> str:
    """When a customer joined, in words: a new customer (0 months) whose last contact was a week
    or more ago joined before it, not "a few days ago"."""
    if tenure_months:
        return rng.choice(("last month", "a few weeks ago"))
    return "a week or two ago" if days_since_last_contact is not None and days_since_last_contact >= 5 \
        else "a few days ago"


def build_slots(rng: random.Random, lat: Latents) -> dict[str, str]:
    """Fill every template field used by the phrase banks."""
    day = dt.date.fromisoformat(str(lat.temporal["date"]))
    cust = lat.customer
    cents = rng.choice(("00", "99", "50", "49"))
    # amount2 is the smaller: a partial refund ("I got {amount2}, but I paid {amount}") had been
    # larger than the price in half the calls
    amounts = sorted(rng.sample(range(12, 260), 2), reverse=True)
    last_month = _MONTHS[(day.month - 2) % 12]
    # "refund issued on {month} {day}", "around {month} {day}": a few days before the contact,
    # never after it (a day of this month past today had been named 22% of the time)
    past = day - dt.timedelta(days=rng.randint(3, 12))
    slots = {
        "company": lat.company,
        "contacting": "chatting with" if lat.channel == "chat" else "calling",
        "contact": lat.channel,  # "on this chat", "on this call"
        "agent": lat.agent.name,
        "tod": "evening" if lat.temporal["time_of_day"] == "night" else str(lat.temporal["time_of_day"]),
        "amount": f"${amounts[0]}.{cents}",
        "amount2": f"${amounts[1]}.{cents}",
        # A plan's monthly price change is tens of dollars ("lowers your bill by $181.50" was not);
        # taken from the draw above so the rest of the text stream stays as it was.
        "monthly": f"${5 + amounts[1] % 36}.{cents}",
        "month": _MONTHS[past.month - 1],
        "last_month": last_month,
        "next_month": _MONTHS[day.month % 12],
        "day": str(past.day),
        "date": (day + dt.timedelta(days=rng.randint(3, 14))).strftime("%B %d").replace(" 0", " "),
        "weekday": _WEEKDAYS[(day.weekday() - rng.randint(1, 5)) % 7],
        "plan": rng.choice(P.PLANS),
        "new_plan": rng.choice(P.NEW_PLANS),
        "device": rng.choice(P.DEVICES),
        "product": rng.choice(P.PRODUCTS),
        "carrier": rng.choice(P.CARRIERS),
        "speed": rng.choice(P.SPEEDS),
        "slow_speed": f"{rng.randint(3, 40)} megabits",
        "order": str(rng.randint(1000000, 9999999)),
        "ref": f"CC-{rng.randint(100000, 999999)}",
        "team": ISSUES[lat.issue]["team"],
        "app": f"the {lat.company} app",
        "last4": f"{rng.randrange(10000):04d}",
        "zip": f"{rng.randint(10000, 99950)}",
        "pin": f"{rng.randrange(10000):04d}",
        "days_ago": _days_ago(lat.temporal["days_since_last_contact"], day, rng),
        "ordinal": _ORDINALS[min(cust.prior_contacts, 6)],
        "prior": _NUMBERS[min(cust.prior_contacts, 6)],
        "tenure": tenure_phrase(cust.tenure_months),
        "tenure_ago": _joined_ago(cust.tenure_months, lat.temporal["days_since_last_contact"], rng),
        "wait": str(int(float(lat.temporal["queue_wait_minutes"]))),
        "name": f"{cust.first_name} {cust.last_name}",
        "phone": _phone(rng),
        "email": f"{cust.first_name}.{cust.last_name}{rng.randint(1, 99)}@{rng.choice(P.EMAIL_DOMAINS)}"
        .lower().replace("'", ""),
        "card": _card(rng),
    }
    slots["offer"] = rng.choice(P.OFFERS).format_map(slots)
    return slots


# --- Surface noise ----------------------------------------------------------------
def roughen(text: str, rng: random.Random, chat: bool) -> str:
    """Add the small disfluencies and typos of real customer text."""
    words = text.split(" ")
    if not chat and rng.random() < 0.25:  # spoken hesitation
        hesitation = rng.choice(P.HESITATIONS)
        if words[0].lower().rstrip(",") != hesitation.rstrip(","):  # not "Um, um, I got a new phone"
            if not words[0].startswith(("I ", "I'")) and words[0] != "I":
                words[0] = words[0][:1].lower() + words[0][1:]
            words.insert(0, hesitation)
    p_typo = 0.25 if chat else 0.1
    if rng.random() < p_typo:  # doubled letter
        i = rng.randrange(len(words))
        w = words[i]
        if w.isalpha() and len(w) > 3:
            j = rng.randrange(1, len(w))
            words[i] = w[:j] + w[j - 1] + w[j:]
    text = " ".join(words)
    if rng.random() < p_typo:
        text = text.replace("'", "")
    if chat and rng.random() < 0.4:
        text = text.lower().rstrip(".")
    return text[:1].upper() + text[1:] if not chat else text


def _join(*parts: str) -> str:
    """Join sentence fragments, lower-casing after a fragment that runs on."""
    out = ""
    for part in (p for p in parts if p):
        if not out:
            out = part[:1].upper() + part[1:]
        elif out[-1] in ".!?":
            out += " " + part[:1].upper() + part[1:]
        else:
            lead = part if part.startswith(("I ", "I'")) else part[:1].lower() + part[1:]
            out += " " + lead
    return out


class _Dialogue:
    """Turn accumulator with the conversation's text stream and slot values."""

    def __init__(self, lat: Latents, rng: random.Random):
        self.lat, self.rng = lat, rng
        self.chat = lat.channel == "chat"
        self.slots = build_slots(rng, lat)
        self.variant = rng.choice(ISSUES[lat.issue]["variants"])  # keeps problem and fix coherent
        self.turns: list[Turn] = []
        self.pii: list[dict[str, str]] = []
        self.returning = ""  # a pending "thanks for holding" opens the next agent turn

    def pick(self, bank: tuple[str, ...]) -> str:
        return self.rng.choice(bank).format_map(self.slots)

    def agent(self, *parts: str) -> None:
        text = _join(*parts)
        if self.turns and self.turns[-1][0] == "agent":  # one agent turn until the customer speaks
            text = _join(self.turns.pop()[1], text)
        self.turns.append(("agent", text))

    def customer(self, *parts: str, rough: bool = True) -> None:
        text = _join(*parts)
        if self.lat.customer.temperament == "angry" and self.rng.random() < 0.2:
            text = _join(text, self.rng.choice(P.ANGRY_INTERJECTIONS))
        self.turns.append(("customer", roughen(text, self.rng, self.chat) if rough else text))

    def system(self, text: str) -> None:
        self.turns.append(("system", text))

    def pii_text(self, bank: tuple[str, ...]) -> str:
        """A PII-bearing phrase; records each value so redaction can be tested."""
        template = self.rng.choice(bank)
        for kind in ("name", "phone", "email", "card"):
            if "{" + kind + "}" in template:
                self.pii.append({"kind": kind, "value": self.slots[kind]})
        return template.format_map(self.slots)


# --- Conversation phases ------------------------------------------------------------
def _opening(d: _Dialogue) -> None:
    lat, b = d.lat, d.lat.behaviours
    start = f"[Inbound call connected to agent {lat.agent.agent_id}]" if not d.chat else (
        f"[Chat started with agent {lat.agent.agent_id}]")
    d.system(start)
    greeting = d.pick(P.GREET_GOOD if b["greet"] else P.GREET_POOR)
    d.agent(d.pick(P.ACK_WAIT) if b["ack_wait"] else "", greeting)
    mood = lat.customer.temperament
    long_wait = float(lat.temporal["queue_wait_minutes"]) >= LONG_WAIT_MINUTES
    p_complain = (0.25 if b["ack_wait"] else 0.6) if mood != "calm" else 0.3
    complaint = d.pick(P.WAIT_COMPLAINT) if long_wait and d.rng.random() < p_complain else ""
    request = lat.journey == "repeat_issue" and lat.issue in P.REQUEST_ISSUES
    cue = d.pick(P.REPEAT_REQUEST_CUES if request else P.JOURNEY_CUES[lat.journey])
    issue = d.pick(d.variant["open"])
    intro = d.pii_text(P.PII_INTRO) if lat.has_pii and not b["verify"] else ""
    d.customer(d.pick(P.MOOD_PREFIX[mood]), complaint, cue, issue, intro, rough=not intro)


def _verification(d: _Dialogue) -> None:
    lat, b = d.lat, d.lat.behaviours
    ack = d.pick(P.EMPATHY) if b["empathy"] else d.pick(P.NEUTRAL_ACK)
    dismiss = d.pick(P.DISMISSIVE) if b["dismissive"] else ""
    tenure_by_agent = d.rng.random() < 0.7
    tenure = d.pick(P.TENURE_AGENT) if tenure_by_agent else ""
    if b["verify"]:
        ask, answer = d.rng.choice(P.VERIFY_PII if lat.has_pii else P.VERIFY)
        d.agent(ack, dismiss, ask)
        if lat.has_pii:
            d.customer(d.pii_text((answer,)), rough=False)
        else:
            d.customer(answer.format_map(d.slots))
        d.agent(d.pick(P.VERIFIED), tenure)
    else:
        d.agent(ack, dismiss, d.pick(P.NO_VERIFY_LOOKUP), tenure)
    if not tenure_by_agent:
        d.customer(d.pick(P.TENURE_CUSTOMER), d.rng.choice(("Can we sort this out?", "Anyway.", "")))


def _investigation(d: _Dialogue) -> None:
    """Troubleshooting exchanges with inefficiency turns and holds mixed in."""
    lat = d.lat
    # Which of the issue's checks this agent runs, in their usual order: the first ones every
    # time made every call of an issue open its troubleshooting alike.
    steps = ISSUES[lat.issue]["steps"]
    # A variant answers some checks its own way ("it's completely down": no speed to read out).
    answers = d.variant.get("answers", {})
    # The steps its explanation cites always run ("even after a reset" had followed no reset).
    needs = d.variant.get("needs", ())
    others = [i for i in range(len(steps)) if i not in needs]
    chosen = [*needs, *d.rng.sample(others, max(0, lat.steps - len(needs)))]
    events = [("step", (steps[i][0], answers.get(i, steps[i][1]))) for i in sorted(chosen)]
    extras = [("filler", d.rng.choice(P.FILLER)) for _ in range(lat.fillers)]
    extras += [("hold", minutes) for minutes in lat.holds]
    for event in extras:  # fillers and holds land between steps
        events.insert(d.rng.randint(min(1, len(events)), len(events)), event)
    with_card = lat.has_pii and lat.issue in _PAYMENT_ISSUES and d.rng.random() < 0.5
    card_at = d.rng.randrange(len(events) + 1) if with_card else -1
    returning = ""
    for i, (kind, payload) in enumerate(events):
        if kind == "hold":
            d.agent(returning, d.pick(P.HOLD_ASK))
            d.customer(d.pick(P.HOLD_OK))
            unit = "minute" if payload == 1 else "minutes"
            where = "Chat on hold" if d.chat else "Customer placed on hold"
            d.system(f"[{where} for {payload} {unit}]")
            returning = d.pick(P.HOLD_RETURN)
            continue
        question, answer = payload
        d.agent(returning, question.format_map(d.slots))
        returning = ""
        card = d.pii_text(P.CARD_MENTION) if i == card_at else ""
        d.customer(answer.format_map(d.slots), card, rough=not card)
    if card_at == len(events):
        if returning:  # back from a trailing hold before the customer reads out the card
            d.agent(returning)
            returning = ""
        d.customer(d.pii_text(P.CARD_MENTION), rough=False)
    d.returning = returning


def _resolution(d: _Dialogue) -> None:
    lat, b, bank = d.lat, d.lat.behaviours, ISSUES[d.lat.issue]
    variant = d.variant
    explain = variant["explain"].format_map(d.slots) if b["clear_explanation"] else d.pick(bank["explain_bad"])
    if lat.outcome == "escalated":
        fix = d.pick(P.ESCALATE_PROTOCOL if b["escalation_protocol"] else P.ESCALATE_COLD)
    elif lat.outcome in ("resolved", "partially"):
        fix = variant[lat.outcome].format_map(d.slots)
    else:
        fix = d.pick(P.UNRESOLVED)
    if lat.secondary and lat.outcome == "escalated":  # raise it before the handover
        _secondary(d)
    if lat.journey == "retention_save":
        # A save over another issue answers that issue first (the fix, or that it cannot be fixed
        # today): the offer alone had "fixed" a broken line the customer then called working.
        answer = fix if lat.issue != "cancellation" and lat.outcome != "escalated" else ""
        d.agent(d.returning, explain, answer, d.pick(P.RETENTION_OFFER))
        d.returning = ""  # said: a second issue after this has no hold to come back from
        d.customer(d.pick(P.RETENTION_REPLY[lat.outcome]))
        follow = fix if lat.outcome == "escalated" else P.RETENTION_FOLLOW[lat.outcome].format_map(d.slots)
        d.agent(follow)
    else:
        d.agent(d.returning, explain, fix)
        d.returning = ""
        if lat.threat and lat.issue != "cancellation":
            d.customer(d.pick(P.CANCEL_THREAT))
            d.agent(d.pick(P.EMPATHY) if b["empathy"] else d.pick(P.NEUTRAL_ACK), "I've noted that on the account.")
    if lat.secondary and lat.outcome != "escalated":
        _secondary(d)


def _secondary(d: _Dialogue) -> None:
    if d.returning:  # back from hold before the customer speaks again
        d.agent(d.returning)
        d.returning = ""
    # The agent answers what was raised: a generic "that's handled too" had followed every one.
    raised, fix = d.rng.choice(ISSUES[d.lat.secondary]["secondary"])
    # "Also, I also need help": a line that says "also" takes an intro that doesn't
    intros = tuple(i for i in P.SECONDARY_INTRO if "also" not in raised.lower() or "also" not in i.lower())
    d.customer(d.pick(intros), raised.format_map(d.slots))
    d.agent(d.pick(P.SECONDARY_ACK), fix.format_map(d.slots))


def _wrap_up(d: _Dialogue, csat: int) -> None:
    lat, b = d.lat, d.lat.behaviours
    # The save failed: a cancellation carried out that the agent argued against, confirmed as
    # CONFIRM_CANCELLED. Narrower than synthetic_context.cancels_account on purpose: a granted
    # cancellation request is a request resolved, and CONFIRM_DONE's replies fit it ("Yes, that's
    # everything.", "Yep, it's there now." after "I've scheduled the cancellation"; checked on 1,500).
    cancelled = lat.journey == "retention_save" and lat.outcome == "unresolved"
    if b["confirm"]:
        fixed = lat.issue in P.FIXED_ISSUES
        if cancelled or (lat.outcome == "resolved" and not fixed):
            # Each question with its own answers: "Does that fully resolve it?" "No, that's
            # clear." read as an unresolved call.
            question, replies = d.rng.choice(P.CONFIRM_CANCELLED if cancelled else P.CONFIRM_DONE)
            d.agent(question.format_map(d.slots))
            d.customer(d.pick(replies))
        else:
            d.agent(d.pick(P.CONFIRM_FIXED if lat.outcome == "resolved" else P.CONFIRM_OTHER))
            d.customer(d.pick(P.CONFIRM_REPLY["fixed" if fixed and lat.outcome == "resolved" else lat.outcome]))
    steps = ""
    if b["next_steps"]:
        escalated = lat.outcome == "escalated"
        issue = "cancellation" if cancelled else lat.issue
        steps = d.pick(P.NEXT_STEPS_ESCALATED if escalated else ISSUES[issue]["next_steps"])
    # The customer's last words lean towards their satisfaction, no more: a fifth just sign off,
    # and of the rest two in five are a level off, the unhappy ones mostly politer than they
    # feel. CSAT is read from the whole call (outcome, waits, holds, how the agent behaved);
    # when the last line matched it 85% of the time, that one line answered the task.
    roll = d.rng.random()
    if roll < 0.2:
        last_words = d.pick(P.SIGN_OFFS)
    else:
        level = csat - 1
        if roll < 0.52:
            polite = level < 2 and d.rng.random() < 0.7
            level = min(4, max(0, level + (1 if polite else d.rng.choice((-1, 1)))))
        last_words = d.pick(P.CSAT_LINES[level])
    if b["close"]:
        d.agent(steps, d.pick(P.ANYTHING_ELSE))
        d.customer(d.rng.choice(("No, that's all.", "No, that's it.", "Nope.", "No.")), last_words)
        d.agent(d.pick(P.CLOSE_GOOD))
    else:
        if steps:
            d.agent(steps)
        d.customer(last_words)
        if poor := d.pick(P.CLOSE_POOR):
            d.agent(poor)
    if lat.outcome == "escalated":
        d.system(f"[{'Chat' if d.chat else 'Call'} transferred to {ISSUES[lat.issue]['team']} team]")
    elif d.rng.random() < 0.5:
        d.system(P.CALL_END[lat.channel])


def render_dialogue(lat: Latents, seed: int, csat: int) -> tuple[tuple[Turn, ...], list[dict[str, str]]]:
    """Turns of one conversation and the fake personal data placed in them.

    ``csat`` is the clean satisfaction score, which sets the customer's
    closing line.
    """
    d = _Dialogue(lat, derive_rng(seed, "text", lat.index))
    _opening(d)
    _verification(d)
    _investigation(d)
    _resolution(d)
    _wrap_up(d, csat)
    return tuple(d.turns), d.pii
