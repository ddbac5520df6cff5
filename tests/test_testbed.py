"""The testbed checks: the single-frame classifier reads kinetics' layout and not ssv2's frames,
and the checks pass and fail on the figures they are given."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from stdyn.core import stylize
from stdyn.experiments import testbed
from stdyn.training import profiles

torch.set_num_threads(1)

# Small enough for seconds, large enough for a frame classifier to read a 32 px layout.
FRAMES = profiles.get("smoke").replace(name="frames-test", frames=4, size=32, n_train=600, n_val=200,
                                       n_measure=100, epochs=6, batch_size=32)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))


def test_a_single_frame_reveals_kinetics_layout_even_restyled_but_not_an_ssv2_class():
    kinetics = testbed.single_frame_accuracy("kinetics", FRAMES)
    ssv2 = testbed.single_frame_accuracy("ssv2", FRAMES)
    assert list(kinetics.index) == ["original", *stylize.STYLES]
    assert kinetics["original"] >= 0.4, kinetics
    assert kinetics.drop("original").mean() >= 0.3, kinetics
    assert ssv2["original"] <= 2 * 0.1 + 0.05, ssv2
    again = testbed.single_frame_accuracy("kinetics", FRAMES)  # from the cache, identical
    assert again.equals(kinetics)


def _figures(clean: float, styled: float, dynamic_lo: float, c2d: float) -> pd.DataFrame:
    rows = []
    for model in ("slowonly", "i3d"):
        rows.append({"model": model, "world": "ssv2", "layer": "stage5", "clean": clean, "style_mean": styled,
                     "retention": styled / clean, "dynamic_units": dynamic_lo + 5, "dynamic_lo": dynamic_lo,
                     "dynamic_hi": dynamic_lo + 10})
    rows.append({"model": "c2d", "world": "ssv2", "layer": "stage5", "clean": c2d, "style_mean": c2d,
                 "retention": 1.0, "dynamic_units": 0.0, "dynamic_lo": 0.0, "dynamic_hi": 0.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("clean, styled, dynamic_lo, c2d, frames, ok, dynamics_ok, failed", [
    (0.95, 0.80, 2.0, 0.40, (0.6, 0.5, 0.15), True, True, set()),
    (0.95, 0.50, 2.0, 0.40, (0.6, 0.5, 0.15), False, False, {"style retention"}),
    (0.95, 0.80, 0.0, 0.40, (0.6, 0.5, 0.15), False, False, {"dynamic units"}),
    (0.80, 0.70, 2.0, 0.40, (0.6, 0.5, 0.15), False, True, {"clean top-1"}),
    (0.95, 0.80, 2.0, 0.70, (0.6, 0.5, 0.15), False, True, {"no order, no ssv2"}),
    (0.95, 0.80, 2.0, 0.40, (0.6, 0.3, 0.15), False, True, {"single frame reveals the class"}),
    (0.95, 0.80, 2.0, 0.40, (0.6, 0.5, 0.30), False, True, {"single frame hides the class"}),
])
def test_checks_pass_and_fail_on_their_figures(monkeypatch, clean, styled, dynamic_lo, c2d, frames, ok,
                                               dynamics_ok, failed):
    kinetics_clean, kinetics_styled, ssv2_clean = frames
    monkeypatch.setattr(testbed, "model_figures", lambda *a, **k: _figures(clean, styled, dynamic_lo, c2d))

    def single_frame(world, *a, **k):
        values = ([kinetics_clean] + [kinetics_styled] * 4) if world == "kinetics" else [ssv2_clean] * 5
        return pd.Series(values, index=["original", *stylize.STYLES])

    monkeypatch.setattr(testbed, "single_frame_accuracy", single_frame)
    bed = testbed.validate("smoke", models=["slowonly", "i3d"])
    assert bed.ok is ok and bed.dynamics_ok is dynamics_ok
    assert set(bed.checks.loc[~bed.checks["passed"], "check"]) == failed
    assert len(bed.failures()) == (~bed.checks["passed"]).sum()
    assert ("failed" in bed.banner().data) is not ok
    assert ("not tested" in bed.banner().data) is not dynamics_ok
    assert "#f8d7d3" in bed.styled_checks().to_html() or ok


def test_competence_bar_is_halfway_from_chance_to_the_best():
    assert testbed.competence_bar(0.1, 0.9) == pytest.approx(0.5)


def test_a_two_pathway_model_needs_dynamic_units_in_either_last_stage(monkeypatch):
    def figures(fast_lo: float, slow_lo: float) -> pd.DataFrame:
        return pd.DataFrame([{"model": "slowfast", "world": "ssv2", "layer": layer, "clean": 0.95, "style_mean": 0.9,
                              "retention": 0.95, "dynamic_units": lo + 1, "dynamic_lo": lo, "dynamic_hi": lo + 2}
                             for layer, lo in (("slow.stage5", slow_lo), ("fast.stage5", fast_lo))])

    for fast_lo, slow_lo, passed in ((0.0, 5.0, True), (0.0, 0.0, False)):
        monkeypatch.setattr(testbed, "model_figures", lambda *a, **k: figures(fast_lo, slow_lo))
        bed = testbed.validate("smoke", models=["slowfast"], orderless=None, single_frame_worlds=())
        row = bed.checks.set_index("check").loc["dynamic units"]
        assert bool(row["passed"]) is passed and "slow.stage5" in row["measured"] and "fast.stage5" in row["measured"]
