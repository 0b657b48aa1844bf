"""Backends by name. ``auto`` picks cuda when torch sees a GPU, else cpu; ``mlx`` runs mlx-lm."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ccexp.backends.base import Backend, Generation
from ccexp.config import ConfigError, RunConfig

MLX_INSTALL = "pip install 'mlx[cpu]' mlx-lm on Linux, pip install mlx mlx-lm on macOS"


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("backend=cuda: torch sees no CUDA GPU on this machine; use backend=cpu (or backend=auto)")
    if name == "mlx":
        try:
            import mlx.core  # noqa: F401
            import mlx_lm  # noqa: F401
        except (ImportError, OSError) as err:  # OSError: the wheel is there but its native library is not
            raise ConfigError(f"backend=mlx: cannot import mlx/mlx-lm ({str(err).splitlines()[0]}); "
                              f"{MLX_INSTALL}") from None
    return name


def build_backend(name: str, cfg: RunConfig, model_dir: Path, draft_answers: Sequence[str] = ()) -> Backend:
    """``draft_answers``: typical answers (the training split's), for the torch backend's drafts."""
    if name == "mlx":
        from ccexp.backends.mlx import MLXBackend

        return MLXBackend(cfg, model_dir)
    from ccexp.backends.lightning import TorchBackend

    return TorchBackend(cfg, device=name, model_dir=model_dir, draft_answers=draft_answers)


__all__ = ["Backend", "Generation", "build_backend", "resolve_backend"]
