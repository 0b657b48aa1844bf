"""Dataset card and export: exact numbers on known splits, the CLI in-process, round trips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import compose_cfg
from rich.console import Console

from ccexp.config import DataConfig, DataSizeConfig, TaskMixConfig, validate
from ccexp.data import batching, build_splits
from ccexp.data.__main__ import main
from ccexp.data.card import dataset_card, percentiles, print_card

FIXTURES = Path(__file__).parent / "fixtures"
MIX = TaskMixConfig(weights={"issue": 1})


def _ex(task, user, answer, **reference):
    return {"task": task, "reference": reference, "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_percentiles():
    assert percentiles(list(range(1, 11))) == {"p10": 1, "p50": 5, "p90": 9, "max": 10}
    assert percentiles([7]) == {"p10": 7, "p50": 7, "p90": 7, "max": 7}
    assert percentiles([]) == {"p10": 0, "p50": 0, "p90": 0, "max": 0}
    # nearest rank, ceil(q*n): round() halves to even (2.5 -> 2, 4.5 -> 4)
    assert percentiles([1, 2, 3, 4, 5]) == {"p10": 1, "p50": 3, "p90": 5, "max": 5}
    assert percentiles([1, 2, 3]) == {"p10": 1, "p50": 2, "p90": 3, "max": 3}


def test_the_card_counts_whole_prompts_in_train_as_the_run_does():
    """Conversations that end alike ("thanks") ask different things: only a whole prompt seen in
    train measures memory (the run's holdout warning compares the same)."""
    def chat(opening):
        return {"task": "chat", "reference": {"reply": "bye"}, "messages": [
            {"role": "user", "content": opening}, {"role": "assistant", "content": "done"},
            {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "bye"}]}

    card = dataset_card({"train": [chat("my bill")], "val": [chat("my bill")], "test": [chat("my router")]})
    assert card["eval_in_train"] == {"val": 1, "test": 0}


def test_the_card_measures_token_lengths_a_chunk_at_a_time(tokenizer, monkeypatch):
    """Only the lengths are kept: one tokenizer call over every prompt held all their encodings
    at once (describe on BANKING77's 13,083 rows peaked 1.25 GB above its splits)."""
    from ccexp.data import card as card_module

    calls = []

    class Counting:  # the tokenizer, counting the texts each call encodes
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kwargs):
            calls.append(len(texts))
            return tokenizer(texts, **kwargs)

    examples = [_ex("classify", "word " * i, '{"label": "x"}', label="x") for i in range(1, 6)]
    whole = card_module.token_lengths(examples, tokenizer)
    monkeypatch.setattr(batching, "ENCODE_CHUNK", 2)
    assert card_module.token_lengths(examples, Counting()) == whole
    assert calls == [2, 2, 1, 2, 2, 1]


