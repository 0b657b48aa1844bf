"""Aggregate metrics over prediction records (``ccexp.scoring.score`` makes one per answer).

Every key is flat and prefixed (``test/``, ``baseline/test/``):
- ``json_valid``: share of JSON-task answers with one parsable JSON object;
- per field: ``<field>/acc`` (the field's check: band for numbers, equality for labels and
  coaching sets), ``<field>/parse_rate`` (present with a usable value);
- numbers: ``<field>/mae`` over the answers that gave a number, ``<field>/within_<band>``;
  CSAT also on the 0-100 scale (1..5 -> 0..100) as ``csat/within_<band>_of_100``;
- labels: ``<field>/macro_f1`` over the classes in the references;
- text (reply, and coaching rendered as its themes): ``bleu``, ``rougeL``, ``exact_match``;
  coaching also ``theme_coverage``;
- ``task/<task>/acc`` (every field right) and ``acc`` (mean over tasks).
BLEU (sacreBLEU's 13a tokenization) and ROUGE-L come from torchmetrics.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch
from torchmetrics.functional.classification import multiclass_f1_score
from torchmetrics.functional.text import rouge_score, sacre_bleu_score

from ccexp.config import EvalConfig
from ccexp.data.tasks import FREE_TEXT_TASKS
from ccexp.scoring import FIELD_KINDS, as_number, canonical_label, same_text

BAND_FIELDS = {"quality_score": "quality_band", "csat": "csat_band", "churn_risk": "churn_band"}
_theme = partial(canonical_label, "coaching")
_UNPARSED = "<unparsed>"  # the predicted class of an answer without a usable label


def macro_f1(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Macro-F1 over the classes that occur in the references (sklearn's
    ``f1_score(average="macro", labels=<reference classes>)``): a prediction of a class the
    references never use is still a miss for its true class."""
    classes = sorted(set(references) | set(predictions))
    if len(classes) == 1:  # every answer and reference the same class (torchmetrics needs two)
        return 1.0
    index = {c: i for i, c in enumerate(classes)}
    per_class = multiclass_f1_score(
        torch.tensor([index[p] for p in predictions]), torch.tensor([index[r] for r in references]),
        num_classes=len(classes), average=None, zero_division=0,
    )
    return float(torch.stack([per_class[index[c]] for c in set(references)]).mean())


def text_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 as sacreBLEU reports it (its ``13a`` tokenization: punctuation split off the
    words, so "way." and "way!" share the word; torchmetrics' plain ``bleu_score`` splits on
    whitespace only; 0 when no 4-gram matches anywhere in the corpus), mean per-answer ROUGE-L
    F1, and whitespace-normalised exact match."""
    return {
        "bleu": float(sacre_bleu_score(list(predictions), [[r] for r in references], n_gram=4, tokenize="13a")),
        "rougeL": float(rouge_score(list(predictions), list(references), rouge_keys=("rougeL",))["rougeL_fmeasure"]),
        "exact_match": sum(map(same_text, predictions, references)) / len(references),
    }


def coaching_text(value: Any) -> str:
    """Coaching themes as text for BLEU/ROUGE: '; '-joined, 'none' for an empty list. Sorted as
    the scorer compares themes: a set, whose order alone must not cost text overlap."""
    if not isinstance(value, list):
        return ""
    return "; ".join(str(v) for v in sorted(value, key=lambda v: (_theme(v), str(v)))) or "none"


def _field_values(records: list[dict]) -> dict[str, list[tuple[Any, Any, bool, bool]]]:
    """Field -> (prediction or None, reference, parsed, correct) per record that asks for it."""
    values: dict[str, list] = {}
    for r in records:
        parsed = r["parsed"] or {}
        for name, ok in r["correct"].items():
            values.setdefault(name, []).append((parsed.get(name), r["reference"].get(name),
                                                r["field_parsed"][name], ok))
    return values


def _field_metrics(name: str, rows: list[tuple], cfg: EvalConfig) -> dict[str, float | None]:
    kind = FIELD_KINDS[name]
    out = {"acc": sum(ok for *_, ok in rows) / len(rows), "parse_rate": sum(p for _, _, p, _ in rows) / len(rows),
           "answers": len(rows)}  # how many answers asked for it: what one answer moves its rates by
    if kind == "number":
        errors = [abs(as_number(pred) - as_number(ref)) for pred, ref, parsed, _ in rows if parsed]
        out["mae"] = sum(errors) / len(errors) if errors else None  # null in metrics.json: no number to judge
        band = getattr(cfg, BAND_FIELDS[name])
        out[f"within_{band:g}"] = out["acc"]
        if name == "csat":  # the seeds' view: CSAT on 0-100, correct within csat_band_100 points
            hits = [parsed and abs(as_number(pred) - as_number(ref)) * 25 <= cfg.csat_band_100 + 1e-9
                    for pred, ref, parsed, _ in rows]
            out[f"within_{cfg.csat_band_100:g}_of_100"] = sum(hits) / len(rows)
    elif kind == "label":
        refs = [canonical_label(name, ref) for _, ref, _, _ in rows]
        preds = [canonical_label(name, pred) if parsed else _UNPARSED for pred, _, parsed, _ in rows]
        out["macro_f1"] = macro_f1(refs, preds)
    elif kind == "set":
        refs = [coaching_text(ref) for _, ref, _, _ in rows]
        preds = [coaching_text(pred) if parsed else "" for pred, _, parsed, _ in rows]
        out.update(text_scores(refs, preds))
        out["exact_match"] = out["acc"]  # as a set: order and spelling variants do not matter
        expected = [(set(map(_theme, ref)), pred if parsed else []) for pred, ref, parsed, _ in rows if ref]
        if expected:
            out["theme_coverage"] = sum(len(ref & set(map(_theme, pred))) / len(ref)
                                        for ref, pred in expected) / len(expected)
    else:
        out.update(text_scores([str(ref) for _, ref, _, _ in rows], [str(pred or "") for pred, _, _, _ in rows]))
    return out


def summarize(records: list[dict], prefix: str, cfg: EvalConfig) -> dict[str, float | None]:
    """All aggregate metrics of one model's prediction records, keys prefixed."""
    metrics: dict[str, float | None] = {f"{prefix}generated": len(records)}
    json_records = [r for r in records if r["task"] not in FREE_TEXT_TASKS]
    if json_records:
        metrics[f"{prefix}json_valid"] = sum(r["json_valid"] for r in json_records) / len(json_records)
        metrics[f"{prefix}json/answers"] = len(json_records)  # what the rate is over: free-text answers are not
    for name, rows in sorted(_field_values(records).items()):
        for key, value in _field_metrics(name, rows, cfg).items():
            metrics[f"{prefix}{name}/{key}"] = value
    tasks: dict[str, list[bool]] = {}
    for r in records:
        tasks.setdefault(r["task"], []).append(all(r["correct"].values()))
    for task, oks in sorted(tasks.items()):
        metrics[f"{prefix}task/{task}/acc"] = sum(oks) / len(oks)
        metrics[f"{prefix}task/{task}/answers"] = len(oks)
    if tasks:
        metrics[f"{prefix}acc"] = sum(sum(o) / len(o) for o in tasks.values()) / len(tasks)
    return metrics
