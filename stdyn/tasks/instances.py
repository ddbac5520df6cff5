"""Video instance segmentation (VIS): Hungarian matching, the set loss and video-level mask AP.

A VisTR-like model predicts, for each of Q instance queries of a clip of T frames of H x W,
``class_logits`` (Q, K + 1), the last column "no object", and ``mask_logits`` (Q, T, H, W); in a
batch (B, Q, K + 1) and (B, Q, T, H, W). The ground truth of a clip is ``classes`` int64 (M,), -1
for padding slots (ignored everywhere), and ``masks`` (M, T, H, W) in {0, 1}, each instance's
visible mask (it may be empty in some frames); in a batch (B, M) and (B, M, T, H, W).
``frame_weights`` (T,) or (B, T), optional, marks the frames whose masks are annotated (real
datasets annotate every 5th frame): frames with a nonzero weight are annotated (the size of a
weight does not matter); mask costs and mask losses read only those frames.

Training (torch, differentiable where it says so):

- :func:`match_costs`: the cost of giving each query each real instance: class probability,
  per-pixel BCE and Dice, over the clip's annotated frames as *one* spatio-temporal mask (VisTR
  matches instance sequences, not frames);
- :func:`hungarian_match`: the assignment of least total cost (``linear_sum_assignment``);
- :func:`set_loss`: DETR's set loss over a batch: cross-entropy over all queries (unmatched ones
  to "no object", down-weighted), BCE and Dice on the matched masks;
- :func:`matched_iou`: the per-clip training score, the mean spatio-temporal IoU of each real
  instance with its matched query's mask.

Evaluation (numpy; masks boolean, or numbers where ``> 0.5`` is foreground):

- :func:`spatiotemporal_iou`: YouTube-VIS's video IoU, intersections summed over frames over
  unions summed over frames;
- :func:`video_ap`: video-level mask AP by the YouTube-VIS protocol (COCO's, with video IoU), as
  a :class:`VideoAP` (AP, AP50, AP75, per class and per threshold); in two halves,
  :func:`evaluate_clips` (per clip: video IoUs and matching) and :func:`accumulate` (over clips:
  AP), so a bootstrap over clips resamples clip evaluations instead of recomputing IoUs;
- :func:`clip_predictions`: model outputs as the per-clip predictions :func:`video_ap` takes;
- :func:`constant_track_predictions`: the baseline that ignores the input, the same best
  constant track per class in every clip.

A prediction of a clip is a dict ``{"masks": (P, T, H, W) bool, "scores": (P,), "labels": (P,)}``
(or a tuple in that order); a ground truth ``{"masks": (G, T, H, W), "labels": (G,)}`` (or a
tuple), where labels < 0 mark padding slots and are dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from stdyn.models.vos import dice_loss, mask_loss

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "ClipEvaluation",
    "VideoAP",
    "accumulate",
    "clip_predictions",
    "constant_track_predictions",
    "evaluate_clips",
    "hungarian_match",
    "match_costs",
    "matched_iou",
    "set_loss",
    "spatiotemporal_iou",
    "video_ap",
]

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""COCO's IoU thresholds 0.5, 0.55, ..., 0.95 of mask AP."""
RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.0, 101)
"""COCO's 101 recall points 0, 0.01, ..., 1, computed as pycocotools computes them (so recall
0.7 = 7/10 falls just short of the point ``0.7000000000000001``, as there)."""
_SMOOTH = 1.0  # Dice smoothing, as dice_loss
_CHUNK = 256  # training instances scored at a time by constant_track_predictions
_TRACK_THRESHOLDS: tuple[float, ...] = (0.0, *(round(0.05 * i, 2) for i in range(1, 20)))


# ---------------------------------------------------------------------------------------------
# Shapes


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _binary(x: Any) -> np.ndarray:
    """A boolean array: ``x`` itself if boolean, else ``x > 0.5``."""
    array = _numpy(x)
    return array if array.dtype == bool else array > 0.5


