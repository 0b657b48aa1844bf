"""The comparison report's recommendation: per scenario, the best finished run that meets every
constraint, its runner-up, and what was left out and why."""

from __future__ import annotations

import math
import operator
from itertools import groupby
from typing import Optional, Sequence

from ccexp.compare.runs import Run, SeedMean, by_val_size, describe, fmt, named, recorded_as_null, same, setting
from ccexp.config import CompareConfig, did_you_mean, parse_constraint
from ccexp.config_errors import numeric_keys

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}


def _violations(run: Run, constraints: list[tuple[str, str, float]]) -> list[str]:
    out = []
    for key, op, limit in constraints:
        value = run.value(key)
        if value is None:  # null: no answer gave a number (a MAE over no parsed scores)
            out.append(f"no number for {key}" if key in run.metrics else f"lacks {key}")
        elif not OPS[op](same(value), limit):  # 0.1 + 0.2 meets <= 0.3: equal to 12 digits
            out.append(f"{key} {fmt(value)} {NEGATED[op]} {limit:g}")
    return out


TIE_BREAKS = {"val/loss": "lower", "adapter/size_mb": "smaller"}  # lower wins, in this order


def _or_inf(value: Optional[float]) -> float:
    return math.inf if value is None else value


def _tie_breaks(tied: list[Run]) -> list[str]:
    """The tie-breaks that can judge these tied runs: a val/ metric only where they were all
    validated on one set (``by_val_size``), as over 12 and over 188 examples it ranks nothing."""
    return [k for k in TIE_BREAKS if not k.startswith("val/") or len(by_val_size(tied)) == 1]


def _ranked(runs: list[Run], metric: str, maximize: bool) -> list[Run]:
    """Best first by metric (2/3 summed two ways, 0.6666666666666667 vs ...666, is one value:
    rounded, a tie); each tie settled by the tie-breaks that can judge it, then run order."""
    order = sorted(runs, key=lambda r: same(r.value(metric)), reverse=maximize)
    ranked = []
    for _, group in groupby(order, key=lambda r: same(r.value(metric))):
        tied = list(group)
        keys = _tie_breaks(tied)
        ranked += sorted(tied, key=lambda r: [_or_inf(same(r.value(k))) for k in keys])
    return ranked


def _val_sets(runs: list[Run]) -> str:
    """"data_size.val=12: `0`; data_size.val=188: `1`": which runs were validated on which set."""
    return "; ".join(f"data_size.val={setting(group[0].flat.get('data_size.val'))}: "
                     + ", ".join(f"`{r.name}`" for r in group) for group in by_val_size(runs))


def _tie_note(best: Run, up: Run, method: str, tied: list[Run]) -> str:
    keys = _tie_breaks(tied)
    skipped = "" if keys == list(TIE_BREAKS) else (
        "; val/loss is not compared, their validation sets differ "
        f"({setting(best.flat.get('data_size.val'))} vs {setting(up.flat.get('data_size.val'))} examples)")
    for key in keys:  # the first that tells them apart is the one that ranked them (_ranked)
        a, b = best.value(key), up.value(key)
        if a is None or (b is not None and same(a) >= same(b)):
            continue
        if b is None:
            return f", a tie: {method} is picked as only it has a {key} ({fmt(a)}){skipped}."
        return f", a tie: {method} is picked for its {TIE_BREAKS[key]} {key} ({' vs '.join(_apart(a, b))}){skipped}."
    return f", a tie: the runs give no reason to prefer one (picked by run order){skipped}."


def _apart(a: float, b: float) -> tuple[str, str]:
    """a and b as the report shows them, with the digits that tell them apart (0.9001 vs 0.9004,
    not 0.900 vs 0.900)."""
    shown = fmt(a), fmt(b)
    for digits in range(4, 13):
        if shown[0] != shown[1]:
            break
        shown = f"{a:.{digits}g}", f"{b:.{digits}g}"
    return shown


