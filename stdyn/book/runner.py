"""Run the book's chapters with papermill and build the site with Jupyter Book 1.

A chapter is a jupytext percent-format ``.py`` notebook listed in ``_toc.yml``, with exactly one
cell tagged ``parameters`` that assigns ``profile`` (``smoke``, ``quick`` or ``full``)::

    python -m stdyn.book                        # every chapter, then the site
    python -m stdyn.book 01 --profile smoke     # one chapter (01, 01_measuring or book/01_measuring.py)
    python -m stdyn.book 01 -p model r3d_18 -p layers "['layer1', 'layer4']"
    python -m stdyn.book --no-site              # chapters only

The profile defaults to ``$STDYN_PROFILE``, else ``quick``. ``-p`` values are read as Python
literals, and as plain strings when they are not one.

Layout, relative to the book root (the folder holding ``_config.yml`` and ``_toc.yml``):

- ``book/NN_name.py``: the chapter sources; they run with ``book/`` as working directory, as they
  do when opened in Jupyter, on the ``python3`` kernel.
- ``_build/notebooks/NN_name.ipynb``: the last successful run of each chapter (``--out`` puts
  them elsewhere). They are not written beside their sources because the project pairs ``.ipynb``
  and ``.py`` files there with jupytext, which refuses to open an ``.ipynb`` whose inputs differ
  from its source (the injected parameters do).
- ``NN_name.running.ipynb`` while a chapter runs; ``NN_name.failed.ipynb`` when it failed (kept for
  debugging, never published; the previous good run stays in place).
- ``_build/timings.csv``: one row per chapter run (chapter, profile, seconds, status, finished).
- ``_build/claims.csv``: every claim the chapters checked (chapter, claim, paper, measured,
  verdict, seeds, note), read from the executed notebooks' claims tables (:mod:`stdyn.core.claims`);
  the site's scorecard page (the ``_toc.yml`` entry named ``scorecard``) shows the same rows,
  the count of each verdict, and which chapters have no rows (not run, failed, no claims table).
- ``_build/site``: the staged book source (configuration, table of contents, pages and assets of
  the chapter folders, the executed notebooks); ``_build/html``: the site.

A chapter fails on an error in any cell and on any Python warning printed in a cell's output
(a ``...Warning: ...`` line on stderr; progress bars are not warnings). The command line runs the
remaining chapters after a failure, then exits non-zero naming the failed chapters and cells and
does not rebuild the site. The site is built from the executed notebooks that exist: a chapter
never run successfully gets a page saying how to run it, and the build lists those chapters.
The site is built offline: nothing is executed, warnings fail the build, and MathJax is served
from the site's own ``_static`` folder.
"""
from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import jupytext
import nbformat
import pandas as pd
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError
from papermill.translators import PythonTranslator
from traitlets.config import Config

from stdyn.core import claims
from stdyn.plots import NO_WIDGETS

PROFILES = ("smoke", "quick", "full")
DEFAULT_PROFILE = "quick"
KERNEL = "python3"
KERNELSPEC = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
HIDDEN_TAG = "remove-cell"
# The line that warnings.showwarning prints: "file.py:12: UserWarning: message".
WARNING_LINE = re.compile(r"^.*\b(?:[A-Z]\w*)?Warning: .*$", re.MULTILINE)
TIMINGS_FIELDS = ("chapter", "profile", "seconds", "status", "finished")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
PAGE_SUFFIXES = (".md", ".rst", ".ipynb")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CLAIMS_CSV = "claims.csv"
SCORECARD = "scorecard"  # the _toc.yml entry (by file name) that shows every chapter's claims


class ChapterError(RuntimeError):
    """A chapter could not be prepared or failed while running."""

    def __init__(self, chapter: str, message: str, notebook: Path | None = None):
        self.chapter = chapter
        self.notebook = notebook
        where = f"\n  notebook kept for debugging: {notebook}" if notebook else ""
        super().__init__(f"chapter {chapter}: {message}{where}")


class SiteBuildError(RuntimeError):
    """Jupyter Book failed to build the site."""


# ----------------------------------------------------------------------------- the book's files