def _check_clip(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor) -> None:
    """Raise unless the outputs and targets of one clip have the documented shapes."""
    fits = (class_logits.dim() == 2 and class_logits.shape[1] >= 2 and mask_logits.dim() == 4
            and mask_logits.shape[0] == class_logits.shape[0] and classes.dim() == 1 and masks.dim() == 4
            and masks.shape[0] == classes.shape[0] and masks.shape[1:] == mask_logits.shape[1:])
    if not fits:
        raise ValueError(
            "expected class logits (Q, K + 1) with K >= 1, mask logits (Q, T, H, W), classes (M,) and masks "
            f"(M, T, H, W) of the same T, H, W, got {tuple(class_logits.shape)}, {tuple(mask_logits.shape)}, "
            f"{tuple(classes.shape)} and {tuple(masks.shape)}"
        )
    if classes.is_floating_point():
        raise ValueError(f"expected integer classes, got {classes.dtype}")
    num_classes = class_logits.shape[1] - 1
    real = classes[classes >= 0]
    if bool((classes < -1).any()) or (real.numel() and int(real.max()) >= num_classes):
        raise ValueError(f"classes must be -1 (padding) or in [0, {num_classes}) for class logits of "
                         f"{num_classes} + 1 columns, got {sorted(set(classes.tolist()))}")


