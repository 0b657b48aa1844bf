"""The Lightning pieces of the torch backend: data module, training module, adapter callbacks.

Nothing here knows which PEFT method is in use: the module trains whatever parameters the
wrapped model leaves trainable.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.optimizer import _optimizers_to_device
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from ccexp import resume
from ccexp.backends.base import perplexity
from ccexp.config import ConfigError
from ccexp.data.batching import EncodedDataset, GroupedBatchSampler, collator, completion_nll


class ResumableLoader(DataLoader):
    """A DataLoader Lightning checkpoints mid-epoch (it saves a loader's ``state_dict`` when it
    has one): the state is its batch sampler's place in the epoch's order."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


class ChatDataModule(pl.LightningDataModule):
    """Training and validation batches: left-padded rows, or with ``packed`` one row per batch
    (``data/batching.py``); training batches grouped by ``group_by`` (``trainer.group_by``)."""

    def __init__(self, tokenizer, train: Sequence[dict], val: Sequence[dict], max_len: int,
                 batch_size: int, seed: int, grad_accum: int = 1, packed: bool = False, group_by: str = "length"):
        super().__init__()
        self.train_set = EncodedDataset(tokenizer, train, max_len, "train")
        self.val_set = EncodedDataset(tokenizer, val, max_len, "val")
        self.batch_size, self.seed, self.grad_accum, self.group_by = batch_size, seed, grad_accum, group_by
        self._collate = collator(packed, tokenizer.pad_token_id)

    def train_sampler(self, quiet: bool = False) -> GroupedBatchSampler:
        """``quiet``: one only counted (its log line is the training loader's)."""
        return GroupedBatchSampler(self.train_set.sort_keys(self.group_by), self.batch_size, shuffle=True,
                                   seed=self.seed, multiple_of=self.grad_accum, quiet=quiet)

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(self.train_set, batch_sampler=self.train_sampler(), collate_fn=self._collate,
                               generator=_own_generator(self.seed))

    def val_dataloader(self) -> DataLoader:
        # By length, packed or not, the batches spread: trainer.limit_val_batches then checks the same
        # examples, of every length (the first batches sorted were the longest: one task's share doubled).
        sampler = GroupedBatchSampler(self.val_set.sort_keys("length"), self.batch_size, shuffle=False,
                                      seed=self.seed, spread=True)
        return DataLoader(self.val_set, batch_sampler=sampler, collate_fn=self._collate,
                          generator=_own_generator(self.seed))


def _own_generator(seed: int) -> torch.Generator:
    """Each pass over a DataLoader draws a worker seed from its generator, by default the global
    one that dropout draws from: how often validation ran would then change the dropout masks,
    and a run resumed mid-epoch (a new pass) would draw other masks than the whole run."""
    return torch.Generator().manual_seed(seed)


