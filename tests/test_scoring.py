"""Answer parsing on broken outputs, and field checks at their band edges."""

from __future__ import annotations

import pytest

from ccexp.config import EvalConfig
from ccexp.scoring import parse_json_answer, score, summarize


@pytest.mark.parametrize("text,expected", [
    ('{"csat": 4}', {"csat": 4}),
    ('  {"csat": 4}\n', {"csat": 4}),
    ('```json\n{"csat": 4}\n```', {"csat": 4}),
    ('Sure! Here is the analysis: {"csat": 4} Hope this helps.', {"csat": 4}),
    ('{"csat": 4', None),                      # truncated
    ('The CSAT is 4.', None),                  # prose only
    ('{"csat": 4} or maybe {"csat": 3}', None),  # two objects: ambiguous
    ('[1, 2]', None),                          # JSON, not an object
    ('', None),
])
def test_parse_json_answer(text, expected):
    assert parse_json_answer(text) == expected


def _ex(task, **reference):
    return {"task": task, "reference": reference}


def test_bands_are_inclusive():
    cfg = EvalConfig(quality_band=10, csat_band=0.5, churn_band=15)
    ex = _ex("quality", quality_score=70, effectiveness="good")
    assert score(ex, '{"quality_score": 80, "effectiveness": "good"}', cfg)["correct"] == {"quality_score": True, "effectiveness": True}
    assert score(ex, '{"quality_score": 80.5, "effectiveness": "Good"}', cfg)["correct"] == {"quality_score": False, "effectiveness": True}
    churn = _ex("churn", churn_risk=50)
    assert score(churn, '{"churn_risk": 35}', cfg)["correct"]["churn_risk"]
    assert not score(churn, '{"churn_risk": 34}', cfg)["correct"]["churn_risk"]
    csat = _ex("csat", csat=3)
    assert score(csat, '{"csat": "3.5"}', cfg)["correct"]["csat"]
    assert not score(csat, '{"csat": 4}', cfg)["correct"]["csat"]


def test_invalid_answer_scores_wrong_without_crashing():
    record = score(_ex("issue", issue_category="refund", secondary_category=None), "I think it is a refund", EvalConfig())
    assert record == {"parsed": None, "json_valid": False, "correct": {"issue_category": False, "secondary_category": False}}


def test_coaching_is_a_set_and_null_matches_null():
    cfg = EvalConfig()
    assert score(_ex("coaching", coaching=["a b", "c"]), '{"coaching": ["c", "A B"]}', cfg)["correct"]["coaching"]
    assert not score(_ex("coaching", coaching=["a"]), '{"coaching": "a"}', cfg)["correct"]["coaching"]
    issue = score(_ex("issue", issue_category="refund", secondary_category=None),
                  '{"issue_category": "refund", "secondary_category": null}', cfg)
    assert all(issue["correct"].values())


def test_summarize_rates():
    records = [
        {"task": "csat", "json_valid": True, "correct": {"csat": True}},
        {"task": "csat", "json_valid": False, "correct": {"csat": False}},
        {"task": "quality", "json_valid": True, "correct": {"quality_score": True, "effectiveness": False}},
        {"task": "reply", "json_valid": True, "correct": {"reply": False}},
    ]
    m = summarize(records, "test/")
    assert m["test/json_valid"] == pytest.approx(2 / 3)  # the reply task is free text, not JSON
    assert m["test/csat/acc"] == 0.5 and m["test/effectiveness/acc"] == 0.0
    assert m["test/task/quality/acc"] == 0.0 and m["test/task/csat/acc"] == 0.5
    assert m["test/acc"] == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_generation_lists_must_line_up():
    from ccexp.backends.base import Generation

    with pytest.raises(ValueError, match="expected one of each per prompt"):
        Generation(texts=["a", "b"], seconds=[0.1, 0.1], new_tokens=[])
