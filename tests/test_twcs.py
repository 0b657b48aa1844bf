"""data=twcs: customer tweet / brand reply pairs, top brands, cleaning, one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, TaskMixConfig
from ccexp.data import build_splits
from ccexp.data.twcs import clean_tweet

FIXTURE = str(Path(__file__).parent / "fixtures" / "twcs_sample.csv")
MIX = TaskMixConfig(weights={"issue": 1})
BIG = DataSizeConfig(train=100, val=100, test=100)


def _twcs(**kw) -> DataConfig:
    return DataConfig(name="twcs", **{"train_path": FIXTURE, **kw})


def test_clean_tweet():
    assert clean_tweet("@AmazonHelp my order https://t.co/x1 &amp; @Bob_2 hi\n there") == \
        "@user my order <url> & @user hi there"


def test_pairs_top_brands_and_split(caplog):
    with caplog.at_level(logging.INFO, logger="ccexp.data"):
        splits = build_splits(_twcs(), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 13, "val": 2, "test": 2}
    examples = [ex for s in splits.values() for ex in s]
    brands = {ex["messages"][1]["content"].split(" for ")[1].split(" on ")[0] for ex in examples}
    assert brands == {"AmazonHelp", "AppleSupport", "SpotifyCares", "Uber_Support", "comcastcares"}
    ex = next(e for e in examples if e["id"] == "twcs/102")
    assert ex["task"] == "reply" and ex["conversation_id"] == "twcs/customer/115712"
    assert ex["messages"][1]["content"] == (
        "You answer customer tweets for AppleSupport on Twitter. Write AppleSupport's reply to this tweet, as plain "
        "text.\n\nCustomer: @user my iPhone battery drains from 100 to 20 in two hours since the update <url>")
    assert ex["reference"] == {"reply": "@user We'd like to help with your battery. Which iOS version are you on? "
                                        "Let's continue in DM <url>"}
    assert ex["messages"][2]["content"] == ex["reference"]["reply"]
    refund = next(e for e in examples if e["id"] == "twcs/140")  # the first of two replies is kept
    assert "twcs/141" not in {e["id"] for e in examples} and "Refunds can take" in refund["reference"]["reply"]
    messages = [r.getMessage() for r in caplog.records]
    assert (f"{FIXTURE}: skipped 3 of 22 brand replies (1 answering a tweet not in the file or not from a customer, "
            "1 extra replies to an answered tweet, 1 with no text besides handles and links)") in messages
    assert (f"{FIXTURE}: 7 brands, kept the top 5 by replies (AmazonHelp 5, AppleSupport 4, SpotifyCares 3, "
            "Uber_Support 3, comcastcares 2): 17 of 19 pairs") in messages


def test_top_brands_and_data_size():
    splits = build_splits(_twcs(top_brands=1), DataSizeConfig(train=3, val=1, test=1), MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 1, "test": 1}
    assert all("for AmazonHelp on" in ex["messages"][1]["content"] for s in splits.values() for ex in s)
    assert build_splits(_twcs(), BIG, MIX) == build_splits(_twcs(), BIG, MIX)


def test_bad_files(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("tweet_id,author_id,text\n1,a,hi\n")
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=str(bad)), BIG, MIX)
    assert str(err.value) == f"{bad}: no column 'inbound' (columns: tweet_id, author_id, text)"
    latin = tmp_path / "latin.csv"
    latin.write_bytes(Path(FIXTURE).read_bytes().replace(b"the update", b"the upd\xe2te"))
    with pytest.raises(ConfigError, match=r"latin\.csv:2: not UTF-8 text \(byte \d+; re-save the file as UTF-8\)$"):
        build_splits(_twcs(train_path=str(latin)), BIG, MIX)
    # A row cut short (a partial download): the columns it lacks would read as missing, not as a bad row.
    short = tmp_path / "short.csv"
    short.write_text(Path(FIXTURE).read_text() + "999,sprintcare\n")
    lines = Path(FIXTURE).read_text().count("\n") + 1
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=str(short)), BIG, MIX)
    assert str(err.value) == f"{short}:{lines}: 2 fields, the header has 7 (a line cut short?)"
    yes_no = tmp_path / "yes_no.csv"
    yes_no.write_text(Path(FIXTURE).read_text().replace(",True,", ",yes,", 1))
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=str(yes_no)), BIG, MIX)
    assert str(err.value) == f"{yes_no}:2: inbound 'yes': expected True (a customer's tweet) or False (a brand's)"
    with pytest.raises(ConfigError, match=r"^missing\.csv: no such file \(data\.train_path; "):
        build_splits(_twcs(train_path="missing.csv"), BIG, MIX)
    with pytest.raises(ConfigError, match=r"^data\.top_brands: expected an integer >= 1, got 0$"):
        _twcs(top_brands=0)


def test_a_customer_is_never_in_two_splits(tmp_path):
    """A thread's later pairs quote and continue its earlier ones: a customer's pairs are held
    out together (the conversation id names the customer)."""
    rows = ["tweet_id,author_id,inbound,created_at,text,response_tweet_id,in_response_to_tweet_id"]
    for c in range(12):
        for turn in range(3):
            asked, answer = 1000 + 10 * c + 2 * turn, 1001 + 10 * c + 2 * turn
            rows.append(f"{asked},cust{c},True,,@AppleSupport issue {c} turn {turn},{answer},")
            rows.append(f"{answer},AppleSupport,False,,@cust{c} reply {c}.{turn},,{asked}")
    path = tmp_path / "threads.csv"
    path.write_text("\n".join(rows) + "\n")
    splits = build_splits(_twcs(train_path=str(path)), BIG, MIX)
    customers = {s: {ex["conversation_id"] for ex in exs} for s, exs in splits.items()}
    assert {s: len(exs) for s, exs in splits.items()} == {"train": 30, "val": 3, "test": 3}
    assert not customers["train"] & customers["val"] and not customers["train"] & customers["test"]
    assert not customers["val"] & customers["test"] and customers["val"] <= {f"twcs/customer/cust{c}" for c in range(12)}


def _brand_file(path: Path, counts: dict[str, int], start: int) -> str:
    """Each brand's n pairs, customer tweets numbered from ``start`` (distinct across files)."""
    rows = ["tweet_id,author_id,inbound,created_at,text,response_tweet_id,in_response_to_tweet_id"]
    for brand, n in counts.items():
        for i in range(n):
            asked = start + 2 * len(rows)
            rows.append(f"{asked},c{asked},True,,@{brand} help {brand} {asked},{asked + 1},")
            rows.append(f"{asked + 1},{brand},False,,@c{asked} sorry {i},,{asked}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_a_given_test_file_keeps_the_train_files_brands(tmp_path, caplog):
    """The test file's own top brands would score the model on brands it never trained on."""
    train = _brand_file(tmp_path / "train.csv", {"BrandA": 20, "BrandB": 15, "BrandC": 2}, 1000)
    test = _brand_file(tmp_path / "test.csv", {"BrandC": 10, "BrandD": 8, "BrandA": 3}, 90000)
    with caplog.at_level(logging.INFO, logger="ccexp.data"):
        splits = build_splits(_twcs(train_path=train, test_path=test, top_brands=2), BIG, MIX)
    brand = lambda ex: ex["messages"][1]["content"].split(" for ")[1].split(" on ")[0]  # noqa: E731
    assert {brand(ex) for ex in splits["train"]} == {"BrandA", "BrandB"}
    assert [brand(ex) for ex in splits["test"]] == ["BrandA"] * 3
    assert f"{test}: kept the train file's brands (BrandA 3, BrandB 0): 3 of 21 pairs" in caplog.messages
    other = _brand_file(tmp_path / "other.csv", {"BrandD": 4}, 90000)
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=train, test_path=other, top_brands=2), BIG, MIX)
    assert str(err.value) == (f"{other}: none of its 4 brand replies are from the train file's brands (BrandA, BrandB); "
                              "expected replies of the brands the model trains on")


