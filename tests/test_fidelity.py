"""Fidelity figures: probe clips with exact masks and flow, visibility, flow agreement, floors."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from stdyn.fidelity import (KEPT, MOVING_PX, STATISTICS, decorrelation, fidelity, flow_agreement,
                            local_contrast, probe_clips, shortfalls, visibility)
from stdyn.stylize import STYLES

torch.set_num_threads(1)


def test_probe_clips_shapes_ranges_and_seeding():
    clips, masks, flow = probe_clips(6, frames=5, size=24, seed=1)
    assert clips.shape == (6, 3, 5, 24, 24) and masks.shape == (6, 5, 24, 24) and flow.shape == (6, 2, 4, 24, 24)
    assert 0 <= clips.min() and clips.max() <= 1 and 0 <= masks.min() and masks.max() <= 1
    assert (masks > 0.5).flatten(2).any(2).all()  # the object is in every frame
    assert (flow.norm(dim=1)[masks[:, :-1] == 0] == 0).all()  # no flow off the object
    again = probe_clips(6, frames=5, size=24, seed=1)
    assert all(torch.equal(x, y) for x, y in zip((clips, masks, flow), again))
    assert not torch.equal(clips, probe_clips(6, frames=5, size=24, seed=2)[0])


def test_probe_flow_carries_the_object_onto_itself():
    """Where the object fully covers a pixel at t, following its exact flow lands on the object
    at t + 1."""
    _, masks, flow = probe_clips(16, frames=4, size=32, seed=0)
    b, t, h, w = masks.shape
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    target_x, target_y = x + flow[:, 0], y + flow[:, 1]  # (B, T - 1, H, W)
    grid = torch.stack([2 * target_x / w - 1, 2 * target_y / h - 1], -1).reshape(b * (t - 1), h, w, 2)
    landed = F.grid_sample(masks[:, 1:].reshape(b * (t - 1), 1, h, w), grid, align_corners=False).view(b, t - 1, h, w)
    covered = (masks[:, :-1] == 1).float().view(b * (t - 1), 1, h, w)
    solid = (-F.max_pool2d(-covered, 3, 1, 1)).view(b, t - 1, h, w) > 0  # a pixel inside the edge
    assert landed[solid].mean() > 0.99 and landed[solid].min() > 0.9
    assert (flow.norm(dim=1)[solid] >= MOVING_PX).float().mean() > 0.9  # nearly every object pixel moves


def test_local_contrast_sees_thin_lines_and_edges():
    frame = torch.zeros(1, 3, 1, 9, 9)
    frame[..., 4] = 1.0  # a one-pixel vertical line
    contrast = local_contrast(frame)[0, 0]
    assert contrast[:, 3:6].min() > 1.5 and contrast[:, :3].max() == 0


def test_visibility_separates_a_plain_object_from_a_hidden_one():
    clips, masks, _ = probe_clips(8, frames=4, size=32, seed=0)
    seen = visibility(clips, masks)
    assert seen.shape == (8,) and seen.mean() > 0.85 and (seen <= 1).all()
    flat = torch.full_like(clips, 0.5)  # nothing to see: every pixel ties
    assert torch.allclose(visibility(flat, masks), torch.full((8,), 0.5, dtype=torch.float64))
    outline_only = torch.full_like(clips, 0.8)
    ring = (F.max_pool2d((masks > 0.5).float(), 3, 1, 1) - (masks > 0.5).float())[:, None] > 0
    outline_only = torch.where(ring.expand_as(clips), torch.zeros_like(clips), outline_only)
    assert visibility(outline_only, masks).mean() > 0.95  # an outline alone shows the object
    nothing = torch.zeros(1, 4, 32, 32)
    assert torch.isnan(visibility(clips[:1], nothing)).all()


def test_flow_agreement_on_moving_and_frozen_clips():
    clips, masks, flow = probe_clips(6, frames=5, size=32, seed=2)
    cosine, error = flow_agreement(clips, flow, masks)
    assert cosine.shape == error.shape == (6,)
    assert cosine.mean() > 0.9 and error.mean() < 0.6
    frozen = clips[:, :, :1].expand_as(clips).contiguous()
    cosine, error = flow_agreement(frozen, flow, masks)
    assert cosine.abs().max() < 0.05  # no estimated motion: no agreement
    assert error.mean() > 0.5
    still = torch.zeros_like(flow)
    assert torch.isnan(flow_agreement(clips, still, masks)[0]).all()


@pytest.mark.parametrize("size, n", [(16, 32), (32, 24), (64, 10)])
def test_every_style_keeps_the_object_and_its_motion(size, n):
    clips, masks, flow = probe_clips(n, frames=6, size=size, seed=7)
    frame = fidelity(clips, masks, flow)
    assert list(frame.columns) == ["style", "metric", "value", "ratio"]
    assert list(dict.fromkeys(frame["style"])) == ["clean", *STYLES]
    assert set(frame["metric"]) == {"visibility", "flow_cosine", "flow_error"}
    clean = frame[frame["style"] == "clean"]
    assert (clean["ratio"] == 1).all()
    assert clean.set_index("metric").loc["visibility", "value"] > 0.85
    missing = shortfalls(frame, size)
    assert missing.empty, missing.to_string()
    assert set(KEPT[size]) == {"visibility", "flow_cosine"}


def test_shortfalls_use_the_floors_of_the_nearest_smaller_size():
    frame = pd.DataFrame({"style": ["clean", "thermal", "clean", "thermal"],
                          "metric": ["visibility", "visibility", "flow_cosine", "flow_cosine"],
                          "value": [1.0, 0.88, 1.0, 0.8], "ratio": [1.0, 0.88, 1.0, 0.8]})
    assert shortfalls(frame, 16).empty
    assert list(shortfalls(frame, 48)["metric"]) == ["visibility", "flow_cosine"]
    assert list(shortfalls(frame, 112)["metric"]) == ["visibility", "flow_cosine"]


def test_decorrelation_table_layout():
    clips, _, _ = probe_clips(40, frames=3, size=16, seed=0)
    table = decorrelation(clips, styles=STYLES[:3], batch_size=16)
    assert list(table.columns) == ["style_a", "style_b", "statistic", "r", "decorrelated"]
    assert len(table) == 3 * len(STATISTICS)
    assert table["r"].between(-1, 1).all()
    same = decorrelation(clips, styles=["comic", "comic"])
    assert (same["r"] > 0.999).all()  # a style against itself


def test_fidelity_checks_its_inputs():
    clips, masks, flow = probe_clips(2, frames=3, size=16, seed=0)
    with pytest.raises(ValueError, match="masks"):
        fidelity(clips, masks[:, 1:], flow)
    with pytest.raises(ValueError, match="flow"):
        fidelity(clips, masks, flow[:, :, 1:])
    with pytest.raises(ValueError, match="clips"):
        fidelity(clips[:, :2], masks, flow)
