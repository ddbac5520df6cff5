"""The four styles: shape and range, determinism, temporal consistency, noise, decorrelation."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from stdyn.core.fidelity import DECORRELATED, MAX_ABS_R, decorrelation, visibility, world_clips
from stdyn.core.stylize import STYLES, detail_share, equalise_luminance, luma, stylize

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def videos() -> torch.Tensor:
    return world_clips(48, frames=6, size=32, seed=3)[0]


@pytest.fixture(scope="module")
def stylized(videos: torch.Tensor) -> list[torch.Tensor]:
    return [stylize(videos, style) for style in STYLES]


def test_four_named_styles_by_name_or_index(videos):
    assert len(STYLES) == 4 and len(set(STYLES)) == 4
    clip = videos[0]
    for index, name in enumerate(STYLES):
        assert torch.equal(stylize(clip, index), stylize(clip, name))


def test_shape_dtype_and_range(videos, stylized):
    for out in stylized:
        assert out.shape == videos.shape and out.dtype == videos.dtype
        assert out.min() >= 0 and out.max() <= 1
    single = stylize(videos[3], "comic")
    assert single.shape == videos[3].shape
    assert torch.equal(single, stylized[STYLES.index("comic")][3])  # a clip is stylized on its own


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 3, 1, 12, 12), (1, 3, 5, 64, 48)])
def test_single_frames_small_and_non_square_frames(shape):
    clips = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    for style in STYLES:
        out = stylize(clips, style)
        assert out.shape == clips.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


def test_styles_change_the_video_and_differ_from_each_other(videos, stylized):
    for out in stylized:
        assert (out - videos).abs().mean() > 0.1
    for a, b in itertools.combinations(stylized, 2):
        assert (a - b).abs().mean() > 0.1


def test_deterministic(videos):
    for style in STYLES:
        assert torch.equal(stylize(videos[:8], style), stylize(videos[:8].clone(), style))


def test_static_clip_stays_static(videos):
    still = videos[5, :, :1].expand(3, 6, 32, 32).contiguous()
    for style in STYLES:
        out = stylize(still, style)
        assert torch.equal(out, out[:, :1].expand_as(out))


def test_translated_pattern_gives_translated_output():
    """One transform per clip and only local operations in a frame (reaching at most 10 pixels):
    motion is untouched."""
    g = torch.Generator().manual_seed(1)
    pattern = F.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(64, 64), mode="bilinear")[0]
    shift = (1, 2)  # (dy, dx) per frame
    clip = torch.stack([torch.roll(pattern, (t * shift[0], t * shift[1]), (1, 2)) for t in range(5)], 1)
    for style in STYLES:
        out = stylize(clip, style)
        for t in range(1, 5):
            moved = torch.roll(out[:, 0], (t * shift[0], t * shift[1]), (1, 2))
            interior = (slice(None), slice(20, 44), slice(20, 44))
            assert torch.allclose(out[:, t][interior], moved[interior], atol=1e-5), (style, t)


def test_tone_ignores_exposure():
    """The styles' tone is equalised per clip: a darker copy of a grey video has the same tone."""
    g = torch.Generator().manual_seed(2)
    grey = F.interpolate(torch.rand(4, 1, 6, 8, 8, generator=g), size=(6, 32, 32), mode="trilinear")
    grey = grey.expand(4, 3, 6, 32, 32)
    assert (equalise_luminance(grey) - equalise_luminance(grey * 0.6)).abs().max() < 1e-4


def test_equalised_luminance_spreads_a_textured_clip_uniformly():
    g = torch.Generator().manual_seed(4)
    textured = F.interpolate(torch.rand(1, 3, 4, 8, 8, generator=g), size=(4, 32, 32), mode="trilinear")
    u = equalise_luminance(textured)
    assert u.shape == (1, 4, 32, 32)
    assert (u.mean() - 0.5).abs() < 0.03
    assert (u.quantile(0.25) - 0.25).abs() < 0.06 and (u.quantile(0.75) - 0.75).abs() < 0.06


