"""Each speed-up keeps results equivalent: the optimised path's loss curve matches the plain one
on the tiny model within a tolerance (bf16 rounding), and the benchmark's sides do the same work."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, compose_cfg

from ccexp.run import run

QUIET = (*FAST, "eval.generate_examples=0", "eval.baseline=false", "trainer.val_every_n_steps=1",
         "trainer.early_stopping_patience=0", "backend=cpu", "backend.precision=bf16-mixed")


def test_bf16_base_weights_match_fp32_weights_under_autocast(tmp_path):
    plain = run(compose_cfg(*QUIET, "backend.base_dtype=float32"), tmp_path / "fp32")
    fast = run(compose_cfg(*QUIET, "backend.base_dtype=bfloat16"), tmp_path / "bf16")
    a = [h["val_loss"] for h in plain["train/val_history"]]
    b = [h["val_loss"] for h in fast["train/val_history"]]
    assert len(a) == len(b) == 4
    # The 4 steps lower the loss by ~0.02 (a random tiny model); bf16 weights move it by ~2e-4.
    assert b == pytest.approx(a, abs=2e-3)
    assert a[0] - a[-1] > 0.01 and b[0] - b[-1] > 0.01  # both still learn, by more than the tolerance


def _loss_curve(tmp_path, name, *overrides):
    result = run(compose_cfg(*QUIET, "trainer.max_steps=6", *overrides), tmp_path / name)
    return [h["val_loss"] for h in result["train/val_history"]]


def test_varlen_attention_and_shared_dropout_keep_the_loss_curve(tmp_path, monkeypatch):
    """The defaults (varlen attention, one q/k/v dropout mask, contiguous head input, no LoRA input
    casts) against transformers' SDPA with peft's independent masks and none of the rewrites, on
    the same padded batches (packing: tests/test_packing.py)."""
    fast = _loss_curve(tmp_path, "fast", "backend.packing=false")
    import ccexp.backends.speedups as speedups

    monkeypatch.setattr(speedups, "apply", lambda *args, **kwargs: None)  # none of the rewrites
    plain = _loss_curve(tmp_path, "plain", "backend.attention=sdpa", "backend.packing=false",
                        "method.shared_dropout=false")
    assert len(fast) == len(plain) == 6
    # Different dropout masks (shared vs independent) and bf16 rounding: close, not equal. The 6
    # steps lower the loss by ~0.04; the paths differ by ~3e-4, so 3e-3 fails a path that stopped learning.
    assert fast == pytest.approx(plain, abs=3e-3)
    assert fast[0] - fast[-1] > 0.02 and plain[0] - plain[-1] > 0.02


def test_keep_mask_has_the_dropout_rate_in_every_field_and_follows_the_seed():
    from ccexp.backends.speedups import keep_mask

    torch.manual_seed(3)
    a = keep_mask(torch.Size([300, 701]), 0.05, torch.device("cpu"), torch.bfloat16)
    torch.manual_seed(3)
    b = keep_mask(torch.Size([300, 701]), 0.05, torch.device("cpu"), torch.bfloat16)
    assert a.shape == (300, 701) and a.dtype == torch.bfloat16
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    dropped = a == 0
    assert abs(dropped.float().mean().item() - 0.05) < 0.003  # 210,300 draws: ±6 standard errors
    # Each int64 draw gives four elements, one per 16-bit field: each field has the rate (a field
    # short of random bits, like the top one of a 63-bit draw, would drop nothing or twice as much).
    fields = dropped.reshape(-1)[:210_000].view(-1, 4).float().mean(0)
    assert ((fields - 0.05).abs() < 0.006).all(), fields
    half = keep_mask(torch.Size([100_000]), 0.5, "cpu", torch.float32)
    assert abs(half.mean().item() - 0.5) < 0.01
    assert keep_mask(torch.Size([1000]), 0.0, "cpu", torch.float32).eq(1).all()
    assert keep_mask(torch.Size([1000]), 1.0, "cpu", torch.float32).eq(0).all()


def test_shared_dropout_reuses_its_mask_only_for_the_same_tensor():
    from ccexp.backends.speedups import SharedDropout

    torch.manual_seed(0)
    drop = SharedDropout(0.5).train()
    x = torch.ones(64, 64)
    first, again, other = drop(x), drop(x), drop(x.clone())
    assert first is again
    assert not torch.equal(first, other)
    assert set(first.unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept values scaled by 1/(1-p)
    assert 0.4 < (first == 0).float().mean() < 0.6
    assert drop.eval()(x) is x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_shared_dropout_values_and_gradients_are_bitwise_those_of_scaling_then_zeroing(dtype):
    """One addcmul each way (ScaledKeep) instead of a product with the scale and masked_fill_ (a
    scalar loop on the CPU): the same values and input gradients, bit for bit, the scale rounded
    once as the product with a Python float rounds it."""
    from ccexp.backends.speedups import SharedDropout, keep_mask

    x = torch.randn(37, 29, dtype=dtype, requires_grad=True)
    upstream = torch.randn(37, 29, dtype=dtype)
    torch.manual_seed(5)
    ours = SharedDropout(0.1).train()(x)
    (ours * upstream).sum().backward()
    ours_grad, x.grad = x.grad, None
    torch.manual_seed(5)  # the same draws
    dropped = keep_mask(x.shape, 0.1, "cpu", torch.bool).logical_not()
    reference = (x * (1 / 0.9)).masked_fill(dropped, 0)
    (reference * upstream).sum().backward()
    assert dropped.any() and torch.equal(ours, reference) and torch.equal(ours_grad, x.grad)


def _lora_pair(tiny_dir):
    """The tiny model with a LoRA adapter (B not zero, so the update counts), twice: peft's
    layers, and a copy with ``fuse_lora_update``."""
    import copy

    from peft import LoraConfig, get_peft_model

    from ccexp.backends import speedups
    from ccexp.models import load_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    plain = get_peft_model(load_model(tiny_dir, torch.float32), config)
    fused = copy.deepcopy(plain)
    assert speedups.fuse_lora_update(fused) == 3 * fused.config.num_hidden_layers
    return plain, fused


def _logits_and_grads(model, ids, autocast: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    logits.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return logits.detach().float(), grads


def _relative_errors(grads: dict, reference: dict) -> list[float]:
    return [float((grads[n] - reference[n]).norm() / reference[n].norm()) for n in reference]


def test_fused_lora_update_gives_peft_values_and_gradients(tiny_dir):
    from peft.tuners.lora import Linear

    plain, fused = _lora_pair(tiny_dir)
    ids = torch.randint(5, 1000, (2, 21), generator=torch.Generator().manual_seed(1))
    a, reference = _logits_and_grads(plain, ids, autocast=False)
    b, grads = _logits_and_grads(fused, ids, autocast=False)
    assert torch.allclose(a, b, atol=1e-5)  # fp32: the same sums, up to float rounding
    assert grads.keys() == reference.keys()
    assert max(_relative_errors(grads, reference)) < 1e-4
    # bf16 autocast: peft rounds the update, its scaled copy and the sum; addmm rounds the sum
    # once. Against the fp32 gradients the fused path is no further off than peft's own.
    a16, plain16 = _logits_and_grads(plain, ids, autocast=True)
    b16, fused16 = _logits_and_grads(fused, ids, autocast=True)
    assert torch.allclose(a16, b16, atol=0.05, rtol=0.05)
    plain_error = sum(_relative_errors(plain16, reference)) / len(reference)
    fused_error = sum(_relative_errors(fused16, reference)) / len(reference)
    assert fused_error <= 1.1 * plain_error, (fused_error, plain_error)
    layer = fused.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, Linear) and type(layer) is not Linear
    assert fused.state_dict().keys() == plain.state_dict().keys()


def test_fused_lora_update_leaves_peft_to_its_own_cases(tiny_dir, tmp_path):
    """Adapter off, merged, saved and loaded back, copied by pickle: as peft has it."""
    import pickle

    from peft import PeftModel

    from ccexp.models import load_model

    plain, fused = _lora_pair(tiny_dir)
    ids = torch.randint(5, 1000, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with plain.disable_adapter(), fused.disable_adapter():
            assert torch.equal(plain(input_ids=ids).logits, fused(input_ids=ids).logits)
        adapted = fused(input_ids=ids).logits
        assert torch.allclose(pickle.loads(pickle.dumps(fused))(input_ids=ids).logits, adapted)
        fused.save_pretrained(tmp_path)  # the saved adapter, on peft's own layers
        loaded = PeftModel.from_pretrained(load_model(tiny_dir, torch.float32), tmp_path)
        assert torch.allclose(loaded(input_ids=ids).logits, adapted, atol=1e-5)
        fused.merge_adapter()
        assert torch.allclose(fused(input_ids=ids).logits, adapted, atol=1e-4)


def test_gradient_checkpointing_keeps_the_loss_curve(tmp_path):
    """Recomputed layers draw the same dropout masks (RNG state kept), so the curve is the same."""
    plain = _loss_curve(tmp_path, "plain")
    checkpointed = _loss_curve(tmp_path, "gc", "method.gradient_checkpointing=true")
    assert checkpointed == pytest.approx(plain, rel=1e-3)


def test_release_freed_memory_sets_glibcs_threshold_in_its_own_process():
    """In a child: the setting is per process and would slow the rest of the suite."""
    import subprocess
    import sys

    code = "from ccexp.backends.speedups import release_freed_memory as r; print(r())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("True" if sys.platform == "linux" else "False")


@pytest.mark.parametrize("keep", [True, False])
def test_freed_memory_is_kept_for_the_next_tensors_unless_released(tmp_path, keep):
    """A CPU backend keeps freed heap memory for reuse (``keep_freed_memory``): a prompt pass's
    layers free and allocate tensors of a few MB each, and must not fault their pages in again
    layer after layer. With ``backend.release_freed_memory`` every big tensor gets pages of its
    own, which do fault. In a child: the settings are per process."""
    import subprocess
    import sys

    code = f"""
