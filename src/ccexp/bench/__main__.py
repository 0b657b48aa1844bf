"""``python -m ccexp.bench``: ccexp against the plain Hugging Face path, side by side in one run.

Same model (embedded SmolLM2 by default), same synthetic data, seed and optimizer steps; warm-up
steps excluded; pad tokens never counted. Prints each ratio with its goal and writes a JSON
file so later runs can be compared (``--against EARLIER.json`` here, ``python -m ccexp.bench.show``
for saved runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from hydra.errors import HydraException
from rich.console import Console

from ccexp import environment
from ccexp.backends import resolve_backend, speedups
from ccexp.backends.lightning import resolve_base_dtype
from ccexp.bench import inference, memory, training
from ccexp.bench.report import RESULTS, ResultError, load_result, print_history, print_table, report_rows
from ccexp.bench.setup import compose_run_config
from ccexp.cli import OneLineParser, int_at_least, writable_file
from ccexp.config import ConfigError
from ccexp.config_errors import config_error_line
from ccexp.data import build_splits
from ccexp.methods import METHODS
from ccexp.models import load_model, resolve_model_dir


def _args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m ccexp.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2_135m", help="model config (default: the embedded SmolLM2)")
    p.add_argument("--steps", type=int_at_least(1), default=5, help="timed optimizer steps per side (after warm-up)")
    p.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed first steps per side")
    p.add_argument("--batch-size", type=int_at_least(1), default=4)
    # A batch of one is no batch; one new token leaves no decode step to compare.
    p.add_argument("--prompts", type=int_at_least(2), default=8, help="prompts for the generation comparisons")
    p.add_argument("--new-tokens", type=int_at_least(2), default=32,
                   help="tokens generated per prompt when comparing batched and single")
    p.add_argument("--json", type=writable_file, default=None,
                   help=f"results file (default: {RESULTS}/<time>.json)")
    p.add_argument("--against", type=_earlier_result, default=None, metavar="EARLIER.json",
                   help="an earlier run's results file: its ratios are printed beside this run's")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the GPU run (e.g. --model mistral_7b_random --method qlora)")
    p.add_argument("--method", choices=("lora", "qlora"), default="lora", help="the method every training side uses")
    p.add_argument("--parts", type=_parts, default=PARTS,
                   help=f"comma-separated subset of {','.join(PARTS)} (generation trains ccexp's side alone if "
                        "training is left out)")
    p.add_argument("overrides", nargs="*", default=[],
                   help="more config overrides, as for python -m ccexp (e.g. model.max_seq_len=512 task_mix=reply)")
    args = p.parse_args(argv)
    for override in args.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        # A group's name key chooses as the group does (method.name=qlora trains 4-bit).
        setter = SET_BY_THE_BENCH.get(key) or SET_BY_THE_BENCH.get(key.removesuffix(".name"))
        if setter:  # else the override would win silently, and the header and JSON would not say so
            p.error(f"{override}: the bench sets {key} {setter}")
    if args.json is None:  # the default folder, checked before the minutes of measuring too
        try:
            args.json = writable_file(RESULTS / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")  # named by its start
        except argparse.ArgumentTypeError as err:
            p.error(f"argument --json: {err}")
    return args


# Config keys the bench sets from its flags, or itself so that every side does the same work.
SET_BY_THE_BENCH = {
    "model": "from --model", "backend": "from --device", "method": "from --method",
    "trainer.batch_size": "from --batch-size", "trainer.max_steps": "from --steps + --warmup",
    "data_size.train": "from --batch-size × (--steps + --warmup)", "data_size.test": "from --prompts",
    **dict.fromkeys(("trainer.val_every_n_steps", "trainer.early_stopping_patience", "trainer.limit_val_batches",
                     "data_size.val"),
                    "itself: every side trains the same steps, then is scored on the same examples"),
    "logger": "itself: logger=none (the results go to the JSON file)"}
PARTS = ("training", "generation", "memory")


def _earlier_result(text: str) -> tuple[str, dict]:
    """--against, read and checked before any work (a bad file would else fail after the run)."""
    try:
        return Path(text).stem, load_result(text)
    except ResultError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(PARTS)}, got {text!r}")
    return parts


def _long_run_compile(args: argparse.Namespace) -> list[str]:
    """``backend.compile=true`` where ``auto`` compiles a run long enough to pay for it: the
    bench's few steps stand for such a run's steady state, and the compiling happens in the
    warm-up. An explicit ``backend.compile=...`` wins."""
    long_run = speedups.compiles("auto", args.device, args.method == "qlora", speedups.COMPILE_MIN_STEPS)
    return ["backend.compile=true"] if long_run else []


def machine(device: str) -> dict:
    """The run's hardware (``ccexp.environment.machine``, less the host: these files are
    committed), and what else decides the bench's numbers: the allocator and huge-page settings."""
    m = environment.machine(device)
    del m["host"]
    # Tensors on huge pages (benchmarks/huge_pages.py): the process's setting and the kernel's.
    return {**m, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "thp_mem_alloc": os.environ.get(
        "THP_MEM_ALLOC_ENABLE"), "thp_kernel": speedups.huge_pages_mode(), "torch": torch.__version__,
        "python": platform.python_version()}


