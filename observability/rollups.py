"""Rolled-up usage history: per app replica, 1-minute periods made from the raw samples and
10-minute periods made from the 1-minute ones, so charts over days and anomaly baselines read
a bounded number of rows (docs/observability.md, "History", has the rows and bytes per replica
per day).

`rollup(now)` runs from beat every minute on the control queue. Only finished periods are
rolled up, LATE seconds after their end (an agent's pass is stored a moment after it is taken),
each once, from the one after the last written; a period is computed whole and written with an
upsert, so a pass run twice at once, or after a crash, writes the same rows. A pass catches up
at most CATCH_UP 1-minute periods (and the 10-minute ones they finish).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, Max, Min
from django.db.models.functions import TruncMinute
from django.utils import timezone

from observability.models import UsageRollup, UsageSample

MINUTE, TEN = UsageRollup.Resolution.MINUTE, UsageRollup.Resolution.TEN_MINUTES
LATE = timedelta(seconds=30)
CATCH_UP = 180  # 1-minute periods per pass at most (three hours)
FIGURES = ["samples", "cpu_millis_avg", "cpu_millis_max", "memory_bytes_avg", "memory_bytes_max", "tenant", "node"]


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=moment.tzinfo)


def _start(resolution: int, sources) -> datetime | None:
    """The first period still to roll up: the one after the last written, or after a gap the
    period of the first source row since then (None: nothing to roll up)."""
    last = UsageRollup.objects.filter(resolution=resolution).aggregate(last=Max("at"))["last"]
    if last is not None:
        sources = sources.filter(at__gte=last + timedelta(seconds=resolution))
    first = sources.aggregate(first=Min("at"))["first"]
    return _floor(first, resolution) if first is not None else None


def _write(rows: list[UsageRollup]) -> int:
    UsageRollup.objects.bulk_create(
        rows, batch_size=2000, update_conflicts=True,
        unique_fields=["resolution", "app", "replica", "at"], update_fields=FIGURES,
    )  # fmt: skip
    return len(rows)


def _minutes(start: datetime, end: datetime) -> int:
    periods = (
        UsageSample.objects.filter(at__gte=start, at__lt=end, replica__isnull=False)
        .annotate(period=TruncMinute("at"))
        .values("period", "app", "replica")
        .annotate(
            tenant=Max("tenant"), node=Max("node"), samples=Count("id"),
            cpu_avg=Avg("cpu_millis"), cpu_max=Max("cpu_millis"),
            memory_avg=Avg("memory_bytes"), memory_max=Max("memory_bytes"),
        )
        .order_by()
    )  # fmt: skip
    return _write(
        [
            UsageRollup(
                resolution=MINUTE,
                at=p["period"],
                tenant_id=p["tenant"],
                app_id=p["app"],
                replica=p["replica"],
                node_id=p["node"],
                samples=p["samples"],
                cpu_millis_avg=p["cpu_avg"],
                cpu_millis_max=p["cpu_max"],
                memory_bytes_avg=p["memory_avg"],
                memory_bytes_max=p["memory_max"],
            )
            for p in periods
        ]
    )


def _ten_minutes(start: datetime, end: datetime) -> int:
    """10-minute periods from the 1-minute ones: averages weighted by their samples, maxima of
    maxima, the node of the last minute."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    minutes = UsageRollup.objects.filter(resolution=MINUTE, at__gte=start, at__lt=end).order_by("at")
    for at, app_id, replica, *figures in minutes.values_list("at", "app_id", "replica", *FIGURES):
        groups[(_floor(at, TEN), app_id, replica)].append(figures)
    rows = []
    for (period, app_id, replica), rows_of in groups.items():
        samples = sum(f[0] for f in rows_of)
        rows.append(
            UsageRollup(
                resolution=TEN,
                at=period,
                app_id=app_id,
                replica=replica,
                samples=samples,
                tenant_id=rows_of[-1][5],
                node_id=rows_of[-1][6],
                cpu_millis_avg=sum(f[1] * f[0] for f in rows_of) / samples,
                cpu_millis_max=max(f[2] for f in rows_of),
                memory_bytes_avg=sum(f[3] * f[0] for f in rows_of) / samples,
                memory_bytes_max=max(f[4] for f in rows_of),
            )
        )
    return _write(rows)


def rollup(*, now: datetime | None = None) -> dict[str, int]:
    """Roll up what finished since the last pass; returns the rows written per resolution."""
    now = now or timezone.now()
    written = {"1m": 0, "10m": 0}
    start = _start(MINUTE, UsageSample.objects.filter(replica__isnull=False))
    if start is not None:
        end = min(_floor(now - LATE, MINUTE), start + timedelta(seconds=MINUTE * CATCH_UP))
        if end > start:
            written["1m"] = _minutes(start, end)
    start = _start(TEN, UsageRollup.objects.filter(resolution=MINUTE))
    if start is not None:
        end = _floor(now - LATE, TEN)
        if end > start:
            written["10m"] = _ten_minutes(start, end)
    return written


def prune(*, now: datetime | None = None) -> int:
    """Delete the periods older than their retention; returns how many went."""
    now = now or timezone.now()
    config = settings.CONFIG
    deleted = 0
    for resolution, keep in ((MINUTE, config.rollup_retention_1m), (TEN, config.rollup_retention_10m)):
        gone, _ = UsageRollup.objects.filter(resolution=resolution, at__lt=now - timedelta(seconds=keep)).delete()
        deleted += gone
    return deleted
