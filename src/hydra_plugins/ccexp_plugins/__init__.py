"""ccexp's Hydra plugins: the Optuna sweeper and the SLURM launcher, with their failures in one
line. The configs name these classes as ``_target_`` (conf/hparams_search/*,
conf/hydra/launcher/slurm.yaml); Hydra takes plugins only from the ``hydra_plugins`` namespace."""

from __future__ import annotations

import shutil
import sys

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SlurmLauncher


class OptunaSweeper(_OptunaSweeper):
    """A study whose trials all failed ends, in the plugin, with ``ValueError: Record does not
    exist`` and a traceback when it asks for the best trial. Here it is one line; each failed
    job's error.txt says why, and the sweep summary still runs after it."""

    def sweep(self, arguments):
        try:
            return super().sweep(arguments)
        except ValueError as err:
            # optuna 2.10's study.best_trial with no complete trial: the SQL storage's words, the in-memory one's
            if not any(words in str(err) for words in ("Record does not exist", "No trials are completed yet")):
                raise
            print("ccexp: Optuna study: no trial gave a value of objective.metric, so there are no best "
                  "parameters (each job's error.txt says why)", file=sys.stderr, flush=True)


class SlurmLauncher(_SlurmLauncher):
    """On a machine without SLURM the plugin fails deep in submitit, with a traceback."""

    def launch(self, job_overrides, initial_job_idx):
        if shutil.which("srun") is None or shutil.which("sbatch") is None:
            print("ccexp: error: hydra/launcher=slurm: no SLURM here (srun and sbatch are not on PATH); launch from "
                  "the cluster, or use hydra/launcher=joblib on this machine", file=sys.stderr, flush=True)
            sys.exit(2)
        return super().launch(job_overrides, initial_job_idx)
