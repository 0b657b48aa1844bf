"""Evaluation through the backend contract: loss/perplexity on answer tokens, generation on a
test subset scored per field, for the adapter and (optionally) the base model without it."""

from __future__ import annotations

import hashlib
import math
import statistics
from typing import Sequence

from ccexp.backends.base import Backend
from ccexp.config import EvalConfig
from ccexp.scoring import score, summarize


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


def _perplexity(backend: Backend, examples: Sequence[dict], adapter: bool, prefix: str) -> dict[str, float]:
    total, count = backend.nll(examples, adapter=adapter)
    loss = total / max(count, 1)
    return {f"{prefix}loss": loss, f"{prefix}ppl": math.exp(min(loss, 50.0)), f"{prefix}answer_tokens": count}


def _generate(backend: Backend, examples: list[dict], cfg: EvalConfig, adapter: bool):
    """(example, answer, seconds, new tokens) in input order; one generate call per task so
    each task gets its own token cap."""
    results: dict[int, tuple] = {}
    for task in sorted({ex["task"] for ex in examples}):
        rows = [i for i, ex in enumerate(examples) if ex["task"] == task]
        cap = cfg.max_new_tokens_by_task.get(task, cfg.max_new_tokens)
        gen = backend.generate([examples[i]["messages"][:-1] for i in rows], cap, adapter=adapter)
        for i, text, secs, n in zip(rows, gen.texts, gen.seconds, gen.new_tokens, strict=True):
            results[i] = (examples[i], text, secs, n)
    return [results[i] for i in range(len(examples))]


def evaluate(backend: Backend, splits: dict[str, list[dict]], cfg: EvalConfig) -> tuple[dict, list[dict]]:
    """Metrics (flat keys; baseline ones under ``baseline/``, gains under ``delta/``) and
    one prediction record per generated answer."""
    metrics: dict[str, float] = {}
    predictions: list[dict] = []
    subset = generation_subset(splits["test"], cfg.generate_examples)
    variants = [("adapter", True, "")] + ([("baseline", False, "baseline/")] if cfg.baseline else [])
    for model_name, adapter, prefix in variants:
        for split in ("val", "test"):
            metrics.update(_perplexity(backend, splits[split], adapter, f"{prefix}{split}/"))
        if not subset:
            continue
        records = []
        for ex, raw, secs, n_new in _generate(backend, subset, cfg, adapter):
            prompt = "\n".join(m["content"] for m in ex["messages"][:-1])
            records.append({
                "id": ex["id"], "task": ex["task"], "model": model_name,
                "prompt_sha1": hashlib.sha1(prompt.encode()).hexdigest()[:12],
                "reference": ex["reference"], "raw": raw, "seconds": secs, "new_tokens": n_new,
                **score(ex, raw, cfg),
            })
        metrics.update(summarize(records, f"{prefix}test/"))
        # A batch's wall time shared by its rows: throughput per answer, not single-request latency.
        metrics[f"{prefix}test/answer_seconds_p50"] = statistics.median(r["seconds"] for r in records)
        total_secs = sum(r["seconds"] for r in records)
        metrics[f"{prefix}test/gen_tokens_per_s"] = sum(r["new_tokens"] for r in records) / max(total_secs, 1e-9)
        predictions += records
    if cfg.baseline:
        for key in [k for k in metrics if not k.startswith("baseline/")]:
            if f"baseline/{key}" in metrics and not key.endswith(("answer_tokens", "answer_seconds_p50", "tokens_per_s")):
                metrics[f"delta/{key}"] = metrics[key] - metrics[f"baseline/{key}"]
    return metrics, predictions
