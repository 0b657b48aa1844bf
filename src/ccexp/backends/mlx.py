"""backend=mlx: the same experiment through mlx-lm's Python API (CPU on Linux, GPU on Apple silicon).

The model loads with ``mlx_lm.utils.load_model`` from the same safetensors directory as the
torch path, adapters are mlx-lm's (``mlx_lm.tuner`` LoRA layers, its adapter files) or the soft
prompt of ``mlx_prompt``, answers come from ``mlx_lm.generate.generate_step``. Examples are
tokenized by ``ccexp.data.batching.encode`` and batched by its sampler with the run's seed,
so both backends see the same tokens in the same order, with the loss on answer tokens only.

Why not ``mlx_lm.tuner.trainer.train``: its loss counts one padding target per row (see
ml-explore/mlx-lm#1697) and cannot mask prompts of ccexp's examples, its batches cut long rows
from the right (ccexp keeps the answer and cuts the prompt), and it has no best-adapter or
early stopping. The loop below is its ``step`` (value_and_grad, accumulation, ``mx.compile``
over model, optimizer and random state) plus those pieces.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.generate import generate_step
from mlx_lm.utils import get_total_parameters, load_model

from ccexp.backends import mlx_lora, mlx_prompt
from ccexp.backends.base import Generation, peak_rss_mb, perplexity
from ccexp.backends.mlx_prompt import PromptedLM
from ccexp.config import ConfigError, RunConfig
from ccexp.cores import available_cores
from ccexp.data.batching import Encoded, EncodedDataset, GroupedBatchSampler, generation_prompt_room, prompt_ids
from ccexp.models import load_tokenizer

log = logging.getLogger("ccexp")

# Each method attaches its adapter to a PromptedLM and returns an object with disabled(),
# save(path) and fuse(adapter_dir, out); nothing below branches on the method.
MLX_METHODS = {
    "lora": mlx_lora.attach,
    "qlora": partial(mlx_lora.attach, quantize_base=True),
    "prompt_tuning": mlx_prompt.attach,
}
# auto keeps the checkpoint's dtype (mlx-lm's behaviour); the others cast the frozen base.
DTYPES = {"auto": None, "32-true": mx.float32, "bf16-mixed": mx.bfloat16, "16-mixed": mx.float16}
# Row widths and answer windows are rounded up to this, so mx.compile sees few shapes.
PAD_TO = 32


def _round_up(n: int, multiple: int = PAD_TO) -> int:
    return -(-n // multiple) * multiple


def make_batch(items: Sequence[Encoded], pad_id: int) -> tuple[mx.array, ...]:
    """Right-padded tokens, plus for each row the positions that predict its answer tokens,
    those tokens, and a mask over the (padded) answer window. Right padding is exact with a
    causal mask: pads after a row's end change nothing before it."""
    width, window = _round_up(max(len(i.input_ids) for i in items)), _round_up(max(i.n_answer for i in items))
    tokens = np.full((len(items), width), pad_id, np.int32)
    positions, targets = np.zeros((len(items), window), np.int32), np.zeros((len(items), window), np.int32)
    mask = np.zeros((len(items), window), np.float32)
    for row, item in enumerate(items):
        length, n = len(item.input_ids), item.n_answer
        tokens[row, :length] = item.input_ids
        positions[row, :n] = np.arange(length - n - 1, length - 1)
        targets[row, :n] = item.input_ids[length - n:]
        mask[row, :n] = 1.0
    return mx.array(tokens), mx.array(positions), mx.array(targets), mx.array(mask)


def answer_nll(net: PromptedLM, tokens, positions, targets, mask) -> tuple[mx.array, mx.array]:
    """Summed NLL of the answer tokens and their count. Vocabulary logits only where an answer
    token is predicted: on a 49k vocabulary, logits for every position cost more than a layer."""
    hidden = net.hidden(tokens)
    hidden = mx.take_along_axis(hidden, (positions + net.n_prefix)[..., None], axis=1)
    logits = net.head(hidden).astype(mx.float32)
    return (nn.losses.cross_entropy(logits, targets) * mask).sum(), mask.sum()


