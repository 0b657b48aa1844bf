"""The bench's results as tables: the headline ratios of one run (printed by ``python -m
ccexp.bench`` and again by ``python -m ccexp.bench.show``), and several runs side by side, read
back from their JSON files, so that a change, or the machine's noise, shows as numbers."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ccexp.bench import training
from ccexp.cli import read_json_object


# Where the bench writes its results (<time>.json) unless --json says otherwise, and where
# bench.show looks when given no files.
RESULTS = Path("benchmarks/results")


class ResultError(ValueError):
    """A file that is not a readable ccexp.bench result; the message is one line naming it."""


def load_result(path: str | Path) -> dict:
    """A results file the bench wrote (any version's), checked for everything the tables read,
    so that a bad file fails here in one line, not in a table after a run (``--against``)."""
    path = Path(path)
    results = read_json_object(path, ResultError, "a ccexp.bench results file")
    missing = [key for key in ("machine", "args", "ratios") if key not in results]
    if missing:
        raise ResultError(f"{path}: not a ccexp.bench results file (no {', '.join(missing)}; expected the keys "
                          "machine, args and ratios)")
    for key in ("machine", "args", "ratios"):
        if not isinstance(results[key], dict):
            raise ResultError(f"{path}: {key}: expected an object, got {type(results[key]).__name__}")
    if not results["ratios"]:
        raise ResultError(f"{path}: ratios: expected at least one ratio, got none")
    for key, kind, expected in MACHINE_FIELDS:  # the tables print and group runs by them
        value = results["machine"].get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ResultError(f"{path}: machine.{key}: expected {expected}, got {value!r}"[:300])
    unfinished = results.get("unfinished")
    if unfinished is not None and not (isinstance(unfinished, list) and all(isinstance(p, str) for p in unfinished)):
        raise ResultError(f"{path}: unfinished: expected a list of the parts not run, got {unfinished!r}"[:300])
    load = results.get("load_average")
    if load is not None and not (isinstance(load, dict) and all(
            v is None or _is_number(v) for v in load.values())):
        raise ResultError(f"{path}: load_average: expected an object of 1-minute load averages, got {load!r}"[:300])
    code = results.get("code")
    if code is not None and not (isinstance(code, dict) and isinstance(code.get("commit"), (str, type(None)))
                                 and isinstance(code.get("versions", {}), dict)):
        raise ResultError(f"{path}: code: expected an object with commit and versions, got {code!r}"[:300])
    for name, ratio in results["ratios"].items():
        where = f"{path}: ratios.{name}"
        if not isinstance(ratio, dict):
            raise ResultError(f"{where}: expected an object with value, goal and met, got {type(ratio).__name__}")
        value = ratio.get("value")
        if not _is_number(value):  # NaN is a number the bench can write
            raise ResultError(f"{where}.value: expected a number, got {value!r}")
        if not isinstance(ratio.get("goal"), str):
            raise ResultError(f"{where}.goal: expected text such as '>= 2.0', got {ratio.get('goal')!r}")
        if not isinstance(ratio.get("met"), bool):
            raise ResultError(f"{where}.met: expected true or false, got {ratio.get('met')!r}")
    seconds = results.get("seconds")  # files from before the bench timed its parts have none
    if seconds is not None and not (isinstance(seconds, dict) and "total" in seconds and all(
            _is_number(v) and math.isfinite(v) for v in seconds.values())):
        raise ResultError(f"{path}: seconds: expected an object of seconds per part and a total, got {seconds!r}"[:300])
    _check_evidence(results, path)
    return results


# The numbers the rows' evidence reads, by part ([]: a list of numbers). One a file lacks leaves
# its part's evidence blank (recorded_rows: an older bench recorded fewer); one of another type
# is a bad file, said here rather than as a TypeError in a note.
EVIDENCE_NUMBERS = {
    "training": ("frozen_params", "matmul_peak_flops", "ccexp.tokens_per_s", "ccexp.computed_tokens_per_s",
                 "ccexp.val_loss", "ccexp.step_seconds[]", "hf_trainer.tokens_per_s", "hf_trainer.val_loss",
                 "bare_loop.tokens_per_s", "bare_loop.step_seconds[]", "ccexp_alone.computed_tokens_per_s",
                 "ccexp_alone.computed_tokens", "ccexp_alone.head_rows", "ccexp_alone.seconds",
                 "embedding_params.embedding", "embedding_params.head", "step_breakdown.mfu_bound",
                 "step_breakdown.mfu_bound_strict", "step_breakdown.seconds", "step_breakdown.linear_matmul_s",
                 "step_breakdown.attention_matmul_s"),
    "generation": ("batched_tokens_per_s", "single_tokens_per_s", "generate_batched_tokens_per_s", "prompts",
                   "new_tokens_each", "batched_prefill_s", "single_prefill_s", "decode_ratio"),
    "all_in_one": ("p50_s", "prompt_tokens_p50", "answer_tokens_p50", "forward_passes_p50", "prefix_reused_p50",
                   "generate_p50_s", "prefill_p50_s", "decode_token_p50_s"),
    "merged": ("merged_p50_s", "base_p50_s"),
    "memory": ("qlora.peak_mb", "lora.peak_mb", "qlora.weights_mb", "lora.weights_mb"),
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_evidence(results: dict, path: Path) -> None:
    for part, fields in EVIDENCE_NUMBERS.items():
        for field in fields:
            node, keys = results, [part, *field.removesuffix("[]").split(".")]
            for depth, key in enumerate(keys[:-1]):  # the objects on the way: absent is an older file
                node = node.get(key)
                if node is not None and not isinstance(node, dict):
                    raise ResultError(f"{path}: {'.'.join(keys[:depth + 1])}: expected an object, got {node!r}"[:300])
                if node is None:
                    break
            if node is None or keys[-1] not in node:
                continue
            value, where = node[keys[-1]], f"{path}: {'.'.join(keys)}"
            if field.endswith("[]") and not (isinstance(value, list) and all(_is_number(v) for v in value)):
                raise ResultError(f"{where}: expected a list of numbers, got {value!r}"[:300])
            if not field.endswith("[]") and not _is_number(value):
                raise ResultError(f"{where}: expected a number, got {value!r}"[:300])
    warmup = results["args"].get("warmup")  # the Lightning-vs-bare row skips the warm-up steps
    if warmup is not None and not re.fullmatch(r"\d+", str(warmup)):
        raise ResultError(f"{path}: args.warmup: expected a whole number, got {warmup!r}"[:300])


# The machine's fields the tables read: (key, type, what a file must have there).
MACHINE_FIELDS = (("cpu", str, "the CPU's name as text"), ("cpu_generation", str, "text such as 'family 26 model 2'"),
                  ("cpu_isa", str, "text such as 'AVX512'"), ("cpu_bf16", bool, "true or false"),
                  ("threads", int, "a whole number"), ("gpu", str, "the GPU's name as text"),
                  ("torch", str, "a version as text"))

# Files written before --method, --device and config overrides existed ran what these now say.
EARLY_DEFAULTS = {"method": "lora", "device": "cpu", "overrides": "[]"}


def setting(results: dict, key: str) -> str:
    return results["args"].get(key, EARLY_DEFAULTS.get(key, "(not recorded)"))


def machine_label(m: dict, generation: bool = True) -> str:
    """Where a run ran, in the terms that decide its numbers; files written before the bench
    recorded the CPU's ISA say so."""
    if m.get("gpu"):
        return str(m["gpu"])
    # A null field reads as an absent one (load_result lets both through).
    name = (m.get("cpu") or "CPU not recorded") + (f" {m['cpu_generation']}" if generation and m.get("cpu_generation")
                                                   else "")
    cpu = f"{name} ({m.get('threads') or '?'} threads"
    if m.get("cpu_isa") is None:
        return f"{cpu}, ISA not recorded)"
    return f"{cpu}, {m['cpu_isa']}, {'bf16' if m.get('cpu_bf16') else 'no bf16 dot products: fp32'})"


Row = tuple[str, float, str, bool, str]  # name, value, goal, met, evidence


def report_rows(r: dict) -> list[Row]:
    """(name, value, goal, met, evidence) per headline ratio, for the parts that ran."""
    return [row for _, rows_of in PART_ROWS for row in rows_of(r)]


def _training_rows(r: dict) -> list[Row]:
    if "training" not in r:
        return []
    t = r["training"]
    # The tokens computed: a packed batch's shared prompt start counts once (runs before packing lack them).
    in_turns = t["ccexp"].get("computed_tokens_per_s", t["ccexp"]["tokens_per_s"])
    # ccexp's timed batches run again alone (training.alone_window); runs before it lack them.
    alone = t.get("ccexp_alone")
    computed = alone["computed_tokens_per_s"] if alone else in_turns
    mfu = training.mfu(computed, t["frozen_params"], t["matmul_peak_flops"])
    # Alone, the batches run 6-28% faster than in the turns; far slower, something else ran then.
    slowed = (f"; THE ALONE WINDOW RAN AT {computed / in_turns:.2f}x THE TURNS' SPEED: other work ran then, "
              "and this MFU understates" if alone and computed < 0.5 * in_turns else "")
    loss_gap = abs(t["ccexp"]["val_loss"] - t["hf_trainer"]["val_loss"]) / t["hf_trainer"]["val_loss"]
    speedup = t["ccexp"]["tokens_per_s"] / t["hf_trainer"]["tokens_per_s"]
    goal = 1.5 if r["machine"].get("gpu") else 2.0  # the goals: 2x on 2 CPU cores, 1.5x on a GPU
    return [
        ("training tokens/s vs HF Trainer", speedup, f">= {goal}", speedup >= goal,
         f"{t['ccexp']['tokens_per_s']:.0f} vs {t['hf_trainer']['tokens_per_s']:.0f} tok/s"
         + ("; norms + MLPs compiled" if t["ccexp"].get("compiled") else "")),
        # Same steps and data, different batch order (length-grouped vs random): a few steps
        # apart is noise of that order; a broken loss would be off by far more.
        ("final val loss gap vs HF Trainer", loss_gap, "<= 0.15", loss_gap <= 0.15,
         f"{t['ccexp']['val_loss']:.3f} vs {t['hf_trainer']['val_loss']:.3f}"),
        ("MFU (4·N·tok/s ÷ matmul peak)", mfu, ">= 0.5", mfu >= 0.5,
         f"N={t['frozen_params'] / 1e6:.1f}M, {computed:.0f} tok/s computed"
         + (f" by ccexp's timed batches run again alone (in the turns {in_turns:.0f}: MFU "
            f"{training.mfu(in_turns, t['frozen_params'], t['matmul_peak_flops']):.2f})" if alone else "")
         + f", peak {t['matmul_peak_flops'] / 1e9:.0f} GFLOP/s" + _mfu_strict(t) + _mfu_bound(t.get("step_breakdown"))
         + slowed),
    ]


def _mfu_strict(t: dict) -> str:
    """MFU over the FLOPs run: 4·N counts the embeddings on every token (files before it lack it)."""
    if "embedding_params" not in t or "ccexp_alone" not in t:
        return ""
    strict = training.mfu_strict(t["ccexp_alone"], t["frozen_params"], t["embedding_params"], t["matmul_peak_flops"])
    return (f"; {strict:.2f} over the matmuls run (4·N counts the "
            f"{t['embedding_params']['embedding'] / 1e6:.1f}M-parameter embedding on every token: no matmul for "
            f"the input, the head on the {t['ccexp_alone']['head_rows']:,} answer positions only)")


def _mfu_bound(b: dict | None) -> str:
    """What the profiled steps' matmuls alone allow (files from before the bench profiled have none)."""
    if not b:
        return ""
    # Over the matmuls run too (files before it lack it): 4·N's ceiling passes 1 where the
    # embeddings, looked up rather than multiplied, are most of N.
    strict = f", {b['mfu_bound_strict']:.2f} over the matmuls run" if "mfu_bound_strict" in b else ""
    return (f"; matmuls alone would allow {b['mfu_bound']:.2f}{strict} (of {b['seconds']:.1f} s profiled: linear "
            f"layers {b['linear_matmul_s']:.1f} s, attention {b['attention_matmul_s']:.1f} s)")


def _generation_rows(r: dict) -> list[Row]:
    if "generation" not in r:
        return []
    g, a = r["generation"], r["all_in_one"]
    batch_ratio = g["batched_tokens_per_s"] / g["single_tokens_per_s"]
    merged_ratio = r["merged"]["merged_p50_s"] / r["merged"]["base_p50_s"]
    return [
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
         f"{_packed(a)}); "
         f"generate: {a['generate_p50_s']:.2f} s = prefill {a['prefill_p50_s']:.2f} s + "
         f"{1000 * a['decode_token_p50_s']:.0f} ms/token"),
        ("merged adapter vs base latency", merged_ratio, "<= 1.05", merged_ratio <= 1.05,
         f"{r['merged']['merged_p50_s']:.2f} vs {r['merged']['base_p50_s']:.2f} s"),
    ]


