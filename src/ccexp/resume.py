"""Resuming an interrupted run from one of its checkpoints (``trainer.resume_from``).

A checkpoint, ``<run dir>/checkpoints/step_NNNNNNN/``, holds the adapter in the backend's usual
layout, the backend's trainer state (optimizer, schedule, where in the epoch, random state, the
best adapter so far) and ``resume.json``: the step and the configuration it was trained with.
``resume.json`` is written last and the directory renamed into place, so a job killed while
saving leaves no checkpoint that looks whole. Resuming continues the same run: any difference
in what decides the training (model, method, data, trainer, seed, precision) is refused in one
line naming the key, since the optimizer state and the batch order belong to that configuration.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from ccexp.config import ConfigError, RunConfig

log = logging.getLogger("ccexp")

STATE = "resume.json"
TRAINER_STATE = "trainer_state.ckpt"  # Lightning's checkpoint, less the frozen base, in each checkpoint dir
# Trainer fields that only say where or how often to save: a resumed run may change them. Every
# other trainer field (ccexp.config.TRAINING_ONLY's) must be the checkpoint's run's.
FREE_TRAINER_KEYS = ("resume_from", "save_every_n_steps")
# backend keys compared as what they became, where the checkpoint records that (ccexp before
# these fields recorded the typed value only, which is then what is compared)
RESOLVED = {"precision": "resolved_precision", "base_dtype": "resolved_base_dtype"}


def training_config(rc: RunConfig, device: str) -> dict[str, Any]:
    """What decides a run's training, as JSON would hold it (the device as resolved: backend=auto
    on a GPU machine is backend=cuda; the precision and base dtype as typed and as resolved:
    precision=auto is bf16-mixed on one CPU and 32-true on another)."""
    from ccexp.backends.lightning import resolve_base_dtype, resolve_precision

    precision = resolve_precision(rc.backend.precision, device)
    base_dtype = str(resolve_base_dtype(rc.backend.base_dtype, precision)).removeprefix("torch.")
    trainer = {k: v for k, v in asdict(rc.trainer).items() if k not in FREE_TRAINER_KEYS}
    config = {"model": asdict(rc.model), "method": asdict(rc.method), "task_mix": asdict(rc.task_mix),
              "data_size": asdict(rc.data_size), "data": asdict(rc.data), "trainer": trainer,
              "seed": rc.seed, "backend": {"device": device, "precision": rc.backend.precision,
                                           "base_dtype": rc.backend.base_dtype, "packing": rc.backend.packing,
                                           RESOLVED["precision"]: precision, RESOLVED["base_dtype"]: base_dtype}}
    config["model"].pop("cache_dir", None)  # where converted weights are kept, not what they are
    return json.loads(json.dumps(config))


def save_checkpoint(directory: Path, step: int, config: dict, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary directory; it becomes ``directory/step_NNNNNNN`` once whole."""
    final = directory / f"step_{step:07d}"
    tmp = directory / f".step_{step:07d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / STATE).write_text(json.dumps({"step": step, "config": config}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def find_checkpoint(resume_from: Optional[str], run_dir: Path) -> Optional[Path]:
    """The checkpoint ``trainer.resume_from`` names, or None to start afresh."""
    if resume_from is None:
        return None
    if resume_from == "auto":
        checkpoints = run_dir / "checkpoints"
        latest = _latest(checkpoints)
        skipped = _passed_over(checkpoints, latest)
        if skipped and latest is None:  # starting afresh would write over them
            raise ConfigError(f"trainer.resume_from=auto: {skipped[-1]} has no {STATE}: an adapter-only checkpoint "
                              "(backend=mlx saves those) or a damaged one; expected a run dir of a backend=cpu or cuda "
                              "run, or a new one")
        _say_passed_over(resume_from, skipped, latest)
        if latest is None:
            log.info("trainer.resume_from=auto: no checkpoint in %s yet; training from step 0", checkpoints)
        return latest
    path = Path(resume_from).expanduser()
    expected = "expected a run dir with checkpoints/ or one of its checkpoints/step_NNNNNNN"
    if not path.is_dir():
        raise ConfigError(f"trainer.resume_from={resume_from}: no such directory; {expected}")
    if (path / STATE).is_file():
        return path  # a checkpoint named itself: resumed even in a finished run (a branch from that step)
    if finished_metrics(path) is not None:  # its last checkpoint retrained, its results written again
        raise ConfigError(f"trainer.resume_from={resume_from}: {_finished(path)}; its adapter is evaluated with "
                          f"python -m ccexp.evaluate adapter={path}")
    if path.name == "checkpoints" and _latest(path) is not None:  # the folder, not the run dir above it
        raise ConfigError(f"trainer.resume_from={resume_from}: a run's checkpoints folder; expected its run dir "
                          f"(trainer.resume_from={path.parent}) or one of its checkpoints/step_NNNNNNN")
    latest = _latest(path / "checkpoints")
    _say_passed_over(resume_from, _passed_over(path / "checkpoints", latest), latest)
    if latest is None:
        partial = sorted((path / "checkpoints").glob("step_*")) or ([path] if path.name.startswith("step_") else [])
        if partial:  # step dirs without resume.json: backend=mlx's (the adapter only), or cut short
            raise ConfigError(f"trainer.resume_from={resume_from}: {partial[-1]} has no {STATE}: an adapter-only "
                              "checkpoint (backend=mlx saves those) or one cut short; expected a checkpoint of a "
                              "backend=cpu or cuda run")
        raise ConfigError(f"trainer.resume_from={resume_from}: no checkpoint to resume in {path / 'checkpoints'} "
                          f"(a run saves them with trainer.save_every_n_steps=N); {expected}")
    return latest


