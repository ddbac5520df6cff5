"""Chapters in parts: one per task, chosen by the chapter's ``task`` parameter.

A chapter calls :func:`select_parts` once; from then on, in IPython (Jupyter, papermill), a code
cell whose first line is ``# part: <name>`` runs only when part ``<name>`` is selected, and is
skipped (without output) otherwise. Cells without the marker always run::

    parts = select_parts(task, ["action", "vos"])    # task: "action", "vos" or "all"

    # part: vos
    study = vos.dataset_study(P)                       # runs when task is "vos" or "all"
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

ALL = "all"
_MARKER = re.compile(r"^\s*#\s*part:\s*([\w-]+)\s*$")
_active: dict[str, Any] = {}  # the transformer this process installed, so that a rerun replaces it


def select_parts(task: str, available: Sequence[str]) -> list[str]:
    """The parts to run for ``task`` ("all" or one of ``available``), and, in IPython, skip the
    cells of the others from now on."""
    if task != ALL and task not in available:
        raise ValueError(f"unknown task {task!r} for this chapter; use one of {', '.join([*available, ALL])}")
    selected = list(available) if task == ALL else [task]
    _install(selected, list(available))
    return selected


def part_of(lines: Sequence[str]) -> str | None:
    """The part a cell belongs to: the name in its first non-blank line ``# part: <name>``, if any."""
    for line in lines:
        if line.strip():
            match = _MARKER.match(line)
            return match.group(1) if match else None
    return None


def skip_unselected(selected: Sequence[str], available: Sequence[str]):
    """An IPython input transformer: a cell of an available part that is not selected becomes ``pass``."""

    def transform(lines: list[str]) -> list[str]:
        part = part_of(lines)
        if part is not None and part not in available:
            raise ValueError(f"cell marked '# part: {part}', but this chapter's parts are {', '.join(available)}")
        return ["pass\n"] if part is not None and part not in selected else lines

    return transform


def _install(selected: list[str], available: list[str]) -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to skip
        return
    shell = get_ipython()
    if shell is None:
        return
    transformers = shell.input_transformers_post
    if _active.get("transform") in transformers:
        transformers.remove(_active["transform"])
    _active["transform"] = skip_unselected(selected, available)
    transformers.append(_active["transform"])
