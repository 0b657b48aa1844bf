"""A dataset card: what a run would train and test on, before any model is trained.

``dataset_card`` measures the splits (sizes, tasks, label distributions, token lengths with
the run's tokenizer, duplicates, vocabulary, a constant answer's test accuracy, and for
synthetic data the label-noise ceiling);
``print_card`` shows it with rich. Plain dicts in, plain dicts out, so tests assert numbers.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from typing import Optional, Sequence

from rich.console import Console
from rich.table import Table

from ccexp.data.batching import cut_parts, head_tokens, prompt_room, prompt_text, said_cut, token_counts
from ccexp.data.chatml import fold, prompt_of
from ccexp.data.splitting import SPLITS
from ccexp.data.tasks import FREE_TEXT_TASKS, TASK_FIELDS
from ccexp.scoring import FIELD_KINDS, canonical_label

TOP_LABELS = 12  # values shown per field; the rest are summed into one row
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters and digits of any script: "información" is one word
_FREE_TEXT_FIELDS = {f for t in FREE_TEXT_TASKS for f in TASK_FIELDS[t]}


def percentiles(values: Sequence[int]) -> dict[str, int]:
    """p10/p50/p90 (nearest rank) and max; zeros for no values."""
    if not values:
        return {"p10": 0, "p50": 0, "p90": 0, "max": 0}
    ordered = sorted(values)
    # The ceil(q * n)-th smallest; round() would halve to even (p50 of five values: the 2nd).
    rank = lambda q: ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # noqa: E731
    return {"p10": rank(0.1), "p50": rank(0.5), "p90": rank(0.9), "max": ordered[-1]}


def _label_key(name: str, value) -> str:
    """A value as the card counts it: a label as the scorer compares it (a user's 1 and 1.0 are
    one label; ccexp's own label fields case- and hyphen-insensitively), anything else as written."""
    if value is None:
        return "null"
    return canonical_label(name, value) if FIELD_KINDS.get(name) == "label" else str(value)


def label_counts(splits: dict[str, list[dict]]) -> dict[str, dict[str, Counter]]:
    """field -> split -> Counter of values (list values count each item; free text skipped)."""
    fields: dict[str, dict[str, Counter]] = {}
    for split in SPLITS:
        for ex in splits[split]:
            for name, value in ex["reference"].items():
                if name in _FREE_TEXT_FIELDS:
                    continue
                counts = fields.setdefault(name, {s: Counter() for s in SPLITS})[split]
                counts.update(_label_key(name, v) for v in value) if isinstance(value, list) else counts.update(
                    [_label_key(name, value)])
    return fields


def constant_guesses(splits: dict[str, list[dict]], checks: dict) -> dict[str, object]:
    """Field -> the one constant answer: the train split's most common value, or for a score
    (quality, CSAT, churn) its median."""
    train = defaultdict(list)
    for ex in splits["train"]:
        for name, value in ex["reference"].items():
            if name not in _FREE_TEXT_FIELDS and name in checks:
                train[name].append(value)
    guesses = {}
    for name, seen in train.items():
        # A median only for a score: a user's labels 0/7/9 are classes, whose median no one answers.
        if FIELD_KINDS.get(name) == "number" and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in seen):
            guesses[name] = statistics.median_low(seen)
            continue
        # Labels as the scorer compares them (1 and 1.0 are one); lists (coaching's themes) as sets.
        def key(value, name=name) -> str:
            return json.dumps(sorted(map(str, value))) if isinstance(value, list) else _label_key(name, value)
        counts = Counter(map(key, seen))
        # A tie broken by the label, not by which came first: the same examples in another
        # order (exported and read back) give the same floor.
        top = min(counts, key=lambda label: (-counts[label], label))
        guesses[name] = next(v for v in seen if key(v) == top)
    return guesses


