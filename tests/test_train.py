"""Tests of stdyn.training with tiny stand-in models and datasets (no registry models needed)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from stdyn.data import cache
from stdyn.training import (
    Callback,
    TrainConfig,
    checkpoint_path,
    evaluate,
    fit,
    load_weights,
    lr_schedule,
    predict,
    saved_epochs,
)

torch.set_num_threads(1)

FRAMES = 8


class TinyNet(nn.Module):
    """A temporal convolution, global pooling and a linear head: can read frame order."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(F.relu(self.conv(clips)).mean((2, 3, 4))))


def make_model(seed: int = 0, dropout: float = 0.0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(dropout=dropout)


def ramp_dataset(n: int, seed: int) -> TensorDataset:
    """Brightness ramps up (label 0) or down (label 1): only the frame order tells them apart."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    ramp = torch.linspace(-1, 1, FRAMES)
    sign = 1 - 2 * labels.float()
    brightness = 0.5 + 0.3 * sign[:, None] * ramp[None]  # (n, T)
    clips = brightness[:, None, :, None, None].expand(n, 3, FRAMES, 4, 4).clone()
    clips += 0.05 * torch.randn(clips.shape, generator=generator)
    return TensorDataset(clips.clamp(0, 1), labels)


def small_config(**overrides) -> TrainConfig:
    values = dict(epochs=3, batch_size=16, optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup_epochs=1.0)
    values.update(overrides)
    return TrainConfig(**values)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_time(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.drop(columns="seconds")


@pytest.fixture(scope="module")
def data() -> tuple[TensorDataset, TensorDataset]:
    return ramp_dataset(64, seed=1), ramp_dataset(32, seed=2)


def test_same_seed_gives_identical_weights_and_metrics(data):
    train, val = data
    first, second, other = make_model(), make_model(), make_model()
    metrics_1 = fit(first, train, val, small_config(epochs=2), progress=False)
    metrics_2 = fit(second, train, val, small_config(epochs=2), progress=False)
    fit(other, train, val, small_config(epochs=2, seed=1), progress=False)
    assert weights_equal(first, second)
    pd.testing.assert_frame_equal(without_time(metrics_1), without_time(metrics_2))
    assert not weights_equal(first, other)  # the seed does change the data order
    assert list(metrics_1.columns) == ["epoch", "phase", "lr", "train_loss", "train_acc", "val_acc", "seconds"]
    assert metrics_1["epoch"].tolist() == [1, 2]
    assert not first.training


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, state, clips, labels) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt


class DropoutOff(Callback):
    def on_phase_change(self, model: nn.Module) -> None:
        model.dropout.p = 0.0


@pytest.mark.parametrize("interrupt_step", [6, 13])  # 4 steps per epoch: in epoch 2 / in fine-tuning
def test_resume_after_interrupt_reproduces_the_uninterrupted_run(data, tmp_path, interrupt_step):
    train, val = data
    config = small_config(epochs=3, finetune_epochs=1, finetune_lr=1e-3, appearance=0.5)
    reference = make_model(dropout=0.3)
    expected = fit(reference, train, val, config, tmp_path / "whole", progress=False, callbacks=[DropoutOff()])

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(dropout=0.3), train, val, config, run, progress=False,
            callbacks=[DropoutOff(), InterruptAt(interrupt_step)])
    done = interrupt_step // 4
    assert saved_epochs(run) == list(range(done + 1))

    resumed = make_model(seed=99, dropout=0.3)  # other initial weights: they come from the checkpoint
    metrics = fit(resumed, train, val, config, run, progress=False, callbacks=[DropoutOff()])
    assert weights_equal(resumed, reference)
    pd.testing.assert_frame_equal(without_time(metrics), without_time(expected))
    assert resumed.dropout.p == 0.0


def test_checkpoint_every_epoch_and_only_latest_training_state(data, tmp_path):
    train, val = data
    model = make_model()
    metrics = fit(model, train, val, small_config(epochs=3), tmp_path, progress=False)
    assert saved_epochs(tmp_path) == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("state_*.pt")) == ["state_003.pt"]
    assert weights_equal(load_weights(make_model(seed=5), tmp_path, 3), model)
    assert weights_equal(load_weights(make_model(seed=5), tmp_path, 0), make_model())
    on_disk = pd.read_csv(tmp_path / "metrics.csv")
    assert on_disk["train_loss"].tolist() == pytest.approx(metrics["train_loss"].tolist())

    # A finished run is loaded, not trained again.
    again = make_model(seed=7)
    calls = []

    class Count(Callback):
        def on_step(self, state, clips, labels):
            calls.append(state.step)

    reloaded = fit(again, train, val, small_config(epochs=3), tmp_path, progress=False, callbacks=[Count()])
    assert calls == []
    assert weights_equal(again, model)
    pd.testing.assert_frame_equal(reloaded, metrics)


def test_corrupt_checkpoint_resumes_from_the_last_intact_one(data, tmp_path):
    train, val = data
    reference = make_model()
    fit(reference, train, val, small_config(), tmp_path / "a", progress=False)
    run = tmp_path / "b"
    fit(make_model(), train, val, small_config(), run, progress=False)
    last = checkpoint_path(run, 3)
    last.write_bytes(last.read_bytes()[:-10])  # truncated: its checksum no longer matches
    assert not cache.is_intact(last)
    with pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        load_weights(make_model(), run, 3)
    # The training state of epoch 3 is intact but its weights are not, and older states were
    # dropped: the run starts over from the model given and still reproduces the reference.
    restarted = make_model()
    fit(restarted, train, val, small_config(), run, progress=False)
    assert weights_equal(restarted, reference)
    assert saved_epochs(run) == [0, 1, 2, 3]


def test_other_config_in_run_dir_is_refused(data, tmp_path):
    train, val = data
    fit(make_model(), train, val, small_config(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        fit(make_model(), train, val, small_config(epochs=1, lr=0.5), tmp_path, progress=False)


def test_warmup_then_cosine_then_finetune_schedule():
    config = TrainConfig(epochs=10, lr=0.1, warmup_epochs=2, warmup_start_factor=0.1,
                         finetune_epochs=2, finetune_lr=1e-5)
    lr_at = lr_schedule(config, steps_per_epoch=10)  # 20 warm-up steps, 80 cosine steps
    assert lr_at(0) == pytest.approx(0.01)
    assert lr_at(10) == pytest.approx(0.01 + 0.09 * 0.5)
    assert lr_at(20) == pytest.approx(0.1)
    assert lr_at(60) == pytest.approx(0.05)  # half way through the cosine
    assert lr_at(80) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.75)))
    assert 0 < lr_at(99) < 1e-3
    assert lr_at(100) == lr_at(119) == 1e-5
    steps = [lr_at(s) for s in range(100)]
    assert all(a < b for a, b in zip(steps[:20], steps[1:21]))
    assert all(a >= b for a, b in zip(steps[20:], steps[21:]))


class Recorder(Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, str, float]] = []
        self.clips: list[torch.Tensor] = []
        self.phase_changes: list[int] = []

    def on_step(self, state, clips, labels) -> None:
        self.steps.append((state.step, state.phase, state.optimizer.param_groups[0]["lr"]))
        self.clips.append(clips.clone())

    def on_phase_change(self, model) -> None:
        self.phase_changes.append(len(self.steps))


def test_fit_follows_the_schedule_and_calls_the_phase_change_once(data):
    train, val = data
    config = small_config(epochs=3, finetune_epochs=2, finetune_lr=1e-4)
    recorder = Recorder()
    metrics = fit(make_model(), train, val, config, progress=False, callbacks=[recorder])
    lr_at = lr_schedule(config, steps_per_epoch=4)
    assert [s for s, _, _ in recorder.steps] == list(range(20))
    assert [lr for _, _, lr in recorder.steps] == pytest.approx([lr_at(s) for s in range(20)])
    assert [lr for _, phase, lr in recorder.steps if phase == "finetune"] == [1e-4] * 8
    assert recorder.phase_changes == [12]  # after the 3 x 4 main steps, before fine-tuning
    assert metrics["phase"].tolist() == ["train"] * 3 + ["finetune"] * 2
    assert metrics["lr"].tolist() == pytest.approx([lr_at(s) for s in range(0, 20, 4)])


def test_shuffle_frames_feeds_each_clip_with_its_own_frame_permutation():
    n = 32
    # Frame t of clip i holds the value (i * T + t) / (n * T): any frame names its clip and time.
    codes = torch.arange(n * FRAMES, dtype=torch.float32).reshape(n, FRAMES) / (n * FRAMES)
    clips = codes[:, None, :, None, None].expand(n, 3, FRAMES, 2, 2).clone()
    dataset = TensorDataset(clips, torch.zeros(n, dtype=torch.long))
    recorder = Recorder()
    fit(make_model(), dataset, None, small_config(epochs=2, shuffle_frames=True), progress=False,
        callbacks=[recorder])
    seen = torch.cat(recorder.clips)[:, 0, :, 0, 0] * (n * FRAMES)  # (steps * batch, T) frame codes
    seen = seen.round().long()
    clip_of_frame = seen // FRAMES
    assert (clip_of_frame == clip_of_frame[:, :1]).all()  # frames never mix between clips
    order = seen % FRAMES
    assert (order.sort(dim=1).values == torch.arange(FRAMES)).all()  # a permutation of all frames
    shuffled = (order != torch.arange(FRAMES)).any(dim=1)
    assert shuffled.float().mean() > 0.9
    assert len({tuple(o) for o in order.tolist()}) > len(order) // 2  # each clip its own order
    # Epoch 2 shows the same clips in other orders.
    first, second = order[: len(order) // 2], order[len(order) // 2:]
    assert not torch.equal(first, second)


def test_frame_shuffling_removes_the_order_cue(data):
    train, val = data
    big_train = ramp_dataset(192, seed=3)
    config = small_config(epochs=4, lr=3e-2)
    ordered = fit(make_model(), big_train, val, config, progress=False)
    shuffled = fit(make_model(), big_train, val, small_config(epochs=4, lr=3e-2, shuffle_frames=True),
                   progress=False)
    assert ordered["val_acc"].iloc[-1] > 0.9
    assert shuffled["val_acc"].iloc[-1] < 0.75


def test_evaluate_and_predict_agree_with_a_manual_count(data):
    train, val = data
    model = make_model()
    fit(model, train, None, small_config(epochs=2), progress=False)
    logits, labels = predict(model, val, batch_size=5)
    clips, targets = val.tensors
    with torch.no_grad():
        expected = model(clips)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(labels, targets)
    accuracy = evaluate(model, val, batch_size=7)
    assert accuracy == pytest.approx((expected.argmax(1) == targets).float().mean().item())
    model.train()
    evaluate(model, val)
    assert model.training  # the mode is given back
    shuffled = predict(model, val, shuffle_frames=True, seed=1)[0]
    assert torch.equal(shuffled, predict(model, val, shuffle_frames=True, seed=1)[0])
    assert not torch.allclose(shuffled, logits)


def test_bad_input_is_refused_with_a_way_out(data):
    train, val = data
    with pytest.raises(ValueError, match="lower batch_size"):
        fit(make_model(), TensorDataset(*train[:4]), None, small_config(), progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=3)
    flat = TensorDataset(torch.rand(20, 3, 8), torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(3, T, H, W\)"):
        fit(make_model(), flat, None, small_config(), progress=False)
    with pytest.raises(ValueError, match="no field"):
        TrainConfig.from_profile("smoke", learning_rate=1.0)


def test_from_profile_takes_the_profile_settings():
    config = TrainConfig.from_profile("smoke", seed=3)
    from stdyn.training import profiles

    smoke = profiles.get("smoke")
    assert (config.epochs, config.batch_size, config.lr, config.seed) == (smoke.epochs, smoke.batch_size, smoke.lr, 3)
    with pytest.raises(ValueError, match="smoke, quick, full"):
        profiles.get("medium")
    full = profiles.get("full")
    assert TrainConfig.from_profile(full).warmup_epochs == full.warmup_epochs
    assert TrainConfig.from_profile(full, epochs=2).warmup_epochs == 2  # a shortened run keeps a valid warm-up


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, store: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        train, val = ramp_dataset(64, seed=1), ramp_dataset(32, seed=2)
        fit(make_model(), train, val, small_config(epochs=2, shuffle_frames=True, appearance=0.5), Path(run_dir), progress=False)
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_processes_matches_a_single_process(data, tmp_path):
    train, val = data
    single = make_model()
    expected = fit(single, train, val, small_config(epochs=2, shuffle_frames=True, appearance=0.5), tmp_path / "single",
                   progress=False)
    run = tmp_path / "ddp"
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "store"), str(run)), nprocs=2, start_method="fork")
    ddp = load_weights(make_model(seed=9), run, 2)
    # Each process averages the gradient of half the global batch, so the sums run in another
    # order: equal up to float rounding, not bit for bit.
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp.state_dict()[name], value, rtol=1e-4, atol=1e-5, msg=name)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val_acc"].tolist() == pytest.approx(expected["val_acc"].tolist())
    assert metrics["train_loss"].tolist() == pytest.approx(expected["train_loss"].tolist(), rel=1e-4)
    assert saved_epochs(run) == [0, 1, 2]


def test_an_empty_stdyn_cache_means_the_default_folder_not_the_working_directory(monkeypatch, tmp_path):
    from pathlib import Path

    from stdyn.data.cache import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STDYN_CACHE", "")
    assert cache_dir("zoo") == Path(tmp_path / "home" / ".cache" / "stdyn" / "zoo")
    assert not (tmp_path / "zoo").exists()
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