def _packed(a: dict) -> str:
    """How the all-in-one path ran the adapter (files before packed_lora merged it: bf16 rounding)."""
    if not a.get("packed_weights"):
        return ""
    return ", packed weights, LoRA " + {"beside": "beside them"}.get(a.get("packed_lora"), "merged")


def _memory_rows(r: dict) -> list[Row]:
    if "memory" not in r:
        return []
    m = r["memory"]
    mem_ratio = m["qlora"]["peak_mb"] / m["lora"]["peak_mb"]
    return [
        ("QLoRA vs LoRA peak memory", mem_ratio, "<= 0.5", mem_ratio <= 0.5,
         f"{m['qlora']['peak_mb']:.0f} vs {m['lora']['peak_mb']:.0f} MB {m['lora']['measure']}; weights "
         f"{m['qlora']['weights_mb']:.0f} vs {m['lora']['weights_mb']:.0f} MB; gradient checkpointing "
         f"{_on(m['qlora'])} vs {_on(m['lora'])} (each method's default)"
         + ("; freed pages returned to the OS on both" if m["lora"]["release_freed_memory"] else "")),
    ]


def _overhead_rows(r: dict) -> list[Row]:
    if "training" not in r:
        return []
    t = r["training"]
    overhead = t["ccexp"]["tokens_per_s"] / t["bare_loop"]["tokens_per_s"]
    # The two ran the same batches in turns: step by step, the spread of the ratio is the noise.
    warmup = int(r["args"]["warmup"])
    ours, bare = t["ccexp"]["step_seconds"][warmup:], t["bare_loop"]["step_seconds"][warmup:]
    per_step = [b / c for c, b in zip(ours, bare) if c > 0]
    spread = f"; step by step {min(per_step):.2f}–{max(per_step):.2f}" if per_step else ""
    # Files of a bench that took the plain ratio over all rounds keep it, as their value was.
    orders = _by_order(t.get("turns"), ours, bare, warmup) if t.get("orders_weighted_alike") else None
    if orders:  # both orders ran: each weighted alike
        overhead = math.sqrt(orders["ccexp"][0] * orders["bare_loop"][0])
        spread += (f"; ccexp's step ran first in {orders['ccexp'][1]} of {len(ours)} rounds, the bare loop's in "
                   f"{orders['bare_loop'][1]}: each order weighted alike ({orders['ccexp'][0]:.2f} and "
                   f"{orders['bare_loop'][0]:.2f})")
    return [("Lightning path vs bare PyTorch loop", overhead, ">= 0.95", overhead >= 0.95,
             f"{t['ccexp']['tokens_per_s']:.0f} vs {t['bare_loop']['tokens_per_s']:.0f} tok/s{spread}")]