def _recommend_scenario(runs: list[Run], cc: CompareConfig, swept: list[str], scenario: str,
                        means: Optional[list[SeedMean]] = None) -> str:
    """The scenario's paragraph. Where it repeats configurations over seeds, the candidates are
    the configurations' means (``means``: runs.seed_means), its failed runs named one by one."""
    metric, maximize = cc.metric, cc.direction == "maximize"
    failed = [r for r in runs if not r.finished]
    finished = means or [r for r in runs if r.finished]
    noun = "configuration" if means else "run"
    head = f"**{scenario}:** " if scenario else ""
    failed_note = ""
    all_failed = all(r.status == "failed" for r in failed)  # else some never ended (killed)
    if failed:
        failed_note = (f" {len(failed)} run{'s' if len(failed) > 1 else ''} "
                       f"{'failed' if all_failed else 'did not finish'} and "
                       f"{'are' if len(failed) > 1 else 'is'} excluded: "
                       + "; ".join(f"{named(r, swept)}: {r.error_sentence}" for r in failed) + ".")
    if not finished:
        none = ("the run failed" if len(runs) == 1 else f"all {len(runs)} runs failed") if all_failed else \
            "no run finished"
        return head + f"No recommendation: {none}." + failed_note
    constraints = [parse_constraint(c) for c in cc.constraints]
    # Checked where any finished run reports the key, even as null (no answer gave a number):
    # a run without a number for it does not meet it.
    checked = [c for c in constraints if any(c[0] in r.metrics for r in finished)]
    unchecked = [c for c in constraints if c not in checked]
    unchecked_note = "".join(f" Not checked: `{k} {op} {v:g}`, no run reports {k}." for k, op, v in unchecked)
    scored = [r for r in finished if r.value(metric) is not None]
    # A finished run without a finite value is named, not silently left out of the ranking.
    unranked_note = "".join(f" Not ranked: {_lacks(r, metric, swept)}." for r in finished if r.value(metric) is None)
    if not scored:
        reported = {k for r in finished for k in numeric_keys(r.metrics)}
        nearest = did_you_mean(metric, reported, "see a run's metrics.json for the keys")
        missing = f"has a number for {metric} (compare.metric)" if recorded_as_null(finished, metric) else \
            f"reports {metric} (compare.metric) ({nearest})"
        return head + (f"No recommendation: no finished run {missing}."
                       + failed_note + unchecked_note)

    if metric.startswith("val/") and len(by_val_size(scored)) > 1:
        return head + (f"No recommendation: {metric} is over each run's own validation set, and these differ "
                       f"({_val_sets(scored)}), so it ranks none of them against another; rank by a test/ metric."
                       + unranked_note + failed_note + unchecked_note)

    def rank(rs: list[Run]) -> list[Run]:
        return _ranked(rs, metric, maximize)

    eligible = rank([r for r in scored if not _violations(r, checked)])
    excluded = [r for r in rank(scored) if _violations(r, checked)]
    limits = ", ".join(f"{k} {op} {v:g}" for k, op, v in checked)
    excluded_note = "" if not excluded else " Outside the constraints: " + "; ".join(
        f"{named(r, swept)}: {', '.join(_violations(r, checked))}" for r in excluded) + "."
    if not eligible:
        top, *rest = rank(scored)
        name = top.flat.get("method.name", top.name)
        # Tied with the next: picked by a tie-break, which is said, not crowned the best outright.
        tied = [r for r in rest if same(r.value(metric)) == same(top.value(metric))]
        pick = _tie_note(top, tied[0], name, [top, *tied]) if tied else "."
        return head + (f"**No {noun} meets the constraints** ({limits}).{excluded_note} Without them the best "
                       f"would be {name} (`{top.name}`, {metric} {_shown(top, metric)}){pick}"
                       f"{unranked_note}{failed_note}{unchecked_note}")
    best = eligible[0]
    method = best.flat.get("method.name", "?")
    others = [r for r in eligible[1:] if r.flat.get("method.name") != method] or eligible[1:]
    tied = [r for r in eligible[1:] if same(r.value(metric)) == same(best.value(metric))]
    if means:
        text = (f"{head}**Recommend {method}** — runs {named(best, swept)} "
                + (f"tie {len(tied)} other configuration{'s' * (len(tied) > 1)} for the " if tied else "have the ")
                + f"{'highest' if maximize else 'lowest'} {metric} over their seeds, {_shown(best, metric)}")
    else:
        text = (f"{head}**Recommend {method}** — run {named(best, swept)} "
                + (f"ties {len(tied)} other run{'s' * (len(tied) > 1)} for the " if tied else "has the ")
                + f"{'highest' if maximize else 'lowest'} {metric}, {fmt(best.value(metric))}")
    if checked:
        text += (f", and meet{'s' * (not means)} "
                 + " and ".join(f"{k} {fmt(best.value(k))} {op} {v:g}" for k, op, v in checked))
    if means:
        text += (f"; {len(scored)} configuration{'s' * (len(scored) > 1)} compared, each by the mean of its finished "
                 f"seeds ({sum(len(m.runs) for m in scored)} runs).")
    else:
        text += f"; {len(scored)} finished run{'s' if len(scored) > 1 else ''} compared."
    if others:
        up = others[0]
        gap = same(best.value(metric)) - same(up.value(metric))
        values = describe(up, swept)
        text += (f" Runner-up: {up.flat.get('method.name', '?')} (`{up.name}`{', ' + values if values else ''}) with "
                 f"{_shown(up, metric)}" + (f", {fmt(abs(gap))} {'lower' if maximize else 'higher'}." if gap else
                 _tie_note(best, up, method, [best, *tied])))
    elif len(scored) == 1:
        text += f" It is the only {noun} ranked{' here' if scenario else ''}, so there is no runner-up."
    else:
        text += f" No other {'ranked ' if unranked_note else ''}{noun} meets the constraints, so there is no runner-up."
    n, which, step = _answers_behind(best, metric)
    if n:
        text += f" {metric} comes from {n} {which} per run: one answer moves it by {step:.3f} or more."
        if others:
            text += _noise_note(best, others[0], metric, n)
    if means and others:
        text += _seed_note(best, others[0], metric)
    text += _floor_note(best, metric, noun)
    return text + excluded_note + unranked_note + failed_note + unchecked_note


