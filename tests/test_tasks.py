"""stdyn.tasks: what each task says, and training, evaluation and the zoo dispatching on it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stdyn import tasks, training
from stdyn.data.worlds import vos as vos_worlds
from stdyn.tasks.vos import VosClips, VosFrames, flow_scale, mask_ious
from stdyn.training import profiles, zoo


@pytest.fixture(scope="module")
def davis():
    return vos_worlds.make("davis", "train", 6, size=16, cache=False)


@pytest.fixture(scope="module")
def ytvos():
    return vos_worlds.make("ytvos", "train", 4, size=16, cache=False)


def test_the_world_says_the_task():
    assert tasks.of_world("ssv2") is tasks.ACTION
    assert tasks.of_world("davis") is tasks.VOS and tasks.of_world("davis+ytvos") is tasks.VOS
    with pytest.raises(ValueError, match=r"unknown world 'davis\+ssv2'.*vos: davis"):
        tasks.of_world("davis+ssv2")
    assert tasks.of_world("ytvis") is tasks.VIS and tasks.of_world("ovis") is tasks.VIS
    with pytest.raises(ValueError, match="choose one of action, vos, vis"):
        tasks.get("vps")
    assert tasks.get("vos") is tasks.VOS and tasks.get(tasks.ACTION) is tasks.ACTION


def test_joined_worlds_index_every_clip_once(davis, ytvos):
    clips = VosClips([davis, ytvos])
    assert len(clips) == 10 and clips.name == "davis+ytvos"
    assert clips.locate(5) == (davis, 5) and clips.locate(6) == (ytvos, 0)
    assert torch.equal(clips[7]["clip"], ytvos[1]["clip"])
    with pytest.raises(IndexError):
        clips.locate(10)
    limited = VosClips([davis, ytvos], limit=2)
    assert len(limited) == 4 and limited.locate(2) == (ytvos, 0)
    other_size = vos_worlds.make("davis", "val", 2, size=24, cache=False)
    with pytest.raises(ValueError, match="different sizes"):
        VosClips([davis, other_size])


def test_frames_are_the_clips_frames_with_flow_images_on_one_scale(davis):
    frames = VosFrames(davis)
    steps = davis.flow.shape[2]
    assert len(frames) == len(davis) * steps
    rgb, image, mask = frames[steps + 2]  # clip 1, frame 2
    item = davis[1]
    assert torch.allclose(rgb, item["clip"][:, 2]) and torch.equal(mask[0], item["masks"][2])
    from stdyn.data.flow import flow_to_image

    assert torch.allclose(image, flow_to_image(item["flow"][:, 2], flow_scale(16)))
    assert flow_scale(16) == max(vos_worlds.max_magnitude(name, 16) for name in vos_worlds.VOS_SETTINGS)
    raw = VosFrames(davis, [steps // 2], flow="raw")
    assert len(raw) == len(davis) and raw[0][1].shape == (2, 16, 16)
    assert raw.clip_index.tolist() == list(range(len(davis)))
    assert raw.frame_index.tolist() == [steps // 2] * len(davis)


def test_validation_after_the_last_epoch_only_leaves_the_others_nan(davis, tmp_path):
    from stdyn import models

    model = models.create("fusionseg", 1, seed=0, width=4)
    config = training.TrainConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.05, warmup_epochs=0.0,
                                  schedule="poly", validate_every_epoch=False, examples_per_clip=3)
    metrics = training.fit(model, davis, davis, config, None, progress=False, task="vos")
    assert np.isnan(metrics["val_miou"].iloc[0]) and 0.0 <= metrics["val_miou"].iloc[-1] <= 1.0


def test_training_can_take_evenly_spaced_frames_of_each_clip(davis):
    steps = davis.flow.shape[2]
    assert steps == 7
    three = VosFrames(davis, per_clip=3)
    assert three.frame_index.tolist() == [1, 3, 5] * len(davis)
    assert three.clip_index.tolist() == [c for c in range(len(davis)) for _ in range(3)]
    assert len(VosFrames(davis, per_clip=7)) == len(VosFrames(davis, per_clip=20)) == 7 * len(davis)
    assert tasks.VOS.examples(davis, per_clip=2).frame_index.tolist()[:2] == [1, 5]
    with pytest.raises(ValueError, match="examples_per_clip must be >= 1"):
        training.TrainConfig(examples_per_clip=0)


def test_example_checks_name_what_was_expected():
    with pytest.raises(ValueError, match=r"item 3: expected \(rgb \(3, H, W\).*VosFrames"):
        tasks.VOS.example({"clip": torch.zeros(3, 8, 16, 16)}, 3)
    with pytest.raises(ValueError, match="item 0: expected"):
        tasks.VOS.example((torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(8, 8)), 0)
    with pytest.raises(ValueError, match=r"item 2: expected a clip tensor \(3, T, H, W\)"):
        tasks.ACTION.example((torch.zeros(3, 16, 16), 1), 2)


def test_mask_ious_by_hand():
    logits = torch.full((3, 1, 2, 2), -1.0)
    logits[0, 0, 0, 0] = logits[0, 0, 0, 1] = 1.0  # predicts 2 pixels
    masks = torch.zeros(3, 1, 2, 2)
    masks[0, 0, 0, 0] = 1.0  # 1 of them is foreground: 1/2
    masks[1, 0, 1, 1] = 1.0  # predicts nothing: 0
    assert mask_ious(logits, masks).tolist() == [0.5, 0.0, 1.0]  # both empty: 1


def test_the_poly_schedule_decays_to_zero_after_its_warm_up():
    config = training.TrainConfig(epochs=2, lr=0.1, warmup_epochs=0.0, schedule="poly")
    lr_at = training.lr_schedule(config, steps_per_epoch=50)
    assert lr_at(0) == pytest.approx(0.1)
    assert lr_at(50) == pytest.approx(0.1 * 0.5 ** training.POLY_POWER)
    assert lr_at(99) == pytest.approx(0.1 * 0.01 ** training.POLY_POWER)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        training.TrainConfig(schedule="step")


def test_each_task_takes_its_training_settings_from_the_profile():
    quick = profiles.get("quick")
    action = training.TrainConfig.from_profile(quick)
    assert (action.optimizer, action.schedule, action.lr) == (quick.optimizer, "cosine", quick.lr)
    vos = training.TrainConfig.from_profile(quick, task="vos", model="matnet")
    assert (vos.optimizer, vos.schedule, vos.lr, vos.epochs) == ("sgd", "poly", quick.vos.lr, quick.vos.epochs)
    assert vos.warmup_epochs == 0 and vos.batch_size == quick.vos.batch_size
    tuned = training.TrainConfig.from_profile(quick, model="mvit")
    assert tuned.epochs == quick.train_overrides["mvit"]["epochs"]
    assert tasks.VOS.model_kwargs(quick, "matnet") == {"width": quick.vos.width}


class _FlowIsTheMask(nn.Module):
    """Foreground wherever the flow image is saturated: a stand-in that is right on static scenes."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, rgb, flow_image):
        saturation = flow_image.max(1, keepdim=True).values - flow_image.min(1, keepdim=True).values
        return self.scale * (saturation - 0.05) * 50


