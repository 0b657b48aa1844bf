"""The Lightning pieces of the torch backend: data module, training module, adapter callbacks.

Nothing here knows which PEFT method is in use: the module trains whatever parameters the
wrapped model leaves trainable.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from ccexp.data.batching import EncodedDataset, GroupedBatchSampler, collator, completion_nll


class ChatDataModule(pl.LightningDataModule):
    """Training and validation batches: left-padded rows, or with ``packed`` one row per batch
    (``data/batching.py``); training batches grouped by ``group_by`` (``trainer.group_by``)."""

    def __init__(self, tokenizer, train: Sequence[dict], val: Sequence[dict], max_len: int,
                 batch_size: int, seed: int, grad_accum: int = 1, packed: bool = False, group_by: str = "length"):
        super().__init__()
        self.train_set = EncodedDataset(tokenizer, train, max_len)
        self.val_set = EncodedDataset(tokenizer, val, max_len)
        self.batch_size, self.seed, self.grad_accum, self.group_by = batch_size, seed, grad_accum, group_by
        self._collate = collator(packed, tokenizer.pad_token_id)

    def train_sampler(self) -> GroupedBatchSampler:
        return GroupedBatchSampler(self.train_set.sort_keys(self.group_by), self.batch_size, shuffle=True,
                                   seed=self.seed, multiple_of=self.grad_accum)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_sampler=self.train_sampler(), collate_fn=self._collate)

    def val_dataloader(self) -> DataLoader:
        # By length, packed or not: trainer.limit_val_batches then checks the same examples.
        sampler = GroupedBatchSampler(self.val_set.sort_keys("length"), self.batch_size, shuffle=False,
                                      seed=self.seed)
        return DataLoader(self.val_set, batch_sampler=sampler, collate_fn=self._collate)


class CompletionLM(pl.LightningModule):
    """Causal-LM fine-tuning with the loss on answer tokens only, AdamW, warmup + linear decay."""

    def __init__(self, model, lr: float, weight_decay: float, warmup_ratio: float, total_steps: int):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_ratio, self.total_steps = lr, weight_decay, warmup_ratio, total_steps
        self.tokens_seen = 0  # the examples' tokens through training forward passes (no padding)
        self._val_nll = self._val_count = 0.0
        self.history: list[dict] = []

    def training_step(self, batch, batch_idx):
        nll, count = completion_nll(self.model, batch)
        loss = nll / count.clamp(min=1)
        self.tokens_seen += batch["n_tokens"]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_rows(batch))
        return loss

    def validation_step(self, batch, batch_idx):
        nll, count = completion_nll(self.model, batch)
        self._val_nll += float(nll)
        self._val_count += float(count)

    def on_validation_epoch_end(self):
        # Token-weighted over the whole split, not a mean of batch means.
        loss = self._val_nll / max(self._val_count, 1.0)
        self._val_nll = self._val_count = 0.0
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", math.exp(min(loss, 50.0)))
        if not self.trainer.sanity_checking:
            self.history.append({"step": self.global_step, "val_loss": loss})

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        warmup = int(self.warmup_ratio * self.total_steps)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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

    def restore(self, module: CompletionLM) -> None:
        if self._best_state:
            params = dict(module.model.named_parameters())
            with torch.no_grad():
                for name, value in self._best_state.items():
                    params[name].copy_(value)


class Checkpoints(pl.Callback):
    """The adapter every N optimizer steps, in ``<directory>/step_NNNNNNN`` (peft layout)."""

    def __init__(self, directory: Path, every: int):
        self.directory, self.every, self._last = directory, every, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step  # with accumulation, several micro-batches end on one step
        if step % self.every == 0 and step != self._last:
            self._last = step
            module.model.save_pretrained(self.directory / f"step_{step:07d}")


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
