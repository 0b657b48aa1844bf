"""python -m ccexp.bench end to end on the tiny model: every ratio is measured and written
(no timing is asserted: speed targets live in the benchmark's output, not in tests)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ccexp.bench.__main__ import main


def test_bench_measures_every_ratio_on_tiny(tmp_path, tiny_dir):
    out = tmp_path / "bench.json"
    main(["--model", "tiny", "--steps", "2", "--warmup", "1", "--prompts", "2", "--new-tokens", "4", "--json", str(out)])
    results = json.loads(out.read_text())
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
    assert results["machine"]["cpu_isa"] and isinstance(results["machine"]["cpu_bf16"], bool)
    assert results["memory"]["qlora"]["peak_mb"] > results["memory"]["qlora"]["before_model_mb"]
    assert results["memory"]["qlora"]["measure"] == "peak RSS"
    generation = results["generation"]
    assert 0 < generation["batched_prefill_s"] and 0 < generation["single_prefill_s"] and generation["decode_ratio"] > 0


def test_bench_parts_and_method(tmp_path, tiny_dir):
    """The GPU run (--model mistral_7b_random --method qlora) shrunk to two small layers, training
    only: all three sides train the 4-bit base, and only the training rows are reported."""
    out = tmp_path / "bench.json"
    small = ["model.arch.layers=2", "model.arch.hidden=64", "model.arch.heads=4", "model.arch.kv_heads=2",
             "model.arch.intermediate=128", "model.max_seq_len=512", f"model.cache_dir={tiny_dir.parent}"]
    main(["--model", "mistral_7b_random", "--method", "qlora", "--parts", "training", "--steps", "1", "--warmup", "1",
          "--json", str(out), *small])
    results = json.loads(out.read_text())
    assert set(results) >= {"training", "ratios"} and not set(results) & {"generation", "memory", "merged"}
    assert sorted(results["ratios"]) == sorted(["training tokens/s vs HF Trainer", "final val loss gap vs HF Trainer",
                                                "MFU (4·N·tok/s ÷ matmul peak)", "Lightning path vs bare PyTorch loop"])
    assert results["args"]["method"] == "qlora"
    sides = [results["training"][side] for side in ("ccexp", "bare_loop", "hf_trainer")]
    assert [side["base_weights"] for side in sides] == ["4-bit"] * 3
    assert all(math.isfinite(side["val_loss"]) for side in sides)


def test_bench_unknown_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "nosuch"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "ccexp.bench: error: In 'config': Could not find 'model/nosuch'"


def test_bench_bad_parts_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--parts", "training,speed"])
    assert exit_info.value.code == 2
    assert "--parts: expected a comma-separated subset of training,generation,memory, got 'training,speed'" in \
        capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_bench_without_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("ccexp.bench: error: backend=cuda: torch sees no CUDA GPU")
