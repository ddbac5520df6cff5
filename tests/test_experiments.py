"""Tests of stdyn.experiments: when training curves settle, dynamic-unit ratios, seed means and
accuracy on common and rare classes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stdyn.core.estimator import Estimate, UnitwiseResult, unitwise
from stdyn.experiments import (
    accuracy_by_frequency,
    accuracy_estimate,
    dynamic_ratio,
    mean_estimate,
    removal_area,
    settling_epoch,
    settling_table,
    style_accuracy,
)


def _estimate(value: float, lo: float, hi: float) -> Estimate:
    """An estimate whose 95% percentile interval is about [lo, hi]."""
    return Estimate(value, np.linspace(lo, hi, 401))


# ----------------------------------------------------------------------------- settling_epoch


def test_a_curve_settles_after_its_last_excursion_outside_the_band():
    curve = pd.Series([10.0, 30.0, 21.0, 19.5, 25.0, 20.5, 20.0], index=range(7))
    assert settling_epoch(curve, tolerance=1.0) == 5  # 25.0 at epoch 4 is the last value out of 20 +- 1
    assert settling_epoch(curve, tolerance=5.0) == 2  # 30.0 at epoch 1 is the last one out of 20 +- 5
    assert settling_epoch(curve, tolerance=20.0) == 0


class _Final:
    """A last-checkpoint survey whose every layer-wise percent is 20 with interval [18, 22]."""

    def layerwise(self, model, world, layer):
        return self

    def percent(self, factor):
        return _estimate(20.0, 18.0, 22.0)


def test_settling_table_finds_each_curves_settling_epoch():
    rows = []
    for layer, values in (("fusion2", [5.0, 30.0, 21.0, 20.0]), ("fusion5", [20.5, 19.0, 20.0, 20.0])):
        for epoch, value in enumerate(values):
            rows.append({"model": "matnet", "world": "davis", "layer": layer, "factor": "dynamic", "epoch": epoch,
                         "percent": value})
    curves = pd.DataFrame(rows)
    table = settling_table(curves, _Final(), ["layer", "world", "factor"], tolerance=1.0)
    assert table["layer"].tolist() == ["fusion2", "fusion5"]
    assert table["settled at epoch"].tolist() == [2, 0]
    assert table["moved (points)"].tolist() == [25.0, 1.5]
    with pytest.raises(ValueError, match="do not single out one curve"):
        settling_table(curves, _Final(), ["world", "factor"])


def test_the_band_is_the_final_interval_widened_to_the_tolerance():
    curve = pd.Series([0.0, 14.0, 26.0, 21.0, 20.0], index=[0, 2, 4, 6, 8])
    assert settling_epoch(curve, _estimate(20.0, 15.0, 27.0)) == 4  # 14 is below the interval
    assert settling_epoch(curve, _estimate(20.0, 15.0, 27.0), tolerance=6.5) == 2  # 20 - 6.5 < 14
    assert settling_epoch(curve, _estimate(20.0, 18.5, 21.5), tolerance=0.5) == 6  # 26 is out
    # A narrow interval does not narrow the tolerance band.
    assert settling_epoch(curve, _estimate(20.0, 19.9, 20.1), tolerance=5.0) == 6


def test_the_last_epoch_always_counts_as_settled():
    curve = pd.Series([1.0, 2.0, 3.0, 4.0], index=[1, 2, 3, 4])
    assert settling_epoch(curve) == 4
    assert settling_epoch(pd.Series([7.0], index=[3])) == 3


@pytest.mark.parametrize("curve, tolerance, message", [
    (pd.Series([], dtype=float), 0.0, "at least one epoch"),
    (pd.Series([1.0, 2.0], index=[3, 1]), 0.0, "ascending"),
    (pd.Series([1.0, np.nan, 2.0]), 0.0, "NaN"),
    (pd.Series([1.0, 2.0]), -1.0, "tolerance"),
])
def test_settling_epoch_rejects_bad_curves(curve, tolerance, message):
    with pytest.raises(ValueError, match=message):
        settling_epoch(curve, tolerance=tolerance)


# ----------------------------------------------------------------------------- dynamic_ratio, mean_estimate


def test_dynamic_ratio_counts_dynamic_over_dynamic_and_static_units_in_every_replicate():
    rng = np.random.default_rng(0)
    n, channels = 200, 12
    shared = rng.normal(size=(n, channels))
    noise = lambda: rng.normal(size=(n, channels))  # noqa: E731
    # Channels 0-5 carry the motion (dynamic pairs agree), 6-8 the appearance (static pairs agree),
    # 9-11 neither.
    dynamic_strength = np.r_[np.full(6, 3.0), np.zeros(6)]
    static_strength = np.r_[np.zeros(6), np.full(3, 3.0), np.zeros(3)]
    pairs = {
        "dynamic": (shared * dynamic_strength + noise(), shared * dynamic_strength + noise()),
        "static": (shared * static_strength + noise(), shared * static_strength + noise()),
    }
    result = unitwise(pairs, bootstrap=50, seed=1)
    assert result.counts["dynamic"] == 6 and result.counts["static"] == 3
    ratio = dynamic_ratio(result)
    assert ratio.value == pytest.approx(100 * 6 / 9)
    counts = result.replicate_counts
    expected = 100 * counts[:, 0] / (counts[:, 0] + counts[:, 1])
    np.testing.assert_allclose(ratio.replicates, expected)


def test_dynamic_ratio_without_static_or_dynamic_units_is_nan():
    result = UnitwiseResult("x", 0.5, {"static": 4, "dynamic": 4}, {"static": np.zeros(2), "dynamic": np.zeros(2)},
                            np.array(["residual", "joint"], dtype=object), np.array([[0, 0, 1, 1, 0]], dtype=float))
    ratio = dynamic_ratio(result)
    assert np.isnan(ratio.value) and np.isnan(ratio.replicates).all()


def test_mean_estimate_averages_values_and_replicates():
    a, b = Estimate(10.0, np.array([8.0, 12.0, 10.0])), Estimate(20.0, np.array([18.0, 26.0, 16.0]))
    mean = mean_estimate([a, b])
    assert mean.value == 15.0
    np.testing.assert_allclose(mean.replicates, [13.0, 19.0, 13.0])
    with pytest.raises(ValueError, match="at least one"):
        mean_estimate([])
    with pytest.raises(ValueError, match="replicates"):
        mean_estimate([a, Estimate(1.0, np.zeros(5))])


# ----------------------------------------------------------------------------- removal_area


def _removal_table(rng: np.random.Generator, n: int = 200) -> pd.DataFrame:
    """Per-clip correctness of a removal experiment: ks 0, 2, 4; one static ranking, three random draws."""
    full = rng.random(n) < 0.9
    rows = []
    for k, keep in ((0, 1.0), (2, 0.6), (4, 0.2)):
        rows.append({"kind": "static", "k": k, "draw": 0, "correct": full & (rng.random(n) < keep)})
        for draw in range(3):
            rows.append({"kind": "random", "k": k, "draw": draw, "correct": full & (rng.random(n) < 0.85 + 0.05 * draw)})
    return pd.DataFrame(rows)


def test_removal_area_is_the_mean_top1_over_the_removed_ks_with_paired_replicates():
    table = _removal_table(np.random.default_rng(0))
    areas = removal_area(table, [2, 4], replicates=300, seed=5)
    assert set(areas) == {"static", "random"}
    static = table[(table.kind == "static") & table.k.isin([2, 4])]["correct"]
    assert areas["static"].value == pytest.approx(100 * np.mean([c.mean() for c in static]))
    random_runs = table[(table.kind == "random") & table.k.isin([2, 4])]
    assert areas["random"].value == pytest.approx(100 * np.mean([c.mean() for c in random_runs["correct"]]))
    assert len(areas["static"].replicates) == len(areas["random"].replicates) == 300
    # The same clip resamples for every kind: a kind against itself differs by exactly 0.
    again = removal_area(table, [2, 4], replicates=300, seed=5)
    np.testing.assert_array_equal(again["static"].replicates, areas["static"].replicates)
    # The random draws differ (85, 90, 95% kept): resampling draws widens the interval beyond clips alone.
    one_draw = removal_area(table[table.draw == 0], [2, 4], replicates=300, seed=5)["random"]
    assert np.ptp(areas["random"].interval()) > np.ptp(one_draw.interval())
    with pytest.raises(ValueError, match="no k = \\[6\\]"):
        removal_area(table, [2, 6])


# ----------------------------------------------------------------------------- accuracy_by_frequency


def test_accuracy_by_frequency_averages_per_class_accuracy_over_common_and_rare_classes():
    # Three classes, trained on 50, 30 and 5 clips; val clips: class 0 (4 clips, 3 right),
    # class 1 (2 clips, 0 right), class 2 (2 clips, 2 right).
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    correct = np.array([1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    result = accuracy_by_frequency(correct, labels, [50, 30, 5], ks=[1, 2, 3], replicates=200, seed=3)
    assert result["most", 1].value == pytest.approx(75.0)
    assert result["most", 2].value == pytest.approx((75.0 + 0.0) / 2)
    assert result["least", 1].value == pytest.approx(100.0)
    assert result["least", 2].value == pytest.approx((100.0 + 0.0) / 2)
    assert result["most", 3].value == result["least", 3].value == pytest.approx((75 + 0 + 100) / 3)
    assert len(result["most", 1].replicates) == 200
    lo, hi = result["most", 1].interval()
    assert 0.0 <= lo <= 75.0 <= hi <= 100.0


def test_frequency_is_from_training_counts_not_from_the_held_out_labels():
    labels = np.array([0, 1, 1, 1, 2, 2])
    correct = np.array([0, 1, 1, 1, 1, 0], dtype=bool)
    # Class 0 is the most common in training although it has the fewest held-out clips.
    result = accuracy_by_frequency(correct, labels, [100, 10, 1], ks=[1], replicates=10)
    assert result["most", 1].value == 0.0
    assert result["least", 1].value == 50.0


def test_accuracy_by_frequency_resamples_like_accuracy_estimate_so_models_pair():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    first, second = rng.random(300) < 0.6, rng.random(300) < 0.5
    # With one class, the per-class mean is the plain accuracy: the same resamples as accuracy_estimate.
    only = accuracy_by_frequency(first, np.zeros(300, dtype=int), [1], ks=[1], replicates=100, seed=7)["most", 1]
    plain = accuracy_estimate(first, replicates=100, seed=7)
    np.testing.assert_allclose(only.replicates, plain.replicates)
    # Paired differences of two models on the same clips are narrower than unpaired ones.
    a = accuracy_by_frequency(first, labels, [4, 3, 2, 1], ks=[2], replicates=300, seed=1)["least", 2]
    b = accuracy_by_frequency(first | second, labels, [4, 3, 2, 1], ks=[2], replicates=300, seed=1)["least", 2]
    b_other = accuracy_by_frequency(first | second, labels, [4, 3, 2, 1], ks=[2], replicates=300, seed=2)["least", 2]
    assert np.std((b - a).replicates) < np.std(b_other.replicates - a.replicates)


def test_accuracy_by_frequency_leaves_out_classes_without_clips():
    labels = np.array([0, 0, 1])
    correct = np.array([1, 0, 1], dtype=bool)
    result = accuracy_by_frequency(correct, labels, [5, 3, 1], ks=[1, 2], replicates=50)
    assert np.isnan(result["least", 1].value)  # class 2 has no held-out clip
    assert result["least", 2].value == 100.0  # classes 2 and 1: only class 1 counts


@pytest.mark.parametrize("kwargs, message", [
    ({"correct": np.ones(3, bool), "labels": np.zeros(2, int)}, "same length"),
    ({"labels": np.array([0, 5, 1])}, r"labels must lie in \[0, 3\)"),
    ({"ks": [0]}, r"k must lie in \[1, 3\]"),
    ({"ks": [4]}, r"k must lie in \[1, 3\]"),
])
def test_accuracy_by_frequency_rejects_bad_input(kwargs, message):
    arguments = {"correct": np.ones(3, bool), "labels": np.array([0, 1, 2]), "class_counts": [3, 2, 1], "ks": [1],
                 **kwargs}
    with pytest.raises(ValueError, match=message):
        accuracy_by_frequency(**arguments)


# ----------------------------------------------------------------------------- style_accuracy


def test_style_accuracy_scores_the_clips_as_they_are_and_in_every_style():
    import torch
    from torch import nn

    from stdyn.core.stylize import STYLES, stylize

    torch.manual_seed(0)
    clips = torch.rand(12, 3, 4, 8, 8)
    # Class 1 where the red channel is brighter than the blue one: a colour cue that styles change.
    labels = (clips[:, 0].mean((1, 2, 3)) > clips[:, 2].mean((1, 2, 3))).long()

    class ColourModel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            red_minus_blue = x[:, 0].mean((1, 2, 3)) - x[:, 2].mean((1, 2, 3))
            return torch.stack([-red_minus_blue, red_minus_blue], dim=1)

    dataset = list(zip(clips, labels))
    accuracy = style_accuracy(ColourModel(), dataset, batch_size=5)
    assert list(accuracy.index) == ["original", *STYLES]
    assert accuracy["original"] == 100.0
    for style in STYLES:
        styled = stylize(clips, style)
        expected = 100.0 * (ColourModel()(styled).argmax(1) == labels).float().mean().item()
        assert accuracy[style] == pytest.approx(expected)
    assert style_accuracy(ColourModel(), dataset, styles=["pencil"]).index.tolist() == ["original", "pencil"]


def test_a_zoo_models_style_accuracy_is_computed_once_and_then_read_from_beside_its_checkpoints(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from stdyn import experiments
    from stdyn.experiments import surveys
    from stdyn.training import zoo

    calls = []

    def counting_style_accuracy(model, dataset, **options):
        calls.append(dataset)
        return pd.Series({"original": 90.0, "thermal": 70.0 + len(calls)}, name="top-1 (%)")

    monkeypatch.setattr(surveys, "style_accuracy", counting_style_accuracy)
    monkeypatch.setattr(zoo, "measure_set", lambda world, profile, progress: f"{world} clips")
    entry = SimpleNamespace(model=None, run_dir=tmp_path / "entry", device="cpu")
    entry.run_dir.mkdir()
    first = experiments.entry_style_accuracy(entry, "ssv2", "smoke")
    again = experiments.entry_style_accuracy(entry, "ssv2", "smoke")
    assert calls == ["ssv2 clips"]
    pd.testing.assert_series_equal(first, again)
    assert first["thermal"] == 71.0
    assert experiments.entry_style_accuracy(entry, "kinetics", "smoke")["thermal"] == 72.0  # another world
    assert len(calls) == 2


# ----------------------------------------------------------------------------- stage labels


def test_stage_numbers_count_all_of_a_models_stages_whichever_are_measured():
    from stdyn.experiments import last_layers, stage_labels
    from stdyn.models import create

    slowfast = create("slowfast", 4)
    assert last_layers(slowfast) == ["slow.stage5", "fast.stage5"]
    labels = stage_labels(slowfast, ["fast.stage5", "slow.stage2"])
    assert labels.to_dict("records") == [{"layer": "fast.stage5", "branch": "fast", "stage": 5},
                                         {"layer": "slow.stage2", "branch": "slow", "stage": 2}]
    i3d = create("i3d", 4)
    assert last_layers(i3d) == ["stage5"]
    assert stage_labels(i3d, ["stage5"])["stage"].tolist() == [5]


# ----------------------------------------------------------------------------- the StaticDropout study


def test_variant_runs_score_each_variant_and_seed_means_pair_them(monkeypatch):
    from types import SimpleNamespace

    import torch

    from stdyn.experiments import static_dropout, surveys
    from stdyn.training import zoo

    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 6))
    units = unitwise({"static": (z, z + 0.1 * rng.normal(size=z.shape)),
                      "dynamic": (z, rng.normal(size=z.shape))}, bootstrap=50)
    val = SimpleNamespace(labels=torch.tensor([0, 0, 1, 1]))
    train = SimpleNamespace(class_counts=np.array([30, 3]))
    monkeypatch.setattr(zoo, "datasets", lambda world, profile, world_kwargs=None: (train, val))
    monkeypatch.setattr(surveys, "measure_entry",
                        lambda entry, world, profile, layers, seed: SimpleNamespace(unitwise=lambda layer, t: units))
    correct = {False: np.array([1, 1, 1, 0]), True: np.array([1, 0, 0, 0])}
    monkeypatch.setattr(surveys, "correct_predictions",
                        lambda entry, dataset, shuffle_frames=False: correct[shuffle_frames])
    entries = {(world, 10, variant, s): f"{variant}/{s}" for world in ("ssv2", "rare") for variant in ("none", "SD 0.3")
               for s in (0, 1)}
    runs = static_dropout.variant_runs(entries, {"none": None, "SD 0.3": 0.3}, "smoke", compositional="rare",
                                       top_k=[1])
    assert len(runs) == 8 and runs["entry"].tolist() == list(entries.values())
    first = runs.iloc[0]
    assert first.top1.value == pytest.approx(75.0) and first.relative.value == pytest.approx(100 * 50 / 75)
    assert first.ratio.value == pytest.approx(100 * units.dynamic_ratio)
    assert first.by_class == {} and runs.iloc[-1].by_class[("least", 1)].value == pytest.approx(50.0)
    study = static_dropout.seed_means(runs)
    assert len(study) == 4 and study["rate"].tolist() == [0.0, 0.3, 0.0, 0.3]
    assert study.iloc[0].top1.value == pytest.approx(75.0)  # both seeds scored the same
