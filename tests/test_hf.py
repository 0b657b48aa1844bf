"""data=hf and to_dataset_dict: a datasets DatasetDict in and out, with the same examples."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ccexp.config import ConfigError, DataConfig, DataSizeConfig, TaskMixConfig
from ccexp.data import build_splits, to_dataset_dict

FIXTURE = str(Path(__file__).parent / "fixtures" / "hf_chat")
ALL = DataSizeConfig(train=1000, val=1000, test=1000)
MIX = TaskMixConfig(weights={"quality": 1, "csat": 1, "issue": 1, "churn": 1, "journey": 1, "coaching": 1})
by_id = lambda examples: sorted(examples, key=lambda ex: ex["id"])  # noqa: E731 (take() reshuffles)


def _hf(path: str = FIXTURE, **kw) -> DataConfig:
    return DataConfig(name="hf", train_path=path, **kw)


def test_dataset_dict_round_trip_keeps_every_example(tmp_path):
    original = build_splits(DataConfig(seed=5), DataSizeConfig(train=12, val=3, test=4), MIX)
    dd = to_dataset_dict(original)
    assert list(dd) == ["train", "validation", "test"]
    assert dd["train"].column_names == ["id", "conversation_id", "task", "messages", "reference"]
    dd.save_to_disk(str(tmp_path / "dd"))
    again = build_splits(_hf(str(tmp_path / "dd")), ALL, MIX)
    # Per-task references survive as they were (not null-filled with the other tasks' fields).
    assert {s: by_id(v) for s, v in again.items()} == {s: by_id(v) for s, v in original.items()}


def test_the_committed_fixture_trains_as_it_is():
    splits = build_splits(_hf(), ALL, MIX)
    assert {s: len(v) for s, v in splits.items()} == {"train": 10, "val": 3, "test": 3}
    assert {ex["task"] for ex in splits["train"]} <= set(MIX.weights)


def test_a_plain_dataset_gets_held_out_splits_and_the_chat_task(tmp_path):
    from datasets import Dataset

    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
            for i in range(20)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "chats.parquet"))
    splits = build_splits(_hf(str(tmp_path / "chats.parquet")), ALL, MIX)
    assert {s: len(v) for s, v in splits.items()} == {"train": 16, "val": 2, "test": 2}
    example = splits["test"][0]
    assert example["task"] == "chat" and example["reference"] == {"reply": example["messages"][-1]["content"]}
    assert example["id"].startswith("chats.parquet:")


def _save(tmp_path, rows, name="bad"):
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


@pytest.mark.parametrize("rows,error", [
    ([{"text": "hi"}], "no 'messages' column (columns: text)"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}],
     "row 1: unknown role 'robot'"),
    ([{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}],
     "row 1: last message is from 'user', expected 'assistant'"),
    ([{"id": "x", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
      for i in range(2)], "row 2: id 'x' is already the id of row 1"),
    ([{"messages": [{"role": "user", "content": "rate"}, {"role": "assistant", "content": '{"csat": 4}'}],
       "task": "csat", "reference": '{"csat": 2, "csat": 4}'}], "row 1: 'reference': key 'csat' given twice"),
])
def test_bad_datasets_fail_in_one_line_naming_the_row(tmp_path, rows, error):
    path = _save(tmp_path, rows)
    with pytest.raises(ConfigError, match=None) as err:
        build_splits(_hf(path), ALL, MIX)
    assert error in str(err.value) and str(err.value).startswith(path) and "\n" not in str(err.value)


def test_datasets_that_load_from_disk_cannot_open(tmp_path):
    from datasets import Dataset, DatasetDict

    good = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 10
    empty = tmp_path / "empty_val"
    DatasetDict({"train": Dataset.from_list(good), "validation": Dataset.from_dict({"messages": []})}).save_to_disk(
        str(empty))
    with pytest.raises(ConfigError) as err:
        build_splits(_hf(str(empty)), ALL, MIX)
    assert str(err.value) == (f"{empty}: datasets' load_from_disk cannot open it (split validation has no rows; drop "
                              "it or give it rows; data.train_path)")
    corrupt = tmp_path / "corrupt"
    DatasetDict({"train": Dataset.from_list(good)}).save_to_disk(str(corrupt))
    (corrupt / "dataset_dict.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cannot open it \(JSONDecodeError: Expecting property name"):
        build_splits(_hf(str(corrupt)), ALL, MIX)


def test_not_a_dataset_directory_or_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").write_text("a\n1\n")
    for path, error in ((tmp_path / "empty", "not a directory written by datasets' save_to_disk"),
                        (tmp_path / "x.csv", "expected a save_to_disk directory or a .parquet file"),
                        (tmp_path / "nope", "no such file or directory")):
        with pytest.raises(ConfigError, match=error):
            build_splits(_hf(str(path)), ALL, MIX)


def test_a_broken_parquet_file_is_one_line(tmp_path, capfd, caplog):
    """datasets logs the file's error itself (twice) before raising it; only ccexp's line shows."""
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        build_splits(_hf(str(broken)), ALL, MIX)
    assert str(err.value).startswith(f"{broken}: unreadable parquet (") and "\n" not in str(err.value)
    assert not caplog.records and not capfd.readouterr().err


def _saved_splits(tmp_path, caplog, layout: dict[str, tuple[str, int]]) -> dict:
    """A DatasetDict of one-turn chats (split name -> (the questions' prefix, how many)), saved
    and read by data=hf, with its warnings in ``caplog``."""
    from datasets import Dataset, DatasetDict

    DatasetDict({name: Dataset.from_list([{"messages": [{"role": "user", "content": f"{prefix} question {i}"},
                                                        {"role": "assistant", "content": "answer"}]} for i in range(n)])
                 for name, (prefix, n) in layout.items()}).save_to_disk(str(tmp_path / "dd"))
    with caplog.at_level(logging.WARNING, logger="ccexp.data"):
        return build_splits(_hf(str(tmp_path / "dd")), ALL, MIX)


def test_a_dev_split_is_the_validation_split_and_other_splits_are_named(tmp_path, caplog):
    splits = _saved_splits(tmp_path, caplog, {"train": ("train", 20), "dev": ("dev", 4), "test": ("test", 3),
                                              "unlabeled": ("unlabeled", 5)})
    assert {s: len(v) for s, v in splits.items()} == {"train": 20, "val": 4, "test": 3}
    assert f"{tmp_path / 'dd'}: split unlabeled not used (ccexp reads train; validation / val / valid / dev; test)" \
        in caplog.text


def test_a_validation_split_that_repeats_the_test_split_is_held_out_of_train(tmp_path, caplog):
    """Some Hub datasets publish test again as validation: the best step would be chosen on the
    test rows, and the val/test check refused the dataset though the user gave one path."""
    splits = _saved_splits(tmp_path, caplog, {"train": ("train", 30), "validation": ("test", 4), "dev": ("dev", 2),
                                              "test": ("test", 4)})
    assert {s: len(v) for s, v in splits.items()} == {"train": 27, "val": 3, "test": 4}
    assert f"{tmp_path / 'dd'}: split validation is the val split; dev not used" in caplog.messages
    assert (f"{tmp_path / 'dd'}: its validation split repeats its test split; validation is held out of train "
            "instead (data.val_path=<file> gives one)") in caplog.messages


def test_the_rows_of_one_call_are_held_out_together(tmp_path):
    """A call written one row per assistant turn, with no conversation_id (the Hub's usual SFT
    layout): its rows are one conversation, so no test answer sits inside a training prompt."""
    from datasets import Dataset

    def call(c):
        turns = [m for t in range(4) for m in ({"role": "user", "content": f"call {c} q{t}"},
                                                {"role": "assistant", "content": f"call {c} a{t}"})]
        return [{"messages": turns[: 2 * k]} for k in range(1, 5)]

    Dataset.from_list([row for c in range(25) for row in call(c)]).to_parquet(str(tmp_path / "calls.parquet"))
    splits = build_splits(_hf(str(tmp_path / "calls.parquet")), ALL, MIX)
    calls = {s: {ex["messages"][0]["content"].split()[1] for ex in rows} for s, rows in splits.items()}
    assert not calls["train"] & calls["test"] and not calls["train"] & calls["val"]
    assert all(len(rows) % 4 == 0 for rows in splits.values())
