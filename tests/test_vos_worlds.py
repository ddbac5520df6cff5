"""Tests of the synthetic video object segmentation worlds (stdyn.data.worlds.vos)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stdyn.data import flow as stflow
from stdyn.data.worlds import base, vos

torch.set_num_threads(1)

SMALL = dict(frames=8, size=32, cache=False)


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores (Mann-Whitney, ties counted half)."""
    scores = torch.cat([positive.flatten(), negative.flatten()]).double().numpy()
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos, n_neg = positive.numel(), negative.numel()
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def centroids(masks: torch.Tensor) -> torch.Tensor:
    """Centre (B, T, 2) of binary masks (B, T, S, S), in pixels."""
    grid = torch.arange(masks.shape[-1]) + 0.5
    area = masks.sum((2, 3))
    return torch.stack([(masks.sum(2) * grid).sum(2) / area, (masks.sum(3) * grid).sum(2) / area], -1)


def warp_iou(masks: torch.Tensor, flow: torch.Tensor) -> float:
    """Mean IoU between each frame's mask (T, S, S) pushed along the forward flow (2, T-1, S, S)
    (to the pixel its centre lands in) and the next frame's mask."""
    size = masks.shape[-1]
    ious = []
    for t in range(masks.shape[0] - 1):
        ys, xs = torch.nonzero(masks[t] > 0, as_tuple=True)
        to_x = torch.floor(xs + 0.5 + flow[0, t, ys, xs]).long()
        to_y = torch.floor(ys + 0.5 + flow[1, t, ys, xs]).long()
        inside = (to_x >= 0) & (to_x < size) & (to_y >= 0) & (to_y < size)
        warped = torch.zeros(size, size, dtype=torch.bool)
        warped[to_y[inside], to_x[inside]] = True
        following = masks[t + 1] > 0
        ious.append(float((warped & following).sum() / (warped | following).sum()))
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def davis() -> vos.VosWorld:
    return vos.make("davis", "val", n=32, flow="exact", **SMALL)


@pytest.fixture(scope="module")
def moca() -> vos.VosWorld:
    return vos.make("moca", "val", n=32, flow="exact", **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="davis2017", split="train", n=4), "available VOS worlds: davis, ytvos, imagenetvid, tao, moca"),
        (dict(name="davis", split="test", n=4), "splits: train, val"),
        (dict(name="davis", split="train", n=0), r"n must be an integer >= 1, got 0"),
        (dict(name="davis", split="train", n=4, frames=1), r"frames must be an integer in \[2, 64\]"),
        (dict(name="davis", split="train", n=4, size=8), r"size must be an integer in \[16, 256\]"),
        (dict(name="davis", split="train", n=2.5), "n must be an integer"),
        (dict(name="davis", split="train", n=4, flow="raft"), "flows: exact, estimated, farneback"),
    ],
)
def test_bad_input_names_the_problem_and_the_valid_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vos.make(**kwargs, cache=False)


def test_every_world_is_described_and_has_its_settings():
    assert set(vos.VOS_WORLDS) == set(vos.VOS_SETTINGS) == {"davis", "ytvos", "imagenetvid", "tao", "moca"}
    assert all("frame" in text for text in vos.VOS_WORLDS.values())  # each says what a frame reveals
    assert vos.VOS_SETTINGS["tao"].frames > vos.VOS_SETTINGS["davis"].frames  # longer clips
    assert vos.make("tao", "val", n=2, size=16, cache=False).data.shape[2] == 16


def test_worlds_are_deterministic_and_splits_differ():
    world = vos.make("ytvos", "train", n=8, **SMALL)
    again = vos.make("ytvos", "train", n=8, **SMALL)
    for field in ("data", "masks", "exact_masks", "flow"):
        assert torch.equal(getattr(world, field), getattr(again, field)), field
    assert world.meta.equals(again.meta)
    val = vos.make("ytvos", "val", n=8, **SMALL)
    other_seed = vos.make("ytvos", "train", n=8, seed=1, **SMALL)
    assert not torch.equal(world.data, val.data) and not torch.equal(world.masks, val.masks)
    assert not torch.equal(world.data, other_seed.data)
    assert not np.allclose(world.meta["x_start"], val.meta["x_start"])


