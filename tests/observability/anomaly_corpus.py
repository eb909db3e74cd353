"""Generated series with injected anomalies, and the precision and recall of the detector on
them: what tests/observability/test_anomaly.py asserts and bench/anomaly.py reports.

Each series: normal noise around a level (10 to 1000, spread 2 % to 10 % of it), 600 points;
a quarter clean, a quarter with a spike (3 to 10 points, 8 to 20 spreads up or down), a quarter
with a level shift (6 to 15 spreads, lasting), a quarter with a slow drift (a ramp of 12 to 20
spreads over 120 to 200 points, then staying). An injected change counts as detected when an
episode starts between its start and its deadline (a spike: its end + 3; a shift: start + 60; a
drift: its end + 30); an episode starting anywhere else that is not within the disturbance an
injected change leaves in the baseline (gap + window points after it ends) is a false alarm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from observability.anomaly import DEFAULTS, Params, scan

KINDS = ("clean", "spike", "shift", "drift")


@dataclass
class Series:
    kind: str
    values: list[float]
    start: int = 0  # of the injected change
    end: int = 0  # its last point + 1
    deadline: int = 0  # detected only if flagged by then


def corpus(*, seed: int = 7, count: int = 200, length: int = 600) -> list[Series]:
    rng = random.Random(seed)
    made = []
    for number in range(count):
        level = rng.uniform(10, 1000)
        sigma = level * rng.uniform(0.02, 0.1)
        values = [rng.gauss(level, sigma) for _ in range(length)]
        kind = KINDS[number % len(KINDS)]
        series = Series(kind, values)
        if kind != "clean":
            start = rng.randint(200, 400)
            sign = rng.choice((1, -1))
            if kind == "spike":
                end = start + rng.randint(3, 10)
                size = sign * rng.uniform(8, 20) * sigma
                for i in range(start, end):
                    values[i] += size
                deadline = end + 3
            elif kind == "shift":
                end = length
                size = sign * rng.uniform(6, 15) * sigma
                for i in range(start, length):
                    values[i] += size
                deadline = start + 60
            else:
                span = rng.randint(120, 200)
                end = start + span
                total = sign * rng.uniform(12, 20) * sigma
                for i in range(start, length):
                    values[i] += total * min(1.0, (i - start) / span)
                deadline = end + 30
            series.start, series.end, series.deadline = start, end, deadline
        made.append(series)
    return made


@dataclass
class Score:
    events: int
    detected: int
    false_alarms: int
    delays: list[int]  # points from an injected change's start to its detection
    per_kind: dict[str, tuple[int, int]]  # kind -> (detected, events)

    @property
    def recall(self) -> float:
        return self.detected / self.events if self.events else 1.0

    @property
    def precision(self) -> float:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else 1.0


def score(series: list[Series], params: Params = DEFAULTS) -> Score:
    events = detected = false_alarms = 0
    delays: list[int] = []
    per_kind: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS if kind != "clean"}
    for one in series:
        episodes = scan(one.values, params)
        if one.kind == "clean":
            false_alarms += len(episodes)
            continue
        events += 1
        per_kind[one.kind][1] += 1
        hits = [start for start, _ in episodes if one.start <= start <= one.deadline]
        if hits:
            detected += 1
            per_kind[one.kind][0] += 1
            delays.append(hits[0] - one.start)
        disturbed = one.end + params.gap + params.window
        false_alarms += sum(1 for start, _ in episodes if not one.start <= start <= disturbed)
    return Score(events, detected, false_alarms, delays, {k: (v[0], v[1]) for k, v in per_kind.items()})
