"""Training throughput, measured side by side on the same model, data, seed and steps:
ccexp's Lightning path, a bare PyTorch loop with the same kernels, and HF ``Trainer`` + peft
with the collator HF's causal-LM fine-tuning examples use. The sides take turns, one optimizer
step each (``turns.py``), so drift of the machine's speed hits them alike. Warm-up steps are
left out; tokens are the examples' tokens without padding (a packed batch's shared prompt start
counted for each example; MFU counts it once); every side's adapter is then scored on the same
validation examples."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch

from ccexp.backends.lightning import TorchBackend, resolve_base_dtype
from ccexp.backends.lightning_modules import ChatDataModule, Throughput
from ccexp.bench.turns import StepClock, Turns
from ccexp.config import RunConfig
from ccexp.data.batching import IGNORE, EncodedDataset, collate, completion_nll, to_device


# Square sizes the CPU peak is read at. One size alone misleads: on 2 AMX Xeon cores a 2048²
# bf16 product read 1.1 to 2.9 TFLOP/s from one pair of fresh matrices to the next (the bench's
# peak, then one reading of 8 such products, ranged 1.2–2.7 TFLOP/s across runs whose training
# steps took the same time), and which size runs fastest changes with the machine (3000² read
# ~3.2 TFLOP/s there, 2048² at most ~2.4, 1024² ~1.0). The best product of several sizes is the
# ceiling: MFU against it is the lower and the steadier.
CPU_PEAK_SIZES = (1536, 2000, 2048, 3000)
CPU_PEAK_SECONDS = 0.25  # per size, after one untimed product; at least two timed products each


def matmul_peak_flops(dtype: torch.dtype, device: str = "cpu") -> float:
    """Dense matmul FLOP/s on ``device`` in ``dtype``: the ceiling MFU is measured against. On a
    GPU, the mean of 50 8192² products (it needs large matrices and many of them to reach its
    peak); on a CPU, the fastest single product of fresh square matrices of each of
    ``CPU_PEAK_SIZES``."""
    if device == "cuda":
        n, repeats = 8192, 50
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        sync(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        return 2 * n**3 * repeats / (time.perf_counter() - tic)
    best = 0.0
    for n in CPU_PEAK_SIZES:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # first touch of the output's pages, kernel selection
        start, timed = time.perf_counter(), 0
        while timed < 2 or time.perf_counter() - start < CPU_PEAK_SECONDS:
            tic = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - tic))
            timed += 1
    return best


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it covers that work."""
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, dtype) -> torch.autocast:
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def val_loss(model, tokenizer, val: list[dict], max_len: int, autocast_dtype, device: str) -> float:
    """Answer-token loss on the validation examples, the same way for every side: one example
    per forward pass, so no pass runs on padding (in padded batches of 4 the same loss took 25%
    longer)."""
    dataset = EncodedDataset(tokenizer, val, max_len)
    total = count = 0.0
    model.eval()
    with torch.inference_mode(), autocast(device, autocast_dtype):
        for i in range(len(dataset)):
            batch = collate([dataset[i]], tokenizer.pad_token_id)
            nll, n = completion_nll(model, to_device(batch, device))
            total, count = total + float(nll), count + int(n)
    return total / max(count, 1)


def training_loader(backend: TorchBackend, rc: RunConfig, train: list[dict], val: list[dict]):
    """ccexp's training batches for ``rc``, as its fit makes them (packed or length-grouped)."""
    return ChatDataModule(backend.tokenizer, train, val, rc.model.max_seq_len, rc.trainer.batch_size, rc.seed,
                          packed=backend.packing, group_by=rc.trainer.group_by).train_dataloader()


def training_loss(backend: TorchBackend, batch: dict, device: str) -> torch.Tensor:
    """The mean answer-token loss of one training batch, under the backend's autocast."""
    with autocast(device, backend.autocast_dtype):
        nll, count = completion_nll(backend.model, to_device(batch, device))
        return nll / count.clamp(min=1)


def forward_backward(backend: TorchBackend, batch: dict, device: str = "cpu") -> float:
    """One training forward + backward with the gradients dropped (the weights untouched), as the
    benchmark scripts time them: the loss."""
    loss = training_loss(backend, batch, device)
    loss.backward()
    for p in backend.model.parameters():
        p.grad = None
    return loss.item()