def _lacks(run: Run, metric: str, swept: list[str]) -> str:
    """"`2` (method=lora) reports no finite test/acc"; for a configuration over seeds, the seeds'
    runs that lack it, as its mean needs every finished seed's."""
    if not isinstance(run, SeedMean):
        return f"{named(run, swept)} reports {'no finite' if metric in run.metrics else 'no'} {metric}"
    lacking = [r for r in run.runs if r.value(metric) is None]
    return (f"{named(run, swept)} has no mean {metric}, which needs every finished seed's: "
            + ", ".join(f"{named(r, ['seed'])} reports {'no finite' if metric in r.metrics else 'no'} {metric}"
                        for r in lacking))


def _shown(run: Run, metric: str) -> str:
    """A run's value of metric as the recommendation gives it: a configuration's says it is a
    mean, over how many seeds (of how many that ran), and their standard deviation."""
    if not isinstance(run, SeedMean):
        return fmt(run.value(metric))
    k = len(run.runs)
    seeds = f"{k} seed{'s' * (k > 1)}" if k == run.planned else f"the {k} of {run.planned} seeds that finished"
    sd = f", sd {fmt(run.sd[metric])}" if metric in run.sd else ""
    return f"{fmt(run.value(metric))} (mean of {seeds}{sd})"


def _seed_note(best: SeedMean, up: SeedMean, metric: str) -> str:
    """Whether the gap between two configurations' means is within two standard errors of their
    difference, from the spread over seeds ("" when it is not); where either has one finished
    seed, that its spread is unknown."""
    if metric not in best.sd or metric not in up.sd:
        return (" One of the two has a single finished seed, so how far reseeding moves it is not known: "
                "the gap may be seed noise.")
    a, b = best.value(metric), up.value(metric)
    two_se = 2 * math.sqrt(best.sd[metric] ** 2 / len(best.runs) + up.sd[metric] ** 2 / len(up.runs))
    if same(a) == same(b) or abs(a - b) > two_se:
        return ""
    return (f" The gap to the runner-up is within the spread over seeds (two standard errors of the difference "
            f"of the means: {two_se:.3f}): more seeds are needed to tell the two apart.")


