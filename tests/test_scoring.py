"""Answer parsing on broken outputs, and field checks at their band edges."""

from __future__ import annotations

import json

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
    # Cut off at the token cap: never the whole object found before, or nested inside, the open one.
    ('{"analysis": {"csat": 4}, "notes": "the customer', None),
    ('{"csat": 4}\n{"csat": 5, "reason": "the cust', None),
    ('```json\n{"csat": 4}\n```\n```json\n{"csat": 5', None),
    ('```json\n{"csat": 4}\n```\nActually, I think {"csat": 2}', None),  # fenced and in prose: several
    ('Transcript:\n```\nAgent: hi\n```\nAnswer: {"csat": 4}', {"csat": 4}),  # a fence that is not JSON
    ('I {think} so: {"csat": 4}', {"csat": 4}),   # braces in prose are skipped whole
    ('{"csat": 4, "x": {"a": 1},}', None),         # not JSON: no fragment of it either
    ('{"reason": "a } in a string", "csat": 4}', {"reason": "a } in a string", "csat": 4}),
    ('{"csat": NaN}', None),                       # Python's reader takes NaN; JSON (and predictions.jsonl) do not
    ('{"a":' * 1000 + '1' + '}' * 1000, None),     # past the parser's depth: invalid, not a crash
    ('{"csat": ' + '1' * 5000 + '}', None),        # past int()'s digit limit
    ('{"csat": 1, "csat": 4}', None),              # a key given twice says two things: ambiguous
    ('{"csat": 4, "x": {"a": 1, "a": 2}}', None),  # at any depth
    ('{"coaching": ["a"], "coaching": ["b"]} {"csat": 3}', None),  # not skipped as prose: the other is not the one
])
def test_parse_json_answer(text, expected):
    assert parse_json_answer(text) == expected


def test_how_deep_an_answer_may_nest_is_ours_not_the_recursion_limits():
    """1,000 levels were refused by Python's parser only while the recursion limit was 1,000: once
    torch's compiler had raised it (10,000), the same answer parsed, and the suite's order decided."""
    import sys

    from ccexp.scoring import MAX_DEPTH

    nested = lambda n: '{"a":' * (n - 1) + '{"a": [1]}' + '}' * (n - 1)  # noqa: E731 - n objects, one array
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        assert parse_json_answer(nested(1000)) is None
        assert parse_json_answer(nested(MAX_DEPTH)) is None  # the array is one level more
        assert parse_json_answer(nested(MAX_DEPTH - 1)) is not None
        assert parse_json_answer('{"reason": "' + "[" * 500 + '", "csat": 4}')["csat"] == 4  # inside a string
    finally:
        sys.setrecursionlimit(limit)


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
                                    '{"csat": 1' + "0" * 320 + '}', '{"csat": 1e308}'])
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


def test_the_users_labels_compare_as_the_importers_write_them():
    """1.0 for the label "1", true for "true", a reference with a trailing space: accuracy and
    macro-F1 (canonical_label) agree on each."""
    cfg = EvalConfig()
    for reference, answer in (("1", '{"label": 1.0}'), ("true", '{"label": true}'), ("card arrival ", '{"label": "card arrival"}')):
        record = score(_ex("classify", label=reference), answer, cfg)
        assert record["correct"] == {"label": True} and record["field_parsed"] == {"label": True}, reference
    assert score(_ex("classify", label="True"), '{"label": true}', cfg)["correct"] == {"label": False}  # case kept


def test_null_written_as_text_is_null_where_null_is_an_answer():
    from ccexp.scoring import canonical_label

    cfg = EvalConfig()
    for answer in ('"null"', '"None"', "null"):
        record = score(_ex("issue", issue_category="refund", secondary_category=None),
                       f'{{"issue_category": "refund", "secondary_category": {answer}}}', cfg)
        assert record["correct"] == {"issue_category": True, "secondary_category": True}, answer
        assert record["field_parsed"]["secondary_category"], answer
    assert canonical_label("secondary_category", "none") == canonical_label("secondary_category", None)  # macro-F1 too
    assert canonical_label("issue_category", "none") == "none"  # elsewhere a word like any other


@pytest.mark.parametrize("text", ["1_000", "٣", "inf", "0x10", "4/5", "4 stars"])
def test_numbers_are_written_in_ascii_digits(text):
    from ccexp.scoring import as_number

    assert as_number(text) is None
    assert as_number(" 85 ") == 85 and as_number("80%") == 80 and as_number("-1.5e2") == -150 and as_number(".5") == 0.5


