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
