"""ccexp: fine-tune and evaluate small language models for contact-center analytics."""

import logging as _logging
import os as _os
import sys as _sys

__version__ = "0.1.0"

# PyTorch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this is
# set (it reads it once, at the first tensor it allocates: hence here, before any of ccexp's
# modules make one). A training step's activations are such tensors; on 4 KB pages the next
# batch faults hundreds of MB in again. Measured with benchmarks/huge_pages.py (SmolLM2, 4
# packed batches, alternating child processes, 2-core AMX Xeon): 1.03x (six rounds, 0.95-1.11),
# page faults 110-145k -> 22-46k, peak RSS 4.8 -> 4.2 GB, losses bitwise equal. The kernel
# must allow madvise'd huge pages (/sys/kernel/mm/transparent_hugepage/enabled not [never]);
# a value already in the environment (THP_MEM_ALLOC_ENABLE=0 to opt out) wins.
if _sys.platform == "linux":
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# bitsandbytes warns at import that it cannot fetch optional CPU kernels from the hub; ccexp
# never downloads at run time, and bitsandbytes' built-in CPU path is what runs. Quieted here,
# before any of ccexp's modules (or commands: run, evaluate, bench, bench.show) import it.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)


class _BitsandbytesWithoutHubKernels:
    """bitsandbytes (0.49+) on a CPU with AVX512-BF16 asks the Hugging Face hub at import for a
    4-bit matmul kernel (``kernels.get_kernel``): a network call in every process that imports
    peft, which waits out a firewall that drops packets, and, where the hub answers, code
    downloaded at run time that computes QLoRA's products on such a machine instead of
    bitsandbytes' own. bitsandbytes falls back to its own kernel when ``kernels`` cannot be
    imported, so its import runs with ``kernels`` hidden: the same kernel online and offline.
    A meta-path finder because peft imports bitsandbytes, and peft is imported from several
    of ccexp's modules and from users' own scripts that import ccexp first."""

    _busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "bitsandbytes" or self._busy:
            return None
        import importlib.util

        type(self)._busy = True  # the real spec, found by the finders after this one
        try:
            spec = importlib.util.find_spec(name)
        finally:
            type(self)._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _WithoutKernels(spec.loader)
        return spec


class _WithoutKernels:
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        missing = object()
        saved = _sys.modules.get("kernels", missing)
        _sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            if saved is missing:
                _sys.modules.pop("kernels", None)
            else:
                _sys.modules["kernels"] = saved

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.loader, name)


if "bitsandbytes" not in _sys.modules:
    _sys.meta_path.insert(0, _BitsandbytesWithoutHubKernels())
