"""Tests of stdyn.interventions: unit removal, rankings, StaticDropout and its training callback."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import nn
from torch.utils.data import TensorDataset

from stdyn import models
from stdyn.core.estimator import UnitwiseResult, categorize, unitwise
from stdyn.core.pairs import shuffle_batch_frames
from stdyn.core.probe import check_layers
from stdyn.interventions import (
    StaticDropout,
    StaticDropoutCallback,
    least_biased_units,
    random_units,
    rank_units,
    refresh_static_scores,
    removal_correct,
    removal_curve,
    removal_runs,
    remove_units,
    top_k_sets,
)
from stdyn.models import ClassifierHead
from stdyn.training import Callback, TrainConfig, evaluate, fit, saved_epochs

torch.set_num_threads(1)

FRAMES = 8


class TinyVideoNet(nn.Module):
    """A temporal convolution, then a stdyn-style head (pool -> dropout -> fc)."""

    def __init__(self, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(width)
        self.head = ClassifierHead(width, num_classes, dropout=0.2)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.norm(self.conv(clips))))


def make_model(seed: int = 0) -> TinyVideoNet:
    torch.manual_seed(seed)
    return TinyVideoNet()


def ramp_dataset(n: int, seed: int) -> TensorDataset:
    """Brightness ramps up (label 0) or down (label 1): only the frame order tells them apart."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    ramp = torch.linspace(-1, 1, FRAMES)
    brightness = 0.5 + 0.3 * (1 - 2 * labels.float())[:, None] * ramp[None]
    clips = brightness[:, None, :, None, None].expand(n, 3, FRAMES, 4, 4).clone()
    clips += 0.05 * torch.randn(clips.shape, generator=generator)
    return TensorDataset(clips.clamp(0, 1), labels)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def data() -> tuple[TensorDataset, TensorDataset]:
    return ramp_dataset(64, seed=1), ramp_dataset(32, seed=2)


# ----------------------------------------------------------------------------- remove_units


class Capture:
    """Keeps the input of a module (what the layer before it really produced)."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        module.register_forward_pre_hook(self)

    def __call__(self, module, inputs) -> None:
        self.value = inputs[0].detach().clone()


class TokenNet(nn.Module):
    """Tokens (B, N, C) out of ``embed``, then a mean over tokens and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x).mean(1))


def test_remove_units_zeroes_exactly_the_given_channels_and_restores_the_model():
    model = make_model().eval()
    clips = torch.rand(3, 3, FRAMES, 6, 6)
    seen = Capture(model.norm)
    before = model(clips)
    reference = seen.value
    with remove_units(model, "conv", [1, 5, 5]) as same:
        assert same is model
        during = model(clips)
    removed = seen.value
    assert (removed[:, [1, 5]] == 0).all()
    keep = [c for c in range(8) if c not in (1, 5)]
    assert torch.equal(removed[:, keep], reference[:, keep])
    assert reference[:, [1, 5]].abs().sum() > 0  # they were not zero to begin with
    assert not torch.equal(during, before)
    assert torch.equal(model(clips), before)
    assert not model.conv._forward_hooks


def test_remove_units_uses_the_last_dim_of_tokens_and_the_channel_dim_of_pooled_features():
    torch.manual_seed(0)
    model = TokenNet().eval()
    tokens = torch.rand(2, 5, 4)
    seen = Capture(model.fc)
    expected = model.embed(tokens)
    expected[..., 2] = 0
    with remove_units(model, "embed", [2]):
        model(tokens)
    torch.testing.assert_close(seen.value, expected.mean(1))

    video = make_model().eval()
    seen = Capture(video.head.fc)
    with remove_units(video, "head.pool", [0, 7]):
        video(torch.rand(2, 3, FRAMES, 6, 6))
    assert (seen.value[:, [0, 7]] == 0).all() and (seen.value[:, 1:7] != 0).any()


def test_remove_units_removes_its_hook_after_an_exception():
    model = make_model().eval()
    with pytest.raises(RuntimeError, match="inside"):
        with remove_units(model, "conv", [0]):
            raise RuntimeError("inside")
    assert not model.conv._forward_hooks
    # A channel beyond the layer's width is found in the forward pass; the hook goes all the same.
    with pytest.raises(IndexError, match=r"'conv' has 8 channels.*\[0, 8\)"):
        with remove_units(model, "conv", [8]):
            model(torch.rand(1, 3, FRAMES, 6, 6))
    assert not model.conv._forward_hooks


