"""ChatML JSONL and the MLX layout: round trips, data=chatml splits, bad files in one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, EvalConfig, TaskMixConfig
from ccexp.data import build_splits
from ccexp.data.formats import read_chatml, write_chatml, write_mlx_layout
from ccexp.metrics import summarize
from ccexp.scoring import score

FIXTURE = str(Path(__file__).parent / "fixtures" / "chatml_train.jsonl")
MIX = TaskMixConfig(weights={"issue": 1})
BIG = DataSizeConfig(train=1000, val=1000, test=1000)


def _chatml(**kw) -> DataConfig:
    return DataConfig(name="chatml", train_path=FIXTURE, **kw)


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def _write(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


GOOD = json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "hello"))})


def _good(i: int) -> str:
    """A valid line that asks its own question (rows asking the same thing are held out together)."""
    return GOOD.replace("hi", f"hi {i}")


def test_round_trip_keeps_extra_keys(tmp_path):
    examples = build_splits(DataConfig(seed=3), DataSizeConfig(train=5, val=1, test=1), MIX)["train"]
    path = write_chatml(examples, tmp_path / "x.jsonl")
    rows = read_chatml(path)
    assert [{k: v for k, v in r.items() if k != "line"} for r in rows] == examples
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]


def test_mlx_layout_has_only_messages(tmp_path):
    splits = build_splits(DataConfig(seed=3), DataSizeConfig(train=4, val=2, test=3), MIX)
    files = write_mlx_layout(splits, tmp_path / "mlx")
    assert sorted(p.name for p in (tmp_path / "mlx").iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    assert files["val"].name == "valid.jsonl"
    lines = files["test"].read_text().splitlines()
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == [{"messages": ex["messages"]} for ex in splits["test"]]


def test_chatml_splits_80_10_10_and_chat_task():
    splits = build_splits(_chatml(), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "val": 2, "test": 2}
    ids = [ex["id"] for split in splits.values() for ex in split]
    assert sorted(ids) == sorted(f"chatml_train.jsonl:{i}" for i in range(1, 21))
    ex = splits["train"][0]
    assert ex["task"] == "chat" and ex["reference"] == {"reply": ex["messages"][-1]["content"]}
    assert build_splits(_chatml(), BIG, MIX) == splits
    assert build_splits(_chatml(seed=9), BIG, MIX) != splits


def test_data_size_caps_and_says_when_short(caplog):
    with caplog.at_level(logging.INFO, logger="ccexp.data"):
        splits = build_splits(_chatml(), DataSizeConfig(name="mine", train=5, val=12, test=1), MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 5, "val": 2, "test": 1}
    assert [r.getMessage() for r in caplog.records] == [  # a capped split too, never mistaken for the whole file
        f"{FIXTURE}: the train split uses 5 of its 16 examples (data_size=mine; data_size.train=16 uses all)",
        f"{FIXTURE}: the val split has 2 examples, fewer than data_size.val=12; using all 2",
        f"{FIXTURE}: the test split uses 1 of its 2 examples (data_size=mine; data_size.test=2 uses all)"]
    full = build_splits(_chatml(), BIG, MIX)
    assert {ex["id"] for ex in splits["train"]} < {ex["id"] for ex in full["train"]}


def test_given_val_and_test_files_are_used_whole(tmp_path):
    val = _write(tmp_path / "val.jsonl", GOOD, GOOD.replace("hello", "hey"))
    test = _write(tmp_path / "test.jsonl", _good(1), _good(2))
    splits = build_splits(_chatml(val_path=val, test_path=test), BIG, MIX)
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "val": 2, "test": 2}
    assert splits["val"][0]["id"] in ("val.jsonl:1", "val.jsonl:2")


def test_a_test_file_that_is_the_val_file_is_refused(tmp_path, caplog):
    """Validation picks the best step: on the test rows, the test score would choose itself."""
    val = _write(tmp_path / "val.jsonl", _good(1), _good(2))
    with pytest.raises(ConfigError) as err:
        build_splits(_chatml(val_path=val, test_path=val), BIG, MIX)
    assert str(err.value) == (f"{val}: all 2 test rows are also in the val split ({val}); expected held-out rows "
                              "(the same file twice?)")
    test = _write(tmp_path / "test.jsonl", _good(2), _good(3), _good(4))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        assert len(build_splits(_chatml(val_path=val, test_path=test), BIG, MIX)["test"]) == 3
    assert f"{test}: 1 of 3 test rows are also in the val split ({val}): the best step is chosen on them" in caplog.text


def test_repeated_conversations_are_held_out_together(tmp_path):
    """A chat export with each conversation written several times: the copies stay in one split,
    whatever their ids, so no test row is one the model trained on."""
    lines = [json.dumps({"messages": _msgs(("user", f"q{c}"), ("assistant", f"a{c}.{copy}")), "conversation_id": f"{c}/{copy}"})
             for c in range(30) for copy in range(3)]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "t.jsonl", *lines)), BIG, MIX)
    asked = {s: {ex["messages"][0]["content"] for ex in rows} for s, rows in splits.items()}
    assert not asked["train"] & asked["val"] and not asked["train"] & asked["test"] and not asked["val"] & asked["test"]
    assert all(len(rows) % 3 == 0 for rows in splits.values())


def test_conversations_that_open_alike_are_not_joined(tmp_path, caplog):
    """Every conversation's first row asks "Hi": joining conversations through a shared prompt
    made them one group, which could not be held out. A repeated conversation under another
    id is said in a warning instead."""
    def conversation(c, cid):
        turns = [("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", f"my issue {c}"),
                 ("assistant", f"fix {c}"), ("user", f"thanks {c}"), ("assistant", "bye")]
        return [json.dumps({"messages": _msgs(*turns[: 2 * k]), "conversation_id": cid}) for k in (1, 2, 3)]

    lines = [line for c in range(50) for line in conversation(c, f"c{c}")]
    path = _write(tmp_path / "conv.jsonl", *lines, *conversation(7, "again7"))  # conversation 7, exported twice
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX)
    assert {s: len(v) for s, v in splits.items()} == {"train": 123, "val": 15, "test": 15}
    overlap = [m for m in caplog.messages if "held out of it ask what a train row asks" in m]
    assert len(overlap) == 2  # "Hi" is asked in train, val and test alike
    assert overlap[0].startswith(f"{path}: 5 of 15 val rows held out of it ask what a train row asks")


def test_a_conversation_id_of_0_is_an_id(tmp_path):
    """Conversations numbered from 0: conversation 0's rows stay together like the others'."""
    lines = [json.dumps({"messages": _msgs(("user", f"q{c}.{t}"), ("assistant", "a")), "conversation_id": c, "id": c * 10 + t})
             for c in range(10) for t in range(3)]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "t.jsonl", *lines)), BIG, MIX)
    [home] = [s for s, rows in splits.items() if any(ex["conversation_id"] == "0" for ex in rows)]
    assert sum(ex["conversation_id"] == "0" for ex in splits[home]) == 3
    assert sorted(ex["id"] for rows in splits.values() for ex in rows if ex["conversation_id"] == "0") == ["0", "1", "2"]


def test_chat_answers_are_scored_as_text():
    ex = {"task": "chat", "reference": {"reply": "Dial 121."}}
    assert score(ex, "  Dial\n121. ", EvalConfig())["correct"] == {"reply": True}
    assert score(ex, "Dial 112.", EvalConfig())["correct"] == {"reply": False}
    records = [{"task": "chat", "reference": ex["reference"], **score(ex, "Dial 121.", EvalConfig())}]
    m = summarize(records, "test/", EvalConfig())
    assert (m["test/reply/acc"], m["test/reply/exact_match"], m["test/task/chat/acc"], m["test/acc"]) == (1, 1, 1, 1)


def test_empty_messages_are_skipped_and_reported(tmp_path, caplog):
    empty = json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "  "))})
    path = _write(tmp_path / "t.jsonl", *map(_good, range(10)), empty, "")
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX)
    assert sum(map(len, splits.values())) == 10
    assert f"{path}: skipped 1 of 11 rows (1 with an empty message)" in [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("line,message", [
    ('{"messages": [', ":2: invalid JSON (Expecting value at column 15)"),
    ('{"text": "hi"}', ":2: no 'messages' list"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]}',
     ":2: message 2 has no 'role' (expected system, user or assistant)"),
    (json.dumps({"messages": _msgs(("bot", "hi"), ("assistant", "x"))}),
     ":2: unknown role 'bot' (expected system, user or assistant)"),
    (json.dumps({"messages": _msgs(("assistant", "hi"), ("user", "x"))}),
     ":2: last message is from 'user', expected 'assistant'"),
    ('[1, 2]', ":2: expected a JSON object, got list"),
    # An escaped half of a UTF-16 pair reads, and then no UTF-8 writer (export, the tokenizer) takes it.
    ('{"messages": [{"role": "user", "content": "bad \\ud800"}, {"role": "assistant", "content": "x"}]}',
     ":2: a lone UTF-16 surrogate ('\\ud800'), expected valid Unicode (an escape \\ud800-\\udfff without its pair)"),
    ("null", ":2: expected a JSON object, got null"),
    (json.dumps({"messages": _msgs(("system", "be brief"), ("assistant", "hello"))}),
     ":2: no user message before the last (assistant) one: nothing for it to answer"),
    ('{"n": ' + "9" * 5000 + "}", ":2: invalid JSON (ValueError: Exceeds the limit (4300 digits) for integer string "
                                  "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the "
                                  "limit)"),
    ("[" * 100_000 + "]" * 100_000, ":2: invalid JSON (RecursionError: maximum recursion depth exceeded while decoding "
                                    "a JSON array from a unicode string)"),
    # A line naming one of ccexp's tasks is scored on its reference's fields, so they are checked.
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", '{"csat": 4}')), "task": "csat",
                 "reference": {"csat": "4/5"}}), ":2: reference 'csat': expected a number, got \"4/5\""),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", '{"csat": 4}')), "task": "csat",
                 "reference": {"csat": None}}), ":2: reference 'csat': expected a number, got null"),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", "{}")), "task": "quality",
                 "reference": {"quality_score": 80}}),
     ":2: task 'quality' needs a 'reference' object with 'quality_score', 'effectiveness'"),
    (json.dumps({"messages": _msgs(("user", "coach"), ("assistant", "{}")), "task": "coaching",
                 "reference": {"coaching": "empathy"}}),
     ":2: reference 'coaching': expected a list of themes (non-blank text or numbers), got \"empathy\""),
    # A blank label or theme says nothing: no class of its own.
    (json.dumps({"messages": _msgs(("user", "coach"), ("assistant", "{}")), "task": "coaching",
                 "reference": {"coaching": ["empathy", ""]}}),
     ":2: reference 'coaching': expected a list of themes (non-blank text or numbers), got [\"empathy\", \"\"]"),
    (json.dumps({"messages": _msgs(("user", "classify"), ("assistant", "{}")), "task": "classify",
                 "reference": {"label": " "}}), ":2: reference 'label': expected a label (non-blank text or a number), got \" \""),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", "{}")), "task": ["csat"]}),
     ":2: 'task': expected a task name (text), got [\"csat\"]"),
    # Number fields have the scale the accuracy bands assume; labels are the user's own taxonomy.
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", "{}")), "task": "csat",
                 "reference": {"csat": 9}}), ":2: reference 'csat': expected a number from 1 to 5, got 9"),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", "{}")), "task": "quality",
                 "reference": {"quality_score": 150, "effectiveness": "good"}}),
     ":2: reference 'quality_score': expected a number from 0 to 100, got 150"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "hello")), "id": "1"}),
     ":2: id '1' is already the id of line 1; expected one id per row (conversation_id groups rows)"),
    # Python's reader keeps the last of two values, silently: the line would train on the second.
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], '
     '"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}',
     ":2: key 'messages' given twice"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "role": "assistant", "content": "b"}]}',
     ":2: key 'role' given twice"),
    # The reference is what the model is scored on, the assistant turn what it learns: they must agree.
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", '{"csat": 2}')), "task": "csat",
                 "reference": {"csat": 4}}), ":2: reference 'csat' is 4 but the assistant turn says 2"),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", "The customer was happy: 4 of 5.")),
                 "task": "csat", "reference": {"csat": 4}}),
     ":2: task 'csat' is scored on one JSON object in the answer, but the assistant turn holds none "
     "(\"The customer was happy: 4 of 5.\"); expected an object with 'csat'"),
    (json.dumps({"messages": _msgs(("user", "rate"), ("assistant", '{"quality_score": 80}')), "task": "quality",
                 "reference": {"quality_score": 80, "effectiveness": "good"}}),
     ":2: reference 'effectiveness' is \"good\" but the assistant turn has no 'effectiveness'"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "hello there")), "task": "reply",
                 "reference": {"reply": "goodbye"}}),
     ":2: reference 'reply' is \"goodbye\" but the assistant turn says \"hello there\""),
])
def test_bad_lines_fail_in_one_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", json.dumps({**json.loads(GOOD), "id": "1"}), line)
    with pytest.raises(ConfigError) as err:
        build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX)
    assert str(err.value) == path + message


def test_not_utf8_missing_file_and_empty_split(tmp_path):
    latin = tmp_path / "latin.jsonl"
    # Latin-1 e-acute at offset 47, on line 2
    latin.write_bytes(b'\n{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(ConfigError, match=r"^" + str(latin) + r":2: not UTF-8 text \(byte 47; re-save the file as "
                                          r"UTF-8\)$"):
        read_chatml(latin)
    with pytest.raises(ConfigError, match=r"^" + str(tmp_path) + r": a directory, expected a file \(data\.train_path"):
        build_splits(DataConfig(name="chatml", train_path=str(tmp_path)), BIG, MIX)
    with pytest.raises(ConfigError, match=r"^nope\.jsonl: no such file \(data\.train_path; relative paths"):
        build_splits(DataConfig(name="chatml", train_path="nope.jsonl"), BIG, MIX)
    four = _write(tmp_path / "four.jsonl", *map(_good, range(4)))  # 10% rounds to 0: one row each
    assert {k: len(v) for k, v in build_splits(DataConfig(name="chatml", train_path=four), BIG, MIX).items()} == \
        {"train": 2, "val": 1, "test": 1}
    few = _write(tmp_path / "few.jsonl", GOOD, GOOD)
    with pytest.raises(ConfigError) as err:
        build_splits(DataConfig(name="chatml", train_path=few), BIG, MIX)
    assert str(err.value) == f"{few}: 2 usable rows are too few to hold out val and test rows; give data.val_path / data.test_path"
    empty = _write(tmp_path / "empty.jsonl", "")
    with pytest.raises(ConfigError, match=r"empty\.jsonl: no usable rows for the train split$"):
        build_splits(DataConfig(name="chatml", train_path=empty), BIG, MIX)
    with pytest.raises(ConfigError, match=r"empty\.jsonl: no usable rows for the test split$"):
        build_splits(DataConfig(name="chatml", train_path=FIXTURE, val_path=four, test_path=empty), BIG, MIX)


def test_config_requires_a_train_path():
    with pytest.raises(ConfigError, match=r"^data\.train_path: expected a file path for data\.name=chatml"):
        DataConfig(name="chatml")
    with pytest.raises(ConfigError, match=r"^data\.name: expected one of"):
        DataConfig(name="parquet")


def test_lines_with_unicode_line_separators_read_back(tmp_path):
    """U+2028, U+2029 and U+0085 inside a string are valid JSON and are written unescaped: a
    line break is only \\n."""
    text = "My card\u2028never arrived\u2029\x85twice"
    path = write_chatml([{"id": "a", "messages": _msgs(("user", text), ("assistant", "Sorry"))}], tmp_path / "t.jsonl")
    assert "\u2028" in path.read_text(encoding="utf-8")
    [row] = read_chatml(path)
    assert row["messages"][0]["content"] == text and row["line"] == 1


def test_a_conversation_is_never_in_two_splits(tmp_path):
    """Rows of one conversation (several turns learned, one per row) are held out together."""
    lines = [json.dumps({"messages": _msgs(("user", f"q{c}.{t}"), ("assistant", f"a{c}.{t}")),
                         "conversation_id": f"conv{c}"}) for c in range(10) for t in range(3)]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "t.jsonl", *lines)), BIG, MIX)
    convs = {s: {ex["conversation_id"] for ex in rows} for s, rows in splits.items()}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 24, "val": 3, "test": 3}
    assert not convs["train"] & convs["val"] and not convs["train"] & convs["test"] and not convs["val"] & convs["test"]


def test_text_tasks_without_a_reference_learn_the_last_turn(tmp_path):
    rows = [{"messages": _msgs(("user", f"hi {i}"), ("assistant", f"hello {i}")), "task": task}
            for i, task in enumerate(["reply", "chat", "billing"] * 4)]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "t.jsonl", *map(json.dumps, rows))),
                          BIG, MIX)
    examples = [ex for s in splits.values() for ex in s]
    assert {ex["task"] for ex in examples} == {"reply", "chat"}  # "billing" is no ccexp task: chat
    assert all(ex["reference"] == {"reply": ex["messages"][-1]["content"]} for ex in examples)


def test_long_conversations_do_not_empty_or_swell_a_split(tmp_path, caplog):
    """Held-out splits take whole conversations that fit in their 10%: one 50-row conversation
    stays in train (it would be half the file as a test split); two conversations cannot fill
    three splits, which says so."""
    def rows(sizes):
        return [json.dumps({"messages": _msgs(("user", f"q{c}.{t}"), ("assistant", "a")), "conversation_id": f"c{c}"})
                for c, n in enumerate(sizes) for t in range(n)]

    for seed in range(5):
        data = DataConfig(name="chatml", train_path=_write(tmp_path / "t.jsonl", *rows([1] * 50 + [50])), seed=seed)
        assert {s: len(v) for s, v in build_splits(data, BIG, MIX).items()} == {"train": 80, "val": 10, "test": 10}
    # No conversation fits in 10%: the shortest is held out, and its share is said.
    path = _write(tmp_path / "four.jsonl", *rows([5, 5, 5, 6]))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        assert {s: len(v) for s, v in build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX).items()} \
            == {"train": 11, "val": 5, "test": 5}
    assert [m for m in caplog.messages if "no conversation fits" in m] == [
        f"{path}: no conversation fits in a 2-row val holdout (10% of 21 rows); holding out the shortest, 5 rows "
        "(24%); give data.val_path to choose",
        f"{path}: no conversation fits in a 2-row test holdout (10% of 21 rows); holding out the shortest, 5 rows "
        "(24%); give data.test_path to choose"]
    path = _write(tmp_path / "two.jsonl", *rows([5, 5]))
    with pytest.raises(ConfigError) as err:
        build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX)
    assert str(err.value) == (f"{path}: 2 conversations are too few to hold out val and test conversations whole; "
                              "give data.val_path / data.test_path")


def test_val_and_test_files_are_checked_against_train(tmp_path, caplog):
    """Scores on rows the model trained on measure memory: the training file given again as a
    split is refused, a few shared rows are counted in a warning naming the file."""
    rows = [json.dumps({"messages": _msgs(("user", f"q{i}"), ("assistant", f"a{i}"))}) for i in range(10)]
    train = _write(tmp_path / "train.jsonl", *rows)
    with pytest.raises(ConfigError) as err:
        build_splits(DataConfig(name="chatml", train_path=train, val_path=train, test_path=train), BIG, MIX)
    assert str(err.value) == (f"{train}: all 10 val rows are also in the train split ({train}); expected held-out "
                              "rows (the same file twice?)")
    test = _write(tmp_path / "test.jsonl", rows[0], *(json.dumps({"messages": _msgs(("user", f"new{i}"), ("assistant", "x"))})
                                                     for i in range(3)))
    val = _write(tmp_path / "val.jsonl", json.dumps({"messages": _msgs(("user", "other"), ("assistant", "y"))}))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        splits = build_splits(DataConfig(name="chatml", train_path=train, val_path=val, test_path=test), BIG, MIX)
    assert len(splits["test"]) == 4
    assert f"{test}: 1 of 4 test rows are also in the train split ({train}): their scores measure memory" in caplog.text
    assert "val rows are also" not in caplog.text


def test_a_json_array_file_is_named_as_such(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([json.loads(GOOD)] * 3, indent=4))
    with pytest.raises(ConfigError) as err:
        build_splits(DataConfig(name="chatml", train_path=str(path)), BIG, MIX)
    assert str(err.value) == (f"{path}:1: invalid JSON (Expecting value at column 2); the file looks like one JSON "
                              "array, expected JSON Lines (an object per line)")


def _per_turn(call: int, opener: bool = False) -> list[str]:
    """A call written the usual SFT way: one line per assistant turn, each line the one before
    plus a turn, and no conversation_id. ``opener``: every call opens with the same exchange."""
    turns = [("user", "Hi"), ("assistant", "Hello, how can I help?")] if opener else []
    for t in range(4):
        turns += [("user", f"call {call} customer turn {t}"), ("assistant", f"call {call} agent turn {t}")]
    return [json.dumps({"messages": _msgs(("system", "You are an agent."), *turns[: 2 * k])})
            for k in range(1, len(turns) // 2 + 1)]


def _answers_in_train_prompts(splits) -> int:
    prompts = [json.dumps(ex["messages"][:-1]) for ex in splits["train"]]
    return sum(any(json.dumps(ex["messages"])[:-1] in p for p in prompts) for s in ("val", "test") for ex in splits[s])


def test_the_lines_of_one_call_are_one_conversation(tmp_path):
    """Rows whose messages start another row's messages are one conversation, held out whole: a
    test answer never appears inside a training prompt. A common opening exchange ("Hi"), its
    own line in every call, joins nothing."""
    for opener in (False, True):
        path = _write(tmp_path / "calls.jsonl", *(line for c in range(25) for line in _per_turn(c, opener)))
        splits = build_splits(DataConfig(name="chatml", train_path=path), BIG, MIX)
        assert _answers_in_train_prompts(splits) == 0
        calls = {s: {ex["messages"][1 + 2 * opener]["content"].split()[1] for ex in rows if len(ex["messages"]) > 3}
                 for s, rows in splits.items()}
        assert not calls["train"] & calls["test"] and not calls["train"] & calls["val"] and calls["test"]
    # An explicit conversation_id still names the conversation.
    lines = [json.dumps({**json.loads(line), "conversation_id": f"c{c}"}) for c in range(25) for line in _per_turn(c)]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "ids.jsonl", *lines)), BIG, MIX)
    assert {ex["conversation_id"] for ex in splits["test"]} <= {f"c{c}" for c in range(25)}


def test_a_row_without_an_id_takes_its_nearest_ancestors(tmp_path):
    """R1 id "A", R2 id "B" extends R1, R3 without one extends R2: R3 took the first given id of
    its group, "A", and could be held out apart from R2, whose answer is in its prompt. It takes
    the id of the nearest row it extends that has one; a row extending none takes its group's."""
    from ccexp.data.chatml import load_chat

    call = [json.loads(line)["messages"] for line in _per_turn(7)]
    path = _write(tmp_path / "calls.jsonl", json.dumps({"messages": call[0], "conversation_id": "A"}),
                  json.dumps({"messages": call[1], "conversation_id": "B"}), json.dumps({"messages": call[2]}),
                  json.dumps({"messages": call[3]}))
    assert [ex["conversation_id"] for ex in load_chat(path, "train_path")] == ["A", "B", "B", "B"]
    path = _write(tmp_path / "first.jsonl", json.dumps({"messages": call[0]}),
                  json.dumps({"messages": call[1], "conversation_id": "B"}), json.dumps({"messages": call[2]}))
    assert [ex["conversation_id"] for ex in load_chat(path, "train_path")] == ["B", "B", "B"]


