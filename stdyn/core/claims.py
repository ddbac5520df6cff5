"""Verdicts on the paper's claims, from bootstrap intervals, and the table every chapter ends with.

A rule compares :class:`~stdyn.core.estimator.Estimate` objects (a value with bootstrap replicates;
differences of estimates measured on the same clips with the same seed are paired) and returns a
:class:`Result`: one of four verdicts and the measured value with its interval.

- ``reproduced``: the interval says what the paper says;
- ``not reproduced``: the interval cannot decide (inconclusive);
- ``contradicted``: the interval lies on the other side;
- ``not tested``: no interval (no bootstrap replicates), or a gate failed (the models are not
  competent, the testbed check failed). A point value alone never gives a verdict.

Rules: :func:`exceeds`, :func:`similar` (an equivalence test, not "the interval contains 0"),
:func:`at_least`, :func:`at_most`, :func:`increasing`, :func:`decreasing`, :func:`settled`, and
:func:`all_of` / :func:`any_of` to combine them. Helpers make estimates: :func:`combine_seeds`
(hierarchical bootstrap over training seeds, then clips), :func:`correlation`,
:func:`bootstrap`, :func:`interval_width`.

A chapter collects its claims on a :class:`Board`::

    board = Board(chapter="02", seeds=1)
    board.competence({"i3d": 0.81, "c2d": 0.22}, chance=0.1)
    board.gate("dynamics", ok=testbed_ok, why="the testbed check failed")
    board.exceeds("FastOnly has more dynamic units than SlowOnly", fast, slow,
                  paper="FastOnly >> SlowOnly", needs=["dynamics", "fastonly", "slowonly"])
    board.show()  # the styled table, which also carries the rows for the book's scorecard
"""
from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stdyn.core.estimator import Estimate

REPRODUCED, NOT_REPRODUCED, CONTRADICTED, NOT_TESTED = VERDICTS = (
    "reproduced", "not reproduced", "contradicted", "not tested")
COLUMNS = ("chapter", "claim", "paper", "measured", "verdict", "seeds", "note")
LEVEL = 0.95
# Executed notebooks keep a chapter's rows under this key in the claims table's output metadata.
MIME_TYPE = "application/vnd.stdyn.core.claims+json"
COLOURS = {REPRODUCED: "#d9f2d9", NOT_REPRODUCED: "#fdebc8", CONTRADICTED: "#f8d7d3", NOT_TESTED: "#e6e6e6"}
NO_REPLICATES = "no bootstrap replicates: no interval to decide on"


@dataclass(frozen=True)
class Result:
    """A verdict, the measured value (with its interval) as text, and a note."""

    verdict: str
    measured: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; expected one of {VERDICTS}")


# ----------------------------------------------------------------------------- formatting