def test_a_repeated_tweet_id(tmp_path, caplog):
    """Pairs are joined by tweet_id: an id on two different tweets would answer one customer's
    tweet with a reply to another, so it stops naming both lines; a row exported twice as it
    was is counted and read once."""
    path = _brand_file(tmp_path / "t.csv", {"BrandA": 20}, 1000)
    rows = Path(path).read_text().splitlines()
    Path(path).write_text("\n".join(rows + rows[1:3] + [rows[4]]) + "\n")  # a customer tweet and a reply again
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(_twcs(train_path=path), BIG, MIX)
    assert sum(map(len, splits.values())) == 20
    assert f"{path}: skipped 3 of 43 rows (3 repeating an earlier row)" in caplog.messages
    other = rows[3].replace("help BrandA", "another customer's problem")
    Path(path).write_text("\n".join(rows + [other]) + "\n")
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=path), BIG, MIX)
    tweet = rows[3].split(",")[0]
    assert str(err.value) == f"{path}:42: tweet_id {tweet} already on line 4 with other values; expected one row per tweet"
    Path(path).write_text("\n".join(rows + [rows[4].replace("sorry", "thanks")]) + "\n")  # a brand reply
    with pytest.raises(ConfigError, match=r":42: tweet_id \d+ already on line 5 with other values"):
        build_splits(_twcs(train_path=path), BIG, MIX)


def test_a_json_array_is_not_sent_to_data_jsonl(tmp_path):
    """data=jsonl refuses arrays too: the error says what would read, not another refusal."""
    path = tmp_path / "tweets.json"
    path.write_text('[{"tweet_id": 1, "text": "hi"}]\n')
    with pytest.raises(ConfigError) as err:
        build_splits(_twcs(train_path=str(path)), BIG, MIX)
    assert str(err.value) == (f"{path}: one JSON array, not CSV (no header row with 'tweet_id'); expected CSV, or JSON "
                              "Lines (an object per line) for data=jsonl / data=chatml")
