"""The comparison report's PNG plots. Figures are drawn on matplotlib's Agg canvas directly
(no pyplot, no global backend switch), so this runs headless and inside a sweep's callback."""

from __future__ import annotations

import math
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ccexp.compare import Run, fmt
from ccexp.config import CompareConfig, parse_constraint

FIELD_ACC = re.compile(r"^test/(?!task/)([^/]+)/acc$")  # test/<field>/acc, not test/task/<task>/acc
LATENCY_KEYS = ("test/latency/p50_s", "time/eval_s")  # first one reported wins


def _label(run: Run, swept: list[str]) -> str:
    values = [fmt(run.flat.get(k)) for k in swept]
    return f"{run.name}: {' · '.join(values)}" if values else run.name


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def field_accuracy(runs: list[Run], swept: list[str], path: Path) -> bool:
    fields = sorted({m[1] for r in runs for k in r.metrics if (m := FIELD_ACC.match(k))})
    if not fields or not runs:
        return False
    fig = Figure(figsize=(max(6.0, 1.1 * len(fields) + 3), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(fields))]
        values = [run.value(f"test/{f}/acc") for f in fields]
        bars = ax.bar(xs, [math.nan if v is None else v for v in values], width, label=_label(run, swept))
        ax.bar_label(bars, ["" if v is None else f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(range(len(fields)), fields, rotation=25, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on generated test answers")
    ax.set_title("Per-field accuracy (test); no bar = field not in the run's test set", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def tradeoff(runs: list[Run], swept: list[str], cc: CompareConfig, path: Path) -> bool:
    y_key = cc.metric if any(r.value(cc.metric) is not None for r in runs) else "test/acc"
    x_key = next((k for k in LATENCY_KEYS if any(r.value(k) is not None for r in runs)), None)
    points = [r for r in runs if x_key and r.value(x_key) is not None and r.value(y_key) is not None]
    if not points:
        return False
    sizes = [r.value("adapter/size_mb") or 0.0 for r in points]
    biggest = max(sizes) or 1.0
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for i, (run, size) in enumerate(zip(points, sizes)):
        ax.scatter(run.value(x_key), run.value(y_key), s=40 + 900 * math.sqrt(size / biggest), alpha=0.6)
        ax.annotate(f"{_label(run, swept)}, {fmt(size)} MB", (run.value(x_key), run.value(y_key)),
                    fontsize=8, xytext=(8, 8 - 14 * (i % 3)), textcoords="offset points")  # staggered: no overlap
    for text in cc.constraints:
        key, op, limit = parse_constraint(text)
        if key == x_key:
            ax.axvline(limit, linestyle="--", color="grey")
            ax.annotate(f"budget {op} {fmt(limit)}", (limit, ax.get_ylim()[1]), fontsize=8, color="grey",
                        xytext=(3, -12), textcoords="offset points")
    ax.set_xlabel(f"{x_key} (lower is better)")
    ax.set_ylabel(f"{y_key} ({'higher' if cc.direction == 'maximize' else 'lower'} is better)")
    ax.set_title("Quality vs latency; marker area = adapter size")
    ax.margins(0.25)
    _save(fig, path)
    return True


def training_curves(runs: list[Run], swept: list[str], path: Path) -> bool:
    curves = []
    for run in runs:
        history = run.metrics.get("train/val_history")
        if isinstance(history, list):
            pts = [(h["step"], h["val_loss"]) for h in history
                   if isinstance(h, dict) and isinstance(h.get("step"), (int, float))
                   and isinstance(h.get("val_loss"), (int, float))]
            if pts:
                curves.append((run, pts))
    if not curves:
        return False
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    for run, pts in curves:
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=_label(run, swept))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (answer tokens)")
    ax.set_title("Training curves")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def write_plots(runs: list[Run], out: Path, cc: CompareConfig, swept: list[str]) -> list[tuple[str, str]]:
    """(title, file name) of each plot written; a plot with nothing to show is skipped."""
    finished = [r for r in runs if r.finished]
    written = []
    if field_accuracy(finished, swept, out / "per_field_accuracy.png"):
        written.append(("Per-field accuracy by run", "per_field_accuracy.png"))
    if tradeoff(finished, swept, cc, out / "tradeoff.png"):
        written.append(("Quality vs latency vs adapter size", "tradeoff.png"))
    if training_curves(finished, swept, out / "training_curves.png"):
        written.append(("Training curves (validation loss)", "training_curves.png"))
    return written
