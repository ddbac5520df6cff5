"""Verdicts of stdyn.core.claims on estimates with known replicates, the Board and its notebook rows."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from stdyn.core import claims
from stdyn.core.claims import CONTRADICTED, NOT_REPRODUCED, NOT_TESTED, REPRODUCED, Board
from stdyn.core.estimator import Estimate

_draws = itertools.count()


def around(value: float, half_width: float, n: int = 401) -> Estimate:
    """An estimate whose 95% interval is value +- half_width (exactly for n = 401), its replicates
    in a random order of their own, so that two of them are not trivially paired."""
    spread = half_width / 0.95
    replicates = np.linspace(value - spread, value + spread, n)
    return Estimate(value, np.random.default_rng(next(_draws)).permutation(replicates))


def point(value: float) -> Estimate:
    return Estimate(value, np.array([]))


ZERO = around(0.0, 0.0)


# ----------------------------------------------------------------------------- exceeds


@pytest.mark.parametrize("difference, half_width, verdict", [
    (5.0, 2.0, REPRODUCED),  # interval above 0
    (1.0, 3.0, NOT_REPRODUCED),  # point above 0, interval straddles 0
    (-1.0, 3.0, NOT_REPRODUCED),
    (-5.0, 2.0, CONTRADICTED),  # interval below 0
])
def test_exceeds_decides_on_the_interval_of_the_difference(difference, half_width, verdict):
    b = around(10.0, 1.0)
    a = Estimate(b.value + difference, b.replicates + around(difference, half_width).replicates)
    assert claims.exceeds(a, b).verdict == verdict


def test_exceeds_pairs_replicates():
    # Each estimate alone is wide, but replicate r of a is always 1 above replicate r of b.
    b = around(50.0, 20.0)
    a = Estimate(51.0, b.replicates + 1.0)
    result = claims.exceeds(a, b)
    assert result.verdict == REPRODUCED
    assert result.measured == "51.0 vs 50.0, difference 1.00 [1.00, 1.00]"


def test_exceeds_against_a_number_and_the_interval_level():
    a = around(3.0, 2.5)
    assert claims.exceeds(a, 0.0).verdict == REPRODUCED
    assert claims.exceeds(a, 1.0).verdict == NOT_REPRODUCED
    assert claims.exceeds(a, 6.0).verdict == CONTRADICTED
    assert "vs 1.00" in claims.exceeds(a, 1.0).measured
    # A narrower level can decide what the 95% interval cannot.
    assert claims.exceeds(around(2.0, 3.0), 0.0, level=0.95).verdict == NOT_REPRODUCED
    assert claims.exceeds(around(2.0, 3.0), 0.0, level=0.2).verdict == REPRODUCED


def test_no_replicates_means_not_tested_whatever_the_point_values():
    for result in (claims.exceeds(point(10.0), point(1.0)), claims.exceeds(point(10.0), 0.0),
                   claims.similar(point(1.0), point(1.0), 5.0), claims.at_least(point(99.0), 50.0),
                   claims.at_most(point(1.0), 50.0), claims.increasing([point(1.0), point(2.0)])):
        assert result.verdict == NOT_TESTED
        assert "no bootstrap replicates" in result.note
    assert claims.exceeds(Estimate(np.nan, np.full(401, np.nan)), ZERO).verdict == NOT_TESTED
    assert claims.exceeds(around(5.0, 1.0), point(0.0)).verdict == NOT_TESTED  # one side without replicates


# ----------------------------------------------------------------------------- similar


def test_a_wide_interval_containing_zero_is_not_similarity():
    result = claims.similar(around(0.5, 10.0), ZERO, margin=3.0)
    assert result.verdict == NOT_REPRODUCED
    assert "margin +-3.00" in result.measured


def test_a_narrow_interval_inside_the_margin_is_similarity():
    assert claims.similar(around(1.0, 1.5), ZERO, margin=3.0).verdict == REPRODUCED
    # Not centred on zero, but still wholly inside the margin.
    assert claims.similar(around(-2.0, 0.9), ZERO, margin=3.0).verdict == REPRODUCED


@pytest.mark.parametrize("difference, half_width, verdict", [
    (2.5, 1.0, NOT_REPRODUCED),  # crosses +margin
    (6.0, 1.0, CONTRADICTED),  # wholly above +margin
    (-6.0, 1.0, CONTRADICTED),  # wholly below -margin
    (0.0, 4.0, NOT_REPRODUCED),  # covers the whole margin and more
])
def test_similar_is_an_equivalence_test(difference, half_width, verdict):
    assert claims.similar(around(difference, half_width), ZERO, margin=3.0).verdict == verdict


def test_similar_needs_a_positive_margin():
    with pytest.raises(ValueError, match="margin"):
        claims.similar(ZERO, ZERO, margin=0.0)


# ----------------------------------------------------------------------------- thresholds


def test_at_least_and_at_most_compare_the_whole_interval_with_a_number():
    assert claims.at_least(around(60.0, 5.0), 50.0).verdict == REPRODUCED
    assert claims.at_least(around(52.0, 5.0), 50.0).verdict == NOT_REPRODUCED
    assert claims.at_least(around(40.0, 5.0), 50.0).verdict == CONTRADICTED
    assert claims.at_most(around(2.0, 1.0), 5.0).verdict == REPRODUCED
    assert claims.at_most(around(4.5, 1.0), 5.0).verdict == NOT_REPRODUCED
    assert claims.at_most(around(8.0, 1.0), 5.0).verdict == CONTRADICTED
    assert claims.at_least(around(60.0, 5.0), 50.0).measured == "60.0 [55.0, 65.0] (at least 50.0)"


# ----------------------------------------------------------------------------- several values


def test_increasing_needs_every_step_to_rise():
    assert claims.increasing([around(1, 0.1), around(2, 0.1), around(3, 0.1)]).verdict == REPRODUCED
    # One step only plausibly rises: inconclusive.
    assert claims.increasing([around(1, 0.1), around(2, 0.1), around(2.05, 0.1)]).verdict == NOT_REPRODUCED
    # One step clearly falls: contradicted, even though the others rise.
    falls = claims.increasing({"r=0.1": around(1, 0.1), "r=0.3": around(3, 0.1), "r=0.5": around(2, 0.1)})
    assert falls.verdict == CONTRADICTED
    assert "r=0.3 -> r=0.5" in falls.measured
    assert claims.decreasing([around(3, 0.1), around(2, 0.1), around(1, 0.1)]).verdict == REPRODUCED
    assert claims.decreasing([around(1, 0.1), around(2, 0.1)]).verdict == CONTRADICTED
    with pytest.raises(ValueError, match="two values"):
        claims.increasing([around(1, 0.1)])


def test_all_of_and_any_of_combine_verdicts():
    yes, maybe, no, untested = (claims.Result(v, v) for v in (REPRODUCED, NOT_REPRODUCED, CONTRADICTED, NOT_TESTED))
    assert claims.all_of([yes, yes]).verdict == REPRODUCED
    assert claims.all_of([yes, maybe]).verdict == NOT_REPRODUCED
    assert claims.all_of([yes, untested, maybe]).verdict == NOT_TESTED
    assert claims.all_of([untested, no]).verdict == CONTRADICTED
    assert claims.any_of([no, yes]).verdict == REPRODUCED
    assert claims.any_of([no, maybe]).verdict == NOT_REPRODUCED
    assert claims.any_of([no, untested]).verdict == NOT_TESTED
    assert claims.any_of([no, no]).verdict == CONTRADICTED
    assert claims.all_of({"kinetics": yes, "ssv2": maybe}).measured == "kinetics: reproduced; ssv2: not reproduced"
    # Beyond three parts: how many hold, and the first that do not.
    many = claims.all_of({f"stage {i}": yes for i in range(5)} | {"stage 5": maybe})
    assert many.measured.startswith("5/6 hold; stage 5: not reproduced")


def test_settled_checks_every_epoch_from_the_given_one_against_the_last():
    shared = np.linspace(-5, 5, 401)  # the same resamples at every epoch: differences are paired

    def curve(*values):
        return {e: Estimate(v, v + shared) for e, v in enumerate(values)}

    assert claims.settled(curve(0, 20, 30, 31, 30), by=2, margin=3).verdict == REPRODUCED
    assert claims.settled(curve(0, 20, 30, 25, 30), by=2, margin=3).verdict == CONTRADICTED
    assert claims.settled(curve(0, 20, 30, 31, 30), by=1, margin=3).verdict == CONTRADICTED
    wobbly = {e: Estimate(v, v + np.linspace(-5, 5, 401) * (e != 4)) for e, v in enumerate((0, 20, 30, 31, 30))}
    assert claims.settled(wobbly, by=2, margin=3).verdict == NOT_REPRODUCED
    assert claims.settled(curve(0, 20), by=1, margin=3).verdict == NOT_TESTED  # nothing left to check


# ----------------------------------------------------------------------------- making estimates


def test_one_seed_is_its_own_estimate_and_several_resample_seeds_then_clips():
    one = around(10.0, 1.0)
    assert claims.combine_seeds([one]) is one
    # Three seeds that disagree (0, 10, 20), each with a narrow interval over clips.
    seeds = [around(v, 0.5, n=1000) for v in (0.0, 10.0, 20.0)]
    combined = claims.combine_seeds(seeds, seed=1)
    assert combined.value == pytest.approx(10.0)
    lo, hi = combined.interval()
    assert lo < 3.0 and hi > 17.0  # the spread between seeds is in the interval
    # A replicate is a mean of resampled seeds' own clip replicates.
    assert set(np.round(combined.replicates * 3 / 10)).issubset(set(range(-1, 8)))
    clips_only_lo, clips_only_hi = Estimate(10.0, np.mean([s.replicates for s in seeds], 0)).interval()
    assert hi - lo > 5 * (clips_only_hi - clips_only_lo)
    with pytest.raises(ValueError, match="different numbers"):
        claims.combine_seeds([around(1, 1, n=10), around(1, 1, n=11)])


def test_combined_seeds_stay_paired_for_differences():
    a = [around(v, 3.0, n=500) for v in (0.0, 10.0, 20.0)]
    b = [Estimate(e.value - 1.0, e.replicates - 1.0) for e in a]  # always 1 below, seed by seed
    difference = claims.combine_seeds(a, seed=3) - claims.combine_seeds(b, seed=3)
    assert difference.interval() == pytest.approx((1.0, 1.0))
    assert claims.exceeds(claims.combine_seeds(a, seed=3), claims.combine_seeds(b, seed=3)).verdict == REPRODUCED


def test_bootstrap_and_interval_width():
    data = np.arange(100, dtype=float)
    mean = claims.bootstrap(lambda i: data[i].mean(), len(data), replicates=500, seed=0)
    assert mean.value == pytest.approx(49.5)
    lo, hi = mean.interval()
    assert 40 < lo < 49.5 < hi < 59
    wide, narrow = around(0.0, 10.0, n=1000), around(0.0, 1.0, n=1000)
    assert claims.interval_width(wide).value == pytest.approx(20.0, rel=0.01)
    assert claims.exceeds(claims.interval_width(wide), claims.interval_width(narrow)).verdict == REPRODUCED
    assert claims.interval_width(point(1.0)).replicates.size == 0


def test_correlation_is_computed_on_every_replicate():
    rising = [around(v, 0.1, n=200) for v in (1.0, 2.0, 3.0, 4.0)]
    rho = claims.correlation([0.1, 0.3, 0.5, 0.7], rising)
    assert rho.value == pytest.approx(1.0) and rho.interval() == pytest.approx((1.0, 1.0))
    assert claims.exceeds(rho, 0.0).verdict == REPRODUCED
    noisy = [Estimate(v, v + np.random.default_rng(i).normal(0, 5, 200)) for i, v in enumerate((1.0, 2.0, 3.0))]
    assert claims.exceeds(claims.correlation([1, 2, 3], noisy), 0.0).verdict == NOT_REPRODUCED
    pearson = claims.correlation([1, 2, 4], [around(v, 0.0, n=5) for v in (1.0, 2.0, 3.0)], method="pearson")
    assert pearson.value == pytest.approx(np.corrcoef([1, 2, 4], [1, 2, 3])[0, 1])
    with pytest.raises(ValueError, match="as many values"):
        claims.correlation([1, 2], rising)


def test_competent_is_halfway_between_chance_and_the_best():
    assert claims.competent(0.55, chance=0.1, best_acc=1.0)
    assert not claims.competent(0.54, chance=0.1, best_acc=1.0)
    assert not claims.competent(0.1, chance=0.1, best_acc=0.1)  # at chance is never competent


# ----------------------------------------------------------------------------- the board


def test_board_rows_carry_chapter_paper_verdict_seeds_and_note():
    board = Board(chapter="02", seeds=1)
    board.exceeds("A beats B", around(5, 1), ZERO, paper="A > B")
    board.similar("A is like B", around(0.5, 1), ZERO, 3.0, paper="about equal", seeds=3, note="see Fig. 3")
    board.not_tested("A transfers to real video", "yes", "no real video here")
    frame = board.frame()
    assert list(frame.columns) == list(claims.COLUMNS)
    assert frame["verdict"].tolist() == [REPRODUCED, REPRODUCED, NOT_TESTED]
    assert frame["seeds"].tolist() == [1, 3, 1]
    assert frame["chapter"].eq("02").all()
    assert frame.loc[1, "note"] == "see Fig. 3"
    assert frame.loc[2, "note"] == "no real video here"


def test_a_failed_gate_turns_a_claim_not_tested_and_says_why():
    board = Board(chapter="03")
    board.gate("dynamics", ok=False, why="the testbed check failed: no dynamic units on ssv2")
    board.competence({"slowonly": 0.9, "fastonly": 0.2}, chance=0.1)
    kept = board.exceeds("FastOnly > SlowOnly", around(5, 1), ZERO, paper="yes", needs=["dynamics", "fastonly"])
    assert kept.verdict == NOT_TESTED
    assert "testbed check failed" in kept.note and "fastonly not competent" in kept.note
    assert "5.00 vs 0.00" in kept.measured  # the measurement is still shown
    assert board.exceeds("accuracy claim", around(5, 1), ZERO, paper="yes", needs="slowonly").verdict == REPRODUCED
    ungated = board.exceeds("ungated", around(5, 1), ZERO, paper="yes", needs="flow")
    assert ungated.verdict == REPRODUCED and "check 'flow' not run" in ungated.note
    board.gate("dynamics", ok=True)
    assert board.exceeds("again", around(5, 1), ZERO, paper="yes", needs="dynamics").verdict == REPRODUCED


def test_competence_gates_accept_a_series_and_a_given_best():
    board = Board(chapter="02")
    passed = board.competence(pd.Series({"i3d": 0.8, "c2d": 0.3}), chance=0.1)
    assert passed == {"i3d": True, "c2d": False}
    assert board.competence({"c2d": 0.3}, chance=0.1, best=0.4) == {"c2d": True}
    board.competence({"tao": 0.4, "davis": 0.6}, 0.3, metric="mIoU", baseline="the centre prior")
    assert board.gates["tao"][1] == ("tao not competent: mIoU 0.40 is below 0.45, halfway from the centre prior "
                                     "(0.30) to the best model (0.60)")


def test_show_carries_the_rows_for_the_scorecard():
    board = Board(chapter="05", seeds=2)
    board.at_least("mostly static", around(70, 5), 50, paper="static + joint > 50%")
    board.at_most("few dynamic", around(40, 5), 5, paper="< 5%")
    data, metadata = board.show()._repr_mimebundle_()
    assert "background-color: #d9f2d9" in data["text/html"] and "background-color: #f8d7d3" in data["text/html"]
    assert "mostly static" in data["text/plain"]
    assert set(data) == {"text/html", "text/plain"}  # nothing a page builder does not know
    # The rows survive a trip through JSON, as in an executed notebook.
    output = {"output_type": "execute_result", "data": data, "metadata": metadata}
    notebook = {"cells": [{"cell_type": "markdown", "source": "x"},
                          {"cell_type": "code", "outputs": [json.loads(json.dumps(output))]}]}
    rows = claims.notebook_rows(notebook)
    assert [r["verdict"] for r in rows] == [REPRODUCED, CONTRADICTED]
    assert rows[0] == board.rows[0]
    assert claims.counts(pd.DataFrame(rows)).to_dict() == {REPRODUCED: 1, NOT_REPRODUCED: 0, CONTRADICTED: 1,
                                                           NOT_TESTED: 0}
    assert claims.notebook_rows({"cells": [{"cell_type": "code", "outputs": []}]}) == []


def test_html_table_escapes_and_colours_the_verdict():
    frame = pd.DataFrame([{"claim": "a < b & c", "verdict": REPRODUCED}])
    table = claims.html_table(frame)
    assert "a &lt; b &amp; c" in table and 'style="background-color: #d9f2d9"' in table
