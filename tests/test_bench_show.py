"""python -m ccexp.bench.show and --against: bench results read back and set side by side
(nothing is measured here; the numbers are made up or from the committed results files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
            assert row[1:4] == [f"{ratio['value']:.2f}", ratio["goal"], "yes" if ratio["met"] else "NO"], path
        with_evidence = all(table_row(out, name)[4] for name in recorded)
        assert ("written by an older bench: the evidence column needs" in out) != with_evidence, path


def test_the_latest_run_read_back_as_the_bench_printed_it(capsys):
    main([str(RESULTS / "2026-12-01_23-40-21.json")])
    out = capsys.readouterr().out
    assert "ccexp.bench on AMD EPYC (2 threads, AVX2, no bf16 dot products: fp32), smollm2_135m, lora" in out
    assert table_row(out, "training tokens/s vs HF Trainer")[1:] == ["1.34", ">= 2.0", "NO", "100 vs 74 tok/s"]
    assert "ran in 18m53s (training 11m16s, generation 5m16s, memory 2m20s)" in out
    assert "older bench" not in out


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


def test_bad_files_are_one_line(tmp_path, capsys):
    (tmp_path / "broken.json").write_text('{"machine": {},\n "args": }')
    (tmp_path / "other.json").write_text('{"loss": 1.0}')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "list.json").write_text(json.dumps({"machine": [], "args": ARGS, "ratios": {}}))
    (tmp_path / "ratio.json").write_text(json.dumps({"machine": AVX2, "args": ARGS, "ratios": {"MFU": {"value": "x"}}}))
    cases = {
        tmp_path / "missing.json": f"{tmp_path / 'missing.json'}: no such file",
        tmp_path: f"{tmp_path} is a directory, expected a ccexp.bench results file (.json)",
        tmp_path / "broken.json": f"{tmp_path / 'broken.json'}: line 2 column 10: not JSON (Expecting value)",
        tmp_path / "binary.json": f"{tmp_path / 'binary.json'}: not UTF-8 text, expected a ccexp.bench results file "
                                  "(.json)",
        tmp_path / "other.json": f"{tmp_path / 'other.json'}: not a ccexp.bench results file "
                                 "(expected the keys machine, args and ratios)",
        tmp_path / "list.json": f"{tmp_path / 'list.json'}: machine: expected an object, got list",
        tmp_path / "ratio.json": f"{tmp_path / 'ratio.json'}: ratios.MFU: expected value, goal and met",
    }
    for path, error in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main([str(result(tmp_path, "good", 1.2)), str(path)])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [f"ccexp.bench.show: error: {error} (--help for usage)"]


def test_the_bench_checks_its_against_file_before_any_work(tmp_path, capsys):
    from ccexp.bench.__main__ import main as bench

    with pytest.raises(SystemExit) as exit_info:
        bench(["--model", "tiny", "--against", str(tmp_path / "old.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ccexp.bench: error: argument --against: {tmp_path / 'old.json'}: no such file (--help for usage)"]
