"""The evaluation module end to end: its metrics agree with an independent recomputation from
predictions.jsonl, and a saved adapter evaluates again through ``python -m ccexp.evaluate``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, compose_cfg
from torchmetrics.functional.text import sacre_bleu_score

from ccexp.backends.base import Generation
from ccexp.config import ConfigError, validate
from ccexp.data import build_splits
from ccexp.evaluate import evaluate
from ccexp.evaluate.__main__ import main as evaluate_main
from ccexp.run import run


class ScriptedBackend:
    """Answers from the references, spoiled in known ways, so every metric has work to do."""

    name = "scripted"

    def __init__(self, examples: list[dict]):
        self.by_prompt = {ex["messages"][1]["content"]: ex for ex in examples}
        self.calls = 0

    def nll(self, examples, adapter=True):
        return 0.5 * len(examples), len(examples)

    def generate(self, prompts, max_new_tokens, adapter=True):
        texts = []
        for messages in prompts:
            ex, self.calls = self.by_prompt[messages[1]["content"]], self.calls + 1
            ref = dict(ex["reference"])
            style = self.calls % 5
            if ex["task"] == "reply":
                texts.append(ref["reply"] if style < 2 else " ".join(ref["reply"].split()[:4]))
                continue
            for key, value in ref.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    ref[key] = value + (0, 7, 12, 30, 0)[style]  # inside and outside the bands
                elif style == 2 and isinstance(value, str):
                    ref[key] = "wrong_label"
            text = json.dumps(ref)
            texts.append([text, f"Sure: ```json\n{text}\n```", text, "I cannot tell.", text[:-3]][style])
        return Generation(texts, [0.01] * len(texts), [5] * len(texts), [0.002] * len(texts))


def _recompute(records: list[dict], bands: dict[str, float]) -> dict[str, float]:
    """Independent of ccexp.metrics: straight from the records' raw parsed values."""
    out: dict[str, float] = {}
    scales = {"quality_score": (0, 100), "csat": (1, 5), "churn_risk": (0, 100)}
    json_recs = [r for r in records if r["task"] != "reply"]
    out["json_valid"] = sum(r["parsed"] is not None for r in json_recs) / len(json_recs)
    for field, band in bands.items():
        rows = [r for r in records if field in r["reference"]]
        given = [(r["parsed"] or {}).get(field) for r in rows]
        low, high = scales[field]  # the prompts' scales: an answer off its scale is no number
        numbers = [(float(g), r["reference"][field]) for g, r in zip(given, rows)
                   if isinstance(g, (int, float)) and not isinstance(g, bool) and low <= g <= high]
        out[f"{field}/mae"] = sum(abs(g - ref) for g, ref in numbers) / len(numbers)
        out[f"{field}/within_{band:g}"] = sum(abs(g - ref) <= band for g, ref in numbers) / len(rows)
    rows = [r for r in records if "issue_category" in r["reference"]]
    refs = [r["reference"]["issue_category"] for r in rows]
    preds = [(r["parsed"] or {}).get("issue_category", "?") for r in rows]
    f1s = []
    for c in set(refs):
        tp = sum(p == c and t == c for p, t in zip(preds, refs))
        fp, fn = Counter(preds)[c] - tp, Counter(refs)[c] - tp
        f1s.append(2 * tp / (2 * tp + fp + fn))
    out["issue_category/macro_f1"] = sum(f1s) / len(f1s)
    replies = [r for r in records if r["task"] == "reply"]
    out["reply/bleu"] = float(sacre_bleu_score([r["raw"] for r in replies], [[r["reference"]["reply"]] for r in replies],
                                               tokenize="13a"))
    out["reply/exact_match"] = sum(r["raw"] == r["reference"]["reply"] for r in replies) / len(replies)
    return out


class AnswerLengthNll(ScriptedBackend):
    """Each example's summed NLL is its answer's length in characters / 100, over as many tokens as
    the answer has words: each split has its own loss, so a split scored for another shows."""

    def nll(self, examples, adapter=True):
        answers = [ex["messages"][-1]["content"] for ex in examples]
        return sum(len(a) for a in answers) / 100, sum(len(a.split()) for a in answers)


