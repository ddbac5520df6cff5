"""stdyn.experiments.vos and .fusion: per-frame scores, clip-level mIoU, the joint/dynamic ratio and the AVOS testbed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stdyn.core.estimator import Estimate
from stdyn.data.worlds import vos as vos_worlds
from stdyn.experiments import fusion, vos
from stdyn.tasks import segmentation
from stdyn.tasks.vos import VosClips, VosFrames


class _FlowSaturation(nn.Module):
    """Foreground where the flow image is coloured: ignores the RGB frame."""

    def forward(self, rgb, flow_image):
        saturation = flow_image.max(1, keepdim=True).values - flow_image.min(1, keepdim=True).values
        return (saturation - 0.05) * 50


@pytest.fixture(scope="module")
def moca():
    return VosClips([vos_worlds.make("moca", "val", 4, size=16, cache=False)])


def test_frame_scores_are_the_iou_and_box_iou_of_each_frame(moca):
    model = _FlowSaturation()
    scores = vos.frame_scores(model, moca)
    frames = VosFrames(moca, exact=True)
    rgb, image, masks = (torch.stack(column) for column in zip(*(frames[k] for k in range(len(frames)))))
    prob = torch.sigmoid(model(rgb, image))[:, 0].numpy()
    assert scores["clip"].tolist() == frames.clip_index.tolist()
    np.testing.assert_allclose(scores["iou"], segmentation.iou(prob > 0.5, masks[:, 0].numpy() > 0.5))
    boxes = segmentation.mask_to_box(masks[:, 0].numpy() > 0.5, largest_component=False)
    expected, _ = segmentation.moca_box_scores(prob, boxes, "locomotion")
    np.testing.assert_allclose(scores["box_iou"], expected["box_iou"])
    assert 0 < scores["iou"].mean() < 1
    restyled = vos.frame_scores(model, moca, style="comic")  # this model never looks at the frame
    pd.testing.assert_frame_equal(scores, restyled)


def test_clip_miou_is_the_mean_of_clip_means_with_paired_replicates():
    frames = pd.DataFrame({"clip": [0, 0, 0, 1], "iou": [1.0, 1.0, 0.4, 0.0]})
    estimate = vos.clip_miou(frames, replicates=200, seed=3)
    assert estimate.value == pytest.approx(0.4)  # (0.8 + 0.0) / 2, not 2.4 / 4
    shifted = vos.clip_miou(frames.assign(iou=frames["iou"] + 0.1), replicates=200, seed=3)
    np.testing.assert_allclose(shifted.replicates - estimate.replicates, 0.1)  # the same clips drawn


class _Units:
    def __init__(self, joint: float, dynamic: np.ndarray, joint_replicates: np.ndarray, dynamic_value: float):
        self._values = {"joint": Estimate(joint, joint_replicates), "dynamic": Estimate(dynamic_value, dynamic)}

    def percent(self, category: str) -> Estimate:
        return self._values[category]


def test_joint_to_dynamic_divides_replicate_by_replicate():
    units = _Units(20.0, np.array([10.0, 0.0, 40.0]), np.array([5.0, 5.0, 20.0]), 40.0)
    ratio = vos.joint_to_dynamic(units)
    assert ratio.value == pytest.approx(0.5)
    np.testing.assert_allclose(ratio.replicates, [0.5, np.nan, 0.5])
    assert np.isnan(vos.joint_to_dynamic(_Units(20.0, np.ones(2), np.ones(2), 0.0)).value)


def _study(per_model: dict[str, dict[tuple[str, bool, str], float]]) -> vos.VosStudy:
    """A study whose every frame of 10 clips of each world scores the given IoU."""
    rows = []
    for label, scores in per_model.items():
        for (world, flip, style), value in scores.items():
            for clip in range(10):
                rows.append({"label": label, "world": world, "flip": flip, "style": style, "clip": clip, "frame": 3,
                             "iou": value + 0.01 * (clip % 2), "box_iou": value})
    baselines = pd.DataFrame({"baseline": ["constant", "centre prior"], "world": ["davis", "davis"],
                              "mIoU": [0.05, 0.3]})
    return vos.VosStudy("smoke", {label: None for label in per_model}, {}, pd.DataFrame(rows), baselines,
                              replicates=100, labels=[label for label in per_model if label in fusion.STUDY_MODELS])


def _scores(davis: float, moca: float, styled: float) -> dict[tuple[str, bool, str], float]:
    return {("davis", False, "original"): davis, ("davis", True, "original"): davis,
            ("moca", False, "original"): moca, ("moca", True, "original"): moca,
            **{("davis", False, style): styled for style in ("thermal", "comic", "pencil", "relief")}}


def test_the_testbed_passes_when_both_streams_matter_and_fails_when_one_suffices():
    good = _study({"FusionSeg": _scores(0.7, 0.2, 0.6), "U+G": _scores(0.8, 0.5, 0.6),
                   "appearance only": _scores(0.7, 0.1, 0.5), "motion only": _scores(0.6, 0.4, 0.6)})
    bed = fusion.testbed(good)
    assert bed.ok, bed.checks
    assert set(bed.checks["check"]) == {"both streams matter", "motion where appearance fails", "style retention",
                                        "above input-free baselines"}
    motion_suffices = _study({"FusionSeg": _scores(0.7, 0.2, 0.6), "U+G": _scores(0.8, 0.5, 0.6),
                              "appearance only": _scores(0.7, 0.1, 0.5), "motion only": _scores(0.79, 0.5, 0.79)})
    failed = fusion.testbed(motion_suffices)
    assert not failed.ok and failed.failures() == [
        "both streams matter of U+G vs motion only, held-out davis: 0.805 vs 0.795 (required >= 0.05 mIoU above)"]
    styles_break = _study({"U+G": _scores(0.8, 0.5, 0.3), "appearance only": _scores(0.7, 0.1, 0.5),
                           "motion only": _scores(0.6, 0.4, 0.6)})
    assert fusion.testbed(styles_break).failures()[0].startswith("style retention of U+G")
    assert not fusion.testbed(styles_break).dynamics_ok
    # motion must help the reference model itself, whatever another model of the study does
    reference_blind = _study({"B+G": _scores(0.8, 0.6, 0.6), "U+G": _scores(0.8, 0.2, 0.6),
                              "appearance only": _scores(0.7, 0.1, 0.5), "motion only": _scores(0.6, 0.4, 0.6)})
    assert fusion.testbed(reference_blind).failures() == [
        "motion where appearance fails of U+G vs appearance only, moca: 0.205 vs 0.105 (required >= 0.15 mIoU above)"]


def test_scores_table_has_miou_intervals_and_success_rates_per_flip():
    study = _study({"U+G": _scores(0.8, 0.55, 0.6), "appearance only": _scores(0.7, 0.1, 0.5)})
    table = study.scores_table("moca").set_index(["model", "flip"])
    assert table.loc[("U+G", False), "mIoU"] == pytest.approx(0.555)
    assert table.loc[("U+G", True), "SR@0.5"] == 1.0 and table.loc[("U+G", True), "SR@0.6"] == 0.0
    assert table.loc[("appearance only", False), "SR mean"] == 0.0
    lo, hi = table.loc[("U+G", False), ["mIoU_lo", "mIoU_hi"]]
    assert lo <= 0.555 <= hi
    assert study.retention("U+G")["retention"] == pytest.approx(0.605 / 0.805)
