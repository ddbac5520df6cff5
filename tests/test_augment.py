"""Train-time recolouring: per-clip, temporally constant, seeded, and kind to moving objects."""
from __future__ import annotations

import pytest
import torch

from stdyn.training import TrainConfig
from stdyn.training.augment import AppearanceJitter, Recolouring, recolour

torch.set_num_threads(1)


def clips(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 5, 12, 12, generator=g)


def params(n: int, probability: float = 1.0, seed: int = 0) -> Recolouring:
    return Recolouring.draw(n, probability, torch.Generator().manual_seed(seed))


def test_rotations_are_orthogonal_and_include_reflections():
    rotation = params(400).rotation
    eye = torch.eye(3).expand(400, 3, 3)
    assert torch.allclose(rotation @ rotation.transpose(1, 2), eye, atol=1e-5)
    determinants = torch.linalg.det(rotation)
    assert (determinants > 0).any() and (determinants < 0).any()


def test_output_is_in_range_and_differs_from_the_input():
    x = clips()
    out = recolour(x, params(len(x)))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().mean() > 0.05


def test_inactive_clips_are_untouched_and_probability_is_respected():
    x = clips(8)
    none = recolour(x, params(8, probability=0.0))
    assert torch.equal(none, x)
    drawn = params(4000, probability=0.3)
    assert abs(drawn.active.float().mean().item() - 0.3) < 0.03
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        params(2, probability=1.5)


def test_one_transform_per_clip_so_a_still_clip_stays_still():
    still = clips(4)[:, :, :1].expand(-1, -1, 5, -1, -1).contiguous()
    out = recolour(still, params(4))
    assert torch.allclose(out, out[:, :, :1].expand_as(out))


def test_a_clip_is_recoloured_on_its_own_whatever_the_batch():
    x = clips(6)
    p = params(6)
    whole = recolour(x, p)
    for i in range(6):
        alone = recolour(x[i : i + 1], p.select(torch.tensor([i])))
        assert torch.allclose(alone[0], whole[i], atol=1e-6)


def test_jitter_is_seeded_and_keyed_by_clip_index():
    x = clips(6)
    first = AppearanceJitter(10, 1.0, torch.Generator().manual_seed(5))
    again = AppearanceJitter(10, 1.0, torch.Generator().manual_seed(5))
    other = AppearanceJitter(10, 1.0, torch.Generator().manual_seed(6))
    indices = torch.tensor([3, 7, 0, 1, 2, 9])
    assert torch.equal(first(x, indices), again(x, indices))
    assert not torch.allclose(first(x, indices), other(x, indices))
    # The same clip index gives the same recolouring in another batch position.
    assert torch.allclose(first(x[1:2], indices[1:2]), first(x, indices)[1:2], atol=1e-6)


def test_an_object_stays_distinct_from_its_scene():
    """Orthogonal maps keep colour differences, so a coloured square on a grey scene stays visible."""
    scene = torch.full((40, 3, 2, 16, 16), 0.45)
    scene[:, 0, :, 4:10, 4:10], scene[:, 1, :, 4:10, 4:10] = 0.9, 0.2
    out = recolour(scene, params(40, seed=3))
    contrast = (out[:, :, 0, 6, 6] - out[:, :, 0, 14, 14]).norm(dim=1)
    assert contrast.min() > 0.2


def test_train_config_checks_the_probability():
    assert TrainConfig(appearance=0.5).appearance == 0.5
    with pytest.raises(ValueError, match="appearance"):
        TrainConfig(appearance=-0.1)