def test_card_numbers(tokenizer):
    splits = {
        "train": [_ex("classify", "Card lost", '{"label": "lost"}', label="lost"),
                  _ex("classify", "Card lost", '{"label": "lost"}', label="lost"),
                  _ex("classify", "Where is my card?", '{"label": "arrival"}', label="arrival")],
        "val": [_ex("classify", "Where is my card?", '{"label": "arrival"}', label="arrival")],
        "test": [_ex("chat", "Hi there", "Hello!", reply="Hello!")],
    }
    card = dataset_card(splits, tokenizer, max_seq_len=64)
    assert card["sizes"] == {"train": 3, "val": 1, "test": 1}
    assert card["tasks"] == {"train": {"classify": 3}, "val": {"classify": 1}, "test": {"chat": 1}}
    assert {s: dict(c) for s, c in card["labels"]["label"].items()} == {
        "train": {"lost": 2, "arrival": 1}, "val": {"arrival": 1}, "test": {}}
    assert "reply" not in card["labels"]  # free text is not a label
    assert (card["distinct_transcripts"], card["distinct_transcript_ratio"]) == (3, 0.6)
    assert card["eval_in_train"] == {"val": 1, "test": 0}
    # card lost label where is my arrival hi there hello
    assert card["vocabulary"] == 10
    answer = len(tokenizer('{"label": "lost"}' + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    assert card["tokens"]["answer"]["max"] >= answer and card["tokens"]["prompt"]["p10"] > 0
    assert card["over_max_seq_len"] == 0


def test_synthetic_card_has_the_noise_ceiling():
    from ccexp.config import EvalConfig
    from ccexp.data.synthetic import noise_report
    from ccexp.scoring import field_checks

    splits = build_splits(DataConfig(seed=1), DataSizeConfig(train=6, val=2, test=2),
                          TaskMixConfig(weights={"issue": 1, "csat": 1}))
    card = dataset_card(splits, noise=noise_report(field_checks(EvalConfig())))
    assert set(card["noise_ceiling"]) == {"issue_category", "secondary_category", "csat"}
    assert all(0.5 < v <= 1.0 for v in card["noise_ceiling"].values())
    assert "tokens" not in card


def test_card_gives_a_constant_answers_test_accuracy():
    """The floor a model must beat: train's most common label, or a score's median, judged by the
    evaluation's own checks (a quality score within 10)."""
    from ccexp.config import EvalConfig
    from ccexp.scoring import field_checks

    def ex(**reference):
        return {"task": "x", "reference": reference, "messages": [{"role": "user", "content": "q"},
                                                                  {"role": "assistant", "content": "a"}]}

    splits = {"train": [ex(label="lost", quality_score=s) for s in (40, 50, 90)] + [ex(label="late", quality_score=60)],
              "val": [], "test": [ex(label="lost", quality_score=55), ex(label="late", quality_score=70),
                                  ex(label="lost", quality_score=49), ex(label="refund", quality_score=10)]}
    card = dataset_card(splits, checks=field_checks(EvalConfig()))
    assert card["constant_answer"] == {"label": 0.5, "quality_score": 0.5}  # "lost"; median_low 50: 55 and 49


def test_card_gives_a_constant_answers_task_accuracy_as_a_run_counts_it():
    """A run's task accuracy needs every field of the answer right: a quality answer's score and
    band, an issue answer's two categories. The per-field floors alone (quality_score 0.55 on
    data_size=small) overstated the floor of the quality task's accuracy (0.26)."""
    from ccexp.config import EvalConfig
    from ccexp.scoring import field_checks

    def ex(score, band):
        return {"task": "quality", "reference": {"quality_score": score, "effectiveness": band},
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}

    splits = {"train": [ex(60, "fair"), ex(62, "fair"), ex(90, "excellent"), ex(95, "excellent"), ex(96, "excellent")],
              "val": [], "test": [ex(80, "good"), ex(58, "fair"), ex(88, "excellent"), ex(10, "poor")]}
    card = dataset_card(splits, checks=field_checks(EvalConfig()))  # constant: 90 and "excellent"
    assert card["constant_answer"] == {"quality_score": 0.5, "effectiveness": 0.25}  # 80 and 88 within 10 of 90
    assert card["constant_answer_by_task"] == {"quality": 0.25}  # only 88/excellent has both right
    console = Console(record=True, width=400)
    print_card(card, "t", console)
    assert "mean 0.250 (test/acc's floor)" in console.export_text()
    # A reply task counts in test/acc (exact match) but has no constant answer here: no floor claimed.
    splits["test"].append({"task": "reply", "reference": {"reply": "Sure."}, "messages": ex(1, "x")["messages"]})
    card = dataset_card(splits, checks=field_checks(EvalConfig()))
    console = Console(record=True, width=400)
    print_card(card, "t", console)
    assert "mean 0.250 over these tasks" in console.export_text()


def test_the_card_breaks_a_tie_for_most_common_label_the_same_in_any_order():
    """Two labels as common on train: the floor was the first one seen's, so the same examples
    exported and read back (in another order) gave another floor."""
    from ccexp.config import EvalConfig
    from ccexp.scoring import field_checks

    def ex(label):
        return {"task": "x", "reference": {"label": label}, "messages": [{"role": "user", "content": "q"},
                                                                         {"role": "assistant", "content": "a"}]}

    train = [ex("b"), ex("a"), ex("b"), ex("a"), ex("c")]
    floors = {dataset_card({"train": order, "val": [], "test": [ex("a"), ex("b"), ex("b")]},
                           checks=field_checks(EvalConfig()))["constant_answer"]["label"]
              for order in (train, train[::-1], train[1:] + train[:1])}
    assert len(floors) == 1 and floors.pop() == pytest.approx(1 / 3)  # "a", first of the tied labels in order


def test_the_card_counts_user_labels_as_the_scorer_does():
    """A user's whole-number labels are classes, not a score to take the median of; 1, 1.0 and
    "1" are one label, as the scorer reads them."""
    from ccexp.config import EvalConfig
    from ccexp.scoring import field_checks

    def ex(label, text="q"):
        return {"task": "classify", "reference": {"label": label}, "messages": [
            {"role": "user", "content": text}, {"role": "assistant", "content": "a"}]}

    numbers = {"train": [ex(0)] * 10 + [ex(7)] * 2 + [ex(9)] * 9, "val": [], "test": [ex(0)] * 8 + [ex(9)] * 2}
    assert dataset_card(numbers, checks=field_checks(EvalConfig()))["constant_answer"] == {"label": 0.8}
    spelled = {"train": [ex(1)] * 5 + [ex(1.0)] * 5 + [ex("1")] * 5 + [ex(2)] * 12, "val": [],
               "test": [ex(1)] * 4 + [ex(2)]}
    card = dataset_card(spelled, checks=field_checks(EvalConfig()))
    assert {s: dict(c) for s, c in card["labels"]["label"].items()} == {
        "train": {"1": 15, "2": 12}, "val": {}, "test": {"1": 4, "2": 1}}
    assert card["constant_answer"] == {"label": 0.8}
    # ccexp's own label fields as the scorer compares them: case and hyphens aside.
    issues = {"train": [{**ex(0), "reference": {"issue_category": v}} for v in ("Billing", "billing", "tech-support")],
              "val": [], "test": []}
    assert dict(dataset_card(issues)["labels"]["issue_category"]["train"]) == {"billing": 2, "tech_support": 1}


def test_the_card_compares_prompts_and_counts_cuts_as_the_run_does(tokenizer):
    """Case and spacing aside, as the importers compare texts; an answer over half of
    max_seq_len is cut (batching.encode), however short its prompt; words of any script."""
    splits = {"train": [_ex("classify", "I have problem number 1 with my card", "a", label="x")],
              "val": [_ex("classify", "i HAVE problem number 1   with my card", "a", label="x")],
              "test": [_ex("chat", "¿Dónde está la información?", "word " * 100, reply="b")]}
    card = dataset_card(splits, tokenizer, max_seq_len=128)
    assert card["eval_in_train"] == {"val": 1, "test": 0} and card["distinct_transcripts"] == 2
    assert card["over_max_seq_len"] == 1 and card["cut"] == {"prompt": 0, "instruction": 0, "answer": 1}
    console = Console(width=200, record=True)
    print_card(card, "cuts", console)
    assert "examples training cuts to model.max_seq_len: 1: 1 answer over half of it loses its end" in \
        console.export_text()
    assert card["vocabulary"] == len({"i", "have", "problem", "number", "1", "with", "my", "card", "dónde", "está",
                                      "la", "información", "a", "word"})  # answers' words too


def test_describe_cli(monkeypatch, capsys):
    monkeypatch.chdir(FIXTURES.parent.parent)
    assert main(["describe", "data=csv", "model=tiny", "data_size.test=4"]) == 0
    out = capsys.readouterr().out
    for text in ("Refund_not_showing_up", "prompt", "answer", "distinct transcripts", "vocabulary"):
        assert text in out
    rows = {m.group(1): (int(m.group(2)), m.group(3)) for m in re.finditer(r"│ (train|val|test)\s*│\s*(\d+) │ (classify \d+)", out)}
    assert rows == {"train": (43, "classify 43"), "val": (6, "classify 6"), "test": (4, "classify 4")}


def test_describe_scores_the_noise_ceiling_with_the_runs_bands(capsys):
    """Floor and ceiling under one rule: with bands of 0 a perfect reader matches a noisy 0-100
    score only when the noise rounds away (sd 3: about 0.13), not within the default +/-10."""
    assert main(["describe", "model=tiny", "task_mix=analytics_json", "data_size.train=2", "data_size.val=1",
                 "data_size.test=1", "eval.quality_band=0", "eval.churn_band=0"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("label-noise ceiling"))
    ceiling = {name: float(value) for name, value in re.findall(r"(\w+) (\d\.\d+)", line)}
    assert ceiling["quality_score"] < 0.3 and ceiling["churn_risk"] < 0.3 and ceiling["issue_category"] > 0.9


def test_export_round_trips_through_data_chatml(tmp_path, capsys):
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}",
           f"data.test_path={FIXTURES / 'banking77_test.csv'}"]
    assert main(["export", *csv, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "mlx").iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    first = json.loads((tmp_path / "mlx" / "valid.jsonl").read_text().splitlines()[0])
    assert list(first) == ["messages"] and first["messages"][-1]["role"] == "assistant"
    rc = validate(compose_cfg(*csv))
    original = build_splits(rc.data, rc.data_size, rc.task_mix)
    paths = {f"{s}_path": str(tmp_path / "chatml" / f"{s}.jsonl") for s in ("train", "val", "test")}
    out = capsys.readouterr().out
    # In the same order too, with the data_size printed: the order is the training batches' (and
    # limit_val_batches' rows), so a run on the export trains and scores as one on the source.
    size = DataSizeConfig(**{s: len(original[s]) for s in ("train", "val", "test")})
    assert build_splits(DataConfig(name="chatml", **paths), size, MIX) == original
    assert build_splits(DataConfig(name="hf", train_path=str(tmp_path / "hf")), size, MIX) == original
    # The commands printed train on every row exported (data_size=tiny would keep 64), and
    # mlx-lm on the answers only, as ccexp does (mlx-lm's default is the whole text).
    sizes = " ".join(f"data_size.{s}={len(original[s])}" for s in ("train", "val", "test"))
    assert f"train on it: python -m ccexp data=chatml data.train_path={paths['train_path']} " \
           f"data.val_path={paths['val_path']} data.test_path={paths['test_path']} {sizes}" in out
    assert f"python -m ccexp data=hf data.train_path={tmp_path / 'hf'} {sizes}" in out
    assert f"mlx_lm.lora --train --mask-prompt --num-layers -1 --data {tmp_path / 'mlx'}" in out


def test_export_read_back_with_its_data_seed_keeps_the_order(tmp_path, capsys):
    """Another data.seed shuffles otherwise: the printed commands carry it."""
    chatml = ["data=chatml", f"data.train_path={FIXTURES / 'chatml_train.jsonl'}", "data.seed=7"]
    assert main(["export", *chatml, "--out", str(tmp_path)]) == 0
    rc = validate(compose_cfg(*chatml))
    original = build_splits(rc.data, rc.data_size, rc.task_mix)
    size = DataSizeConfig(**{s: len(original[s]) for s in ("train", "val", "test")})
    again = build_splits(DataConfig(name="hf", train_path=str(tmp_path / "hf"), seed=7), size, MIX)
    assert again == original
    assert f"data_size.test={len(original['test'])} data.seed=7\n" in capsys.readouterr().out


def test_the_printed_mlx_lm_command_trains_on_a_small_export(tmp_path, capsys, tokenizer):
    """mlx-lm batches 4 rows and trains the last 16 blocks by default: on a split of fewer rows
    (this fixture's 2 val rows) it stopped at the first validation, on a model of fewer blocks
    (model=tiny: 2) before training. ccexp's LoRA is on every block."""
    import shlex
    import types

    pytest.importorskip("mlx.core")
    from mlx_lm.lora import CONFIG_DEFAULTS, build_parser
    from mlx_lm.tuner.datasets import CacheDataset, load_local_dataset
    from mlx_lm.tuner.trainer import iterate_batches

    assert main(["export", "data=chatml", f"data.train_path={FIXTURES / 'chatml_train.jsonl'}",
                 "--out", str(tmp_path)]) == 0
    command = re.search(r"or with mlx-lm: mlx_lm.lora (.*)$", capsys.readouterr().out, re.M).group(1)
    parsed = vars(build_parser().parse_args(shlex.split(command.replace("<model>", "m"))))
    args = types.SimpleNamespace(**{k: CONFIG_DEFAULTS[k] if v is None and k in CONFIG_DEFAULTS else v
                                    for k, v in parsed.items()})
    assert args.train and args.mask_prompt and args.num_layers == -1
    train, valid, _ = load_local_dataset(Path(args.data), tokenizer, args)
    assert (len(train), len(valid)) == (16, 2)
    for split in (train, valid):
        next(iterate_batches(CacheDataset(split), args.batch_size, args.max_seq_length))  # as mlx_lm.lora does


def test_export_out_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """``--out=~/x`` reaches ccexp unexpanded (the shell expands ~ only at a word's start): it was
    written to a folder named "~" here, while the printed data.train_path=~/x/... read the home's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "data=chatml", f"data.train_path={FIXTURES / 'chatml_train.jsonl'}", "--out=~/x"]) == 0
    assert (tmp_path / "home" / "x" / "chatml" / "train.jsonl").is_file() and not (tmp_path / "~").exists()
    assert f"data.train_path={tmp_path / 'home' / 'x' / 'chatml' / 'train.jsonl'} " in capsys.readouterr().out


def test_export_defaults_to_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}",
           f"data.test_path={FIXTURES / 'banking77_test.csv'}"]
    assert main(["export", *csv]) == 0
    out = tmp_path / "data" / "csv-tiny"
    assert sorted(p.name for p in (out / "chatml").iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    assert sorted(p.name for p in (out / "mlx").iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]


@pytest.mark.parametrize("argv,error", [
    (["describe", "data=csv", "data.train_path=nope.csv", "model=tiny"],
     "ccexp.data: error: nope.csv: no such file (data.train_path; relative paths are resolved against"),
    (["export", "data=csv", "--out"], "ccexp.data: error: --out: expected a directory"),
    (["describe", "data=parquet"], "ccexp.data: error: data=parquet: no such option, expected one of chatml, csv, hf, jsonl, synthetic, twcs"),
    (["describe", "--verbose"], "ccexp.data: error: --verbose: unknown option"),
    (["describe", "--out", "x"], "ccexp.data: error: --out x: describe writes nothing (it prints the dataset card)"),
    (["export", "--out="], "ccexp.data: error: --out=: expected a directory, got nothing"),
    (["summarize"], "usage: python -m ccexp.data {describe,export}"),
])
def test_cli_errors_are_one_line(argv, error, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(error)


@pytest.mark.parametrize("argv", [["describe", "--help"], ["export", "-h"], ["--help"],
                                  ["export", "data=csv", "--help"]])
def test_help_prints_the_usage(argv, capsys):
    """--help is usage, as in the other CLIs, never an unknown option; it loads no data."""
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: python -m ccexp.data {describe,export}") and "--out DIR" in out.out
    assert out.err == ""


def test_export_to_a_file_is_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["export", "data_size=tiny", "--out", str(afile)]) == 2
    assert capsys.readouterr().err == (f"ccexp.data: error: --out {afile}: a file, expected a directory (it is "
                                       "created if missing)\n")


def test_export_never_writes_over_its_input_or_an_earlier_export_unasked(tmp_path, capsys):
    """Re-exporting an export into its own folder read train.jsonl while replacing it; a second
    export into the default folder replaced the first without a word."""
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}", "data_size=small"]
    assert main(["export", *csv, "--out", str(tmp_path)]) == 0
    train = tmp_path / "chatml" / "train.jsonl"
    before = train.read_bytes()
    capsys.readouterr()
    assert main(["export", *csv, "data_size=tiny", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"ccexp.data: error: --out {tmp_path}: holds an earlier export "
                                       f"({train}); give another --out, or --overwrite to replace it\n")
    again = ["data=chatml", f"data.train_path={train}", f"data.val_path={tmp_path / 'chatml' / 'val.jsonl'}"]
    for extra in ([], ["--overwrite"]):
        assert main(["export", *again, "--out", str(tmp_path), *extra]) == 2
        assert capsys.readouterr().err == (f"ccexp.data: error: --out {tmp_path}: would write over {train} "
                                           "(data.train_path), which this export reads; expected another folder\n")
    assert train.read_bytes() == before
    assert main(["export", *csv, "data_size=tiny", "--out", str(tmp_path), "--overwrite"]) == 0
    assert len(train.read_text().splitlines()) == 43  # the fixture's 55 rows less two holdouts, all of them
    other = tmp_path / "other"
    (other / "hf").mkdir(parents=True)  # a folder of the user's own, not an export's DatasetDict
    for extra in ([], ["--overwrite"]):  # the same line with or without: it is no export to replace
        assert main(["export", *csv, "--out", str(other), *extra]) == 2
        assert capsys.readouterr().err == (f"ccexp.data: error: --out {other}: {other / 'hf'} is not a DatasetDict an "
                                           "export wrote; expected another --out\n")
    assert main(["describe", "--overwrite"]) == 2
    assert "--overwrite: describe writes nothing" in capsys.readouterr().err


def test_export_writes_a_dataset_dict_that_data_hf_reads(tmp_path, capsys):
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}",
           f"data.test_path={FIXTURES / 'banking77_test.csv'}"]
    assert main(["export", *csv, "--out", str(tmp_path)]) == 0
    rc = validate(compose_cfg(*csv))
    original = build_splits(rc.data, rc.data_size, rc.task_mix)
    again = build_splits(DataConfig(name="hf", train_path=str(tmp_path / "hf")),
                         DataSizeConfig(train=1000, val=1000, test=1000), MIX)
    key = lambda ex: ex["id"]  # noqa: E731
    assert {s: sorted(v, key=key) for s, v in again.items()} == {s: sorted(v, key=key) for s, v in original.items()}
    assert f"data=hf data.train_path={tmp_path / 'hf'}" in capsys.readouterr().out


def test_describe_reads_only_the_tokenizer(monkeypatch, tmp_path, capsys, tiny_dir):
    """describe needs the tokenizer, never the weights: a 7B random model is not built (GBs), a
    hub model's weights are not downloaded (~16 GB), the embedded GGUF is not converted."""
    import shutil

    import huggingface_hub
    from transformers import AutoModelForCausalLM

    from ccexp import models

    def refuse(*args, **kwargs):
        raise AssertionError("describe built or loaded a model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setenv("CCEXP_CACHE_DIR", str(tmp_path / "cache"))  # nothing converted yet
    monkeypatch.chdir(FIXTURES.parent.parent)
    assert main(["describe", "data=csv", "model=mistral_7b_random", "data_size.test=4"]) == 0
    assert "Refund_not_showing_up" in capsys.readouterr().out

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in models.TOKENIZER_FILES + ("config.json",):
        if (tiny_dir / name).is_file():
            shutil.copy(tiny_dir / name, snapshot / name)
    asked = []

    def snapshot_download(repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        asked.append((repo_id, tuple(allow_patterns), local_files_only))
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: True)
    assert main(["describe", "data=csv", "model=llama3_8b", "model.max_seq_len=512", "data_size.test=4"]) == 0
    assert [local for _, _, local in asked] == [True, False]
    assert not any(p.endswith((".safetensors", ".bin")) or p == "*" for _, patterns, _ in asked for p in patterns)


def test_the_card_says_prompts_whose_instruction_is_cut(tokenizer):
    """A label list over half of max_seq_len is cut itself: counted apart from the transcripts cut."""
    labels = "Labels: " + ", ".join(f"label_{i}" for i in range(120))
    splits = {"train": [_ex("classify", f"{labels}\n\nCustomer: hi", "a", label="a"),
                        _ex("classify", "Rate it.\n\nCustomer: " + "word " * 400, "a", label="a")],
              "val": [], "test": []}
    card = dataset_card(splits, tokenizer, max_seq_len=128)
    assert card["cut"] == {"prompt": 2, "instruction": 1, "answer": 0}
    console = Console(width=300, record=True)
    print_card(card, "cuts", console)
    assert ("examples training cuts to model.max_seq_len: 2: 1 prompt loses its transcript's oldest tokens (the "
            "instruction kept), 1 prompt loses part of its instruction (over half of model.max_seq_len)") in \
        console.export_text()


def test_printed_commands_run_in_a_shell_with_spaces_and_parens_in_the_path(tmp_path, capsys):
    """An --out with spaces, parens (and rich's [markup]): the printed commands are pasted into a
    shell, and Hydra reads the overrides; both need quoting."""
    import os
    import subprocess
    import sys

    import yaml

    out = tmp_path / "my export (1) [x]"
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}"]
    assert main(["export", *csv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    commands = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("train on it: ")]
    commands += [re.search(r", or (python -m ccexp data=hf .*)$", line).group(1)
                 for line in printed.splitlines() if line.startswith("as a datasets.DatasetDict")]
    assert len(commands) == 2
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    for command in commands:
        run = command.replace("python -m ccexp ", f"{sys.executable} -m ccexp ", 1) + " --cfg job"
        done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert yaml.safe_load(done.stdout)["data"]["train_path"].startswith(f"{out}/")
    mlx = re.search(r"mlx_lm.lora --train --mask-prompt --num-layers -1 --data (.*) --model", printed).group(1)
    assert subprocess.run(["bash", "-c", f"test -d {mlx}"]).returncode == 0


@pytest.mark.parametrize("value", ["plain/path.jsonl", "my export (1)/a b", 'say "hi"', "ends\\", 'a\\"b', "it's ${x}"])
def test_a_printed_override_reads_back_as_its_value(value):
    """What shell_override prints, split by a shell and parsed by Hydra, is the value itself."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from ccexp.data.__main__ import shell_override

    [word] = shlex.split(shell_override("data.train_path", value))
    parsed = OverridesParser.create().parse_override(word).value()
    assert OmegaConf.create({"path": parsed}).path == value  # as the config reads it: ${x} not interpolated


def test_export_refuses_an_earlier_export_before_building_the_data(tmp_path, capsys, monkeypatch):
    """Refused at once, not after reading and splitting a large file."""
    import ccexp.data.__main__ as cli

    (tmp_path / "chatml").mkdir()
    (tmp_path / "chatml" / "train.jsonl").write_text("")

    def build_splits(*args, **kwargs):
        raise AssertionError("the data was built before --out was checked")

    monkeypatch.setattr(cli, "build_splits", build_splits)
    csv = ["data=csv", f"data.train_path={FIXTURES / 'banking77_train.csv'}"]
    assert main(["export", *csv, "--out", str(tmp_path)]) == 2
    assert "holds an earlier export" in capsys.readouterr().err


def test_export_of_a_mix_given_whole_holds_those_tasks_only(tmp_path, capsys):
    """'task_mix.weights={issue: 1, journey: 1}' trains two tasks (python -m ccexp replaces the
    option's mapping); export, "the data a run would use", merged it and wrote all six."""
    assert main(["export", "data_size.train=12", "data_size.val=4", "data_size.test=4",
                 "task_mix.weights={issue: 1, journey: 1}", "--out", str(tmp_path)]) == 0
    for split in ("train", "val", "test"):
        rows = [json.loads(line) for line in (tmp_path / "chatml" / f"{split}.jsonl").read_text().splitlines()]
        assert rows and {row["task"] for row in rows} <= {"issue", "journey"}, split