import resource, torch
from conftest import FAST, compose_cfg
from ccexp.backends.lightning import TorchBackend
from ccexp.config import validate
from ccexp.models import resolve_model_dir
rc = validate(compose_cfg(*FAST, "backend=cpu", "backend.release_freed_memory={str(not keep).lower()}"))
TorchBackend(rc, "cpu", resolve_model_dir(rc.model))
def layer():  # transient tensors of 8 MB, all freed before the next layer
    x = torch.ones(2 << 20)
    return float(torch.softmax((x * 2) + x, 0)[0])
for _ in range(3):
    layer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    layer()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    if sys.platform != "linux":
        pytest.skip("glibc's malloc settings")
    # On 4 KB pages, as glibc's thresholds are what is tested: on huge pages (ccexp's default, below)
    # a released 8 MB tensor faults 4 pages in, not 2,048.
    env = {**__import__("os").environ, "THP_MEM_ALLOC_ENABLE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=__import__("pathlib").Path(__file__).parent).stdout.strip().splitlines()[-1]
    faults = int(out)
    # Each layer's 32 MB is 8,192 pages: released (or with glibc's own thresholds) 61–82k faults in 10 layers. Kept,
    # 0 but for an occasional 8 MB block that another thread's allocation moved (2,048 in some layers of some runs).
    assert faults < 2 * 8192 if keep else faults > 4 * 8192, faults


@pytest.mark.parametrize("setting,expected", [(None, "1"), ("0", "0")])
def test_import_ccexp_puts_big_tensors_on_huge_pages_unless_told_not_to(setting, expected):
    """``import ccexp`` sets THP_MEM_ALLOC_ENABLE=1 (benchmarks/huge_pages.py) unless the environment
    says otherwise, and PyTorch then backs a big tensor with huge pages where the kernel allows
    them. In a child: PyTorch reads the setting once, at its first allocation."""
    import os
    import subprocess
    import sys

    from ccexp.backends.speedups import huge_pages_mode

    if sys.platform != "linux":
        pytest.skip("transparent huge pages are a Linux feature")
    code = """
import os, ccexp, torch
x = torch.ones(16 << 20)  # 64 MB
huge = next(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages"))
print(os.environ["THP_MEM_ALLOC_ENABLE"], huge)
"""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    value, huge_kb = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    env=env).stdout.split()
    assert value == expected
    if huge_pages_mode() == "madvise":  # "always" gives huge pages either way, "never" none
        assert (int(huge_kb) >= 32 << 10) == (expected == "1"), huge_kb


