"""Benchmark: ccexp's MLX runner against mlx-lm's own trainer (``mlx_lm.tuner.trainer.train``,
what ``mlx_lm.lora`` runs) on the same model, data, LoRA settings and number of steps.

    python benchmarks/mlx_vs_mlx_lm.py [--model smollm2_135m|tiny] [--steps 10] [--warmup 2]
        [--batch-size 4] [--examples 32] [--max-seq-len 1024] [--task-mix all]

The data is synthetic examples written in the MLX JSONL layout (train.jsonl, valid.jsonl) and
read back by each side: ccexp with its ChatML reader, mlx-lm with its ChatDataset (prompt
masked, as ccexp trains on answers only). Prompts longer than --max-seq-len allows are cut
from the left in the files, so neither side cuts rows itself (mlx-lm would cut from the right,
ccexp from the left). Each side runs
--warmup steps first, then --steps timed steps; tokens/s = non-pad tokens in the timed steps'
batches / the time spent in those steps (batch building and validation excluded on both
sides). The goal is a ratio ccexp / mlx-lm >= 0.95. Not a timed test.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import types
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import mlx_lm
from hydra.errors import HydraException
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.datasets import CacheDataset, load_local_dataset
from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
from mlx_lm.tuner.utils import linear_to_lora_layers

from ccexp.backends.mlx import MLXBackend
from ccexp.backends.mlx_lora import lora_keys
from ccexp.bench.setup import compose_run_config
from ccexp.cli import OneLineParser, int_at_least
from ccexp.config import ConfigError, RunConfig, lora_targets
from ccexp.config_errors import config_error_line
from ccexp.data import build_splits
from ccexp.data.batching import encode
from ccexp.data.formats import read_chatml, write_mlx_layout
from ccexp.models import load_tokenizer, resolve_model_dir

GOAL = 0.95


def _config(args) -> RunConfig:
    overrides = [f"model={args.model}", "backend=mlx", "method=lora", "logger=none", f"task_mix={args.task_mix}",
                 f"data_size.train={args.examples}", "data_size.val=4", "data_size.test=1",
                 f"model.max_seq_len={args.max_seq_len}", f"trainer.max_steps={args.steps}",
                 f"trainer.batch_size={args.batch_size}", f"trainer.val_every_n_steps={10**6}",
                 "trainer.limit_val_batches=1", "trainer.early_stopping_patience=0"]
    return compose_run_config(overrides)


def _shorten(example: dict, tokenizer, max_len: int) -> dict | None:
    """The example with its longest prompt message cut from the left until the whole row fits
    in max_len tokens (ccexp cuts prompt tokens from the left too), or None if it cannot fit."""
    messages = [dict(m) for m in example["messages"]]
    while encode(tokenizer, {"messages": messages}, max_len).truncated:
        longest = max(messages[:-1], key=lambda m: len(m["content"]))
        if len(longest["content"]) < 40:
            return None
        longest["content"] = longest["content"][len(longest["content"]) // 8:]
    return {**example, "messages": messages}


def _write_data(rc: RunConfig, model_dir: Path, out: Path) -> Path:
    """The splits in MLX JSONL, every row fitting in max_seq_len: neither side cuts anything
    (mlx-lm would cut long rows from the right, ccexp from the left)."""
    tokenizer = load_tokenizer(model_dir)
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    fits = {name: [ex for ex in (_shorten(e, tokenizer, rc.model.max_seq_len) for e in examples) if ex]
            for name, examples in splits.items()}
    write_mlx_layout(fits, out)
    return out


def run_ccexp(rc: RunConfig, model_dir: Path, data: Path, warmup: int, work: Path) -> tuple[int, float]:
    train_rows, val_rows = read_chatml(data / "train.jsonl"), read_chatml(data / "valid.jsonl")
    backend = MLXBackend(rc, model_dir)
    if warmup:  # a fit of 0 steps is no valid config (trainer.max_steps >= 1): --warmup 0 skips it
        timed_cfg, backend.cfg = backend.cfg, replace(rc, trainer=replace(rc.trainer, max_steps=warmup))
        backend.fit(train_rows, val_rows, None, work / "warmup")
        backend.cfg = timed_cfg
    stats = backend.fit(train_rows, val_rows, None, work / "timed")
    return stats["train/tokens"], stats["train/seconds"]


class _StepTimes(TrainingCallback):
    """mlx-lm reports every step (steps_per_report=1): its step time is 1 / iterations_per_second."""

    def __init__(self):
        self.seconds = 0.0

    def on_train_loss_report(self, info: dict) -> None:
        self.seconds += 1.0 / info["iterations_per_second"]


def run_mlx_lm(rc: RunConfig, model_dir: Path, data: Path, warmup: int, work: Path) -> tuple[int, float]:
    model, tokenizer = mlx_lm.load(str(model_dir))
    model.freeze()
    m = rc.method
    keys = lora_keys(model, *lora_targets(m, rc.model), rc.model.name)
    linear_to_lora_layers(model, len(model.layers), {"rank": m.r, "scale": m.alpha / m.r, "dropout": m.dropout,
                                                     "keys": keys})
    train_set, _, _ = load_local_dataset(data, tokenizer, types.SimpleNamespace(mask_prompt=True))
    train_set = CacheDataset(train_set)
    tokens = [0]

    def counting_batches(*args, **kwargs):  # the batches train() consumes, counted as they go
        for batch, lengths in iterate_batches(*args, **kwargs):
            tokens[0] += int(lengths[:, 1].sum().item())
            yield batch, lengths

    results = []
    for iters in ([warmup] if warmup else []) + [rc.trainer.max_steps]:  # --warmup 0: no warm-up train()
        tokens[0], timer = 0, _StepTimes()
        optimizer = optim.AdamW(learning_rate=m.lr, weight_decay=rc.trainer.weight_decay, bias_correction=True)
        args = TrainingArgs(batch_size=rc.trainer.batch_size, iters=iters, steps_per_report=1,
                            steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=rc.model.max_seq_len,
                            adapter_file=str(work / "mlx_lm_adapters.safetensors"))
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bar
            train(model, optimizer, train_set, None, args, iterate_batches=counting_batches, training_callback=timer)
        results.append((tokens[0], timer.seconds))
    return results[-1]


def main() -> None:
    parser = OneLineParser(prog="mlx_vs_mlx_lm.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model option: smollm2_135m (embedded) or tiny")
    parser.add_argument("--steps", type=int_at_least(1), default=10, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int_at_least(0), default=2, help="untimed steps per side first")
    parser.add_argument("--batch-size", type=int_at_least(1), default=4)
    parser.add_argument("--examples", type=int_at_least(1), default=32, help="synthetic training conversations generated")
    parser.add_argument("--max-seq-len", type=int_at_least(1), default=1024)
    parser.add_argument("--task-mix", default="all")
    args = parser.parse_args()
    try:
        rc = _config(args)
    except (ConfigError, HydraException) as err:  # e.g. --model nosuch: one line, not a traceback
        parser.error(config_error_line(err))
    model_dir = resolve_model_dir(rc.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _write_data(rc, model_dir, work / "mlx")
        n_train = sum(1 for _ in open(data / "train.jsonl"))
        if n_train < rc.trainer.batch_size:
            parser.error(f"only {n_train} examples fit in --max-seq-len {args.max_seq_len}; raise it")
        rows = [("ccexp MLXBackend.fit", *run_ccexp(rc, model_dir, data, args.warmup, work)),
                ("mlx_lm.tuner.trainer.train", *run_mlx_lm(rc, model_dir, data, args.warmup, work))]
    m = rc.method
    print(f"model={args.model} on {mx.default_device()}: {n_train} training examples of <= {args.max_seq_len} tokens "
          f"(task_mix={args.task_mix}), batch {args.batch_size}, LoRA r={m.r} scale={m.alpha / m.r:g} "
          f"dropout={m.dropout} on {','.join(lora_targets(m, rc.model)[0])} of every layer, "
          f"answer-only loss; {args.warmup} warm-up + {args.steps} timed steps each")
    print(f"{'runner':<28} {'tokens':>8} {'seconds':>9} {'tokens/s':>9}")
    for name, tokens, seconds in rows:
        print(f"{name:<28} {tokens:>8,} {seconds:>9.2f} {tokens / seconds:>9.1f}")
    ratio = (rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2])
    print(f"ratio ccexp / mlx-lm: {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
