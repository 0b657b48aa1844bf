"""Aggregate metrics on hand-computed cases: BLEU/ROUGE-L edges, band edges, MAE, macro-F1 on a
known confusion matrix, parse rates, coaching coverage."""

from __future__ import annotations

import math

import pytest

from ccexp.backends.base import perplexity
from ccexp.config import EvalConfig
from ccexp.evaluate import percentile
from ccexp.metrics import macro_f1, summarize, text_scores
from ccexp.scoring import score


def test_identical_text_scores_one_and_disjoint_text_zero():
    same = text_scores(["the agent resets your router now"], ["the agent resets your router now"])
    assert same == {"bleu": pytest.approx(1.0), "rougeL": pytest.approx(1.0), "exact_match": 1.0}
    other = text_scores(["the agent resets your router now"], ["refund issued to card"])
    assert other == {"bleu": 0.0, "rougeL": 0.0, "exact_match": 0.0}


def test_rouge_l_is_the_longest_common_subsequence_f1():
    # LCS("a b c d", "a c d e") = "a c d": precision 3/4, recall 3/4 -> F1 0.75.
    assert text_scores(["a c d e"], ["a b c d"])["rougeL"] == pytest.approx(0.75)
    # Exact match ignores whitespace differences only.
    assert text_scores(["Dial  121.\n"], ["Dial 121."])["exact_match"] == 1.0


def test_macro_f1_on_a_known_confusion_matrix():
    # refs:  a a a b b c ; preds: a a b b c c
    # a: tp2 fp0 fn1 -> 0.8 ; b: tp1 fp1 fn1 -> 0.5 ; c: tp1 fp1 fn0 -> 2/3
    f1 = macro_f1(list("aaabbc"), list("aabbcc"))
    assert f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # A predicted class the references never use lowers recall, not the class count.
    assert macro_f1(["a", "b"], ["a", "x"]) == pytest.approx((1.0 + 0.0) / 2)


def _records(task: str, reference: dict, answers: list[str], cfg: EvalConfig) -> list[dict]:
    return [{"task": task, "reference": reference, **score({"task": task, "reference": reference}, a, cfg)}
            for a in answers]


def test_numeric_fields_get_bands_mae_and_parse_rate():
    cfg = EvalConfig(quality_band=10, csat_band=0.5, csat_band_100=15, churn_band=15)
    ref = {"quality_score": 70, "effectiveness": "good"}
    recs = _records("quality", ref, ['{"quality_score": 80, "effectiveness": "good"}',    # edge: +10 is in
                                     '{"quality_score": 50, "effectiveness": "poor"}',
                                     '{"quality_score": "n/a", "effectiveness": "good"}',  # not a number
                                     'no json'], cfg)
    m = summarize(recs, "test/", cfg)
    assert m["test/quality_score/within_10"] == m["test/quality_score/acc"] == 0.25
    assert m["test/quality_score/mae"] == pytest.approx((10 + 20) / 2)  # over the two numbers given
    assert m["test/quality_score/parse_rate"] == 0.5
    assert m["test/effectiveness/parse_rate"] == 0.75
    assert m["test/json_valid"] == 0.75 and m["test/json/answers"] == 4
    assert m["test/generated"] == 4
    csat = _records("csat", {"csat": 3}, ['{"csat": 3}', '{"csat": 4}', '{"csat": 3.5}'], cfg)
    m = summarize(csat, "test/", cfg)
    assert m["test/csat/within_0.5"] == pytest.approx(2 / 3)  # 3.5 is on the edge
    # 0-100 view: 1 CSAT point = 25 > 15, half a point = 12.5 <= 15.
    assert m["test/csat/within_15_of_100"] == pytest.approx(2 / 3)
    assert m["test/csat/mae"] == pytest.approx(0.5)


def test_task_accuracy_needs_every_field_and_acc_is_the_mean_over_tasks():
    """test/acc, the default compare.metric: a task's answer counts only with all its fields right,
    and each task weighs alike however many answers it has (README: "every field right; mean over tasks")."""
    cfg = EvalConfig(quality_band=10)
    quality = _records("quality", {"quality_score": 70, "effectiveness": "good"},
                       ['{"quality_score": 72, "effectiveness": "good"}',   # both fields right
                        '{"quality_score": 72, "effectiveness": "poor"}',   # the score alone
                        '{"quality_score": 95, "effectiveness": "good"}'], cfg)  # the label alone
    csat = _records("csat", {"csat": 3}, ['{"csat": 3}'], cfg)
    m = summarize(quality + csat, "test/", cfg)
    assert m["test/quality_score/acc"] == m["test/effectiveness/acc"] == pytest.approx(2 / 3)
    assert m["test/task/quality/acc"] == pytest.approx(1 / 3) and m["test/task/csat/acc"] == 1.0
    assert (m["test/task/quality/answers"], m["test/task/csat/answers"]) == (3, 1)
    assert m["test/acc"] == pytest.approx((1 / 3 + 1) / 2)  # not 2 of 4 answers


def test_mae_is_null_when_no_answer_gives_a_number():
    cfg = EvalConfig()
    m = summarize(_records("churn", {"churn_risk": 40}, ["high"], cfg), "test/", cfg)
    assert m["test/churn_risk/mae"] is None and m["test/churn_risk/parse_rate"] == 0


