"""stdyn.tasks.segmentation: IoU, success rates, flip TTA, the MoCA box protocol and the baselines, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stdyn.data.flow import flow_to_image, image_to_flow, rgb_to_hsv
from stdyn.tasks.segmentation import (
    box_iou,
    centre_prior_baseline,
    constant_baseline,
    flip_flow_image,
    iou,
    mask_to_box,
    mean_iou,
    moca_binarize,
    moca_box_scores,
    predict,
    predict_with_flip,
    success_rates,
)

torch.set_num_threads(1)


def block(rows: slice, cols: slice, size: tuple[int, int] = (4, 4)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_iou_of_small_masks():
    a, b = block(slice(0, 2), slice(0, 2)), block(slice(1, 3), slice(1, 3))
    assert iou(a, b) == pytest.approx(1 / 7)  # 1 shared pixel, 7 in the union
    assert iou(a, a) == 1.0
    empty = np.zeros((4, 4), dtype=bool)
    assert iou(empty, empty) == 1.0 and iou(empty, a) == 0.0
    batch = iou(np.stack([a, a, empty]), np.stack([b, a, empty]))
    assert batch.shape == (3,) and batch.tolist() == pytest.approx([1 / 7, 1.0, 1.0])
    # Tensors and probabilities (> 0.5), one mask broadcast against many.
    probabilities = torch.tensor(a, dtype=torch.float32) * 0.9 + 0.05
    assert iou(probabilities, torch.tensor(b)) == pytest.approx(1 / 7)
    assert iou(a, np.stack([a, b])).tolist() == pytest.approx([1.0, 1 / 7])


def test_mean_iou_is_per_clip_first_when_clips_are_given():
    assert mean_iou([1.0, 1.0, 1.0, 0.0]) == pytest.approx(0.75)
    assert mean_iou([1.0, 1.0, 1.0, 0.0], clip_ids=["a", "a", "a", "b"]) == pytest.approx(0.5)
    assert mean_iou([[1.0, 1.0, 1.0], [0.0]]) == pytest.approx(0.5)
    assert mean_iou(torch.tensor([0.2, 0.4])) == pytest.approx(0.3)


def test_success_rates_by_hand():
    rates = success_rates([0.45, 0.5, 0.65, 0.75, 0.95])
    assert list(rates.index) == ["SR@0.5", "SR@0.6", "SR@0.7", "SR@0.8", "SR@0.9", "SR mean"]
    assert rates.tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.2, 0.44])  # IoU = t counts
    assert success_rates(np.array([0.3]), thresholds=(0.25,)).tolist() == [1.0, 1.0]


def test_box_iou_by_hand():
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert box_iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # touching edges share no area
    assert box_iou([np.nan] * 4, [0, 0, 2, 2]) == 0.0  # an empty prediction
    many = box_iou(np.array([[0, 0, 2, 2], [0, 0, 4, 4]]), np.array([0, 0, 2, 4]))
    assert many.tolist() == pytest.approx([0.5, 0.5])


def test_mask_to_box_takes_the_largest_connected_component():
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:4, 1:4] = True  # 9 pixels, columns and rows 1..3
    mask[6, 6] = True  # a stray pixel
    assert mask_to_box(mask).tolist() == [1, 1, 4, 4]
    assert mask_to_box(mask, largest_component=False).tolist() == [1, 1, 7, 7]
    diagonal = np.zeros((6, 6), dtype=bool)
    diagonal[[0, 1, 2], [0, 1, 2]] = True  # one 8-connected component of 3
    diagonal[5, 3:5] = True  # 2 pixels
    assert mask_to_box(diagonal).tolist() == [0, 0, 3, 3]
    assert np.isnan(mask_to_box(np.zeros((4, 4)))).all()
    assert mask_to_box(np.stack([mask, np.zeros_like(mask)])).shape == (2, 4)


def test_moca_binarize_inverts_when_the_border_is_foreground():
    prob = np.full((6, 6), 0.9)
    prob[2:4, 2:4] = 0.1  # the model segmented the background around the object
    mask, inverted = moca_binarize(prob)
    assert bool(inverted) and mask.sum() == 4 and mask[2:4, 2:4].all()
    plain, inverted = moca_binarize(1 - prob)
    assert not bool(inverted) and np.array_equal(plain, mask)
    frames, flags = moca_binarize(np.stack([prob, 1 - prob]))
    assert flags.tolist() == [True, False] and np.array_equal(frames[0], frames[1])


def test_moca_box_scores_by_hand():
    maps = np.zeros((3, 1, 8, 8))
    maps[0, 0, 2:5, 2:5] = 0.8  # exactly the ground-truth box
    maps[1, 0, 2:5, 2:4] = 0.8  # two thirds of it
    maps[1, 0, 7, 7] = 0.8  # plus a stray pixel that the largest component drops
    gt = np.array([[2, 2, 5, 5]] * 3)  # frame 2 predicts nothing
    frames, summary = moca_box_scores(maps, gt, ["locomotion", "locomotion", "static"], clip_ids=["a", "a", "b"])
    assert frames["box_iou"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert frames.loc[1, ["x0", "y0", "x1", "y1"]].tolist() == [2, 2, 4, 5]
    assert list(summary.index) == ["all", "locomotion", "static"]
    assert summary.loc["locomotion", "mIoU"] == pytest.approx(5 / 6)
    assert summary.loc["all", "mIoU"] == pytest.approx((5 / 6 + 0) / 2)  # clip a, then clip b
    assert summary.loc["all", "SR@0.5"] == pytest.approx(2 / 3) and summary.loc["all", "SR@0.7"] == pytest.approx(1 / 3)
    assert summary.loc["static", "n_frames"] == 1
    _, by_frame = moca_box_scores(maps, gt, "locomotion")
    assert by_frame.loc["all", "mIoU"] == pytest.approx((1 + 2 / 3) / 3)


def test_flipping_a_flow_image_mirrors_the_flow_direction():
    flow = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    m = float(flow.norm(dim=1).max())
    mirrored_flow = torch.stack([-flow[:, 0], flow[:, 1]], 1).flip(-1)  # (u, v) -> (-u, v), mirrored
    flipped = flip_flow_image(flow_to_image(flow, m))
    assert torch.allclose(flipped, flow_to_image(mirrored_flow, m), atol=1e-5)
    assert torch.allclose(image_to_flow(flipped, m), mirrored_flow, atol=1e-4 * m)
    assert torch.allclose(flip_flow_image(flipped), flow_to_image(flow, m), atol=1e-5)  # an involution
    right = flow_to_image(torch.tensor([1.0, 0.0])[:, None, None].expand(2, 1, 1), 1.0)
    assert rgb_to_hsv(flip_flow_image(right))[0].item() == pytest.approx(0.5)  # rightwards -> leftwards


class _Mirrored(nn.Module):
    """A flip-equivariant model: a left-right symmetric convolution of the frame and of the flow
    magnitude (saturation), which mirroring the motion does not change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)

    def forward(self, rgb, flow_image):
        return self.conv(torch.cat([rgb, rgb_to_hsv(flow_image)[:, 1:2]], 1)) * 5