def alone_window(backend: TorchBackend, batches: list[dict], device: str, warmup: bool = True) -> dict:
    """Forward + backward of ``batches`` (ccexp's timed ones, after training) with nothing else
    running: the tokens/s MFU is measured on. In the turns each of ccexp's steps follows another
    side's, whose model, activations and thread pool it shares the machine's caches and heap
    with: run right after them, the same batches alone ran 6-28% faster on a Zen 5 EPYC (two
    sides of the same shapes in turns: 4-5%), a cost of the comparison, not of ccexp. The
    optimizer step is left out (MFU's 4·N counts forward and backward; the LoRA step is 7-12 ms
    of a 3-4 s step on 2 cores). ``warmup``: the first batch once untimed before, as every
    side's warm-up step is: the first pass outside Lightning's loop took 1.6 s of the tiny
    model's 60 ms steps (0.1-0.3 s on SmolLM2's 3 s)."""
    model = backend.model
    was_training = model.training
    model.train()
    if warmup and batches:
        forward_backward(backend, batches[0], device)
    seconds = []
    for batch in batches:
        sync(device)
        tic = time.perf_counter()
        forward_backward(backend, batch, device)
        sync(device)
        seconds.append(time.perf_counter() - tic)
    model.train(was_training)
    tokens = sum(int(b["n_computed"]) for b in batches)
    return {"batches": len(batches), "computed_tokens": tokens, "seconds": sum(seconds),
            "computed_tokens_per_s": tokens / sum(seconds), "step_seconds": [round(s, 3) for s in seconds],
            "head_rows": sum(head_rows(b) for b in batches)}


def head_rows(batch: dict) -> int:
    """Positions the output head runs on in ``completion_nll``: those predicting an answer token."""
    if "segments" in batch:  # packed: the kept positions
        return int(batch["keep"].numel())
    return batch["input_ids"].shape[0] * (int(batch["n_answer"]) + 1)


def embedding_params(model) -> dict:
    """The input embedding's and the output head's parameter counts, and whether they are one
    tensor (tied: the model's parameter count holds it once). MFU's 4·N counts both on every
    token, but the lookup is no matmul, and ccexp runs the head only where an answer token is
    predicted (``mfu_strict``)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return {"embedding": embed.numel(), "head": head.numel(), "tied": head.data_ptr() == embed.data_ptr()}


def mfu_strict(alone: dict, frozen_params: int, embeddings: dict, peak_flops: float) -> float:
    """MFU over the matmul FLOPs the step runs: 4 per frozen parameter per token outside the
    embeddings, and the head's 4 per parameter on the positions it runs on only."""
    body = frozen_params - embeddings["embedding"] - (0 if embeddings["tied"] else embeddings["head"])
    flops = 4 * body * alone["computed_tokens"] + 4 * embeddings["head"] * alone["head_rows"]
    return flops / (peak_flops * alone["seconds"]) if peak_flops > 0 else 0.0


# The matmuls of a training step, by what they compute: the model's linear layers (the FLOPs
# MFU counts) and attention's score and value products (products MFU's 4·N leaves out, with an
# inner dimension of one head's width: on 2 AMX Xeon cores SmolLM2's run at ~600 GFLOP/s, a
# third of the peak). Fused attention kernels count as attention.
LINEAR_OPS = ("aten::mm", "aten::addmm")
ATTENTION_OPS = ("aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::_scaled_dot_product", "aten::_flash_attention",
                 "aten::_efficient_attention")