def test_remove_units_refuses_unknown_layers_and_channels_out_of_range():
    model = models.create("slowonly", 4, seed=0)
    with pytest.raises(KeyError) as probe_error:
        check_layers(model, ["stage6"])
    with pytest.raises(KeyError) as removal_error:
        with remove_units(model, "stage6", [0]):
            pass
    assert str(removal_error.value) == str(probe_error.value)
    channels = model.stages[-1].channels
    with pytest.raises(IndexError, match=rf"has {channels} channels"):  # known from model.stages at once
        with remove_units(model, "stage5", [channels]):
            pass
    with pytest.raises(IndexError, match=r"\[0, "):
        with remove_units(model, "stage5", [-1]):
            pass


# ----------------------------------------------------------------------------- rankings


def fake_result(static: list[float], dynamic: list[float]) -> UnitwiseResult:
    static_array, dynamic_array = np.array(static), np.array(dynamic)
    dead = np.isnan(static_array) | np.isnan(dynamic_array)
    return UnitwiseResult(
        name="layer", threshold=0.5, n_pairs={"static": 10, "dynamic": 10},
        scores={"static": static_array, "dynamic": dynamic_array},
        categories=categorize(static_array, dynamic_array, 0.5, dead),
        replicate_counts=np.zeros((0, 5)),
    )


def test_rank_units_orders_by_score_or_margin_with_dead_channels_last():
    result = fake_result(static=[0.1, 0.9, np.nan, 0.8, 0.3], dynamic=[0.0, 0.2, np.nan, 0.9, 0.3])
    assert rank_units(result, "static").tolist() == [1, 3, 4, 0, 2]
    assert rank_units(result, "dynamic").tolist() == [3, 4, 1, 0, 2]
    assert rank_units(result, "static", by="margin").tolist() == [1, 0, 4, 3, 2]  # 0.7, 0.1, 0, -0.1
    assert rank_units(result, "dynamic", by="margin").tolist() == [3, 4, 0, 1, 2]
    with pytest.raises(ValueError, match="factor"):
        rank_units(result, "motion")
    with pytest.raises(ValueError, match="ranking"):
        rank_units(result, "static", by="size")


def test_rank_units_puts_the_planted_static_channels_first():
    rng = np.random.default_rng(0)
    n, channels = 200, 12
    content = rng.normal(size=(n, channels))
    noise = lambda: rng.normal(size=(n, channels))  # noqa: E731
    # Channels 0-3 keep their value under frame shuffling (static), the others do not.
    static_weight = np.r_[np.full(4, 1.0), np.full(channels - 4, 0.1)]
    z1 = content
    z2 = static_weight * content + np.sqrt(1 - static_weight**2) * noise()
    result = unitwise({"static": (z1, z2), "dynamic": (noise(), noise())})
    assert set(rank_units(result, "static")[:4].tolist()) == {0, 1, 2, 3}


def test_least_biased_units_draw_x_percent_from_the_x_plus_5_percent_least_biased():
    # 40 channels; static scores rise with the channel index, except the dead channel 0.
    static = [np.nan] + [c / 40 for c in range(1, 40)]
    result = fake_result(static=static, dynamic=[0.5] * 40)
    sets = least_biased_units(result, "static", [0, 4, 10], draws=50, seed=7)
    assert list(sets) == [0, 4, 10] and all(len(draws) == 50 for draws in sets.values())
    assert all(len(d) == 0 for d in sets[0])
    # k = 4 of 40 (10%): drawn among the 4 + 2 (5% of 40) least static live channels, 1 ... 6
    for k, pool in ((4, set(range(1, 7))), (10, set(range(1, 13)))):
        seen = set()
        for draw in sets[k]:
            assert len(set(draw.tolist())) == k and set(draw.tolist()) <= pool
            seen |= set(draw.tolist())
        assert seen == pool  # 50 draws reach every unit of the pool
    again = least_biased_units(result, "static", [0, 4, 10], draws=50, seed=7)
    assert all(np.array_equal(a, b) for k in sets for a, b in zip(sets[k], again[k]))
    other = least_biased_units(result, "static", [4], draws=50, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(sets[4], other[4]))
    # the pool never runs past the layer, and the dead channel comes last
    assert set(least_biased_units(result, "static", [37], draws=1, seed=0)[37][0].tolist()) <= set(range(1, 40))
    assert set(least_biased_units(result, "static", [40], draws=1, seed=0)[40][0].tolist()) == set(range(40))
    with pytest.raises(ValueError, match="k must lie"):
        least_biased_units(result, "static", [41], draws=1, seed=0)
    with pytest.raises(ValueError, match="draws"):
        least_biased_units(result, "static", [4], draws=0, seed=0)