def _by_order(turns: list[str] | None, ours: list[float], bare: list[float], warmup: int) -> dict | None:
    """ccexp's speed over the bare loop's (the same batches: their time ratio) in the rounds
    where ccexp's step ran first and in those where the bare loop's did, with each one's count;
    None unless both orders ran. The pair trade places every round, so with an odd number of
    timed rounds one order runs once more, and a step is timed on the caches the step before it
    left (HF's fp32 step, or the other of the pair): weighted alike, that extra round cannot
    tilt the ratio."""
    if not turns:
        return None
    ours_at = [i for i, name in enumerate(turns) if name == "ccexp"][warmup:]
    bare_at = [i for i, name in enumerate(turns) if name == "bare_loop"][warmup:]
    if not (len(ours_at) == len(bare_at) == len(ours) == len(bare)):  # not the turns of these steps
        return None
    orders: dict[str, list[float]] = {"ccexp": [0.0, 0.0, 0], "bare_loop": [0.0, 0.0, 0]}
    for o, b, o_at, b_at in zip(ours, bare, ours_at, bare_at):
        order = orders["ccexp" if o_at < b_at else "bare_loop"]
        order[0], order[1], order[2] = order[0] + o, order[1] + b, order[2] + 1
    if not all(n and o > 0 for o, _, n in orders.values()):
        return None
    return {first: (b / o, n) for first, (o, b, n) in orders.items()}


