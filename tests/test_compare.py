"""python -m ccexp.compare on hand-written run dirs: known numbers, known best marks and
recommendation; missing metrics, failed runs and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ccexp.compare import higher_is_better, main

METHODS = {  # the fields each method's config carries, as run() writes them
    "lora": {"name": "lora", "lr": 1e-3, "r": 16, "alpha": 32},
    "qlora": {"name": "qlora", "lr": 1e-3, "r": 16, "alpha": 32, "quant_type": "nf4"},
    "prompt_tuning": {"name": "prompt_tuning", "lr": 3e-2, "num_virtual_tokens": 20},
}
COMPARE = {"metric": "test/acc", "direction": "maximize",
           "constraints": ["test/latency/p50_s <= 1.0", "adapter/size_mb <= 100"],
           "headline": ["test/acc", "test/*/macro_f1", "val/loss", "test/latency/p50_s", "adapter/size_mb",
                        "memory/peak_mb"]}


def make_run(path: Path, method: str, metrics: dict, task_mix: str = "all", compare: dict = COMPARE,
             weights: dict | None = None, seed: int = 42, **fields) -> Path:
    path.mkdir(parents=True)
    config = {"model": {"name": "tiny"}, "method": {**METHODS[method], **fields},
              "task_mix": {"name": task_mix, **({"weights": weights} if weights else {})},
              "eval": {"generate_examples": 18}, "seed": seed, "compare": compare}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.json").write_text(json.dumps({"status": "finished", **metrics}))
    return path


def history(*losses: float) -> list[dict]:
    return [{"step": 2 * (i + 1), "val_loss": v} for i, v in enumerate(losses)]


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Three finished runs and a failed one. qlora is the most accurate but over the latency
    budget; lora is the best within it; prompt_tuning is fastest and smallest."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {
        "test/acc": 0.60, "test/issue_category/acc": 0.7, "test/quality_score/acc": 0.5,
        "test/issue_category/macro_f1": 0.55, "val/loss": 1.2, "test/latency/p50_s": 0.8,
        "adapter/size_mb": 7.07, "memory/peak_mb": 900.0, "train/val_history": history(2.0, 1.5, 1.2)})
    make_run(root / "1", "qlora", {
        "test/acc": 0.65, "test/issue_category/acc": 0.8, "test/quality_score/acc": 0.5,
        "test/issue_category/macro_f1": 0.61, "val/loss": 1.1, "test/latency/p50_s": 1.4,
        "adapter/size_mb": 7.07, "memory/peak_mb": 600.0, "train/val_history": history(2.1, 1.4, 1.1)})
    make_run(root / "2", "prompt_tuning", {  # no memory/peak_mb, no macro F1: shown as "-"
        "test/acc": 0.40, "test/issue_category/acc": 0.4, "test/quality_score/acc": 0.3, "val/loss": 2.0,
        "test/latency/p50_s": 0.5, "adapter/size_mb": 0.05, "train/val_history": history(2.5, 2.2, 2.0)})
    failed = make_run(root / "3", "qlora", {"val/loss": float("nan")})
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    (failed / "error.txt").write_text("RuntimeError: boom\n")
    (failed / "traceback.txt").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    return root


def test_report_marks_the_best_and_recommends_within_the_constraints(sweep, capsys):
    assert main([str(sweep)]) == 0
    md = (sweep / "compare.md").read_text()
    table = {line.split(" | ")[0].strip("| `"): line for line in md.splitlines() if line.startswith("| `")}
    # columns: run, status, method, then the headline metrics that some run reports
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert header == ("| run | status | method | test/acc ↑ | test/issue_category/macro_f1 ↑ | val/loss ↓ | "
                      "test/latency/p50_s ↓ | adapter/size_mb ↓ | memory/peak_mb ↓ |")
    assert table["0"] == "| `0` | finished | lora | 0.600 | 0.550 | 1.200 | 0.800 | 7.070 | 900.0 |"
    assert table["1"] == "| `1` | finished | qlora | **0.650** | **0.610** | **1.100** | 1.400 | 7.070 | **600.0** |"
    assert table["2"] == "| `2` | finished | prompt_tuning | 0.400 | - | 2.000 | **0.500** | **0.050** | - |"
    assert table["3"] == "| `3` | failed | qlora | - | - | - | - | - | - |"
    assert "Bold: the best finished run per column within each scenario (" in md

    recommendation = md.split("## Recommendation")[1].split("## Runs")[0]
    assert "**Recommend lora** — run `0` (method=lora) has the highest test/acc, 0.600" in recommendation
    assert "meets test/latency/p50_s 0.800 <= 1 and adapter/size_mb 7.070 <= 100" in recommendation
    assert "Runner-up: prompt_tuning (`2`, method=prompt_tuning) with 0.400, 0.200 lower." in recommendation
    assert "Outside the constraints: `1` (method=qlora): test/latency/p50_s 1.400 > 1" in recommendation
    assert "1 run failed and is excluded: `3` (method=qlora): RuntimeError: boom." in recommendation
    assert "- `3` (method=qlora): RuntimeError: boom (traceback: `3/traceback.txt`)" in md

    rows = {r["run"]: r for r in csv.DictReader((sweep / "compare.csv").open())}
    assert rows["1"]["best_in"] == "test/acc;test/issue_category/macro_f1;val/loss;memory/peak_mb"
    assert rows["2"]["memory/peak_mb"] == "" and float(rows["2"]["adapter/size_mb"]) == 0.05
    assert rows["3"]["status"] == "failed" and rows["3"]["error"] == "RuntimeError: boom"
    from ccexp.compare import PLOT_FILES  # what a new report removes first: every plot one may write

    assert sorted(p.name for p in sweep.glob("*.png")) == sorted(PLOT_FILES)
    for png in PLOT_FILES:
        assert (sweep / png).stat().st_size > 10_000, png
        assert f"]({png})" in md
    out = capsys.readouterr().out
    assert "Recommend lora" in out and "runs side by side" in out


def test_flags_override_the_recorded_constraints(sweep, tmp_path):
    assert main([str(sweep), "--out", str(tmp_path / "a"), "--no-constraints", "--no-plots"]) == 0
    md = (tmp_path / "a" / "compare.md").read_text()
    assert "**Recommend qlora** — run `1`" in md and "Runner-up: lora (`0`" in md
    assert not list((tmp_path / "a").glob("*.png"))
    assert main([str(sweep), "--out", str(tmp_path / "b"), "--constraint", "adapter/size_mb<=0.01"]) == 0
    md = (tmp_path / "b" / "compare.md").read_text()
    assert "**No run meets the constraints** (adapter/size_mb <= 0.01)" in md
    assert "Without them the best would be qlora (`1`, test/acc 0.650)" in md
    assert main([str(sweep), "--out", str(tmp_path / "c"), "--metric", "val/loss", "--direction", "minimize",
                 "--constraint", "test/latency/p50_s<=1"]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "**Recommend lora** — run `0` (method=lora) has the lowest val/loss, 1.200" in md
    # A constraint the experiment recorded that these runs do not report is said, not applied.
    for run in ("0", "1", "2", "3"):
        config = yaml.safe_load((sweep / run / "config.yaml").read_text())
        config["compare"]["constraints"] = [*COMPARE["constraints"], "test/bleu >= 0.2"]
        (sweep / run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([str(sweep), "--out", str(tmp_path / "d"), "--no-plots"]) == 0
    assert "Not checked: `test/bleu >= 0.2`, no run reports test/bleu." in (tmp_path / "d" / "compare.md").read_text()
    # Reported by every run as null (no answer gave a number): checked, and no run meets it.
    for run in ("0", "1", "2"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        (sweep / run / "metrics.json").write_text(json.dumps({**metrics, "test/quality_score/mae": None}))
    assert main([str(sweep), "--out", str(tmp_path / "e"), "--no-plots",
                 "--constraint", "test/quality_score/mae<=5"]) == 0
    md = (tmp_path / "e" / "compare.md").read_text()
    assert "**No run meets the constraints** (test/quality_score/mae <= 5)" in md
    assert "`0` (method=lora): no number for test/quality_score/mae" in md and "Not checked" not in md


def test_the_runner_ups_gap_keeps_its_digits(tmp_path):
    """0.5 against 0.5004 is not "0.000 lower"; a count's gap is a count."""
    compare = {**COMPARE, "constraints": []}
    make_run(tmp_path / "s" / "0", "lora", {"test/acc": 0.5004, "params/trainable": 1280}, compare=compare)
    make_run(tmp_path / "s" / "1", "prompt_tuning", {"test/acc": 0.5, "params/trainable": 14336}, compare=compare)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "a"), "--no-plots"]) == 0
    assert "with 0.500, 4.00e-04 lower." in (tmp_path / "a" / "compare.md").read_text()
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "b"), "--no-plots", "--metric", "params/trainable",
                 "--direction", "minimize"]) == 0
    assert "with 14,336, 13,056 higher." in (tmp_path / "b" / "compare.md").read_text()


