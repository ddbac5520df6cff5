"""The on-disk cache shared by worlds, decoded videos and trained models.

Entries are written atomically (temporary file, then rename) next to a SHA-256 checksum, so a
crash never leaves a half-written entry that a later run would read. Keys hash the whole
configuration together with the source code that produces the entry, so a code change never
serves a stale result.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch


def cache_dir(*parts: str) -> Path:
    """The cache root (``$STDYN_CACHE``, default ``~/.cache/stdyn``; an empty value counts as unset,
    not as the working directory), or a folder below it."""
    root = Path(os.environ.get("STDYN_CACHE") or Path.home() / ".cache" / "stdyn").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_hash(*objects: ModuleType | type | Callable[..., Any]) -> str:
    """Hash of the source code of modules, classes or functions (part of every cache key)."""
    digest = hashlib.sha256()
    for obj in objects:
        try:
            digest.update(inspect.getsource(obj).encode())
        except OSError:  # an empty module has no source lines
            digest.update(b"")
    return digest.hexdigest()[:16]


def config_key(config: Any, *code: ModuleType | type | Callable[..., Any]) -> str:
    """A short stable key for a JSON-serialisable configuration and the code that uses it."""
    text = json.dumps(config, sort_keys=True, default=str)
    if code:
        text += source_hash(*code)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A checksum file is written after the entry, so an entry without a matching checksum is
    known to be partial or corrupt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        checksum = file_checksum(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _atomic_text(_checksum_path(path), checksum)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp_name, path)


def is_intact(path: Path) -> bool:
    """True when ``path`` exists and matches the checksum written with it."""
    path = Path(path)
    checksum = _checksum_path(path)
    if not path.is_file() or not checksum.is_file():
        return False
    return checksum.read_text().strip() == file_checksum(path)


def save_tensors(path: Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, with a checksum."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: Path) -> Any | None:
    """Load an entry written by :func:`save_tensors`; ``None`` if it is missing or corrupt."""
    if not is_intact(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_config_entry(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """A dict entry written by :func:`save_tensors` whose ``"config"`` is ``config``; ``None`` if
    it is missing, corrupt, unreadable (an intact checksum over bytes torch cannot read) or
    another configuration's."""
    try:
        payload = load_tensors(path)
    except Exception:
        return None
    if not isinstance(payload, dict) or payload.get("config") != config:
        return None
    return payload


def remove_entry(paths: Iterable[Path]) -> None:
    """Delete entries and their checksums (missing ones are ignored)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)
        _checksum_path(Path(path)).unlink(missing_ok=True)
