"""stdyn.experiments.vis: AP with bootstrap intervals, the constant-track baseline, the VIS
testbed, and a smoke-scale study end to end."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stdyn.core import stylize
from stdyn.core.estimator import Estimate
from stdyn.data.worlds import vis as vis_worlds
from stdyn.experiments import vis
from stdyn.tasks.vis import VisClips


@pytest.fixture(scope="module")
def clips():
    return VisClips(vis_worlds.make("ytvis", "val", 12, size=16, cache=False))


def _perfect(truths):
    return [{"masks": t["masks"], "scores": np.ones(len(t["labels"])), "labels": t["labels"]} for t in truths]


def test_perfect_tracks_score_ap_one_in_every_replicate(clips):
    truths = vis.ground_truth(clips)
    assert [len(t["labels"]) for t in truths] == clips.world.meta["instances"].tolist()
    scores = vis.ap_estimate(_perfect(truths), truths, replicates=20)
    assert scores["AP"] == scores["AP50"] == scores["AP75"] == 1.0
    assert np.all(scores["replicates"] == 1.0) and len(scores["replicates"]) == 20


def test_ap_replicates_are_paired_over_clips(clips):
    truths = vis.ground_truth(clips)
    half = _perfect(truths)
    for k in range(0, len(half), 2):  # every other clip predicts nothing
        half[k] = {"masks": np.zeros((0, *truths[k]["masks"].shape[1:]), bool), "scores": np.zeros(0),
                   "labels": np.zeros(0, np.int64)}
    a = vis.ap_estimate(half, truths, replicates=50, seed=3)
    b = vis.ap_estimate(_perfect(truths), truths, replicates=50, seed=3)
    assert 0.2 < a["AP"] < 0.8
    difference = Estimate(b["AP"], b["replicates"]) - Estimate(a["AP"], a["replicates"])
    assert difference.above(0.0)


def test_constant_tracks_fall_far_below_perfect_tracks(clips):
    train = VisClips(vis_worlds.make("ytvis", "train", 40, size=16, cache=False))
    table = vis.baseline_scores(train, {"ytvis": clips})
    assert table.columns.tolist() == ["world", "baseline", "AP", "AP50", "AP75"]
    assert 0.0 <= table.loc[0, "AP"] < 0.3


def _study(clean: float, styled: float, baseline: float) -> vis.VisStudy:
    estimates = {("m", "ytvis", vis.ORIGINAL): Estimate(clean, np.full(10, clean))}
    estimates.update({("m", "ytvis", s): Estimate(styled, np.full(10, styled)) for s in stylize.STYLES})
    scores = pd.DataFrame([{"model": "m", "world": "ytvis", "style": style, "AP": e.value, "AP50": e.value,
                            "AP75": e.value, "AP_lo": e.value, "AP_hi": e.value}
                           for (_, _, style), e in estimates.items()])
    baselines = pd.DataFrame([{"world": "ytvis", "baseline": "constant tracks", "AP": baseline, "AP50": 0.0,
                               "AP75": 0.0}])
    entry = SimpleNamespace(config={"world": "ytvis"})
    return vis.VisStudy("quick", {"m": entry}, {}, scores, baselines, estimates, [])


def test_the_vis_testbed_needs_ap_above_constant_tracks_and_style_retention():
    passed = vis.vis_testbed(_study(0.5, 0.4, 0.05))
    assert passed.ok and passed.checks["check"].tolist() == ["above constant tracks", "style retention"]
    low = vis.vis_testbed(_study(0.12, 0.1, 0.05))
    assert not low.ok and low.failures()[0].startswith("above constant tracks of m")
    fragile = vis.vis_testbed(_study(0.5, 0.2, 0.05))
    assert not fragile.ok and not fragile.dynamics_ok and "style retention" in fragile.failures()[0]
    table = passed.models
    assert table.loc[0, "retention"] == pytest.approx(0.8) and table.loc[0, "constant tracks AP"] == 0.05


def test_a_smoke_study_scores_and_measures_every_layer(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    study = vis.vis_study({"R50": ("vistr_r50", "ytvis"), "R101": ("vistr_r101", "ytvis")}, "smoke", progress=False)
    assert set(study.scores["style"]) == {vis.ORIGINAL, *stylize.STYLES}
    assert study.scores[["AP", "AP50", "AP75"]].apply(lambda c: c.between(0, 1)).all().all()
    layers = study.layers()
    assert set(layers["model"]) == {"R50", "R101"} and set(layers["layer"]) == {"encoder1", "decoder1"}
    units = study.units()
    assert units.groupby(["model", "layer"])["percent"].sum().round(6).eq(100).all()
    assert study.stage_names("R50", "decoder") == ["decoder1"]
    bias = study.static_bias("R50", "decoder1")
    assert bias.value == pytest.approx(study.layer_estimate("R50", "decoder1", "static").value
                                       - study.layer_estimate("R50", "decoder1", "dynamic").value)
    again = vis.vis_study({"R50": ("vistr_r50", "ytvis")}, "smoke", progress=False)  # from the caches
    assert again.ap("R50").value == study.ap("R50").value
    with pytest.raises(KeyError, match="no mask AP for 'R50' on 'ovis'"):
        study.ap("R50", "ovis")
