"""backend.packed_weights: generation on oneDNN-prepacked weights gives the adapted model's
logits (bf16: the adapter beside the packed base, bit for bit; fp32: merged, up to fp32
rounding), and the model is untouched after it."""

from __future__ import annotations

import pytest
import torch

from ccexp.backends import packed

pytestmark = pytest.mark.skipif(not packed.available(), reason="needs oneDNN on an x86 CPU")
BF16 = torch.bfloat16 in packed._dtypes() if packed.available() else False
# fp32 packs on any x86 CPU; bf16 only where the CPU has bf16 dot products.
PRECISIONS = ["32-true", pytest.param("bf16-mixed", marks=pytest.mark.skipif(not BF16, reason="no AVX512-BF16/AMX"))]
# How far packed logits may sit from the unpacked model's, relative to the adapter's effect
# (fp32: merged, one rounding of the merged weight) or absolutely (the base alone: the same
# products on another weight layout). bf16 adds the adapter beside the base, as training does.
TOLERANCE = {"32-true": (1e-4, 1e-4), "bf16-mixed": (0.0, 0.02)}


def _backend(*overrides: str):
    from conftest import FAST, compose_cfg

    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", *overrides))
    return TorchBackend(rc, "cpu", resolve_model_dir(rc.model))


def _train_a_little(model: torch.nn.Module, seed: int) -> None:
    """LoRA's B starts at zero: give the adapter an effect to merge."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.05


def _logits(backend, ids: torch.Tensor, adapter: bool, packed_on: bool) -> torch.Tensor:
    with backend._net(adapter) as net, (backend.inference_weights(adapter) if packed_on else torch.no_grad()):
        return net(input_ids=ids).logits.float()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("rows", [40, 90])  # 2 × 90 rows: fp32 takes the plain (merged) weight
def test_packed_weights_give_the_adapted_model(precision, rows):
    backend = _backend("method=lora", f"backend.precision={precision}")
    _train_a_little(backend.model, 0)
    ids = torch.randint(3, backend.model.config.vocab_size, (2, rows), generator=torch.Generator().manual_seed(1))
    on, off = _logits(backend, ids, True, False), _logits(backend, ids, False, False)
    packed_on, packed_off = _logits(backend, ids, True, True), _logits(backend, ids, False, True)
    adapter_effect = (on - off).norm()
    assert adapter_effect > 1.0
    merged_tol, base_tol = TOLERANCE[precision]
    # The adapter's effect is there, off by fp32 rounding only (bf16: not at all).
    assert (packed_on - on).norm() <= merged_tol * adapter_effect
    # The base alone: the same products on a different weight layout.
    torch.testing.assert_close(packed_off, off, rtol=base_tol, atol=base_tol)
    # Every projection ran packed, and the model's own forwards are back afterwards.
    frozen = [m for m in backend.model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad]
    loras = [m for m in backend.model.modules() if hasattr(m, "lora_A")]
    assert len(backend.packed._packed) == len(frozen) and all(m in backend.packed._packed for m in loras)
    assert not any("forward" in m.__dict__ for m in backend.model.modules())
    torch.testing.assert_close(_logits(backend, ids, True, False), on, rtol=0, atol=0)


@pytest.mark.skipif(not BF16, reason="no AVX512-BF16/AMX")
def test_a_small_adapter_is_not_rounded_away_in_bf16():
    """A few steps' adapter: its update sits below bf16's resolution at the weights' size.
    Merged into a bf16 copy of the weight, most of it was rounded away (on SmolLM2 a median 60%,
    and 2 of 6 greedy answers changed): generation scored another model than the one trained.
    Beside the packed base, the logits are the unpacked adapter's, bit for bit."""
    backend = _backend("method=lora", "backend.precision=bf16-mixed")
    gen = torch.Generator().manual_seed(0)
    for name, param in backend.model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * 1e-4
    ids = torch.randint(3, backend.model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    on, off = _logits(backend, ids, True, False), _logits(backend, ids, False, False)
    assert (on - off).norm() > 0.5  # the adapter changes the model
    torch.testing.assert_close(_logits(backend, ids, True, True), on, rtol=0, atol=0)
    # What merging it into bf16 weights would have served: much of the update gone.
    merged = [m for m in backend.model.modules() if hasattr(m, "lora_A")]
    lost = [((m.base_layer.weight.float() + m.get_delta_weight("default").float()).bfloat16().float()
             - m.base_layer.weight.float() - m.get_delta_weight("default").float()).norm()
            / m.get_delta_weight("default").float().norm() for m in merged]
    assert sorted(lost)[len(lost) // 2] > 0.2


def test_fp32_packed_generation_gives_the_same_answers():
    """In fp32 the merged, packed weights change the logits by float rounding only: the greedy
    answers (batched and one at a time) are the unpacked adapter's."""
    prompts = [[{"role": "user", "content": f"Rate call {i}: the agent fixed the billing error."}] for i in range(3)]
    backend = _backend("method=lora", "backend.precision=32-true")
    _train_a_little(backend.model, 3)

    def answers() -> list[str]:  # a batch of 3, then each alone
        return backend.generate(prompts, 12).texts + [backend.generate([p], 12).texts[0] for p in prompts]

    packed_answers = answers()
    assert backend.packed._packed  # it ran packed
    backend.weights_changed()  # no keys/values of the packed run reused
    backend.packed = None
    assert packed_answers == answers()


def test_packed_weights_follow_weight_changes():
    """A changed adapter (training, load_adapter) is merged anew, not served stale."""
    backend = _backend("method=lora", "backend.precision=32-true")
    ids = torch.randint(3, backend.model.config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(2))
    _train_a_little(backend.model, 0)
    _logits(backend, ids, True, True)
    _train_a_little(backend.model, 1)
    backend.weights_changed()
    on = _logits(backend, ids, True, False)
    assert (_logits(backend, ids, True, True) - on).norm() < 1e-4 * (on - _logits(backend, ids, False, False)).norm()


def test_packing_applies_to_plain_cpu_linears_of_a_packable_dtype():
    assert _backend("method=lora", "backend.packed_weights=false").packed is None
    # An fp32 base under bf16 autocast: the products stay autocast's bf16 ones, nothing packed.
    unpacked = [("backend.precision=bf16-mixed", "backend.base_dtype=float32")]
    if not BF16:  # emulated bf16 products run ~100x slower than fp32: a bf16 base is left as it is
        unpacked.append(("backend.precision=bf16-mixed",))
    for overrides in unpacked:
        backend = _backend("method=lora", *overrides)
        with backend.inference_weights(True):
            assert backend.packed._packed == {}, overrides
    qlora = _backend("method=qlora")  # 4-bit projections stay bitsandbytes'; LoRA over them stays peft's
    with qlora.inference_weights(True):
        assert not any(hasattr(m, "lora_A") for m in qlora.packed._packed)
        text = qlora.generate([[{"role": "user", "content": "Rate this call."}]], 4).texts
    assert len(text) == 1