def _passed_over(checkpoints: Path, latest: Optional[Path]) -> list[Path]:
    """Step dirs past the latest whole checkpoint without resume.json (unfinished saves are
    .step_N.partial): damaged, or another backend's."""
    return [p for p in sorted(checkpoints.glob("step_*")) if not (p / STATE).is_file()
            and (latest is None or p.name > latest.name)] if checkpoints.is_dir() else []


def _say_passed_over(resume_from: str, skipped: list[Path], latest: Optional[Path]) -> None:
    """A damaged latest checkpoint is passed over, never in silence: the run resumes earlier."""
    if skipped and latest is not None:
        log.warning("trainer.resume_from=%s: passing over %s (no %s: damaged); resuming from %s",
                    resume_from, ", ".join(p.name for p in skipped), STATE, latest.name)


def finished_metrics(run_dir: Path) -> Optional[dict]:
    """The run dir's metrics.json where it says the run finished, else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("status") == "finished" else None


def _finished(run_dir: Path) -> str:
    return f"{run_dir} finished (metrics.json: status finished); nothing to resume"


def finished_already(rc: RunConfig, run_dir: Path) -> Optional[dict]:
    """With trainer.resume_from=auto, the metrics of a run that finished in ``run_dir``, which is
    then not run again. auto is how a SLURM job resumes itself when requeued: a job requeued after
    it finished (preempted while exiting, requeued by hand) is a success with the results it has,
    not an error: an error would mark the sweep job failed and write error.txt over a finished
    run, and an Optuna trial would lose its value."""
    metrics = finished_metrics(run_dir) if rc.trainer.resume_from == "auto" else None
    if metrics is not None:
        log.info("trainer.resume_from=auto: %s; its metrics.json stands", _finished(run_dir))
    return metrics


def resume_hint(run_dir: Path | None, evaluated: Path | None = None) -> str:
    """How an interrupted run in ``run_dir`` goes on, from what it left: an evaluation (of the run
    dir ``evaluated``) runs again; the evaluate command when training had finished (run() writes
    train/steps to metrics.json before it evaluates); else the resume command and its step, else
    that no checkpoint was saved; on MLX, which cannot resume, that it runs again."""
    if evaluated is not None or run_dir is None:
        return f"python -m ccexp.evaluate adapter={evaluated} evaluates it again"
    metrics = {}
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        pass
    if isinstance(metrics, dict) and "train/steps" in metrics:
        return (f"training had finished ({metrics['train/steps']} steps, adapter/ saved): python -m ccexp.evaluate "
                f"adapter={run_dir} evaluates it")
    try:
        device = json.loads((run_dir / "environment.json").read_text()).get("device")
    except (OSError, ValueError, AttributeError):
        device = None
    if device == "mlx":  # its checkpoints are adapters only (no optimizer state): prepare() refuses them
        return "backend=mlx runs cannot be resumed (trainer.resume_from is the torch backends'): run it again"
    latest = _latest(run_dir / "checkpoints")
    if latest is None:
        # Resumed into a new run dir and stopped before its first checkpoint: the one it started from still resumes it
        origin = _started_from(run_dir)
        if origin is not None:
            return (f"trainer.resume_from={origin} resumes it{_step_of(origin)} (the checkpoint it started "
                    "from; it saved none of its own)")
        return "no checkpoint was saved (trainer.save_every_n_steps), so it cannot be resumed"
    return f"trainer.resume_from={run_dir} resumes it{_step_of(latest)}"


def _step_of(checkpoint: Path) -> str:
    """" from step N", read from the checkpoint, else from its folder's name; "" where neither says."""
    try:
        return f" from step {int(json.loads((checkpoint / STATE).read_text())['step'])}"
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: the folder's name says it, when it is a step's
        number = checkpoint.name.removeprefix("step_")
        return f" from step {int(number)}" if number.isdigit() else ""