class Record:
    """The results of one bench run, written to ``path`` after every part: a run that fails in
    a later part (a memory probe, an out-of-memory generation, Ctrl-C) keeps the minutes spent
    measuring the earlier ones, and the file says which parts it lacks (``unfinished``)."""

    def __init__(self, path: Path, parts: tuple[str, ...]):
        self.path, self.left, self.results, self.written = path, list(parts), {}, False
        self.clock = _PartClock()
        self.load = {"start": _load_average()}

    def part_done(self, part: str) -> None:
        self.clock.lap(part)
        self.left.remove(part)
        self.load[part] = _load_average()
        self.write()

    def write(self) -> None:
        results = self.results
        results["seconds"], results["load_average"] = self.clock.seconds(), self.load
        rows = report_rows(results)
        results["ratios"] = {name: {"value": value, "goal": goal, "met": met} for name, value, goal, met, _ in rows}
        if self.left:
            results["unfinished"] = list(self.left)
        else:
            results.pop("unfinished", None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".part")  # never a half-written results file
        partial.write_text(json.dumps(results, indent=2))
        partial.replace(self.path)
        self.written = True

    def kept(self) -> str:
        """For an error line: where the parts measured before it are."""
        return f"; the parts measured before it are in {self.path}" if self.written else ""


def _load_average() -> float | None:
    """The 1-minute load average: above the bench's own threads, other work shared the CPUs."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on every platform
        return None


def main(argv=None) -> None:
    args = _args(argv)
    record = Record(args.json, args.parts)
    try:
        run_bench(args, record)
    except (ConfigError, HydraException) as err:  # e.g. --model nosuch: one line, not a traceback
        print(f"ccexp.bench: error: {config_error_line(err)}{record.kept()}", file=sys.stderr)
        sys.exit(2)
    except memory.ProbeError as err:
        print(f"ccexp.bench: error: {err}{record.kept()}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"ccexp.bench: interrupted{record.kept()}", file=sys.stderr)
        sys.exit(130)
    except BaseException:  # an unforeseen failure keeps its traceback, and says what was saved
        if record.written:
            print(f"ccexp.bench: {record.kept()[2:]}", file=sys.stderr)
        raise


def run_bench(args: argparse.Namespace, record: Record) -> None:
    warnings.filterwarnings("ignore")
    console = Console()
    steps = args.warmup + args.steps
    fixed = [f"model={args.model}", f"backend={args.device}", "logger=none", f"trainer.max_steps={steps}",
             f"trainer.batch_size={args.batch_size}", f"trainer.val_every_n_steps={steps}",
             "trainer.early_stopping_patience=0", "trainer.limit_val_batches=1",
             f"data_size.train={args.batch_size * steps}", "data_size.val=8", f"data_size.test={args.prompts}"]
    overrides = [*fixed, *args.overrides]
    # Training's config; the memory probes (one step each) keep auto, which leaves them eager.
    rc = compose_run_config([*fixed, *_long_run_compile(args), *args.overrides, f"method={args.method}"])
    try:
        device = resolve_backend(args.device)
    except ConfigError:  # the bench's flag, not backend=, is what the user can change
        raise ConfigError(f"--device {args.device}: torch sees no CUDA GPU on this machine; use --device cpu, or "
                          "benchmarks/offline/run.sh on the GPU machine") from None
    model_dir = resolve_model_dir(rc.model)
    splits = build_splits(rc.data, rc.data_size, rc.task_mix)
    results = record.results
    # The precision every side trained and generated in (what backend.precision=auto became):
    # the same machine gives other ratios in fp32, bf16 or fp16.
    results.update({"machine": machine(device), "code": environment.code_and_versions(),
                    "args": {k: str(v) for k, v in vars(args).items() if k != "against"},
                    "precision": training.precision_of(rc, device), "when": time.strftime("%F %T")})
    train, val = splits["train"], splits["val"]
    backend = None

    if "training" in args.parts:
        console.print(f"[bold]training[/]: {args.steps} timed steps (+{args.warmup} warm-up) of {args.batch_size} "
                      f"examples per side, {args.method} on {device}"
                      + (", norms + MLPs compiled (backend.compile, in the warm-up)" if rc.backend.compile == "true" else ""))
        dtype = training.autocast_dtype(rc, device) or torch.float32
        peak = training.matmul_peak_flops(dtype, device)
        sides, order = training.run_sides(rc, model_dir, train, val, args.warmup, device)
        ours, bare, hf = sides["ccexp"], sides["bare_loop"], sides["hf_trainer"]
        backend = ours.pop("backend")
        release_memory()  # the other sides' models, gone with their threads
        # Measured again after training, the higher one kept: one reading taken while the machine
        # happened to be slow would flatter MFU (runs here read 378 to 420 GFLOP/s).
        peaks = [peak, training.matmul_peak_flops(dtype, device)]
        trainable, total = backend.parameter_counts()
        # ccexp's timed batches again, alone, right after the peak's second reading: the tokens/s
        # MFU is measured on (the turns' steps pay for the other sides': alone_window). Then two
        # of them profiled: what its matmuls alone allow MFU to reach.
        timed = list(training.training_loader(backend, rc, train, val))[args.warmup:steps]
        alone = training.alone_window(backend, timed, device)
        embeddings = training.embedding_params(backend.model)
        breakdown = training.step_breakdown(backend, timed[:2], total - trainable, embeddings, max(peaks), device)
        results["training"] = {"ccexp": ours, "bare_loop": bare, "hf_trainer": hf, "matmul_peak_flops": max(peaks),
                               "matmul_peak_readings": peaks, "frozen_params": total - trainable,
                               "embedding_params": embeddings, "turns": order, "orders_weighted_alike": True,
                               "ccexp_alone": alone, "step_breakdown": breakdown}
        record.part_done("training")

    if "generation" in args.parts:
        if backend is None:  # an adapter to generate with: ccexp's side trained alone
            backend = training.run_ccexp(rc, model_dir, train, val, args.warmup, device)["backend"]
        _generation(results, console, backend, rc, [*overrides, f"method={args.method}"], model_dir, splits, args)
        record.part_done("generation")
    backend = None
    release_memory()  # before the memory probes, which measure a GPU's allocations in other processes

    if "memory" in args.parts:
        console.print("[bold]memory[/]: a fresh process per method")
        # One optimizer step on one batch of the training batch size, validated on one example:
        # both methods step through the same batch, and the peak is that step's backward, which
        # follows the batch's tokens (two steps over 8 examples took a minute more and met a longer batch).
        mem_overrides = [*overrides, "trainer.max_steps=1", "trainer.val_every_n_steps=1",
                         f"data_size.train={args.batch_size}", "data_size.val=1"]
        # The same allocator setting on both sides: peak RSS then follows live tensors, not the heap
        # fragmentation that glibc keeps (see backend.release_freed_memory).
        results["memory"] = {m: memory.measure(m, [*mem_overrides, "backend.release_freed_memory=true"])
                             for m in ("lora", "qlora")}
        record.part_done("memory")

    record.write()  # the whole run's seconds; every part's numbers are already on disk
    print_table(console, report_rows(results), results)
    if args.against:
        print_history(console, [args.against, ("this run", results)])
    console.print(f"results: {record.path}", markup=False)


def release_memory() -> None:
    """Free models no longer referenced (a 4-bit weight and its layer refer to each other, so
    only the cycle collector frees them), and hand a GPU's cached blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _generation(results: dict, console: Console, backend, rc, overrides: list[str], model_dir: Path, splits: dict,
                args: argparse.Namespace) -> None:
    console.print("[bold]generation[/]")
    prompts = [ex["messages"][:-1] for ex in splits["test"]]
    results["generation"] = inference.batched_vs_single(backend, prompts, args.new_tokens)
    # 200 training answers for the drafts: a small run's worth (data_size=small has 1,500).
    aio_cfg = compose_run_config([*overrides, "task_mix=analytics_json", "data_size.test=5", "data_size.train=200"])
    aio = build_splits(aio_cfg.data, aio_cfg.data_size, aio_cfg.task_mix)
    results["all_in_one"] = inference.answer_latency(backend, aio["test"], aio["train"])
    # The base as ccexp loads it (dtype, attention, quantization: a merged QLoRA adapter stays
    # 4-bit), the merged model cast to its dtype, so the ratio is the adapter's cost only.
    spec = METHODS[rc.method.name](rc.method, rc.model, str(model_dir), backend.autocast_dtype or torch.float32)
    base = load_model(model_dir, resolve_base_dtype(rc.backend.base_dtype, backend.precision), spec.quantization_config,
                      device=backend.device, attention=rc.backend.attention).to(backend.device)
    results["merged"] = inference.merged_vs_base(backend, base, splits["test"], args.new_tokens)