@pytest.mark.parametrize("name", list(vos.VOS_WORLDS))
def test_items_have_the_documented_shapes_and_ranges(name):
    world = vos.make(name, "train", n=6, **SMALL)
    assert len(world) == len(world.meta) == 6
    assert world.data.dtype == torch.uint8 and world.masks.dtype == torch.uint8
    item = world[3]
    shapes = {"clip": (3, 8, 32, 32), "masks": (8, 32, 32), "exact_masks": (8, 32, 32),
              "flow": (2, 7, 32, 32), "flow_image": (3, 7, 32, 32)}
    assert {key: tuple(value.shape) for key, value in item.items()} == shapes
    assert all(value.dtype == torch.float32 for value in item.values())
    assert 0.0 <= float(item["clip"].min()) and float(item["clip"].max()) <= 1.0
    for key in ("masks", "exact_masks"):
        assert set(item[key].unique().tolist()) <= {0.0, 1.0} and (item[key].sum((1, 2)) > 0).all()
    assert torch.isfinite(item["flow"]).all()
    assert 0.0 <= float(item["flow_image"].min()) and float(item["flow_image"].max()) <= 1.0
    # the HSV encoding at the world's fixed maximum, whatever the clip's own largest motion
    expected = stflow.flow_to_image(item["flow"].transpose(0, 1), world.max_magnitude).transpose(0, 1)
    assert torch.allclose(item["flow_image"], expected)
    assert world.max_magnitude == vos.max_magnitude(name, 32)
    batch = next(iter(DataLoader(world, batch_size=4)))
    assert batch["clip"].shape == (4, 3, 8, 32, 32)
    assert {"x_start", "y_end", "camouflaged", "camera_dx", "statics", "mover_kind", "label_kind"} <= set(world.meta)


def test_masks_follow_the_exact_flow_and_the_latent_path(davis):
    ious = [warp_iou(davis.exact_masks[i].float(), davis.flow[i].float()) for i in range(len(davis))]
    assert np.mean(ious) > 0.8 and min(ious) > 0.65
    centre = centroids(davis.exact_masks.float())
    path = davis.object_path()
    moved, expected = centre - centre[:, :1], path - path[:, :1]
    assert (moved - expected).abs().max() < 1.0  # pixels; rotation shifts off-centre shapes a little
    assert expected[:, -1].norm(dim=-1).min() > 1.0  # every foreground moves


def test_exact_flow_is_the_camera_off_the_moving_things():
    world = vos.make("tao", "train", n=16, flow="exact", **SMALL)
    meta = world.meta
    assert meta["camera_moves"].sum() >= 8 and meta["statics"].sum() >= 4
    velocity = torch.tensor(np.stack([meta["camera_dx"], meta["camera_dy"]], 1) / 7, dtype=torch.float32)
    seen_moving = 0
    for i in range(len(world)):
        background = world.exact_masks[i, :-1] == 0
        off_camera = ((world.flow[i].float() + velocity[i][:, None, None, None]).norm(dim=0) > 1e-2) & background
        if meta["mover_kind"][i] == "none":
            assert not off_camera.any()  # the scene and the static distractors move with the camera only
        else:
            seen_moving += int(off_camera.any())  # the moving distractor has flow of its own
    assert seen_moving >= 3


def test_training_worlds_include_the_cues_that_make_motion_worth_learning():
    for name in ("davis", "ytvos", "imagenetvid", "tao"):
        settings = vos.VOS_SETTINGS[name]
        meta = vos.sample_latents(base.split_rng(name, "train", 0), name, "train", 400, 8, 32)
        assert 0 < meta["camouflaged"].mean() < vos.VOS_SETTINGS["moca"].camouflage_rate
        for column, rate in (("camera_moves", settings.camera_rate), ("camouflaged", settings.camouflage_rate),
                             ("static0_present", settings.static_rate)):
            assert abs(meta[column].mean() - rate) < 0.08, (name, column)
        assert set(meta["mover_kind"]) == {"none", "drift", "fast"}
        assert set(meta["pattern"][meta["camouflaged"]]) <= set(vos.CAMOUFLAGE_PATTERNS)


def test_exact_and_farneback_flow_agree_in_direction_on_moving_objects(davis):
    estimated = vos.make("davis", "val", n=32, flow="farneback", **SMALL)
    assert torch.equal(estimated.data, davis.data) and not torch.equal(estimated.flow, davis.flow)
    meta = davis.meta
    clear = np.flatnonzero((~meta["camera_moves"] & ~meta["camouflaged"] & (meta["travel"] / 7 >= 1.0)).to_numpy())
    assert len(clear) >= 5
    agreement = []
    for i in clear:
        on = davis.exact_masks[i, :-1] > 0
        exact, farneback = davis.flow[i].float()[:, on], estimated.flow[i].float()[:, on]
        agreement.append(float(F.cosine_similarity(exact, farneback, dim=0, eps=1e-6).mean()))
    assert np.mean(agreement) > 0.7 and min(agreement) > 0.3