def find_book_root(start: Path | str | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) with a ``_toc.yml``,
    else the repository this package lives in."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents, Path(__file__).resolve().parents[1]):
        if (folder / "_toc.yml").is_file():
            return folder
    raise FileNotFoundError(
        f"no _toc.yml in {start} or its parents: run from the book's folder or pass --root DIR"
    )


def _root(book_root: Path | str | None) -> Path:
    if book_root is None:
        return find_book_root()
    book_root = Path(book_root).resolve()
    if not (book_root / "_toc.yml").is_file():
        raise FileNotFoundError(f"{book_root} has no _toc.yml: pass the folder that holds the book")
    return book_root


def _toc_entries(book_root: Path) -> list[str]:
    """Every ``root`` and ``file`` entry of ``_toc.yml`` (without a suffix), in reading order."""
    toc_path = book_root / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_path} is not a Jupyter Book table of contents (no 'root' entry)")

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file") and isinstance(value, str):
                    known_suffix = Path(value).suffix in (*PAGE_SUFFIXES, ".py")
                    yield str(Path(value).with_suffix("")) if known_suffix else value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(toc))


def chapters(book_root: Path | str | None = None) -> list[Path]:
    """The chapter sources (``.py`` files) listed in ``_toc.yml``, in the book's order."""
    book_root = _root(book_root)
    sources = [
        book_root / f"{entry}.py"
        for entry in _toc_entries(book_root)
        if (book_root / f"{entry}.py").is_file()
    ]
    stems = [source.stem for source in sources]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise ValueError(f"chapter names must be unique across folders: {', '.join(duplicates)}")
    return sources


def find_chapter(name: str | Path, book_root: Path | str | None = None) -> Path:
    """The chapter named by number (``01``), name (``01_measuring``) or path (``book/01_measuring.py``)."""
    book_root = _root(book_root)
    available = chapters(book_root)
    text = str(name)
    as_path = Path(text).with_suffix(".py") if Path(text).suffix in ("", ".ipynb") else Path(text)
    candidates = {(base / as_path).resolve() for base in (Path.cwd(), book_root)}
    for source in available:
        if text in (source.stem, source.name, source.stem.split("_", 1)[0]):
            return source
        if source.resolve() in candidates:
            return source
    listing = ", ".join(source.stem for source in available) or "none (the _toc.yml lists no .py chapter)"
    raise ValueError(
        f"unknown chapter {text!r}; available: {listing} "
        "(name one by number, by name or by path, e.g. 01, 01_measuring or book/01_measuring.py)"
    )


def parse_value(text: str) -> Any:
    """A ``-p`` value: a Python literal if it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ----------------------------------------------------------------------------- running a chapter


def load_chapter(source: Path) -> nbformat.NotebookNode:
    """Read a jupytext percent-format chapter as a notebook on the ``python3`` kernel.

    Raises :class:`ChapterError` unless exactly one cell is tagged ``parameters`` (some jupytext
    metadata filters drop cell tags silently, and papermill would then inject nothing).
    """
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    tagged = [i for i, cell in enumerate(notebook.cells) if PARAMETERS_TAG in _tags(cell)]
    if len(tagged) != 1:
        found = f"cells {tagged}" if tagged else "none"
        raise ChapterError(
            source.stem,
            f"needs exactly one cell tagged 'parameters' (found {found}); "
            "mark it with '# %% tags=[\"parameters\"]' in the .py source",
        )
    return notebook


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def chapter_parameters(notebook: nbformat.NotebookNode) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    cell = next(cell for cell in notebook.cells if PARAMETERS_TAG in _tags(cell))
    return [parameter.name for parameter in PythonTranslator.inspect(cell)]


def _first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    return lines[0].strip()[:80] if lines else "(empty cell)"


def _describe_cell(index: int, execution_count: int | None, source: str) -> str:
    label = f"In [{execution_count}]" if execution_count is not None else "not executed"
    return f"cell {index} ({label}: `{_first_line(source)}`)"


def _hide_injected_parameters(
    notebook: nbformat.NotebookNode, chapter: str, failed: Path
) -> None:
    injected = [cell for cell in notebook.cells if INJECTED_TAG in _tags(cell)]
    if not injected:
        raise ChapterError(
            chapter, "papermill injected no parameters (is the 'parameters' tag intact?)", failed
        )
    for cell in injected:
        tags = cell.metadata.setdefault("tags", [])
        if HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)


def printed_warnings(notebook: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """``(cell index, line)`` for every Python warning printed on stderr by a cell."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                for match in WARNING_LINE.finditer(output.get("text", "")):
                    # A progress bar redraws its line after carriage returns: report the last part.
                    found.append((index, match.group(0).split("\r")[-1].strip()))
    return found


