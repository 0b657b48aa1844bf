"""python -m ccexp.bench.show and --against: bench results read back and set side by side
(nothing is measured here; the numbers are made up or from the committed results files)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccexp.bench.report import ratio_text
from ccexp.bench.show import main

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
AVX2 = {"cpu": "AMD EPYC", "cpu_isa": "AVX2", "cpu_bf16": False, "threads": 2, "torch": "2.13.0+cpu"}
ARGS = {"model": "smollm2_135m", "method": "lora", "device": "cpu", "steps": "5", "warmup": "1", "batch_size": "4",
        "prompts": "8", "new_tokens": "32", "overrides": "[]"}


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps cells at 80 columns when not on a terminal


def result(tmp_path: Path, name: str, training: float, memory: float | None = 0.3, machine=AVX2, **args) -> Path:
    ratios = {"training tokens/s vs HF Trainer": {"value": training, "goal": ">= 2.0", "met": training >= 2.0}}
    if memory is not None:
        ratios["QLoRA vs LoRA peak memory"] = {"value": memory, "goal": "<= 0.5", "met": memory <= 0.5}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"machine": machine, "args": {**ARGS, **args}, "ratios": ratios,
                                "seconds": {"training": 400.0, "total": 500.0}}))
    return path


def table_row(out: str, measure: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {measure} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_every_committed_results_file_prints_its_table(capsys):
    """Each version of the bench's JSON reads back: its recorded ratios, and the evidence
    recomputed from its numbers where the file has them all, else a note naming the missing key."""
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        main([str(path)])
        out = capsys.readouterr().out
        recorded = json.loads(path.read_text())["ratios"]
        for name, ratio in recorded.items():
            row = table_row(out, name)
            assert row[1:4] == [ratio_text(ratio["value"], ratio["goal"]), ratio["goal"],
                                "yes" if ratio["met"] else "NO"], path
        # A blank evidence cell only where a note says which part lacks what.
        blank = [name for name in recorded if not table_row(out, name)[4]]
        assert bool(blank) == ("no evidence for" in out), path


def test_the_latest_run_read_back_as_the_bench_printed_it(capsys):
    main([str(RESULTS / "2026-12-01_23-40-21.json")])
    out = capsys.readouterr().out
    assert "ccexp.bench on AMD EPYC (2 threads, AVX2, no bf16 dot products: fp32), smollm2_135m, lora" in out
    assert table_row(out, "training tokens/s vs HF Trainer")[1:] == ["1.34", ">= 2.0", "NO", "100 vs 74 tok/s"]
    assert "ran in 18m53s (training 11m16s, generation 5m16s, memory 2m20s)" in out
    assert "no evidence" not in out


def test_runs_side_by_side_with_the_range_over_alike_runs(tmp_path, capsys):
    a, b = result(tmp_path, "a", 1.40), result(tmp_path, "b", 1.30)
    c = result(tmp_path, "c", 2.10, memory=None, machine={**AVX2, "cpu_isa": "AVX512", "cpu_bf16": True}, steps="2")
    main([str(a), str(c), str(b)])
    out = capsys.readouterr().out
    assert "3 runs side by side" in out
    # b is last: the range is over a and b, the runs with its machine and settings, and says so.
    assert table_row(out, "training tokens/s vs HF Trainer") == [
        "training tokens/s vs HF Trainer", ">= 2.0", "1.40", "2.10 ✓", "1.30", "1.30–1.40"]
    assert table_row(out, "QLoRA vs LoRA peak memory")[2:] == ["0.30 ✓", "–", "0.30 ✓", "0.30–0.30"]
    assert table_row(out, "bench wall time")[2:5] == ["8m20s (training only)"] * 3
    assert "range*: over the 2 of 3 runs with the last one's machine and settings" in out
    assert ("machines differ (compare ratios within one machine): a, b: AMD EPYC (2 threads, AVX2, no bf16 dot "
            "products: fp32), torch 2.13.0+cpu; c: AMD EPYC (2 threads, AVX512, bf16), torch 2.13.0+cpu") in out
    assert "--steps differs: 5 in a, b; 2 in c" in out


def test_one_days_runs_put_their_date_in_the_title(tmp_path, capsys):
    """13 runs of one day in 240 columns cut every heading to the same "2026-12-01_…"."""
    paths = [result(tmp_path, f"2026-12-01_{h:02d}-21-54", 1.0 + h / 100) for h in range(13)]
    main([str(p) for p in paths])
    out = capsys.readouterr().out
    assert "13 runs side by side (✓ = goal met), 2026-12-01_…" in out
    header = next(line for line in out.splitlines() if line.startswith("┃ measure"))
    assert [c.strip() for c in header.strip("┃").split("┃")][2:-1] == [f"{h:02d}-21-54" for h in range(13)]
    assert table_row(out, "training tokens/s vs HF Trainer")[2:4] == ["1.00", "1.01"]


def test_a_gpu_run_beside_a_cpu_run_shows_both_goals(tmp_path, capsys):
    gpu = result(tmp_path, "gpu", 1.6, machine={**AVX2, "gpu": "NVIDIA H200"}, device="cuda")
    gpu_results = json.loads(gpu.read_text())
    gpu_results["ratios"]["training tokens/s vs HF Trainer"].update(goal=">= 1.5", met=True)
    gpu.write_text(json.dumps(gpu_results))
    main([str(result(tmp_path, "cpu", 1.3)), str(gpu)])
    out = capsys.readouterr().out
    assert table_row(out, "training tokens/s vs HF Trainer")[1:4] == [">= 2.0 / >= 1.5", "1.30", "1.60 ✓"]
    assert "gpu: NVIDIA H200, torch 2.13.0+cpu" in out and "--device differs: cpu in cpu; cuda in gpu" in out


def test_alike_runs_name_their_one_machine(tmp_path, capsys):
    main([str(result(tmp_path, "a", 1.4)), str(result(tmp_path, "b", 1.3))])
    out = capsys.readouterr().out
    assert table_row(out, "training tokens/s vs HF Trainer")[-1] == "1.30–1.40"
    assert "range*" not in out and "differs" not in out
    assert "machine: AMD EPYC (2 threads, AVX2, no bf16 dot products: fp32), torch 2.13.0+cpu" in out


def test_without_files_it_reads_the_newest_in_the_results_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main([])
    assert capsys.readouterr().err.splitlines() == [
        "ccexp.bench.show: error: no results files in benchmarks/results/ (run python -m ccexp.bench, or name the "
        "files) (--help for usage)"]
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    result(folder, "2026-12-01_10-00-00", 1.1)
    result(folder, "2026-12-02_09-00-00", 1.7)
    main([])
    out = capsys.readouterr().out
    assert "benchmarks/results/2026-12-02_09-00-00.json" in out
    assert table_row(out, "training tokens/s vs HF Trainer")[1] == "1.70"


def _with(base: dict, **changes) -> str:
    return json.dumps({**base, **changes})


GOOD = {"machine": AVX2, "args": ARGS, "ratios": {"MFU": {"value": 0.4, "goal": ">= 0.5", "met": False}}}


@pytest.mark.parametrize("text,error", [
    ('{"machine": {},\n "args": }', "not valid JSON (Expecting value at line 2 column 10)"),
    ("[1, 2]", "expected a ccexp.bench results file (a JSON object), got list"),
    ("1" * 5000, "not valid JSON (ValueError: Exceeds the limit (4300 digits) for integer string conversion: value "
                 "has 5000 digits; use sys.set_int_max_str_digits() to increase the limit)"),
    ('{"loss": 1.0}', "not a ccexp.bench results file (no machine, args, ratios; expected the keys machine, args "
                      "and ratios)"),
    (_with(GOOD, machine=[]), "machine: expected an object, got list"),
    (_with(GOOD, ratios={}), "ratios: expected at least one ratio, got none"),
    (_with(GOOD, ratios={"MFU": 0.4}), "ratios.MFU: expected an object with value, goal and met, got float"),
    (_with(GOOD, ratios={"MFU": {"value": "x", "goal": ">= 0.5", "met": False}}),
     "ratios.MFU.value: expected a number, got 'x'"),
    (_with(GOOD, ratios={"MFU": {"value": True, "goal": ">= 0.5", "met": False}}),
     "ratios.MFU.value: expected a number, got True"),
    (_with(GOOD, ratios={"MFU": {"value": 0.4, "goal": 0.5, "met": False}}),
     "ratios.MFU.goal: expected text such as '>= 2.0', got 0.5"),
    (_with(GOOD, ratios={"MFU": {"value": 0.4, "goal": ">= 0.5", "met": "no"}}),
     "ratios.MFU.met: expected true or false, got 'no'"),
    (_with(GOOD, seconds={"training": 400}),
     "seconds: expected an object of seconds per part and a total, got {'training': 400}"),
    (_with(GOOD, seconds={"training": "slow", "total": 500}),
     "seconds: expected an object of seconds per part and a total, got {'training': 'slow', 'total': 500}"),
    # The machine's fields label and group the runs: a mistyped one was a TypeError in a table.
    (_with(GOOD, machine={**AVX2, "cpu": 7}), "machine.cpu: expected the CPU's name as text, got 7"),
    (_with(GOOD, machine={**AVX2, "threads": "2"}), "machine.threads: expected a whole number, got '2'"),
    (_with(GOOD, machine={**AVX2, "cpu_bf16": "yes"}), "machine.cpu_bf16: expected true or false, got 'yes'"),
    (_with(GOOD, unfinished="memory"), "unfinished: expected a list of the parts not run, got 'memory'"),
    (_with(GOOD, load_average={"start": "high"}),
     "load_average: expected an object of 1-minute load averages, got {'start': 'high'}"),
    (_with(GOOD, code={"commit": 5}), "code: expected an object with commit and versions, got {'commit': 5}"),
])
def test_bad_files_are_one_line(tmp_path, capsys, text, error):
    """Everything the tables read is checked when the file is read, so none fails in a table."""
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    for argv in ([str(bad)], [str(result(tmp_path, "good", 1.2)), str(bad)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"ccexp.bench.show: error: {bad}: {error} (--help for usage)"]


def test_null_machine_fields_read_as_not_recorded(tmp_path, capsys):
    """A null the file check lets through (as absent) was a TypeError in the table's title."""
    path = result(tmp_path, "nulls", 1.2, machine={**AVX2, "cpu": None, "cpu_isa": None, "threads": None})
    for argv in ([str(path)], [str(path), str(result(tmp_path, "good", 1.3))]):
        main(argv)
        assert "CPU not recorded (? threads, ISA not recorded)" in capsys.readouterr().out


