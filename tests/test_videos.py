"""Real footage: decoding with PyAV, clip cutting, the decoded-frame cache, bad files, samples."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import stdyn.data.videos as videos
from stdyn.data.videos import (
    VIDEO_EXTENSIONS,
    VideoFolder,
    VideoReadError,
    clip_starts,
    read_video,
    sample_clips,
    sample_videos,
)

torch.set_num_threads(1)


def write_video(path: Path, n_frames: int = 12, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Write a small mpeg4 video of a bright square moving right over a dark gradient; returns its frames."""
    rng = np.random.default_rng(seed)
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = np.linspace(20, 120, width, dtype=np.uint8)[None]
    base[..., 2] = rng.integers(0, 100)
    frames = []
    for t in range(n_frames):
        frame = base.copy()
        frame[16:32, 12 + 2 * t : 28 + 2 * t] = 230
        frames.append(frame)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return np.stack(frames)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STDYN_CACHE", str(root))
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "b.mp4", n_frames=12, seed=1)
    write_video(root / "a.avi", n_frames=20, seed=2)
    (root / "notes.txt").write_text("not a video")
    return root


def test_read_video_decodes_frames_in_range(tmp_path):
    frames = write_video(tmp_path / "v.mp4", n_frames=10)
    clip = read_video(tmp_path / "v.mp4")
    assert clip.shape == (3, 10, 48, 64) and clip.dtype == torch.float32
    assert clip.min() >= 0 and clip.max() <= 1
    expected = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
    assert (clip - expected).abs().mean() < 0.03  # lossy codec, same picture
    assert read_video(tmp_path / "v.mp4", max_frames=4).shape == (3, 4, 48, 64)
    square = read_video(tmp_path / "v.mp4", size=24)
    assert square.shape == (3, 10, 24, 24)
    # the bright square moves right: its column of mass increases over time
    columns = square.mean((0, 2))
    centre = (columns * torch.arange(24)).sum(1) / columns.sum(1)
    assert (centre[1:] > centre[:-1]).all()


def test_video_folder_cuts_clips_from_every_video(folder, cache):
    dataset = VideoFolder(folder, frames=8, size=16, clips_per_video=3, progress=False)
    assert [p.name for p in dataset.videos] == ["a.avi", "b.mp4"]  # sorted, the text file ignored
    assert len(dataset) == 6
    for i in range(len(dataset)):
        clip = dataset[i]
        assert clip.shape == (3, 8, 16, 16) and clip.dtype == torch.float32
        assert 0 <= clip.min() and clip.max() <= 1
    assert dataset.video_of(0) == 0 and dataset.video_of(5) == 1
    assert not torch.equal(dataset[0], dataset[2])  # windows spread over the video
    again = VideoFolder(folder, frames=8, size=16, clips_per_video=3, progress=False)
    assert all(torch.equal(dataset[i], again[i]) for i in range(len(dataset)))


def test_short_video_repeats_frames(folder, cache):
    dataset = VideoFolder(folder, frames=30, size=16, progress=False)
    assert dataset[1].shape == (3, 30, 16, 16)  # b.mp4 has 12 frames


def test_clip_starts_are_spread_evenly():
    assert clip_starts(20, 8, 3) == [0, 6, 12]
    assert clip_starts(20, 8, 1) == [6]
    assert clip_starts(5, 8, 2) == [0, 0]


def test_second_load_reads_the_cache_instead_of_decoding(folder, cache, monkeypatch):
    first = VideoFolder(folder, frames=4, size=16, progress=False)
    assert len(list((cache / "videos").glob("*.pt"))) == 2

    def fail(*args, **kwargs):
        raise AssertionError("decoded a cached video")

    monkeypatch.setattr(videos, "_decode", fail)
    second = VideoFolder(folder, frames=4, size=16, progress=False)
    assert all(torch.equal(first[i], second[i]) for i in range(len(first)))
    with pytest.raises(AssertionError, match="decoded a cached video"):
        VideoFolder(folder, frames=4, size=20, progress=False)  # another size is another entry


def test_a_changed_file_is_decoded_again(folder, cache):
    VideoFolder(folder, frames=4, size=16, progress=False)
    write_video(folder / "b.mp4", n_frames=6, seed=5)
    dataset = VideoFolder(folder, frames=4, size=16, progress=False)
    assert dataset.n_frames == [20, 6]


def test_corrupt_file_names_the_path_and_is_not_cached(folder, cache):
    bad = folder / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        VideoFolder(folder, frames=4, size=16, progress=False)
    assert not any("broken" in p.name for p in (cache / "videos").glob("*"))
    with pytest.raises(VideoReadError, match="broken.mp4"):
        read_video(bad)
    empty = folder / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mkv"):
        read_video(empty)
    with pytest.raises(VideoReadError, match="missing.mp4"):
        read_video(folder / "missing.mp4")


def test_missing_or_empty_folder_lists_the_accepted_extensions(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match=r"\.mp4.*\.webm"):
        VideoFolder(tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "frame.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no video files.*\.mp4.*\.avi"):
        VideoFolder(tmp_path / "empty", progress=False)
    assert {".mp4", ".avi", ".mov", ".mkv", ".webm"} <= set(VIDEO_EXTENSIONS)


def test_sample_videos_are_real_readable_footage(cache):
    paths = sample_videos()
    assert len(paths) >= 3 and all(p.suffix == ".mp4" and p.is_file() for p in paths)
    clip = read_video(paths[0], max_frames=3, size=32)
    assert clip.shape == (3, 3, 32, 32) and clip.std() > 0.05  # a real picture, not a flat frame


def test_sample_clips(cache):
    dataset = sample_clips(frames=4, size=16, clips_per_video=2, progress=False)
    assert len(dataset) == 2 * len(sample_videos())
    assert dataset[0].shape == (3, 4, 16, 16)