def run_chapter(
    chapter: str | Path,
    profile: str,
    parameters: Mapping[str, Any] | None = None,
    out_dir: Path | str | None = None,
    prepare_only: bool = False,
    *,
    book_root: Path | str | None = None,
    progress: bool = False,
) -> Path:
    """Execute one chapter with papermill and return the executed notebook's path.

    The notebook is written to ``out_dir`` (default ``<book root>/_build/notebooks``) as
    ``NN_name.ipynb`` only when every cell ran without an error or a printed warning; otherwise
    it is kept as ``NN_name.failed.ipynb`` and :class:`ChapterError` names the chapter and cell.
    ``prepare_only`` injects the parameters without executing and returns
    ``NN_name.prepared.ipynb`` (to hand to nbval).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    book_root = _root(book_root)
    source = find_chapter(chapter, book_root)
    name = source.stem
    notebook = load_chapter(source)

    if parameters and "profile" in parameters:
        raise ValueError("pass the profile as the profile argument (--profile), not as a parameter")
    values = {**(parameters or {}), "profile": profile}
    known = chapter_parameters(notebook)
    unknown = [key for key in values if key not in known]
    if unknown:
        raise ChapterError(
            name, f"unknown parameter(s) {', '.join(unknown)}; its parameters cell sets {', '.join(known)}"
        )

    # Absolute: papermill writes the notebook from inside the chapter's working directory.
    out_dir = Path(out_dir).resolve() if out_dir else book_root / "_build" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / (f"{name}.prepared.ipynb" if prepare_only else f"{name}.ipynb")
    running = out_dir / f"{name}.running.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    if not prepare_only:
        failed.unlink(missing_ok=True)  # a failed notebook always belongs to the latest run
    try:
        with mock.patch.dict(os.environ, {NO_WIDGETS: "1"}):  # the kernel inherits it: no widgets in batch runs
            papermill.execute_notebook(
                notebook,
                str(running),
                parameters=values,
                kernel_name=KERNEL,
                language="python",
                cwd=str(source.parent),
                prepare_only=prepare_only,
                progress_bar=progress,
                config=_kernel_config(),
                execution_timeout=_cell_timeout(),
            )
        executed = nbformat.read(running, as_version=4)
        _hide_injected_parameters(executed, name, failed)
        nbformat.write(executed, running)
        warnings = printed_warnings(executed)
        if warnings:
            index, line = warnings[0]
            cell = executed.cells[index]
            more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
            raise ChapterError(
                name,
                f"{_describe_cell(index, cell.get('execution_count'), cell.source)} printed a "
                f"warning{more}: {line}\n  fix its cause, or filter it in the chapter with "
                "warnings.filterwarnings",
                failed,
            )
    except PapermillExecutionError as error:
        kept = _keep_failed(running, failed)
        cell = _describe_cell(error.cell_index, error.exec_count, error.source)
        raise ChapterError(name, f"{cell} raised {error.ename}: {error.evalue}", kept) from None
    except ChapterError:
        _keep_failed(running, failed)
        raise
    except Exception as error:  # the kernel died, could not start, ...
        kept = _keep_failed(running, failed)
        raise ChapterError(name, f"stopped: {type(error).__name__}: {error}", kept) from error
    except BaseException:
        _keep_failed(running, failed)
        raise
    os.replace(running, final)
    return final


def _cell_timeout() -> int | None:
    """Seconds a cell may run (``$STDYN_CELL_TIMEOUT``; unset: no limit, as full-profile cells take hours)."""
    value = os.environ.get("STDYN_CELL_TIMEOUT")
    return int(value) if value else None


def _kernel_config() -> Config:
    # Local sockets: over TCP the kernel logs a plain-text transport warning on every start.
    return Config({"KernelManager": {"transport": "ipc"}}) if os.name == "posix" else Config()


def _keep_failed(running: Path, failed: Path) -> Path | None:
    """Move a failed run's notebook aside (never under the published name); return its path."""
    if not running.exists():
        return None
    os.replace(running, failed)
    return failed


