"""backend.packed_weights: generation on oneDNN-prepacked weights with the adapter merged in
gives the adapted model's logits (up to bf16 rounding), and the model is untouched after it."""

from __future__ import annotations

import pytest
import torch

from ccexp.backends import packed

pytestmark = pytest.mark.skipif(not packed.available(), reason="needs oneDNN bf16 kernels (AVX512-BF16 or AMX)")


def _backend(*overrides: str):
    from conftest import FAST, compose_cfg

    from ccexp.backends.lightning import TorchBackend
    from ccexp.config import validate
    from ccexp.models import resolve_model_dir

    rc = validate(compose_cfg(*FAST, "backend=cpu", "backend.precision=bf16-mixed", *overrides))
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


def test_packed_weights_give_the_adapted_model():
    backend = _backend("method=lora")
    _train_a_little(backend.model, 0)
    ids = torch.randint(3, backend.model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    on, off = _logits(backend, ids, True, False), _logits(backend, ids, False, False)
    packed_on, packed_off = _logits(backend, ids, True, True), _logits(backend, ids, False, True)
    adapter_effect = (on - off).norm()
    assert adapter_effect > 1.0
    # Merged: the adapter's effect is there, off by bf16 rounding only.
    assert (packed_on - on).norm() < 0.05 * adapter_effect
    # The base alone: the same products on a different weight layout.
    torch.testing.assert_close(packed_off, off, rtol=0.02, atol=0.02)
    # Every projection ran packed, and the model's own forwards are back afterwards.
    frozen = [m for m in backend.model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad]
    loras = [m for m in backend.model.modules() if hasattr(m, "lora_A")]
    assert len(backend.packed._packed) == len(frozen) and all(m in backend.packed._packed for m in loras)
    assert not any("forward" in m.__dict__ for m in backend.model.modules())
    torch.testing.assert_close(_logits(backend, ids, True, False), on, rtol=0, atol=0)


def test_packed_weights_follow_weight_changes():
    """A changed adapter (training, load_adapter) is merged anew, not served stale."""
    backend = _backend("method=lora")
    ids = torch.randint(3, backend.model.config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(2))
    _train_a_little(backend.model, 0)
    _logits(backend, ids, True, True)
    _train_a_little(backend.model, 1)
    backend.weights_changed()
    on = _logits(backend, ids, True, False)
    assert (_logits(backend, ids, True, True) - on).norm() < 0.05 * (on - _logits(backend, ids, False, False)).norm()


def test_packing_applies_to_bf16_cpu_weights_only():
    assert _backend("method=lora", "backend.packed_weights=false").packed is None
    fp32 = _backend("method=lora", "backend.precision=32-true")  # fp32 base: nothing to pack, answers exact
    with fp32.inference_weights(True):
        assert fp32.packed._packed == {}
    qlora = _backend("method=qlora")  # 4-bit projections stay bitsandbytes'; LoRA over them stays peft's
    with qlora.inference_weights(True):
        assert not any(hasattr(m, "lora_A") for m in qlora.packed._packed)
        text = qlora.generate([[{"role": "user", "content": "Rate this call."}]], 4).texts
    assert len(text) == 1