def test_one_recommendation_per_scenario(tmp_path):
    """Methods swept over two task mixes: the method is picked per task mix."""
    root = tmp_path / "sweep"
    for i, (method, mix, acc) in enumerate([("lora", "all", 0.5), ("prompt_tuning", "all", 0.6),
                                            ("lora", "classification", 0.9), ("prompt_tuning", "classification", 0.7)]):
        make_run(root / str(i), method, {"test/acc": acc, "adapter/size_mb": 1.0}, task_mix=mix,
                 compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "**For task_mix=all:** **Recommend prompt_tuning** — run `1`" in md
    assert "**For task_mix=classification:** **Recommend lora** — run `2`" in md
    assert "| run | status | method | task_mix | test/acc ↑ | adapter/size_mb ↓ |" in md


def test_searched_values_keep_their_digits_and_the_logger_is_no_scenario(tmp_path):
    """An Optuna search's learning rates: 0.0013 and 0.0016 are two settings in the report (not
    both 0.001 or 0.002), compare.csv has them as config.yaml does; runs logged differently are
    one scenario."""
    root = tmp_path / "sweep"
    for i, (lr, acc, logger) in enumerate([(0.0013010112638152042, 0.5, "wandb"), (0.0016, 0.6, "none")]):
        run = make_run(root / str(i), "lora", {"test/acc": acc, "adapter/size_mb": 1.0},
                       compare={**COMPARE, "constraints": []}, lr=lr)
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "logger": {"name": logger},
                                                         "experiment_name": f"launch{i}"}))
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "| `0` | finished | 0.001301 |" in md and "| `1` | finished | 0.0016 |" in md
    assert "**Recommend lora** — run `1` (method.lr=0.0016)" in md and "For " not in md
    with open(root / "compare.csv") as f:
        assert [row["method.lr"] for row in csv.DictReader(f)] == ["0.0013010112638152042", "0.0016"]


def test_a_mistyped_recorded_metric_gets_the_nearest_keys(tmp_path):
    """compare.metric=test/acx given to the sweep: its report says what was meant."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5}, compare={**COMPARE, "metric": "test/acx"})
    assert main([str(root), "--no-plots"]) == 0
    assert ("No recommendation: no finished run reports test/acx (compare.metric) (did you mean test/acc?)."
            in (root / "compare.md").read_text())


def test_all_failed_or_objective_missing_says_so(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"val/loss": 1.0})
    make_run(root / "1", "qlora", {"val/loss": 1.1})
    assert main([str(root), "--no-plots"]) == 0
    assert ("No recommendation: no finished run reports test/acc (compare.metric) (see a run's metrics.json for "
            "the keys).") in (root / "compare.md").read_text()
    for run in ("0", "1"):
        (root / run / "metrics.json").write_text(json.dumps({"status": "failed", "error": "ValueError: x"}))
    assert main([str(root), "--no-plots"]) == 0
    assert "No recommendation: all 2 runs failed." in (root / "compare.md").read_text()


def test_killed_runs_are_listed_not_dropped(sweep):
    """A run killed while training (metrics.json still says running, as run() writes it when
    training starts), or before (a Hydra job dir with no metrics.json), is counted and named."""
    killed = make_run(sweep / "4", "lora", {})
    (killed / "metrics.json").write_text(json.dumps({"status": "running"}))
    early = make_run(sweep / "5", "lora", {})  # killed before run() wrote config.yaml and metrics.json
    (early / ".hydra").mkdir()
    (early / "config.yaml").rename(early / ".hydra" / "config.yaml")
    (early / "metrics.json").unlink()
    assert main([str(sweep), "--no-plots"]) == 0
    md = (sweep / "compare.md").read_text()
    assert "6 runs: 3 finished, 1 failed, 2 never ended (killed, or still running)." in md
    assert "3 runs did not finish and are excluded" in md
    assert ("- `4` (method=lora): it never ended (metrics.json still says running): killed, or still running"
            in md)
    assert "- `5` (method=lora): no metrics.json: stopped before training began (killed while loading?)" in md


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"ccexp.compare: error: {tmp_path / 'empty'}: no runs found (no metrics.json or error.txt below it)\n"
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    assert main([str(tmp_path), "--constraint", "latency is low"]) == 2
    assert "expected 'METRIC <= NUMBER'" in capsys.readouterr().err
    for metric in ("", " "):
        assert main([str(tmp_path), "--metric", metric]) == 2
        assert capsys.readouterr().err == ("ccexp.compare: error: --metric: expected a metrics.json key such as "
                                           f"test/acc, got {metric!r}\n")
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: one line too, the same prefix
        main([str(tmp_path), "--no-such-flag"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "ccexp.compare: error: unrecognized arguments: --no-such-flag (--help for usage)"]
    bad = make_run(tmp_path / "sweep" / "0", "lora", {"test/acc": 0.5})
    (bad / "metrics.json").write_text('{"test/acc": 0.5,')
    proc = subprocess.run([sys.executable, "-m", "ccexp.compare", str(tmp_path / "sweep")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"ccexp.compare: error: {bad / 'metrics.json'}: not valid JSON "
                                        "(Expecting property name enclosed in double quotes at line 1 column 18)"]
    (bad / "metrics.json").write_text('{"status": "finished", "test/acc": 0.5}')
    (bad / "config.yaml").write_text("method:\n  name: [lora\n")
    assert main([str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: {bad / 'config.yaml'}: not valid YAML (line 3 "
                                       "column 1: expected ',' or ']', but got '<stream end>')\n")


def test_metric_directions_from_key_names():
    lower = ["val/loss", "val/ppl", "test/quality_score/mae", "test/latency/p50_s", "test/latency/p95_s",
             "adapter/size_mb", "memory/peak_mb", "time/total_s"]
    higher = ["test/acc", "test/json_valid", "test/reply/bleu", "test/reply/rougeL", "test/issue_category/macro_f1",
              "train/tokens_per_s", "test/task/csat/acc", "test/quality_score/within_10", "test/csat/parse_rate",
              "test/coaching/theme_coverage"]
    assert [higher_is_better(k) for k in lower] == [False] * len(lower)
    assert [higher_is_better(k) for k in higher] == [True] * len(higher)
    assert higher_is_better("params/trainable") is None
    # How much work a run did is no score: more generated answers is neither better nor worse.
    counts = ["test/generated", "test/answer_tokens", "test/latency/examples", "test/task/csat/answers", "train/steps"]
    assert [higher_is_better(k) for k in counts] == [None] * len(counts)


def test_the_run_summary_marks_improvements_by_the_same_rule():
    """The end-of-run table ticks a change in the direction higher_is_better gives its key."""
    from rich.console import Console

    from ccexp.report import print_summary

    metrics = {"val/ppl": 2.0, "baseline/val/ppl": 8.0, "test/acc": 0.5, "baseline/test/acc": 0.1,
               "test/quality_score/mae": 30.0, "baseline/test/quality_score/mae": 20.0, "test/csat/mae": 1.0}
    console = Console(record=True, width=200)
    print_summary(metrics, Path("run"), console)
    rows = {line.split("│")[1].strip(): line.split("│")[4].strip() for line in console.export_text().splitlines()
            if line.count("│") == 5}
    assert rows == {"validation perplexity": "-6.000 ✓", "task accuracy (mean)": "+0.400 ✓",
                    "quality score MAE": "+10.000", "CSAT MAE": ""}  # no baseline: no change to mark


def test_metric_flag_brings_its_direction(sweep, tmp_path, capsys):
    """--metric val/loss alone ranks lowest first, as its column's arrow says (the recorded
    direction is test/acc's maximize); a key that says nothing needs --direction."""
    assert main([str(sweep), "--out", str(tmp_path / "a"), "--metric", "val/loss", "--no-constraints", "--no-plots"]) == 0
    assert "**Recommend qlora** — run `1` (method=qlora) has the lowest val/loss, 1.100" in (
        tmp_path / "a" / "compare.md").read_text()
    capsys.readouterr()
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    (sweep / "0" / "metrics.json").write_text(json.dumps({**metrics, "train/steps": 12}))
    assert main([str(sweep), "--metric", "train/steps"]) == 2
    assert capsys.readouterr().err == ("ccexp.compare: error: --metric train/steps: its key does not say whether "
                                       "higher is better; give --direction maximize or minimize\n")
    assert main([str(sweep), "--metric", "train/steps", "--direction", "minimize", "--no-plots",
                 "--out", str(tmp_path / "b")]) == 0
    # A direction against its key, on the command line or recorded by the runs, ranks nothing.
    assert main([str(sweep), "--metric", "val/loss", "--direction", "maximize"]) == 2
    assert capsys.readouterr().err == ("ccexp.compare: error: --direction: maximize, but lower val/loss is better; "
                                       "expected --direction minimize\n")
    for run in ("0", "1", "2"):
        config = (sweep / run / "config.yaml").read_text()
        (sweep / run / "config.yaml").write_text(config.replace("metric: test/acc", "metric: val/loss"))
    assert main([str(sweep), "--no-plots", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: compare config recorded in {sweep / '0' / 'config.yaml'}: "
                                       "compare.direction: maximize, but lower val/loss is better; expected "
                                       "compare.direction=minimize\n")


def test_flag_keys_no_run_reports_are_typos(sweep, capsys):
    """A typed key that no run reports stops with the nearest keys, not a report ranked by
    nothing or a limit left unchecked."""
    for argv, error in ((["--metric", "val/los"], "--metric val/los: no finished run reports val/los (did you mean val/loss?)"),
                        (["--metric", "test/accc", "--direction", "maximize"],
                         "--metric test/accc: no finished run reports test/accc (did you mean test/acc?)"),
                        (["--constraint", "test/latncy/p50_s<=0.01"],
                         "--constraint 'test/latncy/p50_s<=0.01': no finished run reports test/latncy/p50_s (did you "
                         "mean test/latency/p50_s?)"),
                        (["--metric", "train/val_history", "--direction", "minimize"],
                         "--metric train/val_history: train/val_history is not a number in the runs' metrics.json (a "
                         "list); expected a metric to rank by or limit")):
        assert main([str(sweep), "--no-plots", *argv]) == 2
        assert capsys.readouterr().err == f"ccexp.compare: error: {error}\n"
    # With no finished run there is no telling a typo: the report says why none finished.
    for run in ("0", "1", "2"):
        (sweep / run / "metrics.json").write_text(json.dumps({"status": "failed", "error": "ValueError: x"}))
    assert main([str(sweep), "--no-plots", "--metric", "val/loss"]) == 0
    assert "No recommendation: all 4 runs failed." in (sweep / "compare.md").read_text()


def test_fields_inside_a_swept_group_are_not_axes(tmp_path):
    """task_mix swept: task_mix.weights.* follow from the choice, so neither columns nor scenarios."""
    root = tmp_path / "sweep"
    for i, (method, mix, weights) in enumerate([("lora", "all", {"csat": 1, "churn": 1}), ("lora", "reply", {"reply": 1}),
                                                ("prompt_tuning", "all", {"csat": 1, "churn": 1}),
                                                ("prompt_tuning", "reply", {"reply": 1})]):
        make_run(root / str(i), method, {"test/acc": 0.1 * i, "adapter/size_mb": 1.0}, task_mix=mix,
                 compare={**COMPARE, "constraints": []}, weights=weights)
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "| run | status | method | task_mix | test/acc ↑ | adapter/size_mb ↓ |" in md
    assert "**For task_mix=all:** **Recommend prompt_tuning**" in md and "weights" not in md


def test_sweeps_judged_differently_need_a_metric(tmp_path, capsys):
    make_run(tmp_path / "a" / "0", "lora", {"test/acc": 0.5, "test/reply/rougeL": 0.2})
    make_run(tmp_path / "b" / "0", "prompt_tuning", {"test/acc": 0.4, "test/reply/rougeL": 0.3},
             compare={"metric": "test/reply/rougeL", "direction": "maximize", "constraints": [],
                      "headline": ["test/reply/rougeL"]})
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots"]) == 2
    assert capsys.readouterr().err == ("ccexp.compare: error: the runs record different compare.metric (a/0: "
                                       "'test/acc', b/0: 'test/reply/rougeL'); give python -m ccexp.compare --metric "
                                       "to judge them alike\n")
    out = tmp_path / "both"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "test/reply/rougeL", "--out", str(out),
                 "--no-plots"]) == 2  # their constraints differ too: not the first run's, silently
    assert "different compare.constraints" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "test/reply/rougeL", "--out", str(out),
                 "--no-constraints", "--no-plots"]) == 0
    md = (out / "compare.md").read_text()
    assert "**Recommend prompt_tuning** — run `b/0`" in md
    assert "test/acc ↑" in md and "test/reply/rougeL ↑" in md  # both sweeps' headline columns
    assert "compare" not in next(line for line in md.splitlines() if line.startswith("| run"))
    # Differing only in constraints: the flag that settles them is enough, and is the one named.
    make_run(tmp_path / "c" / "0", "lora", {"test/acc": 0.5}, compare={**COMPARE, "constraints": []})
    make_run(tmp_path / "c" / "1", "qlora", {"test/acc": 0.6})
    capsys.readouterr()
    assert main([str(tmp_path / "c"), "--no-plots"]) == 2
    assert "give python -m ccexp.compare --constraint or --no-constraints to judge them alike" in capsys.readouterr().err
    assert main([str(tmp_path / "c"), "--no-plots", "--no-constraints"]) == 0