# The table's order; each part read back on its own (recorded_rows), so that an older file that
# lacks one number loses only that part's evidence.
PART_ROWS = (("training", _training_rows), ("generation", _generation_rows), ("memory", _memory_rows),
             ("Lightning vs bare", _overhead_rows))


def _on(probe: dict) -> str:
    return "on" if probe.get("gradient_checkpointing") else "off"


def ratio_text(value: float, goal: str) -> str:
    """A ratio to 2 decimals, or 3 where 2 would print the goal's own number for a value on the
    other side of it (0.495 against ">= 0.5" is "0.495", not "0.50" without a tick)."""
    text = f"{value:.2f}"
    limit = goal.split()[-1] if isinstance(goal, str) and goal.split() else ""
    try:
        on_the_line = float(text) == float(limit) and value != float(limit)
    except ValueError:
        on_the_line = False
    return f"{value:.3f}" if on_the_line else text


def print_table(console: Console, rows, results: dict) -> None:
    # Every string may come from a file read back: escaped, so "[...]" in a config override
    # prints as written instead of as rich markup.
    table = Table(title=escape(f"ccexp.bench on {machine_label(results['machine'])}, {setting(results, 'model')}, "
                               f"{setting(results, 'method')}"))
    for col in ("measure", "value", "goal", "met", "evidence"):
        table.add_column(col, justify="right" if col in ("value", "goal") else "left")
    for name, value, goal, met, evidence in rows:
        table.add_row(escape(name), ratio_text(value, goal), escape(goal), "yes" if met else "NO", escape(evidence))
    console.print(table)
    seconds = results.get("seconds")
    if seconds:  # files from before the bench timed its parts have none
        parts = ", ".join(f"{name} {_minutes(s)}" for name, s in seconds.items() if name != "total")
        # The "done when": the default bench in under 10 minutes on 2 CPU cores.
        console.print(f"ran in {_minutes(seconds['total'])} ({parts}); the default run's goal on 2 CPU cores: "
                      "< 10 min", markup=False)
    load = load_line(results)
    if load:
        console.print(load, markup=False)
    if results.get("unfinished"):
        console.print(f"unfinished: stopped before {', '.join(results['unfinished'])} (the parts above were measured)",
                      markup=False)


