"""Benchmarks: ccexp against the plain Hugging Face path (python -m ccexp.bench)."""

import logging

# bitsandbytes warns at import that it cannot fetch optional CPU kernels from the hub; we never
# download at run time, and its built-in CPU path is what runs (as python -m ccexp silences it).
# Set here, before the bench's modules import it, so that even --help and bench.show stay quiet.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