def test_evaluate_is_the_mean_iou_over_frames(davis):
    model = _FlowIsTheMask()
    outputs, masks = training.predict(model, davis, task="vos")
    assert outputs.shape == (len(VosFrames(davis)), 1, 16, 16) and masks.shape == outputs.shape
    expected = mask_ious(outputs, masks).mean().item()
    assert training.evaluate(model, davis, task="vos") == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_fit_trains_a_two_stream_model_on_frames_and_reports_miou(davis, tmp_path):
    from stdyn import models

    model = models.create("matnet_nobar", 1, seed=0, width=4)
    config = training.TrainConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.05, warmup_epochs=0.0,
                                  schedule="poly", appearance=0.5, weight_decay=1e-4)
    metrics = training.fit(model, davis, davis, config, tmp_path / "run", progress=False, task="vos")
    assert metrics.columns.tolist() == training.metric_columns("vos")
    assert metrics["val_miou"].between(0, 1).all() and metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    saved = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert saved.columns.tolist() == training.metric_columns("vos")
    again = training.fit(models.create("matnet_nobar", 1, seed=0, width=4), davis, davis, config,
                         tmp_path / "run", progress=False, task="vos")  # finished: loaded, not retrained
    pd.testing.assert_frame_equal(metrics, again)
    with pytest.raises(ValueError, match="no frame-shuffled training"):
        training.fit(models.create("matnet_nobar", 1, seed=0, width=4), davis, None,
                     training.TrainConfig(epochs=1, batch_size=8, shuffle_frames=True), progress=False, task="vos")


def test_the_zoo_trains_segmentation_models_on_joined_worlds(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    entry = zoo.get("matnet_nobar", "davis+ytvos", profile="smoke", progress=False)
    assert entry.task is tasks.VOS and entry.classes == ["foreground"]
    assert entry.config["task"] == "vos" and entry.config["world"] == "davis+ytvos"
    assert entry.val_score == entry.metrics["val_miou"].iloc[-1]
    with pytest.raises(ValueError, match="no accuracy; its metric is val_score"):
        entry.val_accuracy
    train, val = zoo.datasets("davis+ytvos", "smoke")
    smoke = profiles.get("smoke").vos
    assert len(train) == 2 * smoke.n_train and train.size == smoke.size
    assert len(zoo.measure_set("davis", "smoke")) == smoke.n_measure
    listed = zoo.list_cached()
    assert listed.loc[0, "task"] == "vos" and listed.loc[0, "val_score"] == pytest.approx(entry.val_score)
    assert zoo.get("matnet_nobar", "davis+ytvos", profile="smoke", progress=False).key == entry.key


def test_measuring_a_segmentation_entry_uses_two_stream_pairs_over_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    from stdyn import experiments

    entry = zoo.get("fusionseg", "davis", profile="smoke", progress=False)
    result = experiments.measure_entry(entry, "davis", "smoke", progress=False)
    assert result.layers == [stage.name for stage in entry.model.stages]
    assert "fusion2" in result.layers and "fusion5" in result.layers
    pairs = result.layerwise("fusion5").n_pairs
    assert pairs["static"] == pairs["dynamic"] == profiles.get("smoke").vos.n_measure  # one frame per clip
    labels = experiments.stage_labels(entry.model, result.layers).set_index("layer")
    assert labels.loc["fusion5", "stage"] == 5 and labels.loc["fusion5", "branch"] == "fusion"
    assert labels.loc["appearance3", "stage"] == 3 and labels.loc["motion1", "branch"] == "motion"
    assert np.isfinite(result.layerwise("fusion5").scores["dynamic"])