def test_missing_unreadable_and_repeated_files_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    good = result(tmp_path, "good", 1.2)
    cases = {
        (str(tmp_path / "missing.json"),): f"{tmp_path / 'missing.json'}: no such file",
        (str(tmp_path),): f"{tmp_path} is a directory, expected a ccexp.bench results file",
        (str(tmp_path / "binary.json"),): f"{tmp_path / 'binary.json'}: not UTF-8 text (byte 0), expected a "
                                          "ccexp.bench results file",
        (str(good), str(good)): f"{good}: given twice",
        (str(good), "good.json"): f"good.json: given twice (also as {good})",
    }
    for argv, error in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"ccexp.bench.show: error: {error} (--help for usage)"]


def test_the_range_is_over_the_runs_alike_in_machine_and_settings(tmp_path, capsys):
    """A run that differs only in a setting, and one that differs only in its machine, are both
    left out of the last run's range, and both differences are named."""
    other_steps = result(tmp_path, "steps2", 3.0, steps="2")
    other_cpu = result(tmp_path, "bf16", 0.5, machine={**AVX2, "cpu_isa": "AVX512", "cpu_bf16": True})
    main([str(result(tmp_path, "a", 1.2)), str(other_steps), str(other_cpu), str(result(tmp_path, "b", 1.4))])
    out = capsys.readouterr().out
    assert table_row(out, "training tokens/s vs HF Trainer")[-1] == "1.20–1.40"
    assert "range*: over the 2 of 4 runs with the last one's machine and settings" in out
    assert "--steps differs: 5 in a, bf16, b; 2 in steps2" in out
    assert "machines differ" in out and "bf16: AMD EPYC (2 threads, AVX512, bf16)" in out