class _MovingRight(nn.Module):
    """Foreground = moving right: logits are the horizontal flow component."""

    def forward(self, rgb, flow_image):
        return image_to_flow(flow_image, 1.0)[:, :1] * 4


def test_flip_tta_round_trip():
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 8, 8)
    flow_image = flow_to_image(torch.randn(2, 2, 8, 8))
    model = _Mirrored()
    plain = predict(model, rgb, flow_image)
    assert plain.shape == (2, 1, 8, 8) and plain.std() > 0.01
    assert torch.allclose(predict_with_flip(model, rgb, flow_image), plain, atol=1e-5)
    assert torch.allclose(predict(model, rgb, flow_image, flip=True), plain, atol=1e-5)
    # The mirrored video moves the other way: sigmoid(u) and sigmoid(-u) average to 1/2.
    right = _MovingRight()
    assert (predict(right, rgb, flow_image) - 0.5).abs().max() > 0.1
    assert torch.allclose(predict_with_flip(right, rgb, flow_image), torch.full((2, 1, 8, 8), 0.5), atol=1e-5)


def test_constant_baseline_by_hand():
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:, 0, 0] = True  # in 3 of 3 frames
    masks[:2, 0, 1] = True  # 2 of 3
    masks[0, 0, 2] = True  # 1 of 3
    assert np.array_equal(constant_baseline(masks), block(slice(0, 1), slice(0, 2)))
    assert np.array_equal(centre_prior_baseline(masks, 0.3), block(slice(0, 1), slice(0, 3)))
    best = centre_prior_baseline(torch.tensor(masks).unsqueeze(1))  # threshold chosen on the training frames
    assert np.mean(iou(best, masks)) >= max(np.mean(iou(constant_baseline(masks), masks)),
                                            np.mean(iou(masks.mean(0) > 0.3, masks)))
    # Pixel (0, 0) is in 2 of 3 frames, each time inside a larger region the other frame lacks, and
    # the third frame is empty: that pixel scores 1/7, 1/8 and 0; all background 0, 0 and 1, so it wins.
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 0, :] = masks[0, 1, :3] = True  # 7 pixels, (0, 0) among them
    masks[1, 0, 0] = masks[1, 3, :] = masks[1, 2, 1:] = True  # 8 pixels, (0, 0) among them
    assert np.array_equal(masks.mean(0) > 0.5, block(slice(0, 1), slice(0, 1)))
    assert np.mean(iou(masks.mean(0) > 0.5, masks)) == pytest.approx((1 / 7 + 1 / 8) / 3)
    assert not constant_baseline(masks).any()
    assert math.isclose(np.mean(iou(constant_baseline(masks), masks)), 1 / 3)