def test_removal_runs_score_each_distinct_set_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.Identity())
    calls = []

    def score(m, data):
        calls.append(1)
        with torch.no_grad():
            return float(m(data).abs().sum())

    data = torch.ones(2, 4)
    sets = {"top": top_k_sets(np.array([3, 1, 0, 2]), [0, 2]), "random": {0: [np.array([], dtype=int)],
                                                                          2: [np.array([1, 3]), np.array([0, 2])]}}
    runs = removal_runs(model, data, "1", sets, score, progress=False)
    assert runs[["kind", "k", "draw"]].values.tolist() == [["top", 0, 0], ["top", 2, 0], ["random", 0, 0],
                                                            ["random", 2, 0], ["random", 2, 1]]
    assert len(calls) == 3  # k = 0 once; {1, 3} removed by both kinds once
    assert runs["score"].iloc[1] == runs["score"].iloc[3]


def test_random_units_are_seeded_distinct_draws_of_distinct_channels():
    draws = random_units(20, 5, draws=4, seed=3)
    assert len(draws) == 4
    for draw in draws:
        assert len(set(draw.tolist())) == 5 and draw.min() >= 0 and draw.max() < 20
    assert len({tuple(d) for d in draws}) == 4
    assert all(np.array_equal(a, b) for a, b in zip(draws, random_units(20, 5, draws=4, seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(draws, random_units(20, 5, draws=4, seed=4)))
    # Full rankings: their prefixes are the smaller random sets.
    full = random_units(20, 20, draws=4, seed=3)
    assert all(sorted(f.tolist()) == list(range(20)) for f in full)
    assert all(np.array_equal(f[:5], d) for f, d in zip(full, draws))
    with pytest.raises(ValueError, match="k must lie"):
        random_units(20, 21, draws=1, seed=0)


# ----------------------------------------------------------------------------- removal_curve


class ChannelReader(nn.Module):
    """Pools clips to their 3 colour means (``features``); class c wins when colour c is brightest."""

    def __init__(self) -> None:
        super().__init__()
        self.features = models.GlobalAvgPool()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))
            self.fc.bias.zero_()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(clips))


def colour_dataset(n: int) -> TensorDataset:
    labels = torch.arange(n) % 3
    clips = torch.full((n, 3, 2, 2, 2), 0.2)
    clips[torch.arange(n), labels] = 0.9
    return TensorDataset(clips, labels)


def test_removal_curve_evaluates_each_top_k_removal_once_in_a_tidy_frame():
    model, dataset = ChannelReader().eval(), colour_dataset(30)
    calls = []

    def counting_evaluate(model, dataset):
        calls.append(1)
        return evaluate(model, dataset, batch_size=16)

    rankings = {"first": np.array([0, 1, 2]), "last": [2, 1, 0], "random": random_units(3, 3, draws=2, seed=0)}
    curve = removal_curve(model, dataset, "features", rankings, ks=[0, 1, 2], evaluate=counting_evaluate,
                          progress=False)
    assert list(curve.columns) == ["kind", "k", "draw", "accuracy"]
    assert len(curve) == (1 + 1 + 2) * 3
    assert curve.groupby("kind")["draw"].nunique().to_dict() == {"first": 1, "last": 1, "random": 2}
    by = curve.set_index(["kind", "k", "draw"])["accuracy"]
    assert (curve[curve.k == 0]["accuracy"] == 1.0).all()
    # Removing colour 0 leaves its clips (a third) to a tie, which argmax resolves to class 0.
    with remove_units(model, "features", [2]):
        expected = evaluate(model, dataset)
    assert by["last", 1, 0] == expected == pytest.approx(2 / 3)
    for draw, order in enumerate(rankings["random"]):
        with remove_units(model, "features", order[:2]):
            assert by["random", 2, draw] == evaluate(model, dataset)
    # Distinct sets only: {}, {0}, {0,1}, {2}, {1,2} and the random draws' own prefixes.
    distinct = {(), (0,), (0, 1), (2,), (1, 2)}
    distinct |= {tuple(sorted(o[:k].tolist())) for o in rankings["random"] for k in (1, 2)}
    assert len(calls) == len(distinct)
    assert not model.features._forward_hooks
    with pytest.raises(ValueError, match="out of range"):
        removal_curve(model, dataset, "features", {"first": [0, 1, 2]}, ks=[4], progress=False)


