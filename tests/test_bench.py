"""python -m ccexp.bench end to end on the tiny model: every ratio is measured and written
(no timing is asserted: speed targets live in the benchmark's output, not in tests)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from ccexp.bench.__main__ import main


def test_bench_measures_every_ratio_on_tiny(tmp_path, tiny_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the tables' rows on one line each
    out = tmp_path / "bench.json"
    earlier = Path(__file__).parents[1] / "benchmarks" / "results" / "2026-12-01_23-40-21.json"
    main(["--model", "tiny", "--steps", "2", "--warmup", "1", "--prompts", "2", "--new-tokens", "4", "--json", str(out),
          "--against", str(earlier)])
    results = json.loads(out.read_text())
    # --against: the earlier run's ratios beside this run's, and what differs between the two.
    printed = capsys.readouterr().out
    assert "2 runs side by side" in printed and "this run" in printed and "--model differs: smollm2_135m in" in printed
    history = [line for line in printed.splitlines() if line.startswith("│ training tokens/s vs HF Trainer ")][-1]
    cells = [cell.strip() for cell in history.strip("│").split("│")]
    this_run = results["ratios"]["training tokens/s vs HF Trainer"]["value"]
    assert cells[2:4] == ["1.34", f"{this_run:.2f}{' ✓' if this_run >= 2 else ''}"]  # the earlier file's, then this run's
    assert "against" not in results["args"]
    assert len(results["ratios"]) == 8
    for name, ratio in results["ratios"].items():
        assert math.isfinite(ratio["value"]) and ratio["value"] > 0, name
    training = results["training"]
    # LoRA: ccexp keeps the frozen base in bf16 under bf16 autocast; HF Trainer loads it in fp32.
    assert training["hf_trainer"]["base_weights"] == "float32"
    # The three sides did the same number of optimizer steps on the same examples.
    assert training["ccexp"]["steps"] == training["bare_loop"]["steps"] == training["hf_trainer"]["steps"] == 3
    sides = [training[side] for side in ("ccexp", "bare_loop", "hf_trainer")]
    assert all(len(side["step_seconds"]) == 3 and min(side["step_seconds"]) > 0 for side in sides)
    # The same batches for ccexp and the bare loop; HF's random batches cover the same examples' tokens.
    assert training["ccexp"]["step_tokens"] == training["bare_loop"]["step_tokens"]
    assert sum(training["ccexp"]["step_tokens"]) == sum(training["hf_trainer"]["step_tokens"])
    # The bench's few steps stand for a long run's steady state: norms and MLPs compiled on both
    # ccexp sides, as backend.compile=auto compiles a run long enough to pay (where g++ is found).
    from ccexp.backends.speedups import cpp_compiler

    assert training["ccexp"]["compiled"] is training["bare_loop"]["compiled"] is (cpp_compiler() is not None)
    # MFU's tokens/s: ccexp's timed batches again, alone, after the turns (each of the turns' steps
    # follows another side's); the row says so and gives the turns' own beside it.
    alone = training["ccexp_alone"]
    assert alone["batches"] == 2 and len(alone["step_seconds"]) == 2
    assert alone["computed_tokens"] == sum(training["ccexp"]["step_computed_tokens"][1:])
    assert alone["computed_tokens_per_s"] == pytest.approx(alone["computed_tokens"] / alone["seconds"])
    mfu = results["ratios"]["MFU (4·N·tok/s ÷ matmul peak)"]["value"]
    assert mfu == pytest.approx(4 * training["frozen_params"] * alone["computed_tokens_per_s"]
                                / training["matmul_peak_flops"])
    assert "ccexp's timed batches run again alone (in the turns" in printed
    # Over the matmuls run: the embeddings' lookup is none and the head runs on answer positions
    # only, so the strict MFU is below 4·N's (the tiny model's tied 49k x 64 embedding is most of it).
    emb = training["embedding_params"]
    assert emb["tied"] and emb["embedding"] == emb["head"] > training["frozen_params"] / 2
    assert 0 < alone["head_rows"] < alone["computed_tokens"]
    from ccexp.bench.training import mfu_strict

    assert 0 < mfu_strict(alone, training["frozen_params"], emb, training["matmul_peak_flops"]) < mfu
    assert "over the matmuls run (4·N counts the" in printed
    # Two timed batches profiled: their matmuls take part of the wall time, so the MFU they alone
    # would allow is above the profiled window's own.
    breakdown = training["step_breakdown"]
    assert breakdown["batches"] == 2 and breakdown["computed_tokens"] == sum(training["ccexp"]["step_computed_tokens"][1:])
    assert breakdown["linear_matmul_s"] > 0 and breakdown["attention_matmul_s"] > 0
    assert breakdown["linear_matmul_s"] + breakdown["attention_matmul_s"] < breakdown["seconds"]
    assert 0 < breakdown["mfu_window"] < breakdown["mfu_bound"]
    # 4·N counts the tiny model's embedding, most of N, on every token: over the matmuls run the
    # ceiling is lower (4·N's can pass 1 here).
    assert 0 < breakdown["mfu_bound_strict"] < breakdown["mfu_bound"]
    assert "matmuls alone would allow" in printed and "over the matmuls run (of" in printed
    # What ran it: the commit and the libraries, and the machine's load at the start and after each part.
    assert results["code"]["commit"] and isinstance(results["code"]["uncommitted_changes"], bool)
    assert results["code"]["versions"]["torch"] == torch.__version__.split("+")[0] or \
        results["code"]["versions"]["torch"] == torch.__version__
    assert list(results["load_average"]) == ["start", "training", "generation", "memory"]
    assert "load average (1 min): " in printed and "unfinished" not in results
    # In turns, one optimizer step each, so drift of the machine's speed hits every side alike.
    # ccexp and the bare loop trade places every other round, so each follows HF's step as often.
    assert training["turns"] == ["ccexp", "bare_loop", "hf_trainer", "bare_loop", "ccexp", "hf_trainer",
                                 "ccexp", "bare_loop", "hf_trainer"]
    assert "ccexp's step ran first in 1 of 2 rounds, the bare loop's in 1: each order weighted alike" in printed
    assert results["machine"]["cpu_isa"] and isinstance(results["machine"]["cpu_bf16"], bool)
    assert "malloc_arena_max" in results["machine"]
    assert results["memory"]["qlora"]["peak_mb"] > results["memory"]["qlora"]["before_model_mb"]
    assert results["memory"]["qlora"]["measure"] == "peak RSS"
    # Each probe: one optimizer step, on the same batch for both methods.
    assert results["memory"]["lora"]["steps"] == results["memory"]["qlora"]["steps"] == 1
    assert results["memory"]["lora"]["tokens"] == results["memory"]["qlora"]["tokens"] > 0
    generation = results["generation"]
    # The prompt passes are timed within the runs they start: shorter than those runs.
    work = generation["prompts"] * generation["new_tokens_each"]
    assert 0 < generation["batched_prefill_s"] < work / generation["batched_tokens_per_s"]
    assert 0 < generation["single_prefill_s"] < work / generation["single_tokens_per_s"]
    aio = results["all_in_one"]
    assert 0 < aio["prefill_p50_s"] < aio["generate_p50_s"] and aio["decode_token_p50_s"] > 0
    # The batched side is ccexp's own loop, which computed the system prompt both prompts start with once;
    # generate's batch is measured beside it.
    assert generation["batched_loop"] == "ccexp" and generation["shared_prefix_tokens"] >= 16
    assert generation["generate_batched_tokens_per_s"] > 0
    # A ratio of two differences of timings: on the tiny model's 4 tokens, machine load can flip
    # either sign (seen with another job running), so only that it was computed is checked.
    assert math.isfinite(generation["decode_ratio"])
    # Wall time per part, and of the whole run (the issue's < 10 minutes), models and data included.
    seconds = results["seconds"]
    assert list(seconds) == ["training", "generation", "memory", "total"] and min(seconds.values()) > 0
    assert seconds["total"] >= seconds["training"] + seconds["generation"] + seconds["memory"]


def test_bench_parts_and_method(tmp_path, tiny_dir):
    """The GPU run (--model mistral_7b_random --method qlora) shrunk to two small layers, training
    only: all three sides train the 4-bit base, and only the training rows are reported. Batches
    grouped by prompt: the bare loop gets ccexp's, and packed rows compute each batch's shared
    prompt start once (rows of 1,024 tokens keep it: at 512, prompts lose their oldest tokens)."""
    out = tmp_path / "bench.json"
    small = ["model.arch.layers=2", "model.arch.hidden=64", "model.arch.heads=4", "model.arch.kv_heads=2",
             "model.arch.intermediate=128", "model.max_seq_len=1024", f"model.cache_dir={tiny_dir.parent}"]
    main(["--model", "mistral_7b_random", "--method", "qlora", "--parts", "training", "--steps", "1", "--warmup", "1",
          "--json", str(out), *small, "trainer.group_by=prompt"])
    results = json.loads(out.read_text())
    assert set(results) >= {"training", "ratios"} and not set(results) & {"generation", "memory", "merged"}
    assert sorted(results["ratios"]) == sorted(["training tokens/s vs HF Trainer", "final val loss gap vs HF Trainer",
                                                "MFU (4·N·tok/s ÷ matmul peak)", "Lightning path vs bare PyTorch loop"])
    assert results["args"]["method"] == "qlora"
    assert results["precision"] in ("bf16-mixed", "32-true")  # what auto became on this CPU, recorded
    sides = [results["training"][side] for side in ("ccexp", "bare_loop", "hf_trainer")]
    assert [side["base_weights"] for side in sides] == ["4-bit"] * 3
    assert not sides[0]["compiled"] and not sides[1]["compiled"]  # 4-bit bases stay eager, as auto leaves them
    assert all(math.isfinite(side["val_loss"]) for side in sides)
    assert list(results["seconds"]) == ["training", "total"]
    ours, bare, hf = sides
    assert ours["step_tokens"] == bare["step_tokens"] and ours["step_computed_tokens"] == bare["step_computed_tokens"]
    assert sum(ours["step_computed_tokens"]) < sum(ours["step_tokens"]) == sum(hf["step_tokens"])
    assert hf["step_computed_tokens"] == hf["step_tokens"]  # MFU counts what was computed


def test_a_failed_part_keeps_the_parts_measured_before_it(tmp_path, tiny_dir, capsys, monkeypatch):
    """The results file is written after each part: a memory probe killed by the kernel (out of
    memory) ends the run in one line naming the file, which keeps the training numbers and says
    which parts it lacks."""
    import subprocess
    from types import SimpleNamespace

    from ccexp.bench import memory
    from ccexp.bench.show import main as show

    killed = subprocess.CompletedProcess([], returncode=-9, stdout="", stderr="")
    # The probe's own subprocess module only: inductor compiles through subprocess.run too.
    monkeypatch.setattr(memory, "subprocess", SimpleNamespace(run=lambda *args, **kwargs: killed))
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "tiny", "--parts", "training,memory", "--steps", "1", "--warmup", "0", "--json", str(out)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"ccexp.bench: error: the lora memory probe (a child process) failed: killed by signal 9; the parts "
        f"measured before it are in {out}"]
    results = json.loads(out.read_text())
    assert results["unfinished"] == ["memory"] and "memory" not in results
    assert "training tokens/s vs HF Trainer" in results["ratios"] and list(results["seconds"]) == ["training", "total"]
    assert not list(tmp_path.glob("*.part"))  # written whole, then renamed
    show([str(out)])
    assert "unfinished: stopped before memory (the parts above were measured)" in capsys.readouterr().out


def test_bench_unknown_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "nosuch"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "ccexp.bench: error: model=nosuch: no such option, expected one of llama3_8b, local, mistral_7b, mistral_7b_random, qwen2_5_7b, smollm2_135m, tiny"


def test_bench_bad_parts_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--parts", "training,speed"])
    assert exit_info.value.code == 2
    assert "--parts: expected a comma-separated subset of training,generation,memory, got 'training,speed'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv,error", [
    (["--steps", "0"], "argument --steps: expected an integer >= 1, got '0'"),
    (["--steps", "five"], "argument --steps: expected an integer >= 1, got 'five'"),
    (["--warmup", "-1"], "argument --warmup: expected an integer >= 0, got '-1'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--prompts", "1"], "argument --prompts: expected an integer >= 2, got '1'"),
    (["--new-tokens", "1"], "argument --new-tokens: expected an integer >= 2, got '1'"),
    (["--model", "tiny", "--bogus"], "unrecognized arguments: --bogus"),
    # An override of what a flag sets would win silently, under a header that says otherwise.
    (["trainer.batch_size=8"], "trainer.batch_size=8: the bench sets trainer.batch_size from --batch-size"),
    (["model=tiny"], "model=tiny: the bench sets model from --model"),
    (["+trainer.max_steps=3"], "+trainer.max_steps=3: the bench sets trainer.max_steps from --steps + --warmup"),
    # A group's name chooses as the group does: method.name=qlora trained every side 4-bit under a "lora" header.
    (["method.name=qlora"], "method.name=qlora: the bench sets method.name from --method"),
    (["backend.name=mlx"], "backend.name=mlx: the bench sets backend.name from --device"),
    (["data_size.val=2"], "data_size.val=2: the bench sets data_size.val itself: every side trains the same steps, "
                          "then is scored on the same examples"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"ccexp.bench: error: {error} (--help for usage)"]


def test_an_unwritable_results_file_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """The results would be lost after minutes of measuring: the path is checked first."""
    (tmp_path / "file").write_text("")
    for json_path, error in ((tmp_path, f"{tmp_path} is a directory, expected a file to write"),
                             (tmp_path / "file" / "r.json", f"cannot write {tmp_path / 'file' / 'r.json'}: "
                              f"{tmp_path / 'file'} is not a folder this user can write to")):
        with pytest.raises(SystemExit):
            main(["--json", str(json_path)])
        assert capsys.readouterr().err.splitlines() == [f"ccexp.bench: error: argument --json: {error} "
                                                        "(--help for usage)"]
    with pytest.raises(SystemExit):  # root passes os.access there too, yet /proc takes no file
        main(["--json", "/proc/r.json"])
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ccexp.bench: error: argument --json: cannot write /proc/r.json: /proc ")
    monkeypatch.chdir(tmp_path)  # the default, benchmarks/results, below a file named benchmarks
    (tmp_path / "benchmarks").write_text("")
    with pytest.raises(SystemExit):
        main(["--model", "tiny"])
    err = capsys.readouterr().err  # the file the run would have written, named by its start
    assert re.search(r"argument --json: cannot write benchmarks/results/[-_0-9]{19}\.json: benchmarks is not a "
                     "folder", err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_bench_without_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("ccexp.bench: error: --device cuda: torch sees no CUDA GPU on this "
                                               "machine; use --device cpu, or benchmarks/offline/run.sh on the GPU machine")


def test_lightning_vs_bare_reports_the_step_by_step_spread():
    """Same batches in turns: each step's bare/ccexp time ratio after warm-up shows the noise."""
    from ccexp.bench.__main__ import report_rows

    side = {"val_loss": 1.0}
    results = {"machine": {}, "args": {"warmup": "1"}, "training": {
        "ccexp": {**side, "tokens_per_s": 100.0, "step_seconds": [9.0, 2.0, 4.0]},
        "bare_loop": {**side, "tokens_per_s": 95.0, "step_seconds": [1.0, 1.9, 4.4]},
        "hf_trainer": {**side, "tokens_per_s": 50.0}, "frozen_params": 10, "matmul_peak_flops": 1e9}}
    row = next(r for r in report_rows(results) if r[0] == "Lightning path vs bare PyTorch loop")
    assert row[4] == "100 vs 95 tok/s; step by step 0.95–1.10"


