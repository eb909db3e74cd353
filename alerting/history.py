"""The series store window aggregations read: one SeriesSample per series and pass, shared by
every rule that reads that series (a thousand rules over one tenant's containers keep each
container's value once per pass, not once per rule), kept for the widest window of the enabled
rules (at most a week; pruned at each pass).

A process keeps what it read in memory and, at the next pass, reads only the rows written since
(by itself or by another worker: passes run one at a time, from beat, each writing its rows at
its own `now`). The memory is trusted only while the rows of its last pass are still in the
table (a database rolled back or replaced, time set back: it reads the whole window again).
"""

from __future__ import annotations

from collections import defaultdict, deque
from datetime import datetime, timedelta

from alerting.models import SeriesSample

Samples = dict[str, deque]


class SeriesStore:
    def __init__(self) -> None:
        self.series: dict[str, deque] = defaultdict(deque)
        self.high: datetime | None = None  # the `now` of the last pass this process read or wrote

    def load(self, *, now: datetime, window: int) -> Samples:
        """Every key's (timestamp, value) samples older than `now` and within `window` seconds."""
        since = now - timedelta(seconds=window)
        fresh = (
            self.high is not None and since <= self.high < now and SeriesSample.objects.filter(at=self.high).exists()
        )
        if fresh:
            rows = SeriesSample.objects.filter(at__gt=self.high, at__lt=now)
        else:
            self.series = defaultdict(deque)
            rows = SeriesSample.objects.filter(at__gte=since, at__lt=now)
        for key, at, value in rows.order_by("at").values_list("key", "at", "value").iterator(chunk_size=10000):
            self.series[key].append((at.timestamp(), value))
        oldest = since.timestamp()
        for key in list(self.series):
            samples = self.series[key]
            while samples and samples[0][0] < oldest:
                samples.popleft()
            if not samples:
                del self.series[key]
        return self.series

    def save(self, *, now: datetime, values: dict[str, float], window: int) -> None:
        """This pass's values (written, and kept in memory), and the rows beyond `window` dropped."""
        SeriesSample.objects.bulk_create(
            (SeriesSample(key=key, at=now, value=value) for key, value in values.items()), batch_size=5000
        )
        SeriesSample.objects.filter(at__lt=now - timedelta(seconds=window)).delete()
        stamp = now.timestamp()
        for key, value in values.items():
            self.series[key].append((stamp, value))
        self.high = now if values else None


store = SeriesStore()


def load_keys(keys: list[str], *, now: datetime, window: int) -> Samples:
    """The samples of some keys only, from the table (the preview: nothing kept in memory)."""
    found: Samples = defaultdict(deque)
    rows = SeriesSample.objects.filter(key__in=keys, at__gte=now - timedelta(seconds=window), at__lt=now)
    for key, at, value in rows.order_by("at").values_list("key", "at", "value"):
        found[key].append((at.timestamp(), value))
    return found
