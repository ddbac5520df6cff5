"""The video instance segmentation task: its examples, training through the zoo, AP scoring and
measurement on stylized davis clips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stdyn import tasks, training
from stdyn.data.worlds import vis as vis_worlds
from stdyn.tasks.vis import ClipsOnly, VisClips, split_outputs
from stdyn.training import profiles, zoo


@pytest.fixture(scope="module")
def ytvis():
    return vis_worlds.make("ytvis", "train", 6, size=16, cache=False)


def test_examples_weigh_only_the_annotated_frames(ytvis):
    every = VisClips(ytvis)
    fifth = VisClips(ytvis, annotate_every=5)
    clip, masks, classes, annotated = tasks.VIS.example(fifth[0], 0)
    assert clip.shape == (3, 8, 16, 16) and masks.shape == (vis_worlds.MAX_INSTANCES, 8, 16, 16)
    assert annotated.tolist() == [1, 0, 0, 0, 0, 1, 0, 0] and every[0][3].tolist() == [1] * 8
    assert torch.equal(classes, ytvis.classes[0])
    with pytest.raises(ValueError, match=r"expected \(clip \(3, T, H, W\), masks \(M, T, H, W\)"):
        tasks.VIS.example((clip, masks[:, :4], classes, annotated), 3)


def test_the_annotated_frames_are_the_only_ones_the_loss_reads(ytvis):
    from stdyn import models

    model = models.create("vistr_r50", len(vis_worlds.VIS_CLASSES), seed=0, width=4, dim=16, encoder_layers=1,
                          decoder_layers=1)
    batch = [torch.stack(column) for column in zip(*(VisClips(ytvis, annotate_every=5)[i] for i in range(3)))]
    outputs = model(batch[0])
    loss = tasks.VIS.loss(model, outputs, batch)
    changed = batch[1].clone()
    changed[:, :, 2] = 1 - changed[:, :, 2]  # frame 2 is not annotated
    assert tasks.VIS.loss(model, outputs, [batch[0], changed, *batch[2:]]).item() == pytest.approx(loss.item())
    scores = tasks.VIS.scores(outputs, batch)
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 1)).all())
    class_logits, mask_logits = split_outputs(outputs, batch[1])
    assert class_logits.shape[-1] == len(vis_worlds.VIS_CLASSES) + 1 and mask_logits.shape[2:] == (8, 16, 16)


def test_the_zoo_trains_a_vis_model_and_it_is_measured_on_davis_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    from stdyn import experiments

    entry = zoo.get("vistr_r50", "ytvis", profile="smoke", progress=False)
    smoke = profiles.get("smoke").vis
    assert entry.task is tasks.VIS and entry.classes == list(vis_worlds.VIS_CLASSES)
    assert entry.config["model_kwargs"]["encoder_layers"] == smoke.encoder_layers
    assert 0 <= entry.val_score <= 1
    train, val = zoo.datasets("ytvis", "smoke")
    assert isinstance(train, VisClips) and len(train) == smoke.n_train and len(val) == smoke.n_val
    annotated = zoo.get("vistr_r50", "ytvis", profile="smoke", world_kwargs={"annotate_every": 5}, progress=False)
    assert annotated.key != entry.key
    result = experiments.measure_entry(entry, "davis", "smoke", progress=False)
    assert result.layers == [stage.name for stage in entry.model.stages]
    assert result.layers[0].startswith("encoder") and result.layers[-1].startswith("decoder")
    pairs = result.layerwise(result.layers[-1]).n_pairs
    assert pairs["static"] == pairs["dynamic"] == profiles.get("smoke").vos.n_measure
    assert all(np.isfinite(result.layerwise(layer).scores["static"]) for layer in result.layers)


def test_clips_only_gives_the_clip_of_dict_and_tuple_items(ytvis):
    assert torch.equal(ClipsOnly(ytvis)[1], ytvis[1]["clip"])
    assert torch.equal(ClipsOnly(VisClips(ytvis))[1], ytvis[1]["clip"])


def test_each_vis_setting_comes_from_the_profile():
    quick = profiles.get("quick")
    config = training.TrainConfig.from_profile(quick, task="vis", model="vistr_r50")
    assert (config.optimizer, config.lr, config.epochs) == ("adamw", quick.vis.lr, quick.vis.epochs)
    assert config.appearance == quick.vis.appearance and config.grad_clip == quick.vis.grad_clip
    kwargs = tasks.VIS.model_kwargs(quick, "vistr_r101")
    assert (kwargs["encoder_layers"], kwargs["decoder_layers"]) == (quick.vis.encoder_layers, quick.vis.decoder_layers)
    assert profiles.get("full").vis.encoder_layers == profiles.get("full").vis.decoder_layers == 6