def test_lightning_vs_bare_weighs_each_order_of_the_pair_alike():
    """Three timed rounds after the warm-up's: the bare loop's step first in two (as the bench's
    odd rounds have it), ccexp's in one. A step timed first (right after HF's) ran slower here: the
    plain ratio would credit ccexp with the extra round's position."""
    from ccexp.bench.__main__ import report_rows

    side = {"val_loss": 1.0}
    turns = ["ccexp", "bare_loop", "hf_trainer", "bare_loop", "ccexp", "hf_trainer",
             "ccexp", "bare_loop", "hf_trainer", "bare_loop", "ccexp", "hf_trainer"]
    ours, bare = [9.0, 2.0, 2.2, 2.0], [1.0, 2.2, 2.0, 2.2]  # after warm-up: first 2.2, second 2.0, on either side
    results = {"machine": {}, "args": {"warmup": "1"}, "training": {
        "ccexp": {**side, "tokens_per_s": 100 / sum(ours[1:]), "step_seconds": ours},
        "bare_loop": {**side, "tokens_per_s": 100 / sum(bare[1:]), "step_seconds": bare},
        "hf_trainer": {**side, "tokens_per_s": 10.0}, "frozen_params": 10, "matmul_peak_flops": 1e9, "turns": turns,
        "orders_weighted_alike": True}}
    [row] = [r for r in report_rows(results) if r[0] == "Lightning path vs bare PyTorch loop"]
    # Plain: 6.4 / 6.2 s = 1.03; by order: 2.0/2.2 with ccexp first, (2.2+2.2)/(2.0+2.0) with the bare loop first.
    assert row[1] == pytest.approx(1.0)
    assert row[4].endswith("ccexp's step ran first in 1 of 3 rounds, the bare loop's in 2: each order weighted "
                           "alike (0.91 and 1.10)")
    del results["training"]["orders_weighted_alike"]  # a file of the bench before it: its plain ratio, as recorded
    [row] = [r for r in report_rows(results) if r[0] == "Lightning path vs bare PyTorch loop"]
    assert row[1] == pytest.approx(6.4 / 6.2) and "order" not in row[4]


