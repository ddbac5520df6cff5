"""Tests of the synthetic video instance segmentation worlds (stdyn.data.worlds.vis)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from stdyn.data.worlds import appearance, base, vis

torch.set_num_threads(1)

SMALL = {"frames": 8, "size": 32, "cache": False}
K = vis.MAX_INSTANCES


@pytest.fixture(scope="module")
def ytvis() -> vis.VisWorld:
    return vis.make("ytvis", "val", 200, **SMALL)


@pytest.fixture(scope="module")
def ovis() -> vis.VisWorld:
    return vis.make("ovis", "val", 200, **SMALL)


def centroids(masks: torch.Tensor) -> torch.Tensor:
    """Centre (..., 2) of binary masks (..., S, S), in pixels (nan where empty)."""
    grid = torch.arange(masks.shape[-1]) + 0.5
    masks = masks.float()
    area = masks.sum((-2, -1))
    return torch.stack([(masks.sum(-2) * grid).sum(-1) / area, (masks.sum(-1) * grid).sum(-1) / area], -1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU over the last two dimensions of binary masks (0 where both are empty)."""
    union = (a | b).sum((-2, -1))
    return (a & b).sum((-2, -1)) / union.clamp(min=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "youtube-vis", "split": "train", "n": 4}, "available VIS worlds: ytvis, ovis"),
        ({"name": "ovis", "split": "test", "n": 4}, "splits: train, val"),
        ({"name": "ovis", "split": "train", "n": 0}, r"n must be an integer >= 1, got 0"),
        ({"name": "ovis", "split": "train", "n": 2.5}, "n must be an integer"),
        ({"name": "ytvis", "split": "train", "n": 4, "frames": 1}, r"frames must be an integer in \[2, 64\]"),
        ({"name": "ytvis", "split": "train", "n": 4, "size": 8}, r"size must be an integer in \[16, 256\]"),
        ({"name": "ytvis", "split": "train", "n": 4, "seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_bad_input_names_the_problem_and_the_valid_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vis.make(**kwargs, cache=False)


def test_every_world_is_described_and_has_its_settings():
    assert set(vis.VIS_WORLDS) == set(vis.VIS_SETTINGS) == {"ytvis", "ovis"}
    assert all("frame" in text for text in vis.VIS_WORLDS.values())  # each says what a frame reveals
    assert set(vis.VIS_CLASSES) <= set(vis.render.SHAPES)
    assert all(s.shapes == vis.VIS_CLASSES and s.instances[1] <= K for s in vis.VIS_SETTINGS.values())
    assert vis.VIS_SETTINGS["ovis"].instances[0] > vis.VIS_SETTINGS["ytvis"].instances[0]
    world = vis.make("ovis", "train", 3, size=16, cache=False)
    assert world.data.shape == (3, 3, 8, 16, 16) and world.masks.shape == (3, K, 8, 16, 16)
    assert repr(world) == "VisWorld('ovis', split='train', n=3, frames=8, size=16, instances=3-5)"


def test_worlds_are_deterministic_and_splits_and_seeds_differ():
    world = vis.make("ovis", "train", 8, **SMALL)
    again = vis.make("ovis", "train", 8, **SMALL)
    for field in ("data", "masks", "classes"):
        assert torch.equal(getattr(world, field), getattr(again, field)), field
    assert world.meta.equals(again.meta)
    val = vis.make("ovis", "val", 8, **SMALL)
    other_seed = vis.make("ovis", "train", 8, seed=1, **SMALL)
    for other in (val, other_seed):
        assert not torch.equal(world.data, other.data) and not torch.equal(world.masks, other.masks)
        assert not np.allclose(world.meta["inst0_x_start"], other.meta["inst0_x_start"])
    # a world's stream is its own: the ytvis clips are not the ovis ones
    assert not torch.equal(vis.make("ytvis", "train", 8, **SMALL).data, world.data)


def test_items_have_the_documented_shapes_and_collate_across_worlds():
    worlds = [vis.make(name, "train", 5, **SMALL) for name in vis.VIS_WORLDS]
    for world in worlds:
        assert world.data.dtype == torch.uint8 and world.masks.dtype == torch.uint8
        assert world.classes.dtype == torch.int64 and world.classes.shape == (5, K)
        item = world[2]
        assert {key: tuple(value.shape) for key, value in item.items()} == {
            "clip": (3, 8, 32, 32), "masks": (K, 8, 32, 32), "classes": (K,)}
        assert item["clip"].dtype == item["masks"].dtype == torch.float32 and item["classes"].dtype == torch.int64
        assert 0.0 <= float(item["clip"].min()) and float(item["clip"].max()) <= 1.0
        assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(world.clips([2])[0], item["clip"]) and world.clips().shape == (5, 3, 8, 32, 32)
        assert {"instances", "inst0_class", "inst0_layer", "inst0_x_start", "inst0_hue", "camera_dx"} <= set(world.meta)
    batch = next(iter(DataLoader(ConcatDataset(worlds), batch_size=10)))
    assert batch["clip"].shape == (10, 3, 8, 32, 32) and batch["masks"].shape == (10, K, 8, 32, 32)


@pytest.mark.parametrize("name", list(vis.VIS_WORLDS))
def test_masks_are_disjoint_visible_parts_and_padding_is_empty(name, request):
    world = request.getfixturevalue(name)
    masks, classes = world.masks.bool(), world.classes
    count = torch.tensor(world.meta["instances"].to_numpy())
    fewest, most = vis.VIS_SETTINGS[name].instances
    assert int(count.min()) == fewest and int(count.max()) == most
    slot = torch.arange(K)
    assert torch.equal(classes >= 0, slot < count[:, None])  # instances fill the first slots
    assert set(classes[classes >= 0].unique().tolist()) == set(range(len(vis.VIS_CLASSES)))
    assert (classes[classes < 0] == -1).all() and not masks[classes < 0].any()
    assert int(masks.sum(1).max()) == 1  # at most one instance per pixel
    full = world.full_masks()
    assert not (masks & ~full).any()  # visible parts of the whole masks
    assert torch.equal(full[classes < 0], torch.zeros_like(full[classes < 0]))
    # depth: the layers of a clip's instances are an order of them, and a pixel of an instance's whole
    # mask is visible exactly when no instance in front of it covers it
    layer = torch.full((len(world), K), -1, dtype=torch.long)
    for k in range(most):
        layer[:, k] = torch.tensor(world.meta[f"inst{k}_layer"].to_numpy())
    for i in range(len(world)):
        assert sorted(layer[i, :int(count[i])].tolist()) == list(range(int(count[i])))
    for i in range(0, len(world), 10):
        for k in range(int(count[i])):
            ahead = full[i, layer[i] > layer[i, k]].any(0)
            assert torch.equal(masks[i, k], full[i, k] & ~ahead)


def test_instances_keep_their_identity_and_move_smoothly(ytvis):
    masks, full = ytvis.masks.bool(), ytvis.full_masks()
    present = ytvis.classes >= 0
    area = full.sum((-2, -1)).float()  # (N, K, T)
    # the same shape in every frame: the whole mask's area changes only with the slight scale change
    ratio = area[present].amax(-1) / area[present].amin(-1)
    scale = max(vis.VIS_SETTINGS["ytvis"].scale_change[1], 1 / vis.VIS_SETTINGS["ytvis"].scale_change[0])
    print(f"largest area ratio across frames: {float(ratio.max()):.2f}")
    assert float(ratio.max()) < scale**2 * 1.35
    visible_frames = masks.any((-2, -1))[present].float().mean(-1)
    assert float(visible_frames.min()) >= 0.75 and float(visible_frames.mean()) > 0.99
    # centroids move by at most the fastest speed (and a pixel of quantisation) per frame
    clear = (masks.sum((-2, -1)) >= 0.9 * area)[..., :-1] & (masks.sum((-2, -1)) >= 0.9 * area)[..., 1:]
    centre = centroids(masks)
    step = (centre[:, :, 1:] - centre[:, :, :-1]).norm(dim=-1)[present[..., None] & clear]
    bound = vis.VIS_SETTINGS["ytvis"].speed[1] * 32 + 1.0
    print(f"centroid step: mean {float(step.mean()):.2f}, max {float(step.max()):.2f} (bound {bound:.2f})")
    assert float(step.max()) < bound and len(step) > 1000
    # an instance's mask overlaps its own next mask far more than any other instance's next mask
    own = iou(masks[:, :, :-1], masks[:, :, 1:])  # (N, K, T-1)
    cross = iou(masks[:, :, None, :-1], masks[:, None, :, 1:])  # (N, K, K, T-1)
    cross = cross.masked_fill(torch.eye(K, dtype=torch.bool)[None, :, :, None], 0).amax(2)
    visible = masks.any((-2, -1))
    both = present[..., None] & visible[..., :-1] & visible[..., 1:]
    print(f"consecutive-frame IoU: own {float(own[both].mean()):.3f}, other {float(cross[both].mean()):.3f}")
    assert float(own[both].mean()) > 0.5 and float(cross[both].mean()) < 0.02
    assert float((own[both] > cross[both]).float().mean()) > 0.99


def test_instances_keep_their_look_and_stand_out_from_the_scene(ytvis):
    clips, masks, full = ytvis.clips(), ytvis.masks.bool(), ytvis.full_masks()
    background = ~full.any(1)  # (N, T, S, S)
    weights = torch.tensor(appearance.LUMA_WEIGHTS)
    luma = torch.einsum("nctij,c->ntij", clips, weights)

    area = masks.sum((-2, -1)).clamp(min=1)  # (N, K, T)
    present = (ytvis.classes >= 0)[..., None] & masks.any((-2, -1))  # (N, K, T)
    inside = torch.einsum("ntij,nktij->nkt", luma, masks.float()) / area
    outside = (luma * background).sum((-2, -1)) / background.sum((-2, -1))
    gap = (inside - outside[:, None]).abs()[present]
    print(f"luma gap to the background: 5th percentile {float(gap.quantile(0.05)):.3f}, mean {float(gap.mean()):.3f}")
    assert float(gap.quantile(0.05)) > 0.1 and float(gap.mean()) > 0.2
    # each instance's mean colour changes little from frame to frame, less than between instances
    colour = torch.einsum("nctij,nktij->nkct", clips, masks.float()) / area[:, :, None]  # (N, K, 3, T)
    drift = (colour[..., 1:] - colour[..., :-1]).norm(dim=2)[present[..., :-1] & present[..., 1:]]
    between = (colour[:, 0] - colour[:, 1]).norm(dim=1)[present[:, 0] & present[:, 1]]
    print(f"colour change: same instance next frame {float(drift.median()):.3f}, "
          f"two instances same frame {float(between.median()):.3f}")
    assert float(drift.median()) < 0.25 * float(between.median())
    # the meta records a luma gap of at least MIN_OBJECT_GAP between every instance and its scene
    for k in range(vis.VIS_SETTINGS["ytvis"].instances[1]):
        gap = (ytvis.meta[f"inst{k}_luma"] - ytvis.meta["scene_luma"]).abs()
        assert (gap >= appearance.MIN_OBJECT_GAP - 1e-9).all()


def test_the_instance_in_front_is_the_one_drawn(ovis):
    """Where two instances overlap, the clip shows the colours of the one whose visible mask it is."""
    clips, masks, full = ovis.clips(), ovis.masks.bool(), ovis.full_masks()
    colour = torch.einsum("nctij,nktij->nkc", clips, masks.float()) / masks.sum((2, 3, 4)).clamp(min=1)[..., None]
    agree, total = 0, 0
    for i in range(len(ovis)):
        count = int(ovis.meta["instances"][i])
        for k in range(count):
            for j in range(count):
                overlap = masks[i, k] & full[i, j]  # k is seen over j
                if j == k or overlap.sum() < 8:
                    continue
                seen = clips[i].permute(1, 2, 3, 0)[overlap].mean(0)
                agree += int((seen - colour[i, k]).norm() < (seen - colour[i, j]).norm())
                total += 1
    print(f"overlaps showing the front instance: {agree}/{total}")
    assert total > 200 and agree / total > 0.85


def test_ovis_hides_instances_far_more_than_ytvis(ytvis, ovis):
    stats = {world.name: vis.occlusion_stats(world) for world in (ytvis, ovis)}
    summary = pd.DataFrame({name: table.mean() for name, table in stats.items()})
    print(summary.round(3))
    yt, ov = summary["ytvis"], summary["ovis"]
    assert list(stats["ovis"].columns) == ["instances", "occlusion", "crossings", "hidden"]
    assert ov["instances"] > yt["instances"] + 1.5
    assert yt["occlusion"] < 0.03 and ov["occlusion"] > 0.15
    assert ov["crossings"] > yt["crossings"] + 3.0 and yt["crossings"] < 1.0
    assert yt["hidden"] < 0.01 and ov["hidden"] > yt["hidden"]
    # each clip's occlusion is the share of its whole masks that instances in front hide
    masks, full = ovis.masks.bool(), ovis.full_masks()
    for i in (0, 7, 42):
        shares = [1 - float(masks[i, k, t].sum() / full[i, k, t].sum())
                  for k in range(int(ovis.meta["instances"][i])) for t in range(8)]
        assert stats["ovis"]["occlusion"][i] == pytest.approx(np.mean(shares), abs=1e-6)
        assert stats["ovis"]["instances"][i] == ovis.meta["instances"][i]


def test_the_class_is_the_shape_and_the_colour_is_independent_of_it():
    meta = vis.sample_latents(base.split_rng("vis/ovis", "train", 0), "ovis", 1000, 8, 32)
    shapes, hues, luma = [], [], []
    for k in range(vis.VIS_SETTINGS["ovis"].instances[1]):
        present = meta[f"inst{k}_present"]
        classes = meta[f"inst{k}_class"][present]
        assert (np.asarray(vis.VIS_CLASSES)[classes] == meta[f"inst{k}_shape"][present]).all()
        shapes.append(classes)
        hues.append(meta[f"inst{k}_hue"][present])
        luma.append(meta[f"inst{k}_luma"][present] - meta["scene_luma"][present])
    classes, hue, gap = np.concatenate(shapes), np.concatenate(hues), np.concatenate(luma)
    spread = {c: abs(np.exp(2j * np.pi * hue[classes == c]).mean()) for c in range(len(vis.VIS_CLASSES))}
    print("hue concentration per class (0: spread evenly, 1: one hue):", {c: round(v, 3) for c, v in spread.items()})
    assert all(np.sum(classes == c) > 700 for c in spread)  # about 1000 instances of each class
    assert max(spread.values()) < 0.1
    # nor does the luma side tell the class: each class is about half lighter, half darker than its scene
    lighter = [float((gap[classes == c] > 0).mean()) for c in spread]
    assert max(lighter) - min(lighter) < 0.1


def test_annotated_frames():
    assert vis.annotated_frames(8, 5).tolist() == [True, False, False, False, False, True, False, False]
    assert vis.annotated_frames(4).all() and vis.annotated_frames(4).dtype == torch.bool
    assert vis.annotated_frames(3, 10).tolist() == [True, False, False]
    for frames, every in ((8, 0), (8, -1), (0, 1), (8, 1.5)):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            vis.annotated_frames(frames, every)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    first = vis.make("ovis", "train", 4, frames=4, size=16)
    assert not first.from_cache and first.cache_path.is_file() and first.cache_path.parent == tmp_path / "worlds"
    second = vis.make("ovis", "train", 4, frames=4, size=16)
    assert second.from_cache and second.cache_path == first.cache_path
    for field in ("data", "masks", "classes"):
        assert torch.equal(getattr(first, field), getattr(second, field)), field
    assert second.meta.equals(first.meta)
    assert vis.make("ovis", "train", 4, frames=4, size=16, seed=1).cache_path != first.cache_path
    first.cache_path.write_bytes(b"corrupt")
    third = vis.make("ovis", "train", 4, frames=4, size=16)
    assert not third.from_cache and torch.equal(third.data, first.data)
