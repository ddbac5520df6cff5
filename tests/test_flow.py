"""Flow images: HSV round trip, jitter ranges, and Farneback flow on a moving texture."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stdyn.data.flow import (
    HUE_SHIFT_BOUND,
    SATURATION_SPREAD,
    farneback,
    flow_to_image,
    hsv_to_rgb,
    image_to_flow,
    jitter_flow_image,
    rgb_to_hsv,
)

torch.set_num_threads(1)


def _random_flow(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, 2, 16, 16, generator=torch.Generator().manual_seed(seed)) * 3


def test_round_trip_flow_image_flow():
    flow = _random_flow(4)
    magnitude = flow.norm(dim=1)
    max_magnitude = float(magnitude.max())
    image = flow_to_image(flow)  # default max: the largest magnitude in the input
    assert image.shape == (4, 3, 16, 16) and image.min() >= 0 and image.max() <= 1
    assert torch.allclose(image_to_flow(image, max_magnitude), flow, atol=1e-4 * max_magnitude)
    explicit = flow_to_image(flow, max_magnitude=2 * max_magnitude)
    assert torch.allclose(image_to_flow(explicit, 2 * max_magnitude), flow, atol=1e-4 * max_magnitude)


def test_encoding_hue_is_direction_saturation_is_magnitude_value_is_one():
    right, down, left = ([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    flow = torch.tensor([right, down, left, [0.5, 0.0], [4.0, 0.0]])[..., None, None]  # (5, 2, 1, 1)
    hsv = rgb_to_hsv(flow_to_image(flow, max_magnitude=1.0))[..., 0, 0]
    assert hsv[:3, 0].tolist() == pytest.approx([0.0, 0.25, 0.5], abs=1e-6)
    assert hsv[:, 1].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.5, 1.0], abs=1e-6)  # clipped at max
    assert torch.all(hsv[:, 2] == 1)
    assert torch.allclose(flow_to_image(torch.zeros(2, 4, 4)), torch.ones(3, 4, 4))  # no motion: white


def test_hsv_conversions_invert_each_other():
    rgb = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5)


def test_jitter_stays_within_the_stated_ranges_and_keeps_value():
    flow = _random_flow(64, seed=1)
    image = flow_to_image(flow)
    jittered = jitter_flow_image(image, np.random.default_rng(0))
    before, after = rgb_to_hsv(image), rgb_to_hsv(jittered)
    assert torch.allclose(after[:, 2], torch.ones_like(after[:, 2]), atol=1e-6)
    saturated = before[:, 1] > 0.2  # where hue is well defined
    hue_shift = torch.remainder(after[:, 0] - before[:, 0] + 0.5, 1.0) - 0.5
    factor = after[:, 1] / before[:, 1].clamp(min=1e-6)
    shifts, factors = [], []
    for frame in range(64):
        frame_shift = hue_shift[frame][saturated[frame]]
        # one shift and one factor per frame
        assert frame_shift.max() - frame_shift.min() < 1e-4
        unclipped = saturated[frame] & (after[frame, 1] < 0.999)
        frame_factor = factor[frame][unclipped]
        assert frame_factor.max() - frame_factor.min() < 1e-3
        shifts.append(float(frame_shift[0]))
        factors.append(float(frame_factor[0]))
    shifts, factors = np.array(shifts), np.array(factors)
    assert np.abs(shifts).max() <= HUE_SHIFT_BOUND[1] + 1e-5
    assert np.abs(factors - 1).max() <= SATURATION_SPREAD[1] + 1e-5
    assert np.abs(shifts).max() > 0.2 and np.abs(factors - 1).max() > 0.5  # the ranges are used
    assert (shifts > 0).any() and (shifts < 0).any() and (factors > 1).any() and (factors < 1).any()


def test_jitter_is_seeded():
    image = flow_to_image(_random_flow(3))
    same = [jitter_flow_image(image, np.random.default_rng(7)) for _ in range(2)]
    assert torch.equal(*same)
    assert not torch.equal(same[0], jitter_flow_image(image, np.random.default_rng(8)))


def test_jittered_flow_decodes_to_different_motion():
    flow = _random_flow(8, seed=2)
    max_magnitude = float(flow.norm(dim=1).max())
    jittered = jitter_flow_image(flow_to_image(flow), np.random.default_rng(1))
    decoded = image_to_flow(jittered, max_magnitude)
    assert (decoded - flow).norm(dim=1).mean() > 0.2 * flow.norm(dim=1).mean()


def test_farneback_recovers_the_direction_of_a_translated_texture():
    g = torch.Generator().manual_seed(0)
    texture = F.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(96, 96), mode="bicubic").clamp(0, 1)[0]
    dy, dx = 1, 2
    clip = torch.stack([torch.roll(texture, (t * dy, t * dx), (1, 2)) for t in range(4)], 1)
    flow = farneback(clip)
    assert flow.shape == (3, 2, 96, 96) and flow.dtype == torch.float32
    interior = flow[:, :, 24:72, 24:72]
    median = interior.flatten(2).median(2).values  # (T - 1, 2)
    for step in median:
        angle = math.degrees(math.atan2(float(step[1]), float(step[0])))
        assert angle == pytest.approx(math.degrees(math.atan2(dy, dx)), abs=10)
        assert float(step.norm()) == pytest.approx(math.hypot(dx, dy), rel=0.25)


def test_bad_shapes_name_the_layout():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        flow_to_image(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        jitter_flow_image(torch.zeros(2, 8, 8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(3, T, H, W\) with T >= 2"):
        farneback(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        flow_to_image(torch.zeros(2, 8, 8), max_magnitude=0)