def test_centre_bias_is_the_mean_mask_over_its_maximum():
    masks = torch.zeros(2, 4, 4)
    masks[0, 1:3, 1:3] = 1
    masks[1, 1:4, 2] = 1
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 0.5
    expected[1:4, 2] += 0.5
    assert torch.allclose(vos.centre_bias(masks), expected)
    assert torch.allclose(vos.centre_bias(masks[:, None].expand(2, 3, 4, 4)), expected)  # (N, T, H, W)
    assert torch.equal(vos.centre_bias(torch.zeros(3, 4, 4)), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="masks"):
        vos.centre_bias(torch.zeros(4))


def test_centre_concentration_is_the_share_of_the_map_in_the_central_window():
    bias = torch.zeros(4, 4)
    bias[1:3, 1:3] = 1.0  # all inside the central 2x2
    assert vos.centre_concentration(bias) == 1.0
    bias[0, 0] = 2.0  # 4 inside, 2 outside
    assert vos.centre_concentration(bias) == pytest.approx(4 / 6)
    assert vos.centre_concentration(torch.ones(8, 8)) == pytest.approx(0.25)  # even spread: window ** 2
    assert vos.centre_concentration(torch.ones(8, 8), window=0.75) == pytest.approx(36 / 64)
    assert np.isnan(vos.centre_concentration(torch.zeros(4, 4)))
    with pytest.raises(ValueError, match="window"):
        vos.centre_concentration(bias, window=0)
    with pytest.raises(ValueError, match="centre-bias map"):
        vos.centre_concentration(torch.zeros(2, 4, 4))


def test_davis_is_more_centre_biased_than_tao(davis):
    tao = vos.make("tao", "val", n=32, **SMALL)
    davis_share, tao_share = vos.centre_concentration(davis.centre_bias()), vos.centre_concentration(tao.centre_bias())
    assert davis_share > 0.85 and tao_share < davis_share - 0.1
    assert float(davis.centre_bias().max()) == 1.0


def appearance_features(clips: torch.Tensor) -> torch.Tensor:
    """Per-pixel colour and local-contrast features (B, T, S, S, 8) of clips (B, 3, T, S, S):
    the colour minus the frame's mean, its square, and the distance to and spread of the 5x5
    neighbourhood."""
    frames = clips.transpose(1, 2).flatten(0, 1)  # (B*T, 3, S, S)
    centred = frames - frames.mean((2, 3), keepdim=True)
    padded = F.pad(frames, (2, 2, 2, 2), mode="replicate")
    local = F.avg_pool2d(padded, 5, 1)
    spread = (F.avg_pool2d(padded**2, 5, 1) - local**2).clamp(min=0).sum(1, keepdim=True).sqrt()
    contrast = (frames - local).norm(dim=1, keepdim=True)
    features = torch.cat([centred, centred**2, contrast, spread], 1)
    return features.movedim(1, -1).view(clips.shape[0], clips.shape[2], *clips.shape[-2:], -1)


def appearance_aucs(train: vos.VosWorld, test: vos.VosWorld, rows: np.ndarray) -> tuple[float, float]:
    """Mean per-clip AUC on ``test`` clips ``rows`` of a per-pixel logistic regression on
    :func:`appearance_features` fitted on ``train``, and of the local contrast alone."""
    x, y = appearance_features(train.clips())[:, ::2], train.exact_masks[:, ::2].bool()  # every other frame
    mean, std = x.flatten(0, -2).mean(0), x.flatten(0, -2).std(0)
    inputs = torch.cat([((x - mean) / std).flatten(0, -2), torch.ones(y.numel(), 1)], 1).double()
    targets = y.flatten().double()
    balance = torch.where(targets > 0, (1 - targets).sum() / targets.sum(), torch.ones(()))
    weight = torch.zeros(inputs.shape[1], dtype=torch.float64)
    for _ in range(15):  # Newton steps on the class-balanced logistic loss, slightly ridged
        p = torch.sigmoid(inputs @ weight)
        gradient = inputs.T @ (balance * (p - targets)) + 1e-3 * weight
        hessian = (inputs * (balance * p * (1 - p))[:, None]).T @ inputs + 1e-3 * torch.eye(len(weight))
        weight = weight - torch.linalg.solve(hessian, gradient)
    features = appearance_features(test.clips(rows))
    scores = ((features - mean) / std).double() @ weight[:-1]
    labels = test.exact_masks[rows].bool()
    fitted = [auc(s[m], s[~m]) for s, m in zip(scores, labels)]
    contrast = [auc(f[..., 6][m], f[..., 6][~m]) for f, m in zip(features, labels)]
    return float(np.mean(fitted)), float(np.mean(contrast))


