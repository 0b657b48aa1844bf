"""The short before/after table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

# (metric key under test/ or val/, label, higher is better)
HEADLINE = [
    ("val/ppl", "validation perplexity", False),
    ("test/ppl", "test perplexity", False),
    ("test/json_valid", "valid JSON rate", True),
    ("test/acc", "task accuracy (mean)", True),
]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(metrics: dict, run_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"ccexp: base model vs fine-tuned  ({run_dir})")
    for col in ("metric", "base", "fine-tuned", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    task_keys = sorted(k for k in metrics if k.startswith("test/task/") and k.endswith("/acc"))
    rows = HEADLINE + [(k, f"  {k.split('/')[2]} accuracy", True) for k in task_keys]
    for key, label, higher in rows:
        if key not in metrics:
            continue
        base, tuned = metrics.get(f"baseline/{key}"), metrics[key]
        change = "" if base is None else f"{tuned - base:+.3f}" + (" ✓" if (tuned > base) == higher and tuned != base else "")
        table.add_row(label, _fmt(base), _fmt(tuned), change)
    console.print(table)
    console.print(
        f"trained {metrics.get('train/steps', 0)} steps in {metrics.get('train/seconds', 0):.0f}s "
        f"({metrics.get('train/tokens_per_s', 0):.0f} tokens/s); best step {metrics.get('train/best_step')}; "
        f"adapter {metrics.get('adapter/size_mb', 0):.2f} MB, {metrics.get('params/trainable', 0):,} trainable params"
    )
    console.print(
        f"wall {metrics.get('time/total_s', 0):.0f}s: setup {metrics.get('time/setup_s', 0):.0f}s, "
        f"training {metrics.get('time/fit_s', 0):.0f}s, evaluation {metrics.get('time/eval_s', 0):.0f}s"
    )
    console.print(f"files: {run_dir}/metrics.json, predictions.jsonl, adapter/, config.yaml")
