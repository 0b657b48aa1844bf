"""The short before/after table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ccexp.config import higher_is_better

# (metric key under test/ or val/, label); which way is better comes from higher_is_better,
# the rule the comparison report ranks by.
HEADLINE = [
    ("val/ppl", "validation perplexity"),
    ("test/ppl", "test perplexity"),
    ("test/json_valid", "valid JSON rate"),
    ("test/acc", "task accuracy (mean)"),
]
# Shown when the run has them (which depends on the task mix and data).
FIELDS = [
    ("test/quality_score/mae", "quality score MAE"),
    ("test/csat/mae", "CSAT MAE"),
    ("test/churn_risk/mae", "churn risk MAE"),
    ("test/issue_category/macro_f1", "issue category macro-F1"),
    ("test/journey_type/macro_f1", "journey type macro-F1"),
    ("test/coaching/rougeL", "coaching ROUGE-L"),
    ("test/coaching/theme_coverage", "coaching theme coverage"),
    ("test/reply/bleu", "reply BLEU"),
    ("test/reply/rougeL", "reply ROUGE-L"),
    ("test/label/acc", "label accuracy"),
    ("test/label/macro_f1", "label macro-F1"),
]


def _number(metrics: dict, key: str) -> float | None:
    """The metric, or None when absent or NaN (e.g. an MAE when no answer gave a number)."""
    value = metrics.get(key)
    return None if value is None or value != value else value


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _size(mb: float) -> str:
    """A size in MB (2**20 bytes, as the metrics count them); a soft prompt's few KB in KB, not "0.00 MB"."""
    return f"{mb:.2f} MB" if mb >= 0.1 else f"{mb * 1024:.1f} KB"


def print_summary(metrics: dict, run_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"ccexp: base model vs fine-tuned  ({run_dir})")
    # The constant-answer floor beside the accuracies: beating a base model that answers in prose
    # is easy; beating one constant answer per field takes reading the calls.
    floors = any(k.startswith("floor/") for k in metrics)
    for col in ("metric", "base", "fine-tuned", "change") + (("floor",) if floors else ()):
        table.add_column(col, justify="left" if col == "metric" else "right")
    task_keys = sorted(k for k in metrics if k.startswith("test/task/") and k.endswith("/acc"))
    rows = HEADLINE + [(k, f"  {k.split('/')[2]} accuracy") for k in task_keys] + FIELDS
    for key, label in rows:
        if key not in metrics:
            continue
        base, tuned = _number(metrics, f"baseline/{key}"), _number(metrics, key)
        change = ""
        if base is not None and tuned is not None:
            better = tuned != base and (tuned > base) == higher_is_better(key)
            change = f"{tuned - base:+.3f}" + (" ✓" if better else "")
        floor = _number(metrics, f"floor/{key}")
        table.add_row(label, _fmt(base), _fmt(tuned), change, *(("" if floor is None else _fmt(floor),) if floors else ()))
    console.print(table)
    floor, acc = _number(metrics, "floor/test/acc"), _number(metrics, "test/acc")
    if floor is not None:
        verdict = (f"task accuracy {acc:.3f} is not above it: the model has not yet learned to read the calls"
                   if acc is not None and acc <= floor else "a model must beat it to have read the calls")
        console.print(f"floor: one constant answer per field (train's most common label, a score's median) "
                      f"on the same test answers; {verdict}", soft_wrap=True)
    if "train/steps" in metrics:  # absent when a saved adapter was evaluated (python -m ccexp.evaluate)
        steps, resumed = metrics["train/steps"], metrics.get("train/resumed_from_step") or 0
        # A resumed run's seconds and tokens/s are this launch's steps, not the whole run's
        here = f" ({steps - resumed} here, resumed from step {resumed})" if resumed else ""
        console.print(
            f"trained {steps} steps{here} in {metrics.get('train/seconds', 0):.0f}s"
            + (f" ({metrics['train/tokens_per_s']:.0f} tokens/s)" if metrics.get("train/tokens_per_s") else "")
            + f"; best step {metrics.get('train/best_step')}; "
            f"adapter {_size(metrics.get('adapter/size_mb', 0))}, {metrics.get('params/trainable', 0):,} trainable params"
        )
    console.print(
        f"wall {metrics.get('time/total_s', 0):.0f}s: setup {metrics.get('time/setup_s', 0):.0f}s, "
        + (f"training {metrics.get('time/fit_s', 0):.0f}s" if "time/load_s" not in metrics
           else f"loading the adapter {metrics['time/load_s']:.0f}s")
        + f", evaluation {metrics.get('time/eval_s', 0):.0f}s"
    )
    if "test/latency/p50_s" in metrics:
        console.print(
            f"latency, one request at a time: p50 {metrics['test/latency/p50_s']:.2f}s, "
            f"p95 {metrics['test/latency/p95_s']:.2f}s, first token p50 {metrics['test/latency/ttft_p50_s']:.2f}s, "
            f"{metrics['test/latency/tokens_per_s']:.1f} tokens/s; peak memory {metrics.get('memory/peak_mb', 0):.0f} MB"
        )
    adapter = "adapter/, " if "train/steps" in metrics else ""  # python -m ccexp.evaluate writes none
    console.print(f"files: {run_dir}/metrics.json, predictions.jsonl, {adapter}config.yaml, environment.json")
