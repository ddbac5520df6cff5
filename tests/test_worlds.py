"""Tests of the synthetic action worlds (stdyn.data.worlds) and the data_prep command line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stdyn.data import cache, worlds
from stdyn.data.worlds import appearance, base, diving, motion, render

torch.set_num_threads(1)

SMALL = dict(frames=8, size=16, cache=False, progress=False)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    return tmp_path / "worlds"


def test_available_lists_the_four_action_worlds():
    assert {"ssv2", "kinetics", "diving48", "something_else"} <= set(worlds.available())
    for name in worlds.available():
        assert "frame" in worlds.describe(name)  # each says what a single frame reveals


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: worlds.make("ucf101", "train", n=4), "available worlds: .*ssv2"),
        (lambda: worlds.make("ssv2", "test", n=4), "splits: train, val"),
        (lambda: worlds.make("ssv2", "train", n=0), "n must be an integer >= 1"),
        (lambda: worlds.make("ssv2", "train", n=4, long_tail=-1.0), "long_tail"),
        (lambda: worlds.make("ssv2", "train", n=4, cue_strength=0.5), "options: none"),
        (lambda: worlds.make("kinetics", "train", n=4, cue=0.5), "options: cue_strength"),
        (lambda: worlds.make("kinetics", "train", n=4, cue_strength=1.5, **SMALL), r"cue_strength must be in \[0, 1\]"),
    ],
)
def test_bad_input_names_the_problem_and_the_valid_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("name", ["ssv2", "kinetics", "diving48", "something_else"])
def test_worlds_are_seeded_clips_in_the_shared_layout(name):
    world = worlds.make(name, "train", n=12, seed=0, **SMALL)
    clip, label = world[0]
    assert clip.dtype == torch.float32 and clip.shape == (3, 8, 16, 16)
    assert 0.0 <= float(clip.min()) and float(clip.max()) <= 1.0
    assert isinstance(label, int) and 0 <= label < len(world.classes)
    assert len(world.meta) == len(world) == 12
    assert (world.meta["label"].to_numpy() == world.labels.numpy()).all()
    assert {"class_name", "scene_hue", "object_hue", "pattern", "clutter", "noise"} <= set(world.meta.columns)

    again = worlds.make(name, "train", n=12, seed=0, **SMALL)
    assert torch.equal(world.data, again.data) and torch.equal(world.labels, again.labels)
    other_seed = worlds.make(name, "train", n=12, seed=1, **SMALL)
    val = worlds.make(name, "val", n=12, seed=0, **SMALL)
    assert not torch.equal(world.data, other_seed.data)
    assert not torch.equal(world.data, val.data)
    assert not np.allclose(world.meta["scene_phase"], val.meta["scene_phase"])


def test_a_world_feeds_a_dataloader():
    world = worlds.make("ssv2", "train", n=6, **SMALL)
    clips, labels = next(iter(DataLoader(world, batch_size=4)))
    assert clips.shape == (4, 3, 8, 16, 16) and labels.tolist() == world.labels[:4].tolist()
    assert torch.equal(clips, world.clips(slice(0, 4)))


def test_ssv2_objects_move_the_way_their_label_says():
    world = worlds.make("ssv2", "train", n=60, frames=8, size=32, cache=False, progress=False)
    meta = world.meta
    evidence, _ = world.annotations(range(len(world)))
    mask = (evidence > 0.3).float()
    grid = torch.arange(32) + 0.5
    area = mask.sum((2, 3)).clamp(min=1)
    centre_x = (mask.sum(2) * grid).sum(2) / area
    centre_y = (mask.sum(3) * grid).sum(2) / area
    checks = {
        "move_right": centre_x[:, -1] - centre_x[:, 0],
        "move_left": centre_x[:, 0] - centre_x[:, -1],
        "move_down": centre_y[:, -1] - centre_y[:, 0],
        "move_up": centre_y[:, 0] - centre_y[:, -1],
        "approach": area[:, -1] - area[:, 0],
        "recede": area[:, 0] - area[:, -1],
        "appear": evidence[:, -1].sum((1, 2)) - evidence[:, 0].sum((1, 2)),
        "vanish": evidence[:, 0].sum((1, 2)) - evidence[:, -1].sum((1, 2)),
    }
    for action, gain in checks.items():
        rows = torch.tensor((meta["class_name"] == action).to_numpy())
        assert rows.any(), action
        assert (gain[rows] > 0).all(), action
    # Rotation: the principal axis of elongated objects turns clockwise (image y points down,
    # so a growing axis angle is clockwise on screen) for rotate_clockwise, and back otherwise.
    dx, dy = grid[None, None, None, :] - centre_x[..., None, None], grid[None, None, :, None] - centre_y[..., None, None]
    axis = 0.5 * torch.atan2(2 * (mask * dx * dy).sum((2, 3)), (mask * (dx**2 - dy**2)).sum((2, 3)))
    step = torch.remainder(axis.diff(dim=1) + torch.pi / 2, torch.pi) - torch.pi / 2  # unwrap mod pi
    elongated = torch.tensor(meta["shape"].isin(["ellipse", "rectangle", "diamond"]).to_numpy())
    for action, sign in (("rotate_clockwise", 1), ("rotate_counterclockwise", -1)):
        rows = torch.tensor((meta["class_name"] == action).to_numpy()) & elongated
        assert rows.any(), action
        assert (sign * step[rows].sum(1) > 0).all(), action


def test_opposite_classes_share_latents_up_to_time_reversal():
    meta = worlds.make("ssv2", "val", n=40, **SMALL).meta
    for attribute in motion.ATTRIBUTES:
        start, end = meta[f"{attribute}_start"], meta[f"{attribute}_end"]
        moving = meta["moving"] == attribute
        forward = moving & (meta["label"] % 2 == 0)
        assert (end[forward] > start[forward]).all()
        assert (end[moving & ~forward] < start[moving & ~forward]).all()
        assert (end[~moving] == start[~moving]).all()


def test_diving_pose_timing_is_symmetric_in_time():
    sequence = torch.as_tensor(diving.CLASS_POSES[:3])
    midpoint = torch.tensor([0.42, 0.5, 0.57])
    forward = diving.pose_path(sequence, midpoint, 9)
    backward = diving.pose_path(sequence.flip(1), 1.0 - midpoint, 9)
    assert torch.allclose(forward, backward.flip(1), atol=1e-5)
    assert not torch.allclose(forward, backward, atol=1e-2)


def test_diving_classes_are_pose_sequences_some_sharing_their_poses():
    assert len(set(diving.CLASSES)) == len(diving.CLASSES) == 16
    pose_sets = [frozenset(seq) for seq in diving.CLASS_POSES.tolist()]
    shared = [s for s in set(pose_sets) if pose_sets.count(s) == 2]
    assert len(shared) == 4 and len(set(pose_sets)) == 12
    world = worlds.make("diving48", "train", n=32, **SMALL)
    assert (world.meta["poses"] == world.meta["class_name"]).all()


def test_kinetics_layout_follows_the_class_with_cue_strength():
    meta = worlds.make("kinetics", "train", n=400, frames=2, size=8, cache=False, progress=False,
                       cue_strength=0.6).meta
    cued = meta["cued"].to_numpy()
    assert 0.5 < cued.mean() < 0.7
    labels = meta["label"].to_numpy()
    home = np.asarray(appearance.LAYOUTS)[motion.HOME_LAYOUT]
    assert (meta["layout"].to_numpy()[cued] == home[labels[cued]]).all()
    assert set(meta["layout"][~cued]) == set(appearance.LAYOUTS)  # the rest: any layout
    none = worlds.make("kinetics", "train", n=50, frames=2, size=8, cache=False, progress=False, cue_strength=0.0)
    assert not none.meta["cued"].any()
    assert "layout" not in worlds.make("ssv2", "train", n=5, **SMALL).meta  # only kinetics has layouts


def test_something_else_keeps_objects_of_an_action_out_of_val():
    groups = {split: worlds.something_else_objects(split) for split in ("train", "val")}
    for action in motion.ACTIONS:
        assert not set(groups["train"][action]) & set(groups["val"][action])
        assert len(groups["train"][action]) + len(groups["val"][action]) == motion.N_OBJECTS
    seen = {
        split: worlds.make("something_else", split, n=300, frames=2, size=8, cache=False, progress=False).meta
        for split in ("train", "val")
    }
    for action in motion.ACTIONS:
        objects = {split: set(meta.loc[meta["class_name"] == action, "object_id"]) for split, meta in seen.items()}
        assert objects["train"] and objects["val"]
        assert not objects["train"] & objects["val"], action
        assert objects["train"] <= set(groups["train"][action])
    # plain ssv2 shares objects between its splits
    ssv2 = {split: set(worlds.make("ssv2", split, n=300, frames=2, size=8, cache=False, progress=False)
                       .meta.query("label == 0")["object_id"]) for split in ("train", "val")}
    assert ssv2["train"] & ssv2["val"]


def test_long_tail_orders_class_frequencies():
    world = worlds.make("ssv2", "train", n=200, frames=2, size=8, long_tail=1.0, cache=False, progress=False)
    counts = world.class_counts
    assert counts.sum() == 200 and (np.diff(counts) <= 0).all() and counts[0] >= 5 * counts[-1]
    assert (world.meta["class_count"] == counts[world.meta["label"]]).all()
    assert world.meta.attrs["long_tail"] == 1.0
    balanced = worlds.make("ssv2", "train", n=203, frames=2, size=8, cache=False, progress=False).class_counts
    assert balanced.max() - balanced.min() == 1
    assert worlds.class_counts(10, 3, 2.0).tolist() == [7, 2, 1]


def test_cache_round_trip_and_corrupt_entries_are_rendered_again(tmp_cache, monkeypatch):
    renders = []
    original = worlds._render
    monkeypatch.setattr(worlds, "_render", lambda *a, **k: renders.append(a[1]) or original(*a, **k))
    kwargs = dict(n=6, frames=4, size=16, progress=False)

    first = worlds.make("ssv2", "train", **kwargs)
    assert len(renders) == 1 and not first.from_cache
    data_path = first.cache_path
    manifest = json.loads(data_path.with_suffix(".json").read_text())
    assert manifest["n"] == 6 and manifest["config"]["world"] == "ssv2"
    assert manifest["checksum"] == cache.file_checksum(data_path)
    assert data_path.parent == tmp_cache

    second = worlds.make("ssv2", "train", **kwargs)
    assert len(renders) == 1 and second.from_cache
    assert torch.equal(first.data, second.data) and first.meta.equals(second.meta)

    raw = bytearray(data_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_path.write_bytes(bytes(raw))
    third = worlds.make("ssv2", "train", **kwargs)
    assert len(renders) == 2 and not third.from_cache
    assert torch.equal(first.data, third.data) and cache.is_intact(data_path)

    data_path.with_suffix(".json").unlink()  # a partial entry (no manifest) is never read
    assert not worlds.make("ssv2", "train", **kwargs).from_cache
    assert worlds.make("ssv2", "train", seed=1, **kwargs).cache_path != data_path


def _order_free_features(clips: torch.Tensor) -> torch.Tensor:
    """Per-frame 4x4 colour layouts summarised by their mean and std over time, and the clip's
    coarse colour histogram: the same for any order of the frames."""
    batch, channels, frames, size, _ = clips.shape
    frames_2d = clips.transpose(1, 2).reshape(batch * frames, channels, size, size)
    layout = F.adaptive_avg_pool2d(frames_2d, 4).view(batch, frames, -1)
    bins = (clips.clamp(0.0, 0.999) * 4).long()  # 4 levels per channel, 64 colours
    colour = (bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2]).flatten(1)
    histogram = torch.zeros(batch, 64).scatter_add_(1, colour, torch.ones(colour.shape)) / colour.shape[1]
    return torch.cat([layout.mean(1), layout.std(1), histogram.sqrt()], 1)


def _shuffled_frame_classifier(name: str) -> tuple[float, torch.Tensor]:
    """Logistic regression on order-free features; returns val accuracy and, for every val clip,
    whether it picked the right class of the clip's opposite pair."""
    train = worlds.make(name, "train", n=600, **SMALL)
    val = worlds.make(name, "val", n=400, **SMALL)
    x_train, x_val = _order_free_features(train.clips()), _order_free_features(val.clips())
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    weights = torch.zeros(x_train.shape[1], len(train.classes), requires_grad=True)
    bias = torch.zeros(len(train.classes), requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy((x_train - mean) / std @ weights + bias, train.labels) + 1e-3 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    logits = ((x_val - mean) / std @ weights + bias).detach()
    accuracy = (logits.argmax(1) == val.labels).float().mean().item()
    pair = val.labels // 2
    pair_logits = logits.view(len(val), -1, 2)[torch.arange(len(val)), pair]
    return accuracy, (pair_logits.argmax(1) == val.labels % 2).float()


def test_order_free_classifier_is_at_chance_within_ssv2_pairs():
    _, ssv2_within = _shuffled_frame_classifier("ssv2")
    assert 0.4 < ssv2_within.mean() < 0.6  # a frame set says nothing about the direction


def test_renderer_antialiases_and_keeps_sub_pixel_motion():
    background = torch.zeros(1, 3, 16, 16)
    steps = torch.linspace(6.0, 7.0, 5)[None]
    _, mask = render.draw_objects(background, torch.tensor([0]), torch.ones(1, 3), steps,
                                  torch.full((1, 5), 8.0), torch.full((1, 5), 3.0), torch.zeros(1, 5), torch.ones(1, 5))
    assert ((mask > 0.05) & (mask < 0.95)).any()  # soft edges
    grid = torch.arange(16) + 0.5
    centre = (mask[0].sum(1) * grid).sum(1) / mask[0].sum((1, 2))
    assert torch.allclose(centre, steps[0], atol=0.05)  # a quarter-pixel step moves the centre a quarter pixel


def test_data_prep_prints_help_and_writes_manifests(tmp_cache, capsys):
    from data_prep.__main__ import main

    assert main([]) == 0
    assert "worlds" in capsys.readouterr().out
    assert main(["worlds", "--name", "ssv2", "--split", "train", "--n", "5", "--frames", "4", "--size", "16",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ssv2" in out and "rendered" in out
    manifests = list(tmp_cache.glob("ssv2-train-*.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["n"] == 5
    assert main(["worlds", "--profile", "smoke", "--name", "kinetics", "--no-progress"]) == 0
    assert len(list(tmp_cache.glob("kinetics-*.json"))) == 2  # train and val
    with pytest.raises(SystemExit):
        main(["worlds", "--name", "ssv2"])  # neither --n nor --profile


def test_appearance_spans_colour_space_and_both_polarities_independently_of_the_label():
    meta = worlds.make("ssv2", "train", n=2000, frames=2, size=8, cache=False, progress=False).meta
    for part in ("scene", "object"):
        hues = np.floor(meta[f"{part}_hue"] * 6).astype(int)
        assert np.bincount(hues, minlength=6).min() > 150  # every sixth of the hue circle
        assert meta[f"{part}_saturation"].min() < 0.1 and meta[f"{part}_saturation"].max() > 0.9
    gap = meta["object_luma"] - meta["scene_luma"]
    assert (gap.abs() >= appearance.MIN_OBJECT_GAP - 1e-9).all()  # the object always stands out...
    assert 0.3 < (gap > 0).mean() < 0.7  # ...lighter or darker
    for column in ("pattern", "object_texture", "clutter"):
        assert meta[column].nunique() >= 3, column
    # None of it carries the class: the class mix is the same in every hue sixth and pattern.
    for column in (np.floor(meta["object_hue"] * 6), np.floor(meta["scene_hue"] * 6), meta["pattern"]):
        table = pd.crosstab(column, meta["label"]).to_numpy()
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        chi2 = ((table - expected) ** 2 / expected).sum()
        dof = (table.shape[0] - 1) * (table.shape[1] - 1)
        assert chi2 < dof + 4 * np.sqrt(2 * dof)  # within four standard deviations of independence


def test_colours_of_luma_hit_their_luma():
    rng = np.random.default_rng(0)
    luma = rng.uniform(0.03, 0.97, 500)
    colours = appearance.colours_of_luma(rng, luma, "c")
    rgb = appearance.hsv_to_rgb(*(torch.as_tensor(colours[f"c_{p}"]) for p in ("hue", "saturation", "value")))
    measured = (rgb @ torch.tensor(appearance.LUMA_WEIGHTS, dtype=rgb.dtype)).numpy()
    assert np.allclose(measured, luma, atol=1e-6)


def test_masks_and_exact_flow_carry_each_object_pixel_to_the_next_frame():
    world = worlds.make("ssv2", "val", n=40, frames=6, size=32, cache=False, progress=False)
    masks, flow = world.annotations(range(len(world)))
    assert masks.shape == (40, 6, 32, 32) and flow.shape == (40, 2, 5, 32, 32)
    assert (flow.abs().sum(1)[masks[:, :-1] == 0] == 0).all()  # flow only on the object
    # Forward-warp the inside of each object by its flow: it lands inside the next frame's object.
    inside = masks[:, :-1] > 0.99
    grid = torch.arange(32) + 0.5
    x = grid.view(1, 1, 1, 32).expand_as(inside) + flow[:, 0]
    y = grid.view(1, 1, 32, 1).expand_as(inside) + flow[:, 1]
    column, row = x.floor().long().clamp(0, 31), y.floor().long().clamp(0, 31)
    batch, time = torch.meshgrid(torch.arange(40), torch.arange(5), indexing="ij")
    landed = masks[:, 1:][batch[..., None, None].expand_as(row), time[..., None, None].expand_as(row), row, column]
    assert landed[inside].mean() > 0.95
    still = torch.tensor((world.meta["moving"] == "alpha").to_numpy())
    assert (flow[still].abs() < 1e-4).all()  # appear/vanish: opacity changes, nothing moves
    with pytest.raises(ValueError, match="masks or exact flow; worlds that do: .*ssv2"):
        worlds.make("diving48", "val", n=2, **SMALL).annotations([0])


def test_cache_keys_hash_every_module_that_draws_a_clip(monkeypatch):
    from stdyn.training import zoo

    hashed = []
    monkeypatch.setattr(cache, "config_key", lambda config, *code: hashed.append(code) or "key")
    worlds.cache_paths({"world": "kinetics", "split": "train", "n": 1, "frames": 2, "size": 8})
    assert {base, render, appearance, motion} <= set(hashed[-1])
    monkeypatch.setattr(zoo, "source_hash", lambda *modules: hashed.append(modules) or "code")
    assert zoo._code_fingerprint("i3d", "kinetics", []) == "code"
    assert {base, render, appearance, motion} <= set(hashed[-1])


def test_a_cached_entry_is_read_only_when_it_is_intact_readable_and_of_the_same_configuration(tmp_path):
    path = tmp_path / "entry.pt"
    config = {"world": "ssv2", "n": 2}
    assert cache.load_config_entry(path, config) is None  # missing
    cache.save_tensors(path, {"config": config, "clips": torch.zeros(2)})
    assert torch.equal(cache.load_config_entry(path, config)["clips"], torch.zeros(2))
    assert cache.load_config_entry(path, {**config, "n": 3}) is None  # another configuration's
    cache.atomic_write(path, lambda tmp: tmp.write_bytes(b"not a torch file"))  # checksum intact
    assert cache.is_intact(path) and cache.load_config_entry(path, config) is None
    cache.save_tensors(path, [config])
    assert cache.load_config_entry(path, config) is None  # not an entry dict
