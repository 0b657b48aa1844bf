"""``data=twcs``: reply generation from Kaggle's "Customer Support on Twitter" (twcs.csv).

Columns ``tweet_id, author_id, inbound, created_at, text, response_tweet_id,
in_response_to_tweet_id``. Each brand reply (``inbound`` False) is paired with the customer
tweet it answers; the ``top_brands`` brands with the most pairs are kept, and each pair
becomes a ``reply`` example whose instruction names the brand. Handles and links carry no
signal a model can learn (and handles identify people), so they become ``@user`` / ``<url>``.
The file (2.8M tweets) is streamed, keeping only customer tweets and brand replies.
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from operator import attrgetter
from typing import NamedTuple

from ccexp.config import ConfigError, DataConfig, DataSizeConfig
from ccexp.data.formats import read_csv
from ccexp.data.splitting import holdout_splits, report_skipped, take
from ccexp.data.tasks import SYSTEM_PROMPT

log = logging.getLogger("ccexp.data")

COLUMNS = ("tweet_id", "author_id", "inbound", "text", "in_response_to_tweet_id")
_URL = re.compile(r"https?://\S+")
_HANDLE = re.compile(r"@\w+")


class Pair(NamedTuple):
    id: str
    brand: str
    customer: str
    reply: str
    author: str  # the customer's author_id: their pairs (one thread's turns among them) stay in one split


def clean_tweet(text: str) -> str:
    """Entities decoded, links -> <url>, handles -> @user, whitespace collapsed."""
    text = _HANDLE.sub("@user", _URL.sub("<url>", html.unescape(text)))
    return " ".join(text.split())


def _has_words(cleaned: str) -> bool:
    return bool(cleaned.replace("@user", "").replace("<url>", "").strip())


def _tweet_id(value: str) -> str:
    return value.strip().removesuffix(".0")  # pandas wrote the id column as floats ("3.0")


def _read(path: str, key: str) -> tuple[dict[str, tuple[str, str, int]], list[dict]]:
    """(customer tweet id -> (author, text, line), brand replies in file order), streamed. A
    row repeated as it was (a file joined with an overlapping export) is read once and counted;
    a tweet_id given again with other values fails naming both lines: pairs join by id, so it
    would answer one customer's tweet with a reply to another's."""
    customers: dict[str, tuple[str, str, int]] = {}
    replies: dict[str, tuple[int, dict]] = {}  # reply id -> (line, row)
    rows = repeated = 0
    for line, row in read_csv(path, key, COLUMNS):
        rows += 1
        inbound = row["inbound"].strip().lower()
        if inbound not in ("true", "false"):  # else every row would read as a brand reply
            raise ConfigError(f"{path}:{line}: inbound {row['inbound']!r}: expected True (a customer's tweet) "
                              "or False (a brand's)")
        tweet, author = _tweet_id(row["tweet_id"]), row["author_id"].strip()
        if inbound == "false" and not row["in_response_to_tweet_id"]:
            continue  # a brand's tweet answering nothing: never paired
        if tweet in customers or tweet in replies:
            if tweet in customers:
                first, same = customers[tweet][2], inbound == "true" and customers[tweet][:2] == (author, row["text"])
            else:
                first, earlier = replies[tweet]
                same = inbound == "false" and all(earlier[c] == row[c] for c in ("author_id", "text")) and \
                    _tweet_id(earlier["in_response_to_tweet_id"]) == _tweet_id(row["in_response_to_tweet_id"])
            if not same:
                raise ConfigError(f"{path}:{line}: tweet_id {tweet} already on line {first} with other values; "
                                  "expected one row per tweet")
            repeated += 1
        elif inbound == "true":
            customers[tweet] = author, row["text"], line
        else:
            replies[tweet] = line, row
    report_skipped(path, {"repeating an earlier row": repeated}, rows)
    return customers, [row for _, row in replies.values()]


def load_pairs(data: DataConfig, path: str, key: str, brands: list[str] | None = None) -> list[Pair]:
    """Customer tweet + first brand reply, for the top_brands brands; the rest counted. A val or
    test file gets ``brands``, the train file's: its own top brands would score the model on
    brands it never trained on."""
    customers, replies = _read(path, key)
    pairs, answered = [], set()
    skipped = {"answering a tweet not in the file or not from a customer": 0,
               "extra replies to an answered tweet": 0, "with no text besides handles and links": 0}
    for row in replies:
        asked = _tweet_id(row["in_response_to_tweet_id"])
        if asked not in customers:
            skipped["answering a tweet not in the file or not from a customer"] += 1
            continue
        if asked in answered:
            skipped["extra replies to an answered tweet"] += 1
            continue
        answered.add(asked)
        author, text, _ = customers[asked]
        customer, reply = clean_tweet(text), clean_tweet(row["text"])
        if not (_has_words(customer) and _has_words(reply)):
            skipped["with no text besides handles and links"] += 1
            continue
        pairs.append(Pair(f"twcs/{_tweet_id(row['tweet_id'])}", row["author_id"].strip(), customer, reply, author))
    report_skipped(path, skipped, len(replies), noun="brand replies")
    counts = Counter(p.brand for p in pairs)
    if brands is None:
        brands = sorted(counts, key=lambda b: (-counts[b], b.lower()))[: data.top_brands]
        log.info("%s: %d brands, kept the top %d by replies (%s): %d of %d pairs", path, len(counts), len(brands),
                 ", ".join(f"{b} {counts[b]}" for b in brands), sum(counts[b] for b in brands), len(pairs))
    else:
        if pairs and not any(counts[b] for b in brands):
            raise ConfigError(f"{path}: none of its {len(pairs)} brand replies are from the train file's brands "
                              f"({', '.join(brands)}); expected replies of the brands the model trains on")
        log.info("%s: kept the train file's brands (%s): %d of %d pairs", path,
                 ", ".join(f"{b} {counts[b]}" for b in brands), sum(counts[b] for b in brands), len(pairs))
    return [p for p in pairs if p.brand in brands]


def reply_instruction(brand: str) -> str:
    return (f"You answer customer tweets for {brand} on Twitter. Write {brand}'s reply to this tweet, "
            "as plain text.")


def reply_example(pair: Pair) -> dict:
    return {"id": pair.id, "conversation_id": f"twcs/customer/{pair.author}", "task": "reply", "messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{reply_instruction(pair.brand)}\n\nCustomer: {pair.customer}"},
        {"role": "assistant", "content": pair.reply},
    ], "reference": {"reply": pair.reply}}


def build_twcs(data: DataConfig, size: DataSizeConfig) -> dict[str, list[dict]]:
    # By customer: a thread's later pairs quote and continue its earlier ones, so a thread split
    # across train and test would leak; a customer's other threads share their words too.
    # holdout_splits reads the train file first: its top brands then pick a val/test file's pairs.
    brands: list[str] = []

    def load(path: str, key: str) -> list[Pair]:
        pairs = load_pairs(data, path, key, brands if key != "data.train_path" else None)
        if key == "data.train_path":
            brands[:] = sorted({p.brand for p in pairs}, key=str.lower)
        return pairs

    splits = take(holdout_splits(data, load, attrgetter("author"), content=attrgetter("customer")), size, data)
    return {split: [reply_example(p) for p in pairs] for split, pairs in splits.items()}