def step_breakdown(backend: TorchBackend, batches: list[dict], frozen_params: int, embeddings: dict,
                   peak_flops: float, device: str) -> dict:
    """Forward + backward of ``batches`` (ccexp's own, after warm-up) under the profiler: the
    seconds spent in the linear layers' matmuls and in attention's, and the MFU the step would
    have if nothing else took any time (``mfu_bound``): the ceiling the matmuls' own speed puts
    on MFU on this machine, whatever the rest of the step gets down to. ``mfu_bound_strict`` is
    that ceiling over the FLOPs the matmuls run (``mfu_strict``): 4·N's can pass 1 where the
    embeddings are most of N, as on the tiny model."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        window = alone_window(backend, batches, device, warmup=False)  # right after the alone window: warm
    seconds = window["seconds"]
    linear = attention = 0.0
    for event in prof.events():
        kind = _matmul_kind(event.name)
        if kind is None or any(_matmul_kind(a.name) for a in _ancestors(event)):  # counted once, at the top
            continue
        spent = (event.device_time_total if device == "cuda" else event.cpu_time_total) / 1e6
        if kind == "linear":
            linear += spent
        else:
            attention += spent
    tokens, matmuls = window["computed_tokens"], linear + attention
    return {"batches": len(batches), "computed_tokens": tokens, "seconds": seconds, "linear_matmul_s": linear,
            "attention_matmul_s": attention, "mfu_window": mfu(window["computed_tokens_per_s"], frozen_params, peak_flops),
            "mfu_bound": mfu(tokens / matmuls, frozen_params, peak_flops) if matmuls > 0 else math.nan,
            "mfu_bound_strict": (mfu_strict({**window, "seconds": matmuls}, frozen_params, embeddings, peak_flops)
                                 if matmuls > 0 else math.nan)}


def _matmul_kind(name: str) -> str | None:
    if name in LINEAR_OPS:
        return "linear"
    return "attention" if name.startswith(ATTENTION_OPS) else None


def _ancestors(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def _speed(batches: list[tuple[float, int, int]], warmup: int) -> dict:
    """Over the batches after warm-up: tokens/s (the examples' tokens, each counted as its
    example has it), computed tokens/s (those the model ran on: a packed batch's shared prompt
    start once; what MFU counts) and mean step seconds; and every step's seconds and tokens
    (warm-up included), so a later reader can tell one slow step from a slow side."""
    timed = batches[warmup:]
    seconds = sum(s for s, _, _ in timed)
    return {"tokens_per_s": sum(t for _, t, _ in timed) / seconds,
            "computed_tokens_per_s": sum(c for _, _, c in timed) / seconds, "step_s": seconds / len(timed),
            "steps": len(batches), "step_seconds": [round(s, 3) for s, _, _ in batches],
            "step_tokens": [t for _, t, _ in batches], "step_computed_tokens": [c for _, _, c in batches]}


def base_weights(model) -> str:
    """What the frozen base's linear weights are: "4-bit" or their dtype, so the results show
    every side trained the same model."""
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            return "4-bit"
    return str(next(p.dtype for p in model.parameters() if not p.requires_grad)).removeprefix("torch.")


def run_ccexp(rc: RunConfig, model_dir: Path, train: list[dict], val: list[dict], warmup: int, device: str,
              pass_turn: Callable[[], None] = lambda: None) -> dict:
    backend = TorchBackend(rc, device, model_dir)
    backend.fit_callbacks.append(_TakeTurns(pass_turn))
    with tempfile.TemporaryDirectory() as tmp:
        metrics = backend.fit(train, val, None, Path(tmp))
    backend.fit_callbacks.clear()
    return {**_speed(backend.fit_batches, warmup), "base_weights": base_weights(backend.model),
            "compiled": bool(metrics["train/compiled"]),
            "val_loss": val_loss(backend.model, backend.tokenizer, val, rc.model.max_seq_len, backend.autocast_dtype,
                                 device),
            "backend": backend}


class _TakeTurns(pl.Callback):
    """Hands the turn on at the end of every training batch (after ``Throughput`` has timed
    it) and restarts ``Throughput``'s clock once the turn is back."""

    def __init__(self, pass_turn: Callable[[], None]):
        self.pass_turn = pass_turn

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.pass_turn()
        for callback in trainer.callbacks:
            if isinstance(callback, Throughput):
                callback.restart()


def run_sides(rc: RunConfig, model_dir: Path, train: list[dict], val: list[dict], warmup: int,
              device: str) -> tuple[dict, list[str]]:
    """ccexp, the bare loop and HF Trainer in turns, one optimizer step each (``turns.py``), ccexp
    and the bare loop trading places every other round: their results by side, and the order the
    steps ran in."""
    sides = {"ccexp": run_ccexp, "bare_loop": run_bare_loop, "hf_trainer": run_hf_trainer}
    turns = Turns(list(sides), swap=("ccexp", "bare_loop"))  # each timed after HF's step as often
    results = turns.run({name: partial(side, rc, model_dir, train, val, warmup, device) for name, side in sides.items()},
                        seed=rc.seed)
    return results, turns.order


def run_bare_loop(rc: RunConfig, model_dir: Path, train: list[dict], val: list[dict], warmup: int,
                  device: str, pass_turn: Callable[[], None] = lambda: None) -> dict:
    """The same model, batches, optimizer and loss as ccexp, without Lightning."""
    from transformers import get_linear_schedule_with_warmup

    backend = TorchBackend(rc, device, model_dir)  # builds the identical wrapped model
    model, tok, t = backend.model, backend.tokenizer, rc.trainer
    compiled = backend.compile_for_training(t.max_steps)  # the same kernels as ccexp's fit
    torch.manual_seed(rc.seed)
    loader = training_loader(backend, rc, train, val)  # ccexp's batches
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=rc.method.lr, weight_decay=t.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * t.max_steps), t.max_steps)
    model.train()
    # fp16 (a GPU without bf16) scales the loss, as Lightning and HF Trainer do; a no-op otherwise.
    scaler = torch.amp.GradScaler(device, enabled=backend.precision == "16-mixed")
    tokens = []
    clock = StepClock(partial(sync, device))  # each batch timed from the previous one's end, as on the other sides
    for step, batch in enumerate(loader):
        if step == t.max_steps:
            break
        scaler.scale(training_loss(backend, batch, device)).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens.append((batch["n_tokens"], batch["n_computed"]))
        clock.step_end(pass_turn)
    return {**_speed([(s, *t) for s, t in zip(clock.seconds, tokens)], warmup), "base_weights": base_weights(model),
            "compiled": compiled,
            "val_loss": val_loss(model, tok, val, rc.model.max_seq_len, backend.autocast_dtype, device)}