def test_label_fields_get_macro_f1_with_unparsed_answers_as_misses():
    cfg = EvalConfig()
    recs = []
    for ref, answer in [("refund", '{"journey_type": "refund"}'), ("refund", "garbage"),
                        ("escalation", '{"journey_type": "Escalation"}')]:
        recs += _records("journey", {"journey_type": ref}, [answer], cfg)
    m = summarize(recs, "test/", cfg)
    # refund: tp1 fn1 -> 2/3 ; escalation: tp1 -> 1
    assert m["test/journey_type/macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["test/journey_type/acc"] == pytest.approx(2 / 3)


def test_coaching_gets_text_scores_and_theme_coverage():
    cfg = EvalConfig()
    ref = {"coaching": ["show more empathy", "offer the next steps"]}
    recs = _records("coaching", ref, ['{"coaching": ["offer the next steps", "show more empathy"]}',  # same set
                                      '{"coaching": ["show more empathy"]}'], cfg)
    m = summarize(recs, "test/", cfg)
    assert m["test/coaching/exact_match"] == m["test/coaching/acc"] == 0.5
    assert m["test/coaching/theme_coverage"] == pytest.approx((1.0 + 0.5) / 2)
    assert 0 < m["test/coaching/rougeL"] < 1 and 0 <= m["test/coaching/bleu"] <= 1
    # The same themes in another order: a set, so its text scores are the exact answer's.
    same = summarize(_records("coaching", ref, ['{"coaching": ["offer the next steps", "show more empathy"]}'], cfg),
                     "test/", cfg)
    assert same["test/coaching/rougeL"] == pytest.approx(1.0) and same["test/coaching/bleu"] == pytest.approx(1.0)


def test_bleu_is_sacrebleus_with_punctuation_split_off():
    """The BLEU users compare against (sacreBLEU, 13a): a reply that differs from its reference
    in punctuation only keeps its words; on whitespace tokens "John." and "John" would differ."""
    from torchmetrics.functional.text import bleu_score, sacre_bleu_score

    pred, ref = "Thanks, John. I have reset your password.", "Thanks John. I have reset your password!"
    got = text_scores([ref], [pred])["bleu"]
    assert got == pytest.approx(float(sacre_bleu_score([pred], [[ref]], tokenize="13a")))
    assert got > float(bleu_score([pred], [[ref]])) + 0.03


def test_reply_gets_bleu_rouge_and_exact_match():
    cfg = EvalConfig()
    recs = _records("reply", {"reply": "I have reset your router for you."},
                    ["I have reset your router for you.", "Goodbye."], cfg)
    m = summarize(recs, "test/", cfg)
    assert m["test/reply/exact_match"] == 0.5 and "test/json_valid" not in m
    assert 0 < m["test/reply/bleu"] < 1 and 0.5 <= m["test/reply/rougeL"] < 1


def test_reply_exact_match_is_the_scorers_check():
    """One rule for a reply's exact match: the aggregate counts what the scorer marks correct
    (spacing aside, case and punctuation kept)."""
    cfg = EvalConfig()
    answers = [" I have  reset\tyour router\nfor you. ", "i have reset your router for you.",
               "I have reset your router for you", "I have reset your router for you.\u00a0"]
    recs = _records("reply", {"reply": "I have reset your router for you."}, answers, cfg)
    assert [r["correct"]["reply"] for r in recs] == [True, False, False, True]
    m = summarize(recs, "test/", cfg)
    assert m["test/reply/exact_match"] == m["test/reply/acc"] == 0.5


def test_percentile_interpolates_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert percentile([7.0], 0.95) == 7.0


def test_macro_f1_of_one_class_everywhere_is_one():
    assert macro_f1(["<null>", "<null>"], ["<null>", "<null>"]) == 1.0


def test_mae_reads_reference_numbers_as_scoring_does():
    """A reference the importer accepts as a number ("4%") is one for the MAE too."""
    records = [{"task": "csat", "reference": {"csat": "4%"}, **score({"task": "csat", "reference": {"csat": "4%"}},
                                                                      '{"csat": 3}', EvalConfig())}]
    metrics = summarize(records, "test/", EvalConfig())
    assert metrics["test/csat/mae"] == 1.0


def test_an_off_scale_number_stays_out_of_the_mae():
    """CSAT 80 (a 0-100 answer to a 1-5 question) is no rating: it would put 76 into a 1-5 MAE."""
    cfg = EvalConfig(csat_band=0.5, csat_band_100=15)
    m = summarize(_records("csat", {"csat": 4}, ['{"csat": 80}', '{"csat": 3}', '{"csat": 5.5}'], cfg), "test/", cfg)
    assert m["test/csat/mae"] == 1.0 and m["test/csat/parse_rate"] == pytest.approx(1 / 3)
    assert m["test/csat/within_0.5"] == 0 and m["test/csat/within_15_of_100"] == 0


def test_perplexity_is_exp_of_the_loss_never_a_capped_number():
    """A diverged run's loss of 60 is a perplexity of e^60, not e^50 (a cap that read as measured);
    past what a float holds, infinite."""
    assert perplexity(1.0) == pytest.approx(math.e)
    assert perplexity(60.0) == pytest.approx(math.exp(60.0))
    assert perplexity(1000.0) == math.inf
    assert math.isnan(perplexity(float("nan")))