def _number(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _bounds(estimate: Estimate, level: float) -> tuple[float, float] | None:
    """The interval, or None without a finite value or finite replicates."""
    if not np.isfinite(estimate.value):
        return None
    lo, hi = estimate.interval(level)
    return None if np.isnan(lo) else (lo, hi)


def describe(estimate: Estimate | float, level: float = LEVEL) -> str:
    """``value [lo, hi]``; the value alone without replicates."""
    if not isinstance(estimate, Estimate):
        return _number(float(estimate))
    bounds = _bounds(estimate, level)
    text = _number(estimate.value)
    return text if bounds is None else f"{text} [{_number(bounds[0])}, {_number(bounds[1])}]"


def _difference(a: Estimate, b: Estimate | float) -> Estimate:
    """``a - b`` with paired replicates; without replicates when either side has none."""
    if not isinstance(b, Estimate):
        with np.errstate(invalid="ignore"):
            return Estimate(a.value - float(b), a.replicates - float(b))
    if len(a.replicates) == 0 or len(b.replicates) == 0:
        return Estimate(a.value - b.value, np.array([]))
    return a - b


def _versus(a: Estimate, b: Estimate | float, level: float) -> str:
    if isinstance(b, Estimate):
        return f"{_number(a.value)} vs {_number(b.value)}, difference {describe(_difference(a, b), level)}"
    return f"{describe(a, level)} vs {_number(float(b))}"


# ----------------------------------------------------------------------------- rules


def exceeds(a: Estimate, b: Estimate | float = 0.0, *, level: float = LEVEL) -> Result:
    """``a > b``: reproduced when the interval of ``a - b`` lies above 0, contradicted when it
    lies below 0, otherwise not reproduced. ``b`` may be a fixed number."""
    measured = _versus(a, b, level)
    bounds = _bounds(_difference(a, b), level)
    if bounds is None:
        return Result(NOT_TESTED, measured, NO_REPLICATES)
    lo, hi = bounds
    return Result(REPRODUCED if lo > 0 else CONTRADICTED if hi < 0 else NOT_REPRODUCED, measured)


def similar(a: Estimate, b: Estimate | float, margin: float, *, level: float = LEVEL) -> Result:
    """``a`` about equals ``b`` (an equivalence test): reproduced only when the whole interval of
    ``a - b`` lies inside ``[-margin, margin]``; contradicted when it lies wholly outside, on one
    side; otherwise not reproduced. A wide interval that contains 0 is not similarity."""
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    measured = f"{_versus(a, b, level)} (margin +-{_number(margin)})"
    bounds = _bounds(_difference(a, b), level)
    if bounds is None:
        return Result(NOT_TESTED, measured, NO_REPLICATES)
    lo, hi = bounds
    if -margin <= lo and hi <= margin:
        return Result(REPRODUCED, measured)
    return Result(CONTRADICTED if lo > margin or hi < -margin else NOT_REPRODUCED, measured)


def at_least(a: Estimate, threshold: float, *, level: float = LEVEL) -> Result:
    """``a >= threshold``: reproduced when the whole interval lies at or above it, contradicted
    when the whole interval lies below it."""
    measured = f"{describe(a, level)} (at least {_number(threshold)})"
    bounds = _bounds(a, level)
    if bounds is None:
        return Result(NOT_TESTED, measured, NO_REPLICATES)
    lo, hi = bounds
    return Result(REPRODUCED if lo >= threshold else CONTRADICTED if hi < threshold else NOT_REPRODUCED, measured)


def at_most(a: Estimate, threshold: float, *, level: float = LEVEL) -> Result:
    """``a <= threshold``: reproduced when the whole interval lies at or below it, contradicted
    when the whole interval lies above it."""
    measured = f"{describe(a, level)} (at most {_number(threshold)})"
    bounds = _bounds(a, level)
    if bounds is None:
        return Result(NOT_TESTED, measured, NO_REPLICATES)
    lo, hi = bounds
    return Result(REPRODUCED if hi <= threshold else CONTRADICTED if lo > threshold else NOT_REPRODUCED, measured)


def _labelled(values: Sequence[Estimate] | Mapping[Any, Estimate]) -> list[tuple[str, Estimate]]:
    if isinstance(values, Mapping):
        return [(str(k), v) for k, v in values.items()]
    return [(str(i), v) for i, v in enumerate(values)]


def increasing(values: Sequence[Estimate] | Mapping[Any, Estimate], *, level: float = LEVEL) -> Result:
    """Each value exceeds the one before it (:func:`exceeds` on every consecutive pair);
    contradicted when some consecutive difference is clearly negative."""
    items = _labelled(values)
    if len(items) < 2:
        raise ValueError("increasing needs at least two values")
    steps = {f"{k0} -> {k1}": exceeds(v1, v0, level=level) for (k0, v0), (k1, v1) in zip(items, items[1:])}
    return all_of(steps)


def decreasing(values: Sequence[Estimate] | Mapping[Any, Estimate], *, level: float = LEVEL) -> Result:
    """Each value lies below the one before it; contradicted when some step clearly rises."""
    items = _labelled(values)
    if len(items) < 2:
        raise ValueError("decreasing needs at least two values")
    steps = {f"{k0} -> {k1}": exceeds(v0, v1, level=level) for (k0, v0), (k1, v1) in zip(items, items[1:])}
    return all_of(steps)


def settled(curve: Mapping[float, Estimate], by: float, margin: float, *, level: float = LEVEL) -> Result:
    """A curve (estimates keyed by ascending epoch) has settled by epoch ``by``: every value from
    ``by`` on, before the last, is :func:`similar` to the last one within ``margin``. The
    estimates should share their resamples (same clips, same seed), so differences are paired."""
    epochs = sorted(curve)
    if not epochs:
        raise ValueError("settled needs a curve with at least one epoch")
    last = curve[epochs[-1]]
    checked = {f"epoch {e:g}": similar(curve[e], last, margin, level=level) for e in epochs[:-1] if e >= by}
    if not checked:
        return Result(NOT_TESTED, "", f"no epoch from {by:g} on before the last ({epochs[-1]:g})")
    return all_of(checked)


def _combine(parts: Mapping[Any, Result] | Sequence[Result], verdict: str, *, listed: int = 3) -> Result:
    items = [(str(k), r) for k, r in parts.items()] if isinstance(parts, Mapping) else [("", r) for r in parts]

    def text(label: str, result: Result) -> str:
        return f"{label}: {result.measured}" if label else result.measured

    if len(items) <= listed:
        measured = "; ".join(text(k, r) for k, r in items)
    else:
        held = sum(r.verdict == REPRODUCED for _, r in items)
        failing = [(k, r) for k, r in items if r.verdict != REPRODUCED] or items
        shown = failing[:listed]
        measured = f"{held}/{len(items)} hold; " + "; ".join(text(k, r) for k, r in shown)
        measured += "; ..." if len(failing) > len(shown) else ""
    notes = list(dict.fromkeys(r.note for _, r in items if r.note))
    return Result(verdict, measured, "; ".join(notes))


def all_of(parts: Mapping[Any, Result] | Sequence[Result]) -> Result:
    """Every part holds: contradicted if any part is, else not tested if any part is, else
    reproduced if all are, else not reproduced. The measured text lists the parts (at most
    three; beyond that, how many hold and the first that do not)."""
    verdicts = [r.verdict for r in (parts.values() if isinstance(parts, Mapping) else parts)]
    if not verdicts:
        raise ValueError("all_of needs at least one result")
    if CONTRADICTED in verdicts:
        verdict = CONTRADICTED
    elif NOT_TESTED in verdicts:
        verdict = NOT_TESTED
    else:
        verdict = REPRODUCED if all(v == REPRODUCED for v in verdicts) else NOT_REPRODUCED
    return _combine(parts, verdict)


def any_of(parts: Mapping[Any, Result] | Sequence[Result]) -> Result:
    """Some part holds: reproduced if any part is, else not tested if any part is, else
    contradicted if all parts are, else not reproduced."""
    verdicts = [r.verdict for r in (parts.values() if isinstance(parts, Mapping) else parts)]
    if not verdicts:
        raise ValueError("any_of needs at least one result")
    if REPRODUCED in verdicts:
        verdict = REPRODUCED
    elif NOT_TESTED in verdicts:
        verdict = NOT_TESTED
    else:
        verdict = CONTRADICTED if all(v == CONTRADICTED for v in verdicts) else NOT_REPRODUCED
    return _combine(parts, verdict)


def competent(val_acc: float, chance: float, best_acc: float) -> bool:
    """Whether a model learned its world: clean top-1 above chance and at least halfway between
    chance and the best model's top-1 on that world (all as fractions or all in percent)."""
    return bool(val_acc > chance and val_acc >= chance + (best_acc - chance) / 2)


# ----------------------------------------------------------------------------- making estimates


def combine_seeds(estimates: Iterable[Estimate], *, seed: int = 0) -> Estimate:
    """The mean of one quantity over training seeds, with a hierarchical bootstrap.

    Replicate r resamples the seeds with replacement (drawn from ``seed``), then takes each
    drawn seed's own clip replicate r, so the interval holds the spread between seeds as well as
    over clips. With one seed it is that seed's estimate. Quantities combined with the same
    ``seed`` and the same number of seeds draw the same seeds, so their differences stay
    paired. Any group of repeated runs (e.g. random draws of a baseline) combines the same way.
    """
    estimates = list(estimates)  # also a pandas Series of estimates (e.g. in groupby().agg)
    if not estimates:
        raise ValueError("combine_seeds needs at least one estimate")
    if len(estimates) == 1:
        return estimates[0]
    if len({len(e.replicates) for e in estimates}) > 1:
        raise ValueError("estimates with different numbers of bootstrap replicates cannot be combined")
    value = float(np.mean([e.value for e in estimates]))
    stacked = np.stack([np.asarray(e.replicates, dtype=np.float64) for e in estimates])  # (seeds, R)
    n_seeds, n_replicates = stacked.shape
    drawn = np.random.default_rng(seed).integers(0, n_seeds, size=(n_replicates, n_seeds))
    with np.errstate(invalid="ignore"):  # inf and -inf replicates average to NaN, which leaves the interval
        return Estimate(value, stacked[drawn, np.arange(n_replicates)[:, None]].mean(1))


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, *, replicates: int = 1000,
              seed: int = 0) -> Estimate:
    """``statistic(indices)`` on all ``n`` items, with replicates on resamples of them (with
    replacement, seeded), e.g. a statistic over clips."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one item, got {n}")
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    return Estimate(float(statistic(np.arange(n))), np.array([statistic(d) for d in draws], dtype=np.float64))


def interval_width(estimate: Estimate, *, level: float = LEVEL, replicates: int = 1000, seed: int = 0) -> Estimate:
    """The width of ``estimate``'s interval, with replicates from resampling its own bootstrap
    replicates (the Monte Carlo error of the interval)."""
    samples = estimate.replicates[np.isfinite(estimate.replicates)]
    if len(samples) == 0:
        return Estimate(float("nan"), np.array([]))

    def width(indices: np.ndarray) -> float:
        lo, hi = Estimate(0.0, samples[indices]).interval(level)
        return hi - lo

    return bootstrap(width, len(samples), replicates=replicates, seed=seed)


def correlation(x: Sequence[float], values: Sequence[Estimate], *, method: str = "spearman") -> Estimate:
    """The correlation between fixed numbers ``x`` and estimates ``values``, computed on the
    values and on each of their (paired) replicates; ``method`` is "spearman" or "pearson".
    Replicates where the values are all tied are NaN and leave the interval."""
    if method not in ("spearman", "pearson"):
        raise ValueError(f"unknown method {method!r}; use 'spearman' or 'pearson'")
    values = list(values)
    if len(values) != len(x) or len(x) < 2:
        raise ValueError(f"correlation needs as many values as x (at least 2), got {len(values)} and {len(x)}")
    if len({len(v.replicates) for v in values}) > 1:
        raise ValueError("estimates with different numbers of bootstrap replicates cannot be paired")
    rows = np.vstack([[v.value for v in values], np.stack([v.replicates for v in values], axis=1)])
    xs = np.asarray(x, dtype=np.float64)
    if method == "spearman":
        rows = pd.DataFrame(rows).rank(axis=1).to_numpy()
        xs = pd.Series(xs).rank().to_numpy()
    xs = xs - xs.mean()
    centred = rows - rows.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = centred @ xs / np.sqrt((centred**2).sum(1) * (xs**2).sum())
    return Estimate(float(r[0]), r[1:])


# ----------------------------------------------------------------------------- a chapter's claims


def _needs(needs: str | Sequence[str] | None) -> list[str]:
    if needs is None:
        return []
    return [needs] if isinstance(needs, str) else list(needs)


class Board:
    """A chapter's claims: one row per claim (chapter, claim, paper, measured, verdict, seeds,
    note), judged by the rules above, with gates that turn a row "not tested".

    ``seeds`` is how many training seeds stand behind a row unless the row says otherwise.
    A gate (:meth:`gate`, :meth:`competence`) is a named check; a claim that ``needs`` a gate
    that failed is "not tested" and says why; one that needs a gate never declared is judged,
    and its note says that check was not run.
    """

    def __init__(self, chapter: str, *, seeds: int = 1, level: float = LEVEL) -> None:
        self.chapter, self.seeds, self.level = str(chapter), int(seeds), float(level)
        self.gates: dict[str, tuple[bool, str]] = {}
        self.rows: list[dict[str, Any]] = []

    def gate(self, name: str, ok: bool, why: str = "") -> None:
        """Declare a check; claims that need ``name`` are "not tested" (because ``why``) unless ``ok``."""
        self.gates[name] = (bool(ok), why or f"{name}: check failed")

    def competence(self, accuracy: Mapping[str, float], chance: float, *, best: float | None = None,
                   metric: str = "top-1", baseline: str = "chance") -> dict[str, bool]:
        """One gate per model (named by its key): :func:`competent` against ``best`` (default: the
        best of ``accuracy``). ``metric`` and ``baseline`` name the score and what ``chance`` is in the
        notes (e.g. "mIoU" and "the best input-free baseline"). Returns which passed."""
        accuracy = {str(k): float(v) for k, v in dict(accuracy).items()}  # also a pandas Series
        best = max(accuracy.values()) if best is None else best
        passed = {}
        halfway = chance + (best - chance) / 2
        for name, acc in accuracy.items():
            passed[name] = competent(acc, chance, best)
            why = (f"{name} not above {baseline}: {metric} {_number(acc)}, {baseline} {_number(chance)}"
                   if acc <= chance else
                   f"{name} not competent: {metric} {_number(acc)} is below {_number(halfway)}, halfway from "
                   f"{baseline} ({_number(chance)}) to the best model ({_number(best)})")
            self.gate(name, passed[name], why)
        return passed

    def add(self, claim: str, result: Result, *, paper: str, needs: str | Sequence[str] | None = None,
            seeds: int | None = None, note: str = "") -> Result:
        """Record ``result`` for ``claim``, through the gates it ``needs``; returns the row's result."""
        notes = [note] if note else []
        failed = [self.gates[n][1] for n in _needs(needs) if n in self.gates and not self.gates[n][0]]
        unknown = [n for n in _needs(needs) if n not in self.gates]
        if failed:
            result = Result(NOT_TESTED, result.measured, "; ".join(failed))
        notes += [result.note] if result.note else []
        notes += [f"check {n!r} not run" for n in unknown]
        final = Result(result.verdict, result.measured, "; ".join(notes))
        self.rows.append({"chapter": self.chapter, "claim": claim, "paper": paper, "measured": final.measured,
                          "verdict": final.verdict, "seeds": self.seeds if seeds is None else int(seeds),
                          "note": final.note})
        return final

    def exceeds(self, claim: str, a: Estimate, b: Estimate | float = 0.0, *, paper: str, **row: Any) -> Result:
        """Record :func:`exceeds` (``a > b``)."""
        return self.add(claim, exceeds(a, b, level=self.level), paper=paper, **row)

    def similar(self, claim: str, a: Estimate, b: Estimate | float, margin: float, *, paper: str,
                **row: Any) -> Result:
        """Record :func:`similar` (``|a - b| <= margin``, as an equivalence test)."""
        return self.add(claim, similar(a, b, margin, level=self.level), paper=paper, **row)

    def at_least(self, claim: str, a: Estimate, threshold: float, *, paper: str, **row: Any) -> Result:
        """Record :func:`at_least`."""
        return self.add(claim, at_least(a, threshold, level=self.level), paper=paper, **row)

    def at_most(self, claim: str, a: Estimate, threshold: float, *, paper: str, **row: Any) -> Result:
        """Record :func:`at_most`."""
        return self.add(claim, at_most(a, threshold, level=self.level), paper=paper, **row)

    def increasing(self, claim: str, values: Sequence[Estimate] | Mapping[Any, Estimate], *, paper: str,
                   **row: Any) -> Result:
        """Record :func:`increasing`."""
        return self.add(claim, increasing(values, level=self.level), paper=paper, **row)

    def decreasing(self, claim: str, values: Sequence[Estimate] | Mapping[Any, Estimate], *, paper: str,
                   **row: Any) -> Result:
        """Record :func:`decreasing`."""
        return self.add(claim, decreasing(values, level=self.level), paper=paper, **row)

    def not_tested(self, claim: str, paper: str, why: str, *, seeds: int | None = None) -> Result:
        """Record a claim this run cannot test, and why."""
        return self.add(claim, Result(NOT_TESTED, "", why), paper=paper, seeds=seeds)

    def frame(self) -> pd.DataFrame:
        """The rows as a tidy frame with :data:`COLUMNS`."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def show(self) -> ClaimsTable:
        """The claims as a table coloured by verdict; its notebook output also carries the rows
        (in its metadata, under :data:`MIME_TYPE`) for the book's scorecard."""
        return ClaimsTable(self.frame())


