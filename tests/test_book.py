"""The chapter runner and the site build, on the tiny fixture chapters in tests/fixtures/."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from stdyn.book import runner as book
from stdyn.core import claims

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def book_root(tmp_path: Path) -> Path:
    """A fresh copy of the fixture book, with the project's own _config.yml."""
    root = tmp_path / "fixture_book"
    shutil.copytree(FIXTURES, root)
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    return root


def _tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.get("name") == "stdout")


def _stream_notebook(name: str, text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("work()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text)]
    return nbformat.v4.new_notebook(cells=[cell])


def test_parse_value_reads_literals_and_falls_back_to_strings():
    assert book.parse_value("r3d_18") == "r3d_18"
    assert book.parse_value("['layer1','layer4']") == ["layer1", "layer4"]
    assert book.parse_value("3") == 3
    assert book.parse_value("0.5") == 0.5
    assert book.parse_value("False") is False
    assert book.parse_value("two words") == "two words"
    assert book.parse_value("'3'") == "3"


def test_chapters_follow_the_toc_and_resolve_by_number_name_or_path(book_root: Path):
    names = [source.stem for source in book.chapters(book_root)]
    assert names == ["01_good", "02_raises", "03_warns", "04_progress", "05_untagged", "06_claims"]
    expected = book_root / "book" / "01_good.py"
    for name in ("01", "01_good", "book/01_good.py", "book/01_good", expected):
        assert book.find_chapter(name, book_root) == expected


def test_unknown_chapter_lists_the_available_ones(book_root: Path, capsys):
    with pytest.raises(ValueError, match="unknown chapter '99'") as error:
        book.find_chapter("99", book_root)
    for name in ("01_good", "02_raises", "05_untagged"):
        assert name in str(error.value)
    with pytest.raises(SystemExit) as exit_info:
        book.main(["nope", "--root", str(book_root), "--no-site"])
    assert exit_info.value.code == 2
    assert "unknown chapter 'nope'" in capsys.readouterr().err


def test_cli_injects_parsed_parameters_hides_them_and_records_timing(book_root: Path, capsys):
    status = book.main([
        "01", "--root", str(book_root), "--profile", "smoke", "--no-site",
        "-p", "model", "r3d_18", "-p", "layers", "['layer1','layer4']", "-p", "seed", "7",
    ])  # fmt: skip
    assert status == 0
    notebook = nbformat.read(book_root / "_build" / "notebooks" / "01_good.ipynb", as_version=4)
    injected = _tagged(notebook, book.INJECTED_TAG)
    assert len(injected) == 1
    assert book.HIDDEN_TAG in injected[0].metadata.tags
    # Injected right after the parameters cell, so the values below override the defaults.
    parameters_index = notebook.cells.index(_tagged(notebook, book.PARAMETERS_TAG)[0])
    assert notebook.cells[parameters_index + 1] is injected[0]
    printed = _stdout(notebook.cells[-1])
    assert printed.strip() == "profile=smoke model=r3d_18 layers=['layer1', 'layer4'] seed=7"

    with open(book_root / "_build" / "timings.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["chapter"], row["profile"], row["status"]) for row in rows] == [
        ("01_good", "smoke", "ok")
    ]
    assert float(rows[0]["seconds"]) > 0
    assert "01_good" in capsys.readouterr().out


def test_profile_defaults_to_the_environment(book_root: Path, monkeypatch):
    monkeypatch.setenv("STDYN_PROFILE", "full")
    assert book.main(["01", "--root", str(book_root), "--no-site"]) == 0
    notebook = nbformat.read(book_root / "_build" / "notebooks" / "01_good.ipynb", as_version=4)
    assert "profile=full" in _stdout(notebook.cells[-1])


def test_raising_cell_fails_naming_chapter_and_cell_and_keeps_good_runs(book_root: Path, capsys):
    out = book_root / "_build" / "notebooks"
    good = book.run_chapter("02", "smoke", {"fail": False}, book_root=book_root)
    assert good == out / "02_raises.ipynb"

    assert book.main(["02", "--root", str(book_root), "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "chapter 02_raises" in err
    assert "ValueError: boom" in err
    assert "`if fail:`" in err  # the failing cell, by its first line
    assert "not rebuilt" in err
    assert not (book_root / "_build" / "html").exists()

    # The failed run is kept apart; the last good run is still the one published.
    failed = nbformat.read(out / "02_raises.failed.ipynb", as_version=4)
    assert any(o.output_type == "error" for cell in failed.cells for o in cell.get("outputs", []))
    kept = nbformat.read(good, as_version=4)
    assert "fail = False" in _tagged(kept, book.INJECTED_TAG)[0].source
    assert not (out / "02_raises.running.ipynb").exists()
    with open(book_root / "_build" / "timings.csv") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["failed"]


def test_printed_warning_fails_the_chapter(book_root: Path):
    with pytest.raises(book.ChapterError, match=r"chapter 03_warns: cell \d+ .*UserWarning: careful"):
        book.run_chapter("03", "smoke", book_root=book_root)
    out = book_root / "_build" / "notebooks"
    assert (out / "03_warns.failed.ipynb").exists()
    assert not (out / "03_warns.ipynb").exists()


def test_progress_bars_are_not_warnings(book_root: Path):
    notebook = nbformat.read(book.run_chapter("04", "smoke", book_root=book_root), as_version=4)
    stderr = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
        if out.get("name") == "stderr"
    )  # fmt: skip
    assert "Warning-free text bar" in stderr and "3/3" in stderr
    assert "done" in _stdout(notebook.cells[-1])


def test_printed_warnings_reads_only_stderr_warning_lines():
    warning = "/x/model.py:12: FutureWarning: `old` is deprecated\n  warnings.warn(msg)\n"
    assert book.printed_warnings(_stream_notebook("stderr", warning)) == [
        (0, "/x/model.py:12: FutureWarning: `old` is deprecated")
    ]
    bar = "train: 100%|##########| 5/5 [00:00<00:00, 99.1it/s]\rtrain:  40%|####\n"
    assert book.printed_warnings(_stream_notebook("stderr", bar)) == []
    interleaved = "train:  40%|####\r/x/run.py:3: UserWarning: late\n  warnings.warn(msg)\n"
    assert book.printed_warnings(_stream_notebook("stderr", interleaved)) == [
        (0, "/x/run.py:3: UserWarning: late")
    ]
    assert book.printed_warnings(_stream_notebook("stdout", warning)) == []


def test_chapter_without_parameters_cell_is_rejected(book_root: Path):
    with pytest.raises(book.ChapterError, match="05_untagged: needs exactly one cell tagged 'parameters'"):
        book.run_chapter("05", "smoke", book_root=book_root)


def test_unknown_parameter_is_rejected_before_running(book_root: Path):
    with pytest.raises(book.ChapterError, match="unknown parameter.*modle.*sets profile, seed, model"):
        book.run_chapter("01", "smoke", {"modle": "x"}, book_root=book_root)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        book.run_chapter("01", "huge", book_root=book_root)
    assert not (book_root / "_build" / "notebooks" / "01_good.ipynb").exists()


def test_prepare_only_injects_without_executing(book_root: Path, tmp_path: Path):
    prepared = book.run_chapter("01", "smoke", out_dir=tmp_path, prepare_only=True, book_root=book_root)
    assert prepared == tmp_path / "01_good.prepared.ipynb"
    notebook = nbformat.read(prepared, as_version=4)
    assert 'profile = "smoke"' in _tagged(notebook, book.INJECTED_TAG)[0].source
    assert all(not cell.get("outputs") for cell in notebook.cells)
    assert not (tmp_path / "01_good.ipynb").exists()


def test_site_builds_offline_from_the_executed_notebooks(book_root: Path, capsys):
    book.run_chapter("01", "smoke", {"model": "r3d_18"}, book_root=book_root)
    book.run_chapter("04", "smoke", book_root=book_root)
    book.run_chapter("06", "smoke", book_root=book_root)
    html = book.build_site(book_root)

    assert html == book_root / "_build" / "html"
    assert (html / "index.html").is_file()
    page = (html / "book" / "01_good.html").read_text()
    assert "profile=smoke model=r3d_18" in page  # the executed output
    assert "# Parameters" not in page  # papermill's injected cell is hidden
    # Chapters never run get a page that says how to run them, and the build lists them.
    placeholder = re.sub(r"<[^>]+>", "", (html / "book" / "02_raises.html").read_text())
    assert "has not been run yet" in placeholder and "python -m stdyn.book 02" in placeholder
    assert "02_raises, 03_warns, 05_untagged" in capsys.readouterr().out

    # The scorecard page, after the chapters: every claims row, the verdict counts, the chapters without rows.
    scorecard = (html / "book" / "scorecard.html").read_text()
    text = re.sub(r"<[^>]+>", "", scorecard)
    assert "a exceeds b in dynamics" in text and "testbed check failed" in text
    assert 'style="background-color: #d9f2d9"' in scorecard  # the verdict is coloured
    assert re.search(r"reproduced\s*1\s*", text) and re.search(r"total\s*3", text)
    assert "05_untagged" in text and "02_raises" in text  # chapters missing from the table
    assert "smoke" in text
    toc = (html / "book" / "06_claims.html").read_text()
    assert "scorecard.html" in toc  # listed in the navigation
    assert (book_root / "_build" / "claims.csv").is_file()

    # Offline: maths from the site's own MathJax, no script or stylesheet from the network.
    assert 'src="../_static/mathjax/tex-chtml.js' in page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for path in html.rglob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', path.read_text())
        assert not remote, f"{path.name} loads {remote}"
    # Widget outputs (notebook progress bars) are dropped from the static pages.
    assert "widget-view" not in (html / "book" / "04_progress.html").read_text()


def test_the_session_has_its_own_cache():
    cache = Path(os.environ["STDYN_CACHE"])
    assert cache.is_dir() and cache.name.startswith("stdyn-test-cache-")


def test_site_build_names_a_toc_entry_without_a_page(book_root: Path):
    (book_root / "book" / "intro.md").unlink()
    with pytest.raises(book.SiteBuildError, match="_toc.yml lists 'book/intro'"):
        book.build_site(book_root)


# ----------------------------------------------------------------------------- the scorecard


def test_claims_are_collected_from_the_executed_notebooks(book_root: Path):
    book.run_chapter("06", "smoke", book_root=book_root)
    rows, status = book.collect_claims(book_root)
    assert list(rows.columns) == list(claims.COLUMNS)
    assert rows["claim"].tolist() == ["a exceeds b", "a is like b", "a exceeds b in dynamics"]
    assert rows["verdict"].tolist() == [claims.REPRODUCED, claims.CONTRADICTED, claims.NOT_TESTED]
    assert rows["chapter"].eq("06").all() and rows["seeds"].eq(1).all()
    assert rows.loc[2, "note"] == "testbed check failed"
    by_chapter = status.set_index("chapter")
    assert by_chapter.loc["06_claims", ["status", "profile", "claims"]].tolist() == ["ok", "smoke", 3]
    assert by_chapter.loc["01_good", "status"] == "not run"


def test_a_failed_or_broken_chapter_does_not_stop_the_scorecard(book_root: Path, capsys):
    out = book_root / "_build" / "notebooks"
    assert book.main(["02", "06", "--root", str(book_root), "--profile", "smoke"]) == 1  # 02 raises
    with open(book_root / "_build" / "claims.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [row["claim"] for row in written] == ["a exceeds b", "a is like b", "a exceeds b in dynamics"]
    assert "claims: 3 rows" in capsys.readouterr().out
    (out / "01_good.ipynb").write_text("{not a notebook")
    rows, status = book.collect_claims(book_root)
    by_chapter = status.set_index("chapter")["status"]
    assert by_chapter["02_raises"] == "failed"
    assert by_chapter["01_good"].startswith("unreadable")
    assert len(rows) == 3
    page = book.scorecard_page(rows, status)
    assert "02_raises`): failed" in page and "| not tested | 1 |" in page
    # A chapter that fails after a good run keeps its earlier rows, and says so.
    good = book.run_chapter("02", "smoke", {"fail": False}, book_root=book_root)
    os.utime(good, (1, 1))
    (out / "02_raises.failed.ipynb").touch()
    assert book.collect_claims(book_root)[1].set_index("chapter").loc["02_raises", "status"] == \
        "failed; earlier run shown"


def test_scorecard_without_any_run_lists_every_chapter_as_missing(book_root: Path):
    rows, status = book.collect_claims(book_root)
    assert rows.empty and set(status["status"]) == {"not run"}
    page = book.scorecard_page(rows, status)
    assert "| total | 0 |" in page and "06_claims`): not run" in page


def test_select_parts_runs_the_chosen_part_and_skips_the_others_cells():
    from stdyn.book.parts import part_of, select_parts, skip_unselected

    assert select_parts("all", ["action", "vos"]) == ["action", "vos"]
    assert select_parts("vos", ["action", "vos"]) == ["vos"]
    with pytest.raises(ValueError, match="unknown task 'vis'.*action, vos, all"):
        select_parts("vis", ["action", "vos"])
    assert part_of(["\n", "# part: vos\n", "x = 1\n"]) == "vos"
    assert part_of(["x = 1  # part: vos\n"]) is None and part_of([]) is None
    transform = skip_unselected(["vos"], ["action", "vos"])
    action_cell, vos_cell, shared_cell = ["# part: action\n", "1 / 0\n"], ["# part: vos\n", "y = 2\n"], ["z = 3\n"]
    assert transform(action_cell) == ["pass\n"]
    assert transform(vos_cell) == vos_cell and transform(shared_cell) == shared_cell
    with pytest.raises(ValueError, match="'# part: vis'.*action, vos"):
        transform(["# part: vis\n"])


def test_an_ipython_shell_skips_the_cells_of_unselected_parts():
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "shell.run_cell('from stdyn.book.parts import select_parts; parts = select_parts(\"vos\", [\"action\", \"vos\"])')\n"
        "shell.run_cell('# part: action\\nran = [\"action\"]')\n"
        "shell.run_cell('# part: vos\\nran = ran + [\"vos\"] if \"ran\" in dir() else [\"vos\"]')\n"
        "shell.run_cell('parts = select_parts(\"all\", [\"action\", \"vos\"])')\n"  # a rerun replaces the filter
        "shell.run_cell('# part: action\\nran = ran + [\"action\"]')\n"
        "print(shell.user_ns['ran'], len(shell.input_transformers_post))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran, transformers = done.stdout.strip().rsplit(" ", 1)
    assert ran == "['vos', 'action']"
    assert int(transformers) >= 1