def test_the_cpu_peak_is_the_fastest_product_over_every_size(monkeypatch):
    """One square size alone misreads the ceiling (its speed moves with where the matrices land):
    the peak is the best single product over all of CPU_PEAK_SIZES, each timed at least twice."""
    from ccexp.bench import training

    monkeypatch.setattr(training, "CPU_PEAK_SIZES", (24, 16, 32, 8))
    monkeypatch.setattr(training, "CPU_PEAK_SECONDS", 0.0)
    calls = iter(range(10_000))  # a clock that moves 1 ms per reading: every product takes 1 ms
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(calls) * 1e-3)
    assert training.matmul_peak_flops(torch.float32) == pytest.approx(2 * 32**3 / 1e-3)
    # per size: one reading to start, two per timed product (two of them), one to stop
    assert next(calls) == 4 * (1 + 2 * 2 + 1)


def test_the_bench_sees_one_gpu_as_its_ccexp_side_trains_on():
    """HF Trainer takes every visible GPU (DataParallel), ccexp's side one: a CUDA bench restarts
    with the first of them alone; a CPU bench, or one GPU already chosen, as it is."""
    from ccexp.bench.__main__ import restart_settings

    arena = {"MALLOC_ARENA_MAX": "1"}
    assert restart_settings(["--device", "cuda"], arena) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert restart_settings(["--device", "cuda"], {**arena, "CUDA_VISIBLE_DEVICES": "2,3"}) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert restart_settings(["--device", "cuda"], {**arena, "CUDA_VISIBLE_DEVICES": "1"}) == {}
    assert restart_settings(["--device", "cpu"], arena) == {}
    assert restart_settings(["--device"], arena) == {}  # the bench's own parser says what is wrong, not this one
    assert restart_settings(["--device", "cuda"], {**arena, "CUDA_VISIBLE_DEVICES": ",1"}) == {"CUDA_VISIBLE_DEVICES": "1"}