def test_moca_keeps_camouflaged_clips_with_clear_locomotion(moca):
    meta = moca.meta
    assert meta["camouflaged"].all() and (meta["statics"] == 0).all() and (meta["mover_kind"] == "none").all()
    assert (meta["travel"] >= vos.VOS_SETTINGS["moca"].min_travel * 32).all()
    shift = centroids(moca.exact_masks.float())
    assert ((shift[:, -1] - shift[:, 0]).norm(dim=-1) > 3.0).all()


def test_moca_objects_are_invisible_to_an_appearance_classifier(moca):
    train = vos.make("moca", "train", n=12, **SMALL)
    fitted, contrast = appearance_aucs(train, moca, np.arange(len(moca)))
    assert abs(fitted - 0.5) < 0.15 and abs(contrast - 0.5) < 0.15  # near chance either way


def test_the_appearance_classifier_finds_plain_objects():
    train, val = (vos.make("davis", split, n=12, **SMALL) for split in ("train", "val"))
    plain = np.flatnonzero(~val.meta["camouflaged"].to_numpy())
    assert appearance_aucs(train, val, plain)[0] > 0.8


def test_moca_objects_stand_out_in_the_flow_of_a_static_camera(moca):
    static = np.flatnonzero(~moca.meta["camera_moves"].to_numpy())
    assert len(static) >= 10
    magnitude = moca.flow[static].float().norm(dim=1)
    on = moca.exact_masks[static, :-1].bool()
    assert np.mean([auc(m[o], m[~o]) for m, o in zip(magnitude, on)]) > 0.95


def test_imagenetvid_trains_on_boxes_and_sloppy_masks_and_keeps_the_exact_ones():
    world = vos.make("imagenetvid", "train", n=24, **SMALL)
    kind = world.meta["label_kind"].to_numpy()
    assert set(kind) == {"box", "sloppy"}
    exact, label = world.exact_masks.bool(), world.masks.bool()
    for i in np.flatnonzero(kind == "box"):
        assert (label[i] | ~exact[i]).all()  # the box contains the exact mask
        for t in range(label.shape[1]):  # and is the smallest rectangle that does
            ys, xs = torch.nonzero(exact[i, t], as_tuple=True)
            box = torch.zeros_like(label[i, t])
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            assert torch.equal(label[i, t], box)
    sloppy = np.flatnonzero(kind == "sloppy")
    overlap = (label[sloppy] & exact[sloppy]).sum((1, 2, 3)) / (label[sloppy] | exact[sloppy]).sum((1, 2, 3))
    assert (overlap > 0.3).all() and (overlap < 1.0).all()
    assert world.centre_bias(exact=True).shape == (32, 32)
    val = vos.make("imagenetvid", "val", n=4, **SMALL)
    assert (val.meta["label_kind"] == "exact").all() and torch.equal(val.masks, val.exact_masks)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    first = vos.make("davis", "train", n=4, frames=4, size=16)
    assert not first.from_cache and first.cache_path.is_file() and first.cache_path.parent == tmp_path / "worlds"
    second = vos.make("davis", "train", n=4, frames=4, size=16)
    assert second.from_cache and torch.equal(first.data, second.data) and torch.equal(first.flow, second.flow)
    assert second.meta.equals(first.meta)
    first.cache_path.write_bytes(b"corrupt")
    third = vos.make("davis", "train", n=4, frames=4, size=16)
    assert not third.from_cache and torch.equal(third.data, first.data)