def _batched(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor,
             frame_weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Batch tensors (B, ...), a single clip's given a batch dimension; frame weights as (B, T)."""
    if class_logits.dim() == 2:
        class_logits, mask_logits, classes, masks = (x.unsqueeze(0) for x in (class_logits, mask_logits,
                                                                            classes, masks))
    fits = (class_logits.dim() == 3 and mask_logits.dim() == 5 and classes.dim() == 2 and masks.dim() == 5
            and mask_logits.shape[0] == classes.shape[0] == masks.shape[0] == class_logits.shape[0])
    if not fits:
        raise ValueError(
            "expected class logits (B, Q, K + 1), mask logits (B, Q, T, H, W), classes (B, M) and masks "
            f"(B, M, T, H, W) (or one clip of each without B), got {tuple(class_logits.shape)}, "
            f"{tuple(mask_logits.shape)}, {tuple(classes.shape)} and {tuple(masks.shape)}"
        )
    if frame_weights is not None:
        frame_weights = torch.as_tensor(frame_weights, device=mask_logits.device)
        batch, frames = mask_logits.shape[0], mask_logits.shape[2]
        if frame_weights.dim() == 1:
            frame_weights = frame_weights.expand(batch, -1)
        if frame_weights.shape != (batch, frames):
            raise ValueError(f"expected frame weights (T,) or (B, T) = ({frames},) or ({batch}, {frames}), "
                             f"got {tuple(frame_weights.shape)}")
    return class_logits, mask_logits, classes, masks, frame_weights


def _annotated(frame_weights: Tensor | None, frames: int, device: torch.device) -> Tensor:
    """The annotated frames (T,) bool of one clip: nonzero weights, or all frames without weights."""
    if frame_weights is None:
        return torch.ones(frames, dtype=torch.bool, device=device)
    weights = torch.as_tensor(frame_weights, device=device)
    if weights.shape != (frames,):
        raise ValueError(f"expected frame weights (T,) = ({frames},), got {tuple(weights.shape)}")
    annotated = weights != 0
    if not bool(annotated.any()):
        raise ValueError("frame weights annotate no frame: at least one frame needs a nonzero weight")
    return annotated


def _flat_masks(logits: Tensor, masks: Tensor, annotated: Tensor) -> tuple[Tensor, Tensor]:
    """Mask logits (Q, T, H, W) and masks (M, T, H, W) of the annotated frames, flattened to
    (Q, P) and (M, P) (masks as the logits' dtype)."""
    return logits[:, annotated].flatten(1), masks[:, annotated].flatten(1).to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# Matching


def match_costs(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor,
                frame_weights: Tensor | None = None, *, class_weight: float = 1.0, mask_weight: float = 1.0,
                dice_weight: float = 1.0) -> Tensor:
    """The cost (Q, M_valid) of matching each query of one clip to each real instance (classes >= 0,
    in slot order).

    ``cost = -class_weight * p(instance class) + mask_weight * BCE + dice_weight * (1 - Dice)``:
    ``p`` the softmax probability over the K + 1 classes; BCE the mean per-pixel binary
    cross-entropy of the query's mask logits against the instance's mask; Dice the soft Dice of
    ``sigmoid(logits)`` and the mask with smoothing 1 (as :func:`~stdyn.models.vos.dice_loss`).
    Both read the annotated frames only (``frame_weights`` (T,), nonzero = annotated) and treat
    them as one spatio-temporal mask. Pairwise by matrix products (BCE(x, y) = softplus(x) - x y),
    no loop over pairs.
    """
    _check_clip(class_logits, mask_logits, classes, masks)
    valid = classes >= 0
    annotated = _annotated(frame_weights, mask_logits.shape[1], mask_logits.device)
    logits, target = _flat_masks(mask_logits, masks[valid], annotated)  # (Q, P), (M, P)
    pixels = logits.shape[1]
    prob = class_logits.softmax(-1)[:, classes[valid]]  # (Q, M)
    bce = F.softplus(logits).sum(1, keepdim=True) / pixels - logits @ target.T / pixels
    p = torch.sigmoid(logits)
    dice = (2 * p @ target.T + _SMOOTH) / (p.sum(1, keepdim=True) + target.sum(1)[None, :] + _SMOOTH)
    return -class_weight * prob + mask_weight * bce + dice_weight * (1 - dice)


def hungarian_match(cost: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of least total cost of a cost matrix (Q queries, M instances), M <= Q.

    Returns ``(rows, cols)``, int64 arrays of length M: query ``rows[i]`` takes instance
    ``cols[i]`` (an index into the real instances, the columns of the cost); rows ascending.
    M = 0 gives two empty arrays. Raises ``ValueError`` when M > Q (some instance would stay
    unmatched) or a cost is not finite.
    """
    array = _numpy(cost).astype(np.float64, copy=False)
    if array.ndim != 2:
        raise ValueError(f"expected a cost matrix (Q, M), got shape {array.shape}")
    queries, instances = array.shape
    if instances > queries:
        raise ValueError(f"cannot match {instances} instances to {queries} queries: a model needs at least "
                         "as many queries as a clip has instances")
    if instances == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if not np.isfinite(array).all():
        raise ValueError(f"the cost matrix ({queries}, {instances}) has {int((~np.isfinite(array)).sum())} "
                         "non-finite entries (nan or inf logits?)")
    rows, cols = linear_sum_assignment(array)
    return rows.astype(np.int64), cols.astype(np.int64)


@torch.no_grad()
def _match_batch(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor,
                 frame_weights: Tensor | None, **weights: float) -> list[tuple[Tensor, Tensor]]:
    """Each clip's matching (query indices, slot indices into ``classes``) as long tensors."""
    matches = []
    for b in range(class_logits.shape[0]):
        cost = match_costs(class_logits[b], mask_logits[b], classes[b], masks[b],
                           None if frame_weights is None else frame_weights[b], **weights)
        rows, cols = hungarian_match(cost)
        slots = torch.nonzero(classes[b] >= 0).flatten().cpu()[torch.as_tensor(cols)]
        matches.append((torch.as_tensor(rows, device=class_logits.device), slots.to(class_logits.device)))
    return matches


# ---------------------------------------------------------------------------------------------
# The set loss and the training score


def set_loss(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor,
             frame_weights: Tensor | None = None, *, no_object_weight: float = 0.1, mask_weight: float = 1.0,
             dice_weight: float = 1.0, components: bool = False) -> Tensor | dict[str, Tensor]:
    """DETR's set loss over a batch (B, ...) (or one clip): differentiable, a scalar.

    Each clip's queries are matched to its real instances (:func:`match_costs` with class weight
    1 and this ``mask_weight`` and ``dice_weight``, :func:`hungarian_match`, without gradients).
    Then ``total = class + mask_weight * mask + dice_weight * dice``:

    - ``class``: cross-entropy over all B x Q queries, matched ones to their instance's class, the
      rest to "no object" (class K), weighted as DETR weighs it: "no object" targets weigh
      ``no_object_weight``, the others 1, and the loss is the weighted mean;
    - ``mask``: the mean per-pixel BCE of each matched query's mask logits against its instance's
      mask over the clip's annotated frames (:func:`~stdyn.models.vos.mask_loss`), averaged over
      the batch's matched instances;
    - ``dice``: 1 - the spatio-temporal soft Dice of each matched pair over the annotated frames
      (:func:`~stdyn.models.vos.dice_loss` of the flattened sequences), averaged the same way.

    A batch without instances has ``mask = dice = 0`` (still attached to the graph). With
    ``components=True`` returns ``{"class", "mask", "dice", "total"}`` (the first three unweighted).
    """
    class_logits, mask_logits, classes, masks, frame_weights = _batched(class_logits, mask_logits, classes,
                                                                        masks, frame_weights)
    matches = _match_batch(class_logits, mask_logits, classes, masks, frame_weights,
                           class_weight=1.0, mask_weight=mask_weight, dice_weight=dice_weight)
    batch, queries, columns = class_logits.shape
    no_object = columns - 1
    targets = torch.full((batch, queries), no_object, dtype=torch.long, device=class_logits.device)
    for b, (rows, slots) in enumerate(matches):
        targets[b, rows] = classes[b, slots].long()
    weight = torch.ones(columns, dtype=class_logits.dtype, device=class_logits.device)
    weight[no_object] = no_object_weight
    class_term = F.cross_entropy(class_logits.flatten(0, 1), targets.flatten(), weight=weight)

    mask_sum = dice_sum = mask_logits.sum() * 0.0  # stays differentiable without instances
    matched = 0
    for b, (rows, slots) in enumerate(matches):
        if len(rows) == 0:
            continue
        annotated = _annotated(None if frame_weights is None else frame_weights[b], mask_logits.shape[2],
                               mask_logits.device)
        logits, target = _flat_masks(mask_logits[b, rows], masks[b, slots], annotated)
        mask_sum = mask_sum + len(rows) * mask_loss(logits, target)
        dice_sum = dice_sum + len(rows) * dice_loss(logits, target, smooth=_SMOOTH)
        matched += len(rows)
    mask_term, dice_term = mask_sum / max(matched, 1), dice_sum / max(matched, 1)
    total = class_term + mask_weight * mask_term + dice_weight * dice_term
    if components:
        return {"class": class_term, "mask": mask_term, "dice": dice_term, "total": total}
    return total


@torch.no_grad()
def matched_iou(class_logits: Tensor, mask_logits: Tensor, classes: Tensor, masks: Tensor) -> Tensor:
    """The per-clip training score (B,) of a batch (or (1,) of one clip), float, on the logits' device.

    Each clip's queries are matched to its real instances (:func:`match_costs` with default
    weights over all frames, :func:`hungarian_match`); the score is the mean over the instances of
    the spatio-temporal IoU (:func:`spatiotemporal_iou`, both empty = 0) between the instance's mask
    and its query's mask ``logits > 0``. A clip without real instances scores 1 if no query
    predicts an object (every query's arg-max class is "no object"), else 0.
    """
    class_logits, mask_logits, classes, masks, _ = _batched(class_logits, mask_logits, classes, masks, None)
    matches = _match_batch(class_logits, mask_logits, classes, masks, None)
    scores = torch.zeros(class_logits.shape[0], device=class_logits.device)
    no_object = class_logits.shape[-1] - 1
    for b, (rows, slots) in enumerate(matches):
        if len(rows) == 0:
            scores[b] = float(bool((class_logits[b].argmax(-1) == no_object).all()))
            continue
        pred = (mask_logits[b, rows] > 0).flatten(1)
        target = (masks[b, slots] > 0.5).flatten(1)
        intersection = (pred & target).sum(1).double()
        union = (pred | target).sum(1).double()
        scores[b] = torch.where(union > 0, intersection / union.clamp(min=1), 0.0).mean().float()
    return scores


# ---------------------------------------------------------------------------------------------
# Video IoU and video mask AP


def spatiotemporal_iou(pred_masks: Any, gt_masks: Any) -> np.ndarray:
    """Video IoU (P, G) of masks (P, T, H, W) and (G, T, H, W): the intersections summed over
    frames divided by the unions summed over frames (YouTube-VIS's ``iou_seq``). Two masks empty
    in every frame score 0, as in the YouTube-VIS evaluation code (its union is then 0). Masks
    are boolean, or numbers where ``> 0.5`` is foreground."""
    p, g = _binary(pred_masks), _binary(gt_masks)
    if p.ndim != 4 or g.ndim != 4 or p.shape[1:] != g.shape[1:]:
        raise ValueError(f"expected masks (P, T, H, W) and (G, T, H, W) of the same T, H, W, got shapes "
                         f"{p.shape} and {g.shape}")
    pixels = int(np.prod(p.shape[1:]))
    dtype = np.float32 if pixels < 2**24 else np.float64  # integer counts stay exact
    pf, gf = p.reshape(len(p), pixels).astype(dtype), g.reshape(len(g), pixels).astype(dtype)
    intersection = (pf @ gf.T).astype(np.float64)
    union = pf.sum(1, dtype=np.float64)[:, None] + gf.sum(1, dtype=np.float64)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


@dataclass(frozen=True)
class VideoAP:
    """Video mask AP by the YouTube-VIS protocol.

    ``ap``: the mean over the classes with ground truth and the IoU thresholds of AP (nan when no
    class has ground truth); ``ap50``, ``ap75``: the mean over those classes at IoU 0.5 and 0.75
    (nan when not among the thresholds); ``table``: AP (classes x thresholds), nan rows for classes
    without ground truth; ``per_class``: per class ``n_gt``, ``n_pred``, ``AP`` (mean over
    thresholds), ``AP50``, ``AP75``; ``per_threshold``: AP at each threshold, the mean over the
    classes with ground truth.
    """

    ap: float
    ap50: float
    ap75: float
    per_class: pd.DataFrame
    per_threshold: pd.Series
    table: pd.DataFrame

    def summary(self) -> pd.Series:
        """``AP``, ``AP50`` and ``AP75`` as a Series."""
        return pd.Series({"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75}, name="mask_ap")


def _entry(item: Any, keys: tuple[str, ...], index: int, kind: str) -> tuple[np.ndarray, ...]:
    """The arrays ``keys`` of a per-clip dict (or tuple in that order)."""
    if isinstance(item, Mapping):
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"{kind} {index}: missing {missing}; expected a dict with {list(keys)}")
        return tuple(_numpy(item[k]) for k in keys)
    if isinstance(item, (tuple, list)) and len(item) == len(keys):
        return tuple(_numpy(x) for x in item)
    raise ValueError(f"{kind} {index}: expected a dict with {list(keys)} or a tuple in that order, "
                     f"got {type(item).__name__}")


def _clip_truth(item: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    masks, labels = _entry(item, ("masks", "labels"), index, "ground truth")
    masks, labels = _binary(masks), labels.astype(np.int64).reshape(-1)
    if masks.ndim != 4 or len(masks) != len(labels):
        raise ValueError(f"ground truth {index}: expected masks (G, T, H, W) and labels (G,), got shapes "
                         f"{masks.shape} and {labels.shape}")
    keep = labels >= 0
    return masks[keep], labels[keep]


def _clip_prediction(item: Any, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masks, scores, labels = _entry(item, ("masks", "scores", "labels"), index, "prediction")
    masks, scores, labels = _binary(masks), scores.astype(np.float64).reshape(-1), labels.astype(np.int64).reshape(-1)
    if masks.ndim != 4 or not len(masks) == len(scores) == len(labels):
        raise ValueError(f"prediction {index}: expected masks (P, T, H, W), scores (P,) and labels (P,), got "
                         f"shapes {masks.shape}, {scores.shape} and {labels.shape}")
    if (labels < 0).any():
        raise ValueError(f"prediction {index}: labels must be >= 0, got {sorted(set(labels.tolist()))}")
    return masks, scores, labels


def _match_detections(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO's greedy matching in one clip and class: detections (D, rows of ``ious``, by
    descending score) each take the unmatched ground truth of highest IoU >= t (ties: the last,
    as pycocotools). Returns true-positive flags (len(thresholds), D)."""
    n_det, n_gt = ious.shape
    tp = np.zeros((len(thresholds), n_det), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(n_gt, dtype=bool)
        for d in range(n_det):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(n_gt):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m], tp[ti, d] = True, True
    return tp


def _average_precision(tp: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated AP from true-positive flags ordered by descending score."""
    if tp.size == 0:
        return 0.0
    tps, fps = np.cumsum(tp), np.cumsum(~tp)
    recall = tps / n_gt
    precision = tps / (tps + fps)  # pycocotools adds 2.2e-16 to the rank, which is never 0
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the monotone envelope
    points = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    reached = points < len(precision)
    sampled = np.zeros(len(RECALL_THRESHOLDS))
    sampled[reached] = precision[points[reached]]
    return float(sampled.mean())


@dataclass(frozen=True)
class ClipEvaluation:
    """One clip's detections matched to its ground truth (COCO's ``evaluateImg``), per class and
    IoU threshold: what :func:`accumulate` turns into AP.

    ``labels`` (D,) and ``scores`` (D,) of the kept detections, grouped by class (ascending) and
    by descending score (stable) within a class; ``tp`` (len(thresholds), D) whether each took a
    ground-truth instance at each threshold; ``gt_labels`` (G,) the real instances' classes;
    ``thresholds`` the IoU thresholds.
    """

    labels: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    gt_labels: np.ndarray
    thresholds: np.ndarray


def _thresholds(iou_thresholds: Sequence[float]) -> np.ndarray:
    thresholds = np.round(np.asarray(iou_thresholds, dtype=np.float64).reshape(-1), 10)
    if thresholds.size == 0:
        raise ValueError("video AP needs at least one IoU threshold")
    return thresholds


def evaluate_clips(predictions: Sequence[Any], ground_truths: Sequence[Any],
                   iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                   max_detections: int | None = 100) -> list[ClipEvaluation]:
    """Match each clip's predictions to its ground truth, class by class (the expensive, per-clip
    half of :func:`video_ap`; :func:`accumulate` does the rest, so a bootstrap over clips can
    resample these instead of recomputing video IoUs).

    In each clip and class, at most ``max_detections`` predictions (the highest scores, as
    pycocotools' maxDets per image and class), by descending score (stable), each take the not
    yet taken ground-truth instance of that class of the highest :func:`spatiotemporal_iou` >= t
    (ties: the last instance, as pycocotools); the others are false positives, duplicates of a
    taken instance too. IoU thresholds are rounded to 10 decimals, so ``np.arange(0.5, 0.96,
    0.05)`` compares as written.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"got predictions for {len(predictions)} clips and ground truth for {len(ground_truths)}")
    thresholds = _thresholds(iou_thresholds)
    evaluations = []
    for i, (prediction, ground_truth) in enumerate(zip(predictions, ground_truths)):
        gm, gl = _clip_truth(ground_truth, i)
        pm, ps, pl = _clip_prediction(prediction, i)
        if len(gm) and len(pm) and gm.shape[1:] != pm.shape[1:]:
            raise ValueError(f"clip {i}: predicted masks (P, T, H, W) = {pm.shape} and ground-truth masks "
                             f"(G, T, H, W) = {gm.shape} differ in T, H, W")
        order = np.lexsort((-ps, pl))  # by class, then by descending score; stable
        if max_detections is not None:
            rank = np.arange(len(order)) - np.searchsorted(pl[order], pl[order], side="left")
            order = order[rank < max_detections]
        tp = np.zeros((len(thresholds), len(order)), dtype=bool)
        if len(order) and len(gm):
            ious = spatiotemporal_iou(pm[order], gm)  # (D, G)
            labels = pl[order]
            for k in np.intersect1d(labels, gl):
                rows, cols = np.flatnonzero(labels == k), np.flatnonzero(gl == k)
                tp[:, rows] = _match_detections(ious[np.ix_(rows, cols)], thresholds)
        evaluations.append(ClipEvaluation(labels=pl[order], scores=ps[order], tp=tp, gt_labels=gl,
                                          thresholds=thresholds))
    return evaluations


def accumulate(evaluations: Sequence[ClipEvaluation], num_classes: int | None = None) -> VideoAP:
    """Video mask AP from clip evaluations (:func:`evaluate_clips`; a clip may appear more than
    once, as in a bootstrap resample), COCO's ``accumulate`` and ``summarize``.

    Per class and threshold, all the clips' detections of the class are ranked by descending
    score (a stable sort over the clips in order), precision and recall computed down the
    ranking, the precision made monotone (each the maximum of those at higher recall) and sampled
    at recall 0, 0.01, ..., 1 (:data:`RECALL_THRESHOLDS`; 0 past the highest recall reached); AP
    is the mean of the samples. Classes without ground truth are skipped (COCO's -1); their
    detections count for nothing. The classes are 0 .. ``num_classes`` - 1 when given (every
    label must be below it), else those of the ground truth and detections.
    """
    if not evaluations:
        raise ValueError("accumulate needs at least one clip evaluation")
    thresholds = evaluations[0].thresholds
    if any(not np.array_equal(e.thresholds, thresholds) for e in evaluations):
        raise ValueError("the clip evaluations were made with different IoU thresholds")
    labels = np.concatenate([e.labels for e in evaluations])
    scores = np.concatenate([e.scores for e in evaluations])
    tp = np.concatenate([e.tp for e in evaluations], axis=1)
    gt_labels = np.concatenate([e.gt_labels for e in evaluations])
    seen = np.union1d(labels, gt_labels).astype(np.int64)
    if num_classes is None:
        class_ids = seen.tolist()
    else:
        if seen.size and seen.max() >= num_classes:
            raise ValueError(f"labels must be below num_classes = {num_classes}, got {seen.max()}")
        class_ids = list(range(num_classes))

    table = np.full((len(class_ids), len(thresholds)), np.nan)
    counts = np.zeros((len(class_ids), 2), dtype=np.int64)
    for ci, k in enumerate(class_ids):
        mine = np.flatnonzero(labels == k)
        counts[ci] = int((gt_labels == k).sum()), len(mine)
        if counts[ci, 0] == 0:
            continue
        ranked = mine[np.argsort(-scores[mine], kind="mergesort")]
        table[ci] = [_average_precision(tp[ti, ranked], int(counts[ci, 0])) for ti in range(len(thresholds))]

    columns = pd.Index(thresholds, name="iou_threshold")
    table_frame = pd.DataFrame(table, index=pd.Index(class_ids, name="class"), columns=columns)
    with_gt = counts[:, 0] > 0

    def at(t: float) -> np.ndarray:
        hits = np.flatnonzero(np.isclose(thresholds, t))
        return table[:, hits[0]] if hits.size else np.full(len(class_ids), np.nan)

    per_class = pd.DataFrame({"n_gt": counts[:, 0], "n_pred": counts[:, 1], "AP": table.mean(axis=1),
                              "AP50": at(0.5), "AP75": at(0.75)}, index=table_frame.index)

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[with_gt])) if with_gt.any() else float("nan")

    per_threshold = pd.Series([mean(table[:, ti]) for ti in range(len(thresholds))], index=columns, name="AP")
    return VideoAP(ap=mean(table.mean(axis=1)), ap50=mean(at(0.5)), ap75=mean(at(0.75)), per_class=per_class,
                   per_threshold=per_threshold, table=table_frame)


def video_ap(predictions: Sequence[Any], ground_truths: Sequence[Any],
             iou_thresholds: Sequence[float] = IOU_THRESHOLDS, num_classes: int | None = None,
             max_detections: int | None = 100) -> VideoAP:
    """Video-level mask AP over clips by the YouTube-VIS protocol (pycocotools' COCOeval with video
    IoU): ``accumulate(evaluate_clips(predictions, ground_truths, iou_thresholds, max_detections),
    num_classes)``.

    ``predictions`` and ``ground_truths``: one entry per clip (see the module docstring). In each
    clip and class the predictions, by descending score, greedily take the instance of highest
    video IoU >= t (:func:`evaluate_clips`); over all clips, AP per class and threshold is COCO's
    101-point interpolated precision; classes without ground truth are skipped; mask AP is the
    mean over classes and thresholds (:func:`accumulate`). See :class:`VideoAP` for the result.
    """
    return accumulate(evaluate_clips(predictions, ground_truths, iou_thresholds, max_detections), num_classes)


# ---------------------------------------------------------------------------------------------
# Predictions


@torch.no_grad()
def clip_predictions(class_logits: Tensor, mask_logits: Tensor, *, top_k: int | None = None,
                     mask_quality: bool = False) -> list[dict[str, np.ndarray]]:
    """Model outputs of a batch, (B, Q, K + 1) and (B, Q, T, H, W) (or one clip without B), as the
    per-clip predictions :func:`video_ap` takes: one dict per clip with ``masks`` (P, T, H, W)
    bool (``logits > 0``), ``scores`` (P,) float64 and ``labels`` (P,) int64.

    VisTR's scoring: each query's label is its most probable real class (never "no object"), its
    score that class's softmax probability over all K + 1 classes. With ``mask_quality`` the score
    is multiplied by the mean foreground probability inside the predicted mask (0 for an empty
    one), as Mask2Former ranks its predictions: a confident class over a vague mask then ranks
    below a clear track. All queries are kept, in query order; with ``top_k`` the ``top_k``
    highest-scoring ones, by descending score (stable).
    """
    if class_logits.dim() == 2 and mask_logits.dim() == 4:
        class_logits, mask_logits = class_logits.unsqueeze(0), mask_logits.unsqueeze(0)
    if (class_logits.dim() != 3 or mask_logits.dim() != 5 or class_logits.shape[:2] != mask_logits.shape[:2]
            or class_logits.shape[2] < 2):
        raise ValueError(f"expected class logits (B, Q, K + 1) with K >= 1 and mask logits (B, Q, T, H, W), got "
                         f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}")
    probs = class_logits.float().softmax(-1)[..., :-1]
    scores, labels = probs.max(-1)
    foreground = mask_logits > 0
    if mask_quality:
        inside = (mask_logits.float().sigmoid() * foreground).flatten(2).sum(-1)
        scores = scores * inside / foreground.flatten(2).sum(-1).clamp(min=1)
    masks = foreground.cpu().numpy()
    scores, labels = scores.double().cpu().numpy(), labels.long().cpu().numpy()
    out = []
    for b in range(class_logits.shape[0]):
        keep = np.arange(class_logits.shape[1])
        if top_k is not None:
            keep = np.argsort(-scores[b], kind="stable")[:top_k]
        out.append({"masks": masks[b, keep], "scores": scores[b, keep], "labels": labels[b, keep]})
    return out


def constant_track_predictions(train_classes: Any, train_masks: Any, n_clips: int,
                               thresholds: Sequence[float] = _TRACK_THRESHOLDS) -> list[dict[str, np.ndarray]]:
    """The best constant tracks: the same predictions for each of ``n_clips`` clips, ignoring them.

    From training ground truth, ``train_classes`` (N, M) (-1: padding) and ``train_masks``
    (N, M, T, H, W): one track per class with training instances, its mask (T, H, W) the share of
    the class's training instances covering each pixel, thresholded (``> t``) at the ``t`` of
    ``thresholds`` (default 0, 0.05, ..., 0.95; ties: the lowest) with the highest mean
    :func:`spatiotemporal_iou` against those instances; its score the class's share of all
    training instances. Returns ``n_clips`` dicts (``masks``, ``scores``, ``labels``, classes
    ascending) sharing read-only arrays.
    """
    classes, masks = _numpy(train_classes).astype(np.int64), _numpy(train_masks)
    if classes.ndim != 2 or masks.ndim != 5 or masks.shape[:2] != classes.shape:
        raise ValueError(f"expected training classes (N, M) and masks (N, M, T, H, W), got shapes {classes.shape} "
                         f"and {masks.shape}")
    valid = classes >= 0
    labels = classes[valid]
    if labels.size == 0:
        raise ValueError("constant_track_predictions needs at least one training instance")
    candidates = np.asarray(thresholds, dtype=np.float64)
    tracks, scores, kinds = [], [], np.unique(labels)
    for k in kinds:
        own = _binary(masks[valid & (classes == k)])  # (I_k, T, H, W)
        frequency = own.mean(axis=0)
        options = frequency[None] > candidates[:, None, None, None]  # (C, T, H, W)
        quality = sum(spatiotemporal_iou(options, own[i:i + _CHUNK]).sum(axis=1)
                      for i in range(0, len(own), _CHUNK))
        tracks.append(options[int(np.argmax(quality))])
        scores.append(len(own) / len(labels))
    prediction = {"masks": np.stack(tracks), "scores": np.asarray(scores, dtype=np.float64),
                  "labels": kinds.astype(np.int64)}
    for array in prediction.values():
        array.flags.writeable = False
    return [dict(prediction) for _ in range(n_clips)]
