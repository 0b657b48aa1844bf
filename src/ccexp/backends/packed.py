"""Inference weights prepacked for oneDNN, with the adapter (``backend.packed_weights``).

Generation on a CPU is latency-bound by matrix products with few rows: a decode step multiplies
1–11 tokens by every weight. ``F.linear`` hands oneDNN a plain row-major weight, which it
re-lays-out for its kernel on every call: SmolLM2's 211 bf16 projections and head run at
~8–11 GB/s for 1–11 rows, on a machine that streams 33 GB/s. Laid out once in the kernel's own
blocked format (``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile``'s CPU
freezing pass does), the same products take about half the time (14 vs 23 ms per step), and a
524-token prompt's take ~18% less (265 vs 322 ms); the outputs are bitwise the same.

With the adapter on, a bf16 LoRA projection runs its base weight packed and adds the adapter's
``scale·B·(A·x)`` beside it, in bf16, as training and validation compute it under bf16 autocast
(``speedups.fuse_lora_update``: two small products, without peft's per-layer Python, ~100 µs
per adapted projection, 12 of a 63 ms SmolLM2 decode step). It is not merged: ``W + scale·B·A`` rounded to bf16 lost a median 60% of
a few-step adapter's update (ΔW ~3e-4 against bf16's resolution at |W| ≈ 0.19), and 2 of 6 of
its greedy answers changed, so the run's scores were another model's. peft's own
``merge_adapter``/``unmerge_adapter`` would also write into the bf16 base and subtract back,
which does not restore it exactly; here the base is never written.

float32 bases (CPUs without bf16 dot products, where ccexp trains in fp32) get the same treatment
with oneDNN's fp32 kernels, which lay out the weight once too: on a 2-core AVX2 EPYC an 11-row
product runs 1.9× faster packed (576→1536: 355 → 180 µs; SmolLM2's 49k-row head 31 → 9 ms), one
row about as fast. From ~128 rows on, MKL's own sgemm on the plain row-major weight is the faster
one there (a 524-token prompt's 1536×576 product: 5.3 vs 6.1 ms), so fp32 products of many rows
keep ``F.linear``. An fp32 LoRA projection is merged (``W + scale·B·A``, the exact fp32 sum,
one product instead of three): answers equal the unmerged adapter's up to fp32 rounding.

The packed copies cost as much memory as the weights they copy (fp32 with an adapter: the merged
plain copies of the adapted projections too); they are built on the first generation after the
weights change (~0.2 s for SmolLM2) and dropped when training starts.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch
from torch import nn

from ccexp.backends import speedups

# oneDNN picks the blocked layout for a row-count hint; any hint from ~32 to ~1,000 rows serves
# decode steps (1–16 rows) and prompt passes (hundreds) alike (measured on SmolLM2's shapes).
ROWS_HINT = 128
# fp32 products of at least this many rows run on the plain weight (MKL's sgemm): the crossover
# measured on SmolLM2's shapes on an AVX2 EPYC (64 rows: packed 5–10% faster; 256: 10–15% slower).
FP32_PLAIN_ROWS = 128


def available() -> bool:
    """oneDNN on an x86 CPU: fp32 kernels on any of them, bf16 ones with AVX512-BF16 or AMX (Arm
    builds run oneDNN through ACL, whose packed kernels these measurements did not cover)."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def _dtypes() -> tuple[torch.dtype, ...]:
    """Weight dtypes packed here: bf16 only where the CPU has bf16 dot products (emulated bf16
    runs ~100× slower than fp32)."""
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


def _packable(linear: nn.Module, dtype: torch.dtype) -> bool:
    return (type(linear) is nn.Linear and linear.weight.dtype == dtype and linear.weight.device.type == "cpu"
            and not linear.weight.requires_grad)


