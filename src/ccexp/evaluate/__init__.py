"""Evaluation through the backend contract, shared by every backend: loss/perplexity on answer
tokens, batched generation on a test subset scored per field (``ccexp.metrics``), and latency
measured one request at a time — for the adapter and (optionally) the base model without it."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ccexp.backends.base import Backend, perplexity
from ccexp.config import ConfigError, EvalConfig
from ccexp.data.card import constant_guesses, constant_task_answers
from ccexp.metrics import summarize
from ccexp.scoring import field_checks, score

log = logging.getLogger("ccexp")

# Keys that count the work (how many answers, tokens, examples) or its throughput: no delta/
# for them. Latency keeps its delta: the base model often talks until the cap.
_NO_DELTA = ("answer_tokens", "generated", "tokens_per_s", "examples", "answers")


def generation_subset(examples: Sequence[dict], n: int) -> list[dict]:
    """Up to n test examples, taken round-robin over tasks so every task is represented."""
    by_task: dict[str, list[dict]] = {}
    for ex in examples:
        by_task.setdefault(ex["task"], []).append(ex)
    picked, queues = [], [list(v) for _, v in sorted(by_task.items())]
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 1]."""
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def _cap(cfg: EvalConfig, task: str) -> int:
    return cfg.max_new_tokens_by_task.get(task, cfg.max_new_tokens)


def check_answer_caps(cfg: EvalConfig, max_seq_len: int, model_dir: Path, tasks: Iterable[str]) -> None:
    """Generation keeps context - cap prompt tokens (``batching.generation_prompt_room``): a cap
    that leaves a prompt under half of model.max_seq_len has the model answer prompts cut to a stub
    (at the context, to one token), scored as if it had read them. Refused before the model loads."""
    try:
        context = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):  # checked, in one line, where the model loads
        return
    if not isinstance(context, int) or not (cfg.generate_examples or cfg.latency_examples):
        return
    most = context - max_seq_len // 2
    for task in sorted(set(tasks)):
        if _cap(cfg, task) > most:
            key = f"eval.max_new_tokens_by_task.{task}" if task in cfg.max_new_tokens_by_task else "eval.max_new_tokens"
            raise ConfigError(f"{key}={_cap(cfg, task)}: leaves a prompt fewer than half of model.max_seq_len="
                              f"{max_seq_len} tokens within the model's context (max_position_embeddings={context}); "
                              f"expected at most {most}")


def _prompt(ex: dict) -> list[dict]:
    return ex["messages"][:-1]