def record_timing(path: Path, chapter: str, profile: str, seconds: float, status: str) -> None:
    """Append one row to the timings CSV (written with a header when new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(TIMINGS_FIELDS)
        finished = datetime.now().isoformat(timespec="seconds")
        writer.writerow([chapter, profile, f"{seconds:.1f}", status, finished])


# ----------------------------------------------------------------------------- the scorecard


def collect_claims(
    book_root: Path | str | None = None, notebooks_dir: Path | str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every chapter's claims rows, read from its executed notebook, in the book's order.

    Returns the rows (:data:`stdyn.core.claims.COLUMNS`) and one line per chapter: chapter, title,
    status ("ok", "not run", "failed", "failed; earlier run shown", "no claims table",
    "unreadable"), the profile it ran at, and its number of claims. A chapter without an
    executed notebook contributes no rows; nothing here raises for a missing or broken chapter.
    """
    book_root = _root(book_root)
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir else book_root / "_build" / "notebooks"
    rows: list[dict[str, Any]] = []
    status = []
    for source in chapters(book_root):
        executed = notebooks_dir / f"{source.stem}.ipynb"
        failed = notebooks_dir / f"{source.stem}.failed.ipynb"
        line = {"chapter": source.stem, "title": _chapter_title(source), "status": "ok", "profile": "",
                "claims": 0}
        if not executed.is_file():
            line["status"] = "failed" if failed.is_file() else "not run"
            status.append(line)
            continue
        try:
            notebook = nbformat.read(executed, as_version=4)
            found = claims.notebook_rows(notebook)
        except Exception as error:  # a damaged notebook must not stop the scorecard
            line["status"] = f"unreadable ({type(error).__name__})"
            status.append(line)
            continue
        line["profile"] = str(notebook.metadata.get("papermill", {}).get("parameters", {}).get("profile", ""))
        line["claims"] = len(found)
        if failed.is_file() and failed.stat().st_mtime > executed.stat().st_mtime:
            line["status"] = "failed; earlier run shown"
        elif not found:
            line["status"] = "no claims table"
        rows.extend({**row, "chapter": row.get("chapter") or source.stem.split("_", 1)[0]} for row in found)
        status.append(line)
    columns = ["chapter", "title", "status", "profile", "claims"]
    return pd.DataFrame(rows, columns=list(claims.COLUMNS)), pd.DataFrame(status, columns=columns)


