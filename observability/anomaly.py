"""Anomaly detection on one series: a robust baseline learnt from its own history, a band around
it, and a verdict when observations leave the band for N samples in a row.

The baseline of the newest point is computed from an older stretch of the history, `window`
points that end `gap` points before it: the points being judged never teach the baseline, so a
spike is judged against what came before it, and a slow drift is caught before the baseline has
followed it (a median lags half its window: with the defaults, a ramp is judged against the level
it had 90 points earlier). Centre: the median; spread: the median absolute deviation scaled to a
standard deviation (1.4826 x MAD), never below `floor_ratio` of the centre or `floor` (a flat
series, an idle container's CPU, has no spread: one millicore would otherwise be an anomaly).
The band is centre +- k x spread. With `season` (points per season, e.g. 1440 for a day of
1-minute points) and at least one season of history, the centre follows the same moment of the
previous seasons (the median of those points and their neighbours) and the spread is taken from
the differences to it: a daily peak is not an anomaly, a peak at an unusual hour is.

A level shift that lasts becomes the new normal once the baseline has moved (gap + window / 2
points); the alert then resolves. Defaults and their measured precision and recall on generated
series (spikes, level shifts, slow drifts, normal noise): docs/observability.md, bench/anomaly.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Params:
    window: int = 120  # points the baseline is learnt from
    gap: int = 30  # newest points left out of it (fewer while the history is short: a third of it)
    min_history: int = 20  # baseline points needed before any verdict
    k: float = 4.0  # band half-width, in spreads
    consecutive: int = 3  # observations in a row outside the band to be anomalous
    floor: float = 1.0  # smallest spread, in the series' unit
    floor_ratio: float = 0.02  # smallest spread, as a share of the centre
    season: int = 0  # points per season (0: none)

    def check(self) -> None:
        problems = []
        if not 10 <= self.window <= 100_000:
            problems.append(f"window: expected 10 to 100000 points, got {self.window}")
        if not 0 <= self.gap <= 10_000:
            problems.append(f"gap: expected 0 to 10000 points, got {self.gap}")
        if not 5 <= self.min_history <= self.window:
            problems.append(f"min_history: expected 5 to the window ({self.window}), got {self.min_history}")
        if not 1 <= self.k <= 20:
            problems.append(f"k: expected 1 to 20, got {self.k}")
        if not 1 <= self.consecutive <= 100:
            problems.append(f"consecutive: expected 1 to 100, got {self.consecutive}")
        if self.floor < 0 or not 0 <= self.floor_ratio <= 1:
            problems.append("floor and floor_ratio: expected floor >= 0 and 0 <= floor_ratio <= 1")
        if self.season and not 10 <= self.season <= 100_000:
            problems.append(f"season: expected 0 or 10 to 100000 points, got {self.season}")
        if problems:
            raise ValueError("; ".join(problems))


DEFAULTS = Params()


@dataclass(frozen=True)
class Band:
    centre: float
    spread: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Verdict:
    anomalous: bool
    observed: float
    band: Band | None  # None: not enough history yet
    streak: int  # newest observations in a row outside the band
    since: int | None  # index of the first of them, when anomalous

    def explain(self) -> str:
        if self.band is None:
            return "learning: not enough history for a baseline yet"
        b = self.band
        where = "above" if self.observed > b.upper else "below" if self.observed < b.lower else "inside"
        return (
            f"observed {self.observed:g} is {where} the band {b.lower:g}..{b.upper:g} "
            f"(baseline {b.centre:g} +- {b.upper - b.centre:g}) for {self.streak} sample(s) in a row"
        )


def _seasonal(values: Sequence[float], index: int, season: int) -> float | None:
    """The median of the same moment (+-2 points) of the previous seasons, or None."""
    points = [
        values[j]
        for back in range(1, 8)
        for j in range(index - back * season - 2, index - back * season + 3)
        if 0 <= j < len(values)
    ]
    return statistics.median(points) if points else None


def band(values: Sequence[float], index: int, params: Params = DEFAULTS, seasonal: dict | None = None) -> Band | None:
    """The band for values[index] learnt from values before it, or None while learning.
    `seasonal` caches the seasonal expectations between calls on the same series."""
    gap = min(params.gap, index // 3)
    end = index - gap
    start = max(0, end - params.window)
    if end - start < params.min_history:
        return None
    if params.season and index >= params.season:
        cache = {} if seasonal is None else seasonal

        def expected(j: int) -> float | None:
            if j not in cache:
                cache[j] = _seasonal(values, j, params.season)
            return cache[j]

        residuals = [values[j] - e for j in range(start, end) if (e := expected(j)) is not None]
        here = expected(index)
        if here is not None and len(residuals) >= params.min_history:
            shift = statistics.median(residuals)
            spread = MAD_TO_SIGMA * statistics.median(abs(r - shift) for r in residuals)
            centre = here + shift
            return _band(centre, spread, params)
    history = values[start:end]
    centre = statistics.median(history)
    spread = MAD_TO_SIGMA * statistics.median(abs(v - centre) for v in history)
    return _band(centre, spread, params)


def _band(centre: float, spread: float, params: Params) -> Band:
    spread = max(spread, params.floor, params.floor_ratio * abs(centre))
    return Band(centre, spread, centre - params.k * spread, centre + params.k * spread)


def judge(values: Sequence[float], params: Params = DEFAULTS) -> Verdict:
    """The verdict on the newest value of a series (oldest first)."""
    if not values:
        raise ValueError("judge needs at least one value")
    streak = 0
    newest_band = None
    seasonal: dict = {}
    for index in range(len(values) - 1, -1, -1):
        found = band(values, index, params, seasonal)
        if index == len(values) - 1:
            newest_band = found
        if found is None or found.lower <= values[index] <= found.upper:
            break
        streak += 1
        if streak >= params.consecutive:
            break
    anomalous = streak >= params.consecutive
    since = len(values) - streak if anomalous else None
    return Verdict(anomalous, values[-1], newest_band, streak, since)


def scan(values: Sequence[float], params: Params = DEFAULTS) -> list[tuple[int, int]]:
    """Every episode in a whole series: (index it was flagged at, index it ended at, exclusive),
    as a streaming evaluation would raise and resolve them (for the benchmark and tests)."""
    episodes, streak, start = [], 0, None
    seasonal: dict = {}
    for index in range(len(values)):
        found = band(values, index, params, seasonal)
        outside = found is not None and not found.lower <= values[index] <= found.upper
        streak = streak + 1 if outside else 0
        if start is None and streak >= params.consecutive:
            start = index
        elif start is not None and not outside:
            episodes.append((start, index))
            start = None
    if start is not None:
        episodes.append((start, len(values)))
    return episodes