def test_file_values_print_as_written_not_as_markup(tmp_path, capsys):
    """rich would read "[q_proj,v_proj]" as a style tag and drop it, or fail on "[/x]"."""
    a = result(tmp_path, "a", 1.2, overrides="['model.lora_targets=[q_proj,v_proj]']")
    b = result(tmp_path, "b", 1.3, machine={**AVX2, "cpu": "EPYC [/x]"})
    main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "the config overrides differ: ['model.lora_targets=[q_proj,v_proj]'] in a; [] in b" in out
    assert "b: EPYC [/x] (2 threads" in out
    main([str(b)])
    assert "ccexp.bench on EPYC [/x] (2 threads" in capsys.readouterr().out


def test_measures_in_the_order_of_the_fullest_run_and_nan_left_out_of_the_range(tmp_path, capsys):
    short = result(tmp_path, "short", 1.2, memory=None)
    nan = result(tmp_path, "nan", float("nan"))
    main([str(short), str(nan), str(result(tmp_path, "full", 1.5))])
    out = capsys.readouterr().out
    assert out.index("training tokens/s") < out.index("QLoRA vs LoRA peak memory")
    assert table_row(out, "training tokens/s vs HF Trainer")[2:] == ["1.20", "nan", "1.50", "1.20–1.50"]
    assert table_row(out, "QLoRA vs LoRA peak memory")[2:] == ["–", "0.30 ✓", "0.30 ✓", "0.30–0.30"]


