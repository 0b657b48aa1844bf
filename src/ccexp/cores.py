"""CPU cores per job: how many jobs a launcher runs side by side, and the threads each gets."""

from __future__ import annotations

import os
from typing import Optional


JOBS_AT_ONCE_ENV = "CCEXP_JOBS_AT_ONCE"  # set in each joblib worker by ccexp's launcher


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs_at_once(n_jobs: int, jobs: Optional[int] = None) -> int:
    """How many jobs joblib runs side by side: n_jobs (-1 = all cores, -2 = all but one), never
    more than the cores, nor than the ``jobs`` launched."""
    cores = available_cores()
    parallel = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, min(parallel, cores, jobs if jobs is not None else cores))


def threads_per_job() -> Optional[int]:
    """``${threads_per_job:}``: CPU threads for one job. null (torch's default: every core) unless
    a launcher runs jobs side by side on this machine (joblib's n_jobs; -1 = one per core), then
    each job gets cores // the jobs running at once (as ccexp's joblib launcher counted them:
    2 jobs on 16 cores get 8 threads each), so parallel jobs do not fight over the same cores;
    under SLURM, the job's cpus_per_task."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None  # composed outside a Hydra run (tests, python -m ccexp.data)
    launcher = HydraConfig.get().launcher
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if not n_jobs:
        return None  # one job at a time (the basic launcher has no n_jobs)
    counted = os.environ.get(JOBS_AT_ONCE_ENV, "")
    return max(1, available_cores() // (int(counted) if counted.isdigit() else jobs_at_once(n_jobs)))
