"""data=csv / data=jsonl: column mapping, label prompt, holdout, bad tables in one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import compose_cfg

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, EvalConfig, TaskMixConfig, validate
from ccexp.data import build_splits
from ccexp.scoring import score

FIXTURES = Path(__file__).parent / "fixtures"
MIX = TaskMixConfig(weights={"issue": 1})
BIG = DataSizeConfig(train=1000, val=1000, test=1000)
BANKING = ["Refund_not_showing_up", "card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked",
           "top_up_failed"]


def _banking(**kw) -> DataConfig:
    paths = {"train_path": str(FIXTURES / "banking77_train.csv"), "test_path": str(FIXTURES / "banking77_test.csv")}
    return DataConfig(name="csv", **{**paths, **kw})


def _error(data: DataConfig) -> str:
    """The one-line error building these splits fails with."""
    with pytest.raises(ConfigError) as err:
        build_splits(data, BIG, MIX)
    return str(err.value)


def _dstc(**kw) -> DataConfig:
    fields = {"train_path": str(FIXTURES / "dstc11_insurance.jsonl"), "text_column": "utterance",
              "label_column": "intent"}
    return DataConfig(name="jsonl", **{**fields, **kw})


def test_banking77_csv_examples():
    splits = build_splits(_banking(), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 49, "val": 6, "test": 30}
    ex = next(e for e in splits["test"] if e["id"] == "intent/banking77_test.csv:1")
    assert ex["task"] == "classify" and ex["reference"] == {"label": "card_arrival"}
    assert ex["messages"][2]["content"] == '{"label": "card_arrival"}'
    allowed = ", ".join(f'"{label}"' for label in BANKING)
    assert ex["messages"][1]["content"] == (
        "Classify the customer's message. Answer with one JSON object {\"label\": <the intent>}, "
        f"the intent being one of {allowed}.\n\nCustomer: How do I locate my card?")
    # the quoted multi-line row is one example, its text stripped
    texts = [e["messages"][1]["content"].split("Customer: ")[1] for s in splits.values() for e in s]
    assert "I put the wrong pin too many times and now it is blocked. Can you help me unblock it?" in texts


def test_dstc11_jsonl_one_file_is_split_80_10_10():
    splits = build_splits(_dstc(), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 48, "val": 6, "test": 6}
    ids = [ex["id"] for s in splits.values() for ex in s]
    assert len(set(ids)) == 60
    labels = {ex["reference"]["label"] for ex in splits["train"]}
    assert labels == {"CancelPlan", "ChangeAddress", "FileClaim", "FindAgent", "PayBill", "ResetPassword"}


def test_yaml_defaults_build_from_the_repo_root(monkeypatch):
    monkeypatch.chdir(FIXTURES.parent.parent)  # relative paths are resolved against the current directory
    for name, sizes in (("csv", {"train": 5, "val": 5, "test": 5}), ("jsonl", {"train": 5, "val": 5, "test": 5})):
        rc = validate(compose_cfg(f"data={name}", "data_size.train=5", "data_size.val=5", "data_size.test=5"))
        assert rc.data.instruction == "Classify the customer's message by its intent."
        splits = build_splits(rc.data, rc.data_size, rc.task_mix)
        assert {k: len(v) for k, v in splits.items()} == sizes


def test_validation_reads_no_file():
    rc = validate(compose_cfg("data=csv", "data.train_path=/nowhere/train.csv", "data.task_name=topic"))
    assert rc.data.instruction == "Classify the customer's message by its topic."
    with pytest.raises(ConfigError, match=r"^/nowhere/train\.csv: no such file \(data\.train_path; "):
        build_splits(rc.data, rc.data_size, rc.task_mix)


def test_label_is_exact_match():
    ex = {"task": "classify", "reference": {"label": "Refund_not_showing_up"}}
    assert score(ex, '{"label": "Refund_not_showing_up"}', EvalConfig())["correct"] == {"label": True}
    assert score(ex, '{"label": "refund_not_showing_up"}', EvalConfig())["correct"] == {"label": False}
    assert score(ex, "Refund_not_showing_up", EvalConfig())["json_valid"] is False


def test_missing_column_names_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a\n")
    assert _error(DataConfig(name="csv", train_path=str(path))) == f"{path}: no column 'category' (columns: text, label)"
    jl = tmp_path / "t.jsonl"
    jl.write_text(json.dumps({"utterance": "hi", "intent": "A"}) + "\n" + json.dumps({"utterance": "yo"}) + "\n")
    with pytest.raises(ConfigError) as err:
        build_splits(_dstc(train_path=str(jl)), BIG, MIX)
    assert str(err.value) == f"{jl}:2: no column 'intent' (columns: utterance)"


def test_empty_rows_are_counted_and_reported(tmp_path, caplog):
    path = tmp_path / "t.csv"
    rows = [f"message {i},{'ab'[i % 2]}" for i in range(20)] + ["  ,a", "no label,", ","]
    path.write_text("text,category\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(DataConfig(name="csv", train_path=str(path)), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "val": 2, "test": 2}
    assert f"{path}: skipped 3 of 23 rows (2 with empty text, 1 with no label)" in [
        r.getMessage() for r in caplog.records]


def test_unseen_test_labels_are_reported(tmp_path, caplog):
    test = tmp_path / "test.csv"
    test.write_text("text,category\nwhere is my card,card_arrival\nhello,greeting\n")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(_banking(test_path=str(test)), BIG, MIX)
    assert len(splits["test"]) == 2
    assert f"{test}: 1 test examples have a label the train split lacks (they cannot be answered)" in [
        r.getMessage() for r in caplog.records]


def test_the_same_text_is_never_in_two_splits(tmp_path, caplog):
    """Real support data repeats short texts ("reset my password?"); equal but for case and
    spacing, they are one conversation, held out together; a test file that repeats training
    texts is counted."""
    path = tmp_path / "t.csv"
    rows = [f"{'  Message' if k % 2 else 'message'} {i}?,{'ab'[i % 2]}" for i in range(30) for k in range(3)]
    path.write_text("text,category\n" + "\n".join(rows) + "\n")
    splits = build_splits(DataConfig(name="csv", train_path=str(path)), BIG, MIX)
    texts = {s: {" ".join(ex["messages"][1]["content"].split("Customer: ")[1].casefold().split()) for ex in rows}
             for s, rows in splits.items()}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 72, "val": 9, "test": 9}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    test = tmp_path / "test.csv"
    test.write_text("text,category\nMESSAGE 3?,b\nsomething new,a\n")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        build_splits(DataConfig(name="csv", train_path=str(path), test_path=str(test)), BIG, MIX)
    assert f"{test}: 1 of 2 test rows are also in the train split ({path}): their scores measure memory" in [
        r.getMessage() for r in caplog.records]


def test_a_test_row_in_the_val_slice_is_counted_where_it_is(tmp_path, caplog):
    """A given test file against a training file whose val slice is held out: a test row whose
    text sits in that slice was counted as "in the train split" (where it is not) and never as
    in the val split, which picks the best step on it. It is counted where it is."""
    path = tmp_path / "t.csv"
    path.write_text("text,category\n" + "\n".join(f"message {i}?,{'ab'[i % 2]}" for i in range(40)) + "\n")
    test = tmp_path / "test.csv"
    test.write_text("text,category\nsomething new,a\n")
    data = DataConfig(name="csv", train_path=str(path), test_path=str(test))
    in_val = build_splits(data, BIG, MIX)["val"][0]["messages"][1]["content"].split("Customer: ")[1]
    test.write_text(f"text,category\n{in_val.upper()},a\nsomething new,a\n")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        build_splits(data, BIG, MIX)
    said = [r.getMessage() for r in caplog.records]
    assert f"{test}: 1 of 2 test rows are also in the val split (held out of {path}): the best step is chosen on them" in said
    assert not any("also in the train split" in m for m in said)


def test_config_checks():
    with pytest.raises(ConfigError, match=r"^data\.label_column: expected a column other than text_column"):
        DataConfig(name="csv", train_path="x.csv", label_column="text")
    with pytest.raises(ConfigError, match=r"^data\.text_column: expected a non-empty string"):
        DataConfig(name="jsonl", train_path="x.jsonl", text_column=" ")


BANKING_ROWS = [f"message {i},{'ab'[i % 2]}" for i in range(20)]


def test_csv_header_and_bom_errors_name_their_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('"text,category\nhello,a\n')
    assert _error(DataConfig(name="csv", train_path=str(path))) == f"{path}:1: a quoted field opened here is never closed"
    path.write_bytes(b"\xef\xbb\xbftext,category\n\xe9t\xe9,a\n")  # a BOM, then Latin-1 on line 2 at byte 17
    assert _error(DataConfig(name="csv", train_path=str(path))) == (
        f"{path}:2: not UTF-8 text (byte 17; re-save the file as UTF-8)")


@pytest.mark.parametrize("row,message", [
    # An unquoted comma would shift the label into the next column and make the text's tail a label.
    ("I topped up, but it failed,top_up_failed", ":22: 3 fields, the header has 2 (a comma in a value needs the "
                                                 "value quoted)"),
    ("just some text", ":22: 1 field, the header has 2 (a line cut short?)"),
    ("text,category", ":22: the header row again (two files joined together?)"),
    # Two Excel "CSV UTF-8" files joined: the second header starts with its BOM.
    ("\ufefftext,category", ":22: the header row again (two files joined together?)"),
    ('"never closed,a', ":22: a quoted field opened here is never closed"),
    # A NUL is no text: Python's csv reader takes it into the value.
    ("my card\0\0 was declined,declined_card_payment", ":22: a NUL byte in column 'text'; expected text (a "
                                                        "binary or damaged file?)"),
    # ... or closed by the next quote, lines later: the error names the line where the record began.
    ('"I lost my card,card_arrival\nwhere is it,card_arrival\n"quoted, fine",card_arrival',
     ":22: invalid CSV in the record that starts here (',' expected after '\"', on line 24; a quote opened on "
     "line 22?)"),
])
def test_rows_that_would_shift_or_invent_values_fail_naming_the_line(tmp_path, row, message):
    path = tmp_path / "t.csv"
    path.write_text("text,category\n" + "\n".join(BANKING_ROWS) + f"\n{row}\n" + "\n".join(BANKING_ROWS[:4]) + "\n")
    assert _error(DataConfig(name="csv", train_path=str(path))) == f"{path}{message}"


def test_duplicate_columns_long_fields_and_blank_columns(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("text,text,category\na,b,c\n")
    assert _error(DataConfig(name="csv", train_path=str(dup))) == f"{dup}:1: column 'text' appears twice in the header"
    # A 200,000-character transcript in one cell is valid CSV (the csv module's default limit is 131,072).
    long = tmp_path / "long.csv"
    long.write_text("text,category\n" + '"two\nlines",a\n' + "\n".join(BANKING_ROWS) + f"\n{'x' * 200_000},b\n")
    splits = build_splits(DataConfig(name="csv", train_path=str(long)), BIG, MIX)
    examples = {ex["id"]: ex for s in splits.values() for ex in s}
    assert len(examples) == 22
    assert examples["intent/long.csv:22"]["messages"][1]["content"].endswith("x" * 200_000)
    # A spreadsheet's blank columns, a column the run does not read named twice, lines of spaces
    # and DOS's Ctrl-Z end change no value: read as they always were.
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("id,text,category,,,id\n" + "\n".join(f"{i},{row},,,{i}" for i, row in enumerate(BANKING_ROWS))
                     + "\n   \n\x1a\n")
    assert sum(map(len, build_splits(DataConfig(name="csv", train_path=str(sheet)), BIG, MIX).values())) == 20


def test_jsonl_values_that_are_not_text_or_numbers_fail(tmp_path, caplog):
    good = [json.dumps({"utterance": f"claim {i}", "intent": ["FileClaim", 3][i % 2]}) for i in range(20)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(good + ['{"utterance": "nan label", "intent": NaN}']) + "\n")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(_dstc(train_path=str(path)), BIG, MIX)
    assert {ex["reference"]["label"] for s in splits.values() for ex in s} == {"FileClaim", "3"}
    path.write_text("\n".join(good[:10] + [json.dumps({"utterance": f"yes {i}", "intent": True}) for i in range(10)]))
    assert {ex["reference"]["label"] for s in build_splits(_dstc(train_path=str(path)), BIG, MIX).values()
            for ex in s} == {"FileClaim", "3", "true"}  # a binary label, spelled as in the file
    # NaN is pandas' missing value: counted with the empty labels, not taught as the label "nan".
    assert f"{path}: skipped 1 of 21 rows (1 with no label)" in [r.getMessage() for r in caplog.records]
    for value, shown in ((["FileClaim", "Other"], '["FileClaim", "Other"]'), ({"name": "x"}, '{"name": "x"}'),
                         (float("inf"), "Infinity"), (float("-inf"), "-Infinity")):
        path.write_text("\n".join(good + [json.dumps({"utterance": "odd", "intent": value})]) + "\n")
        assert _error(_dstc(train_path=str(path))) == f"{path}:21: 'intent': expected text, a number or true/false, got {shown}"


def test_one_label_written_two_ways_is_one_class(tmp_path):
    """JSON's 1 and 1.0, or true and "true", are the same answer: two classes would split its
    examples and list it twice in every prompt."""
    path = tmp_path / "t.jsonl"
    values = [1, 1.0, True, "true", "FileClaim"]
    path.write_text("\n".join(json.dumps({"utterance": f"claim {i}", "intent": values[i % 5]}) for i in range(40)))
    splits = build_splits(_dstc(train_path=str(path)), BIG, MIX)
    assert {ex["reference"]["label"] for s in splits.values() for ex in s} == {"1", "true", "FileClaim"}


def test_missing_value_labels_are_counted_not_learned(tmp_path, caplog):
    """An export that wrote pandas' NaN as text ("nan", "<NA>", "NULL") has rows without a label;
    "None" and "N/A" are labels (LUIS's "None" intent)."""
    sheet = tmp_path / "sheet.csv"
    markers = ["nan", "NaN", "NULL", "<NA>", "null"]
    sheet.write_text("text,category\n" + "\n".join(
        f"{row.split(',')[0]} {i},{markers[i % 5] if i % 4 == 0 else 'card_arrival' if i % 2 else 'pin_blocked'}"
        for i, row in enumerate(BANKING_ROWS * 2)))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(DataConfig(name="csv", train_path=str(sheet)), BIG, MIX)
    assert {ex["reference"]["label"] for s in splits.values() for ex in s} == {"card_arrival", "pin_blocked"}
    n = len(BANKING_ROWS * 2)
    skipped = len(range(0, n, 4))
    assert (f"{sheet}: skipped {skipped} of {n} rows ({skipped} with a missing-value label (NaN, <NA>, NULL))"
            in [r.getMessage() for r in caplog.records])
    sheet.write_text("text,category\n" + "\n".join(f"message {i},{['None', 'N/A', 'card_arrival'][i % 3]}"
                                                    for i in range(30)))
    labels = {ex["reference"]["label"] for s in build_splits(DataConfig(name="csv", train_path=str(sheet)), BIG,
                                                             MIX).values() for ex in s}
    assert labels == {"None", "N/A", "card_arrival"}


def test_an_empty_file_and_another_delimiter_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _error(DataConfig(name="csv", train_path=str(empty))) == (
        f"{empty}: an empty file, expected a header row (text, category) and rows")
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("text;category\nhello;a\n")
    assert _error(DataConfig(name="csv", train_path=str(semicolons))) == (
        f"{semicolons}: no column 'text' (columns: text;category); the header holds ';': save the file "
        "comma-separated")
    jsonl = tmp_path / "calls.jsonl"  # data=csv given a JSON Lines file
    jsonl.write_text('{"text": "hello", "category": "a"}\n')
    assert _error(DataConfig(name="csv", train_path=str(jsonl))) == (
        f"{jsonl}: JSON, not CSV (no header row with 'text'); expected data=jsonl (or data=chatml) for a JSON Lines file")


def test_one_label_for_every_row_is_refused(tmp_path):
    """Nothing to tell apart: most likely data.label_column names the wrong column."""
    path = tmp_path / "t.csv"
    path.write_text("text,category\n" + "\n".join(f"message {i},card_arrival" for i in range(20)) + "\n")
    assert _error(DataConfig(name="csv", train_path=str(path))) == (
        f"{path}: every train row has the 'category' 'card_arrival'; expected at least two labels "
        "(data.label_column=category)")


def test_a_key_given_twice_is_named(tmp_path):
    """Python's reader keeps the last of two values: the line would train as "fx", silently."""
    good = [json.dumps({"utterance": f"claim {i}", "intent": ["refund", "fx"][i % 2]}) for i in range(20)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(good + ['{"utterance": "card charged twice", "intent": "refund", "intent": "fx"}']))
    assert _error(_dstc(train_path=str(path))) == f"{path}:21: key 'intent' given twice"


def test_spreadsheet_and_json_layouts_are_named(tmp_path):
    """Files that look right to a person and wrong to a reader: each error says what it sees."""
    spaced = tmp_path / "spaced.csv"  # "text, category": the header's space is part of the name
    spaced.write_text("text, category\nhello, a\n")
    assert _error(DataConfig(name="csv", train_path=str(spaced))) == (
        f"{spaced}: no column 'category' (columns: 'text', ' category'); did you mean ' category'? (spaces and "
        "case in the header are part of a name)")
    sep = tmp_path / "sep.csv"  # Excel's delimiter line above the header
    sep.write_text("sep=,\ntext,category\nhello,a\n")
    assert _error(DataConfig(name="csv", train_path=str(sep))) == (
        f"{sep}:1: Excel's delimiter line 'sep=,', expected the header row (delete that line)")
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text("".join(json.dumps({"utterance": f"hi {i}", "intent": "A"}, indent=2) + "\n" for i in range(3)))
    assert _error(_dstc(train_path=str(pretty))) == (
        f"{pretty}:1: invalid JSON (Expecting property name enclosed in double quotes at column 2); the object "
        "goes on past the line's end: pretty-printed JSON? expected JSON Lines (an object per line)")
    array = tmp_path / "array.jsonl"  # one array on one line
    array.write_text(json.dumps([{"utterance": f"hi {i}", "intent": "A"} for i in range(3)]) + "\n")
    assert _error(_dstc(train_path=str(array))) == (
        f"{array}:1: expected a JSON object, got list; the file looks like one JSON array, expected JSON Lines "
        "(an object per line)")
    # A JSON array given as CSV: pointing at data=jsonl would send the user round in a circle.
    assert _error(DataConfig(name="csv", train_path=str(array))) == (
        f"{array}: one JSON array, not CSV (no header row with 'text'); expected CSV, or JSON Lines (an object "
        "per line) for data=jsonl / data=chatml")


def test_an_empty_csv_with_no_needed_column_reads_no_rows(tmp_path):
    """The sep= check read header[0]: an empty file with nothing needed was an IndexError traceback."""
    from ccexp.data.formats import read_csv

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert list(read_csv(empty)) == []
