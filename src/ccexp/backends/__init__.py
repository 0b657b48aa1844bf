"""Backends by name. ``auto`` picks cuda when torch sees a GPU, else cpu."""

from __future__ import annotations

from pathlib import Path

import torch

from ccexp.backends.base import Backend, Generation
from ccexp.config import ConfigError, RunConfig


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("backend=cuda: torch sees no CUDA GPU on this machine; use backend=cpu (or backend=auto)")
    if name == "mlx":
        raise ConfigError("backend=mlx is not implemented yet (planned: mlx-lm runner); use backend=cpu or backend=cuda")
    return name


def build_backend(name: str, cfg: RunConfig, model_dir: Path) -> Backend:
    from ccexp.backends.lightning import TorchBackend

    return TorchBackend(cfg, device=name, model_dir=model_dir)


__all__ = ["Backend", "Generation", "build_backend", "resolve_backend"]