def test_an_older_file_loses_only_the_evidence_it_lacks(tmp_path, capsys):
    """One missing number blanks its own part's evidence, not the whole table's."""
    results = json.loads((RESULTS / "2026-12-01_23-40-21.json").read_text())
    del results["generation"]["batched_prefill_s"]
    (tmp_path / "older.json").write_text(json.dumps(results))
    main([str(tmp_path / "older.json")])
    out = capsys.readouterr().out
    assert table_row(out, "training tokens/s vs HF Trainer")[4] == "100 vs 74 tok/s"
    assert table_row(out, "batched vs one-at-a-time generation")[4] == ""
    assert table_row(out, "all-in-one analysis p50 latency (s)")[4] == ""  # the same part
    assert table_row(out, "QLoRA vs LoRA peak memory")[4].startswith("1492 vs 4742 MB")
    assert (f"{tmp_path / 'older.json'}: no evidence for generation: it needs 'batched_prefill_s', which this "
            "file lacks (an older bench recorded fewer numbers)") in out.replace("\n", " ")


def test_the_bench_checks_its_against_file_before_any_work(tmp_path, capsys):
    from ccexp.bench.__main__ import main as bench

    with pytest.raises(SystemExit) as exit_info:
        bench(["--model", "tiny", "--against", str(tmp_path / "old.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ccexp.bench: error: argument --against: {tmp_path / 'old.json'}: no such file (--help for usage)"]


def test_a_ratio_on_its_goals_line_keeps_a_third_decimal():
    """MFU 0.495 against ">= 0.5" would read "0.50" with no tick."""
    assert [ratio_text(v, ">= 0.5") for v in (0.4953, 0.5, 0.512, 0.41)] == ["0.495", "0.50", "0.51", "0.41"]
    assert ratio_text(1.0512, "<= 1.05") == "1.051" and ratio_text(3.83, ">= 5") == "3.83"


def test_one_cpu_name_over_two_generations_is_two_machines(tmp_path, capsys):
    """A VM's bare "AMD EPYC" on family 25 and on family 26: the range is not pooled over both."""
    zen4 = result(tmp_path, "zen4", 2.4, machine={**AVX2, "cpu_generation": "family 25 model 17"})
    zen5 = result(tmp_path, "zen5", 3.0, machine={**AVX2, "cpu_generation": "family 26 model 2"})
    main([str(zen4), str(zen5)])
    out = capsys.readouterr().out
    assert "machines differ" in out and "zen5: AMD EPYC family 26 model 2 (2 threads" in out
    assert table_row(out, "training tokens/s vs HF Trainer")[-1] != "2.40–3.00"


def test_the_bench_records_the_cpu_generation():
    from ccexp.bench.__main__ import machine

    cpuinfo = Path("/proc/cpuinfo")
    if not (cpuinfo.exists() and "cpu family" in cpuinfo.read_text()):
        pytest.skip("no x86 /proc/cpuinfo here")
    assert machine("cpu")["cpu_generation"].startswith("family ")


def test_a_run_without_the_cpu_generation_joins_the_range_by_name_and_says_so(tmp_path, capsys):
    """Files before the bench recorded the generation: pooled with a run that has it, by the rest
    of the machine's record (else a day's runs and the next day's on one VM never compare), with a
    line naming them; two generations that are both recorded stay apart."""
    older = result(tmp_path, "older", 2.9)
    zen4 = result(tmp_path, "zen4", 2.0, machine={**AVX2, "cpu_generation": "family 25 model 17"})
    zen5 = result(tmp_path, "zen5", 3.1, machine={**AVX2, "cpu_generation": "family 26 model 2"})
    main([str(older), str(zen4), str(zen5)])
    out = capsys.readouterr().out
    assert table_row(out, "training tokens/s vs HF Trainer")[-1] == "2.90–3.10"
    assert "range*: over the 2 of 3 runs with the last one's machine and settings" in out
    assert "range: older did not record the CPU's generation (older files lack it)" in out


def test_what_code_each_run_measured_and_where_the_libraries_differ(tmp_path, capsys):
    versions = {"torch": "2.13.0", "transformers": "5.2.0"}
    a = result(tmp_path, "a", 2.9)  # before the bench recorded its code
    b = tmp_path / "b.json"
    b.write_text(_with(json.loads(result(tmp_path, "b", 3.0).read_text()),
                       code={"commit": "abc123", "uncommitted_changes": True, "versions": versions}))
    c = tmp_path / "c.json"
    c.write_text(_with(json.loads(result(tmp_path, "c", 3.1).read_text()),
                       code={"commit": "def456", "uncommitted_changes": False,
                             "versions": {**versions, "transformers": "5.3.0"}}))
    main([str(a), str(b), str(c)])
    out = capsys.readouterr().out
    assert ("code: commit not recorded in a; commit abc123 with uncommitted changes in b; commit def456 in c"
            in out)
    # Versions compared among the files that record them (a's would differ in every library).
    assert "transformers differs: 5.2.0 in b; 5.3.0 in c" in out and "torch differs" not in out


def test_the_load_average_is_printed_and_other_work_is_named(tmp_path, capsys):
    calm = tmp_path / "calm.json"
    calm.write_text(_with(json.loads(result(tmp_path, "x", 3.0).read_text()),
                          load_average={"start": 0.1, "training": 2.05}))
    main([str(calm)])
    out = capsys.readouterr().out
    assert "load average (1 min): 0.10 at the start, 2.05 after training" in out and "ABOVE" not in out
    busy = tmp_path / "busy.json"
    busy.write_text(_with(json.loads(calm.read_text()), load_average={"start": 0.1, "training": 3.6}))
    main([str(busy)])
    assert ("3.60 after training; OTHER WORK SHARED THE CPUs (3.60 after training, above the bench's own 2 "
            "threads)") in capsys.readouterr().out
    # Before the bench's own threads start, a core's worth of load is other work, whatever the threads.
    wide = tmp_path / "wide.json"
    wide.write_text(_with(json.loads(calm.read_text()), machine={**AVX2, "threads": 16},
                          load_average={"start": 1.5, "training": 16.2}))
    main([str(wide)])
    out = capsys.readouterr().out
    assert "OTHER WORK SHARED THE CPUs (1.50 before the bench began)" in out and "above the bench's own" not in out


def test_an_unfinished_run_says_which_parts_it_lacks(tmp_path, capsys):
    stopped = tmp_path / "stopped.json"
    stopped.write_text(_with(json.loads(result(tmp_path, "x", 3.0, memory=None).read_text()),
                             unfinished=["generation", "memory"]))
    main([str(stopped)])
    assert "unfinished: stopped before generation, memory (the parts above were measured)" in capsys.readouterr().out
    main([str(result(tmp_path, "whole", 2.9)), str(stopped)])
    out = capsys.readouterr().out
    assert "8m20s (training only, stopped before generation, memory)" in out
    assert "range: none of its runs recorded the CPU's generation" in out


def test_gpu_runs_pool_whatever_cpu_their_nodes_have(tmp_path, capsys):
    """A GPU run's numbers are the GPU's, and its label names the GPU only: two H100 runs on nodes
    of other CPU generations are one machine's range."""
    h100 = {"cpu": "AMD EPYC", "threads": 16, "gpu": "NVIDIA H100", "torch": "2.13.0"}
    a = result(tmp_path, "a", 1.6, machine={**h100, "cpu_generation": "family 25 model 1"}, device="cuda")
    b = result(tmp_path, "b", 1.8, machine={**h100, "cpu_generation": "family 25 model 17"}, device="cuda")
    main([str(a), str(b)])
    assert table_row(capsys.readouterr().out, "training tokens/s vs HF Trainer")[-1] == "1.60–1.80"


def test_a_gpu_run_records_the_gpus_memory(monkeypatch):
    """One GPU name covers cards of different memory (A100 40 and 80 GB): the record says which."""
    import torch

    from ccexp.bench.__main__ import machine

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: SimpleNamespace(total_memory=85 * 10**9))
    m = machine("cuda")
    assert m["gpu"] == "NVIDIA H100 80GB HBM3" and m["gpu_count"] == 1 and m["gpu_memory_gb"] == 79.2


def _corrupt(tmp_path: Path, dotted: str, value) -> Path:
    """A committed results file with one evidence field set to ``value``."""
    results = json.loads((RESULTS / "2026-12-01_23-40-21.json").read_text())
    *parents, last = dotted.split(".")
    node = results
    for key in parents:
        node = node[key]
    node[last] = value
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize("dotted,value,error", [
    ("training.ccexp.tokens_per_s", "abc", "training.ccexp.tokens_per_s: expected a number, got 'abc'"),
    ("training.bare_loop.step_seconds", [0.5, None], "training.bare_loop.step_seconds: expected a list of numbers, "
                                                     "got [0.5, None]"),
    ("generation.batched_prefill_s", True, "generation.batched_prefill_s: expected a number, got True"),
    ("memory.lora", 5, "memory.lora: expected an object, got 5"),
    ("args.warmup", "one", "args.warmup: expected a whole number, got 'one'"),
])
def test_a_corrupt_evidence_number_is_one_line_naming_the_field(tmp_path, capsys, dotted, value, error):
    """The evidence's numbers are checked when the file is read, as the ratios are: a bad one is
    one line naming the file and the field, not a note with a TypeError and exit 0."""
    from ccexp.bench.__main__ import main as bench

    bad = _corrupt(tmp_path, dotted, value)
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"ccexp.bench.show: error: {bad}: {error} (--help for usage)"]
    with pytest.raises(SystemExit) as exit_info:  # --against: before any work
        bench(["--model", "tiny", "--against", str(bad)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"ccexp.bench: error: argument --against: {bad}: {error} "
                                                    "(--help for usage)"]
