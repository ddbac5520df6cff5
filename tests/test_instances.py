"""stdyn.tasks.instances: Hungarian matching, the set loss, video IoU and video mask AP, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stdyn.models.vos import dice_loss
from stdyn.tasks.instances import (
    IOU_THRESHOLDS,
    accumulate,
    clip_predictions,
    constant_track_predictions,
    evaluate_clips,
    hungarian_match,
    match_costs,
    matched_iou,
    set_loss,
    spatiotemporal_iou,
    video_ap,
)

torch.set_num_threads(1)

# 101-point interpolated AP of the ranking TP, FP, TP with two ground-truth instances:
# recall (0.5, 0.5, 1), precision (1, 1/2, 2/3), envelope (1, 2/3, 2/3). Recall points
# 0, 0.01, ..., 0.50 (51 of them) reach index 0 (precision 1), 0.51 .. 1 (50) index 2 (2/3):
# AP = (51 * 1 + 50 * 2/3) / 101 = 253/303.
TP_FP_TP = 253 / 303


def track(frames: int = 2, size: int = 4, rows: slice = slice(None), cols: slice = slice(None),
          in_frames: slice = slice(None)) -> np.ndarray:
    """A boolean mask sequence (T, S, S), foreground in the block rows x cols of the frames in_frames."""
    mask = np.zeros((frames, size, size), dtype=bool)
    mask[in_frames, rows, cols] = True
    return mask


def outputs_for(classes: torch.Tensor, masks: torch.Tensor, queries: int, num_classes: int,
                alpha: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and mask logits of one clip that predict its real instances with queries 0, 1, ...
    (confidence ``alpha``) and "no object" with the rest."""
    real = torch.nonzero(classes >= 0).flatten()
    class_logits = torch.zeros(queries, num_classes + 1)
    class_logits[:, num_classes] = alpha
    mask_logits = torch.full((queries, *masks.shape[1:]), -alpha)
    for q, slot in enumerate(real.tolist()):
        class_logits[q] = 0.0
        class_logits[q, classes[slot]] = alpha
        mask_logits[q] = alpha * (2 * masks[slot].float() - 1)
    return class_logits, mask_logits