def test_removal_correct_scores_every_clip_and_agrees_with_the_curve():
    model, dataset = ChannelReader().eval(), colour_dataset(30)
    rankings = {"last": [2, 1, 0], "random": random_units(3, 3, draws=2, seed=0)}
    table = removal_correct(model, dataset, "features", rankings, ks=[0, 1, 2], progress=False)
    curve = removal_curve(model, dataset, "features", rankings, ks=[0, 1, 2], progress=False)
    assert list(table.columns) == ["kind", "k", "draw", "correct", "accuracy"]
    assert table["accuracy"].tolist() == pytest.approx(curve["accuracy"].tolist())
    by = table.set_index(["kind", "k", "draw"])["correct"]
    assert by["last", 0, 0].dtype == bool and by["last", 0, 0].all()
    # Removing colour 2: exactly the clips of class 2 (every third) turn wrong.
    np.testing.assert_array_equal(by["last", 1, 0], np.arange(30) % 3 != 2)


# ----------------------------------------------------------------------------- StaticDropout


def test_static_dropout_drops_round_p_c_distinct_channels_per_sample_and_rescales():
    torch.manual_seed(0)
    layer = StaticDropout(0.3).train()
    x = torch.rand(64, 10) + 0.5
    y = layer(x)
    dropped = y == 0
    assert (dropped.sum(1) == 3).all()  # round(0.3 * 10); a zero mask entry per channel at most once
    torch.testing.assert_close(y[~dropped], x[~dropped] * 10 / 7)
    assert len({tuple(row.nonzero().flatten().tolist()) for row in dropped}) > 10  # varies per sample
    # (B, C, ...) inputs: whole channels go.
    video = torch.rand(4, 10, 2, 3, 3) + 0.5
    out = layer(video)
    per_channel = (out == 0).flatten(2).all(2)
    assert ((out == 0).flatten(2).any(2) == per_channel).all()
    assert (per_channel.sum(1) == 3).all()
    assert StaticDropout(0.5).n_dropped(5) == 3 and StaticDropout(0.9).n_dropped(2) == 1  # never all


def test_static_dropout_is_the_identity_in_eval_mode_and_seeded_in_training():
    layer = StaticDropout(0.5)
    layer.static_scores = torch.linspace(-1, 1, 12)
    x = torch.rand(8, 12)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(StaticDropout(0.0).train()(x), x)
    layer.train()
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    assert torch.equal(layer(x), first)
    assert not torch.equal(layer(x), first)
    assert repr(layer) == "StaticDropout(p=0.5, every=30, temperature=1.0)"


def drop_counts(layer: StaticDropout, channels: int, samples: int) -> np.ndarray:
    torch.manual_seed(0)
    y = layer.train()(torch.ones(samples, channels))
    return (y == 0).sum(0).numpy()


def test_one_dropped_channel_follows_the_softmax_of_the_scores():
    scores = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    layer = StaticDropout(1 / 6)  # one channel per sample
    layer.static_scores = scores
    expected = torch.softmax(scores, 0)
    torch.testing.assert_close(layer.drop_probabilities(), expected)
    samples = 30000
    counts = drop_counts(layer, 6, samples)
    assert counts.sum() == samples
    _, p_value = scipy_stats.chisquare(counts, expected.double().numpy() / float(expected.sum()) * samples)
    assert p_value > 1e-3
    # With a temperature the probabilities flatten; before any scores they are uniform.
    warm = StaticDropout(1 / 6, temperature=4.0)
    warm.static_scores = scores
    torch.testing.assert_close(warm.drop_probabilities(), torch.softmax(scores / 4, 0))
    torch.testing.assert_close(StaticDropout(0.5).drop_probabilities(4), torch.full((4,), 0.25))


