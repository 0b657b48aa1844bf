"""The bench's results as tables: the headline ratios of one run (printed by ``python -m
ccexp.bench`` and again by ``python -m ccexp.bench.show``), and several runs side by side, read
back from their JSON files, so that a change, or the machine's noise, shows as numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ccexp.bench import training


class ResultError(ValueError):
    """A file that is not a readable ccexp.bench result; the message is one line naming it."""


def load_result(path: str | Path) -> dict:
    """A results file the bench wrote, checked for what the tables read (any version's)."""
    path = Path(path)
    if path.is_dir():
        raise ResultError(f"{path} is a directory, expected a ccexp.bench results file (.json)")
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ResultError(f"{path}: not UTF-8 text, expected a ccexp.bench results file (.json)") from None
    except OSError as err:
        raise ResultError(f"{path}: cannot read it ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise ResultError(f"{path}: line {err.lineno} column {err.colno}: not JSON ({err.msg})") from None
    if not isinstance(results, dict) or not {"machine", "args", "ratios"} <= set(results):
        raise ResultError(f"{path}: not a ccexp.bench results file (expected the keys machine, args and ratios)")
    for key in ("machine", "args", "ratios"):
        if not isinstance(results[key], dict):
            raise ResultError(f"{path}: {key}: expected an object, got {type(results[key]).__name__}")
    for name, ratio in results["ratios"].items():
        if not (isinstance(ratio, dict) and isinstance(ratio.get("value"), (int, float)) and "goal" in ratio
                and "met" in ratio):
            raise ResultError(f"{path}: ratios.{name}: expected value, goal and met")
    return results


# Files written before --method, --device and config overrides existed ran what these now say.
EARLY_DEFAULTS = {"method": "lora", "device": "cpu", "overrides": "[]"}


def setting(results: dict, key: str) -> str:
    return results["args"].get(key, EARLY_DEFAULTS.get(key, "(not recorded)"))


def machine_label(m: dict) -> str:
    """Where a run ran, in the terms that decide its numbers; files written before the bench
    recorded the CPU's ISA say so."""
    if m.get("gpu"):
        return m["gpu"]
    cpu = f"{m.get('cpu', 'CPU not recorded')} ({m.get('threads', '?')} threads"
    if "cpu_isa" not in m:
        return f"{cpu}, ISA not recorded)"
    return f"{cpu}, {m['cpu_isa']}, {'bf16' if m.get('cpu_bf16') else 'no bf16 dot products: fp32'})"


def report_rows(r: dict) -> list[tuple[str, float, str, bool, str]]:
    """(name, value, goal, met, evidence) per headline ratio, for the parts that ran."""
    rows = []
    if "training" in r:
        t = r["training"]
        # The tokens computed: a packed batch's shared prompt start counts once (runs before packing lack them).
        computed = t["ccexp"].get("computed_tokens_per_s", t["ccexp"]["tokens_per_s"])
        mfu = training.mfu(computed, t["frozen_params"], t["matmul_peak_flops"])
        loss_gap = abs(t["ccexp"]["val_loss"] - t["hf_trainer"]["val_loss"]) / t["hf_trainer"]["val_loss"]
        speedup = t["ccexp"]["tokens_per_s"] / t["hf_trainer"]["tokens_per_s"]
        goal = 1.5 if "gpu" in r["machine"] else 2.0  # the goals: 2x on 2 CPU cores, 1.5x on a GPU
        rows += [
            ("training tokens/s vs HF Trainer", speedup, f">= {goal}", speedup >= goal,
             f"{t['ccexp']['tokens_per_s']:.0f} vs {t['hf_trainer']['tokens_per_s']:.0f} tok/s"),
            # Same steps and data, different batch order (length-grouped vs random): a few steps
            # apart is noise of that order; a broken loss would be off by far more.
            ("final val loss gap vs HF Trainer", loss_gap, "<= 0.15", loss_gap <= 0.15,
             f"{t['ccexp']['val_loss']:.3f} vs {t['hf_trainer']['val_loss']:.3f}"),
            ("MFU (4·N·tok/s ÷ matmul peak)", mfu, ">= 0.5", mfu >= 0.5,
             f"N={t['frozen_params'] / 1e6:.1f}M, {computed:.0f} tok/s computed, "
             f"peak {t['matmul_peak_flops'] / 1e9:.0f} GFLOP/s"),
        ]
    if "generation" in r:
        g, a = r["generation"], r["all_in_one"]
        batch_ratio = g["batched_tokens_per_s"] / g["single_tokens_per_s"]
        merged_ratio = r["merged"]["merged_p50_s"] / r["merged"]["base_p50_s"]
        rows += [
            ("batched vs one-at-a-time generation", batch_ratio, ">= 5", batch_ratio >= 5,
             f"{g['batched_tokens_per_s']:.0f} vs {g['single_tokens_per_s']:.0f} tok/s, {g['prompts']} prompts "
             f"x {g['new_tokens_each']} tokens, "
             + (f"ccexp's batched loop vs generate one at a time (generate batched: "
                f"{g['generate_batched_tokens_per_s']:.0f} tok/s)" if "generate_batched_tokens_per_s" in g
                else "generate on both sides")
             + f"; prompt passes {g['batched_prefill_s']:.1f} vs "
             f"{g['single_prefill_s']:.1f} s, decode steps alone {g['decode_ratio']:.1f}x"),
            ("all-in-one analysis p50 latency (s)", a["p50_s"], "<= 1.0", a["p50_s"] <= 1.0,
             f"{a['prompt_tokens_p50']:.0f} prompt + {a['answer_tokens_p50']:.0f} answer tokens in "
             f"{a['forward_passes_p50']:.0f} forward passes ({a['prefix_reused_p50']:.0f} prompt tokens reused"
             f"{', packed weights, LoRA merged' if a.get('packed_weights') else ''}); "
             f"generate: {a['generate_p50_s']:.2f} s = prefill {a['prefill_p50_s']:.2f} s + "
             f"{1000 * a['decode_token_p50_s']:.0f} ms/token"),
            ("merged adapter vs base latency", merged_ratio, "<= 1.05", merged_ratio <= 1.05,
             f"{r['merged']['merged_p50_s']:.2f} vs {r['merged']['base_p50_s']:.2f} s"),
        ]
    if "memory" in r:
        m = r["memory"]
        mem_ratio = m["qlora"]["peak_mb"] / m["lora"]["peak_mb"]
        rows.append(
            ("QLoRA vs LoRA peak memory", mem_ratio, "<= 0.5", mem_ratio <= 0.5,
             f"{m['qlora']['peak_mb']:.0f} vs {m['lora']['peak_mb']:.0f} MB {m['lora']['measure']}; weights "
             f"{m['qlora']['weights_mb']:.0f} vs {m['lora']['weights_mb']:.0f} MB; gradient checkpointing "
             f"{_on(m['qlora'])} vs {_on(m['lora'])} (each method's default)"
             + ("; freed pages returned to the OS on both" if m["lora"]["release_freed_memory"] else "")))
    if "training" in r:
        t = r["training"]
        overhead = t["ccexp"]["tokens_per_s"] / t["bare_loop"]["tokens_per_s"]
        # The two ran the same batches in turns: step by step, the spread of the ratio is the noise.
        warmup = int(r["args"]["warmup"])
        per_step = [b / c for c, b in zip(t["ccexp"]["step_seconds"][warmup:], t["bare_loop"]["step_seconds"][warmup:])
                    if c > 0]
        spread = f"; step by step {min(per_step):.2f}–{max(per_step):.2f}" if per_step else ""
        rows.append(("Lightning path vs bare PyTorch loop", overhead, ">= 0.95", overhead >= 0.95,
                     f"{t['ccexp']['tokens_per_s']:.0f} vs {t['bare_loop']['tokens_per_s']:.0f} tok/s{spread}"))
    return rows


def _on(probe: dict) -> str:
    return "on" if probe.get("gradient_checkpointing") else "off"


def print_table(console: Console, rows, results: dict) -> None:
    table = Table(title=f"ccexp.bench on {machine_label(results['machine'])}, {setting(results, 'model')}, "
                        f"{setting(results, 'method')}")
    for col in ("measure", "value", "goal", "met", "evidence"):
        table.add_column(col, justify="right" if col in ("value", "goal") else "left")
    for name, value, goal, met, evidence in rows:
        table.add_row(name, f"{value:.2f}", goal, "yes" if met else "NO", evidence)
    console.print(table)
    seconds = results.get("seconds")
    if seconds:  # files from before the bench timed its parts have none
        parts = ", ".join(f"{name} {_minutes(s)}" for name, s in seconds.items() if name != "total")
        # The "done when": the default bench in under 10 minutes on 2 CPU cores.
        console.print(f"ran in {_minutes(seconds['total'])} ({parts}); the default run's goal on 2 CPU cores: "
                      "< 10 min")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def recorded_rows(results: dict) -> tuple[list[tuple[str, float, str, bool, str]], str | None]:
    """The rows of a file read back: its recorded values, goals and verdicts, with the evidence
    recomputed from its numbers; an older file that lacks a number the evidence quotes keeps its
    ratios, and the note says which key is missing."""
    recorded = results["ratios"]
    try:
        evidence = {name: ev for name, *_, ev in report_rows(results)}
        note = None
    except (KeyError, TypeError, ZeroDivisionError) as err:
        evidence, note = {}, f"written by an older bench: the evidence column needs {err}, which this file lacks"
    rows = [(name, r["value"], r["goal"], bool(r["met"]), evidence.get(name, "")) for name, r in recorded.items()]
    return rows, note


# What decides whether two runs' ratios can be compared, besides the machine.
SETTINGS = {key: f"--{key.replace('_', '-')}" for key in
            ("model", "method", "device", "steps", "warmup", "batch_size", "prompts", "new_tokens")}
SETTINGS["overrides"] = "the config overrides"


def print_history(console: Console, runs: Sequence[tuple[str, dict]]) -> None:
    """One row per headline ratio, one column per run (in the order given), and each ratio's
    range over the runs that had the last one's machine and settings: that spread is the noise
    to read a change against. Below, what the runs' machines and settings differ in."""
    names = list(dict.fromkeys(name for _, r in sorted(runs, key=lambda run: -len(run[1]["ratios"]))
                               for name in r["ratios"]))
    alike = [r for _, r in runs if _conditions(r) == _conditions(runs[-1][1])]
    table = Table(title=f"ccexp.bench: {len(runs)} runs side by side (✓ = goal met)")
    table.add_column("measure")
    table.add_column("goal", justify="right")
    for label, _ in runs:
        table.add_column(label, justify="right")
    table.add_column("range" if len(alike) == len(runs) else "range*", justify="right")
    for name in names:
        cells = [r["ratios"].get(name) for _, r in runs]
        values = [r["ratios"][name]["value"] for r in alike if name in r["ratios"]]
        goal = " / ".join(dict.fromkeys(c["goal"] for c in cells if c))  # training's is 1.5x on a GPU, 2x on CPUs
        table.add_row(name, goal, *(f"{c['value']:.2f}{' ✓' if c['met'] else ''}" if c else "–" for c in cells),
                      f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else "")
    if any(r.get("seconds") for _, r in runs):  # the goal is the default run's, all three parts
        table.add_row("bench wall time", "< 10 min", *(_wall(r) for _, r in runs), "")
    console.print(table)
    if len(alike) < len(runs):
        console.print(f"range*: over the {len(alike)} of {len(runs)} runs with the last one's machine and settings")
    for line in differences(runs):
        console.print(line)


def _conditions(results: dict) -> tuple:
    return (_machine(results), *(setting(results, key) for key in SETTINGS))


def _machine(results: dict) -> str:
    return f"{machine_label(results['machine'])}, torch {results['machine'].get('torch')}"


def _wall(results: dict) -> str:
    seconds = results.get("seconds")
    if not seconds:
        return "–"
    parts = [name for name in seconds if name != "total"]
    return _minutes(seconds["total"]) + ("" if len(parts) == 3 else f" ({', '.join(parts)} only)")


def differences(runs: Sequence[tuple[str, dict]]) -> list[str]:
    """One line per thing the runs differ in (machine; each setting), naming which run had which."""
    lines = []
    machines = _grouped(runs, _machine)
    if len(machines) > 1:
        lines.append("machines differ (compare ratios within one machine): " + "; ".join(
            f"{', '.join(labels)}: {value}" for value, labels in machines.items()))
    else:
        lines.append(f"machine: {next(iter(machines))}")
    for key, flag in SETTINGS.items():
        values = _grouped(runs, lambda r: setting(r, key))
        if len(values) > 1:
            lines.append(f"{flag} differ{'s' if flag.startswith('-') else ''}: " + "; ".join(
                f"{value} in {', '.join(labels)}" for value, labels in values.items()))
    return lines


def _grouped(runs: Sequence[tuple[str, dict]], key) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for label, results in runs:
        groups.setdefault(str(key(results)), []).append(label)
    return groups
