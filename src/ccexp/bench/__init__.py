"""Benchmarks: ccexp against the plain Hugging Face path (python -m ccexp.bench)."""