def test_a_given_test_file_with_earlier_turns_of_train_rows_is_counted(tmp_path, caplog):
    """A test row whose whole conversation starts a train row: its answer is in a training prompt."""
    train = _write(tmp_path / "train.jsonl", *(_per_turn(c)[-1] for c in range(10)))  # whole calls only
    test = _write(tmp_path / "test.jsonl", _per_turn(3)[1], *_per_turn(40))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        build_splits(DataConfig(name="chatml", train_path=train, test_path=test), BIG, MIX)
    assert f"{test}: 1 of 5 test rows are earlier turns of a train row ({train}): their answers are in its prompt" \
        in caplog.text


def test_references_that_agree_with_the_assistant_turn_as_scoring_reads_it(tmp_path):
    """Agreement is scoring's: numbers as numbers, our labels case- and spacing-insensitively,
    "none" for no second issue, a reply whitespace aside."""
    lines = [json.dumps({"messages": _msgs(("user", f"rate {i}"), ("assistant", turn)), "task": task, "reference": ref})
             for i, (task, turn, ref) in enumerate(10 * [
                 ("csat", 'Here: {"csat": "4.0"}', {"csat": 4}),
                 ("issue", '{"issue_category": "Billing Dispute", "secondary_category": "none"}',
                  {"issue_category": "billing_dispute", "secondary_category": None}),
                 ("reply", "hello  there", {"reply": "hello there"})])]
    splits = build_splits(DataConfig(name="chatml", train_path=_write(tmp_path / "ok.jsonl", *lines)), BIG, MIX)
    assert sum(len(rows) for rows in splits.values()) == 30


def test_a_split_of_one_example_is_said_in_the_singular(caplog):
    from ccexp.data.splitting import take

    rows = {"train": [{"id": "a"}], "val": [{"id": "b"}], "test": [{"id": "c"}, {"id": "d"}]}
    with caplog.at_level(logging.INFO, logger="ccexp.data"):
        take(rows, DataSizeConfig(name="mine", train=5, val=1, test=1), _chatml())
    assert [r.getMessage() for r in caplog.records] == [
        f"{FIXTURE}: the train split has 1 example, fewer than data_size.train=5; using it",
        f"{FIXTURE}: the test split uses 1 of its 2 examples (data_size=mine; data_size.test=2 uses all)"]
