"""Where a run ran and on what code: the hardware that decides its times, the commit and the
library versions. Each run writes it to ``environment.json`` (and W&B's config), so that the
comparison report does not rank times measured on different machines against each other (a
SLURM sweep's jobs land on whatever nodes are free); the bench records the same."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

# The libraries whose versions decide what a run computes and how fast.
LIBRARIES = ("torch", "transformers", "peft", "pytorch-lightning", "bitsandbytes", "accelerate", "mlx", "mlx-lm")


def cpuinfo(field: str) -> str | None:
    """The first processor's ``field`` in /proc/cpuinfo (None where there is none)."""
    path = Path("/proc/cpuinfo")
    try:
        lines = path.read_text().splitlines()
    except OSError:  # not Linux
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), None)


def machine(device: str, every_gpu: bool = False) -> dict:
    """The hardware a run's times depend on. A VM's CPU name can be bare ("AMD EPYC") over
    generations that differ 2-3x: family and model say which. Two CPUs of one name can differ in
    what PyTorch's kernels use (the vector ISA) and in bf16 dot products (without them ccexp
    trains in fp32 on a CPU). The GPU where ``device`` is cuda, or with ``every_gpu`` wherever
    there is one (a run's record: a backend=cpu run on a GPU node is on that node)."""
    import torch  # here: the comparison report reads environment.json without loading torch

    from ccexp.backends.lightning import cpu_has_bf16

    family, model = cpuinfo("cpu family"), cpuinfo("model")
    m = {"host": socket.gethostname(), "cpu": cpuinfo("model name") or platform.processor() or platform.machine(),
         **({"cpu_generation": f"family {family} model {model}"} if family and model else {}),
         "cpu_isa": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_has_bf16(),
         "threads": torch.get_num_threads()}
    if device == "cuda" or (every_gpu and torch.cuda.is_available()):
        # The memory too: one GPU name covers cards of 40 and 80 GB (A100) or 80 and 94 GB (H100).
        m.update(gpu=torch.cuda.get_device_name(), gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                 gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return m


def hardware(m: dict) -> str:
    """The machine a run's times were measured on, in words: its CPU and GPUs (not the host: a
    cluster's nodes of one kind compare; not the threads, which a config sets)."""
    generation = f" {m['cpu_generation']}" if m.get("cpu_generation") else ""
    count = m.get("gpu_count") or 1
    gpu = f" with {m['gpu']}" + (f" x{count}" if count > 1 else "") if m.get("gpu") else ""
    return f"{m.get('cpu', 'CPU not recorded')}{generation}{gpu}"


def code_and_versions() -> dict:
    """The code a run measured: its git commit (and whether the checkout had changes beside it;
    None outside a git checkout) and the versions of the libraries it ran on (None: not installed)."""
    repo = Path(__file__).resolve().parents[2]

    def git(*cmd: str) -> str | None:
        if not (repo / "src" / "ccexp").is_dir():  # installed from a wheel: no checkout to ask
            return None
        try:
            proc = subprocess.run(["git", "-C", str(repo), *cmd], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for package in LIBRARIES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"commit": commit, "uncommitted_changes": None if commit is None or changed is None else bool(changed),
            "versions": versions}


# Paths a run reads, relative to the directory it was started in (Hydra does not chdir).
_PATH_KEYS = (("data", "train_path"), ("data", "val_path"), ("data", "test_path"), ("model", "path"))


def anchor_relative_paths(saved, run_dir: Path) -> None:
    """Relative paths in a run's config (a dict or a DictConfig, changed in place) name files in
    the directory the run started in, which Hydra records (``.hydra/hydra.yaml``,
    ``hydra.runtime.cwd``): evaluated from anywhere else, they would read another directory's file
    of that name (or none), and compared with an evaluation of the run (which records them
    anchored), they would read as other data. Overrides given to an evaluation keep their own
    meaning, relative to where it runs."""
    import yaml

    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        started_in = Path(hydra["hydra"]["runtime"]["cwd"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):  # no Hydra record (run() called from Python)
        return
    anchor_paths(saved, started_in)


def anchor_paths(cfg, start: Path, model_source: str | None = None) -> None:
    """The relative ``_PATH_KEYS`` of ``cfg`` (a dict or a DictConfig, changed in place) made
    absolute against ``start``. A hub model's ``model.path`` (owner/name, not a folder there)
    stays as given; ``model_source`` is the source where ``cfg`` does not set it (an evaluation's
    overrides, over the run's config)."""
    for group, key in _PATH_KEYS:
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if not hasattr(node, "get"):
            continue
        value = node.get(key)
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        source = node.get("source") or model_source if group == "model" else None
        if (group, key) == ("model", "path") and source == "hub" and not (start / value).is_dir():
            continue  # a hub id (owner/name), not a folder
        node[key] = str(start / value)