def styled(frame: pd.DataFrame) -> Any:
    """A claims frame as a pandas Styler, the verdict cell coloured."""
    return (frame.style.map(lambda v: f"background-color: {COLOURS[v]}" if v in COLOURS else "", subset=["verdict"])
            .hide(axis="index"))


class ClaimsTable:
    """A chapter's claims as displayed: a coloured HTML table plus the rows as JSON."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        # The rows go in the output's metadata: a page builder renders the data, and would warn
        # about a mime type it does not know.
        rows = json.loads(self.frame.to_json(orient="records"))
        data = {"text/html": styled(self.frame).to_html(), "text/plain": self.frame.to_string(index=False)}
        return data, {MIME_TYPE: {"rows": rows}}

    def __repr__(self) -> str:
        return self.frame.to_string(index=False)


def notebook_rows(notebook: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims rows an executed notebook carries (every claims table it displayed, in order)."""
    rows = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("metadata", {}).get(MIME_TYPE) or output.get("data", {}).get(MIME_TYPE)
            if isinstance(payload, str):
                payload = json.loads(payload)
            if payload:
                rows.extend({column: row.get(column) for column in COLUMNS} for row in payload.get("rows", []))
    return rows


def counts(frame: pd.DataFrame) -> pd.Series:
    """Rows per verdict, every verdict listed (zero when absent)."""
    return frame["verdict"].value_counts().reindex(list(VERDICTS), fill_value=0).rename("claims")


def html_table(frame: pd.DataFrame) -> str:
    """A claims frame as a plain HTML table with inline colours (no stylesheet needed)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            style = f' style="background-color: {COLOURS[value]}"' if column == "verdict" and value in COLOURS else ""
            cells.append(f"<td{style}>{html.escape('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="claims">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body) + "\n</tbody>\n</table>"