def test_the_bench_command_restarts_with_one_malloc_arena():
    """``python -m ccexp.bench`` re-executes itself with MALLOC_ARENA_MAX=1 (the training sides'
    threads would each keep their freed memory), its arguments intact; not again once it is set."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['ccexp.bench', '--parts', 'speed']; "
            "from ccexp.bench.__main__ import _restart; _restart(); print('not re-executed')")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    # Re-executed as the bench, which parsed the arguments it was given.
    assert out.returncode == 2 and "not re-executed" not in out.stdout, out.stderr
    assert "--parts: expected a comma-separated subset of training,generation,memory, got 'speed'" in out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "1"}, capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "not re-executed", out.stderr


def test_a_config_error_in_one_side_is_still_one_line(capsys, monkeypatch, tiny_dir, tmp_path):
    """The sides run in threads: an error in one reaches the bench as itself, not wrapped."""
    from ccexp.bench import training
    from ccexp.config import ConfigError

    def bare_loop(*args, **kwargs):
        raise ConfigError("trainer.batch_size: expected an integer >= 1, got 0")

    monkeypatch.setattr(training, "run_bare_loop", bare_loop)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "tiny", "--parts", "training", "--steps", "1", "--warmup", "1",
              "--json", str(tmp_path / "bench.json")])  # never the repo's benchmarks/results/
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "ccexp.bench: error: trainer.batch_size: expected an integer >= 1, got 0"  # after the model's loading bar


def test_offline_gpu_run_without_its_bundle_is_one_line(tmp_path):
    """benchmarks/offline/run.sh (the GPU bench on a machine without pip access) names the
    missing bundle and the script that makes it, before it installs or builds anything."""
    import shutil
    import subprocess

    script = tmp_path / "benchmarks" / "offline" / "run.sh"
    script.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "benchmarks" / "offline" / "run.sh", script)
    out = subprocess.run(["bash", str(script), str(tmp_path / "results")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (f"run.sh: no .offline/ bundle in {tmp_path}: run benchmarks/offline/bundle.sh "
                                  "where pip works, and copy it along")
    assert not (tmp_path / "results").exists()


def test_offline_gpu_run_uses_the_machines_package_where_the_bundled_one_does_not_import(tmp_path):
    """transformers 5.25 (what bundle.sh packs from this venv) needs huggingface_hub >= 2.4, which
    the GPU image lacks (1.33): ``import transformers`` failed there, a traceback before anything
    ran. run.sh checks each bundled package's import first, and one that fails beside the
    machine's packages gives way to the machine's own copy, said in one line. A bundled package
    the machine lacks that imports transformers (peft) imports once transformers has given way:
    checked first in name order, it stopped run.sh, "none of its own"."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    root = tmp_path / "checkout"
    script = root / "benchmarks" / "offline" / "run.sh"
    script.parent.mkdir(parents=True)
    for name in ("run.sh", "site_check.py"):
        shutil.copy(Path(__file__).parents[1] / "benchmarks" / "offline" / name, script.parent / name)
    (root / "src").symlink_to(Path(__file__).parents[1] / "src")
    (root / ".offline" / "tokenizer").mkdir(parents=True)
    (root / ".offline" / "tokenizer" / "tokenizer.json").write_text("{}")
    (root / ".offline" / "wheels").mkdir()
    for name, code in [("transformers", 'raise ImportError("huggingface-hub>=2.4.0,<3.0 is required")\n'),
                       ("aadapters", "import transformers\n")]:  # before transformers in name order, as peft
        info = f"{name}-99.0.dist-info"
        with zipfile.ZipFile(root / ".offline" / "wheels" / f"{name}-99.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{name}/__init__.py", code)
            wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 99.0\n")
            wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            wheel.writestr(f"{info}/RECORD", f"{name}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    # One malloc arena and --device cpu: the bench need not restart itself (a second import).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "CCEXP_OFFLINE_SITE": str(tmp_path / "site"), "MALLOC_ARENA_MAX": "1"}
    # --steps 0: the bench refuses it in one line once its modules (transformers among them) import.
    out = subprocess.run(["bash", str(script), str(tmp_path / "results"), "training", "--device", "cpu", "--steps", "0"],
                         capture_output=True, text=True, env=env)
    import transformers

    assert out.stderr.strip().splitlines() == [
        "run.sh: the bundled transformers does not import here (ImportError: huggingface-hub>=2.4.0,<3.0 is "
        f"required); this machine's transformers {transformers.__version__} runs instead",
        "ccexp.bench: error: argument --steps: expected an integer >= 1, got '0' (--help for usage)"], out.stderr
    assert out.returncode == 2


@pytest.mark.parametrize("script,argv,line", [
    ("data_generation.py", ["--size", "huge"], "data_generation.py: error: data_size=huge: no such option, expected one of full, small, tiny"),
    ("mlx_vs_mlx_lm.py", ["--steps", "0"], "mlx_vs_mlx_lm.py: error: argument --steps: expected an integer >= 1, got '0'"),
    ("mlx_vs_mlx_lm.py", ["--model", "nosuch"], "mlx_vs_mlx_lm.py: error: model=nosuch: no such option, expected one of llama3_8b, local, mistral_7b, mistral_7b_random, qwen2_5_7b, smollm2_135m, tiny"),
    ("compiled_training.py", ["--rounds", "0"], "compiled_training.py: error: argument --rounds: expected an integer >= 1, got '0'"),
    ("compiled_training.py", ["--model", "nosuch"], "compiled_training.py: error: model=nosuch: no such option, expected one of llama3_8b, local, mistral_7b, mistral_7b_random, qwen2_5_7b, smollm2_135m, tiny"),
    ("huge_pages.py", ["--rounds", "0"], "huge_pages.py: error: argument --rounds: expected an integer >= 1, got '0'"),
    ("huge_pages.py", ["--model", "nosuch"], "huge_pages.py: error: model=nosuch: no such option, expected one of llama3_8b, local, mistral_7b, mistral_7b_random, qwen2_5_7b, smollm2_135m, tiny"),
])
def test_the_benchmark_scripts_bad_input_is_one_line(script, argv, line):
    """benchmarks/*.py, as the README runs them: bad input one line, before any work."""
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    out = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"{line} (--help for usage)"]