def boundary_sharpness(flow: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean flow gradient magnitude over mask-edge pixels, for flow (N, 2, T-1, S, S) and masks (N, T, S, S)."""
    f = flow.float()
    gx = (f[..., :, 1:] - f[..., :, :-1]).norm(dim=1)[..., :-1, :]
    gy = (f[..., 1:, :] - f[..., :-1, :]).norm(dim=1)[..., :, :-1]
    m = masks[:, :-1].bool()
    edge = ((m[..., :, 1:] != m[..., :, :-1])[..., :-1, :] | (m[..., 1:, :] != m[..., :-1, :])[..., :, :-1])
    return float((gx + gy)[edge].mean())


def test_estimated_flow_is_a_deterministic_blurred_noisy_copy_of_the_exact_flow(davis):
    estimated = vos.make("davis", "val", n=32, flow="estimated", **SMALL)
    again = vos.make("davis", "val", n=32, flow="estimated", **SMALL)
    assert torch.equal(estimated.flow, again.flow)
    assert torch.equal(estimated.data, davis.data) and torch.equal(estimated.masks, davis.masks)
    assert not torch.equal(estimated.flow, davis.flow)
    other_seed = vos.make("davis", "val", n=32, flow="estimated", seed=1, **SMALL)
    assert not torch.equal(other_seed.flow, estimated.flow)
    # close: on the foreground it points the way the exact flow does
    on = davis.exact_masks[:, :-1].bool()
    exact, noisy = davis.flow.float().movedim(1, -1)[on], estimated.flow.float().movedim(1, -1)[on]
    moving = exact.norm(dim=-1) > 0.5
    assert float(F.cosine_similarity(exact[moving], noisy[moving], dim=-1).mean()) > 0.7
    error = (estimated.flow.float() - davis.flow.float()).norm(dim=1).mean()
    assert 0.05 < float(error) < float(davis.flow.float().norm(dim=1)[on].mean())
    # but blurred: motion boundaries are much softer
    assert boundary_sharpness(estimated.flow, davis.exact_masks) < 0.6 * boundary_sharpness(davis.flow, davis.exact_masks)


def test_degrade_flow_blurs_a_motion_edge_and_keeps_the_direction():
    flow = torch.zeros(2, 3, 32, 32)
    flow[0, :, :, 16:] = 2.0  # the right half moves right
    quiet = vos.FlowErrors(noise=(0.0, 0.0), gain_spread=0.0, frame_gain_spread=0.0, fail_rate=0.0)
    smooth = vos.degrade_flow(flow, seed=3, errors=quiet)
    assert torch.allclose(smooth[:, :, :, :8], torch.zeros(()), atol=1e-4)  # far from the edge: unchanged
    assert torch.allclose(smooth[0, :, :, 26:], torch.tensor(2.0), atol=1e-4)
    assert 0.1 < float(smooth[0, 0, 10, 15]) < 1.0 and 1.0 < float(smooth[0, 0, 10, 16]) < 1.9  # the edge is soft
    noisy = vos.degrade_flow(flow, seed=3)
    assert torch.equal(noisy, vos.degrade_flow(flow, seed=3)) and not torch.equal(noisy, vos.degrade_flow(flow, seed=4))
    assert float(noisy[0, :, :, 24:].mean()) > 1.0 and float(noisy[1].abs().mean()) > 0.0
    failing = vos.FlowErrors(noise=(0.0, 0.0), gain_spread=0.0, frame_gain_spread=0.0, fail_rate=1.0,
                             fail_gain=(0.0, 0.1))
    assert float(vos.degrade_flow(flow, seed=3, errors=failing)[0, :, :, 24:].max()) <= 0.2 + 1e-5


def test_gaussian_blur_keeps_constants_and_mass():
    x = torch.full((2, 5, 16, 16), 0.7)
    assert torch.allclose(vos.gaussian_blur(x, 1.5), x, atol=1e-6)
    spike = torch.zeros(16, 16)
    spike[8, 8] = 1.0
    blurred = vos.gaussian_blur(spike, 1.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and float(blurred.max()) < 0.2 and blurred.shape == (16, 16)


def test_the_cache_key_of_estimated_flow_follows_its_errors(monkeypatch):
    config = {"world": "davis", "split": "val", "n": 4, "frames": 4, "size": 16, "seed": 0, "flow": "estimated",
              "format": vos.CACHE_FORMAT}
    before = vos.cache_path(config)
    monkeypatch.setattr(vos, "ESTIMATED_FLOW", vos.FlowErrors(fail_rate=0.5))
    assert vos.cache_path(config) != before
    exact = {**config, "flow": "exact"}
    assert vos.cache_path(exact) == vos.cache_path(exact)