def test_several_dropped_channels_follow_sampling_without_replacement():
    scores = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.5, 3.0])
    probs = torch.softmax(scores, 0).double().numpy()
    # Exact inclusion probabilities of 2 sequential draws without replacement.
    inclusion = np.zeros(6)
    for i, j in itertools.permutations(range(6), 2):
        inclusion[[i, j]] += probs[i] * probs[j] / (1 - probs[i])
    layer = StaticDropout(1 / 3)  # two channels per sample
    layer.static_scores = scores
    samples = 30000
    frequency = drop_counts(layer, 6, samples) / samples
    standard_error = np.sqrt(inclusion * (1 - inclusion) / samples)
    assert np.all(np.abs(frequency - inclusion) < 5 * standard_error)
    assert np.all(np.diff(frequency) > 0)  # higher static score, dropped more often
    assert not np.allclose(inclusion, 2 * probs, atol=0.01)  # the test can tell the two apart


def test_dead_channels_count_as_the_lowest_score():
    layer = StaticDropout(0.25)
    layer.static_scores = torch.tensor([float("nan"), -0.5, 0.2, 0.9])
    probs = layer.drop_probabilities()
    assert torch.isfinite(probs).all()
    assert probs[0] == probs[1] and probs[1] < probs[2] < probs[3]
    layer.static_scores = torch.full((4,), float("nan"))
    torch.testing.assert_close(layer.drop_probabilities(), torch.full((4,), 0.25))
    assert (layer.train()(torch.ones(3, 4)) == 0).sum(1).tolist() == [1, 1, 1]


def test_static_dropout_refuses_bad_settings_and_inputs():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"p must lie in \[0, 1\)"):
            StaticDropout(p)
    with pytest.raises(ValueError, match="every"):
        StaticDropout(0.3, every=0)
    with pytest.raises(ValueError, match="temperature"):
        StaticDropout(0.3, temperature=0.0)
    layer = StaticDropout(0.3).train()
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        layer(torch.ones(5))
    layer.static_scores = torch.zeros(6)
    with pytest.raises(ValueError, match="6 channels but got features with 8"):
        layer(torch.ones(2, 8))
    with pytest.raises(ValueError, match="at least 2 samples"):
        layer.update_scores(torch.ones(1, 6), torch.ones(1, 6))


def test_scores_live_in_a_buffer_that_state_dicts_carry():
    model = make_model()
    model.head.dropout = StaticDropout(0.3)
    model.head.dropout.update_scores(torch.randn(16, 8), torch.randn(16, 8))
    saved = model.state_dict()
    assert "head.dropout.static_scores" in saved
    fresh = make_model(seed=1)
    fresh.head.dropout = StaticDropout(0.3)
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.head.dropout.static_scores, model.head.dropout.static_scores)


def test_update_scores_equals_the_estimators_static_unit_scores():
    rng = np.random.default_rng(1)
    n, channels = 48, 10
    z1 = rng.normal(size=(n, channels)) * rng.uniform(0.5, 3, channels) + rng.normal(size=channels)
    z2 = 0.7 * z1 + 0.5 * rng.normal(size=(n, channels))
    dynamic = (rng.normal(size=(n, channels)), rng.normal(size=(n, channels)))
    expected = unitwise({"static": (z1, z2), "dynamic": dynamic}).scores["static"]
    layer = StaticDropout(0.3)
    scores = layer.update_scores(torch.tensor(z1, dtype=torch.float32), torch.tensor(z2, dtype=torch.float32))
    assert scores is layer.static_scores and scores.shape == (channels,)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    # (B, C, T, H, W) features are pooled over the trailing dims first.
    spread = torch.tensor(z1, dtype=torch.float32)[:, :, None, None, None].expand(-1, -1, 2, 2, 2)
    shifted = torch.tensor(z2, dtype=torch.float32)[:, :, None, None, None].expand(-1, -1, 2, 2, 2)
    torch.testing.assert_close(layer.update_scores(spread, shifted), scores)


