"""The comparison report's PNG plots. Figures are drawn on matplotlib's Agg canvas directly
(no pyplot, no global backend switch), so this runs headless and inside a sweep's callback."""

from __future__ import annotations

import math
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ccexp.compare.runs import Run, column_label, fmt, recorded_as_null, setting
from ccexp.config import CompareConfig, higher_is_better, parse_constraint

FIELD_ACC = re.compile(r"^test/(?!task/)([^/]+)/acc$")  # test/<field>/acc, not test/task/<task>/acc
LATENCY_KEYS = ("test/latency/p50_s", "time/eval_s")  # first one reported wins


def _label(run: Run, swept: list[str]) -> str:
    """The run and its swept values; named ("lr=2.89e-04") when several keys are swept, where
    bare numbers would not say which is which."""
    if len(swept) > 1:  # method.name -> method, method.lr -> lr
        values = [f"{column_label(k).rsplit('.', 1)[-1]}={setting(run.flat.get(k))}" for k in swept]
    else:
        values = [setting(run.flat.get(k)) for k in swept]
    return f"{run.name}: {' · '.join(values)}" if values else run.name


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legends beside the axes included


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
        # Upright labels over bars narrower than "0.00" run together: turned on their side there.
        ax.bar_label(bars, ["" if v is None else f"{v:.2f}" for v in values], fontsize=7, padding=2,
                     rotation=90 if len(runs) > 2 else 0)
    ax.set_xticks(range(len(fields)), fields, rotation=25, ha="right")
    ax.set_ylim(0, 1.12 if len(runs) > 2 else 1.05)
    ax.set_ylabel("accuracy on generated test answers")
    ax.set_title("Per-field accuracy (test); no bar = field not in the run's test set", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def _lacks(run: Run, key: str) -> str:
    """Why a run has no value for key: "no number for K" (null, NaN) or "no K"."""
    return f"no number for {key}" if key in run.metrics else f"no {key}"


def left_out(filename: str, missing: list[tuple[Run, str]]) -> str:
    """"tradeoff.png leaves out `2` (no test/latency/p50_s)" ("" when none is left out)."""
    return f"{filename} leaves out " + ", ".join(f"`{r.name}` ({why})" for r, why in missing) + "." if missing else ""


def tradeoff(runs: list[Run], swept: list[str], cc: CompareConfig, path: Path) -> tuple[bool, str]:
    """Whether it drew the plot, and what it left out and why, or why it drew none ("": nothing)."""
    y_key = cc.metric if any(r.value(cc.metric) is not None for r in runs) else "test/acc"
    # The y key's own direction: a fallback to test/acc is higher-is-better whatever cc.metric's is.
    higher = cc.direction == "maximize" if y_key == cc.metric else higher_is_better(y_key)
    x_key = next((k for k in LATENCY_KEYS if any(r.value(k) is not None for r in runs)), None)
    points = [r for r in runs if x_key and r.value(x_key) is not None and r.value(y_key) is not None]
    if not points and x_key is None:
        had = "has a number for" if recorded_as_null(runs, *LATENCY_KEYS) else "reports"
        return False, f"{path.name}: not drawn, no finished run {had} {' or '.join(LATENCY_KEYS)}." if runs else ""
    if not points:  # a latency in one run, the y key in another (or in none)
        return False, f"{path.name}: not drawn, no finished run has both {x_key} and {y_key}."
    missing = [(r, _lacks(r, x_key if r.value(x_key) is None else y_key)) for r in runs if r not in points]
    sizes = [r.value("adapter/size_mb") or 0.0 for r in points]
    biggest = max(sizes) or 1.0
    fig = Figure(figsize=(9.5, 4.5))
    ax = fig.subplots()
    for i, (run, size) in enumerate(zip(points, sizes)):
        # The point carries the run's name; what it ran with goes in the legend beside the axes,
        # where long labels (a search's four parameters) do not squeeze the plot.
        # Area (s) proportional to the adapter's size, with a floor so a prompt-tuning adapter
        # (~0.05 MB beside LoRA's ~7) still shows.
        ax.scatter(run.value(x_key), run.value(y_key), s=max(20.0, 900 * size / biggest), alpha=0.6,
                   label=f"{_label(run, swept)}, {fmt(size)} MB")
        ax.annotate(run.name, (run.value(x_key), run.value(y_key)), fontsize=8,
                    xytext=(8, 8 - 14 * (i % 3)), textcoords="offset points")  # staggered: no overlap
    ax.margins(0.25)
    # The margins give the labels room, but no latency is negative, and a rate stays in [0, 1].
    ys = [r.value(y_key) for r in points]
    x_low, x_high = ax.get_xlim()
    ax.set_xlim(max(x_low, 0.0), x_high)
    y_low, y_high = ax.get_ylim()
    if all(0.0 <= y <= 1.0 for y in ys) and _is_rate(y_key):  # a little beyond: markers at 0 or 1 stay whole
        ax.set_ylim(max(y_low, -0.03), min(y_high, 1.03))
    for text in cc.constraints:
        key, op, limit = parse_constraint(text)
        if key == x_key:
            # Drawn even when every run is far inside it: the headroom is what the line shows.
            ax.set_xlim(ax.get_xlim()[0], max(ax.get_xlim()[1], limit * 1.08))
            ax.axvline(limit, linestyle="--", color="grey")
            # Left of the line: on its right it ran past the axes, under the legend beside them.
            ax.annotate(f"budget {op} {fmt(limit)}", (limit, ax.get_ylim()[1]), fontsize=8, color="grey",
                        xytext=(-3, -12), textcoords="offset points", ha="right")
    ax.set_xlabel(f"{x_key} (lower is better)")
    ax.set_ylabel(f"{y_key} ({'higher' if higher else 'lower'} is better)")
    title = "Quality vs latency; marker area ∝ adapter size"
    if y_key != cc.metric:
        had = "has a number for" if recorded_as_null(runs, cc.metric) else "reports"
        title += f"\n{y_key} in place of {cc.metric}: no finished run {had} it"
    ax.set_title(title)
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=0.3)
    for handle in legend.legend_handles:  # uniform legend markers: the area is the plot's to show
        handle.set_sizes([30])
    _save(fig, path)
    return True, left_out(path.name, missing)