def run_hf_trainer(rc: RunConfig, model_dir: Path, train: list[dict], val: list[dict], warmup: int,
                   device: str, pass_turn: Callable[[], None] = lambda: None) -> dict:
    """HF Trainer + peft as its docs set it up: a tokenizer with its default (right) padding,
    random batches, ``DataCollatorForSeq2Seq`` padding labels with -100 (loss on answer tokens
    only, like ccexp), logits for every position, the base in its saved dtype; the same compute
    dtype (bf16 autocast) and optimizer.
    QLoRA as peft's guide has it: the base loaded in 4 bits (the method's quantization config)
    in bf16, ``prepare_model_for_kbit_training`` (norms in fp32, gradient checkpointing)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from ccexp.methods import METHODS
    from ccexp.models import load_model, load_tokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    ours = load_tokenizer(model_dir)
    rows = []  # the very same token ids ccexp trains on
    for item in EncodedDataset(ours, train, rc.model.max_seq_len).items:
        ids = item.input_ids
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                     "labels": [IGNORE] * (len(ids) - item.n_answer) + ids[-item.n_answer:]})
    tokens: list[int] = []
    base_collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE)

    def collator(features):
        batch = base_collator(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    clock = StepClock(partial(sync, device))

    class StepTimer(TrainerCallback):
        """From the previous step's end (or the epoch's start): fetching and collating the
        batch included, as on the other sides."""

        def on_epoch_begin(self, args, state, control, **kw):
            clock.start()

        def on_step_end(self, args, state, control, **kw):
            clock.step_end(pass_turn)

    # QLoRA as ccexp's side has it: its compute dtype (bf16 where the hardware has it, fp16 on a
    # GPU without), the unquantized layers in its base dtype.
    spec = METHODS[rc.method.name](rc.method, rc.model, str(model_dir), autocast_dtype(rc, device) or torch.float32)
    if spec.quantization_config is not None:
        dtype = resolve_base_dtype(rc.backend.base_dtype, precision_of(rc, device))
        base = prepare_model_for_kbit_training(load_model(model_dir, dtype, spec.quantization_config, device))
    else:  # transformers' default: the dtype the checkpoint was saved in (fp32 for the converted SmolLM2)
        base = load_model(model_dir, "auto", device=device)
    model = get_peft_model(base, spec.peft_config)
    t, precision = rc.trainer, precision_of(rc, device)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=t.batch_size, max_steps=t.max_steps,
            learning_rate=rc.method.lr, warmup_steps=int(t.warmup_ratio * t.max_steps), lr_scheduler_type="linear",
            weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, bf16=precision == "bf16-mixed",
            fp16=precision == "16-mixed", use_cpu=device == "cpu", logging_strategy="no", log_level="error",
            save_strategy="no", report_to=[], seed=rc.seed, dataloader_num_workers=0,
            remove_unused_columns=False, disable_tqdm=True,
            # torch's plain AdamW, as ccexp and the bare loop step with: transformers 5 defaults
            # to the fused one where torch >= 2.8 has it.
            optim="adamw_torch",
        )
        # A list of dicts is a map-style dataset to Trainer (``datasets`` is not needed to run the
        # bench, e.g. on an offline GPU machine that lacks it); the same random batches.
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                          callbacks=[StepTimer()])
        trainer.train()
    # Padded rows: the model runs on every pad token too, but MFU counts real ones, as on ccexp's side.
    return {**_speed([(s, t, t) for s, t in zip(clock.seconds, tokens)], warmup), "base_weights": base_weights(model),
            "val_loss": val_loss(model, ours, val, rc.model.max_seq_len, autocast_dtype(rc, device), device)}


def precision_of(rc: RunConfig, device: str) -> str:
    """What ``backend.precision`` becomes on ``device`` (``auto``: bf16-mixed where the CPU or
    GPU has bf16, 16-mixed on older GPUs, else 32-true), as ccexp's side resolves it."""
    from ccexp.backends.lightning import resolve_precision

    return resolve_precision(rc.backend.precision, device)


def autocast_dtype(rc: RunConfig, device: str) -> torch.dtype | None:
    """The autocast dtype of ccexp's side, which every side trains and is scored in."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision_of(rc, device))


def mfu(tokens_per_s: float, frozen_params: int, peak_flops: float) -> float:
    """Model FLOPs utilisation with a frozen base: forward 2N + input-gradient backward 2N per token."""
    return 4 * frozen_params * tokens_per_s / peak_flops if peak_flops > 0 and not math.isnan(tokens_per_s) else 0.0
