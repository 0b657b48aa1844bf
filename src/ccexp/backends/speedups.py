"""Rewrites of the wrapped torch model that remove work the plain HF + peft path does for nothing.

Each is exact or, for the shared dropout mask, equivalent in distribution; tests/test_speedups.py
compares loss curves with and without them on the tiny model, and ``python -m ccexp.bench``
measures what they are worth.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from torch import nn

from ccexp.backends.base import glibc_call
from ccexp.config import ConfigError


def contiguous_head_input(model: nn.Module) -> None:
    """The loss asks for logits of the last few positions only (``logits_to_keep``). HF slices
    the hidden states, and a slice of a batch is not contiguous, so ``F.linear`` falls back to a
    batched matmul that copies the whole (vocabulary × hidden) head once per row, forward and
    backward: ~0.7 s of a 9 s SmolLM2 step on 2 cores. A contiguous copy of the few kept
    positions is kilobytes. Generation keeps one position of one row: PyTorch calls that slice
    contiguous, but its batch stride still sends ``F.linear`` down the copying path (76 ms per
    prompt for SmolLM2's head, 6 ms from a fresh tensor), so the input is always copied."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda _module, args: (row_major(args[0]), *args[1:]))


def row_major(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` with row-major strides (``contiguous()`` would return a one-position slice
    as it is). The head's input is the few kept positions: the copy is kilobytes."""
    return x.clone(memory_format=torch.contiguous_format)


def skip_lora_input_casts(model: nn.Module) -> None:
    """Under autocast, peft casts every LoRA input to the adapter's fp32 and autocast casts it
    straight back to bf16 for the matmul: two full copies of the activations per adapted
    projection. Without the first cast the values reaching the matmul are the same."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False


class SharedDropout(nn.Module):
    """Dropout that reuses its mask while it is handed the very same input tensor.

    q_proj, k_proj and v_proj read one hidden-state tensor; peft draws three masks for it,
    and on the CPU the random numbers cost more than the three LoRA matmuls they feed (the
    generator is single-threaded: ~10% of a SmolLM2 step). One mask for the three is what a
    fused-QKV LoRA does: every projection still sees inverted dropout with probability ``p``;
    only the masks are no longer independent across q, k and v.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            self._input = self._output = None
            return x
        if x is not self._input:
            keep = keep_mask(x.shape, self.p, x.device, x.dtype)
            self._input, self._output = x, ScaledKeep.apply(x, keep, 1 / (1 - self.p))
        return self._output

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ScaledKeep(torch.autograd.Function):
    """Inverted dropout's ``x · keep · scale``, ``keep`` 1 where an element is kept and 0 where
    dropped, in ``x``'s dtype: one ``addcmul`` pass forward and one backward. It computes
    ``x · scale`` in float32 and rounds it once, as a product with the Python scale does, so the
    values and gradients are bitwise those of ``(x * scale).masked_fill_(dropped, 0)``; but
    ``masked_fill_`` with a boolean mask is a scalar loop on the CPU (0.6 ms for a 2,800 × 576
    bf16 activation on 2 AVX512-BF16 EPYC cores, against 0.14 ms for the ``addcmul``), and it ran
    forward and backward on every dropout: 2.5% of a SmolLM2 step. The price is the saved mask
    in x's dtype instead of booleans: 1.6 MB more per dropout of such an activation in bf16."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


def keep_mask(shape: torch.Size, p: float, device, dtype: torch.dtype) -> torch.Tensor:
    """A dropout mask in ``dtype``: 0 where an element is dropped, with probability p (rounded
    to 1/65536), else 1.

    ``bernoulli_`` draws one 32-bit number per element from a single-threaded generator (8.6 ms
    for a 4 × 735 × 576 activation on an AVX2 EPYC, 60 times per SmolLM2 step). ``random_`` from
    -2**63 fills an int64 with 64 random bits: four independent uniform 16-bit fields, so a
    quarter of the draws give the same distribution, and the fields are compared where they lie,
    the comparison writing ``dtype`` directly (``torch.ge`` with ``out=``: 0.12 ms for 2,800 ×
    576 on an AVX512-BF16 EPYC, where comparing to booleans and converting them took 0.25 + 0.7
    ms). The default generator keeps it reproducible under ``torch.manual_seed``."""
    if torch.device(device).type != "cpu":  # GPU generators are parallel: nothing to win
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p)
    threshold = round(p * 65536) - 32768  # a field below it (of 65,536 equally likely values) drops
    if threshold > 32767:  # p rounds to 1: every field is below, and int16 cannot hold the bound
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    draws = torch.empty(-(-n // 4), dtype=torch.int64).random_(-2**63, None)  # the full 64-bit range
    return torch.ge(draws.view(torch.int16)[:n], threshold, out=torch.empty(n, dtype=dtype)).view(shape)


def share_lora_dropout(model: nn.Module) -> int:
    """Give every LoRA layer one SharedDropout per probability; returns how many were replaced."""
    from peft.tuners.lora import LoraLayer

    shared: dict[float, SharedDropout] = {}
    replaced = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in module.lora_dropout.items():
            if isinstance(dropout, nn.Dropout) and dropout.p > 0:
                module.lora_dropout[name] = shared.setdefault(dropout.p, SharedDropout(dropout.p))
                replaced += 1
    return replaced


def fuse_lora_update(model: nn.Module) -> int:
    """Make every plain-linear LoRA layer add its update inside the update's own matmul; returns
    how many. peft computes ``result + lora_B(lora_A(dropout(x))) * scaling``: after the B
    product, one pass over the projection's output to scale it and one to add it, and in the
    backward one more to scale the gradient. ``torch.addmm(result, h, Bᵀ, alpha=scaling)`` does
    the three inside the matmul (the gradient's scale lands on the rank-r side, a 16-wide
    tensor). The sum is rounded once instead of after each step, so results match peft's up to
    the product's rounding; where peft's own path is needed (adapter off, merged, several or
    variant adapters, a LoRA bias, mixed batches) it runs unchanged. The layers' class becomes a subclass of
    peft's, so isinstance checks, saving and loading are peft's own."""
    from peft.tuners.lora import Linear

    done = 0
    for module in model.modules():
        if type(module) is Linear and type(module.base_layer) is nn.Linear and not module.fan_in_fan_out:
            module.__class__ = fused_update_class()
            done += 1
    return done


def plain_lora_adapter(layer) -> str | None:
    """The one active adapter of a peft LoRA layer whose update is ``scale·B·(A·x)`` alone, the
    update ``fuse_lora_update`` and the packed inference weights compute themselves; None where
    peft's own forward is needed (adapter off, merged, several active, a variant such as DoRA, a
    LoRA bias)."""
    active = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_B[name].bias is not None:
        return None
    return name


@functools.cache
def fused_update_class() -> type:
    """peft's LoRA ``Linear`` with ``fuse_lora_update``'s forward (built on first use, as peft is
    imported only then)."""
    from peft.tuners.lora import Linear

    class FusedUpdateLinear(Linear):
        """peft's LoRA ``Linear`` whose update is added by ``addmm`` (``fuse_lora_update``)."""

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            name = None if args or kwargs else plain_lora_adapter(self)
            if name is None:
                return super().forward(x, *args, **kwargs)
            result = self.base_layer(x)
            h = self.lora_A[name](self.lora_dropout[name](self._cast_input_dtype(x, self.lora_A[name].weight.dtype)))
            weight_b = self.lora_B[name].weight
            if not (torch.is_autocast_enabled(x.device.type) or h.dtype == result.dtype == weight_b.dtype):
                return result + self.lora_B[name](h) * self.scaling[name]  # mixed dtypes without autocast
            out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), weight_b.t(),
                              alpha=self.scaling[name])
            return out.view(result.shape)

    # Found by pickle (a copied or saved model) under this module's name, as if defined here.
    FusedUpdateLinear.__qualname__ = FusedUpdateLinear.__name__
    globals()[FusedUpdateLinear.__name__] = FusedUpdateLinear
    return FusedUpdateLinear


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
GLIBC_TRIM_THRESHOLD = 128 * 1024  # its default
# The most freed memory at the heap's top that ``keep_freed_memory`` keeps for reuse.
KEEP_FREED_BYTES = 256 << 20


def release_freed_memory() -> bool:
    """glibc grows its mmap threshold up to 32 MB as big blocks are freed, after which activation
    tensors come from the heap, and freed heap memory stays in the process: RSS climbs with
    fragmentation, not with live tensors (a QLoRA step on 2 cores: 2.9 GB RSS for ~1 GB of live
    tensors). A fixed 256 KB threshold gives every tensor pages that go back to the OS when it is
    freed (the trim threshold back at glibc's default, whatever ``keep_freed_memory`` set).
    Returns False where there is no glibc (macOS, musl): nothing to do there."""
    return mallopt(M_MMAP_THRESHOLD, 256 * 1024) and mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)


def keep_freed_memory() -> bool:
    """The opposite trade, for speed (the CPU default): tensors up to 32 MB (the ceiling of glibc's
    own moving threshold, from the start) come from the heap, and up to ``KEEP_FREED_BYTES`` freed
    at its top stay there for the next tensors instead of going back to the OS. Otherwise glibc
    hands back the top of the heap whenever twice its current mmap threshold is free there, and
    the next layer's tensors fault the same pages in again: a SmolLM2 prompt pass's attention
    scores and MLP activations faulted in ~18 MB per layer, 100–180k page faults for a 500–750-
    token prompt, which then took 450 instead of 297 ms (mean of 10, glibc with one arena, as
    ``python -m ccexp.bench`` runs; 5–100k faults and ~7% with an arena per thread). Training
    steps already reuse their memory after the first batches of each length: no change there.
    Peak RSS stays what the live tensors and fragmentation make it; what is kept shows in RSS
    afterwards. Returns False where there is no glibc."""
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def huge_pages_mode() -> str:
    """The kernel's transparent-huge-page mode (always / madvise / never), or "unavailable" off
    Linux. PyTorch asks for huge pages with madvise (``THP_MEM_ALLOC_ENABLE``, which ``import
    ccexp`` sets), which ``never`` refuses."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unavailable"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def mallopt(option: int, value: int) -> bool:
    """glibc's ``mallopt``; False where there is no glibc (macOS, musl) or it refused."""
    return glibc_call("mallopt", option, value)


def apply(model: nn.Module, autocast: bool, shared_dropout: bool) -> None:
    contiguous_head_input(model)
    fuse_lora_update(model)
    if autocast:
        skip_lora_input_casts(model)
    if shared_dropout:
        share_lora_dropout(model)


# Compiling cost SmolLM2 ~24 s beyond the passes it ran (a cold inductor cache, 2 AMX Xeon cores;
# its on-disk cache makes later runs' cheaper), and steps ran 1.15–1.33x faster: paid back after
# ~20 steps there. ``backend.compile=auto`` waits for five times that, for CPUs where it gains less.
COMPILE_MIN_STEPS = 100


def compiles(setting: str, device: str, quantized: bool, total_steps: int) -> bool:
    """Whether ``backend.compile`` (``setting``) compiles a run of ``total_steps`` optimizer steps
    on ``device``: ``auto`` for CPU runs of at least ``COMPILE_MIN_STEPS`` on a base that is not
    4-bit (bitsandbytes' matmuls), where inductor finds a C++ compiler."""
    if setting != "auto":
        return setting == "true"
    return device == "cpu" and not quantized and total_steps >= COMPILE_MIN_STEPS and cpp_compiler() is not None


class TrainingCompiled:
    """A module's forward compiled for training only: with autograd on it runs the
    ``torch.compile``d forward, under ``no_grad``/``inference_mode`` the module's own, so
    evaluation and generation (their own tuned paths, prepacked weights) are what they were."""

    def __init__(self, forward):
        self.eager = forward
        # dynamic: one graph for every row length (packed rows change length every batch).
        self.compiled = torch.compile(forward, dynamic=True)

    def __call__(self, *args, **kwargs):
        return (self.compiled if torch.is_grad_enabled() else self.eager)(*args, **kwargs)


def compile_for_training(model: nn.Module) -> int:
    """Compile the RMS norms and MLP blocks (SwiGLU) of ``model`` for training; how many modules.

    On the CPU a step is mostly memory-bound elementwise work around the matmuls: each RMS norm
    is ~6 passes over the hidden state (square, mean, rsqrt, two products, casts), SwiGLU's SiLU
    and product two over the 1,536-wide activations, and the backward as many again. Inductor
    fuses each into one loop (C++ on the CPU). On SmolLM2 (AMX Xeon, bf16) a packed 4-example
    step ran 1.15–1.24× as fast (``benchmarks/compiled_training.py``: the same batches, eager
    and compiled alternating in one process). Attention and the
    LoRA projections are left as they are: the explicit kernel is ccexp's own, and peft's layers
    and the shared dropout's random draws break graphs."""
    done = 0
    for module in model.modules():
        name = type(module).__name__
        if (name.endswith("RMSNorm") or name.endswith("MLP")) and not isinstance(module.forward, TrainingCompiled):
            module.forward = TrainingCompiled(module.forward)
            done += 1
    return done


def check_compiler(setting: str, device: str) -> None:
    """backend.compile=true on a CPU without a C++ compiler: one line, where training would fail
    at its first step. Training only: an evaluation of the run's adapter compiles nothing."""
    if setting == "true" and device == "cpu" and cpp_compiler() is None:
        raise ConfigError("backend.compile: true needs a C++ compiler for torch.compile's CPU code (g++ or $CXX); "
                          "none found (install one, or set backend.compile=false)")


def cpp_compiler() -> str | None:
    """The C++ compiler inductor builds CPU code with (its own search: ``CXX``, g++, ...), or
    None where it finds none (compiling would then fail at the first training step)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure of the search means: no usable compiler
        return None

