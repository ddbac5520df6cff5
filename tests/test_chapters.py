"""Every chapter in _toc.yml runs at the smoke profile, through papermill and through nbval."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from stdyn.book import runner as book

BOOK_ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = book.chapters(BOOK_ROOT)


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]


def test_the_toc_lists_chapters():
    assert CHAPTERS, "_toc.yml lists no .py chapter"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda source: source.stem)
def test_chapter_runs_at_smoke(source: Path, tmp_path: Path):
    executed = book.run_chapter(source, "smoke", out_dir=tmp_path, book_root=BOOK_ROOT)
    notebook = nbformat.read(executed, as_version=4)
    injected = [cell for cell in notebook.cells if book.INJECTED_TAG in cell.metadata.get("tags", [])]
    assert len(injected) == 1
    assert re.search(r"^profile = ['\"]smoke['\"]$", injected[0].source, re.MULTILINE)
    assert book.HIDDEN_TAG in injected[0].metadata.tags
    assert all(cell.execution_count is not None for cell in _code_cells(notebook))


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda source: source.stem)
def test_chapter_passes_nbval(source: Path, tmp_path: Path):
    # A chapter in parts runs all of them through papermill above; here its first part suffices
    # (the others' cells still execute, as the part selector's no-op), which keeps the suite short.
    parts = re.search(r"select_parts\(task, \[\"(\w+)\"", source.read_text())
    prepared = book.run_chapter(
        source, "smoke", parameters={"task": parts.group(1)} if parts else None, out_dir=tmp_path,
        prepare_only=True, book_root=BOOK_ROOT,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--color=no",
         "-p", "no:cacheprovider", "-q", str(prepared)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    log = book.ANSI_ESCAPE.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, log[-5000:]
    cells = len(_code_cells(nbformat.read(prepared, as_version=4)))
    assert re.search(rf"\b{cells} passed\b", result.stdout), log[-2000:]