def load_line(results: dict) -> str | None:
    """The machine's 1-minute load average at the start and after each part (files before the
    bench recorded it have none), and a warning where other work shared the CPUs: the turns
    keep the ratios fair to every side, but MFU's alone window and the wall time pay for it."""
    load = {k: v for k, v in (results.get("load_average") or {}).items() if v is not None}
    if not load:
        return None
    line = "load average (1 min): " + ", ".join(
        f"{v:.2f} {'at the start' if k == 'start' else f'after {k}'}" for k, v in load.items())
    threads = results["machine"].get("threads") or 1
    # Before the bench's threads start, a core's worth of load is other work; after a part, a core
    # above the bench's own threads (one per core) is.
    why = ([f"{load['start']:.2f} before the bench began"] if load.get("start", 0) > 1.0 else []) + \
        [f"{v:.2f} after {k}, above the bench's own {threads} threads" for k, v in load.items()
         if k != "start" and v > threads + 1]
    return line + (f"; OTHER WORK SHARED THE CPUs ({'; '.join(why)}), so the numbers are noisier than usual (MFU's "
                   "alone window and the wall time most)" if why else "")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def recorded_rows(results: dict, path: Path | str) -> tuple[list[Row], list[str]]:
    """The rows of a file read back: its recorded values, goals and verdicts, with the evidence
    recomputed from its numbers part by part. A part whose numbers the file lacks (an older
    bench recorded fewer) or cannot give keeps its ratios, and a note says why its evidence is blank."""
    evidence, notes = {}, []
    for part, rows_of in PART_ROWS:
        try:
            evidence.update((name, ev) for name, *_, ev in rows_of(results))
        except KeyError as err:
            notes.append(f"{path}: no evidence for {part}: it needs {err}, which this file lacks "
                         "(an older bench recorded fewer numbers)")
        except (TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as err:
            notes.append(f"{path}: no evidence for {part}: its numbers do not compute ({err.__class__.__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no message'})")
    rows = [(name, r["value"], r["goal"], r["met"], evidence.get(name, "")) for name, r in results["ratios"].items()]
    return rows, notes


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
    alike = [r for _, r in runs if _alike(r, runs[-1][1])]
    # Runs of one day (files named by their time) share the date: it goes in the title, or every
    # heading is cut to the same "2026-12-01_…" when a dozen runs share the width. Cells that do
    # not fit wrap onto a second line instead of ending in "…".
    labels = [label for label, _ in runs]
    shared = os.path.commonprefix(labels)
    shared = shared[:shared.rfind("_") + 1] if all(len(label) > len(shared) for label in labels) else ""
    table = Table(title=f"ccexp.bench: {len(runs)} runs side by side (✓ = goal met)"
                  + (f", {escape(shared)}…" if shared else ""))
    table.add_column("measure", no_wrap=True)
    table.add_column("goal", justify="right", overflow="fold")
    for label in labels:
        table.add_column(escape(label[len(shared):]), justify="right", overflow="fold")
    table.add_column("range" if len(alike) == len(runs) else "range*", justify="right")
    for name in names:
        cells = [r["ratios"].get(name) for _, r in runs]
        # NaN (a side that failed to score) is shown, and left out of the range.
        values = [v for r in alike if name in r["ratios"] and math.isfinite(v := r["ratios"][name]["value"])]
        goal = " / ".join(dict.fromkeys(c["goal"] for c in cells if c))  # training's is 1.5x on a GPU, 2x on CPUs
        table.add_row(escape(name), escape(goal),
                      *(f"{ratio_text(c['value'], c['goal'])}{' ✓' if c['met'] else ''}" if c else "–"
                        for c in cells),
                      f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else "")
    if any(r.get("seconds") for _, r in runs):  # the goal is the default run's, all three parts
        table.add_row("bench wall time", "< 10 min", *(_wall(r) for _, r in runs), "")
    console.print(table)
    if len(alike) < len(runs):
        console.print(f"range*: over the {len(alike)} of {len(runs)} runs with the last one's machine and settings")
    unsure = [label for label, r in runs if any(r is a for a in alike) and _no_generation(r)]
    if len(alike) > 1 and unsure:
        who = "none of its runs recorded" if len(unsure) == len(alike) else f"{', '.join(unsure)} did not record"
        console.print(f"range: {who} the CPU's generation (older files lack it): pooled "
                      "by the CPU's name, ISA and threads, which one VM's CPU name can share across generations "
                      "2-3x apart", markup=False)
    for line in differences(runs):
        console.print(line, markup=False)


def _alike(a: dict, b: dict) -> bool:
    """Whether two runs' ratios measure the same thing: the same settings and machine. A file
    without the CPU's generation (written before the bench recorded it) matches by the rest."""
    if _conditions(a) != _conditions(b):
        return False
    if a["machine"].get("gpu"):  # a GPU run's numbers are the GPU's (its label names the GPU only)
        return True
    generations = [r["machine"].get("cpu_generation") for r in (a, b)]
    return None in generations or generations[0] == generations[1]


def _no_generation(results: dict) -> bool:
    return not results["machine"].get("gpu") and not results["machine"].get("cpu_generation")


def _conditions(results: dict) -> tuple:
    """What a run's ratios depend on besides the code and the CPU's generation."""
    return (_machine(results, generation=False), *(str(setting(results, key)) for key in SETTINGS))


def _machine(results: dict, generation: bool = True) -> str:
    torch_version = results["machine"].get("torch")
    return machine_label(results["machine"], generation) + (f", torch {torch_version}" if torch_version else "")


def _wall(results: dict) -> str:
    seconds = results.get("seconds")
    if not seconds:
        return "–"
    parts = [name for name in seconds if name != "total"]
    stopped = f", stopped before {', '.join(results['unfinished'])}" if results.get("unfinished") else ""
    return escape(_minutes(seconds["total"]) + ("" if len(parts) == 3 and not stopped
                                                else f" ({', '.join(parts)} only{stopped})"))


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
    if any(r.get("code") for _, r in runs):  # files before the bench recorded its commit have none
        lines.append("code: " + "; ".join(f"{value} in {', '.join(labels)}"
                                          for value, labels in _grouped(runs, _commit).items()))
        recorded = [(label, r) for label, r in runs if r.get("code")]  # older files: not compared
        for package in dict.fromkeys(p for _, r in recorded for p in r["code"].get("versions", {})):
            versions = _grouped(recorded, lambda r: r["code"].get("versions", {}).get(package, "not recorded")
                                or "not installed")
            if len(versions) > 1:
                lines.append(f"{package} differs: " + "; ".join(
                    f"{value} in {', '.join(labels)}" for value, labels in versions.items()))
    return lines


def _commit(results: dict) -> str:
    code = results.get("code") or {}
    if not code.get("commit"):
        return "commit not recorded" if not code else "not a git checkout"
    return f"commit {code['commit']}" + (" with uncommitted changes" if code.get("uncommitted_changes") else "")


def _grouped(runs: Sequence[tuple[str, dict]], key) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for label, results in runs:
        groups.setdefault(str(key(results)), []).append(label)
    return groups