@contextmanager
def _progress(total: int) -> Iterator[Progress]:
    """A progress bar on stderr while generating; nothing is left behind in logs."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        progress.add_task("evaluating", total=total)
        yield progress


def constant_floor(train: Sequence[dict], subset: list[dict], cfg: EvalConfig) -> dict[str, float]:
    """``floor/test/...``: the task accuracy of one constant answer per field (train's most common
    label, a score's median; ``python -m ccexp.data describe``'s floor) on the generated examples,
    counted as a model's answers are. A model at or under it has not read the calls, whatever it
    gains over a base model that answers in prose. test/acc's floor only when every generated task
    has one (a reply's exact text has no constant answer)."""
    checks = field_checks(cfg)
    splits = {"train": list(train), "test": subset}
    by_task = constant_task_answers(splits, checks, constant_guesses(splits, checks))
    floor = {f"floor/test/task/{task}/acc": acc for task, acc in by_task.items()}
    if by_task and set(by_task) == {ex["task"] for ex in subset}:
        floor["floor/test/acc"] = sum(by_task.values()) / len(by_task)
    return floor


def _perplexity(backend: Backend, examples: Sequence[dict], adapter: bool, prefix: str) -> dict[str, float]:
    total, count = backend.nll(examples, adapter=adapter)
    loss = total / max(count, 1)
    return {f"{prefix}loss": loss, f"{prefix}ppl": perplexity(loss), f"{prefix}answer_tokens": count}


def _generate(backend: Backend, examples: list[dict], cfg: EvalConfig, adapter: bool, progress: Progress):
    """(example, answer, seconds, new tokens) in input order. Batches hold one task (each task
    has its own token cap) and prompts of similar length (less padding)."""
    results: dict[int, tuple] = {}
    for task in sorted({ex["task"] for ex in examples}):
        rows = sorted((i for i, ex in enumerate(examples) if ex["task"] == task),
                      key=lambda i: sum(len(m["content"]) for m in _prompt(examples[i])))
        for start in range(0, len(rows), cfg.batch_size):
            batch = rows[start : start + cfg.batch_size]
            gen = backend.generate([_prompt(examples[i]) for i in batch], _cap(cfg, task), adapter=adapter)
            for i, text, secs, n in zip(batch, gen.texts, gen.seconds, gen.new_tokens, strict=True):
                results[i] = (examples[i], text, secs, n)
            progress.advance(progress.task_ids[0], len(batch))
    return [results[i] for i in range(len(examples))]


def measure_latency(backend: Backend, examples: list[dict], cfg: EvalConfig, adapter: bool, prefix: str,
                    progress: Progress, warmup: dict) -> dict[str, float]:
    """What a caller scoring one interaction waits: each example generated alone (batch of 1)
    after a warm-up call on another prompt (``warmup``: one of the timed prompts would find
    itself in the prefix cache); time to first token from the same call."""
    sample = examples[: cfg.latency_examples]
    if not sample:
        return {}
    backend.generate([_prompt(warmup)], 2, adapter=adapter)  # first-call allocations and caches
    seconds, first, tokens = [], [], 0
    for ex in sample:
        gen = backend.generate([_prompt(ex)], _cap(cfg, ex["task"]), adapter=adapter)
        first.append(gen.first_token_seconds[0])
        seconds.append(gen.seconds[0])
        tokens += gen.new_tokens[0]
        progress.advance(progress.task_ids[0], 1)
    latency = {
        "p50_s": percentile(seconds, 0.5), "p95_s": percentile(seconds, 0.95),
        "ttft_p50_s": percentile(first, 0.5), "ttft_p95_s": percentile(first, 0.95),
        "tokens_per_s": tokens / max(sum(seconds), 1e-9), "examples": len(sample),
    }
    return {f"{prefix}test/latency/{k}": v for k, v in latency.items()}


def evaluate(backend: Backend, splits: dict[str, list[dict]], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Metrics (flat keys; baseline ones under ``baseline/``, gains under ``delta/``) and
    one prediction record per generated answer."""
    metrics: dict[str, float] = {}
    predictions: list[dict] = []
    subset = generation_subset(splits["test"], cfg.generate_examples)
    if len(subset) < cfg.generate_examples:  # said, as the importers say a split came out smaller
        log.info("eval.generate_examples=%d: the test split has %d examples; all of them are generated",
                 cfg.generate_examples, len(subset))
    if cfg.latency_examples > len(subset):  # latency re-times generated answers: never more than there are
        log.info("eval.latency_examples=%d: %s", cfg.latency_examples,
                 f"latency is timed on the {len(subset)} generated examples" if subset else
                 "no latency is measured, as nothing is generated (eval.generate_examples=0)")
    variants = [("adapter", True, "")] + ([("baseline", False, "baseline/")] if cfg.baseline else [])
    with _progress((len(subset) + min(cfg.latency_examples, len(subset))) * len(variants)) as progress:
        for model_name, adapter, prefix in variants:
            for split in ("val", "test"):
                metrics.update(_perplexity(backend, splits[split], adapter, f"{prefix}{split}/"))
            if not subset:
                continue
            records = []
            for ex, raw, secs, n_new in _generate(backend, subset, cfg, adapter, progress):
                prompt = "\n".join(m["content"] for m in _prompt(ex))
                records.append({
                    "id": ex["id"], "task": ex["task"], "model": model_name,
                    "prompt_sha1": hashlib.sha1(prompt.encode()).hexdigest()[:12],
                    "reference": ex["reference"], "raw": raw, "seconds": secs, "new_tokens": n_new,
                    **score(ex, raw, cfg),
                })
            metrics.update(summarize(records, f"{prefix}test/", cfg))
            # Batched throughput: a batch's time is shared by its rows.
            metrics[f"{prefix}test/batch_tokens_per_s"] = (sum(r["new_tokens"] for r in records)
                                                           / max(sum(r["seconds"] for r in records), 1e-9))
            predictions += records
            # The base model's latency too: it often talks until the cap, which is part of its cost.
            warmup = (splits["val"] or splits["train"] or subset)[0]
            metrics.update(measure_latency(backend, subset, cfg, adapter, prefix, progress, warmup))
    metrics.update(constant_floor(splits["train"], subset, cfg))
    if cfg.baseline:
        for key in [k for k in metrics if not k.startswith(("baseline/", "floor/"))]:
            base = metrics.get(f"baseline/{key}")
            if base is not None and metrics[key] is not None and not key.endswith(_NO_DELTA):
                metrics[f"delta/{key}"] = metrics[key] - base
    return metrics, predictions