def test_strict_mfu_counts_the_embeddings_only_where_they_run():
    """4·N counts every parameter on every token; over the matmuls run, the input embedding (a
    lookup) counts nothing and the head counts on the positions it runs on only."""
    from ccexp.bench.training import mfu, mfu_strict

    alone = {"computed_tokens": 1000, "head_rows": 10, "seconds": 2.0}
    tied = {"embedding": 30, "head": 30, "tied": True}
    # 100 frozen parameters, 30 of them the tied embedding: 4·70·1000 + 4·30·10 FLOPs in 2 s.
    assert mfu_strict(alone, 100, tied, 1e6) == pytest.approx((4 * 70 * 1000 + 4 * 30 * 10) / 2.0 / 1e6)
    assert mfu_strict(alone, 100, tied, 1e6) < mfu(1000 / 2.0, 100, 1e6)
    untied = {"embedding": 30, "head": 20, "tied": False}  # both in the 100
    assert mfu_strict(alone, 100, untied, 1e6) == pytest.approx((4 * 50 * 1000 + 4 * 20 * 10) / 2.0 / 1e6)


def test_hf_trainers_side_steps_with_the_others_optimizer(monkeypatch, tiny_dir):
    """transformers 5 defaults to fused AdamW (torch >= 2.8), where ccexp and the bare loop step
    with torch's plain AdamW: the same optimizer on every side, as the bench says."""
    import transformers

    from ccexp.bench import training
    from ccexp.bench.setup import compose_run_config

    seen = {}

    class Stop(Exception):
        pass

    class Trainer:
        def __init__(self, model, args, **kwargs):
            seen["optim"] = args.optim

        def train(self):
            raise Stop

    monkeypatch.setattr(transformers, "Trainer", Trainer)
    rc = compose_run_config(["model=tiny", "logger=none", "trainer.max_steps=1"])
    with pytest.raises(Stop):
        training.run_hf_trainer(rc, tiny_dir, [], [], 0, "cpu")
    assert seen["optim"] == "adamw_torch"


def test_mlx_vs_mlx_lm_runs_end_to_end_on_tiny(tiny_dir):
    """benchmarks/mlx_vs_mlx_lm.py as the README runs it, on the tiny model: both sides train and
    the ratio is printed (a changed ccexp signature the script calls once broke it silently)."""
    import subprocess
    import sys

    pytest.importorskip("mlx_lm")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mlx_vs_mlx_lm.py"
    out = subprocess.run([sys.executable, str(path), "--model", "tiny", "--steps", "1", "--warmup", "0",
                          "--examples", "4", "--batch-size", "1", "--max-seq-len", "256"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ratio ccexp / mlx-lm:" in out.stdout
    assert "ccexp MLXBackend.fit" in out.stdout and "mlx_lm.tuner.trainer.train" in out.stdout


def test_the_bench_takes_a_task_mix_given_whole_as_a_run_does():
    """Overrides "as for python -m ccexp": task_mix.weights={issue: 1} is that one task there, where
    the bench merged it into task_mix=all's and measured all six."""
    from ccexp.bench.setup import compose_run_config

    assert dict(compose_run_config(["model=tiny", "task_mix.weights={issue: 1}"]).task_mix.weights) == {"issue": 1}