def test_refresh_measures_the_dropout_input_on_shuffled_frames_and_keeps_modes():
    model = make_model()
    module = model.head.dropout = StaticDropout(0.3)
    model.train()
    model.norm.eval()  # e.g. a frozen batch norm: it must stay so
    clips = ramp_dataset(16, seed=3).tensors[0]
    scores = refresh_static_scores(model, module, clips, torch.Generator().manual_seed(7))
    assert model.training and module.training and not model.norm.training
    assert not module._forward_pre_hooks

    model.eval()
    with torch.no_grad():
        z1 = model.head.pool(F.relu(model.norm(model.conv(clips))))
        shuffled = shuffle_batch_frames(clips, torch.Generator().manual_seed(7))
        z2 = model.head.pool(F.relu(model.norm(model.conv(shuffled))))
    torch.testing.assert_close(scores, StaticDropout(0.3).update_scores(z1, z2), equal_nan=True)


# ----------------------------------------------------------------------------- the callback


def small_config(**overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=16, optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup_epochs=1.0,
                  finetune_epochs=1, finetune_lr=1e-3)
    values.update(overrides)
    return TrainConfig(**values)


class Watch(Callback):
    """Records, at every step, what sits at head.dropout and the scores it holds."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str, torch.Tensor | None]] = []

    def on_step(self, state, clips, labels) -> None:
        module = state.model.head.dropout
        scores = module.static_scores.clone() if isinstance(module, StaticDropout) else None
        self.seen.append((state.step, state.phase, type(module).__name__, scores))


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, state, clips, labels) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt


def test_callback_installs_refreshes_every_n_steps_and_leaves_for_fine_tuning(data):
    train, val = data
    callback, watch = StaticDropoutCallback(0.25, every=3, seed=1), Watch()
    model = make_model()
    fit(model, train, val, small_config(), progress=False, callbacks=[callback, watch])
    # 4 steps per epoch: 8 training steps (refreshed at 0, 3, 6), then 4 fine-tuning steps.
    assert callback.refreshes == 3
    assert [kind for _, _, kind, _ in watch.seen] == ["StaticDropout"] * 8 + ["Identity"] * 4
    scores = [s for _, _, _, s in watch.seen[:8]]
    assert all(s.shape == (8,) for s in scores)
    changed = [step for step in range(1, 8) if not torch.equal(scores[step], scores[step - 1])]
    assert changed == [3, 6]
    assert isinstance(model.head.dropout, nn.Identity)
    assert callback.describe() == {
        "type": "stdyn.interventions.static_dropout.StaticDropoutCallback", "p": 0.25, "every": 3, "temperature": 1.0,
        "path": "head.dropout", "seed": 1,
    }
    assert StaticDropoutCallback(0.3).describe() != StaticDropoutCallback(0.25).describe()
    with pytest.raises(ValueError, match="p must lie"):
        StaticDropoutCallback(1.0)


@pytest.mark.parametrize("interrupt_step", [6, 9])  # in epoch 2 / in fine-tuning
def test_a_run_with_the_callback_resumes_to_the_same_weights(data, tmp_path, interrupt_step):
    train, val = data
    config = small_config()
    reference = make_model()
    fit(reference, train, val, config, tmp_path / "whole", progress=False,
        callbacks=[StaticDropoutCallback(0.25, every=3)])

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), train, val, config, run, progress=False,
            callbacks=[StaticDropoutCallback(0.25, every=3), InterruptAt(interrupt_step)])
    assert saved_epochs(run) == list(range(interrupt_step // 4 + 1))
    resumed_callback = StaticDropoutCallback(0.25, every=3)
    resumed = make_model(seed=5)
    fit(resumed, train, val, config, run, progress=False, callbacks=[resumed_callback])
    assert weights_equal(resumed, reference)
    assert resumed_callback.refreshes == 3


def test_static_dropout_trains_a_registry_model_through_its_head():
    model = models.create("slowonly", 4, seed=0)
    generator = torch.Generator().manual_seed(0)
    clips = torch.rand(24, 3, FRAMES, 16, 16, generator=generator)
    dataset = TensorDataset(clips, torch.arange(24) % 4)
    callback = StaticDropoutCallback(0.3, every=2)
    fit(model, dataset, None, small_config(epochs=1, batch_size=8, finetune_epochs=0), progress=False,
        callbacks=[callback])
    assert callback.refreshes == 2
    assert isinstance(model.head.dropout, StaticDropout)
    assert model.head.dropout.static_scores.shape == (model.head.fc.in_features,)
    with pytest.raises(KeyError, match="unknown layer 'head.drop'"):
        StaticDropoutCallback(0.3, path="head.drop").on_build(model)
