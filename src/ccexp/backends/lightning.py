"""The torch backend (cpu and cuda): HF transformers + peft, trained by PyTorch Lightning."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from peft import set_peft_model_state_dict
from pytorch_lightning.callbacks import EarlyStopping
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import DynamicCache

from ccexp import resume
from ccexp.backends import decoding, packed, speedups
from ccexp.backends.base import Generation, check_saved_config, peak_rss_mb
from ccexp.backends.lightning_modules import (BestAdapter, ChatDataModule, Checkpoints, CompletionLM, StayOnDevice,
                                             Throughput)
from ccexp.config import ConfigError, RunConfig, lora_targets
from ccexp.data.batching import (EncodedDataset, GroupedBatchSampler, collator, completion_nll,
                                 generation_prompt_room, prompt_ids, to_device)
from ccexp.methods import METHODS
from ccexp.methods.prompt_tuning import prompt_learning, soft_prompt_inputs
from ccexp.models import load_model, load_tokenizer
from ccexp.signals import lightning_stops_itself


class _NoAdverts(logging.Filter):
    """Lightning 2.6 logs a tip to install its cloud logger (litlogger) at every Trainer it
    builds: one line of advertising in every run's log, about a logger ccexp does not use."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoAdverts())
# Lightning 2.6's pytree helper builds torch's LeafSpec, which torch 2.13 deprecates: a warning
# in every run's console that only a Lightning release can act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def cpu_has_bf16() -> bool:
    """bf16 autocast pays on CPUs with native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: str) -> str:
    if requested == "16-mixed" and device != "cuda":
        raise ConfigError("backend.precision=16-mixed: fp16 autocast needs CUDA; use bf16-mixed or 32-true on CPU")
    if requested != "auto":
        return requested
    if device == "cuda":
        # Not emulated: torch says yes on a T4 or V100 too, where bf16 runs slowly in software.
        return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def resolve_base_dtype(requested: str, precision: str) -> torch.dtype:
    """The frozen base weights' dtype. auto = bf16 under bf16 autocast: autocast would cast
    every fp32 weight to bf16 at every matmul anyway, so storing them in bf16 skips those
    casts (~10% of a CPU step) and halves weight memory. The trainable adapter stays fp32
    (peft's autocast_adapter_dtype), so optimizer math is unchanged."""
    if requested == "auto":
        return torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    if requested == "bfloat16" and precision == "32-true":  # fp32 activations meet bf16 weights in every matmul
        raise ConfigError("backend.base_dtype=bfloat16: a bf16 base needs autocast, and this run's precision is "
                          "32-true; set backend.precision=bf16-mixed (or backend.base_dtype=auto)")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[requested]


def packing_applies(cfg: RunConfig, model) -> bool:
    """Whether training and validation batches are packed rows (``backend.packing``). Prompt
    tuning keeps padded rows, each with its soft prompt (``methods/prompt_tuning.py``). A model
    the packed attention would get wrong is refused in one line."""
    if not cfg.backend.packing or prompt_learning(model):
        return False
    config = model.config
    window = getattr(config, "sliding_window", None)
    sliding = any(layer.is_sliding for layer in DynamicCache(config=config).layers)
    if sliding and window and window < cfg.model.max_seq_len:
        raise ConfigError(f"backend.packing=true: model {cfg.model.name} attends within a sliding window of {window} "
                          f"tokens, shorter than model.max_seq_len={cfg.model.max_seq_len}; set backend.packing=false")
    # Llama/Mistral/Qwen call it attention_dropout, GPT-2 attn_pdrop, BERT-style configs another name.
    dropout = max(float(getattr(config, name, 0.0) or 0.0) for name in ATTENTION_DROPOUT_KEYS)
    if dropout > 0:
        raise ConfigError(f"backend.packing=true: model {cfg.model.name} has attention dropout {dropout}; "
                          "set backend.packing=false")
    return True


ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob", "attn_dropout")


class FirstTokenClock:
    """A ``generate`` streamer that only keeps time: its first ``put`` is the prompt, its second
    the first new token, so one call gives both time to first token and total time."""

    def __init__(self):
        self.start, self.first_token, self._puts = time.perf_counter(), 0.0, 0

    def put(self, value) -> None:
        self._puts += 1
        if self._puts == 2:
            self.first_token = time.perf_counter()

    def end(self) -> None:
        if not self.first_token:  # nothing generated (max_new_tokens reached at once)
            self.first_token = time.perf_counter()


def keep_odd_4bit_layers_generic(model: torch.nn.Module) -> None:
    """bitsandbytes' AVX512-BF16 CPU layout needs a 4-bit layer's output width divisible by 32
    and its input width by the quantization block (64), and fails mid-run otherwise (a model 48
    wide): such layers keep the generic 4-bit kernel, which computes the same product."""
    for layer in model.modules():
        if not getattr(layer, "support_avx512bf16_for_cpu", False):
            continue
        block = getattr(getattr(layer.weight, "quant_state", None), "blocksize", 64)
        if layer.out_features % 32 or layer.in_features % block:
            layer.support_avx512bf16_for_cpu = False


@contextlib.contextmanager
def bnb_cpu_repacking_off(model: torch.nn.Module):
    """bitsandbytes (>= 0.47) re-lays a 4-bit weight out for its AVX512-BF16 CPU kernel at the
    first forward in eval mode without gradients (in training: the first validation), with its
    scales rounded to bf16. The steps after it would train on a slightly different base than the
    steps before, and a QLoRA run resumed between two validations on the other one (not bit for
    bit). Training keeps the layout the base was quantized in; evaluation after it may repack."""
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    before = [m.support_avx512bf16_for_cpu for m in layers]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    try:
        yield
    finally:
        for layer, flag in zip(layers, before):
            layer.support_avx512bf16_for_cpu = flag


# A saved adapter's settings that the model built from this run's config must share, and the
# ccexp key that sets each: evaluating with another alpha would rescale the update silently.
ADAPTER_FIELDS = {"peft_type": "method.name", "r": "method.r", "lora_alpha": "method.alpha",
                  "target_modules": "model.lora_targets", "num_virtual_tokens": "method.num_virtual_tokens"}


# A QLoRA adapter's 4-bit base, as BitsAndBytesConfig's arguments: BitsAndBytesConfig(**json.load(...)).
QUANTIZATION_FILE = "quantization.json"


def quantization_record(config) -> dict:
    return {"load_in_4bit": True, "bnb_4bit_quant_type": config.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": config.bnb_4bit_use_double_quant,
            "bnb_4bit_compute_dtype": str(config.bnb_4bit_compute_dtype).removeprefix("torch.")}


def check_adapter_config(path: Path, live: Any, targets_key: str = "model.lora_targets") -> None:
    """The adapter's adapter_config.json against ``live`` (the peft config built from this run's
    config): one line naming the first setting they differ in (``targets_key``: the key that
    set LoRA's targets, method.target_modules where given)."""
    values = {field: getattr(live, field, None) for field in ADAPTER_FIELDS}
    values["peft_type"] = getattr(values["peft_type"], "value", values["peft_type"])
    if values["target_modules"] is not None:
        values["target_modules"] = list(values["target_modules"])
    check_saved_config(path, values, {**ADAPTER_FIELDS, "target_modules": targets_key}, "peft layout")


class TorchBackend:
    def __init__(self, cfg: RunConfig, device: str, model_dir: Path, draft_answers: Sequence[str] = ()):
        self.name, self.cfg, self.device = device, cfg, device
        self.precision = resolve_precision(cfg.backend.precision, device)
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)
        if device == "cpu":  # before the weights load, so they are where the setting puts them
            (speedups.release_freed_memory if cfg.backend.release_freed_memory else speedups.keep_freed_memory)()
        self.tokenizer = load_tokenizer(model_dir)
        spec = METHODS[cfg.method.name](cfg.method, cfg.model, str(model_dir), self.autocast_dtype or torch.float32)
        dtype = resolve_base_dtype(cfg.backend.base_dtype, self.precision)
        base = load_model(model_dir, dtype, spec.quantization_config, device=device, attention=cfg.backend.attention)
        self.model = spec.wrap(base).to(device)
        speedups.apply(self.model, autocast=self.autocast_dtype is not None, shared_dropout=cfg.method.shared_dropout)
        self.quantized = spec.quantization_config is not None
        self.quantization = spec.quantization_config
        if self.quantized and device == "cpu":
            keep_odd_4bit_layers_generic(self.model)
        self.packing = packing_applies(cfg, self.model)
        self.fit_batches: list[tuple[float, int, int]] = []  # (seconds, n_tokens, n_computed) per training batch
        self.fit_callbacks: list[pl.Callback] = []  # more Lightning callbacks for fit (a benchmark's turns)
        # Single requests: drafts from the training answers, and the shared prompt prefix's keys/values.
        self._draft_answers, self._drafter = list(draft_answers), None
        self.prefix_cache = decoding.PrefixCache() if cfg.backend.prefix_cache else None
        # Generation on weights laid out for oneDNN, with the adapter (x86 CPUs, bf16 or fp32 bases).
        use_packed = cfg.backend.packed_weights and device == "cpu" and packed.available()
        self.packed = packed.PackedWeights(self.model, self.autocast_dtype or torch.float32) if use_packed else None

    # -- training ---------------------------------------------------------------------------
    def fit(self, train: Sequence[dict], val: Sequence[dict], logger: Any, run_dir: Path,
            checkpoint: Path | None = None) -> dict[str, float]:
        t = self.cfg.trainer
        data = ChatDataModule(self.tokenizer, train, val, self.cfg.model.max_seq_len, t.batch_size,
                              self.cfg.seed, t.grad_accum, packed=self.packing, group_by=t.group_by)
        steps_per_epoch = math.ceil(len(data.train_sampler(quiet=True)) / t.grad_accum)
        total_steps = t.max_steps if t.max_steps > 0 else t.max_epochs * steps_per_epoch
        compiled = self.compile_for_training(total_steps)
        module = CompletionLM(self.model, self.cfg.method.lr, t.weight_decay, t.warmup_ratio, total_steps)
        best, speed = BestAdapter(run_dir / "adapter"), Throughput()
        callbacks = [best, speed, *self.fit_callbacks]
        if t.early_stopping_patience > 0:
            callbacks.append(EarlyStopping("val/loss", patience=t.early_stopping_patience, mode="min",
                                           check_on_train_epoch_end=False))
        if t.save_every_n_steps:  # last: its checkpoints hold the other callbacks' state after a validation
            callbacks.append(Checkpoints(run_dir / "checkpoints", t.save_every_n_steps, t.val_every_n_steps,
                                         resume.training_config(self.cfg, self.device)))
        trainer = pl.Trainer(
            accelerator="gpu" if self.device == "cuda" else "cpu",
            devices=1,
            strategy=StayOnDevice(device=torch.device("cuda", 0) if self.device == "cuda" else torch.device("cpu")),
            precision=self.precision,
            # With max_steps, the epochs those steps take (not -1, "no limit", which the progress
            # bar prints as "Epoch 0/-2"); steps_per_epoch counts the optimizer steps Lightning takes.
            max_epochs=t.max_epochs if t.max_steps < 0 else math.ceil(total_steps / steps_per_epoch),
            max_steps=total_steps,
            accumulate_grad_batches=t.grad_accum,
            gradient_clip_val=t.max_grad_norm,
            # Counted in micro-batches, across epoch boundaries.
            val_check_interval=t.val_every_n_steps * t.grad_accum,
            check_val_every_n_epoch=None,
            limit_val_batches=t.limit_val_batches,
            num_sanity_val_steps=0,
            logger=logger if logger is not None else False,
            callbacks=callbacks,
            enable_checkpointing=False,  # BestAdapter keeps the adapter, not 500 MB of frozen base
            use_distributed_sampler=False,
            log_every_n_steps=1,
            default_root_dir=run_dir,
            enable_model_summary=False,
        )
        self.model.train()  # from_pretrained leaves eval mode; Lightning keeps submodule modes as found
        self.weights_changed()  # and the packed copies' memory is free for training
        with bnb_cpu_repacking_off(self.model), lightning_stops_itself():
            # weights_only=False: ccexp's own file, which holds the random state's Python objects.
            state = checkpoint / resume.TRAINER_STATE if checkpoint else None
            trainer.fit(module, datamodule=data, ckpt_path=state, weights_only=False)
            if not module.history or module.history[-1]["step"] != trainer.global_step:
                trainer.validate(module, datamodule=data, verbose=False)  # judge the final steps too
        best.restore(module)
        self.fit_batches = speed.batches
        stopper = trainer.early_stopping_callback
        return {
            "train/steps": trainer.global_step,
            "train/epochs": trainer.current_epoch,
            "train/best_step": best.best_step,
            "train/best_val_loss": best.best_loss,  # None (null) when no validation ran
            "train/early_stopped": float(stopper is not None and stopper.wait_count >= stopper.patience),
            "train/seconds": speed.seconds,
            "train/resumed_from_step": module.resumed_from_step,
            "train/tokens": module.tokens_seen,  # a resumed run's include those before the checkpoint
            # None when no step ran here (resumed from the last step): 0 tokens/s would be a speed
            "train/tokens_per_s": speed.tokens / max(speed.seconds, 1e-9) if speed.batches else None,
            "train/truncated_examples": data.train_set.truncated,
            "train/compiled": float(compiled),
            "train/val_history": module.history,
        }

    def compile_for_training(self, total_steps: int) -> bool:
        """Compile the norms and MLP blocks for training where ``backend.compile`` says so
        (``speedups.compiles``, ``speedups.compile_for_training``); whether they are."""
        speedups.check_compiler(self.cfg.backend.compile, self.device)
        on = speedups.compiles(self.cfg.backend.compile, self.device, self.quantized, total_steps)
        if on:
            speedups.compile_for_training(self.model)
        return on

    # -- evaluation ---------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.autocast_dtype)

    @contextlib.contextmanager
    def _net(self, adapter: bool):
        """The adapted model, or the base model with the adapter switched off."""
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            if adapter:
                yield self.model
            else:
                with self.model.disable_adapter():
                    yield self.model.get_base_model()

    def inference_weights(self, adapter: bool):
        """Generation's weights: packed, with the LoRA per ``adapter`` (``backends/packed.py``), or
        the model's own where ``backend.packed_weights`` is off or does not apply."""
        return self.packed.active(adapter) if self.packed else contextlib.nullcontext()

    def weights_changed(self) -> None:
        """Cached keys/values and packed weights belong to the weights before the change."""
        if self.prefix_cache:
            self.prefix_cache.clear()
        if self.packed:
            self.packed.clear()

    def _batches(self, dataset: EncodedDataset, batch_size: int):
        # A sum over the whole split: packed, the batches may as well share the most.
        sampler = GroupedBatchSampler(dataset.sort_keys("prompt" if self.packing else "length"), batch_size,
                                      shuffle=False, seed=0)
        return DataLoader(dataset, batch_sampler=sampler,
                          collate_fn=collator(self.packing, self.tokenizer.pad_token_id))

    def nll(self, examples: Sequence[dict], adapter: bool = True) -> tuple[float, int]:
        dataset = EncodedDataset(self.tokenizer, examples, self.cfg.model.max_seq_len)
        total, count = 0.0, 0
        with self._net(adapter) as net:
            for batch in self._batches(dataset, self.cfg.eval.batch_size):
                nll, n = completion_nll(net, to_device(batch, self.device))
                total, count = total + float(nll), count + int(n)
        return total, count

    def generate(self, prompts: Sequence[list[dict]], max_new_tokens: int, adapter: bool = True) -> Generation:
        room = generation_prompt_room(self.cfg.model.max_seq_len, max_new_tokens,
                                      getattr(self.model.config, "max_position_embeddings", None))
        # Over-long prompts lose their middle, as in training.
        all_ids = [prompt_ids(self.tokenizer, messages, room) for messages in prompts]
        n = len(all_ids)
        out_texts, seconds, new_tokens, first = [""] * n, [0.0] * n, [0] * n, [0.0] * n
        eos = self.tokenizer.eos_token_id
        with self._net(adapter) as net, self.inference_weights(adapter):
            own = self._own_decoding(net)
            # ccexp's batched loop computes each prompt start a batch shares once: prompts in token
            # order put one task's instruction in a batch. generate pads: similar lengths instead.
            by_prompt = own and self.cfg.backend.prefix_cache
            order = sorted(range(n), key=lambda i: all_ids[i] if by_prompt else len(all_ids[i]))
            for start in range(0, len(order), self.cfg.eval.batch_size):
                rows = order[start : start + self.cfg.eval.batch_size]
                ids = [all_ids[i] for i in rows]
                tic = time.perf_counter()
                if own and len(rows) == 1:  # one request: drafts and the prefix cache
                    answer, first_s, _ = decoding.greedy_decode(
                        net, ids[0], max_new_tokens, eos, drafter=self.drafter(),
                        draft_tokens=self.cfg.backend.draft_tokens, prefix_cache=self.prefix_cache, cache_key=adapter)
                    answers = [answer]
                elif own:  # the shared prompt start once, each prompt's own tokens unpadded
                    answers, first_s = decoding.greedy_decode_batch(net, ids, max_new_tokens, eos,
                                                                   share_prefix=self.cfg.backend.prefix_cache)
                else:
                    answers, first_s = self._generate(net, ids, max_new_tokens)
                elapsed = time.perf_counter() - tic
                for row, answer in zip(rows, answers):
                    out_texts[row] = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
                    seconds[row], new_tokens[row], first[row] = elapsed / len(rows), len(answer), first_s
        return Generation(out_texts, seconds, new_tokens, first)

    def _own_decoding(self, net) -> bool:
        """ccexp's greedy loops (``backends/decoding.py``) for everything but prompt tuning,
        which keeps transformers' ``generate`` (``_generate``)."""
        return not prompt_learning(net)

    def _generate(self, net, ids: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
        """transformers' generate on a left-padded batch: (answers up to EOS, seconds to first token).
        A prompt-tuned model's rows get their soft prompt next to their text (``soft_prompt_inputs``;
        peft's own ``generate`` puts it before the padding), and generate its positions from the mask."""
        eos = self.tokenizer.eos_token_id
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        clock = FirstTokenClock()
        settings = dict(max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos, streamer=clock)
        if prompt_learning(net):
            inputs = soft_prompt_inputs(net, enc["input_ids"], enc["attention_mask"])
            out = net.base_model.generate(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                                          **settings)  # the new tokens only: there were no input ids
        else:
            out = net.generate(**enc, **settings)[:, enc["input_ids"].shape[1]:]
        answers = [row[: row.index(eos) + 1] if eos in row else row for row in out.tolist()]
        return answers, clock.first_token - clock.start

    def drafter(self) -> decoding.NgramDrafter | None:
        """Built on first use: tokenizing the training answers costs a second or so."""
        if self.cfg.backend.draft_tokens and self._drafter is None:
            self._drafter = decoding.drafter_from_answers(self.tokenizer, self._draft_answers)
        return self._drafter

    def save_adapter(self, path: Path) -> None:
        self.model.save_pretrained(path)
        if self.quantization is not None:
            # peft's adapter_config.json does not say which 4-bit base the adapter was trained on:
            # on another (nf4 for fp4) it is a slightly different model, with no error anywhere.
            (Path(path) / QUANTIZATION_FILE).write_text(json.dumps(quantization_record(self.quantization), indent=2))

    def load_adapter(self, path: Path) -> None:
        weights = Path(path) / "adapter_model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"{weights}: no such file; expected an adapter saved by ccexp (peft layout)")
        live = self.model.peft_config["default"]
        check_adapter_config(Path(path) / "adapter_config.json", live, lora_targets(self.cfg.method, self.cfg.model)[1])
        if (Path(path) / QUANTIZATION_FILE).is_file():  # adapters saved before it have none
            check_saved_config(Path(path) / QUANTIZATION_FILE,
                               quantization_record(self.quantization) if self.quantization is not None else {},
                               {"bnb_4bit_quant_type": "method.quant_type",
                                "bnb_4bit_use_double_quant": "method.double_quant"}, "peft layout")
        try:
            state = load_file(weights, device=self.device)
        except Exception as err:  # noqa: BLE001 - safetensors' own error type: a truncated or foreign file
            raise ConfigError(f"{weights}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
        try:
            result = set_peft_model_state_dict(self.model, state)
        except RuntimeError as err:  # shapes differ: saved with another rank or virtual-token count
            raise ConfigError(f"{weights}: does not fit method={self.cfg.method.name} on model="
                              f"{self.cfg.model.name}: {str(err).splitlines()[-1].strip()}") from None
        self.weights_changed()
        # peft loads a prompt-tuning adapter's prompt_embeddings into the prompt encoder itself,
        # yet its load_state_dict still lists the key as unexpected.
        unexpected = [k for k in result.unexpected_keys if not (live.is_prompt_learning and k == "prompt_embeddings")]
        if unexpected:
            raise ConfigError(f"{weights}: {len(unexpected)} tensors this method/model does not have, "
                              f"e.g. {unexpected[0]}; expected an adapter of method={self.cfg.method.name}")
        # Every base weight is "missing" from an adapter; an adapter weight missing is not.
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise ConfigError(f"{weights}: no trained weights for {len(missing)} of this run's adapter tensors, e.g. "
                              f"{missing[0]}; expected model.lora_targets as the adapter was trained with")

    def parameter_counts(self) -> tuple[int, int]:
        trainable, total = self.model.get_nb_trainable_parameters()
        return int(trainable), int(total)

    def peak_is_host_memory(self) -> bool:
        return self.device != "cuda"

    def peak_memory_mb(self) -> float:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mb()