needs_cxx = pytest.mark.skipif(__import__("ccexp.backends.speedups", fromlist=["x"]).cpp_compiler() is None,
                               reason="torch.compile's CPU code needs a C++ compiler")


@needs_cxx
def test_compiled_norms_and_mlps_keep_the_loss_curve(tmp_path):
    """backend.compile=true: inductor's fused RMS norms and SwiGLU against the eager modules, on
    the same packed batches with the same dropout masks."""
    eager = run(compose_cfg(*QUIET, "trainer.max_steps=6", "backend.compile=false"), tmp_path / "eager")
    compiled = run(compose_cfg(*QUIET, "trainer.max_steps=6", "backend.compile=true"), tmp_path / "compiled")
    assert eager["train/compiled"] == 0.0 and compiled["train/compiled"] == 1.0
    curves = [[h["val_loss"] for h in r["train/val_history"]] for r in (eager, compiled)]
    assert len(curves[1]) == 6 and curves[1] == pytest.approx(curves[0], rel=2e-3)  # bf16: fused vs stepwise rounding


def test_compiled_modules_keep_their_own_forward_without_grad(tiny_dir):
    """Evaluation and generation (no grad) run the eager forward: the same logits, bit for bit,
    and nothing compiled; with autograd on, the compiled one runs."""
    from ccexp.backends import speedups
    from ccexp.models import load_model

    model = load_model(tiny_dir, torch.float32).eval()
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    layers = model.config.num_hidden_layers
    assert speedups.compile_for_training(model) == 3 * layers + 1  # two norms and the MLP per layer, the final norm
    assert speedups.compile_for_training(model) == 0  # not wrapped twice
    calls = []
    for module in model.modules():
        if isinstance(module.forward, speedups.TrainingCompiled):
            wrapped = module.forward

            def record(*args, _eager=wrapped.eager, **kwargs):
                calls.append(1)
                return _eager(*args, **kwargs)

            wrapped.compiled = record
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    assert not calls
    model(input_ids=ids).logits.sum().backward()
    assert len(calls) == 3 * layers + 1


