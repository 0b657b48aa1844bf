"""Answer parsing on broken outputs, and field checks at their band edges."""

from __future__ import annotations

import pytest

from ccexp.config import EvalConfig
from ccexp.scoring import parse_json_answer, score


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
    ('```json\n{"csat": 4}\n``` or ```json\n{"csat": 3}\n```', None),  # two fenced objects: ambiguous
    ('```json\n{"csat": 4}\n``` then ```\nsome code\n```', {"csat": 4}),  # one of the fences is JSON
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
    assert record == {"parsed": None, "json_valid": False,
                      "field_parsed": {"issue_category": False, "secondary_category": False},
                      "correct": {"issue_category": False, "secondary_category": False}}


def test_field_parse_checks_the_kind_of_value():
    record = score(_ex("quality", quality_score=70, effectiveness="good"),
                   '{"quality_score": "high", "effectiveness": "good"}', EvalConfig())
    assert record["field_parsed"] == {"quality_score": False, "effectiveness": True}
    assert score(_ex("coaching", coaching=[]), '{"coaching": "none"}', EvalConfig())["field_parsed"] == {"coaching": False}


def test_coaching_is_a_set_and_null_matches_null():
    cfg = EvalConfig()
    assert score(_ex("coaching", coaching=["a b", "c"]), '{"coaching": ["c", "A B"]}', cfg)["correct"]["coaching"]
    assert not score(_ex("coaching", coaching=["a"]), '{"coaching": "a"}', cfg)["correct"]["coaching"]
    issue = score(_ex("issue", issue_category="refund", secondary_category=None),
                  '{"issue_category": "refund", "secondary_category": null}', cfg)
    assert all(issue["correct"].values())


@pytest.mark.parametrize("answer", ['{"csat": NaN}', '{"csat": Infinity}', '{"csat": "nan"}',
                                    '{"csat": 1' + "0" * 320 + '}'])
def test_non_finite_or_huge_numbers_are_no_score(answer):
    record = score(_ex("csat", csat=4), answer, EvalConfig())
    assert record["field_parsed"] == {"csat": False} and record["correct"] == {"csat": False}


def test_null_is_a_label_only_where_it_means_none():
    record = score(_ex("issue", issue_category="billing", secondary_category=None),
                   '{"issue_category": null, "secondary_category": null}', EvalConfig())
    assert record["field_parsed"] == {"issue_category": False, "secondary_category": True}


def test_scoring_imports_on_its_own():
    """ccexp.scoring reads the task fields from ccexp.data, whose chatml importer reads scoring."""
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", "import ccexp.scoring"], capture_output=True).returncode == 0


def test_an_empty_reply_is_not_an_answer():
    """A model that stops at once (or emits only whitespace) answered nothing: not parsed."""
    example = {"task": "reply", "reference": {"reply": "Happy to help."}}
    for raw, parsed in (("", False), ("  \n", False), ("Sure.", True)):
        assert score(example, raw, EvalConfig())["field_parsed"] == {"reply": parsed}