def constant_answers(splits: dict[str, list[dict]], checks: dict, guesses: dict) -> dict[str, float]:
    """Field -> the test accuracy of one constant answer, judged as evaluation judges a model
    (``checks``: scoring.field_checks): the train split's most common value, or for a score
    (quality, CSAT, churn) its median. What a model must beat to have read anything; next to the noise ceiling, the room."""
    test = defaultdict(list)
    for ex in splits["test"]:
        for name, value in ex["reference"].items():
            if name in guesses:
                test[name].append(value)
    return {name: sum(bool(checks[name](guesses[name], ref)) for ref in refs) / len(refs)
            for name, refs in test.items()}


def constant_task_answers(splits: dict[str, list[dict]], checks: dict, guesses: dict) -> dict[str, float]:
    """Task -> the test accuracy of the same constant answers counted as a run's task accuracy
    counts (metrics.summarize): right only when every field of the answer is. A task of two
    fields (quality: score and band; issue: main and second category) has a lower floor than
    either field's."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex in splits["test"]:
        fields = [name for name in ex["reference"] if name not in _FREE_TEXT_FIELDS and name in checks]
        if fields and all(name in guesses for name in fields):
            hits[ex["task"]].append(all(checks[name](guesses[name], ex["reference"][name]) for name in fields))
    return {task: sum(oks) / len(oks) for task, oks in sorted(hits.items())}


def token_lengths(examples: list[dict], tokenizer) -> dict[str, list[int]]:
    prompts = [prompt_text(tokenizer, ex["messages"][:-1], ex.get("id")) for ex in examples]
    answers = [ex["messages"][-1]["content"] + tokenizer.eos_token for ex in examples]

    return {"prompt": token_counts(tokenizer, prompts), "answer": token_counts(tokenizer, answers)}


def _head_cut(example: dict, n_answer: int, tokenizer, max_seq_len: int) -> bool:
    """Whether a cut prompt loses part of its head too (batching.encode's rule): its system prompt
    and instruction over half the room the answer leaves."""
    messages = example["messages"][:-1]
    text = prompt_text(tokenizer, messages, example.get("id"))
    return head_tokens(tokenizer, text, messages) > prompt_room(n_answer, max_seq_len) // 2


def dataset_card(splits: dict[str, list[dict]], tokenizer=None, max_seq_len: Optional[int] = None,
                 noise: Optional[dict] = None, checks: Optional[dict] = None) -> dict:
    """Numbers about the splits; token lengths only with a tokenizer, the noise ceiling only
    when ``noise`` (synthetic.noise_report(checks)) is given, a constant answer's test accuracy with
    ``checks`` (scoring.field_checks)."""
    examples = [ex for split in SPLITS for ex in splits[split]]
    transcripts = [fold(ex["messages"][-2]["content"]) for ex in examples]
    # The whole prompt, every turn before the answer (what the run's holdout warning compares):
    # a last turn alone ("thanks") recurs across different conversations.
    train_prompts = {prompt_of(ex) for ex in splits["train"]}
    words = Counter(w for ex in examples for m in ex["messages"] if m["role"] != "system"
                    for w in _WORD.findall(m["content"].lower()))
    card = {
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "tasks": {s: dict(sorted(Counter(ex["task"] for ex in splits[s]).items())) for s in SPLITS},
        "labels": label_counts(splits),
        "distinct_transcripts": len(set(transcripts)),
        "distinct_transcript_ratio": round(len(set(transcripts)) / max(1, len(transcripts)), 4),
        "eval_in_train": {s: sum(prompt_of(ex) in train_prompts for ex in splits[s]) for s in ("val", "test")},
        "vocabulary": len(words),
    }
    if tokenizer is not None:
        lengths = token_lengths(examples, tokenizer)
        card["tokens"] = {kind: percentiles(values) for kind, values in lengths.items()}
        if max_seq_len:
            # Training's own rule (batching.encode): an answer over half of max_seq_len is cut too.
            cuts = [cut_parts(p, a, max_seq_len) for p, a in zip(lengths["prompt"], lengths["answer"])]
            card["over_max_seq_len"] = sum(any(cut) for cut in cuts)
            heads = sum(_head_cut(ex, a, tokenizer, max_seq_len)
                        for ex, a, (_, prompt) in zip(examples, lengths["answer"], cuts) if prompt)
            card["cut"] = {"prompt": sum(prompt for _, prompt in cuts), "instruction": heads,
                           "answer": sum(answer for answer, _ in cuts)}
    if checks is not None:
        guesses = constant_guesses(splits, checks)  # one constant answer per field, judged both ways
        card["constant_answer"] = constant_answers(splits, checks, guesses)
        card["constant_answer_by_task"] = constant_task_answers(splits, checks, guesses)
    if noise is not None:
        card["noise_ceiling"] = {name: noise[name]["ceiling"] for name in card["labels"] if name in noise}
    return card


def print_card(card: dict, title: str, console: Optional[Console] = None) -> None:
    console = console or Console()
    sizes = Table(title=f"dataset card: {title}")
    sizes.add_column("split")
    sizes.add_column("examples", justify="right")
    sizes.add_column("tasks")
    for split in SPLITS:
        tasks = ", ".join(f"{t} {n}" for t, n in card["tasks"][split].items())
        sizes.add_row(split, str(card["sizes"][split]), tasks)
    console.print(sizes)
    for name, by_split in card["labels"].items():
        table = Table(title=f"{name}: {len(set().union(*by_split.values()))} distinct values")
        table.add_column("value")
        for split in SPLITS:
            table.add_column(split, justify="right")
        total = sum(by_split.values(), Counter())
        shown = [v for v, _ in total.most_common(TOP_LABELS)]
        for value in shown:
            table.add_row(value, *(str(by_split[s][value]) for s in SPLITS))
        if len(total) > len(shown):
            rest = [sum(n for v, n in by_split[s].items() if v not in shown) for s in SPLITS]
            table.add_row(f"({len(total) - len(shown)} more)", *map(str, rest))
        console.print(table)
    if "tokens" in card:
        table = Table(title="tokens per example (model's tokenizer, chat template applied)")
        for col in ("", "p10", "p50", "p90", "max"):
            table.add_column(col, justify="right" if col else "left")
        for kind, p in card["tokens"].items():
            table.add_row(kind, *(str(p[k]) for k in ("p10", "p50", "p90", "max")))
        console.print(table)
        if "over_max_seq_len" in card:
            cut = card.get("cut")
            parts = f": {said_cut(cut['prompt'], cut['answer'], cut.get('instruction', 0))}" if card["over_max_seq_len"] and cut else ""
            console.print(f"examples training cuts to model.max_seq_len: {card['over_max_seq_len']}{parts}",
                          soft_wrap=True)
    n = sum(card["sizes"].values())
    console.print(f"distinct transcripts: {card['distinct_transcripts']} of {n} "
                  f"(ratio {card['distinct_transcript_ratio']:.3f}); val/test prompts also in train (case and spacing "
                  f"aside): "
                  f"{card['eval_in_train']['val']} / {card['eval_in_train']['test']}", soft_wrap=True)
    console.print(f"vocabulary: {card['vocabulary']} distinct words (lower-cased, system prompt excluded)")
    if card.get("constant_answer"):
        floor = ", ".join(f"{name} {value:.3f}" for name, value in card["constant_answer"].items())
        console.print(f"one constant answer on test (train's most common label; a score's median), the floor a "
                      f"model must beat: {floor}", soft_wrap=True)
    if card.get("constant_answer_by_task"):
        by_task = card["constant_answer_by_task"]
        floor = ", ".join(f"{task} {value:.3f}" for task, value in by_task.items())
        # test/acc is the mean over every task on test: its floor only where each has one here
        # (a reply task's exact match has no constant answer counted).
        mean = f"{sum(by_task.values()) / len(by_task):.3f}"
        mean += " (test/acc's floor)" if set(by_task) == set(card["tasks"]["test"]) else " over these tasks"
        console.print(f"the same answers as task accuracy counts them (every field right): {floor}; mean {mean}",
                      soft_wrap=True)
    if card.get("noise_ceiling"):
        ceiling = ", ".join(f"{name} {value:.3f}" for name, value in card["noise_ceiling"].items())
        console.print(f"label-noise ceiling (best accuracy a perfect reader reaches): {ceiling}", soft_wrap=True)