def _backend(*overrides):
    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", *overrides))
    return TorchBackend(rc, "cpu", resolve_model_dir(rc.model))


def test_compile_auto_waits_for_runs_long_enough_to_pay(monkeypatch):
    from ccexp.backends import speedups

    compiled = []
    monkeypatch.setattr(speedups, "compile_for_training", lambda model: compiled.append(model))
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: "g++")
    backend = _backend()  # backend.compile=auto
    assert not backend.compile_for_training(speedups.COMPILE_MIN_STEPS - 1) and not compiled
    assert backend.compile_for_training(speedups.COMPILE_MIN_STEPS) and compiled == [backend.model]
    assert _backend("backend.compile=true").compile_for_training(1)
    assert not _backend("backend.compile=false").compile_for_training(10_000)
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: None)
    assert not backend.compile_for_training(10_000)  # auto: no compiler, no compiling


def test_compile_auto_leaves_4bit_bases_eager(monkeypatch):
    from ccexp.backends import speedups

    monkeypatch.setattr(speedups, "cpp_compiler", lambda: "g++")
    assert not _backend("method=qlora").compile_for_training(10_000)


def test_compile_settings_are_checked_in_one_line(monkeypatch, tmp_path):
    from ccexp.backends import speedups
    from ccexp.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^backend.compile: expected auto, true or false"):
        validate(compose_cfg(*FAST, "backend.compile=sometimes"))
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: None)
    # An evaluation of a compile=true run's adapter compiles nothing: its backend builds.
    backend = _backend("backend.compile=true")
    with pytest.raises(ConfigError, match=r"^backend.compile: true needs a C\+\+ compiler"):
        backend.compile_for_training(total_steps=10)  # any training, the bench's too
    # A run finds out before its model loads.
    monkeypatch.setattr("ccexp.run.build_backend", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=r"^backend.compile: true needs a C\+\+ compiler"):
        run(compose_cfg(*FAST, "backend.compile=true"), tmp_path)