def _floor_note(best: Run, metric: str, noun: str) -> str:
    """Where the best's metric is not above ``floor/<metric>`` (what one constant answer per field
    scores on the same test answers, from its evaluation): no run of the scenario has learned to
    read the calls, and its lead over the others says nothing of it ("" otherwise)."""
    floor, value = best.value(f"floor/{metric}"), best.value(metric)
    if floor is None or value is None or same(value) > same(floor):
        return ""
    return (f" Its {metric}, {fmt(value)}, is not above {fmt(floor)}, what one constant answer per field "
            f"(train's most common label, a score's median) scores on the same test answers: no {noun} here "
            "has learned to read the calls yet.")


def _noise_note(best: Run, up: Run, metric: str, n: int) -> str:
    """Whether the gap to the runner-up is within two standard errors of a difference of two
    rates over n answers each ("" when it is not): 0.611 vs 0.556 over 18 answers is one answer,
    which a reseeded run or another test sample moves as far. (test/acc, a mean over tasks, is
    taken as one rate over all its answers: about right where the tasks' shares are even.)"""
    a, b = best.value(metric), up.value(metric)
    n_up = _answers_behind(up, metric)[0] or n
    if not (0 <= a <= 1 and 0 <= b <= 1) or same(a) == same(b):
        return ""
    two_se = 2 * math.sqrt(a * (1 - a) / n + b * (1 - b) / n_up)
    if abs(a - b) > two_se:
        return ""
    return (f" The gap to the runner-up is within sampling noise (two standard errors of the difference over "
            f"these answers: {two_se:.3f}): more test answers are needed to tell the two apart.")


def _answers_behind(run: Run, metric: str) -> tuple[int | None, str, float]:
    """How many generated answers a rate is over, what they are, and the least one answer moves
    it by: test/acc all of them, but as the mean of the tasks' accuracies, so one answer of a
    task with n_t answers moves it by 1 / (tasks · n_t) (the test split can hold fewer than
    eval.generate_examples asks for, and the tasks uneven shares); a field's or a task's rate only
    the answers that ask for it (``.../answers``, e.g. 3 of 18 for one task of six); the valid-JSON
    rate the answers of JSON tasks (``test/json/answers``: reply drafts are free text)."""
    if metric == "test/json_valid":
        n = run.value("test/json/answers")
        return (int(n), "test answers of JSON tasks", 1 / n) if n else (None, "", 0.0)
    if metric == "test/acc":
        per_task = [int(v) for k in run.metrics if k.startswith("test/task/") and k.endswith("/answers")
                    and (v := run.value(k))]
        if per_task:
            return sum(per_task), "generated test answers", 1 / (len(per_task) * max(per_task))
        n = run.value("test/generated")
        n = int(n) if n is not None else run.flat.get("eval.generate_examples")
        return (n, "generated test answers", 1 / n) if isinstance(n, int) and n > 0 else (None, "", 0.0)
    if metric.startswith("test/") and metric.endswith(("/acc", "/parse_rate", "/exact_match")):
        n = run.value(metric.rsplit("/", 1)[0] + "/answers")
        subject = metric.removeprefix("test/").rsplit("/", 1)[0].removeprefix("task/")
        return (int(n), f"test answers that ask for {subject}", 1 / n) if n else (None, "", 0.0)
    return None, "", 0.0


def recommend(groups: dict[str, list[Run]], cc: CompareConfig, swept: list[str],
              unstarted: Sequence[tuple[str, str]] = (),
              means: Optional[dict[str, list[SeedMean]]] = None) -> list[str]:
    """One paragraph per scenario (``groups``: runs.scenarios, what the runs are judged on; ``means``:
    a scenario's configurations over seeds, where it repeats them, ranked in its runs' place), and
    one naming the sweep's jobs that have not started (``unstarted``: name, overrides), which a
    pick among the runs that did cannot speak for."""
    paragraphs = [_recommend_scenario(rs, cc, swept, label, (means or {}).get(label)) for label, rs in groups.items()]
    if unstarted:
        many = len(unstarted) > 1
        paragraphs.append(f"{len(unstarted)} job{'s' * many} of the sweep {'have' if many else 'has'} not started, "
                          f"so the recommendation does not cover {'them' if many else 'it'}: "
                          + ", ".join(f"`{name}` ({overrides})" for name, overrides in unstarted)
                          + f"; the sweep stopped before {'them' if many else 'it'}, or "
                          f"{'they are' if many else 'it is'} still queued.")
    return paragraphs
