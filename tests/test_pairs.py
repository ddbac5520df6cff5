"""Static and dynamic pairs: shuffled frames vs restyled clips, seeding, two-stream pairs, folders."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stdyn.core.pairs import FACTORS, FramePairs, StylizedFolder, TwoStreamPairs, shuffle_batch_frames, shuffle_frames
from stdyn.core.stylize import STYLES, stylize
from stdyn.data.flow import flow_to_image, rgb_to_hsv

torch.set_num_threads(1)


def clips(n: int = 8, frames: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def slow_fast(batch: torch.Tensor) -> list[torch.Tensor]:
    """A SlowFast-like packing: the slow pathway takes every second frame."""
    return [batch[:, :, ::2], batch]


def frame_order(member: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """For each frame of ``member`` (C, T, H, W), the index of the equal frame in ``reference``."""
    order = []
    for t in range(member.shape[1]):
        matches = [s for s in range(reference.shape[1]) if torch.equal(member[:, t], reference[:, s])]
        assert len(matches) == 1, "every frame must appear exactly once"
        order.append(matches[0])
    return order


def style_of(member: torch.Tensor, clip: torch.Tensor) -> int:
    """The style in which ``member`` shows ``clip`` (exactly one must match)."""
    matching = [s for s in range(len(STYLES)) if torch.allclose(member, stylize(clip, s), atol=1e-6)]
    assert len(matching) == 1, matching
    return matching[0]


def test_static_pair_same_frames_same_style_other_order():
    batch = clips()
    first, second = FramePairs().make(batch, range(8), "static", seed=0)
    assert first.shape == second.shape == batch.shape
    for i in range(8):
        style = style_of(first[i], batch[i])
        order = frame_order(second[i], first[i])
        assert sorted(order) == list(range(6)) and order != list(range(6))
        assert torch.allclose(second[i], stylize(batch[i], style)[:, order], atol=1e-6)


def test_static_pathways_are_shuffled_after_packing_and_independently():
    batch = clips(16, frames=8)
    first, second = FramePairs().make(batch, range(16), "static", seed=3, pack=slow_fast)
    assert isinstance(first, list) and isinstance(second, list) and len(second) == 2
    inconsistent = 0
    for i in range(16):
        slow_order = frame_order(second[0][i], first[0][i])
        fast_order = frame_order(second[1][i], first[1][i])
        assert sorted(slow_order) == list(range(4)) and slow_order != list(range(4))
        assert sorted(fast_order) == list(range(8)) and fast_order != list(range(8))
        # the slow frames keep their set (same static content) whatever the fast order
        assert torch.equal(first[0][i], first[1][i][:, ::2])
        # order of the slow frames as the fast permutation would have placed them
        induced = [t // 2 for t in fast_order if t % 2 == 0]
        inconsistent += slow_order != induced
    assert inconsistent > 0


def test_dynamic_pair_keeps_frame_order_in_two_different_styles():
    batch = clips()
    first, second = FramePairs().make(batch, range(8), "dynamic", seed=0)
    for i in range(8):
        a, b = style_of(first[i], batch[i]), style_of(second[i], batch[i])
        assert a != b


def test_dynamic_pair_is_packed_member_by_member():
    batch = clips(4)
    first, second = FramePairs().make(batch, range(4), "dynamic", seed=1, pack=slow_fast)
    unpacked = FramePairs().make(batch, range(4), "dynamic", seed=1)
    assert torch.equal(first[1], unpacked[0]) and torch.equal(second[1], unpacked[1])
    assert torch.equal(first[0], unpacked[0][:, :, ::2])


@pytest.mark.parametrize("factor", FACTORS)
def test_seeded_and_independent_of_the_batch(factor):
    batch = clips(8)
    builder = FramePairs()
    ids = [10, 11, 12, 13, 14, 15, 16, 17]
    full = builder.make(batch, ids, factor, seed=5)
    again = builder.make(batch.clone(), ids, factor, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(full, again))
    other = builder.make(batch, ids, factor, seed=6)
    assert any(not torch.equal(x, y) for x, y in zip(full, other))
    for i in (0, 5):  # alone in a batch of 1, and in a reversed batch
        alone = builder.make(batch[i : i + 1], [ids[i]], factor, seed=5)
        assert all(torch.allclose(x[0], y[i], atol=1e-6) for x, y in zip(alone, full))
    reversed_pairs = builder.make(batch.flip(0), ids[::-1], factor, seed=5)
    assert all(torch.allclose(x.flip(0), y, atol=1e-6) for x, y in zip(reversed_pairs, full))


def test_factors_and_styles_are_balanced():
    batch = clips(1, frames=2, size=4).expand(400, -1, -1, -1, -1)
    counts = {}
    for factor in FACTORS:
        first, second = FramePairs().make(batch, range(400), factor, seed=0)
        assert len(first) == len(second) == 400  # one pair per clip for every factor
        shown = [style_of(first[i], batch[i]) for i in range(0, 400, 4)]
        counts[factor] = Counter(shown)
        assert all(10 <= counts[factor][s] <= 40 for s in range(len(STYLES))), counts[factor]
        if factor == "dynamic":
            assert all(style_of(second[i], batch[i]) != a for i, a in zip(range(0, 400, 4), shown))


def test_prestylized_batch_picks_its_own_styles():
    raw = clips(6)
    prestylized = torch.stack([raw * (s + 1) / 5 for s in range(3)], 1)  # (B, S=3, 3, T, H, W)
    first, second = FramePairs().make(prestylized, range(6), "dynamic", seed=0)
    for i in range(6):
        a = [s for s in range(3) if torch.equal(first[i], prestylized[i, s])]
        b = [s for s in range(3) if torch.equal(second[i], prestylized[i, s])]
        assert len(a) == len(b) == 1 and a != b
    first, second = FramePairs().make(prestylized, range(6), "static", seed=0)
    for i in range(6):
        assert any(torch.equal(first[i], prestylized[i, s]) for s in range(3))
        assert sorted(frame_order(second[i], first[i])) == list(range(6))


def test_clear_errors():
    builder = FramePairs()
    with pytest.raises(ValueError, match=r"unknown factor 'motion'.*static.*dynamic"):
        builder.make(clips(2), range(2), "motion", 0)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        builder.make(torch.rand(2, 4, 6, 8, 8), range(2), "static", 0)
    with pytest.raises(ValueError, match="T >= 2"):
        builder.make(clips(2, frames=1), range(2), "static", 0)
    with pytest.raises(ValueError, match="indices"):
        builder.make(clips(2), range(3), "static", 0)
    with pytest.raises(ValueError, match="at least 2 styles"):
        builder.make(clips(2)[:, None], range(2), "dynamic", 0)
    with pytest.raises(ValueError, match="non-negative"):
        builder.make(clips(2), range(2), "static", -1)


def test_shuffle_frames_single_clip_batch_and_list():
    rng = np.random.default_rng(0)
    clip = clips(1)[0]
    shuffled = shuffle_frames(clip, rng)
    assert sorted(frame_order(shuffled, clip)) == list(range(6)) and frame_order(shuffled, clip) != list(range(6))
    batch = clips(5)
    out = shuffle_frames(batch, np.random.default_rng(1))
    orders = [frame_order(out[i], batch[i]) for i in range(5)]
    assert all(o != list(range(6)) for o in orders) and len({tuple(o) for o in orders}) > 1
    pathways = shuffle_frames([batch, batch], np.random.default_rng(2))
    assert not torch.equal(pathways[0], pathways[1])  # each pathway its own order
    two = torch.rand(3, 2, 4, 4)
    assert all(frame_order(shuffle_frames(two, np.random.default_rng(s)), two) == [1, 0] for s in range(5))
    with pytest.raises(ValueError, match="at least 2 frames"):
        shuffle_frames(torch.rand(3, 1, 4, 4), rng)


def test_shuffle_batch_frames_gives_each_sample_its_own_order():
    batch = clips(32, frames=3)
    out = shuffle_batch_frames(batch, torch.Generator().manual_seed(0))
    orders = [frame_order(out[i], batch[i]) for i in range(32)]
    assert all(sorted(o) == [0, 1, 2] and o != [0, 1, 2] for o in orders)
    assert len({tuple(o) for o in orders}) == 5  # all non-identity orders of 3 frames appear
    assert torch.equal(out, shuffle_batch_frames(batch, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, shuffle_batch_frames(batch, torch.Generator().manual_seed(1)))


def two_stream_samples(n: int = 6, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randn(n, 2, size, size, generator=g) * 2


def test_two_stream_static_pair_same_frame_jittered_flow():
    frames, flows = two_stream_samples()
    (rgb1, flow1), (rgb2, flow2) = TwoStreamPairs().make((frames, flows), range(6), "static", seed=0)
    assert torch.equal(rgb1, rgb2)
    for i in range(6):
        style_of(rgb1[i][:, None], frames[i][:, None])  # the frame in one of the styles
        assert torch.allclose(flow1[i], flow_to_image(flows[i]), atol=1e-6)
        hsv1, hsv2 = rgb_to_hsv(flow1[i]), rgb_to_hsv(flow2[i])
        assert torch.allclose(hsv2[2], torch.ones_like(hsv2[2]), atol=1e-6)
        assert (hsv1[:2] - hsv2[:2]).abs().mean() > 0.01  # hue or saturation changed


def test_two_stream_dynamic_pair_same_flow_two_styles():
    frames, flows = two_stream_samples()
    (rgb1, flow1), (rgb2, flow2) = TwoStreamPairs().make([frames, flows], range(6), "dynamic", seed=0)
    assert torch.equal(flow1, flow2)
    for i in range(6):
        a = style_of(rgb1[i][:, None], frames[i][:, None])
        b = style_of(rgb2[i][:, None], frames[i][:, None])
        assert a != b


@pytest.mark.parametrize("factor", FACTORS)
def test_two_stream_pairs_are_seeded_per_sample(factor):
    frames, flows = two_stream_samples()
    builder = TwoStreamPairs()
    full = builder.make((frames, flows), range(6), factor, seed=2)
    alone = builder.make((frames[3:4], flows[3:4]), [3], factor, seed=2)
    for member_full, member_alone in zip(full, alone):
        assert all(torch.allclose(a[0], f[3], atol=1e-6) for a, f in zip(member_alone, member_full))
    other = builder.make((frames, flows), range(6), factor, seed=3)
    assert any(not torch.equal(a, b) for m1, m2 in zip(full, other) for a, b in zip(m1, m2))
    packed = builder.make((frames, flows), range(6), factor, seed=2, pack=lambda m: torch.cat(m, 1))
    assert torch.equal(packed[1], torch.cat(full[1], 1))
    with pytest.raises(ValueError, match=r"flows \(B, 2, H, W\)"):
        builder.make((frames, flows[:, :1]), range(6), factor, seed=2)


def _write_frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:04d}.png")


def _write_video(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture
def stylized_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "stylized"
    for style in range(1, 5):
        for video in ("walk", "jump"):
            frames = np.full((10, 20, 24, 3), 40 * style, np.uint8)
            frames[:, :, :, 1] = np.arange(10)[:, None, None] * 20  # green codes the frame number
            frames += rng.integers(0, 5, frames.shape, dtype=np.uint8)
            _write_frames(root / f"style_{style}" / video, frames)
        _write_video(root / f"style_{style}" / "run.mp4", np.full((12, 32, 32, 3), 50 * style, np.uint8))
    return root


def test_stylized_folder_reads_every_style(stylized_root):
    dataset = StylizedFolder(stylized_root, frames=4, size=8)
    assert dataset.names == ["jump", "run", "walk"] and len(dataset) == 3
    item = dataset[2]
    assert item.shape == (4, 3, 4, 8, 8) and item.dtype == torch.float32 and 0 <= item.min() <= item.max() <= 1
    red = item[:, 0].mean((1, 2, 3))
    assert torch.allclose(red, torch.tensor([40.0, 80, 120, 160]) / 255, atol=0.03)  # style k in slot k - 1
    green = item[0, 1].mean((1, 2))  # frames 0, 3, 6, 9 sampled uniformly from 10
    assert torch.allclose(green, torch.tensor([0.0, 60, 120, 180]) / 255, atol=0.03)
    video = dataset[1]
    assert video.shape == (4, 3, 4, 8, 8)
    assert torch.allclose(video.mean((1, 2, 3, 4)), torch.tensor([50.0, 100, 150, 200]) / 255, atol=0.03)
    first, second = FramePairs().make(torch.stack([dataset[0], dataset[2]]), [0, 2], "dynamic", seed=0)
    assert first.shape == second.shape == (2, 3, 4, 8, 8)


def test_stylized_folder_errors(stylized_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="style_1"):
        StylizedFolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match=r"style_1 \.\. style_S/<video>"):
        StylizedFolder(tmp_path / "flat")
    _write_frames(stylized_root / "style_3" / "extra", np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"style_3.*extra.*same videos"):
        StylizedFolder(stylized_root)
    (stylized_root / "style_6").mkdir()
    with pytest.raises(ValueError, match="layout"):
        StylizedFolder(stylized_root)