def clip(frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's ground truth: two instances (classes 1 and 0) and a padding slot, frames x 4 x 4."""
    classes = torch.tensor([1, -1, 0])
    masks = torch.zeros(3, frames, 4, 4)
    masks[0, :, :2, :2] = 1
    masks[2, :, 2:, 1:] = 1
    masks[2, 0] = 0  # empty in one frame
    return classes, masks


# ---------------------------------------------------------------------------------------------
# Matching


def test_hungarian_beats_greedy():
    # Greedy takes the cheapest pair (0, 0) first and must then pay 100: total 101. The optimum
    # crosses over: (0, 1) + (1, 0) = 4.
    rows, cols = hungarian_match(torch.tensor([[1.0, 2.0], [2.0, 100.0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    # More queries than instances: the third query stays unmatched.
    rows, cols = hungarian_match(np.array([[5.0, 5.0], [1.0, 9.0], [9.0, 1.0]]))
    assert rows.tolist() == [1, 2] and cols.tolist() == [0, 1]
    assert rows.dtype == np.int64


def test_hungarian_edge_cases():
    rows, cols = hungarian_match(np.zeros((4, 0)))
    assert rows.shape == cols.shape == (0,)
    with pytest.raises(ValueError, match="3 instances to 2 queries"):
        hungarian_match(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        hungarian_match(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(Q, M\)"):
        hungarian_match(np.zeros(3))


def test_match_costs_rank_the_right_query_lowest_and_add_up():
    classes, masks = clip()
    class_logits, mask_logits = outputs_for(classes, masks, queries=4, num_classes=2)
    # Swap queries so that instance 1 (slot 2) is best predicted by query 3 and instance 0 by query 0.
    class_logits, mask_logits = class_logits[[0, 2, 3, 1]], mask_logits[[0, 2, 3, 1]]
    cost = match_costs(class_logits, mask_logits, classes, masks)
    assert cost.shape == (4, 2)  # the padding slot has no column
    assert cost.argmin(0).tolist() == [0, 3]

    # One entry by hand: query 1 ("no object") against instance 0, all frames as one mask.
    q, x, y = 1, mask_logits[1].flatten(), masks[0].flatten()
    expected = (-class_logits[q].softmax(-1)[1] + F.binary_cross_entropy_with_logits(x, y)
                + dice_loss(x[None], y[None]))
    assert cost[q, 0].item() == pytest.approx(expected.item(), rel=1e-5)
    weighted = match_costs(class_logits, mask_logits, classes, masks, class_weight=2.0, mask_weight=0.0,
                           dice_weight=0.0)
    assert torch.allclose(weighted, -2 * class_logits.softmax(-1)[:, [1, 0]])


def test_match_costs_read_only_annotated_frames():
    classes, masks = clip()
    class_logits, mask_logits = outputs_for(classes, masks, queries=3, num_classes=2)
    mask_logits = mask_logits + torch.randn(mask_logits.shape, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, 0.0, 1.0])
    changed_masks, changed_logits = masks.clone(), mask_logits.clone()
    changed_masks[:, 1] = 1 - changed_masks[:, 1]
    changed_logits[:, 1] = -changed_logits[:, 1]
    a = match_costs(class_logits, mask_logits, classes, masks, weights)
    b = match_costs(class_logits, changed_logits, classes, changed_masks, weights)
    assert torch.allclose(a, b)
    assert not torch.allclose(match_costs(class_logits, changed_logits, classes, changed_masks), a)


def test_match_costs_check_shapes_and_classes():
    classes, masks = clip()
    class_logits, mask_logits = outputs_for(classes, masks, queries=3, num_classes=2)
    with pytest.raises(ValueError, match=r"mask logits \(Q, T, H, W\)"):
        match_costs(class_logits, mask_logits[:, :2], classes, masks)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        match_costs(class_logits, mask_logits, torch.tensor([2, -1, 0]), masks)
    with pytest.raises(ValueError, match="frame weights"):
        match_costs(class_logits, mask_logits, classes, masks, torch.ones(2))
    with pytest.raises(ValueError, match="no frame"):
        match_costs(class_logits, mask_logits, classes, masks, torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# The set loss


def batch_of(alpha: float, queries: int = 4) -> tuple[torch.Tensor, ...]:
    """Two clips (the second with its instances in other slots) and outputs of confidence alpha."""
    c0, m0 = clip()
    c1, m1 = clip()
    c1, m1 = c1.flip(0), m1.flip(0)
    outs = [outputs_for(c, m, queries, 2, alpha) for c, m in ((c0, m0), (c1, m1))]
    class_logits = torch.stack([o[0] for o in outs])
    mask_logits = torch.stack([o[1] for o in outs])
    return class_logits, mask_logits, torch.stack([c0, c1]), torch.stack([m0, m1])


def test_set_loss_falls_as_predictions_get_closer_and_gradients_flow():
    losses = [set_loss(*batch_of(alpha)).item() for alpha in (0.5, 1.0, 2.0, 4.0)]
    assert (np.diff(losses) < 0).all()
    # Shuffling the queries does not change the loss: the matching follows them.
    class_logits, mask_logits, classes, masks = batch_of(2.0)
    order = [2, 0, 3, 1]
    assert set_loss(class_logits[:, order], mask_logits[:, order], classes, masks).item() == pytest.approx(
        losses[2], rel=1e-6)

    class_logits, mask_logits, classes, masks = batch_of(1.0)
    class_logits.requires_grad_(True)
    mask_logits.requires_grad_(True)
    parts = set_loss(class_logits, mask_logits, classes, masks, components=True)
    assert set(parts) == {"class", "mask", "dice", "total"}
    assert parts["total"].item() == pytest.approx((parts["class"] + parts["mask"] + parts["dice"]).item())
    parts["total"].backward()
    for grad in (class_logits.grad, mask_logits.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Unmatched queries get no mask gradient.
    assert mask_logits.grad[:, 2:].abs().sum() == 0


def test_set_loss_weighs_no_object_as_detr():
    classes, masks = clip()
    class_logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    _, mask_logits = outputs_for(classes, masks, queries=4, num_classes=2, alpha=8.0)  # masks decide
    # Query 0 predicts instance slot 0 (class 1), query 1 slot 2 (class 0); queries 2, 3 "no object" (2).
    targets = torch.tensor([1, 0, 2, 2])
    ce = F.cross_entropy(class_logits, targets, reduction="none")
    for w in (0.1, 1.0):
        weights = torch.tensor([1.0, 1.0, w, w])
        expected = (weights * ce).sum() / weights.sum()
        got = set_loss(class_logits, mask_logits, classes, masks, no_object_weight=w, components=True)["class"]
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set_loss(class_logits, mask_logits, classes, masks, components=True)["class"].item() == pytest.approx(
        ((ce[:2].sum() + 0.1 * ce[2:].sum()) / 2.2).item(), rel=1e-5)


def test_set_loss_ignores_unannotated_frames():
    class_logits, mask_logits, classes, masks = batch_of(1.0)
    mask_logits = mask_logits + torch.randn(mask_logits.shape, generator=torch.Generator().manual_seed(2))
    weights = torch.tensor([True, False, True])
    base = set_loss(class_logits, mask_logits, classes, masks, weights)
    changed_masks, changed_logits = masks.clone(), mask_logits.clone()
    changed_masks[:, :, 1] = 1 - changed_masks[:, :, 1]
    changed_logits[:, :, 1] = 5.0
    assert set_loss(class_logits, changed_logits, classes, changed_masks, weights).item() == pytest.approx(
        base.item(), rel=1e-6)
    # Per-clip weights (B, T), and float weights: the same.
    per_clip = weights.float().expand(2, -1)
    assert set_loss(class_logits, changed_logits, classes, changed_masks, per_clip).item() == pytest.approx(
        base.item(), rel=1e-6)
    assert set_loss(class_logits, changed_logits, classes, changed_masks).item() != pytest.approx(base.item())
    mask_logits.requires_grad_(True)
    set_loss(class_logits, mask_logits, classes, masks, weights).backward()
    assert mask_logits.grad[:, :, 1].abs().sum() == 0


def test_set_loss_without_instances_stays_differentiable():
    classes = torch.full((2, 3), -1)
    masks = torch.zeros(2, 3, 2, 4, 4)
    class_logits = torch.randn(2, 4, 3, requires_grad=True)
    mask_logits = torch.randn(2, 4, 2, 4, 4, requires_grad=True)
    parts = set_loss(class_logits, mask_logits, classes, masks, components=True)
    assert parts["mask"].item() == 0 and parts["dice"].item() == 0
    # Every query's target is "no object": the weights cancel in the weighted mean.
    expected = F.cross_entropy(class_logits.detach().flatten(0, 1), torch.full((8,), 2))
    assert parts["class"].item() == pytest.approx(expected.item(), rel=1e-5)
    parts["total"].backward()
    assert mask_logits.grad is not None and mask_logits.grad.abs().sum() == 0
    assert class_logits.grad.abs().sum() > 0


def test_set_loss_takes_one_clip_and_rejects_too_many_instances():
    classes, masks = clip()
    class_logits, mask_logits = outputs_for(classes, masks, queries=4, num_classes=2, alpha=1.0)
    batched = set_loss(class_logits[None], mask_logits[None], classes[None], masks[None])
    assert set_loss(class_logits, mask_logits, classes, masks).item() == pytest.approx(batched.item())
    with pytest.raises(ValueError, match="2 instances to 1 queries"):
        set_loss(class_logits[:1], mask_logits[:1], classes, masks)
    with pytest.raises(ValueError, match=r"\(B, M, T, H, W\)"):
        set_loss(class_logits[None], mask_logits[None], classes[None], masks)


# ---------------------------------------------------------------------------------------------
# Video IoU and the training score


def test_spatiotemporal_iou_by_hand():
    # Frame 0: the prediction covers all 4 pixels, the instance 2 of them; frame 1: the prediction
    # is empty, the instance has 1 pixel. Video IoU (2 + 0) / (4 + 1) = 0.4 (the mean of the
    # per-frame IoUs would be 0.25).
    pred = np.zeros((1, 2, 2, 2), dtype=bool)
    pred[0, 0] = True
    gt = np.zeros((2, 2, 2, 2), dtype=bool)
    gt[0, 0, 0] = True
    gt[0, 1, 1, 1] = True
    scores = spatiotemporal_iou(pred, gt)  # the second instance is empty throughout
    assert scores.shape == (1, 2)
    assert scores[0, 0] == pytest.approx(0.4) and scores[0, 1] == 0.0
    # Both empty in every frame: 0, as the YouTube-VIS code scores it. Numbers: > 0.5 is foreground.
    assert spatiotemporal_iou(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)))[0, 0] == 0.0
    assert spatiotemporal_iou(torch.full((1, 2, 2, 2), 0.7), gt.astype(float))[0, 0] == pytest.approx(3 / 8)
    assert spatiotemporal_iou(np.zeros((0, 2, 2, 2), bool), gt).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\(P, T, H, W\)"):
        spatiotemporal_iou(pred[:, :1], gt)


def test_matched_iou_by_hand():
    classes = torch.tensor([[0, 1, -1], [-1, -1, -1]])
    masks = torch.zeros(2, 3, 2, 4, 4)
    masks[0, 0, :, :2, :2] = 1  # 8 pixels
    masks[0, 1, :, 2:, 2:] = 1  # 8 pixels
    class_logits = torch.zeros(2, 3, 3)
    class_logits[:, :, 2] = 5.0  # "no object" everywhere ...
    class_logits[0, 2] = torch.tensor([5.0, 0.0, 0.0])  # ... but query 2 of clip 0 says class 0
    class_logits[0, 0] = torch.tensor([0.0, 5.0, 0.0])  # and query 0 says class 1
    mask_logits = torch.full((2, 3, 2, 4, 4), -1.0)
    mask_logits[0, 2, :, :2, :2] = 1.0  # instance 0 exactly: IoU 1
    mask_logits[0, 0, :, 2:, 2:3] = 1.0  # half of instance 1: IoU 4/8
    scores = matched_iou(class_logits, mask_logits, classes, masks)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert scores.tolist() == pytest.approx([0.75, 1.0])  # clip 1: no instance, no object predicted
    class_logits[1, 1, 0] = 9.0  # a query of the empty clip now predicts an object
    assert matched_iou(class_logits, mask_logits, classes, masks).tolist() == pytest.approx([0.75, 0.0])
    assert matched_iou(class_logits[0], mask_logits[0], classes[0], masks[0]).tolist() == pytest.approx([0.75])


# ---------------------------------------------------------------------------------------------
# Video mask AP


def truth(*tracks: tuple[np.ndarray, int]) -> dict[str, np.ndarray]:
    return {"masks": np.stack([m for m, _ in tracks]), "labels": np.array([k for _, k in tracks])}


def preds(*tracks: tuple[np.ndarray, int, float]) -> dict[str, np.ndarray]:
    if not tracks:
        return {"masks": np.zeros((0, 2, 4, 4), bool), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    return {"masks": np.stack([m for m, _, _ in tracks]), "labels": np.array([k for _, k, _ in tracks]),
            "scores": np.array([s for _, _, s in tracks])}


A, B, C = track(rows=slice(0, 2), cols=slice(0, 2)), track(rows=slice(2, 4)), track(cols=slice(3, 4))


def test_video_ap_of_perfect_predictions_is_one():
    gts = [truth((A, 0), (B, 1)), truth((C, 0))]
    result = video_ap([preds((A, 0, 0.9), (B, 1, 0.4)), preds((C, 0, 0.2))], gts)
    assert (result.ap, result.ap50, result.ap75) == (1.0, 1.0, 1.0)
    assert result.per_class["n_gt"].tolist() == [2, 1] and result.per_class["AP"].tolist() == [1.0, 1.0]
    assert result.per_threshold.tolist() == [1.0] * 10
    assert result.table.shape == (2, 10)
    assert result.summary().to_dict() == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    # Tuples and tensors work too; ground-truth labels < 0 are padding.
    padded = (torch.as_tensor(np.stack([C, A])), torch.tensor([0, -1]))
    assert video_ap([(torch.as_tensor(C[None]), torch.tensor([0.2]), torch.tensor([0]))], [padded]).ap == 1.0


def test_video_ap_false_positive_scored_above_true_positive():
    # Two clips, one class-0 instance each. Ranking: A (clip 0, TP) 0.9, a miss in clip 1 (FP) 0.8,
    # B (clip 1, TP) 0.7: TP, FP, TP, see TP_FP_TP.
    gts = [truth((A, 0)), truth((B, 0))]
    result = video_ap([preds((A, 0, 0.9)), preds((C & ~B, 0, 0.8), (B, 0, 0.7))], gts)
    assert result.ap == pytest.approx(TP_FP_TP) and result.ap50 == pytest.approx(TP_FP_TP)
    # The FP ranked last costs nothing: precision 1 at every recall up to 1.
    result = video_ap([preds((A, 0, 0.9)), preds((C & ~B, 0, 0.6), (B, 0, 0.7))], gts)
    assert result.ap == 1.0


def test_video_ap_iou_between_thresholds():
    # The prediction covers 7 of the instance's 10 pixels: IoU 0.7 passes thresholds 0.5 .. 0.7
    # (5 of 10) and fails 0.75 .. 0.95: AP = 5/10, AP50 = 1, AP75 = 0.
    gt = track(size=5, rows=slice(0, 1))
    pred = gt.copy()
    pred[1, 0, 2:] = False
    assert spatiotemporal_iou(pred[None], gt[None])[0, 0] == 0.7
    result = video_ap([preds((pred, 0, 0.5))], [truth((gt, 0))])
    assert (result.ap, result.ap50, result.ap75) == (0.5, 1.0, 0.0)
    assert result.per_threshold.tolist() == [1.0] * 5 + [0.0] * 5
    assert list(result.per_threshold.index) == list(IOU_THRESHOLDS)
    # np.arange's thresholds (0.7000000000000002, ...) compare as written.
    assert video_ap([preds((pred, 0, 0.5))], [truth((gt, 0))], np.arange(0.5, 0.96, 0.05)).ap == 0.5


def test_video_ap_skips_classes_without_ground_truth():
    gts = [truth((A, 0))]
    result = video_ap([preds((A, 0, 0.9), (B, 1, 0.95))], gts, num_classes=3)
    assert result.ap == 1.0
    assert result.per_class["n_pred"].tolist() == [1, 1, 0]
    assert result.per_class["AP"].isna().tolist() == [False, True, True]
    # A class with ground truth but no prediction scores 0.
    assert video_ap([preds((A, 0, 0.9))], [truth((A, 0), (B, 1))]).ap == 0.5
    # No class with ground truth: nan.
    assert math.isnan(video_ap([preds((A, 0, 0.9))], [truth((A, -1))]).ap)
    with pytest.raises(ValueError, match="below num_classes = 1"):
        video_ap([preds((B, 1, 0.9))], gts, num_classes=1)


def test_video_ap_counts_duplicates_and_other_clips_as_false_positives():
    # A twice, then B: the duplicate is a false positive, TP, FP, TP as above.
    result = video_ap([preds((A, 0, 0.9), (A, 0, 0.8), (B, 0, 0.7))], [truth((A, 0), (B, 0))])
    assert result.ap == pytest.approx(TP_FP_TP)
    # A perfect track in a clip without the instance: FP (0.9) then TP (0.5): precision 1/2 at recall 1.
    result = video_ap([preds((C, 0, 0.9)), preds((C, 0, 0.5))], [truth((A, 1)), truth((C, 0))])
    assert result.per_class.loc[0, "AP"] == pytest.approx(0.5)
    # A track with the wrong class: a false positive of its class, no match for the instance.
    assert video_ap([preds((A, 1, 0.9))], [truth((A, 0))], num_classes=2).ap == 0.0
    with pytest.raises(ValueError, match="predictions for 1 clips and ground truth for 2"):
        video_ap([preds()], [truth((A, 0)), truth((A, 0))])


def test_video_ap_matches_the_instance_of_highest_iou():
    # At IoU 0.1 the first prediction could take either instance (IoU 1/4 with the left one, 2/3
    # with the right one): it takes the right one, so the second, the left instance exactly, is a
    # TP too (had the first taken the left one, the second would be a FP).
    left, right = track(size=4, cols=slice(0, 2)), track(size=4, cols=slice(2, 4))
    wide = track(size=4, cols=slice(1, 4))
    assert spatiotemporal_iou(wide[None], np.stack([left, right]))[0] == pytest.approx([1 / 4, 2 / 3])
    result = video_ap([preds((wide, 0, 0.9), (left, 0, 0.8))], [truth((left, 0), (right, 0))], [0.1])
    assert result.ap == 1.0


def test_video_ap_keeps_max_detections_per_clip_and_class():
    # With one detection per clip and class, the duplicate and B (class 0) go, the class-1 track
    # stays: class 0 reaches recall 1/2 at precision 1, AP = 51/101 (recall points 0 .. 0.5).
    predictions = [preds((A, 0, 0.9), (A, 0, 0.8), (B, 0, 0.7), (C, 1, 0.1))]
    truths = [truth((A, 0), (B, 0), (C, 1))]
    result = video_ap(predictions, truths, max_detections=1)
    assert result.per_class["AP"].tolist() == pytest.approx([51 / 101, 1.0])
    assert result.per_class["n_pred"].tolist() == [1, 1]
    assert video_ap(predictions, truths).per_class["AP"].tolist() == pytest.approx([TP_FP_TP, 1.0])


def test_accumulate_resamples_clip_evaluations():
    predictions = [preds((A, 0, 0.9)), preds((C & ~B, 0, 0.8), (B, 0, 0.7)), preds((C, 1, 0.3)), preds()]
    truths = [truth((A, 0)), truth((B, 0)), truth((A, 1)), truth((C, 1))]
    evaluations = evaluate_clips(predictions, truths)
    assert evaluations[1].tp.shape == (10, 2) and evaluations[1].tp[:, 1].all() and not evaluations[1].tp[:, 0].any()
    for rows in ([0, 1, 2, 3], [1, 1, 3, 0], [2, 2, 2, 1], [3, 0, 1, 1]):
        direct = video_ap([predictions[i] for i in rows], [truths[i] for i in rows])
        resampled = accumulate([evaluations[i] for i in rows])
        assert resampled.ap == pytest.approx(direct.ap, nan_ok=True)
        assert resampled.table.equals(direct.table)
    with pytest.raises(ValueError, match="different IoU thresholds"):
        accumulate([evaluations[0], *evaluate_clips(predictions[:1], truths[:1], [0.5])])


# ---------------------------------------------------------------------------------------------
# Predictions and the constant tracks baseline


def test_clip_predictions_use_vistr_scoring():
    class_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0]]])
    mask_logits = torch.full((1, 3, 2, 4, 4), -1.0)
    mask_logits[0, 1, :, 0, 0] = 0.5
    (out,) = clip_predictions(class_logits, mask_logits)
    assert out["labels"].tolist() == [0, 1, 0]  # never "no object", even where it is most probable
    e = math.e
    assert out["scores"] == pytest.approx([e**2 / (e**2 + 2), e / (1 + e + e**3), 1 / 3])
    assert out["masks"].dtype == bool and out["masks"].shape == (3, 2, 4, 4)
    assert out["masks"].sum() == 2 and out["masks"][1, :, 0, 0].all()
    (top,) = clip_predictions(class_logits, mask_logits, top_k=2)
    assert top["labels"].tolist() == [0, 0] and top["scores"] == pytest.approx(out["scores"][[0, 2]])
    assert len(clip_predictions(class_logits[0], mask_logits[0])) == 1
    # With mask quality, a score is also scaled by the mean foreground probability inside the mask.
    (ranked,) = clip_predictions(class_logits, mask_logits, mask_quality=True)
    sigmoid = 1 / (1 + math.exp(-0.5))
    assert ranked["scores"] == pytest.approx([0.0, out["scores"][1] * sigmoid, 0.0])
    assert np.array_equal(ranked["masks"], out["masks"]) and np.array_equal(ranked["labels"], out["labels"])

    # The outputs of a confident model of the ground truth score AP 1.
    class_logits, mask_logits, classes, masks = batch_of(4.0)
    predicted = clip_predictions(class_logits, mask_logits)
    truths = [{"masks": m.numpy() > 0, "labels": c.numpy()} for c, m in zip(classes, masks)]
    assert video_ap(predicted, truths).ap == 1.0


def test_constant_tracks_fit_the_training_masks_and_score_low():
    rng = np.random.default_rng(0)

    def world(n: int) -> tuple[np.ndarray, np.ndarray]:
        # Class 0: a 2x2 block at a random place, in every clip; class 1: a 3x3 block in half.
        classes = np.full((n, 3), -1)
        masks = np.zeros((n, 3, 2, 8, 8), dtype=np.uint8)
        for i in range(n):
            r, c = rng.integers(0, 7, 2)
            classes[i, 0] = 0
            masks[i, 0, :, r:r + 2, c:c + 2] = 1
            if i % 2:
                r, c = rng.integers(0, 6, 2)
                classes[i, 2] = 1
                masks[i, 2, :, r:r + 3, c:c + 3] = 1
        return classes, masks

    train_classes, train_masks = world(20)
    predictions = constant_track_predictions(torch.as_tensor(train_classes), torch.as_tensor(train_masks), 5)
    assert len(predictions) == 5
    first = predictions[0]
    assert first["labels"].tolist() == [0, 1] and first["scores"] == pytest.approx([20 / 30, 10 / 30])
    assert first["masks"].shape == (2, 2, 8, 8) and first["masks"].dtype == bool
    assert not first["masks"].flags.writeable and predictions[4]["masks"] is first["masks"]

    # A fixed block is its own best track.
    fixed_classes = np.array([[0], [0]])
    fixed = np.zeros((2, 1, 2, 8, 8), dtype=bool)
    fixed[:, :, :, 1:3, 4:6] = True
    (only,) = constant_track_predictions(fixed_classes, fixed, 1)
    assert np.array_equal(only["masks"][0], fixed[0, 0]) and only["scores"].tolist() == [1.0]

    val_classes, val_masks = world(10)
    truths = [{"masks": m[c >= 0], "labels": c[c >= 0]} for c, m in zip(val_classes, val_masks)]
    perfect = [{"masks": t["masks"], "labels": t["labels"], "scores": np.ones(len(t["labels"]))} for t in truths]
    assert video_ap(perfect, truths).ap == 1.0
    assert video_ap(constant_track_predictions(train_classes, train_masks, 10), truths).ap < 0.3
    with pytest.raises(ValueError, match="at least one training instance"):
        constant_track_predictions(np.full((2, 1), -1), fixed, 1)