def _adapter_here(layer, adapter: bool, dtype: torch.dtype) -> str | None | bool:
    """The adapter ``layer``'s packed forward adds (None: the base alone, the adapter being off);
    False where the layer keeps its own forward: not a plain linear of ``dtype``, merged, or an
    update the training forward leaves to peft too (``speedups.plain_lora_adapter``)."""
    if not _packable(layer.base_layer, dtype) or layer.merged:
        return False
    if not adapter or layer.disable_adapters or not any(n in layer.lora_A for n in layer.active_adapters):
        return None
    return speedups.plain_lora_adapter(layer) or False


class PackedWeights:
    """The packed weights of one model, for the adapter on or off (one of the two kept at a time).
    ``dtype``: the products' dtype (bf16 under bf16 autocast, else fp32); weights stored in another
    dtype (an fp32 base under bf16 autocast, 4-bit) keep their own path."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        self._key: bool | None = None
        self._packed: dict[nn.Module, _PackedForward] = {}

    def clear(self) -> None:
        """After the weights change (training, a loaded adapter): the packed copies are stale."""
        self._key, self._packed = None, {}

    def _build(self, adapter: bool) -> None:
        from peft.tuners.lora import LoraLayer

        self.clear()
        self._key = adapter
        if self.dtype not in _dtypes():  # e.g. bf16 products on a CPU that emulates them
            return
        # Base layers of LoRA layers (the LoRA layer's packed forward replaces them) and the
        # adapters' own A/B linears (an fp32 A/B frozen by a disabled adapter is not a projection).
        wrapped = set()
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                name = _adapter_here(module, adapter, self.dtype)
                wrapped.update(module.modules())
                if name is False:
                    continue
                weight, lora = module.base_layer.weight.detach(), None
                if name and self.dtype == torch.float32:  # merged: exact to fp32 rounding
                    weight = weight + module.get_delta_weight(name).float()
                elif name:  # beside the base, in bf16 as autocast hands A and B to the training forward
                    lora = (module.lora_A[name].weight.detach().to(self.dtype),
                            module.lora_B[name].weight.detach().to(self.dtype), module.scaling[name])
                self._packed[module] = _PackedForward(weight, module.base_layer.bias, lora)
        for module in self.model.modules():
            if module not in wrapped and _packable(module, self.dtype):
                self._packed[module] = _PackedForward(module.weight.detach(), module.bias)

    @contextlib.contextmanager
    def active(self, adapter: bool) -> Iterator[None]:
        """Every packable projection (and LoRA projection, merged or not per ``adapter``) runs on
        its packed weight inside the block; the model is as it was after it."""
        if self._key != adapter:
            self._build(adapter)
        patched = []
        try:
            for module, forward in self._packed.items():
                if "forward" in module.__dict__:  # patched by someone else: leave it to them
                    continue
                module.forward = forward
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward


class _PackedForward:
    """``F.linear(x, W, b)`` on W packed for oneDNN, in W's dtype (bf16 in, bf16 out, as under
    bf16 autocast); fp32 products of many rows on the plain W instead (``FP32_PLAIN_ROWS``).
    ``lora``: an adapter's (A, B, scale), whose ``scale·B·(A·x)`` is added as the training
    forward adds it (``speedups.fuse_lora_update``: one ``addmm``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None,
                 lora: tuple[torch.Tensor, torch.Tensor, float] | None = None):
        self.dtype, self.lora = weight.dtype, lora
        self.bias = None if bias is None else bias.detach().to(self.dtype)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT)
        # A reference to the model's own weight, or the merged copy: bf16 products are faster
        # packed at every row count, fp32 ones only below the crossover.
        self.plain = weight if self.dtype == torch.float32 else None

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(self.dtype)
        if self.plain is not None and rows.shape[0] >= FP32_PLAIN_ROWS:
            y = torch.nn.functional.linear(rows, self.plain, self.bias)
        else:
            y = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, self.bias, "none", [], "")
        if self.lora is not None:
            a, b, scale = self.lora
            y = torch.addmm(y, torch.nn.functional.linear(rows, a), b.t(), alpha=scale)
        return y.view(*x.shape[:-1], y.shape[-1])