def test_metrics_agree_with_an_independent_recomputation():
    rc = validate(compose_cfg(*FAST, "+task_mix.weights.reply=1", "+task_mix.weights.all_in_one=1",
                              "data_size.test=40", "eval.generate_examples=40", "eval.baseline=false",
                              "eval.latency_examples=3"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    metrics, predictions = evaluate(AnswerLengthNll(splits["test"] + splits["val"]), splits, rc.eval)  # val: the latency warm-up
    for split in ("val", "test"):  # answer-token loss and perplexity, each on its own split
        answers = [ex["messages"][-1]["content"] for ex in splits[split]]
        loss = sum(len(a) for a in answers) / 100 / sum(len(a.split()) for a in answers)
        assert metrics[f"{split}/loss"] == pytest.approx(loss) and metrics[f"{split}/ppl"] == pytest.approx(math.exp(loss))
        assert metrics[f"{split}/answer_tokens"] == sum(len(a.split()) for a in answers)
    assert metrics["val/loss"] != pytest.approx(metrics["test/loss"])
    bands = {"quality_score": rc.eval.quality_band, "csat": rc.eval.csat_band, "churn_risk": rc.eval.churn_band}
    expected = _recompute(predictions, bands)
    for key, value in expected.items():
        assert metrics[f"test/{key}"] == pytest.approx(value), key
    # The spoiled answers really exercise the metrics (not all 0 or all 1).
    for key in ("json_valid", "quality_score/within_10", "issue_category/macro_f1", "reply/exact_match"):
        assert 0 < metrics[f"test/{key}"] < 1, key
    assert metrics["test/latency/examples"] == 3


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_saved_adapter_evaluates_again(method, tmp_path, monkeypatch):
    trained = run(compose_cfg(*FAST, f"method={method}", "eval.baseline=false", "eval.generate_examples=2"),
                  tmp_path / "run")
    code = evaluate_main([f"adapter={tmp_path / 'run'}", f"out={tmp_path / 'again'}", "eval.generate_examples=3",
                          "eval.latency_examples=0"])
    assert code == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    # The same adapter on the same validation split: the same loss (not the untrained one).
    assert again["val/loss"] == pytest.approx(trained["val/loss"], rel=1e-4)
    assert again["test/generated"] == 3 and "train/steps" not in again
    # Nothing trained: no training time or peak to rank against runs that trained, the adapter's loading instead.
    assert "time/fit_s" not in again and "memory/train_peak_mb" not in again and again["time/load_s"] > 0
    assert again["time/eval_s"] == pytest.approx(again["time/total_s"] - again["time/setup_s"] - again["time/load_s"])
    assert len((tmp_path / "again" / "predictions.jsonl").read_text().splitlines()) == 3
    # Written outside the run (out=): whose adapter it scored is recorded
    environment = json.loads((tmp_path / "again" / "environment.json").read_text())
    assert environment["adapter"] == str((tmp_path / "run" / "adapter").resolve())
    # Two evaluations in the same second each get their own dir, not one over the other.
    import ccexp.evaluate.__main__ as cli

    monkeypatch.setattr(cli, "_now", lambda: "2026-12-07_06-20-16")
    for _ in range(2):
        assert evaluate_main([f"adapter={tmp_path / 'run'}", "eval.generate_examples=1", "eval.latency_examples=0"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "eval").iterdir()) == ["2026-12-07_06-20-16",
                                                                            "2026-12-07_06-20-16_1"]


def test_an_adapter_evaluated_with_other_settings_or_damaged_is_one_line(tmp_path, capsys):
    """Overrides that would rebuild the adapter differently (another alpha rescales the update
    silently, another target has no trained weights), a damaged adapter or config.yaml, or an
    out= that would replace the run's own results: one line each, the run left as it was."""
    run(compose_cfg(*FAST, "eval.baseline=false", "eval.generate_examples=0", "eval.latency_examples=0"),
        tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert evaluate_main([f"adapter={tmp_path / 'run'}", "eval.generate_examples=-1"]) == 2
    assert not (tmp_path / "run" / "eval").exists()  # a config refused: no empty eval/<time> left behind
    other = tmp_path / "other_adapter"  # another run's adapter folder
    other.mkdir()
    (other / "adapter_config.json").write_text("{}")
    cases = [
        (["method.alpha=3"], f"{adapter / 'adapter_config.json'}: the adapter has lora_alpha=32, this run's "
                             "method.alpha gives 3; expected the adapter's own setting (drop the override)"),
        (["model.lora_targets=[q_proj,k_proj,v_proj,o_proj,up_proj]"],
         f"{adapter / 'adapter_config.json'}: the adapter has target_modules=['k_proj', 'o_proj', 'q_proj', 'v_proj'], "
         "this run's model.lora_targets gives ['k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']; expected the "
         "adapter's own setting (drop the override)"),
        (["method.target_modules=[q_proj,v_proj]"],
         f"{adapter / 'adapter_config.json'}: the adapter has target_modules=['k_proj', 'o_proj', 'q_proj', 'v_proj'], "
         "this run's method.target_modules gives ['q_proj', 'v_proj']; expected the adapter's own setting (drop the "
         "override)"),
        # In the saved run's terms: the method it was trained with, a field of the group to override.
        (["method.name=qlora"], "argument 'method.name=qlora': the adapter was trained with method=lora; an adapter "
                                "of another method is another run's"),
        (["method=qlora"], "argument 'method=qlora': the adapter was trained with method=lora; an adapter of another "
                           "method is another run's"),
        (["trainer=fast"], "argument 'trainer=fast': only training reads the trainer group; the saved adapter was "
                           "trained with its own"),
        # Only training reads these: the evaluation would record values the adapter never trained with.
        (["method.lr=0.5"], "argument 'method.lr=0.5': only training reads method.lr; the saved adapter was trained "
                            "with its own (the run's: 0.001)"),
        (["trainer.max_steps=999"], "argument 'trainer.max_steps=999': only training reads trainer.max_steps; the "
                                    "saved adapter was trained with its own (the run's: 4)"),
        (["+data_size.train=7"], "argument '+data_size.train=7': only training reads data_size.train; the saved "
                                 "adapter was trained with its own (the run's: 12)"),
        ([f"out={tmp_path / 'run'}"], f"out={tmp_path / 'run'}: the adapter's own run dir (its metrics.json would be "
                                      f"replaced); expected a new folder, or leave out= out for {tmp_path / 'run' / 'eval'}/<time>"),
        # Results beside the adapter's files would ship with it, and count in its adapter/size_mb.
        ([f"out={adapter}"], f"out={adapter}: the adapter's own folder (results beside its files would ship with it); "
                             f"expected a new folder, or leave out= out for {tmp_path / 'run' / 'eval'}/<time>"),
        ([f"out={adapter / 'sub'}"], f"out={adapter / 'sub'}: the adapter's own folder (results beside its files would "
                                     f"ship with it); expected a new folder, or leave out= out for "
                                     f"{tmp_path / 'run' / 'eval'}/<time>"),
        ([f"out={other}"], f"out={other}: an adapter's folder (it holds adapter_config.json; results beside its files "
                           f"would ship with it); expected a new folder, or leave out= out for "
                           f"{tmp_path / 'run' / 'eval'}/<time>"),
        # A key the method's own config does not have: refused as training refuses it, not recorded.
        (["method.num_virtual_tokens=4"], "method.num_virtual_tokens: not a key of the config (python -m ccexp --cfg "
                                          "job lists the keys); method=prompt_tuning has it"),
        (["+eval.foo=1"], "argument '+eval.foo=1': evaluate takes no + or ~ prefix (it changes the saved config's "
                          "own keys, as key=value)"),
    ]
    for args, error in cases:
        assert evaluate_main([f"adapter={tmp_path / 'run'}", *args]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"ccexp.evaluate: error: {error}"  # after load bars
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    assert not (adapter / "sub").exists() and not (adapter / "metrics.json").exists()
    # Another run's adapter put in this one's place, no override given: said as the saved config
    # and the adapter disagreeing, naming both files, not as an override to drop.
    adapter_config = adapter / "adapter_config.json"
    saved = adapter_config.read_text()
    adapter_config.write_text(saved.replace('"LORA"', '"PROMPT_TUNING"'))
    assert evaluate_main([f"adapter={tmp_path / 'run'}", f"out={tmp_path / 'e0'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: {adapter_config}: the adapter has peft_type='PROMPT_TUNING', the run's "
        f"{tmp_path / 'run' / 'config.yaml'} gives method.name 'LORA'; the saved config and the adapter disagree: "
        "expected the adapter this run saved, or this one evaluated with the run dir that trained it")
    adapter_config.write_text(saved)
    (adapter / "quantization.json").write_text(json.dumps({"bnb_4bit_quant_type": "nf4"}))  # a QLoRA adapter's
    assert evaluate_main([f"adapter={tmp_path / 'run'}", f"out={tmp_path / 'e00'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: {adapter / 'quantization.json'}: the adapter has bnb_4bit_quant_type='nf4', the "
        f"run's {tmp_path / 'run' / 'config.yaml'} sets no method.quant_type; the saved config and the adapter "
        "disagree: expected the adapter this run saved, or this one evaluated with the run dir that trained it")
    (adapter / "quantization.json").unlink()
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert evaluate_main([f"adapter={tmp_path / 'run'}", f"out={tmp_path / 'e1'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"ccexp.evaluate: error: {weights}: not a readable safetensors file (")
    (tmp_path / "run" / "config.yaml").write_text("model: [\n")
    assert evaluate_main([f"adapter={tmp_path / 'run'}", f"out={tmp_path / 'e2'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: {tmp_path / 'run' / 'config.yaml'}: not valid YAML (line 2 column 1: expected the "
        "node content, but found '<stream end>')")
    config = tmp_path / "run" / "config.yaml"
    evaluations = sorted((tmp_path / "run" / "eval").iterdir())
    for text, error in (("- a\n", "expected a mapping of config groups (model:, method:, data:, ...), got a list"),
                        ("3\n", "expected a mapping of config groups (model:, method:, data:, ...) (Invalid loaded "
                                "object type: int)"),
                        ("model: 3\n", "model: expected a mapping of the group's fields, got 3")):
        config.write_text(text)
        assert evaluate_main([f"adapter={tmp_path / 'run'}"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"ccexp.evaluate: error: {config}: {error}"
    assert sorted((tmp_path / "run" / "eval").iterdir()) == evaluations  # refused before anything ran: no new dir


def test_a_qlora_adapter_records_its_4bit_base_and_refuses_another(tmp_path, capsys):
    """peft's adapter_config.json does not say which 4-bit base a QLoRA adapter was trained on:
    scored on nf4 after training on fp4 it is another model, with no error. ccexp writes the
    base's BitsAndBytesConfig beside it, and an evaluation with another is one line."""
    from transformers import BitsAndBytesConfig

    run(compose_cfg(*FAST, "method=qlora", "method.quant_type=fp4", "method.double_quant=false",
                    "eval.baseline=false", "eval.generate_examples=0", "eval.latency_examples=0"), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "adapter" / "quantization.json").read_text())
    config = BitsAndBytesConfig(**saved)  # the README's recipe for loading it with peft
    assert (config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant, config.load_in_4bit) == ("fp4", False, True)
    assert evaluate_main([f"adapter={tmp_path / 'run'}", "method.quant_type=nf4", f"out={tmp_path / 'e'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: {tmp_path / 'run' / 'adapter' / 'quantization.json'}: the adapter has "
        "bnb_4bit_quant_type='fp4', this run's method.quant_type gives 'nf4'; expected the adapter's own setting "
        "(drop the override)")


@pytest.mark.parametrize("args,message", [
    ([], "missing adapter=<run dir>"),
    (["adapter=/nonexistent"], "/nonexistent/config.yaml: not found"),
    (["adapter=x", "data=csv"], "a saved run's groups cannot be swapped"),
    (["adapter=x", "backend.fuse=true"], "argument 'backend.fuse=true': evaluate does not fuse"),
    (["adapter=x", "method.name=qlora"], "argument 'method.name=qlora': the adapter was trained with its own method"),
    (["adapter=x", "task_mix.name=classification"], "a label: the saved run's fields decide what runs"),
    (["verbose"], "argument 'verbose': expected key=value"),
    (["adapter=x", "out=pyproject.toml"], "out=pyproject.toml: a file, expected a directory"),
    (["adapter=x", "out=pyproject.toml/sub"], "out=pyproject.toml/sub: pyproject.toml is a file, so no directory"),
])
def test_evaluate_cli_errors_are_one_line(args, message, capsys):
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ccexp.evaluate: error:") and message in err and "\n" not in err


def test_a_run_that_saved_no_adapter_says_so_and_how_it_goes_on(tmp_path, capsys):
    """A run stopped before its adapter was saved is a run dir written by python -m ccexp: "expected
    a run dir" sent the user looking for another folder. Said: no adapter yet, and what resumes it."""
    (tmp_path / "config.yaml").write_text("model: {name: tiny}\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed", "error": "KeyboardInterrupt"}))
    (tmp_path / "checkpoints" / "step_4").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_4" / "resume.json").write_text(json.dumps({"step": 4}))
    assert evaluate_main([f"adapter={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"ccexp.evaluate: error: {tmp_path / 'adapter'}: not found; the run saved no adapter (it stopped "
                   f"before training finished): trainer.resume_from={tmp_path} resumes it from step 4\n")
    # A finished run whose adapter/ was since moved: not told to resume
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "finished", "train/steps": 4}))
    assert evaluate_main([f"adapter={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"ccexp.evaluate: error: {tmp_path / 'adapter'}: not found; the run saved its "
                                       "adapter there, since moved or deleted: expected the run dir as training left it\n")

@pytest.mark.parametrize("method,arg,error", [
    ("prompt_tuning", "method.r=8", "method.r: not a key of the config (did you mean method.lr or method.name?); "
                                    "method=lora and method=qlora have it"),
    ("prompt_tuning", "method.alpha=8", "method.alpha: not a key of the config (did you mean method.lr or "
                                        "method.name?); method=lora and method=qlora have it"),
    ("lora", "method.num_virtual_tokens=4", "method.num_virtual_tokens: not a key of the config (python -m ccexp "
                                            "--cfg job lists the keys); method=prompt_tuning has it"),
])
def test_a_key_the_runs_method_lacks_is_refused_as_training_refuses_it(method, arg, error, tmp_path, capsys):
    """Evaluated with it, the run's config.yaml would record a setting its method never reads."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST, f"method={method}"), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", arg]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ccexp.evaluate: error: {error}"
    assert not (tmp_path / "eval").exists()
    # Free-form fields still take new keys (a task weight), as they do in training with +.
    assert evaluate_main([f"adapter={tmp_path}", "task_mix.weights.reply=1", "method.nonsense=1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("ccexp.evaluate: error: method.nonsense: not a key")


@pytest.mark.parametrize("arg,error", [
    # The evaluation batches by eval.batch_size and validates nothing: the trainer group is training's.
    ("trainer.batch_size=64", "only training reads trainer.batch_size; the saved adapter was trained with its own "
                              "(the run's: 2)"),
    ("trainer.limit_val_batches=1", "only training reads trainer.limit_val_batches; the saved adapter was trained "
                                    "with its own (the run's: 2)"),
    ("backend.compile=true", "only training reads backend.compile; the saved adapter was trained with its own "
                             "(the run's: auto)"),
    ("trainer=default", "only training reads the trainer group; the saved adapter was trained with its own"),
])
def test_keys_only_training_reads_are_refused(arg, error, tmp_path, capsys):
    """README (Evaluation): an evaluation given one would record a value its adapter never trained
    with, in config.yaml and as a column of the comparison report."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", arg]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ccexp.evaluate: error: argument {arg!r}: {error}"
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("arg", ["backend=cpu", "logger=none", "data=csv"])
def test_a_group_chosen_by_name_is_refused_with_its_name_key(arg, tmp_path, capsys):
    """backend, data and logger choose an option by ``<group>.name=<value>`` (README: Evaluation),
    not by one of their fields (backend.precision=... would keep the run's backend)."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", arg]) == 2
    group, _, option = arg.partition("=")
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: argument {arg!r}: a saved run's groups cannot be swapped; choose the option by its "
        f"name instead: {group}.name={option}")


def test_what_an_evaluation_refuses_is_what_resuming_compares():
    """One list of the keys only training reads (ccexp.config.TRAINING_ONLY): every trainer field,
    which resuming compares but for the ones that only say where to save."""
    from ccexp.config import TRAINING_ONLY, TrainerConfig
    from ccexp.evaluate.__main__ import parse_args
    from ccexp.resume import FREE_TRAINER_KEYS, training_config

    compared = set(training_config(validate(compose_cfg(*FAST)), "cpu")["trainer"])
    trainer_only = {k.removeprefix("trainer.") for k in TRAINING_ONLY if k.startswith("trainer.")}
    assert trainer_only == compared | set(FREE_TRAINER_KEYS) == set(TrainerConfig.__dataclass_fields__)
    for key in TRAINING_ONLY:
        with pytest.raises(ConfigError, match=f"only training reads {key};"):
            parse_args(["adapter=/nonexistent", f"{key}=1"])


def test_keys_of_the_option_the_evaluation_names_or_of_a_nameless_group_are_taken():
    """data.name=csv with its paths on a synthetic run (README: another dataset), and a trainer or
    eval field an older run's config.yaml predates, are keys the evaluation takes."""
    from omegaconf import OmegaConf

    from ccexp.evaluate.__main__ import _check_keys

    saved = OmegaConf.create(OmegaConf.to_container(compose_cfg(*FAST), resolve=True))
    assert "train_path" not in saved.data  # data=synthetic
    _check_keys(saved, ["data.name=csv", "data.train_path=a.csv", "data.test_path=b.csv"])
    del saved.eval["latency_examples"], saved.trainer["batch_size"]  # an older run's config.yaml
    _check_keys(saved, ["eval.latency_examples=2", "trainer.batch_size=2"])
    with pytest.raises(ConfigError, match="data.train_path: not a key of the config"):
        _check_keys(saved, ["data.train_path=a.csv"])  # synthetic's own: no file to read
    with pytest.raises(ConfigError, match="eval.nonsense: not a key"):
        _check_keys(saved, ["eval.nonsense=1"])


def test_an_option_named_by_the_evaluation_brings_its_yaml_and_is_recorded(tmp_path, monkeypatch):
    """data.name=csv on a synthetic run takes conf/data/csv.yaml for the fields not given (its
    instruction, columns, task name), as data=csv would in training: the schema's own defaults
    gave another prompt. The same name as the run's keeps the run's fields. What the evaluation
    used is in the config it records."""
    from omegaconf import OmegaConf

    import ccexp.run

    used = {}

    def recorded(cfg, out, **kwargs):
        used["cfg"] = cfg
        return {"status": "finished"}

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST, "backend=auto", "backend.draft_tokens=3"), tmp_path / "config.yaml", resolve=True)
    monkeypatch.setattr(ccexp.run, "run", recorded)
    train = Path("tests/fixtures/banking77_train.csv").resolve()
    assert evaluate_main([f"adapter={tmp_path}", f"out={tmp_path / 'e'}", "data.name=csv", f"data.train_path={train}",
                          "data.task_name=topic", "backend.name=cpu"]) == 0
    data = yaml.safe_load(OmegaConf.to_yaml(used["cfg"], resolve=True))["data"]
    assert data == {"name": "csv", "train_path": str(train), "val_path": None, "test_path": None, "text_column": "text",
                    "label_column": "category", "task_name": "topic",
                    "instruction": "Classify the customer's message by its topic.", "seed": 1234}
    # backend.name=cpu on an auto run: another torch device, the run's settings kept (cpu and cuda
    # are auto's fields under another name), not reset to the option's defaults.
    assert validate(used["cfg"]).backend.draft_tokens == 3 and validate(used["cfg"]).backend.name == "cpu"


def test_a_task_mix_given_whole_replaces_the_runs(tmp_path, monkeypatch):
    """task_mix.weights={issue: 1, journey: 1} scores those two tasks (a task left out gets
    none): merged into the run's mapping it changed nothing and the six tasks were scored as if
    asked. A key of it given alone adds or reweighs a task."""
    from omegaconf import OmegaConf

    import ccexp.run

    used = []
    monkeypatch.setattr(ccexp.run, "run", lambda cfg, out, **kwargs: used.append(cfg) or {"status": "finished"})
    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", f"out={tmp_path / 'e1'}", "task_mix.weights={issue: 1, journey: 1}"]) == 0
    assert evaluate_main([f"adapter={tmp_path}", f"out={tmp_path / 'e2'}", "task_mix.weights.reply=2"]) == 0
    assert dict(validate(used[0]).task_mix.weights) == {"issue": 1, "journey": 1}
    assert validate(used[0]).task_mix.name == "issue+journey" and validate(used[1]).task_mix.name == "all"
    assert dict(validate(used[1]).task_mix.weights) == {**validate(compose_cfg(*FAST)).task_mix.weights, "reply": 2}


@pytest.mark.parametrize("signum, code", [(15, 143), (10, 138)])
def test_an_evaluation_stopped_by_a_signal_says_so_with_its_exit_code(signum, code, tmp_path, capsys, monkeypatch):
    """SIGTERM (or SIGUSR1) while evaluating: Lightning's SystemExit had left the evaluation with
    exit 0 (15 or 10 once the signal was its code) and no line."""
    from omegaconf import OmegaConf
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    import ccexp.run

    def stopped(*args, **kwargs):
        raise SIGTERMException(signum)

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST), tmp_path / "config.yaml", resolve=True)
    monkeypatch.setattr(ccexp.run, "run", stopped)
    assert evaluate_main([f"adapter={tmp_path}", f"out={tmp_path / 'e'}"]) == code
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"ccexp.evaluate: error: interrupted by SIG{'TERM' if signum == 15 else 'USR1'}")
    assert line.endswith(f"; python -m ccexp.evaluate adapter={tmp_path} evaluates it again ({tmp_path / 'e'})")


def test_evaluate_cli_bad_override_in_a_subprocess(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 1\n")  # a config without its groups
    proc = subprocess.run([sys.executable, "-m", "ccexp.evaluate", f"adapter={run_dir}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "ccexp.evaluate: error: model: missing config group (expected one of the files in conf/model/)")


def test_text_classifier_reports_accuracy_and_macro_f1(tmp_path):
    """data=csv (BANKING77 sample): the intent label gets accuracy and macro-F1, for the
    adapter and the base model; the README shows the same on the real test split."""
    metrics = run(compose_cfg(*FAST, "data=csv", "eval.latency_examples=1"), tmp_path)
    for prefix in ("test/", "baseline/test/"):
        for key in ("label/acc", "label/macro_f1", "label/parse_rate", "json_valid", "task/classify/acc"):
            assert 0 <= metrics[prefix + key] <= 1, prefix + key
    # Scored again on a test file named relative to here: recorded as the file it read, absolute
    # like the run's own anchored paths (a relative one names no folder once read elsewhere).
    test_file = "tests/fixtures/banking77_test.csv"
    assert evaluate_main([f"adapter={tmp_path}", f"out={tmp_path / 'again'}", f"data.test_path={test_file}",
                          "eval.baseline=false", "eval.generate_examples=1", "eval.latency_examples=0"]) == 0
    recorded = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["data"]
    assert recorded["test_path"] == str(Path.cwd() / test_file)


def test_a_generation_sample_bigger_than_the_test_split_is_said(caplog):
    rc = validate(compose_cfg(*FAST, "eval.generate_examples=100", "eval.baseline=false", "eval.latency_examples=0"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    with caplog.at_level("INFO", logger="ccexp"):
        metrics, _ = evaluate(ScriptedBackend(splits["test"]), splits, rc.eval)
    assert metrics["test/generated"] == len(splits["test"]) == 6
    assert "eval.generate_examples=100: the test split has 6 examples; all of them are generated" in caplog.messages


@pytest.mark.parametrize("generate,said", [
    (2, "eval.latency_examples=5: latency is timed on the 2 generated examples"),
    (0, "eval.latency_examples=5: no latency is measured, as nothing is generated (eval.generate_examples=0)"),
])
def test_a_latency_sample_bigger_than_the_generated_answers_is_said(generate, said, caplog):
    rc = validate(compose_cfg(*FAST, f"eval.generate_examples={generate}", "eval.baseline=false",
                              "eval.latency_examples=5"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    with caplog.at_level("INFO", logger="ccexp"):  # the latency warm-up prompt is a validation one
        metrics, _ = evaluate(ScriptedBackend(splits["test"] + splits["val"]), splits, rc.eval)
    assert said in caplog.messages
    assert metrics.get("test/latency/examples") == (generate or None)


def test_relative_data_paths_are_read_where_the_run_started(tmp_path):
    """A run started in /project with data.train_path=calls.csv, evaluated from another folder:
    the same calls.csv, not another folder's file of that name."""
    from omegaconf import OmegaConf

    from ccexp.environment import anchor_relative_paths

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    cwd: /project\n")
    saved = OmegaConf.create({"data": {"train_path": "calls.csv", "val_path": None, "test_path": "/abs/test.csv"},
                              "model": {"path": "models/mine"}})
    anchor_relative_paths(saved, run_dir)
    assert OmegaConf.to_container(saved) == {
        "data": {"train_path": "/project/calls.csv", "val_path": None, "test_path": "/abs/test.csv"},
        "model": {"path": "/project/models/mine"}}
    hub = OmegaConf.create({"data": {}, "model": {"source": "hub", "path": "mistralai/Mistral-7B-Instruct-v0.2"}})
    anchor_relative_paths(hub, run_dir)
    assert hub.model.path == "mistralai/Mistral-7B-Instruct-v0.2"  # a hub id, not a folder
    plain = OmegaConf.create({"data": {"train_path": "calls.csv"}, "model": {}})  # run() called from Python
    anchor_relative_paths(plain, tmp_path)
    assert plain.data.train_path == "calls.csv"


class BaseWorse(ScriptedBackend):
    """The base model (adapter=False) answers in prose, a higher loss and slower: every delta has a
    sign, so base minus adapter would read the other way (the scripted answers alone score both alike)."""

    def nll(self, examples, adapter=True):
        total, count = super().nll(examples, adapter)
        return (total if adapter else 2 * total), count

    def generate(self, prompts, max_new_tokens, adapter=True):
        gen = super().generate(prompts, max_new_tokens, adapter)
        if adapter:
            return gen
        return Generation(["I cannot tell."] * len(prompts), [0.03] * len(prompts), gen.new_tokens,
                          gen.first_token_seconds)


def test_deltas_are_adapter_minus_base_for_scores_and_latency_not_for_counts():
    rc = validate(compose_cfg(*FAST, "eval.generate_examples=6", "eval.latency_examples=2"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    metrics, _ = evaluate(BaseWorse(splits["test"] + splits["val"]), splits, rc.eval)
    assert metrics["baseline/test/json_valid"] == 0 < metrics["test/json_valid"]
    for key in ("test/json_valid", "test/acc", "val/loss", "test/ppl", "test/latency/p50_s"):
        assert metrics[f"delta/{key}"] == pytest.approx(metrics[key] - metrics[f"baseline/{key}"]), key
    assert metrics["delta/val/loss"] == pytest.approx(-0.5) and metrics["delta/test/latency/p50_s"] == pytest.approx(-0.02)
    counts = [k for k in metrics if k.startswith("delta/") and k.endswith(("/answers", "/generated", "/examples"))]
    assert counts == [] and any(k.endswith("/answers") for k in metrics)  # counted, with no delta


def test_adapter_size_counts_the_adapters_own_files_only(tmp_path):
    """What serving ships: the weights and configs each backend writes (peft's, QLoRA's 4-bit base,
    mlx-lm's LoRA layout, the MLX soft prompt's), not peft's model card or anything else in the folder."""
    from ccexp.run import adapter_size_mb

    own = {"adapter_config.json": 100, "adapter_model.safetensors": 4000, "quantization.json": 20,
           "adapters.safetensors": 3000, "prompt_embeddings.safetensors": 500, "prompt_config.json": 10}
    for name, size in own.items():
        (tmp_path / name).write_bytes(b"x" * size)
    for name in ("README.md", "config.yaml", "environment.json", "metrics.json", "predictions.jsonl", "csv/x.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"y" * 777)
    assert adapter_size_mb(tmp_path) == sum(own.values()) / 2**20


@pytest.mark.parametrize("trained,given", [("mlx", "cpu"), ("cpu", "mlx"), ("mlx", "auto")])
def test_an_adapter_of_the_other_backend_family_is_refused_before_loading(trained, given, tmp_path, capsys):
    """mlx-lm's adapter files are not peft's: a torch backend loading an MLX run's adapter (or the
    reverse) failed only after the model loaded, with a missing-file line that hid why."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST, f"backend={trained}"), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", f"backend.name={given}"]) == 2
    kind = "an mlx-lm adapter" if trained == "mlx" else "a peft adapter"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: argument 'backend.name={given}': the adapter is {kind} (the run's backend={trained}); "
        f"evaluate it with backend.name={'mlx' if trained == 'mlx' else 'cpu or cuda'}")
    assert not (tmp_path / "eval").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trained,given", [("cuda", None), ("cpu", "cuda")])
def test_cuda_without_a_gpu_names_the_key_evaluate_takes(trained, given, tmp_path, capsys):
    """A GPU run's adapter evaluated where there is none: training's advice (backend=cpu) is a
    group swap evaluate refuses; the line names backend.name=cpu, before any eval dir is made."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    cfg = compose_cfg(*FAST)
    cfg.backend.name = trained
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", *([f"backend.name={given}"] if given else [])]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ccexp.evaluate: error: backend.name=cuda{'' if given else ' (the run trained on it)'}: torch sees no "
        "CUDA GPU on this machine; evaluate with backend.name=cpu (or backend.name=auto)")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_evaluate_help_prints_usage_and_its_keys(flag, capsys):
    """--help is a question, not a bad argument: the usage, what it does and its keys, exit 0."""
    from ccexp.evaluate.__main__ import USAGE

    assert evaluate_main([flag]) == 0
    printed = capsys.readouterr()
    assert printed.err == "" and printed.out.startswith(USAGE)
    assert all(key in printed.out for key in ("adapter=", "out=", "key=value"))


class ConstantAnswers(ScriptedBackend):
    """Answers every question with train's most common label (a score's median) per field."""

    def __init__(self, examples: list[dict], train: list[dict]):
        super().__init__(examples)
        from ccexp.data.card import constant_guesses
        from ccexp.scoring import field_checks

        self.guesses = constant_guesses({"train": train}, field_checks(validate(compose_cfg(*FAST)).eval))

    def generate(self, prompts, max_new_tokens, adapter=True):
        from ccexp.data.tasks import TASK_FIELDS

        tasks = [self.by_prompt[m[1]["content"]]["task"] for m in prompts]
        texts = [json.dumps({name: self.guesses[name] for name in TASK_FIELDS[task]}) for task in tasks]
        return Generation(texts, [0.01] * len(texts), [5] * len(texts), [0.002] * len(texts))


def test_the_floor_is_what_one_constant_answer_scores_on_the_generated_answers():
    """A run's table said "task accuracy 0.111, +0.111 ✓" against a base model that answers in
    prose, while one constant answer per field scored 0.167 on the same test set (describe's floor,
    which no run recorded). floor/test/... is that answer's accuracy on the generated examples (not
    the whole split), counted as a model's answers are: a model answering it scores the floor."""
    rc = validate(compose_cfg(*FAST, "data_size.test=18", "eval.generate_examples=12", "eval.baseline=false",
                              "eval.latency_examples=0"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    metrics, predictions = evaluate(ConstantAnswers(splits["test"], splits["train"]), splits, rc.eval)
    assert len(predictions) == 12 < len(splits["test"])
    tasks = {r["task"] for r in predictions}
    assert {k for k in metrics if k.startswith("floor/")} == {"floor/test/acc"} | {f"floor/test/task/{t}/acc" for t in tasks}
    for task in tasks:
        assert metrics[f"floor/test/task/{task}/acc"] == pytest.approx(metrics[f"test/task/{task}/acc"]), task
    assert metrics["floor/test/acc"] == pytest.approx(metrics["test/acc"])
    assert 0 < metrics["floor/test/acc"] < 1 and not any(k.startswith("delta/floor") for k in metrics)


def test_a_reply_task_leaves_test_acc_without_a_floor():
    """A reply's exact text has no constant answer: the other tasks keep theirs, test/acc gets none."""
    rc = validate(compose_cfg(*FAST, "+task_mix.weights.reply=1", "data_size.test=14", "eval.generate_examples=14",
                              "eval.baseline=false", "eval.latency_examples=0"))
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    metrics, predictions = evaluate(ScriptedBackend(splits["test"]), splits, rc.eval)
    assert "reply" in {r["task"] for r in predictions}
    assert "floor/test/acc" not in metrics and "floor/test/task/reply/acc" not in metrics
    assert "floor/test/task/churn/acc" in metrics


def test_the_run_table_shows_the_floor_and_says_when_accuracy_is_not_above_it(tmp_path):
    from rich.console import Console

    from ccexp.report import print_summary

    metrics = {"test/acc": 0.111, "baseline/test/acc": 0.0, "floor/test/acc": 0.167,
               "test/task/churn/acc": 0.0, "baseline/test/task/churn/acc": 0.0, "floor/test/task/churn/acc": 0.333,
               "test/json_valid": 0.889, "baseline/test/json_valid": 0.0}
    console = Console(record=True, width=200)
    print_summary(metrics, tmp_path, console)
    text = console.export_text()
    assert "│ task accuracy (mean) │ 0.000 │      0.111 │ +0.111 ✓ │ 0.167 │" in text
    assert "│   churn accuracy     │ 0.000 │      0.000 │   +0.000 │ 0.333 │" in text
    assert "│ valid JSON rate      │ 0.000 │      0.889 │ +0.889 ✓ │       │" in text
    assert "task accuracy 0.111 is not above it: the model has not yet learned to read the calls" in text
    console = Console(record=True, width=200)
    print_summary({**metrics, "test/acc": 0.5}, tmp_path, console)
    assert "a model must beat it to have read the calls" in console.export_text()
    console = Console(record=True, width=200)
    print_summary({"test/acc": 0.5, "baseline/test/acc": 0.0}, tmp_path, console)  # an older run's metrics
    assert "floor" not in console.export_text()


def test_a_quoted_home_in_adapter_or_out_is_the_users_home(tmp_path, monkeypatch):
    """out=~/evals (quoted, or in zsh, the shell leaves ~ as it is) wrote the evaluation into a
    folder named ~ in the current one; adapter=~/run was not found."""
    from ccexp.evaluate.__main__ import parse_args

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("{}")
    assert parse_args(["adapter=~/run", "out=~/evals"])[:2] == (tmp_path / "run", tmp_path / "evals")


def test_an_evaluation_refused_before_it_writes_leaves_no_eval_dir(tmp_path, capsys, tiny_dir):
    """An answer cap refused once the model dir is known (the run dir's lock already taken) left
    <run>/eval/<time>/ holding only .ccexp.lock: the empty-dir cleanup saw a file in it."""
    from omegaconf import OmegaConf

    (tmp_path / "adapter").mkdir()
    OmegaConf.save(compose_cfg(*FAST), tmp_path / "config.yaml", resolve=True)
    assert evaluate_main([f"adapter={tmp_path}", "eval.max_new_tokens=2000"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("ccexp.evaluate: error: eval.max_new_tokens=2000: ")
    assert not (tmp_path / "eval").exists()


def test_an_evaluations_dir_given_as_adapter_names_the_run_it_scored(tmp_path, capsys):
    """adapter=<run>/eval/<time> (an evaluation's dir, which has a config.yaml but no adapter/) was
    told its run "stopped before training finished" and cannot be resumed: it is an evaluation, and
    the run dir it scored is what adapter= takes."""
    evaluation = tmp_path / "run" / "eval" / "2026-12-07_06-20-16"
    evaluation.mkdir(parents=True)
    (evaluation / "config.yaml").write_text("model: {name: tiny}\n")
    (evaluation / "metrics.json").write_text(json.dumps({"status": "finished", "time/load_s": 1.0}))
    (evaluation / "environment.json").write_text(json.dumps({"adapter": str(tmp_path / "run" / "adapter")}))
    assert evaluate_main([f"adapter={evaluation}"]) == 2
    assert capsys.readouterr().err == (
        f"ccexp.evaluate: error: {evaluation / 'adapter'}: not found; {evaluation} is an evaluation's dir: expected "
        f"the run dir it scored, adapter={tmp_path / 'run'}\n")
    (evaluation / "environment.json").unlink()  # an evaluation from before environment.json named the adapter
    assert evaluate_main([f"adapter={evaluation}"]) == 2
    assert capsys.readouterr().err == (
        f"ccexp.evaluate: error: {evaluation / 'adapter'}: not found; {evaluation} is an evaluation's dir: expected "
        "the run dir it scored\n")