def test_a_percent_is_a_number_only_on_a_0_to_100_scale():
    """"80%" is a churn risk or a quality score of 80; on CSAT's 1-5 scale "1%" is no rating."""
    cfg = EvalConfig()
    csat = score(_ex("csat", csat=1), '{"csat": "1%"}', cfg)
    assert csat["field_parsed"] == {"csat": False} and csat["correct"] == {"csat": False}
    churn = score(_ex("churn", churn_risk=80), '{"churn_risk": "80%"}', cfg)
    assert churn["field_parsed"]["churn_risk"] and churn["correct"]["churn_risk"]
    # Written with a space before the sign ("80 %", as many languages write it), the same number.
    spaced = score(_ex("churn", churn_risk=80), '{"churn_risk": "80 %"}', cfg)
    assert spaced["field_parsed"]["churn_risk"] and spaced["correct"]["churn_risk"]


@pytest.mark.parametrize("task,field,reference,answer", [
    ("quality", "quality_score", 100, "110"),  # within the 10-point band of 100, but no 0-100 score
    ("quality", "quality_score", 0, "-5"),
    ("churn", "churn_risk", 100, '"105%"'),
    ("csat", "csat", 5, "5.5"),               # within the 0.5 band, but no 1-5 rating
    ("csat", "csat", 1, "0.5"),
    ("csat", "csat", 4, "80"),                # a 0-100 answer to a 1-5 question
])
def test_a_number_off_the_tasks_scale_is_no_answer(task, field, reference, answer):
    """The prompts ask for an integer on 0-100 or 1-5 (scoring.NUMBER_RANGES): a value off that
    scale is not parsed and not correct, however near the reference it lies."""
    ex = {"task": task, "reference": {field: reference}}
    record = score(ex, f'{{"{field}": {answer}}}', EvalConfig(quality_band=10, csat_band=0.5, churn_band=15))
    assert record["field_parsed"][field] is False and record["correct"][field] is False


def test_the_ends_of_each_scale_are_on_it():
    for task, field, value in (("quality", "quality_score", 0), ("quality", "quality_score", 100),
                               ("churn", "churn_risk", "100%"), ("csat", "csat", 1), ("csat", "csat", 5)):
        record = score({"task": task, "reference": {field: 3}}, json.dumps({field: value}), EvalConfig())
        assert record["field_parsed"][field], (field, value)


@pytest.mark.parametrize("task,reference,answer,field", [
    ("issue", {"issue_category": "refund", "secondary_category": None}, '{"issue_category": ""}', "issue_category"),
    ("classify", {"label": "card_arrival"}, '{"label": "  "}', "label"),
    ("coaching", {"coaching": ["empathy"]}, '{"coaching": [""]}', "coaching"),
    ("coaching", {"coaching": ["empathy"]}, '{"coaching": [null]}', "coaching"),
    ("coaching", {"coaching": ["empathy"]}, '{"coaching": ["empathy", " "]}', "coaching"),
    ("coaching", {"coaching": ["empathy"]}, '{"coaching": [["empathy"]]}', "coaching"),
    ("coaching", {"coaching": ["empathy"]}, '{"coaching": [true]}', "coaching"),
])
def test_a_blank_label_or_theme_is_no_answer(task, reference, answer, field):
    """An empty string says nothing: not parsed (parse_rate), not a label of its own."""
    record = score({"task": task, "reference": reference}, answer, EvalConfig())
    assert record["field_parsed"][field] is False and record["correct"][field] is False


def test_labels_and_themes_may_be_numbers():
    cfg = EvalConfig()
    assert score(_ex("classify", label="3"), '{"label": 3}', cfg)["field_parsed"] == {"label": True}
    assert score(_ex("coaching", coaching=[]), '{"coaching": []}', cfg)["field_parsed"] == {"coaching": True}
    assert score(_ex("coaching", coaching=["a"]), '{"coaching": ["a", 2]}', cfg)["field_parsed"] == {"coaching": True}


def test_a_free_text_answer_has_no_json_validity():
    """A reply or chat answer is text, never JSON: its record says null, not a valid JSON answer."""
    for task in ("reply", "chat"):
        record = score({"task": task, "reference": {"reply": "Happy to help."}}, "Happy to help.", EvalConfig())
        assert record["json_valid"] is None and record["correct"] == {"reply": True}, task
    assert score(_ex("csat", csat=4), '{"csat": 4}', EvalConfig())["json_valid"] is True