def _started_from(run_dir: Path) -> Optional[Path]:
    """The checkpoint the trainer.resume_from of the run in ``run_dir`` (its config.yaml) names,
    where it is another run's and still there; else None. Named as the checkpoint itself, which
    resumes even where that run has since finished (its run dir is then refused: find_checkpoint)."""
    import yaml

    try:
        given = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["resume_from"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    if not isinstance(given, str) or given == "auto":
        return None
    path = Path(given).expanduser()
    return path if (path / STATE).is_file() else _latest(path / "checkpoints")


def _latest(directory: Path) -> Optional[Path]:
    whole = [p for p in directory.glob("step_*") if (p / STATE).is_file()] if directory.is_dir() else []
    return max(whole, key=lambda p: p.name, default=None)


def prepare(rc: RunConfig, device: str, run_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from, checked against this run's configuration before any model
    loads; None to start afresh."""
    if rc.trainer.resume_from is not None and device == "mlx":
        raise ConfigError(f"trainer.resume_from={rc.trainer.resume_from}: backend=mlx cannot resume yet (its "
                          "checkpoints hold the adapter only); resume runs of backend=cpu or cuda")
    checkpoint = find_checkpoint(rc.trainer.resume_from, run_dir)
    if checkpoint is not None:
        step = check_resumable(checkpoint, training_config(rc, device))
        check_trainer_state(checkpoint / TRAINER_STATE)
        log.info("resuming from %s (step %d)", checkpoint, step)
    return checkpoint


def check_trainer_state(path: Path) -> None:
    """The optimizer and loop state a resumed run starts from, opened here memory-mapped (its
    tensors are not read, so a 7B model's adapter state costs nothing twice): a checkpoint
    damaged after it was saved (a file deleted or cut short) is one line before any model
    loads, not Lightning's traceback after."""
    import torch

    damaged = "the checkpoint is damaged: resume from an earlier one, or start a new run without trainer.resume_from"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; {damaged}")
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch's zip reader and unpickler raise many types
        raise ConfigError(f"{path}: unreadable ({str(err).splitlines()[0]}); {damaged}") from None


def check_resumable(checkpoint: Path, config: dict) -> int:
    """The checkpoint's step, once its run's configuration is found to be this one's."""
    state_file = checkpoint / STATE
    try:
        state = json.loads(state_file.read_text())
        step, saved = int(state["step"]), state["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{state_file}: unreadable ({err}); expected the resume.json ccexp writes "
                          "into each checkpoint") from None
    difference = next(_differences(*_comparable(config, saved)), None)
    if difference is not None:
        key, here, there = difference
        raise ConfigError(f"trainer.resume_from={checkpoint}: {key} is {here} here but {there} in the "
                          "checkpoint's run; a resumed run continues the same configuration (set it back, or start "
                          "a new run without trainer.resume_from)")
    return step


def _comparable(here: dict, saved: dict) -> tuple[dict, dict]:
    """Both configs with each resolved backend key in place of the typed one (shown as
    "'auto' (32-true)"), or, for a checkpoint without it, the typed one alone."""
    here, saved = json.loads(json.dumps(here)), json.loads(json.dumps(saved))
    ours, theirs = here.get("backend", {}), saved.get("backend") if isinstance(saved.get("backend"), dict) else {}
    for typed, resolved in RESOLVED.items():
        became = ours.pop(resolved, _MISSING)
        if resolved in theirs and typed in ours:
            ours[typed] = _Typed(ours[typed], became)
            theirs[typed] = _Typed(theirs.get(typed, _MISSING), theirs.pop(resolved))
    return here, saved


class _Typed:
    """A setting as typed and as it resolved; equal to another when they resolved alike."""

    def __init__(self, typed: Any, resolved: Any):
        self.typed, self.resolved = typed, resolved

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Typed) and self.resolved == other.resolved

    def __repr__(self) -> str:
        return f"{_show(self.typed)} ({self.resolved})"


def _differences(here: Any, there: Any, key: str = ""):
    if isinstance(here, dict) and isinstance(there, dict):
        # A group's name first: "method.name is 'qlora' here but 'lora'", not a field that follows
        # from it; the precision before the base dtype that follows from it
        for name in sorted(set(here) | set(there), key=lambda n: (n != "name", n != "precision", n)):
            yield from _differences(here.get(name, _MISSING), there.get(name, _MISSING), f"{key}.{name}" if key else name)
    elif here != there:
        yield key, _show(here), _show(there)


_MISSING = object()


def _show(value: Any) -> str:
    return "not set" if value is _MISSING else repr(value)