def test_evaluations_inside_runs_are_left_out_and_said(sweep, capsys):
    make_run(sweep / "0" / "eval" / "2026-12-02_04-48-15", "lora", {"test/acc": 0.99})
    assert main([str(sweep), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "left out 1 evaluation inside the runs" in out and "name it to compare" in out
    assert "**Recommend lora** — run `0`" in (sweep / "compare.md").read_text()
    assert "0/eval" not in (sweep / "compare.md").read_text()
    assert main([str(sweep / "0" / "eval" / "2026-12-02_04-48-15"), str(sweep / "0"), "--out",
                 str(sweep / "named"), "--no-plots"]) == 0  # named, it is compared, and not said to be left out
    assert "0.990" in (sweep / "named" / "compare.md").read_text()
    assert "left out" not in capsys.readouterr().out


def test_a_run_and_its_evaluation_rank_side_by_side(tmp_path):
    """The run recorded data.train_path relative to where it started; its evaluation, anchored
    there. Read where they point, they are one scenario; named from above the run, 0 and
    0/eval/<time>, not . and eval/<time>."""
    compare = {**COMPARE, "constraints": []}
    run_dir = make_run(tmp_path / "sweep" / "0", "lora", {"test/acc": 0.5}, compare=compare)
    evaluation = make_run(run_dir / "eval" / "2026-12-07_06-20-16", "lora", {"test/acc": 0.6}, compare=compare)
    for directory, path in ((run_dir, "data/calls.csv"), (evaluation, "/project/data/calls.csv")):
        config = yaml.safe_load((directory / "config.yaml").read_text())
        (directory / "config.yaml").write_text(yaml.safe_dump({**config, "data": {"name": "csv", "train_path": path}}))
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    cwd: /project\n")
    assert main([str(run_dir), str(evaluation), "--out", str(tmp_path / "c"), "--no-plots"]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "For data.train_path" not in md
    assert "**Recommend lora** — run `0/eval/2026-12-07_06-20-16` " in md and "Runner-up: lora (`0`" in md



def test_an_evaluation_on_fewer_tasks_is_a_scenario_of_its_own(tmp_path):
    """The run scored csat and churn; its evaluation with task_mix.weights={churn: 1}, churn
    alone (same task_mix.name). A task a run's mix leaves out has weight 0, not "unknown": ranked
    as one scenario, the two test sets were compared as one, and no column said they differ."""
    compare = {**COMPARE, "constraints": []}
    run_dir = make_run(tmp_path / "0", "lora", {"test/acc": 0.5}, compare=compare, weights={"csat": 1, "churn": 1})
    make_run(run_dir / "eval" / "2026-12-07_06-20-16", "lora", {"test/acc": 0.6}, compare=compare,
             weights={"churn": 1})
    assert main([str(run_dir), str(run_dir / "eval" / "2026-12-07_06-20-16"), "--out", str(tmp_path / "c"),
                 "--no-plots"]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "**For task_mix.weights.csat=1:** **Recommend lora** — run `0` " in md
    assert "**For task_mix.weights.csat=0:** **Recommend lora** — run `0/eval/2026-12-07_06-20-16` " in md


def test_an_evaluation_written_elsewhere_names_the_run_it_scored(tmp_path):
    """out=<dir> puts an evaluation outside its run: its name no longer says whose adapter it
    scored, so the note does (environment.json records it); one in <run>/eval/ needs no saying."""
    compare = {**COMPARE, "constraints": []}
    run_dir = make_run(tmp_path / "0", "lora", {"test/acc": 0.5, "train/steps": 4}, compare=compare)
    inside = make_run(run_dir / "eval" / "2026-12-07_06-20-16", "lora", {"test/acc": 0.6}, compare=compare)
    elsewhere = make_run(tmp_path / "again", "lora", {"test/acc": 0.6}, compare=compare)
    for evaluation in (inside, elsewhere):
        (evaluation / "environment.json").write_text(json.dumps({"adapter": str((run_dir / "adapter").resolve())}))
    assert main([str(run_dir), str(inside), str(elsewhere), "--out", str(tmp_path / "c"), "--no-plots"]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    assert (f"Evaluations: `0/eval/2026-12-07_06-20-16`, `again` (of {run_dir.resolve()}) trained nothing"
            in md)

def test_precision_note_counts_the_answers_generated(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5, "test/generated": 18}, compare={**COMPARE, "constraints": []})
    make_run(root / "1", "prompt_tuning", {"test/acc": 0.4, "test/generated": 18}, compare={**COMPARE, "constraints": []})
    for run in ("0", "1"):  # asked for 500; the test split had 18
        config = yaml.safe_load((root / run / "config.yaml").read_text())
        config["eval"]["generate_examples"] = 500
        (root / run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([str(root), "--no-plots"]) == 0
    assert "test/acc comes from 18 generated test answers per run: one answer moves it by 0.056" in (
        root / "compare.md").read_text()


def test_precision_note_follows_the_mean_over_uneven_tasks(tmp_path):
    """test/acc is the mean of the tasks' accuracies: with 3 issue and 2 journey answers, one issue
    answer moves it by 1/(2*3) = 0.167, not 1/5."""
    root = tmp_path / "sweep"
    for run, method, acc in (("0", "lora", 1 / 6), ("1", "prompt_tuning", 0.0)):
        make_run(root / run, method, {"test/acc": acc, "test/generated": 5, "test/task/issue/answers": 3,
                                      "test/task/journey/answers": 2}, compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "0.167 higher" in md or "0.167 lower" in md
    assert "test/acc comes from 5 generated test answers per run: one answer moves it by 0.167 or more." in md


def test_a_field_rate_counts_the_answers_that_ask_for_it(tmp_path):
    """One task of six: 3 of the 18 answers carry issue_category, so one answer moves its rate by 1/3."""
    root = tmp_path / "sweep"
    for run, method, acc in (("0", "lora", 0.67), ("1", "prompt_tuning", 0.33)):
        make_run(root / run, method, {"test/issue_category/acc": acc, "test/issue_category/answers": 3,
                                      "test/generated": 18, "test/acc": 0.5}, compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots", "--metric", "test/issue_category/acc"]) == 0
    md = (root / "compare.md").read_text()
    assert ("test/issue_category/acc comes from 3 test answers that ask for issue_category per run: one answer "
            "moves it by 0.333 or more.") in md
    assert "test/issue_category/answers" not in md.split("## Runs")[1].splitlines()[2]  # a size, not a column


def test_the_valid_json_rate_counts_the_json_answers(tmp_path):
    """Reply drafts are free text: 15 of 18 answers are JSON, so one moves the rate by 1/15."""
    root = tmp_path / "sweep"
    for run, method, rate in (("0", "lora", 0.8), ("1", "prompt_tuning", 0.6)):
        make_run(root / run, method, {"test/json_valid": rate, "test/json/answers": 15, "test/generated": 18,
                                      "test/acc": 0.5}, compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots", "--metric", "test/json_valid"]) == 0
    assert ("test/json_valid comes from 15 test answers of JSON tasks per run: one answer moves it by 0.067 or "
            "more.") in (root / "compare.md").read_text()


def test_a_finished_run_without_the_metric_is_named(tmp_path):
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": float("nan"), "val/loss": 1.0}, compare={**COMPARE, "constraints": []})
    make_run(root / "1", "prompt_tuning", {"test/acc": 0.4}, compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "Not ranked: `0` (method=lora) reports no finite test/acc." in md
    assert "It is the only run ranked, so there is no runner-up." in md


def test_best_marks_and_ties_are_judged_within_a_scenario(tmp_path):
    """Two task mixes: each mix's best val/loss is bold (another mix's validation set is no
    rival); three runs tied on test/acc (2/3 summed two ways) say so, and the lowest val/loss wins."""
    root = tmp_path / "sweep"
    runs = [("lora", "all", 2 / 3, 0.9), ("qlora", "all", 0.6666666666666666, 0.8),
            ("prompt_tuning", "all", 1 - 1 / 3, 1.0), ("lora", "classification", 0.5, 0.3),
            ("prompt_tuning", "classification", 0.4, 0.5)]
    for i, (method, mix, acc, loss) in enumerate(runs):
        make_run(root / str(i), method, {"test/acc": acc, "val/loss": loss}, task_mix=mix,
                 compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    with open(root / "compare.csv") as f:
        best_in = {row["run"]: row["best_in"] for row in csv.DictReader(f)}
    assert best_in == {"0": "", "1": "val/loss", "2": "", "3": "test/acc;val/loss", "4": ""}  # all tied: none bold
    md = (root / "compare.md").read_text()
    assert ("**For task_mix=all:** **Recommend qlora** — run `1` (method=qlora, task_mix=all) ties 2 other runs for "
            "the highest test/acc, 0.667") in md
    assert "a tie: qlora is picked for its lower val/loss (0.800 vs 0.900)." in md


def test_models_swept_are_ranked_together(tmp_path):
    """model and method are choices, not scenarios: one recommendation over both models."""
    root = tmp_path / "sweep"
    for i, (model, acc) in enumerate([("tiny", 0.5), ("smollm2_135m", 0.7)]):
        run = make_run(root / str(i), "lora", {"test/acc": acc}, compare={**COMPARE, "constraints": []})
        config = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "model": {"name": model}}))
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "**Recommend lora** — run `1` (model=smollm2_135m) has the highest test/acc, 0.700" in md
    assert "Runner-up: lora (`0`, model=tiny) with 0.500, 0.200 lower." in md and "For " not in md


@pytest.mark.parametrize("block,error", [
    ({"metric": None}, "compare.metric: expected a metrics.json key such as test/acc, got None"),
    ({"headline": "test/acc"}, "compare.headline: expected a list of metric keys or patterns, got 'test/acc'"),
])
def test_bad_recorded_compare_blocks_are_one_line(tmp_path, capsys, block, error):
    make_run(tmp_path / "sweep" / "0", "lora", {"test/acc": 0.5}, compare={**COMPARE, **block})
    assert main([str(tmp_path / "sweep"), "--no-plots"]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: compare config recorded in "
                                       f"{tmp_path / 'sweep' / '0' / 'config.yaml'}: {error}\n")


def test_out_that_is_a_file_is_one_line(sweep, capsys):
    assert main([str(sweep), "--out", str(sweep / "0" / "metrics.json")]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: --out {sweep / '0' / 'metrics.json'}: a file, "
                                       "expected a directory (it is created if missing)\n")
    under = sweep / "0" / "metrics.json" / "sub"
    assert main([str(sweep), "--out", str(under)]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: --out {under}: {sweep / '0' / 'metrics.json'} is a "
                                       "file, so no directory can be made under it\n")
    assert main([str(sweep), "--out", "/proc/nope"]) == 2
    assert capsys.readouterr().err.startswith("ccexp.compare: error: --out /proc/nope: ")  # as root: cannot create


def test_tradeoff_plot_shows_the_budget_and_sizes_by_area(sweep, monkeypatch):
    """Every run well inside the latency budget: the budget line is still on the plot; marker
    areas are in proportion to the adapters' sizes (a floor keeps a tiny one visible)."""
    from ccexp.compare import plots as compare_plots

    for run in ("0", "1", "2"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        (sweep / run / "metrics.json").write_text(json.dumps({**metrics, "test/latency/p50_s": 0.1 + 0.01 * int(run)}))
    saved = {}
    monkeypatch.setattr(compare_plots, "_save", lambda fig, path: saved.setdefault(path.name, fig))
    assert main([str(sweep)]) == 0
    ax = saved["tradeoff.png"].axes[0]
    assert ax.get_xlim()[1] > 1.0 and [line.get_xdata()[0] for line in ax.lines] == [1.0]
    areas = [float(c.get_sizes()[0]) for c in ax.collections]
    assert areas == [pytest.approx(900.0), pytest.approx(900.0), pytest.approx(20.0)]  # 7.07, 7.07, 0.05 MB
    # The budget's label inside the axes, left of its line: on the right it ran under the legend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(saved["tradeoff.png"]).get_renderer()
    [label] = [t for t in ax.texts if t.get_text().startswith("budget")]
    box, axes = label.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert axes.x0 <= box.x0 and box.x1 <= axes.x1


def test_jobs_a_stopped_sweep_did_not_start_are_listed(tmp_path, capsys):
    """A sweep killed during job 1 of 4 (an experiment's hydra.sweeper.params times a command-line
    sweep): the report counts and names the two jobs that have no dir."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5})
    make_run(root / "1", "lora", {"test/acc": 0.6})
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None,
                    "params": {"method": "lora,prompt_tuning"}},
        "sweep": {"dir": str(root), "subdir": "${hydra.job.num}"},
        "overrides": {"task": ["model=tiny", "seed=1,2"]}}}))
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "2 runs: 2 finished, 0 failed; 2 more jobs of the sweep not started." in md
    assert ("- `2` (method=prompt_tuning seed=1): not started (no job dir): the sweep stopped before it, or it is "
            "still queued") in md
    assert "- `3` (method=prompt_tuning seed=2): not started" in md
    note = ("2 jobs of the sweep have not started, so the recommendation does not cover them: `2` "
            "(method=prompt_tuning seed=1), `3` (method=prompt_tuning seed=2); the sweep stopped before them, or "
            "they are still queued.")
    assert note in md.split("## Recommendation")[1].split("## Runs")[0]
    assert note.replace("`", "") in " ".join(capsys.readouterr().out.split())  # the terminal wraps it


def test_a_resumed_runs_times_are_said_and_never_best(tmp_path, capsys):
    """A run resumed at its last step took 5 s in this launch: not the fastest run, and said so."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5, "time/total_s": 5.6, "train/resumed_from_step": 40,
                                  "train/tokens_per_s": None}, compare={**COMPARE, "constraints": [],
                                                                        "headline": ["test/acc", "time/total_s"]})
    make_run(root / "1", "qlora", {"test/acc": 0.4, "time/total_s": 63.8, "train/resumed_from_step": 0},
             compare={**COMPARE, "constraints": [], "headline": ["test/acc", "time/total_s"]})
    make_run(root / "2", "prompt_tuning", {"test/acc": 0.3, "time/total_s": 70.0},
             compare={**COMPARE, "constraints": [], "headline": ["test/acc", "time/total_s"]})
    assert main([str(root), "--no-plots"]) == 0
    assert f"wrote compare.md, compare.csv to {root}" in capsys.readouterr().out
    with open(root / "compare.csv") as f:
        assert {row["run"]: row["best_in"] for row in csv.DictReader(f)} == {"0": "test/acc", "1": "time/total_s", "2": ""}
    assert ("Resumed: `0` (from step 40): time/ columns and training speed cover the resumed part only, and are "
            "never bold.") in (root / "compare.md").read_text()
    with pytest.raises(SystemExit) as stop:
        main([str(root), "--constraint", "test/acc>=0.1", "--no-constraints"])
    assert stop.value.code == 2
    assert "argument --no-constraints: not allowed with argument --constraint" in capsys.readouterr().err


def test_data_sizes_with_one_test_set_are_ranked_together(tmp_path):
    """data_size=tiny,small: different test sets, a scenario each; with one data_size.test, the
    training data's size is a choice ranked like the method."""
    for test_sizes, together in (((18, 188), False), ((188, 188), True)):
        root = tmp_path / str(together)
        for i, (size, train, val, test, acc) in enumerate([("tiny", 64, 12, test_sizes[0], 0.4),
                                                           ("small", 1500, 188, test_sizes[1], 0.6)]):
            run = make_run(root / str(i), "lora", {"test/acc": acc, "val/loss": 1.0 - acc},
                           compare={**COMPARE, "constraints": []})
            config = yaml.safe_load((run / "config.yaml").read_text())
            config["data_size"] = {"name": size, "train": train, "val": val, "test": test}
            (run / "config.yaml").write_text(yaml.safe_dump(config))
        assert main([str(root), "--no-plots"]) == 0
        md = (root / "compare.md").read_text()
        assert ("For data_size=" not in md) == together
        assert ("Runner-up: lora (`0`, data_size=tiny" in md) == together
    with open(tmp_path / "True" / "compare.csv") as f:  # val/loss over 12 and over 188 examples: no rivals
        assert [row["best_in"] for row in csv.DictReader(f)] == ["", "test/acc"]


def test_a_run_without_its_config_joins_a_scenario(tmp_path):
    """A job that failed before writing its config has no task mix: it is named among the failed
    runs of a scenario, and opens none of its own (nor adds keys to the others' labels)."""
    root = tmp_path / "sweep"
    for i, (method, mix, acc) in enumerate([("lora", "all", 0.5), ("lora", "classification", 0.7)]):
        make_run(root / str(i), method, {"test/acc": acc}, task_mix=mix, compare={**COMPARE, "constraints": []})
    (root / "2").mkdir()
    (root / "2" / "error.txt").write_text("RuntimeError: out of memory\n")
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert md.count("**For task_mix=") == 2 and "For task_mix=-" not in md and "eval." not in md.split("## Runs")[0]
    assert "1 run failed and is excluded: `2` (task_mix=-): RuntimeError: out of memory." in md


def test_a_failed_trials_recorded_typo_does_not_judge_the_study(tmp_path):
    """A search's first trial failed on objective.metric=val/los (compare.metric follows it); the
    fixed trials record val/loss: the finished runs' compare block judges, with no refusal."""
    root = tmp_path / "study"
    failed = make_run(root / "a_0", "lora", {}, compare={**COMPARE, "metric": "val/los", "direction": "minimize"})
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "objective.metric: 'val/los' ..."}))
    for i, loss in enumerate((0.5, 0.4)):
        make_run(root / f"b_{i}", "lora", {"val/loss": loss}, lr=1e-3 * (i + 1),
                 compare={**COMPARE, "metric": "val/loss", "direction": "minimize", "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    assert "Ranked by `val/loss` (minimize)" in (root / "compare.md").read_text()


def test_a_metric_typed_in_capitals_gets_the_key_meant(tmp_path, capsys):
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5})
    assert main([str(root), "--no-plots", "--metric", "TEST/ACC"]) == 2
    assert "no finished run reports TEST/ACC (did you mean test/acc?)" in capsys.readouterr().err


def test_times_from_different_machines_are_never_best(tmp_path, capsys):
    """A SLURM sweep's jobs on an H100 node and an A100 node: the faster GPU, not the faster run,
    would be bold. Where every run ran on one machine (or none recorded it), times are judged."""
    headline = {**COMPARE, "constraints": [], "headline": ["test/acc", "test/latency/p50_s", "train/tokens_per_s"]}
    node = {"cpu": "AMD EPYC 9654", "cpu_generation": "family 25 model 17", "threads": 16, "gpu_count": 1}
    root = tmp_path / "sweep"
    for name, method, gpu, latency in (("0", "lora", "NVIDIA H100", 0.2), ("1", "qlora", "NVIDIA A100", 0.5),
                                       ("2", "prompt_tuning", "NVIDIA A100", 0.4)):
        run = make_run(root / name, method, {"test/acc": 0.5 - int(name) / 10, "test/latency/p50_s": latency,
                                             "train/tokens_per_s": 1 / latency}, compare=headline)
        (run / "environment.json").write_text(json.dumps({"machine": {**node, "host": f"gpu{name}", "gpu": gpu}}))
    assert main([str(root), "--no-plots"]) == 0
    with open(root / "compare.csv") as f:
        assert {row["run"]: row["best_in"] for row in csv.DictReader(f)} == {"0": "test/acc", "1": "", "2": ""}
    note = ("Machines differ: `0` on AMD EPYC 9654 family 25 model 17 with NVIDIA H100; `1`, `2` on AMD EPYC 9654 "
            "family 25 model 17 with NVIDIA A100. Times, latencies and tokens/s compare the machines as much as the "
            "runs: none is bold (each run's is in its environment.json).")
    assert note in (root / "compare.md").read_text()
    assert note.replace("`", "") in " ".join(capsys.readouterr().out.split())  # the terminal wraps it
    # One kind of node (hosts differ): judged as before.
    (root / "0" / "environment.json").write_text(json.dumps({"machine": {**node, "host": "gpu0", "gpu": "NVIDIA A100"}}))
    assert main([str(root), "--no-plots"]) == 0
    with open(root / "compare.csv") as f:
        assert {row["run"]: row["best_in"] for row in csv.DictReader(f)} == {
            "0": "test/acc;test/latency/p50_s;train/tokens_per_s", "1": "", "2": ""}
    assert "Machines differ" not in (root / "compare.md").read_text()
    (root / "0" / "environment.json").write_text("{not json")
    assert main([str(root), "--no-plots"]) == 2
    assert capsys.readouterr().err.startswith(f"ccexp.compare: error: {root / '0' / 'environment.json'}: not valid JSON")


def test_training_curves_of_one_validation_each_keep_whole_steps(tmp_path, monkeypatch):
    """Runs validated once each, all at step 2: the axis had ticks 1.900 1.925 ... run together."""
    from ccexp.compare import plots as compare_plots

    for i, method in enumerate(("lora", "qlora")):
        make_run(tmp_path / "sweep" / str(i), method, {"test/acc": 0.5, "val/loss": 1.0 + i,
                                                        "train/val_history": [{"step": 2, "val_loss": 1.0 + i}]})
    saved = {}
    monkeypatch.setattr(compare_plots, "_save", lambda fig, path: saved.setdefault(path.name, fig))
    assert main([str(tmp_path / "sweep")]) == 0
    ticks = saved["training_curves.png"].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def set_config(run: Path, **groups) -> Path:
    """Merge ``groups`` ({"eval": {...}}) into the run's config.yaml, as another launch wrote it."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    for group, values in groups.items():
        config[group] = {**config.get(group, {}), **values}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_eval_settings_that_leave_the_answers_alone_are_no_scenario(tmp_path):
    """The README's sweep (eval.baseline=false) beside a `make run` output (baseline, latency
    examples): the same test questions scored alike, ranked together. A band that scores the
    answers differently is a scenario of its own."""
    compare = {**COMPARE, "constraints": []}
    root = tmp_path / "sweep"
    set_config(make_run(root / "0", "lora", {"test/acc": 0.5}, compare=compare),
               eval={"baseline": False, "latency_examples": 0, "batch_size": 4})
    set_config(make_run(root / "1", "prompt_tuning", {"test/acc": 0.4}, compare=compare),
               eval={"baseline": True, "latency_examples": 8, "batch_size": 8})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "For " not in md and "Runner-up: prompt_tuning (`1`" in md
    set_config(root / "0", eval={"quality_band": 10.0})
    set_config(root / "1", eval={"quality_band": 5.0})
    assert main([str(root), "--no-plots"]) == 0
    assert md.count("**Recommend") == 1 and (root / "compare.md").read_text().count("**For eval.quality_band=") == 2


def data_size_runs(root: Path, runs: list[tuple[str, str, dict]]) -> Path:
    """Runs of one test set (data_size.test=18) over tiny's 12 or small's 188 validation examples."""
    sizes = {"tiny": {"name": "tiny", "train": 64, "val": 12, "test": 18},
             "small": {"name": "small", "train": 1500, "val": 188, "test": 18}}
    for i, (method, size, metrics) in enumerate(runs):
        set_config(make_run(root / str(i), method, metrics, compare={**COMPARE, "constraints": []}),
                   data_size=sizes[size])
    return root


def test_val_metrics_are_not_ranked_across_validation_sets(tmp_path):
    """data_size=tiny,small with one test set: val/loss over 12 examples is no rival of val/loss
    over 188, neither as the metric ranked by nor as a tie-break."""
    root = data_size_runs(tmp_path / "sweep", [
        ("lora", "tiny", {"test/acc": 0.5, "val/loss": 0.3, "adapter/size_mb": 7.07}),
        ("prompt_tuning", "small", {"test/acc": 0.5, "val/loss": 0.4, "adapter/size_mb": 0.05})])
    assert main([str(root), "--no-plots", "--metric", "val/loss", "--out", str(tmp_path / "a")]) == 0
    md = (tmp_path / "a" / "compare.md").read_text()
    assert "**Recommend" not in md
    assert ("No recommendation: val/loss is over each run's own validation set, and these differ "
            "(data_size.val=12: `0`; data_size.val=188: `1`), so it ranks none of them against another; "
            "rank by a test/ metric.") in md
    assert main([str(root), "--no-plots", "--out", str(tmp_path / "b")]) == 0
    md = (tmp_path / "b" / "compare.md").read_text()
    assert "**Recommend prompt_tuning** — run `1`" in md
    assert ("a tie: prompt_tuning is picked for its smaller adapter/size_mb (0.050 vs 7.070); val/loss is not "
            "compared, their validation sets differ (188 vs 12 examples).") in md
    # One validation set: val/loss ranks, and breaks the tie.
    set_config(root / "1", data_size={"val": 12})
    assert main([str(root), "--no-plots", "--out", str(tmp_path / "c")]) == 0
    assert "a tie: lora is picked for its lower val/loss (0.300 vs 0.400)." in (tmp_path / "c" / "compare.md").read_text()


@pytest.mark.parametrize("losses,sizes,note", [
    # Only the winner has a val/loss: that is the rule that picked it, not run order.
    ((None, 0.8), (0.05, 7.07), "a tie: qlora is picked as only it has a val/loss (0.800)."),
    # Apart in the fourth digit: printed apart.
    ((0.9004, 0.9001), (7.07, 7.07), "a tie: qlora is picked for its lower val/loss (0.9001 vs 0.9004)."),
    # Equal to 12 digits: a tie on val/loss too, settled by the adapter's size.
    ((0.9, 0.9000000000000001), (7.07, 0.05), "a tie: qlora is picked for its smaller adapter/size_mb (0.050 vs 7.070)."),
])
def test_the_tie_note_names_the_rule_that_picked(tmp_path, losses, sizes, note):
    root = tmp_path / "sweep"
    for i, (method, loss, size) in enumerate(zip(("lora", "qlora"), losses, sizes)):
        metrics = {"test/acc": 0.5, "adapter/size_mb": size, **({"val/loss": loss} if loss is not None else {})}
        make_run(root / str(i), method, metrics, compare={**COMPARE, "constraints": []})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "**Recommend qlora** — run `1`" in md and note in md


def test_a_constraint_is_met_to_12_digits(tmp_path):
    """0.1 + 0.2 is 0.30000000000000004: it meets test/latency/p50_s <= 0.3."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.5, "test/latency/p50_s": 0.1 + 0.2},
             compare={**COMPARE, "constraints": ["test/latency/p50_s <= 0.3"]})
    assert main([str(root), "--no-plots"]) == 0
    assert "**Recommend lora** — run `0`" in (root / "compare.md").read_text()


def test_tradeoff_falls_back_to_test_acc_and_labels_it_so(sweep, monkeypatch):
    """Ranked by a MAE that every run reports as null: the plot's y axis is test/acc, labelled
    with test/acc's direction, and says what it stands in for; the recommendation says there is
    no number, not that the key is missing."""
    from ccexp.compare import plots as compare_plots

    for run in ("0", "1", "2"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        (sweep / run / "metrics.json").write_text(json.dumps({**metrics, "test/quality_score/mae": None}))
    saved = {}
    monkeypatch.setattr(compare_plots, "_save", lambda fig, path: saved.setdefault(path.name, fig))
    assert main([str(sweep), "--metric", "test/quality_score/mae", "--no-constraints"]) == 0
    ax = saved["tradeoff.png"].axes[0]
    assert ax.get_ylabel() == "test/acc (higher is better)"
    assert "test/acc in place of test/quality_score/mae: no finished run has a number for it" in ax.get_title()
    assert ("No recommendation: no finished run has a number for test/quality_score/mae (compare.metric)."
            in (sweep / "compare.md").read_text())


def test_plots_say_which_runs_they_leave_out(sweep, capsys):
    """A finished run without a latency is no point on tradeoff.png, one without a validation
    history no curve: compare.md and the terminal say so, a line per plot."""
    for run, key in (("2", "test/latency/p50_s"), ("1", "train/val_history")):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        (sweep / run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != key}))
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    (sweep / "0" / "metrics.json").write_text(json.dumps({**metrics, "test/latency/p50_s": None}))
    assert main([str(sweep), "--no-constraints"]) == 0
    lines = ["tradeoff.png leaves out `0` (no number for test/latency/p50_s), `2` (no test/latency/p50_s).",
             "training_curves.png leaves out `1` (no train/val_history)."]
    md = (sweep / "compare.md").read_text()
    assert all(f"- {line}" in md.split("## Plots")[1] for line in lines)
    assert "per_field_accuracy.png leaves" not in md
    out = capsys.readouterr().out
    assert all(line.replace("`", "") in out for line in lines)
    # A plot with nothing to show says why it is missing.
    for run in ("0", "1"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        (sweep / run / "metrics.json").write_text(json.dumps({**metrics, "test/latency/p50_s": None}))
    assert main([str(sweep), "--no-constraints"]) == 0
    assert ("- tradeoff.png: not drawn, no finished run has a number for test/latency/p50_s or time/eval_s."
            in (sweep / "compare.md").read_text())


def test_a_tradeoff_with_no_run_having_both_keys_says_so(tmp_path):
    """Run A with a latency but no test/acc, run B with test/acc but no latency: the line said
    "no finished run reports test/acc" (chosen from whether a latency key was present), though B
    reports it. With a latency in some run, it now says no run has both."""
    from ccexp.compare.plots import tradeoff
    from ccexp.compare.runs import Run
    from ccexp.config import CompareConfig

    runs = [Run(tmp_path / "a", "a", {"test/latency/p50_s": 0.2}), Run(tmp_path / "b", "b", {"test/acc": 0.7})]
    drawn, line = tradeoff(runs, [], CompareConfig(metric="test/acc", direction="maximize"), tmp_path / "tradeoff.png")
    assert not drawn
    assert line == "tradeoff.png: not drawn, no finished run has both test/latency/p50_s and test/acc."


def test_memory_from_different_starting_baselines_is_never_best(tmp_path, capsys):
    """A sweep's jobs in one process: a later job starts holding what earlier ones loaded (torch's
    libraries, allocator pages), so its peak is higher for that alone and the first job's would
    be bold. Where the starts are alike (or not recorded), the peaks are judged."""
    headline = {**COMPARE, "constraints": [], "headline": ["test/acc", "memory/peak_mb"]}
    root = tmp_path / "sweep"
    for name, method, start, peak in (("0", "lora", 440.0, 900.0), ("1", "qlora", 610.0, 1120.0)):
        make_run(root / name, method, {"test/acc": 0.5 - int(name) / 10, "memory/peak_mb": peak,
                                       "memory/start_mb": start}, compare=headline)
    assert main([str(root), "--no-plots"]) == 0
    with open(root / "compare.csv") as f:
        assert {row["run"]: row["best_in"] for row in csv.DictReader(f)} == {"0": "test/acc", "1": ""}
    note = ("Memory baselines differ: the runs started holding 440 MB (`0`) to 610 MB (`1`) (memory/start_mb; a "
            "sweep's later jobs in one process hold what earlier jobs loaded), so memory/ peaks compare those starts "
            "as much as the runs: none is bold.")
    assert note in (root / "compare.md").read_text()
    assert note.replace("`", "") in " ".join(capsys.readouterr().out.split())
    metrics = json.loads((root / "1" / "metrics.json").read_text())
    (root / "1" / "metrics.json").write_text(json.dumps({**metrics, "memory/start_mb": 450.0}))
    assert main([str(root), "--no-plots"]) == 0
    with open(root / "compare.csv") as f:
        assert {row["run"]: row["best_in"] for row in csv.DictReader(f)} == {"0": "test/acc;memory/peak_mb", "1": ""}
    assert "Memory baselines differ" not in (root / "compare.md").read_text()


def test_the_best_without_the_constraints_says_when_it_is_a_tie(tmp_path):
    """No run meets the latency budget and both score 0.000: the pick without the constraints is
    a tie settled by val/loss, and the sentence says so rather than naming one run the best."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.0, "val/loss": 10.7897, "test/latency/p50_s": 3.5})
    make_run(root / "1", "prompt_tuning", {"test/acc": 0.0, "val/loss": 10.7892, "test/latency/p50_s": 7.6})
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert ("Without them the best would be prompt_tuning (`1`, test/acc 0.000), a tie: prompt_tuning is picked "
            "for its lower val/loss (10.789 vs 10.790).") in md


def test_plots_of_an_earlier_report_are_not_left_beside_a_new_one(sweep):
    """./compare (or a sweep dir) reported on again: a plot this report does not draw (--no-plots,
    or nothing to show) is no longer there from the earlier report, picturing other runs."""
    out = sweep.parent / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"per_field_accuracy.png", "tradeoff.png", "training_curves.png"}
    metrics = json.loads((sweep / "2" / "metrics.json").read_text())
    (sweep / "2" / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items()
                                                          if k not in ("train/val_history", "test/latency/p50_s")}))
    assert main([str(sweep / "2"), "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"per_field_accuracy.png"}
    assert main([str(sweep), "--out", str(out), "--no-plots"]) == 0
    assert not list(out.glob("*.png"))


def test_training_curves_over_the_whole_split_and_a_subset_say_which(tmp_path, monkeypatch):
    """trainer=default,fast: one run validated on the whole split, one on its first 2 batches.
    The axis said "first 2 batches" for both; it now says the limit is each run's (the legend shows it)."""
    from ccexp.compare import plots as compare_plots

    for i, (method, limit) in enumerate((("lora", None), ("qlora", 2))):
        run = make_run(tmp_path / "sweep" / str(i), method, {"test/acc": 0.5, "train/val_history": history(2.0, 1.5)})
        set_config(run, trainer={"limit_val_batches": limit})
    saved = {}
    monkeypatch.setattr(compare_plots, "_save", lambda fig, path: saved.setdefault(path.name, fig))
    assert main([str(tmp_path / "sweep")]) == 0
    ax = saved["training_curves.png"].axes[0]
    assert ax.get_ylabel() == "validation loss (answer tokens; a run's first trainer.limit_val_batches batches where set)"


def test_an_evaluations_times_and_memory_are_no_rival_of_a_trained_runs(tmp_path, capsys):
    """python -m ccexp.evaluate of run 0, with its settings: one scenario with the sweep's runs, but
    it trained nothing, so its 89 s total and its peak were bold beside runs that trained."""
    compare = {**COMPARE, "constraints": [], "headline": ["test/acc", "time/total_s", "time/eval_s", "memory/peak_mb"]}
    root = tmp_path / "sweep"
    trained = {"train/steps": 4, "memory/start_mb": 470.0}
    make_run(root / "0", "lora", {**trained, "test/acc": 0.5, "time/total_s": 295.0, "time/eval_s": 260.0,
                                  "memory/peak_mb": 916.0}, compare=compare)
    make_run(root / "1", "prompt_tuning", {**trained, "test/acc": 0.4, "time/total_s": 237.0, "time/eval_s": 220.0,
                                           "memory/peak_mb": 990.0}, compare=compare)
    make_run(root / "0" / "eval" / "2026-12-07_16-12-04", "lora", {
        "test/acc": 0.5, "time/total_s": 89.0, "time/eval_s": 80.0, "memory/peak_mb": 696.0, "memory/start_mb": 468.0},
        compare=compare)
    assert main([str(root / "0"), str(root / "0" / "eval" / "2026-12-07_16-12-04"), str(root / "1"),
                 "--out", str(tmp_path / "c"), "--no-plots"]) == 0
    with open(tmp_path / "c" / "compare.csv") as f:
        best = {row["run"]: row["best_in"] for row in csv.DictReader(f)}
    assert best == {"0": "test/acc;memory/peak_mb", "0/eval/2026-12-07_16-12-04": "test/acc;time/eval_s",
                    "1": "time/total_s"}
    note = ("Evaluations: `0/eval/2026-12-07_16-12-04` trained nothing (python -m ccexp.evaluate): its time/ and "
            "memory/ values, time/eval_s aside, are not ranked against runs that trained.")
    assert note in (tmp_path / "c" / "compare.md").read_text()
    assert note.replace("`", "") in " ".join(capsys.readouterr().out.split())


def test_a_gap_within_sampling_noise_is_said(tmp_path):
    """0.611 vs 0.556 over 18 answers each is one answer: the recommendation says the gap is within
    two standard errors (0.328) rather than letting it read as a finding; 0.9 vs 0.1 is not."""
    root = tmp_path / "sweep"
    compare = {**COMPARE, "constraints": []}
    make_run(root / "0", "lora", {"test/acc": 11 / 18, "test/generated": 18}, compare=compare)
    make_run(root / "1", "prompt_tuning", {"test/acc": 10 / 18, "test/generated": 18}, compare=compare)
    assert main([str(root), "--no-plots"]) == 0
    assert ("one answer moves it by 0.056 or more. The gap to the runner-up is within sampling noise (two standard "
            "errors of the difference over these answers: 0.328): more test answers are needed to tell the two "
            "apart.") in (root / "compare.md").read_text()
    (root / "1" / "metrics.json").write_text(json.dumps({"status": "finished", "test/acc": 0.1, "test/generated": 18}))
    (root / "0" / "metrics.json").write_text(json.dumps({"status": "finished", "test/acc": 0.9, "test/generated": 18}))
    assert main([str(root), "--no-plots"]) == 0
    assert "sampling noise" not in (root / "compare.md").read_text()


def test_several_run_dirs_never_replace_another_report_in_dot_compare(sweep, monkeypatch, capsys):
    """./compare is where every report over several run dirs goes: a report over other runs stops
    in one line rather than replacing the one there; the same runs again replace their own."""
    monkeypatch.chdir(sweep.parent)
    assert main(["sweep/0", "sweep/1", "--no-plots"]) == 0
    assert main(["sweep/0", "sweep/1", "--no-plots"]) == 0  # the report, again
    assert main(["sweep/1", str(sweep / "0"), "--no-plots"]) == 0  # the same runs, in another order and spelling
    capsys.readouterr()
    assert main(["sweep/1", "sweep/2", "--no-plots"]) == 2
    assert capsys.readouterr().err == (f"ccexp.compare: error: compare/compare.md: the report on sweep/1, {sweep / '0'} "
                                       "is there; give --out DIR for this one, or remove it first\n")
    assert (sweep.parent / "compare" / "compare.md").read_text().startswith(f"# Comparison: `sweep/1`, `{sweep / '0'}`\n")
    assert main(["sweep/1", "sweep/2", "--no-plots", "--out", "compare"]) == 0  # named: replaced as asked


def _seed_sweep(root: Path, qlora: tuple, compare: dict | None = None) -> None:
    """lora and qlora over seeds 1, 2, 3 (job dirs 0-5, as -m method=lora,qlora seed=1,2,3 numbers
    them); lora's test/acc 0.60, 0.62, 0.58, qlora's as given."""
    compare = compare or {**COMPARE, "constraints": [], "headline": ["test/acc", "adapter/size_mb"]}
    for i, (method, acc) in enumerate(zip(["lora"] * 3 + ["qlora"] * 3, (0.60, 0.62, 0.58, *qlora))):
        make_run(root / str(i), method, {"test/acc": acc, "adapter/size_mb": 7.07, "test/generated": 18},
                 compare=compare, seed=1 + i % 3)


def test_a_sweep_over_seeds_recommends_the_best_mean_not_the_luckiest_seed(tmp_path, capsys):
    """qlora's seed 1 (0.70) is the best run, but lora's mean over three seeds (0.600) beats
    qlora's (0.580): the recommendation ranks configurations by their mean, says so with the
    standard deviation, and the report adds the means ± sd by configuration."""
    root = tmp_path / "sweep"
    _seed_sweep(root, (0.70, 0.50, 0.54))
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    recommendation = " ".join(md.split("## Recommendation")[1].split("## Runs")[0].split())
    assert recommendation.startswith(
        "**Recommend lora** — runs `0, 1, 2` (method=lora, seed=1,2,3) have the highest test/acc over their seeds, "
        "0.600 (mean of 3 seeds, sd 0.020); 2 configurations compared, each by the mean of its finished seeds "
        "(6 runs). Runner-up: qlora (`3, 4, 5`, method=qlora, seed=1,2,3) with 0.580 (mean of 3 seeds, sd 0.106), "
        "0.020 lower."), recommendation
    assert ("The gap to the runner-up is within the spread over seeds (two standard errors of the difference of "
            "the means: 0.124): more seeds are needed to tell the two apart.") in recommendation
    seeds = md.split("## Across seeds")[1]
    assert "| runs | method | seeds | test/acc ↑ | adapter/size_mb ↓ |" in seeds
    assert "| `0, 1, 2` | lora | 1,2,3 | **0.600 ± 0.020** | 7.070 ± 0.000 |" in seeds
    assert "| `3, 4, 5` | qlora | 1,2,3 | 0.580 ± 0.106 | 7.070 ± 0.000 |" in seeds
    out = capsys.readouterr().out
    assert "mean ± sd over seeds" in out and "0.600 ± 0.020" in out
    # the runs table still shows each run, qlora's seed 1 the best single run
    assert "| `3` | finished | qlora | 1 | **0.700** |" in md


def test_a_seed_that_failed_is_named_and_the_mean_says_how_many_seeds_it_holds(tmp_path):
    root = tmp_path / "sweep"
    _seed_sweep(root, (0.70, 0.66, 0.68))
    (root / "4" / "metrics.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    recommendation = " ".join(md.split("## Recommendation")[1].split("## Runs")[0].split())
    assert recommendation.startswith(
        "**Recommend qlora** — runs `3, 5` (method=qlora, seed=1,3) have the highest test/acc over their seeds, "
        "0.690 (mean of the 2 of 3 seeds that finished, sd 0.014)"), recommendation
    assert "1 run failed and is excluded: `4` (method=qlora, seed=2): RuntimeError: boom." in recommendation
    assert "| `3, 5` | qlora | 1,3 (of 3) | **0.690 ± 0.014** |" in md.split("## Across seeds")[1]


def test_seeds_that_each_go_with_their_own_configuration_are_ranked_run_by_run(tmp_path):
    """seed swept but no configuration repeated: seed is one more setting, no means, no seeds table."""
    root = tmp_path / "sweep"
    compare = {**COMPARE, "constraints": [], "headline": ["test/acc"]}
    make_run(root / "0", "lora", {"test/acc": 0.6}, compare=compare, seed=1)
    make_run(root / "1", "qlora", {"test/acc": 0.7}, compare=compare, seed=2)
    assert main([str(root), "--no-plots"]) == 0
    md = (root / "compare.md").read_text()
    assert "**Recommend qlora** — run `1` (method=qlora, seed=2) has the highest test/acc, 0.700" in md
    assert "## Across seeds" not in md


def test_a_configuration_a_seed_of_which_lacks_the_metric_names_that_seed(tmp_path):
    """A mean over seeds needs every finished seed's value: the configuration is not ranked, and
    the line names the run that lacks it, not the configuration as if none of its runs had it."""
    root = tmp_path / "sweep"
    _seed_sweep(root, (0.70, 0.66, 0.68), {**COMPARE, "constraints": ["adapter/size_mb <= 100"],
                                           "headline": ["test/acc", "adapter/size_mb"]})
    metrics = json.loads((root / "2" / "metrics.json").read_text())
    (root / "2" / "metrics.json").write_text(json.dumps({**metrics, "test/acc": float("nan")}))
    assert main([str(root), "--no-plots"]) == 0
    recommendation = " ".join((root / "compare.md").read_text().split("## Recommendation")[1].split("## Runs")[0].split())
    assert ("Not ranked: `0, 1, 2` (method=lora, seed=1,2,3) has no mean test/acc, which needs every finished "
            "seed's: `2` (seed=3) reports no finite test/acc.") in recommendation
    assert ("**Recommend qlora** — runs `3, 4, 5` (method=qlora, seed=1,2,3) have the highest test/acc over their "
            "seeds, 0.680 (mean of 3 seeds, sd 0.020), and meet adapter/size_mb 7.070 <= 100;") in recommendation


def test_a_best_run_not_above_the_constant_answer_floor_is_said_so(tmp_path):
    """Recommending lora at test/acc 0.111 read as a method that works, where one constant answer
    per field scored 0.167 on the same test answers (floor/test/acc, written by the evaluation)."""
    root = tmp_path / "sweep"
    make_run(root / "0", "lora", {"test/acc": 0.111, "floor/test/acc": 0.167, "adapter/size_mb": 7.07})
    make_run(root / "1", "prompt_tuning", {"test/acc": 0.0, "floor/test/acc": 0.167, "adapter/size_mb": 0.05})
    assert main([str(root), "--no-plots"]) == 0
    recommendation = " ".join((root / "compare.md").read_text().split("## Recommendation")[1].split("## Runs")[0].split())
    assert ("Its test/acc, 0.111, is not above 0.167, what one constant answer per field (train's most common "
            "label, a score's median) scores on the same test answers: no run here has learned to read the calls "
            "yet.") in recommendation
    (root / "0" / "metrics.json").write_text(json.dumps({"status": "finished", "test/acc": 0.5, "floor/test/acc": 0.167,
                                                         "adapter/size_mb": 7.07}))
    assert main([str(root), "--no-plots", "--out", str(tmp_path / "again")]) == 0
    assert "constant answer" not in (tmp_path / "again" / "compare.md").read_text()


def test_a_quoted_home_is_the_users_home_not_a_folder_named_tilde(tmp_path, monkeypatch):
    """--out=~/reports (the shell expands no ~ after --out=, nor in quotes) wrote the report
    into a folder named ~ in the current one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "s" / "0", "lora", {"test/acc": 0.5}, compare={**COMPARE, "constraints": []})
    assert main(["~/s", "--out=~/reports", "--no-plots"]) == 0
    assert (tmp_path / "reports" / "compare.md").is_file() and not (tmp_path / "~").exists()
