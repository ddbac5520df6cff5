"""Test-session settings shared by every test file."""
from __future__ import annotations

import os
import shutil
import tempfile

_session_cache: str | None = None


def pytest_configure(config) -> None:
    """Give the session its own empty cache (``STDYN_CACHE``), shared by all its tests and by
    the notebook kernels they start, and keep child processes to one thread each and models
    training one at a time."""
    global _session_cache
    _session_cache = tempfile.mkdtemp(prefix="stdyn-test-cache-")
    os.environ["STDYN_CACHE"] = _session_cache
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Smoke-scale models train in seconds: starting worker processes for them costs more than it
    # saves. test_zoo covers training side by side with an explicit jobs=2.
    os.environ.setdefault("STDYN_JOBS", "1")
    os.environ.setdefault("STDYN_CELL_TIMEOUT", "900")  # a hung kernel fails the test instead of CI
    os.environ.setdefault("STDYN_NO_WIDGETS", "1")  # nbval, like the book runner, draws no widgets


def pytest_unconfigure(config) -> None:
    if _session_cache:
        shutil.rmtree(_session_cache, ignore_errors=True)