class _PartClock:
    """Wall seconds of each part of the bench, and of the whole run (models, data included)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.parts: dict[str, float] = {}

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part], self.last = now - self.last, now

    def seconds(self) -> dict[str, float]:
        return {**self.parts, "total": time.perf_counter() - self.start}


def restart_settings(argv: list[str], environ: dict) -> dict[str, str]:
    """What the bench restarts itself with, where the environment lacks it:
    - ``MALLOC_ARENA_MAX=1`` (glibc): the training sides run in threads of their own
      (``turns.py``), and with an arena per thread each kept ~5 GB that it had freed, which ran
      a 24 GB VM out of memory; ``mallopt`` at run time comes too late once PyTorch's threads
      have made arenas of their own (peak 19.8 GB against 14.7 GB);
    - with ``--device cuda``, one GPU visible (the first): HF Trainer takes every GPU it sees
      (DataParallel for LoRA; for QLoRA a batch as many times larger) where ccexp's side trains
      on one, so the two would not do the same work; set before CUDA reads it, at its start."""
    settings = {}
    if sys.platform == "linux" and "MALLOC_ARENA_MAX" not in environ:
        settings["MALLOC_ARENA_MAX"] = "1"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--device")  # the one flag read here; the bench itself parses them all, and says what is wrong
    try:
        device = parser.parse_known_args(argv)[0].device
    except argparse.ArgumentError:  # "--device" without a value: the bench's own parser says so
        device = None
    if device == "cuda" and (visible is None or "," in visible):
        settings["CUDA_VISIBLE_DEVICES"] = next((d.strip() for d in (visible or "0").split(",") if d.strip()), "0")
    return settings


def _restart() -> None:
    settings = restart_settings(sys.argv[1:], dict(os.environ))
    if settings:
        os.execve(sys.executable, [sys.executable, "-m", "ccexp.bench", *sys.argv[1:]], {**os.environ, **settings})


if __name__ == "__main__":
    _restart()
    main()