def write_claims(
    book_root: Path | str | None = None, notebooks_dir: Path | str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`collect_claims`, written to ``<book root>/_build/claims.csv``; returns both frames."""
    book_root = _root(book_root)
    rows, status = collect_claims(book_root, notebooks_dir)
    path = book_root / "_build" / CLAIMS_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, index=False)
    return rows, status


def scorecard_page(rows: pd.DataFrame, status: pd.DataFrame) -> str:
    """The scorecard as a MyST page: counts per verdict, one table of every claim, and the
    chapters that contributed no rows."""
    counted = claims.counts(rows)
    lines = [
        "# Scorecard", "",
        "Every claim the chapters checked, collected from their last successful runs. A claim is",
        "*reproduced* when the 95% bootstrap interval says what the paper says, *not reproduced* when",
        "the interval cannot decide, *contradicted* when it lies on the other side, and *not tested*",
        "when there is no interval or a check it depends on failed (the note says which).", "",
        "| verdict | claims |", "|---|---|",
        *(f"| {verdict} | {n} |" for verdict, n in counted.items()),
        f"| total | {len(rows)} |", "",
    ]
    profiles_run = sorted({p for p in status["profile"] if p})
    if profiles_run:
        lines += [f"Profile{'s' if len(profiles_run) > 1 else ''} of these runs: {', '.join(profiles_run)}"
                  + (" (a smoke run checks that the chapters run; its verdicts mean nothing)."
                     if "smoke" in profiles_run else "."), ""]
    if len(rows):
        shown = rows.rename(columns={"paper": "paper's value", "measured": "measured here"})
        lines += [claims.html_table(shown), ""]
    absent = status[status["status"] != "ok"]
    if len(absent):
        lines += ["## Chapters without a current claims table", ""]
        lines += [f"- {row.title} (`{row.chapter}`): {row.status}" for row in absent.itertuples()]
        lines += ["", "Run a chapter with `python -m stdyn.book NN`, which rebuilds this page.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the site


def _chapter_title(source: Path) -> str:
    for line in source.read_text().splitlines():
        if line.startswith("# # "):
            return line[4:].strip()
    return source.stem


def _missing_chapter_page(source: Path) -> str:
    number = source.stem.split("_", 1)[0]
    return (
        f"# {_chapter_title(source)}\n\n"
        "```{note}\n"
        "This chapter has not been run yet. Run it, then rebuild the site, with\n"
        f"`python -m stdyn.book {number}`.\n"
        "```\n"
    )


def _without_widgets(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop widget outputs (such as notebook progress bars): a static page cannot run them, and
    rendering their saved state would load the widget manager from the network."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if "outputs" in cell:
            cell.outputs = [out for out in cell.outputs if WIDGET_VIEW not in out.get("data", {})]
    return notebook


def _stage_site(book_root: Path, notebooks_dir: Path, site_src: Path) -> list[str]:
    """Lay out the book source under ``site_src``; return the chapters that have no notebook."""
    if site_src.exists():
        shutil.rmtree(site_src)
    site_src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(book_root / name, site_src / name)

    # Pages and assets (figures) come along with their folders; sources and notebooks do not.
    entries = _toc_entries(book_root)
    sources = shutil.ignore_patterns("*.py", "*.ipynb", "__pycache__", ".ipynb_checkpoints")

    def skip(directory: str, names: list[str]) -> set[str]:
        # Sockets and other special files (e.g. a killed kernel's kernel-ipc-N) are not pages.
        special = {n for n in names if not (os.path.isfile(os.path.join(directory, n))
                                             or os.path.isdir(os.path.join(directory, n)))}
        return set(sources(directory, names)) | special

    for folder in {(book_root / entry).parent for entry in entries} - {book_root}:
        target = site_src / folder.relative_to(book_root)
        shutil.copytree(folder, target, ignore=skip, dirs_exist_ok=True)
    for entry in entries:  # a page at the root comes alone, not with the whole repository
        if (book_root / entry).parent == book_root:
            for page in book_root.glob(f"{entry}.*"):
                if page.suffix in PAGE_SUFFIXES:
                    shutil.copy2(page, site_src / page.name)

    rows, status = write_claims(book_root, notebooks_dir)
    for entry in entries:
        if Path(entry).name == SCORECARD:
            page = site_src / f"{entry}.md"
            page.parent.mkdir(parents=True, exist_ok=True)
            for other in PAGE_SUFFIXES:  # one source per page, or Sphinx warns
                page.with_suffix(other).unlink(missing_ok=True)
            page.write_text(scorecard_page(rows, status))

    missing = []
    for source in chapters(book_root):
        staged = site_src / source.relative_to(book_root)
        staged.parent.mkdir(parents=True, exist_ok=True)
        executed = notebooks_dir / f"{source.stem}.ipynb"
        if executed.is_file():
            notebook = _without_widgets(nbformat.read(executed, as_version=4))
            nbformat.write(notebook, staged.with_suffix(".ipynb"))
        else:
            staged.with_suffix(".md").write_text(_missing_chapter_page(source))
            missing.append(source.stem)

    for entry in entries:
        if not any((site_src / f"{entry}{suffix}").is_file() for suffix in PAGE_SUFFIXES):
            raise SiteBuildError(
                f"_toc.yml lists {entry!r} but {book_root} has no {entry}.md, .rst, .ipynb or .py"
            )
    return missing


def build_site(
    book_root: Path | str | None = None,
    notebooks_dir: Path | str | None = None,
    *,
    verbose: bool = True,
) -> Path:
    """Build the site into ``<book root>/_build/html`` from the executed notebooks; return that folder.

    Jupyter Book runs with ``--all`` and warnings as errors; nothing is executed. Chapters with
    no executed notebook in ``notebooks_dir`` (default ``<book root>/_build/notebooks``) get a
    page saying how to run them and are reported. Raises :class:`SiteBuildError` with the
    build's warnings when the build fails.
    """
    book_root = _root(book_root)
    build_dir = book_root / "_build"
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir else build_dir / "notebooks"
    html_dir = build_dir / "html"
    missing = _stage_site(book_root, notebooks_dir, build_dir / "site")
    if missing and verbose:
        print(f"site: not yet run, shown as placeholders: {', '.join(missing)}", flush=True)
    stale = [
        source.stem for source in chapters(book_root)
        if (notebooks_dir / f"{source.stem}.ipynb").is_file()
        and (notebooks_dir / f"{source.stem}.ipynb").stat().st_mtime < source.stat().st_mtime
    ]  # fmt: skip
    if stale and verbose:
        print(f"site: run before their sources last changed: {', '.join(stale)}", flush=True)
    for previous in (html_dir, build_dir / ".doctrees"):  # no page may survive from an old build
        if previous.exists():
            shutil.rmtree(previous)

    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(build_dir / "site"), "--path-output", str(book_root),
        "--all", "--warningiserror", "--keep-going",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    # Name pages by their place in the book, not in the staging folder.
    log = ANSI_ESCAPE.sub("", result.stdout + result.stderr).replace(f"{build_dir / 'site'}/", "")
    if result.returncode != 0 or not (html_dir / "index.html").is_file():
        problems = [line for line in log.splitlines() if re.search(r"WARNING|ERROR|[Ee]rror:", line)]
        tail = "\n".join(problems[-30:] or log.splitlines()[-30:])
        raise SiteBuildError(f"jupyter-book build failed (exit {result.returncode}):\n{tail}")
    return html_dir


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stdyn.book",
        description="Run the book's chapters with papermill, then build the site into _build/html.",
    )
    parser.add_argument(
        "chapters", nargs="*", metavar="CHAPTER",
        help="chapters to run (01, 01_measuring or book/01_measuring.py); default: all in _toc.yml",
    )  # fmt: skip
    parser.add_argument(
        "--profile", choices=PROFILES, default=None,
        help=f"run size (default: $STDYN_PROFILE, else {DEFAULT_PROFILE})",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="set a chapter parameter; VALUE is read as a Python literal, else as a string",
    )  # fmt: skip
    parser.add_argument("--no-site", action="store_true", help="run the chapters, skip the site")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="folder for the executed notebooks (default: _build/notebooks); the site is built from it",
    )  # fmt: skip
    parser.add_argument(
        "--root", type=Path, default=None,
        help="the book root holding _toc.yml (default: found from the working directory)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m stdyn.book`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    profile = args.profile or os.environ.get("STDYN_PROFILE") or DEFAULT_PROFILE
    if profile not in PROFILES:
        parser.error(f"STDYN_PROFILE={profile!r} is not a profile; choose one of {', '.join(PROFILES)}")
    parameters = {name: parse_value(value) for name, value in args.parameter}
    if "profile" in parameters:
        parser.error("set the profile with --profile, not -p profile")
    try:
        book_root = _root(args.root)
        selected = [find_chapter(name, book_root) for name in args.chapters] or chapters(book_root)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))

    timings = book_root / "_build" / "timings.csv"
    failures: list[ChapterError] = []
    for number, source in enumerate(selected, 1):
        print(f"[{number}/{len(selected)}] {source.stem} (profile {profile})", flush=True)
        start = time.perf_counter()
        try:
            notebook = run_chapter(
                source, profile, parameters, args.out, book_root=book_root, progress=True
            )
        except ChapterError as error:
            failures.append(error)
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            status = "failed"
        else:
            status = "ok"
        seconds = time.perf_counter() - start
        record_timing(timings, source.stem, profile, seconds, status)
        if status == "ok":
            print(f"  {source.stem}: {seconds:.1f} s -> {notebook}", flush=True)

    if failures or args.no_site:
        rows, _ = write_claims(book_root, args.out)
        print(f"claims: {len(rows)} rows -> {book_root / '_build' / CLAIMS_CSV}", flush=True)
    if failures:
        names = ", ".join(error.chapter for error in failures)
        print(f"{len(failures)} chapter(s) failed: {names}; the site was not rebuilt", file=sys.stderr)
        return 1
    if args.no_site:
        return 0
    start = time.perf_counter()
    try:
        html_dir = build_site(book_root, args.out)
    except SiteBuildError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"site: {html_dir / 'index.html'} ({time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