def noisy_flat_scene(sigma: float, frames: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey background with per-pixel camera noise and a bright square moving across it, and
    the square's coverage."""
    g = torch.Generator().manual_seed(3)
    noise = (torch.rand(3, frames, size, size, generator=g) - 0.5) * sigma * 12**0.5
    clip = torch.full((3, frames, size, size), 0.4) + noise
    mask = torch.zeros(frames, size, size)
    for t in range(frames):
        clip[:, t, 12:20, 4 + 2 * t : 12 + 2 * t] = 0.85
        mask[t, 12:20, 4 + 2 * t : 12 + 2 * t] = 1
    return clip.clamp(0, 1), mask


@pytest.mark.parametrize("sigma", [0.02, 0.035])
def test_camera_noise_is_not_turned_into_flicker(sigma):
    """A flat background's noise flickers no more in any style than in the clip itself, and the
    moving square still stands out."""
    clip, mask = noisy_flat_scene(sigma)
    background = (slice(None), slice(None), slice(0, 8), slice(0, 32))  # rows the square never visits
    clean = clip[background].std(1).mean()
    for style in STYLES:
        out = stylize(clip, style)
        assert out[background].std(1).mean() <= clean, style
        assert visibility(out[None], mask[None]) > 0.9, style


@pytest.mark.parametrize("size", [16, 32])
def test_varied_clips_flicker_no_more_than_they_are_noisy(size):
    """On world clips (with camera noise), pixels the object never comes near change no more over
    time in any style than in the clean clip."""
    clips, masks, _ = world_clips(24, frames=6, size=size, seed=5)
    reach = size // 8
    near = F.max_pool2d(masks.amax(1, keepdim=True), 2 * reach + 1, stride=1, padding=reach)[:, 0] > 0.01
    still = (~near)[:, None, None]

    def flicker(x: torch.Tensor) -> float:
        return float((x.std(2, keepdim=True) * still).sum() / (still.sum() * 3))

    clean = flicker(clips)
    for style in STYLES:
        assert flicker(stylize(clips, style)) <= 1.05 * clean, style


def test_colour_and_fine_detail_decorrelate_across_styles():
    """Over 1500 world clips, the same clip's mean colour and fine-detail share in two styles are
    unrelated (sampling noise of r: about 0.026)."""
    clips = world_clips(1500, frames=4, size=32, seed=0)[0]
    table = decorrelation(clips)
    decorrelated = table[table["decorrelated"]]
    assert set(decorrelated["statistic"]) == set(DECORRELATED)
    assert len(decorrelated) == 6 * len(DECORRELATED)
    worst = decorrelated.loc[decorrelated["r"].abs().idxmax()]
    assert abs(worst["r"]) <= MAX_ABS_R, worst.to_dict()


def test_each_style_varies_its_colour_and_detail_from_clip_to_clip(videos, stylized):
    for style, out in zip(STYLES, stylized):
        assert out.mean((2, 3, 4)).std(0).min() > 5e-3, style
        if style != "thermal":
            assert detail_share(luma(out)).std() > 0.01, style


@pytest.mark.parametrize("bad", [torch.rand(2, 4, 3, 8, 8), torch.rand(3, 8, 8), torch.rand(1, 1, 3, 4, 8, 8)])
def test_bad_shape_names_the_layout(bad):
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        stylize(bad, 0)


def test_bad_values_and_style_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stylize(torch.rand(3, 2, 8, 8) * 255, 0)
    with pytest.raises(ValueError, match="float"):
        stylize((torch.rand(3, 2, 8, 8) * 255).to(torch.uint8), 0)
    with pytest.raises(ValueError, match="thermal"):
        stylize(torch.rand(3, 2, 8, 8), "oil")
    with pytest.raises(ValueError, match="index"):
        stylize(torch.rand(3, 2, 8, 8), 4)