def training_curves(runs: list[Run], swept: list[str], path: Path) -> tuple[bool, str]:
    """Whether it drew the plot, and what it left out and why, or why it drew none ("": nothing)."""
    curves, missing = [], []
    for run in runs:
        history = run.metrics.get("train/val_history")
        pts = [(h["step"], h["val_loss"]) for h in history
               if isinstance(h, dict) and isinstance(h.get("step"), (int, float))
               and isinstance(h.get("val_loss"), (int, float))] if isinstance(history, list) else []
        if pts:
            curves.append((run, pts))
        else:  # never validated during training (an empty history), or a run from before it was kept
            missing.append((run, "no validation loss in train/val_history" if isinstance(history, list)
                            else "no train/val_history"))
    if not curves:
        return False, (f"{path.name}: not drawn, no finished run has a validation loss in train/val_history."
                       if runs else "")
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    for run, pts in curves:
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=_label(run, swept))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = {s for _, pts in curves for s, _ in pts}
    if len(steps) == 1:  # one validation each, at one step: a range of whole steps around it, not 1.9..2.1
        ax.set_xlim(min(steps) - 1, min(steps) + 1)
    ax.set_xlabel("optimizer step")
    # Validation during training may score a subset (trainer.limit_val_batches); val/loss is the whole split.
    # null is the whole split: a label naming one limit would misstate the curves of runs without it.
    limits = {run.flat.get("trainer.limit_val_batches") for run, _ in curves}
    subset = "" if limits == {None} else f"; first {fmt(next(iter(limits)))} batches" if len(limits) == 1 else \
        "; a run's first trainer.limit_val_batches batches where set"
    ax.set_ylabel(f"validation loss (answer tokens{subset})")
    ax.set_title("Training curves")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True, left_out(path.name, missing)


def _is_rate(key: str) -> bool:
    """A share of answers (accuracy, JSON validity, F1, parse rate, BLEU/ROUGE): in [0, 1]."""
    return key.rsplit("/", 1)[-1] in ("acc", "json_valid", "macro_f1", "parse_rate", "exact_match", "bleu",
                                      "rougeL", "theme_coverage") or key.rsplit("/", 1)[-1].startswith("within_")


def write_plots(runs: list[Run], out: Path, cc: CompareConfig,
                swept: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(title, file name) of each plot written, and a line per plot that left finished runs out
    (or is not drawn: nothing to show) saying which and why. Per-field accuracy leaves none out:
    a run without a field has no bar there, as its title says."""
    finished = [r for r in runs if r.finished]
    written, notes = [], []
    if field_accuracy(finished, swept, out / "per_field_accuracy.png"):
        written.append(("Per-field accuracy by run", "per_field_accuracy.png"))
    for title, filename, draw in (
            ("Quality vs latency vs adapter size", "tradeoff.png", lambda p: tradeoff(finished, swept, cc, p)),
            ("Training curves (validation loss)", "training_curves.png", lambda p: training_curves(finished, swept, p))):
        drawn, note = draw(out / filename)
        if drawn:
            written.append((title, filename))
        notes += [note] if note else []
    return written, notes
