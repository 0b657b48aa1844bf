"""Inference weights prepacked for oneDNN, the adapter merged in (``backend.packed_weights``).

Generation on a CPU is latency-bound by matrix products with few rows: a decode step multiplies
1–11 tokens by every weight. ``F.linear`` hands oneDNN a plain row-major weight, which it
re-lays-out for its kernel on every call: SmolLM2's 211 bf16 projections and head run at
~8–11 GB/s for 1–11 rows, on a machine that streams 33 GB/s. Laid out once in the kernel's own
blocked format (``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile``'s CPU
freezing pass does), the same products take about half the time (14 vs 23 ms per step), and a
524-token prompt's take ~18% less (265 vs 322 ms); the outputs are bitwise the same.

With the adapter on, each LoRA projection's ``W + scale·B·A`` is computed in float32 and packed as
one weight, as the adapter is served once merged: peft's per-layer Python and its two small
matmuls cost ~100 µs per adapted projection, 12 of a 63 ms SmolLM2 decode step. The merged
weight is rounded to bf16 once, so answers match the unmerged adapter's up to bf16 rounding
(the same order as the rounding a change of batch shape causes), not bit for bit. peft's own
``merge_adapter``/``unmerge_adapter`` would write into the bf16 base and subtract back, which
does not restore it exactly; here the merged weight is a copy and the base is never written.

The packed copies cost as much memory as the bf16 weights they copy; they are built on the first
generation after the weights change (~0.2 s for SmolLM2) and dropped when training starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

# oneDNN picks the blocked layout for a row-count hint; any hint from ~32 to ~1,000 rows serves
# decode steps (1–16 rows) and prompt passes (hundreds) alike (measured on SmolLM2's shapes).
ROWS_HINT = 128


def available() -> bool:
    """oneDNN with bf16 kernels on this CPU (AVX512-BF16 or AMX; emulated bf16 would be slower)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _packable(linear: nn.Module) -> bool:
    return (type(linear) is nn.Linear and linear.weight.dtype == torch.bfloat16 and linear.weight.device.type == "cpu"
            and not linear.weight.requires_grad)


def _lora_delta(layer, adapter: bool) -> torch.Tensor | None | bool:
    """The float32 ``scale·B·A`` of ``layer``'s active adapters (None: none active or ``adapter``
    off); False where the layer cannot be merged here (DoRA, already merged, not a plain linear)."""
    if not _packable(layer.base_layer) or layer.merged:
        return False
    names = [n for n in layer.active_adapters if n in layer.lora_A] if adapter and not layer.disable_adapters else []
    if any(layer.use_dora.get(n, False) for n in names):
        return False
    delta = None
    for name in names:
        d = layer.get_delta_weight(name).float()
        delta = d if delta is None else delta + d
    return delta


class PackedWeights:
    """The packed weights of one model, for the adapter on or off (one of the two kept at a time)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._key: bool | None = None
        self._packed: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def clear(self) -> None:
        """After the weights change (training, a loaded adapter): the packed copies are stale."""
        self._key, self._packed = None, {}

    def _build(self, adapter: bool) -> None:
        from peft.tuners.lora import LoraLayer

        self.clear()
        wrapped = set()  # base layers of LoRA layers: the LoRA layer's packed forward replaces them
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                delta = _lora_delta(module, adapter)
                wrapped.add(module.base_layer)
                if delta is False:
                    continue
                base = module.base_layer
                weight = base.weight.detach()
                if delta is not None:
                    weight = (weight.float() + delta).to(torch.bfloat16)
                self._packed[module] = (torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT), _bias(base))
        for module in self.model.modules():
            if module not in wrapped and _packable(module):
                self._packed[module] = (torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), ROWS_HINT),
                                        _bias(module))
        self._key = adapter

    @contextlib.contextmanager
    def active(self, adapter: bool) -> Iterator[None]:
        """Every packable projection (and LoRA projection, merged or not per ``adapter``) runs on
        its packed weight inside the block; the model is as it was after it."""
        if self._key != adapter:
            self._build(adapter)
        patched = []
        try:
            for module, (weight, bias) in self._packed.items():
                if "forward" in module.__dict__:  # patched by someone else: leave it to them
                    continue
                module.forward = _PackedForward(weight, bias)
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)


class _PackedForward:
    """``F.linear(x, W, b)`` on a packed W; bf16 in, bf16 out (as under bf16 autocast)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])
