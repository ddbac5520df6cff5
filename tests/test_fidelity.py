"""Fidelity figures: world clips with exact masks and flow, visibility, flow agreement, floors."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from stdyn.core.fidelity import (
    KEPT,
    METRICS,
    STATISTICS,
    clip_fidelity,
    correlations,
    decorrelation,
    fidelity,
    flow_agreement,
    least_margin,
    local_contrast,
    max_abs_r,
    shortfalls,
    style_statistics,
    summarise,
    visibility,
    world_clips,
)
from stdyn.core.stylize import STYLES

torch.set_num_threads(1)


def test_world_clips_shapes_ranges_and_seeding():
    clips, masks, flow = world_clips(6, frames=5, size=24, seed=1)
    assert clips.shape == (6, 3, 5, 24, 24) and masks.shape == (6, 5, 24, 24) and flow.shape == (6, 2, 4, 24, 24)
    assert 0 <= clips.min() and clips.max() <= 1 and 0 <= masks.min() and masks.max() <= 1
    assert (flow.norm(dim=1)[masks[:, :-1] == 0] == 0).all()  # no flow off the object
    again = world_clips(6, frames=5, size=24, seed=1)
    assert all(torch.equal(x, y) for x, y in zip((clips, masks, flow), again))
    assert not torch.equal(clips, world_clips(6, frames=5, size=24, seed=2)[0])
    kinetics = world_clips(6, frames=5, size=24, seed=1, world="kinetics")
    assert not torch.equal(clips, kinetics[0])


def test_local_contrast_sees_thin_lines_and_edges():
    frame = torch.zeros(1, 3, 1, 9, 9)
    frame[..., 4] = 1.0  # a one-pixel vertical line
    contrast = local_contrast(frame)[0, 0]
    assert contrast[:, 3:6].min() > 1.5 and contrast[:, :3].max() == 0


def test_visibility_separates_a_plain_object_from_a_hidden_one():
    clips, masks, _ = world_clips(8, frames=4, size=32, seed=0)
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
    clips, masks, flow = world_clips(8, frames=8, size=32, seed=2)
    cosine, error = flow_agreement(clips, flow, masks)
    assert cosine.shape == error.shape == (8,)
    moves = ~torch.isnan(cosine)  # an object that only fades in or out has no moving pixels
    assert moves.sum() >= 5 and torch.equal(moves, ~torch.isnan(error))
    assert cosine[moves].mean() > 0.9 and error[moves].mean() < 0.6
    frozen = clips[:, :, :1].expand_as(clips).contiguous()
    cosine, error = flow_agreement(frozen, flow, masks)
    assert cosine[moves].abs().max() < 0.05  # no estimated motion: no agreement
    assert error[moves].mean() > 0.5
    still = torch.zeros_like(flow)
    assert torch.isnan(flow_agreement(clips, still, masks)[0]).all()


@pytest.fixture(scope="module", params=[(16, 64), (32, 48), (64, 16)], ids=["16px", "32px", "64px"])
def per_clip(request) -> tuple[int, pd.DataFrame]:
    """Per-clip fidelity of world clips (8 frames) at one size."""
    size, n = request.param
    return size, clip_fidelity(*world_clips(n, frames=8, size=size, seed=7))


def test_per_clip_fidelity_and_its_summary(per_clip):
    size, frame = per_clip
    assert list(frame.columns.names) == ["style", "metric"]
    assert list(dict.fromkeys(frame.columns.get_level_values("style"))) == ["clean", *STYLES]
    assert list(frame.columns[:3].get_level_values("metric")) == list(METRICS)
    summary = summarise(frame)
    assert list(summary.columns) == ["style", "metric", "value", "ratio"]
    assert len(summary) == (1 + len(STYLES)) * len(METRICS)
    clean = summary[summary["style"] == "clean"]
    assert (clean["ratio"] == 1).all()
    assert clean.set_index("metric").loc["visibility", "value"] > 0.85
    styled = summary[summary["style"] != "clean"].set_index(["style", "metric"])["ratio"]
    margin = min(styled[(s, m)] - floor for s in STYLES for m, floor in KEPT[size].items())
    assert least_margin(frame, size) == pytest.approx(margin)
    assert least_margin(frame.iloc[::2], size) != least_margin(frame, size)  # a subset of clips
    with pytest.raises(ValueError, match="metrics"):
        least_margin(frame, size, ["flow_error"])


def test_every_style_keeps_the_object(per_clip):
    size, frame = per_clip
    missing = shortfalls(summarise(frame), size).query("metric == 'visibility'")
    assert missing.empty, missing.to_string()
    assert least_margin(frame, size, ["visibility"]) >= 0


def test_every_style_keeps_the_motion(per_clip):
    size, frame = per_clip
    missing = shortfalls(summarise(frame), size).query("metric == 'flow_cosine'")
    assert missing.empty, missing.to_string()


def test_fidelity_is_the_summary_of_the_per_clip_values():
    clips, masks, flow = world_clips(6, frames=4, size=16, seed=0)
    frame = fidelity(clips, masks, flow, styles=STYLES[:2])
    pd.testing.assert_frame_equal(frame, summarise(clip_fidelity(clips, masks, flow, styles=STYLES[:2])))
    assert list(dict.fromkeys(frame["style"])) == ["clean", *STYLES[:2]]


def test_shortfalls_use_the_floors_of_the_nearest_smaller_size():
    frame = pd.DataFrame({"style": ["clean", "thermal", "clean", "thermal"],
                          "metric": ["visibility", "visibility", "flow_cosine", "flow_cosine"],
                          "value": [1.0, 0.88, 1.0, 0.8], "ratio": [1.0, 0.88, 1.0, 0.8]})
    assert shortfalls(frame, 16).empty
    assert list(shortfalls(frame, 48)["metric"]) == ["visibility", "flow_cosine"]
    assert list(shortfalls(frame, 112)["metric"]) == ["visibility", "flow_cosine"]


def test_decorrelation_table_layout():
    clips = world_clips(40, frames=3, size=16, seed=0)[0]
    table = decorrelation(clips, styles=STYLES[:3], batch_size=16)
    assert list(table.columns) == ["style_a", "style_b", "statistic", "r", "decorrelated"]
    assert len(table) == 3 * len(STATISTICS)
    assert table["r"].between(-1, 1).all()
    same = decorrelation(clips, styles=["comic", "comic"])
    assert len(same) == len(STATISTICS) and (same["r"] > 0.999).all()  # a style against itself


def test_max_abs_r_is_the_worst_decorrelated_r_on_any_clips():
    clips = world_clips(60, frames=3, size=16, seed=1)[0]
    statistics = style_statistics(clips, batch_size=16)
    assert set(statistics) == set(STYLES) and statistics["comic"].shape == (60, len(STATISTICS))
    table = correlations(statistics)
    pd.testing.assert_frame_equal(table, decorrelation(clips))
    assert max_abs_r(statistics) == pytest.approx(table.loc[table["decorrelated"], "r"].abs().max())
    resample = torch.randint(0, 60, (60,), generator=torch.Generator().manual_seed(0))
    resampled = correlations({style: values[resample] for style, values in statistics.items()})
    assert max_abs_r(statistics, resample.numpy()) == pytest.approx(
        resampled.loc[resampled["decorrelated"], "r"].abs().max())


def test_fidelity_checks_its_inputs():
    clips, masks, flow = world_clips(2, frames=3, size=16, seed=0)
    with pytest.raises(ValueError, match="masks"):
        fidelity(clips, masks[:, 1:], flow)
    with pytest.raises(ValueError, match="flow"):
        fidelity(clips, masks, flow[:, :, 1:])
    with pytest.raises(ValueError, match="clips"):
        fidelity(clips[:, :2], masks, flow)