def mean_answer_loss(net: PromptedLM, *batch) -> tuple[mx.array, mx.array]:
    nll, count = answer_nll(net, *batch)
    return nll / mx.maximum(count, 1.0), count


def warmup_linear_decay(peak: float, warmup: int, total: int):
    """transformers' get_linear_schedule_with_warmup, as an MLX schedule of the update count."""
    def schedule(step: mx.array) -> mx.array:
        step = step.astype(mx.float32)
        decay = mx.maximum(0.0, (total - step) / max(total - warmup, 1))
        return peak * mx.where(step < warmup, step / max(warmup, 1), decay)

    return schedule


@contextlib.contextmanager
def checkpointed(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Inside the block, each transformer block's activations are recomputed in the backward
    pass instead of kept (``method.gradient_checkpointing``, QLoRA's recipe): mlx-lm's
    ``--grad-checkpoint``, with two differences. mlx-lm patches the block class's ``__call__``
    for good (every model of that class in the process, and generation after training, then run
    checkpointed); here the blocks take a checkpointed subclass and get their own class back.
    And mlx-lm's recomputation draws new dropout masks from the global random state, so LoRA
    dropout's gradient is taken through other masks than the loss's; here each block call draws
    one key, an input of the checkpointed function, and its dropouts draw from it, so the
    recomputation sees the forward's masks."""
    swapped = [(m, type(m)) for layer in layers for m in [layer, *_dropouts(layer)]]
    try:
        for module, cls in swapped:
            module.__class__ = _KeyedDropout if isinstance(module, nn.Dropout) else _checkpointed_class(cls)
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls


def _dropouts(layer: nn.Module) -> list[nn.Dropout]:
    return [m for _, m in layer.named_modules() if type(m) is nn.Dropout]


class _KeyedDropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from the key its checkpointed block set (``key``)."""

    key = None

    def __call__(self, x: mx.array) -> mx.array:
        if self._p_1 == 1 or not self.training or self.key is None:
            return super().__call__(x)
        return (mx.random.bernoulli(self._p_1, x.shape, key=self.key) * x) * (1 / self._p_1)


@functools.lru_cache(maxsize=None)
def _checkpointed_class(cls: type) -> type:
    def __call__(self, *args, **kwargs):
        if not self.training:  # validation inside the training loop: nothing to recompute, no key to draw
            return cls.__call__(self, *args, **kwargs)
        dropouts = [m for _, m in self.named_modules() if isinstance(m, _KeyedDropout)]

        def block(params, key, *args, **kwargs):  # the trainable parameters as inputs: their gradients flow
            self.update(params)
            # No gradient through the key: the random draws have none (mx.checkpoint asks every input).
            for dropout, own in zip(dropouts, mx.random.split(mx.stop_gradient(key), max(len(dropouts), 1))):
                object.__setattr__(dropout, "key", own)  # an attribute, not a parameter of the module
            try:
                return cls.__call__(self, *args, **kwargs)
            finally:
                for dropout in dropouts:
                    object.__setattr__(dropout, "key", None)

        # The block's masks come from this key, an input of the checkpointed function, so the
        # backward's recomputation draws them again; drawing it moves the global stream on, so
        # the next block's masks differ.
        key = mx.random.randint(0, 2**31, (2,), dtype=mx.uint32)
        return mx.checkpoint(block)(self.trainable_parameters(), key, *args, **kwargs)

    return type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": __call__})


class BestAdapter:
    """Validation history, the best adapter (saved at each improvement, restored at the end) and
    early stopping: what the Lightning path's BestAdapter and EarlyStopping callbacks do."""

    def __init__(self, net: PromptedLM, adapter: Any, directory: Path, patience: int):
        self.net, self.adapter, self.directory, self.patience = net, adapter, directory, patience
        self.history: list[dict] = []
        self.best_loss: Optional[float] = None
        self.best_step, self.wait = 0, 0
        self._state: list = []

    def record(self, step: int, loss: float, final: bool = False) -> bool:
        """Note a validation; True when training should stop. The ``final`` one, after the last
        step, only judges it: it counts no patience (as EarlyStopping skips ``trainer.validate``)."""
        self.history.append({"step": step, "val_loss": loss})
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_step, self.wait = loss, step, 0
            self._state = tree_flatten(self.net.trainable_parameters())  # arrays are immutable: a snapshot
            self.adapter.save(self.directory)
        elif not final:
            self.wait += 1
        return self.patience > 0 and (self.wait >= self.patience or not math.isfinite(loss))

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.wait >= self.patience

    def restore(self) -> None:
        if self._state:
            self.net.load_weights(self._state, strict=False)


# mlx[cpu] on Linux multiplies with reference BLAS: ~6 tokens/s for SmolLM2 (135M) on 2 cores.
MLX_CPU_TOKENS_PER_S_135M_2_CORES = 6.0


def _warn_if_days_on_a_cpu(net, examples: int, lengths: list[int]) -> None:
    """One line where MLX runs on the CPU (Linux) and the training planned would take hours at
    mlx[cpu]'s speed: experiment=seed_mlx_small there is a week of SmolLM2, started in silence."""
    if mx.default_device().type != mx.DeviceType.cpu or not lengths:
        return
    params = get_total_parameters(net)  # a 4-bit base's too, where its arrays are packed words
    cores = available_cores()
    rate = MLX_CPU_TOKENS_PER_S_135M_2_CORES * (135e6 / max(params, 1)) * cores / 2
    hours = examples * (sum(lengths) / len(lengths)) / rate / 3600
    if hours >= 1:
        log.warning("backend=mlx runs on the CPU here (mlx[cpu]: reference BLAS, ~%.0f tokens/s for this model on %d "
                    "cores): %s examples of training take ~%.0f hours; on this machine use backend=cpu (torch), or "
                    "model=tiny to check an MLX setup", rate, cores, f"{examples:,}", hours)


class MLXBackend:
    def __init__(self, cfg: RunConfig, model_dir: Path):
        self.name, self.cfg, self.model_dir = "mlx", cfg, model_dir
        mx.random.seed(cfg.seed)  # LoRA init, soft-prompt init, dropout
        # ccexp's tokenizer (left truncation, chat template) so both backends encode alike.
        self.tokenizer = load_tokenizer(model_dir)
        try:
            model, _ = load_model(model_dir)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"model={cfg.model.name}: mlx-lm cannot load {model_dir}: "
                              f"{str(err).splitlines()[0]}") from None
        if DTYPES[cfg.backend.precision] is not None:
            model.set_dtype(DTYPES[cfg.backend.precision])
        self.net = PromptedLM(model)
        self.adapter = MLX_METHODS[cfg.method.name](self.net, cfg.method, cfg.model, model_dir, self.tokenizer)
        self.precision = mlx_prompt.base_dtype(model)
        log.info("mlx %s, mlx-lm %s on %s", mx.__version__, importlib.metadata.version("mlx-lm"),
                 mx.default_device())

    # -- training ---------------------------------------------------------------------------
    def _train_step(self, optimizer: optim.Optimizer, accum: int, max_norm: float):
        """One micro-batch: loss and gradients, summed over the accumulation group; on its last
        micro-batch, mean, clip and update. Compiled like mlx-lm's trainer step."""
        loss_and_grad = nn.value_and_grad(self.net, mean_answer_loss)
        state = [self.net.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(batch, grad, update: bool):
            (loss, _), new = loss_and_grad(self.net, *batch)
            if grad is not None:
                new = tree_map(mx.add, new, grad)
            if update:
                if accum > 1:
                    new = tree_map(lambda g: g / accum, new)
                if max_norm > 0:
                    new, _ = optim.clip_grad_norm(new, max_norm)
                optimizer.update(self.net, new)
                new = None
            return loss, new

        return step, state

    def fit(self, train: Sequence[dict], val: Sequence[dict], logger: Any, run_dir: Path,
            checkpoint: Optional[Path] = None) -> dict[str, float]:
        t, max_len = self.cfg.trainer, self.cfg.model.max_seq_len
        train_set = EncodedDataset(self.tokenizer, train, max_len, "train")
        val_set = EncodedDataset(self.tokenizer, val, max_len, "val")
        sampler = GroupedBatchSampler(train_set.sort_keys(t.group_by), t.batch_size, shuffle=True,
                                      seed=self.cfg.seed, multiple_of=t.grad_accum)
        total = t.max_steps if t.max_steps > 0 else t.max_epochs * math.ceil(len(sampler) / t.grad_accum)
        _warn_if_days_on_a_cpu(self.net, total * t.batch_size * t.grad_accum, train_set.lengths)
        optimizer = optim.AdamW(  # bias_correction: torch.optim.AdamW's update, not mlx-lm's default
            learning_rate=warmup_linear_decay(self.cfg.method.lr, int(t.warmup_ratio * total), total),
            weight_decay=t.weight_decay, bias_correction=True)
        optimizer.init(self.net.trainable_parameters())
        step_fn, state = self._train_step(optimizer, t.grad_accum, t.max_grad_norm)
        best = BestAdapter(self.net, self.adapter, run_dir / "adapter", t.early_stopping_patience)

        def validate(step: int, final: bool = False) -> bool:
            self.net.eval()
            total_nll, count = self._nll(val_set, t.batch_size, t.limit_val_batches)
            self.net.train()
            loss = total_nll / max(count, 1)
            _log(logger, {"val/loss": loss, "val/ppl": perplexity(loss)}, step)
            return best.record(step, loss, final)

        # For the training loop only (a checkpointed block computes the same forward, so the
        # validations inside it are unchanged); evaluation and generation get the blocks back.
        blocks = checkpointed(self.net.layers) if self.cfg.method.gradient_checkpointing else contextlib.nullcontext()
        with blocks:
            step = epochs = tokens = 0
            seconds, stop = 0.0, False
            self.net.train()
            while step < total and not stop:
                sampler.set_epoch(epochs)
                batches, grad, losses = list(sampler), None, []
                for i, rows in enumerate(batches):
                    items = [train_set[j] for j in rows]
                    # Accumulation groups end on the grid, or at the epoch's last batch.
                    update = (i + 1) % t.grad_accum == 0 or i == len(batches) - 1
                    batch = make_batch(items, self.tokenizer.pad_token_id)
                    tic = time.perf_counter()  # step time only, as mlx-lm's trainer counts it
                    loss, grad = step_fn(batch, grad, update)
                    mx.eval(state, loss, grad)
                    seconds += time.perf_counter() - tic
                    tokens += sum(len(item.input_ids) for item in items)
                    losses.append(loss.item())
                    if not update:
                        continue
                    step += 1
                    # The keys the Lightning backend logs per step: a sweep across backends has one set of curves.
                    _log(logger, {"train/loss": sum(losses) / len(losses), "train/lr": optimizer.learning_rate.item()},
                         step)
                    losses = []
                    if step % t.val_every_n_steps == 0:
                        stop = validate(step)
                    if t.save_every_n_steps and step % t.save_every_n_steps == 0:
                        self.adapter.save(run_dir / "checkpoints" / f"step_{step:07d}")
                    if step >= total or stop:
                        break
                epochs += 1  # passes begun, a cut-short last one included, as Lightning's current_epoch counts
            if not best.history or best.history[-1]["step"] != step:
                validate(step, final=True)  # judge the final steps too
        best.restore()
        self.net.eval()
        if self.cfg.backend.fuse:
            self.adapter.save(run_dir / "adapter")
            self.adapter.fuse(run_dir / "adapter", run_dir / "fused")
        return {
            "train/steps": step,
            "train/epochs": epochs,
            "train/best_step": best.best_step,
            "train/best_val_loss": best.best_loss if best.best_loss is not None else float("nan"),
            "train/early_stopped": float(best.stopped),
            "train/resumed_from_step": 0,  # resume_from is refused for mlx (ccexp.resume.prepare)
            "train/seconds": seconds,
            "train/tokens": tokens,
            "train/tokens_per_s": tokens / max(seconds, 1e-9),
            "train/truncated_examples": train_set.truncated,
            # The step is mx.compile'd whatever backend.compile says (that key is torch's): its
            # compiling is in train/seconds, as a compiled torch run's is.
            "train/compiled": 1.0,
            "train/val_history": best.history,
        }

    # -- evaluation ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _net(self, adapter: bool) -> Iterator[PromptedLM]:
        """The adapted model, or the base model with the adapter taken off."""
        self.net.eval()
        with contextlib.nullcontext() if adapter else self.adapter.disabled():
            yield self.net

    def _nll(self, dataset: EncodedDataset, batch_size: int, limit: Optional[int] = None) -> tuple[float, int]:
        # The torch backend's validation batches: with a limit, the same examples of every length.
        sampler = GroupedBatchSampler(dataset.sort_keys("length"), batch_size, shuffle=False, seed=self.cfg.seed,
                                      spread=True)
        total, count = 0.0, 0
        for i, rows in enumerate(sampler):
            if limit is not None and i >= limit:
                break
            nll, n = answer_nll(self.net, *make_batch([dataset[j] for j in rows], self.tokenizer.pad_token_id))
            mx.eval(nll, n)
            total, count = total + nll.item(), count + int(n.item())
        return total, count

    def nll(self, examples: Sequence[dict], adapter: bool = True) -> tuple[float, int]:
        dataset = EncodedDataset(self.tokenizer, examples, self.cfg.model.max_seq_len)
        with self._net(adapter):
            return self._nll(dataset, self.cfg.eval.batch_size)

    def generate(self, prompts: Sequence[list[dict]], max_new_tokens: int, adapter: bool = True) -> Generation:
        """Greedy, one prompt at a time through mlx-lm's generate_step (what mlx_lm.generate
        runs): exact per-answer latency, and the soft prompt rides along in the model call."""
        eos = self.tokenizer.eos_token_id
        texts, seconds, new_tokens, first = [], [], [], []
        context = getattr(getattr(self.net.model, "args", None), "max_position_embeddings", None)
        room = generation_prompt_room(self.cfg.model.max_seq_len, max_new_tokens, context)
        with self._net(adapter) as net:
            for messages in prompts:
                ids = prompt_ids(self.tokenizer, messages, room)  # over-long: its middle goes, as in training
                tic, out = time.perf_counter(), []
                for token, _ in generate_step(mx.array(ids), net, max_tokens=max_new_tokens):
                    if not out:
                        first.append(time.perf_counter() - tic)
                    out.append(token)
                    if token == eos:
                        break
                seconds.append(time.perf_counter() - tic)
                if not out:  # no token at all: the first-token time is the whole call
                    first.append(seconds[-1])
                texts.append(self.tokenizer.decode(out, skip_special_tokens=True).strip())
                new_tokens.append(len(out))
        return Generation(texts, seconds, new_tokens, first)

    def save_adapter(self, path: Path) -> None:
        self.adapter.save(path)

    def load_adapter(self, path: Path) -> None:
        self.adapter.load(path)

    def parameter_counts(self) -> tuple[int, int]:
        trainable = sum(v.size for _, v in tree_flatten(self.net.trainable_parameters()))
        # mlx-lm counts leaf layers (4-bit weights at their true count); adapters sit outside them.
        return int(trainable), int(get_total_parameters(self.net.model) + trainable)

    def peak_is_host_memory(self) -> bool:
        return mx.default_device().type != mx.DeviceType.gpu

    def peak_memory_mb(self) -> float:
        if mx.default_device().type == mx.DeviceType.gpu:
            return mx.get_peak_memory() / 2**20
        return peak_rss_mb()  # on the CPU MLX's allocator sees only its own arrays


def _log(logger: Any, metrics: dict, step: int) -> None:
    if logger is not None:
        logger.log_metrics(metrics, step=step)