class CompletionLM(pl.LightningModule):
    """Causal-LM fine-tuning with the loss on answer tokens only, AdamW, warmup + linear decay."""

    def __init__(self, model, lr: float, weight_decay: float, warmup_ratio: float, total_steps: int):
        super().__init__()
        # Checkpoints hold the trainable parameters only (on_save_checkpoint), not the frozen base.
        self.strict_loading = False
        self.model = model
        self.lr, self.weight_decay, self.warmup_ratio, self.total_steps = lr, weight_decay, warmup_ratio, total_steps
        self.tokens_seen = 0  # the examples' tokens through training forward passes (no padding)
        self.resumed_from_step = 0
        self._val_nll = self._val_count = 0.0
        self.history: list[dict] = []
        self._step_losses: list[torch.Tensor] = []  # the micro-batches of the optimizer step under way
        self._step_lr, self._logged_step = 0.0, 0

    def training_step(self, batch, batch_idx):
        nll, count = completion_nll(self.model, batch)
        loss = nll / count.clamp(min=1)
        self.tokens_seen += batch["n_tokens"]
        if not self._step_losses:
            self._step_lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # what this step's update uses
        self._step_losses.append(loss.detach())
        self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=batch_rows(batch))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # Logged once per optimizer step, at its number (1 after the first update, as the
        # validation history and the mlx backend count), as the mean over its micro-batches;
        # Lightning's own logging would put it one step earlier, and per micro-batch.
        if self.global_step != self._logged_step:
            self._logged_step = self.global_step
            loss = float(torch.stack(self._step_losses).mean())
            self._step_losses = []
            self._log_metrics({"train/loss": loss, "train/lr": self._step_lr})

    def _log_metrics(self, metrics: dict[str, float]) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        nll, count = completion_nll(self.model, batch)
        self._val_nll += float(nll)
        self._val_count += float(count)

    def on_validation_epoch_end(self):
        # Token-weighted over the whole split, not a mean of batch means.
        loss = self._val_nll / max(self._val_count, 1.0)
        self._val_nll = self._val_count = 0.0
        self.log("val/loss", loss, prog_bar=True, logger=False)  # for the bar, early stopping, best adapter
        if not self.trainer.sanity_checking:
            self.history.append({"step": self.global_step, "val_loss": loss})
            self._log_metrics({"val/loss": loss, "val/ppl": perplexity(loss)})

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {f"model.{n}": p for n, p in self.model.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen base is the model's own files (megabytes of adapter, not gigabytes of base);
        # the random state makes the resumed run draw the dropout masks the whole run would have.
        checkpoint["state_dict"] = {n: p.detach().clone() for n, p in self._trainable().items()}
        checkpoint["ccexp"] = {
            "tokens_seen": self.tokens_seen, "history": self.history, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved, here = set(checkpoint["state_dict"]), set(self._trainable())
        if saved != here:  # strict_loading is off for the base's keys; the adapter's must all match
            odd = sorted(saved ^ here)
            raise ConfigError(f"trainer.resume_from: the checkpoint's trainable parameters are not this run's "
                              f"({len(odd)} differ, e.g. {odd[0]})")
        state = checkpoint["ccexp"]
        self.tokens_seen, self.history = state["tokens_seen"], list(state["history"])
        self.resumed_from_step = checkpoint["global_step"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        warmup = int(self.warmup_ratio * self.total_steps)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class StayOnDevice(SingleDeviceStrategy):
    """Lightning's one-device strategy, except that its teardown leaves the model where it is.
    Lightning's moves it to the CPU after every fit and validate: evaluation after GPU training
    then sent its batches to the GPU with the weights on the CPU (and a 7B base would be copied
    ~15 GB each way)."""

    def teardown(self) -> None:
        # Lightning 2.6's Strategy.teardown without its ``lightning_module.cpu()``: the optimizer's
        # state still leaves the GPU, which evaluation needs for itself.
        _optimizers_to_device(self.optimizers, torch.device("cpu"))
        self.precision_plugin.teardown()
        assert self.accelerator is not None
        self.accelerator.teardown()
        self.checkpoint_io.teardown()


class BestAdapter(pl.Callback):
    """Keep the adapter with the lowest validation loss: saved to disk in peft layout at each
    improvement, and its weights restored into the model when training ends."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.best_loss: Optional[float] = None
        self.best_step = 0
        self._best_state: dict[str, torch.Tensor] = {}

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val/loss"])
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_step = loss, trainer.global_step
            self._best_state = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
            module.model.save_pretrained(self.directory)

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "best_state": self._best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.best_step, self._best_state = state["best_loss"], state["best_step"], state["best_state"]

    def restore(self, module: CompletionLM) -> None:
        if self._best_state:
            params = dict(module.model.named_parameters())
            with torch.no_grad():
                for name, value in self._best_state.items():
                    params[name].copy_(value)


class Checkpoints(pl.Callback):
    """Every N optimizer steps, ``<directory>/step_NNNNNNN``: the adapter (peft layout) and the
    trainer state to resume from (``ccexp.resume``). Saved after the step's update (an epoch's
    last step at the epoch's end), or on a step that validates, after the validation: Lightning
    resumes a checkpoint saved at a batch's end past that batch's validation, which would then
    never run. Put it after the callbacks whose
    state it should hold (best adapter, early stopping)."""

    def __init__(self, directory: Path, every: int, val_every: int, config: dict):
        self.directory, self.every, self.val_every, self.config, self._last = directory, every, val_every, config, 0

    def state_dict(self) -> dict[str, int]:
        return {"last": self._last}  # resumed, the checkpoint's own step is not saved again

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._last = state["last"]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # An epoch's last batch is saved at the epoch's end: saved at the batch's end, Lightning
        # resumed it as an epoch already done and counted it done again, ending a run early.
        if trainer.global_step % self.val_every and batch_idx + 1 < trainer.num_training_batches:
            self._save(trainer, module)

    def on_train_epoch_end(self, trainer, module):
        if trainer.global_step % self.val_every:  # a validating step saved after its validation
            self._save(trainer, module)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict[str, Any]) -> None:
        """Saved at an epoch's end, the loops' state says the epoch is processed but not yet
        completed, and Lightning, resuming, processes it a second time: max_epochs is reached an
        epoch early. Written as the state between two epochs, the next epoch starts afresh."""
        loops = checkpoint["loops"]["fit_loop"]
        epochs = loops["epoch_progress"]["total"]
        if epochs["processed"] == epochs["completed"]:  # saved within an epoch: Lightning resumes it
            return
        for part in ("total", "current"):
            loops["epoch_progress"][part]["completed"] = loops["epoch_progress"][part]["processed"]
        # The per-epoch counters, as a new epoch resets them (the val loop's total counts per epoch).
        batches = loops["epoch_loop.batch_progress"]
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False
        loops["epoch_loop.scheduler_progress"]["current"] = dict.fromkeys(
            loops["epoch_loop.scheduler_progress"]["current"], 0)
        steps = loops["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
        for counter in steps.values():
            counter["current"] = dict.fromkeys(counter["current"], 0)
        val = loops["epoch_loop.val_loop.batch_progress"]
        val["total"] = dict.fromkeys(val["total"], 0)
        # The batch sampler's place: the next epoch's order from its start, not this one's end.
        loops["state_dict"]["combined_loader"] = [
            {"epoch": state["epoch"] + 1, "served": 0} for state in loops["state_dict"].get("combined_loader", [])]

    def on_validation_end(self, trainer, module):
        if trainer.state.fn == TrainerFn.FITTING:  # not the final trainer.validate after fit
            self._save(trainer, module)

    def _save(self, trainer, module) -> None:
        step = trainer.global_step  # with accumulation, several micro-batches end on one step
        if step % self.every or step == self._last:
            return
        self._last = step

        def write(directory: Path) -> None:
            module.model.save_pretrained(directory)
            trainer.save_checkpoint(directory / resume.TRAINER_STATE)

        resume.save_checkpoint(self.directory, step, self.config, write)


class Throughput(pl.Callback):
    """Wall time per training batch with its examples' tokens (no padding; a packed batch's
    shared prompt start counted for each example, as each has it) and the tokens computed, so a
    benchmark can leave out the warm-up: from the end of the previous batch (or the epoch's
    start, or the end of a validation) to the end of this one — fetching and moving the batch,
    forward, backward, optimizer, scheduler and Lightning's own hooks; validation excluded."""

    def __init__(self):
        self.batches: list[tuple[float, int, int]] = []  # (seconds, n_tokens, n_computed) per batch
        self._since = 0.0

    @property
    def seconds(self) -> float:
        return sum(batch[0] for batch in self.batches)

    @property
    def tokens(self) -> int:
        return sum(batch[1] for batch in self.batches)

    def on_train_start(self, trainer, module):  # a resumed run starts mid-epoch, without the hook below
        self._since = _now(module)

    def on_train_epoch_start(self, trainer, module):
        self._since = _now(module)

    def on_validation_end(self, trainer, module):
        self._since = _now(module)

    def restart(self) -> None:
        """Restart the clock: time spent away from training since the last batch's end (a
        benchmark's other sides taking their turns) is not this run's."""
        self._since = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = _now(module)  # a GPU may still be running the step's backward and optimizer
        self.batches.append((now - self._since, batch["n_tokens"], batch["n_computed"]))
        self._since = now


def batch_rows(batch: dict) -> int:
    """How many examples a batch holds, padded or packed."""
    return len(batch["segments"][1]) if "segments" in batch else batch["input_ids"].shape[0]


def _now(module) -> float:
    """The clock once the module's queued GPU work is done."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)
    return time.perf_counter()
