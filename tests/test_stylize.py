"""The four styles: shape and range, determinism, temporal consistency, decorrelated colour."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from stdyn.stylize import STYLES, equalise_luminance, stylize

torch.set_num_threads(1)

# Across varied random videos, the per-video mean colour of two different styles correlates
# with |r| below this bound on every channel (measured: 0.22 here, at most 0.28 over six other seeds).
CROSS_STYLE_BOUND = 0.3


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def random_videos(n: int, *, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Varied random videos: coloured backgrounds with gradients and textures of random scale and
    strength, 0-3 moving coloured squares, and random contrast."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
    videos = []
    for _ in range(n):
        angle = rand(1) * 6.3
        gradient = (rand(3, 1, 1, 1) - 0.5) * rand(1) * (xx * torch.cos(angle) + yy * torch.sin(angle))
        cells = int(torch.randint(1, 9, (1,), generator=g))
        texture = F.interpolate(rand(1, 3, size // cells + 1, size // cells + 1), size=(size, size),
                                mode="bilinear", align_corners=False)[0]
        frame = rand(3, 1, 1, 1) + gradient + rand(1) ** 2 * 0.6 * (texture[:, None] - 0.5)
        clip = frame.expand(3, frames, size, size).clone()
        for _ in range(int(torch.randint(0, 4, (1,), generator=g))):
            colour, side = rand(3), 4 + int(rand(1) * 12)
            start, velocity = rand(2) * (size - side), (rand(2) - 0.5) * 4
            for t in range(frames):
                x, y = ((start + velocity * t).clamp(0, size - side)).int().tolist()
                clip[:, t, y : y + side, x : x + side] = colour[:, None, None]
        contrast = 0.3 + float(rand(1)) * 0.9
        videos.append(((clip - clip.mean()) * contrast + clip.mean()).clamp(0, 1))
    return torch.stack(videos)


@pytest.fixture(scope="module")
def videos() -> torch.Tensor:
    return random_videos(200)


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
    single = stylize(videos[3], "cartoon")
    assert single.shape == videos[3].shape
    assert torch.equal(single, stylized[STYLES.index("cartoon")][3])  # a clip is stylized on its own


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
    """The same transform on every frame, and only local operations: motion is untouched."""
    g = torch.Generator().manual_seed(1)
    pattern = F.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(48, 48), mode="bilinear")[0]
    shift = (1, 2)  # (dy, dx) per frame
    clip = torch.stack([torch.roll(pattern, (t * shift[0], t * shift[1]), (1, 2)) for t in range(5)], 1)
    for style in STYLES:
        out = stylize(clip, style)
        for t in range(1, 5):
            moved = torch.roll(out[:, 0], (t * shift[0], t * shift[1]), (1, 2))
            interior = (slice(None), slice(12, 36), slice(12, 36))
            assert torch.allclose(out[:, t][interior], moved[interior], atol=1e-5), (style, t)


def test_brightness_changes_do_not_change_the_stylized_clip(videos):
    """Luminance is equalised per video: a darker copy of a grey video looks the same."""
    grey = videos[:4].mean(1, keepdim=True).expand_as(videos[:4])
    darker = grey * 0.6
    for style in ("thermal", "cartoon"):
        assert (stylize(grey, style) - stylize(darker, style)).abs().mean() < 0.02


def test_equalised_luminance_spreads_a_textured_clip_uniformly():
    textured = equalise_luminance(torch.rand(1, 3, 4, 32, 32))
    assert (textured.mean() - 0.5).abs() < 0.02
    assert (textured.quantile(0.25) - 0.25).abs() < 0.05 and (textured.quantile(0.75) - 0.75).abs() < 0.05


def noisy_flat_scene(sigma: float, frames: int = 8, size: int = 32) -> torch.Tensor:
    """A grey background with per-pixel camera noise and a bright square moving across it."""
    g = torch.Generator().manual_seed(3)
    clip = torch.full((3, frames, size, size), 0.4) + (torch.rand(3, frames, size, size, generator=g) - 0.5) * sigma * 12**0.5
    for t in range(frames):
        clip[:, t, 12:20, 4 + 2 * t : 12 + 2 * t] = 0.85
    return clip.clamp(0, 1)


def test_camera_noise_is_not_turned_into_flicker():
    """Contrast-limited equalisation of denoised luma: a flat background's faint noise stays
    faint in every style (plain equalisation stretched it over the background's whole share of
    the range)."""
    clip = noisy_flat_scene(sigma=0.02)
    background = (slice(None), slice(None), slice(0, 8), slice(0, 32))  # rows the square never visits
    u = equalise_luminance(clip[None])[0]
    assert u[background[1:]].std(0).mean() < 0.03
    for style in STYLES:
        flicker = stylize(clip, style)[background].std(1).mean()
        assert flicker < 0.1, (style, float(flicker))
    # The moving square still stands out in every style.
    for style in STYLES:
        out = stylize(clip, style)
        square, around = out[:, 3, 14:18, 12:16], out[:, 3, 2:6, 12:16]
        assert (square.mean((1, 2)) - around.mean((1, 2))).abs().max() > 0.1, style


def test_mean_colour_decorrelates_across_styles(videos, stylized):
    means = [out.mean((2, 3, 4)) for out in stylized]
    for i, j in itertools.combinations(range(len(STYLES)), 2):
        for channel in range(3):
            r = _corr(means[i][:, channel], means[j][:, channel])
            assert abs(r) < CROSS_STYLE_BOUND, (STYLES[i], STYLES[j], channel, r)
    for i in range(len(STYLES)):
        assert means[i].std(0).min() > 5e-4  # each style's mean colour does vary over videos
        again = stylize(videos, STYLES[i]).mean((2, 3, 4))
        for channel in range(3):
            assert _corr(means[i][:, channel], again[:, channel]) == pytest.approx(1.0, abs=1e-6)


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
