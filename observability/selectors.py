"""Reads of the usage samples, shaped for charts: one point per time bucket."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.db import connection
from django.db.models import Avg, BigIntegerField, F, Func
from django.utils import timezone

from observability.models import ContainerStat, NodeStat, NodeUsageSample, UsageRollup, UsageSample


class Point(NamedTuple):
    at: datetime  # the start of a time bucket
    cpu_millis: int
    memory_bytes: int


class _EpochBucket(Func):
    """The start of the `bucket`-second interval holding a datetime, in seconds since the epoch.

    Written per vendor because Django's Trunc functions only know calendar units (a minute,
    an hour), and charts want any bucket size; buckets align on multiples of `bucket` seconds
    since the epoch, so 60 s buckets start on whole UTC minutes.
    """

    output_field = BigIntegerField()

    def __init__(self, expression, *, bucket: int):
        super().__init__(expression)
        self.bucket = int(bucket)

    def as_sql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.source_expressions[0])
        b = self.bucket
        if connection.vendor == "postgresql":
            return f"(FLOOR(EXTRACT(EPOCH FROM {sql}) / {b}) * {b})::bigint", params
        if connection.vendor == "sqlite":
            # Django stores aware datetimes as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'. The fraction
            # is cut off first: SQLite rounds it to milliseconds, and 59.9999 s would become the
            # next minute (PostgreSQL's FLOOR keeps it in its own).
            return f"(CAST(strftime('%%s', substr({sql}, 1, 19)) AS INTEGER) / {b} * {b})", params
        raise NotImplementedError(f"usage buckets are not written for {connection.vendor}")


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive whole number, got {value!r}")
    return value


def node_usage(node_ids: Iterable[int], *, minutes: int = 60, bucket: int = 60) -> dict[int, list[Point]]:
    """CPU and memory of each node's managed containers over the last `minutes`, per `bucket` seconds:
    the mean of the node's sampling passes in each bucket (a pass holds the sum over its
    containers), read from the per-pass rows in one query.

    Every id asked for is a key (an empty list when it has no samples); buckets without a
    sample are left out, so a chart shows a gap rather than a false zero.
    """
    _positive("minutes", minutes)
    _positive("bucket", bucket)
    ids = sorted({int(i) for i in node_ids})
    if not ids:
        return {}
    rows = (
        NodeUsageSample.objects.filter(node_id__in=ids, at__gte=timezone.now() - timedelta(minutes=minutes))
        .values("node_id", bucket_start=_EpochBucket("at", bucket=bucket))
        .annotate(cpu=Avg("cpu_millis"), memory=Avg("memory_bytes"))
        .order_by("node_id", "bucket_start")
    )
    points: dict[int, list[Point]] = {i: [] for i in ids}
    for row in rows:
        at = datetime.fromtimestamp(int(row["bucket_start"]), tz=UTC)
        points[row["node_id"]].append(Point(at, round(row["cpu"]), round(row["memory"])))
    return points


def app_usage(app_ids: Iterable[int], *, minutes: int = 60, bucket: int = 60) -> dict[int, list[Point]]:
    """CPU and memory of each app's containers (all its replicas, on any node) over the last
    `minutes`, per `bucket` seconds, in one query: per bucket, each container's mean, summed.

    The mean per container first, so that a container sampled more often in a bucket does not
    weigh more than its neighbours; then the sum, which is what the app used. Every id asked
    for is a key; buckets without a sample are left out.
    """
    _positive("minutes", minutes)
    _positive("bucket", bucket)
    ids = sorted({int(i) for i in app_ids})
    if not ids:
        return {}
    since = timezone.now() - timedelta(minutes=minutes)
    per_container = (
        UsageSample.objects.filter(app_id__in=ids, at__gte=since)
        .order_by()
        .values(owner=F("app_id"), bucket_start=_EpochBucket("at", bucket=bucket), container=F("container_name"))
        .annotate(cpu=Avg("cpu_millis"), memory=Avg("memory_bytes"))
    )
    inner_sql, params = per_container.query.sql_with_params()
    q = connection.ops.quote_name
    owner, start, cpu, memory = q("owner"), q("bucket_start"), q("cpu"), q("memory")
    columns, group = f"{owner}, {start}, SUM({cpu}), SUM({memory})", f"{owner}, {start}"
    # The per-container means in a subquery, summed outside it: the ORM cannot aggregate an
    # aggregate. Names are quoted constants and the inner SQL Django's own, with its parameters.
    sql = f"SELECT {columns} FROM ({inner_sql}) per_container GROUP BY {group} ORDER BY {group}"  # noqa: S608
    points: dict[int, list[Point]] = {i: [] for i in ids}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for owner_id, epoch, cpu_sum, memory_sum in cursor.fetchall():
            points[owner_id].append(
                Point(datetime.fromtimestamp(int(epoch), tz=UTC), round(cpu_sum), round(memory_sum))
            )
    return points


def container_stats(container_ids: Iterable[int]) -> dict[int, ContainerStat]:
    """The latest sampled figures of these containers (ids the caller has already scoped), by id."""
    return {stat.container_id: stat for stat in ContainerStat.objects.filter(container_id__in=list(container_ids))}


def node_stat(node_id: int) -> NodeStat | None:
    """What the node's agent last read of its machine, or None (sampling off, or not yet)."""
    return NodeStat.objects.filter(node_id=node_id).first()


# Long windows read the rollups (observability/rollups.py): (hours, resolution, bucket seconds).
HISTORY_WINDOWS = {
    "24h": (24, UsageRollup.Resolution.MINUTE, 600),
    "7d": (168, UsageRollup.Resolution.TEN_MINUTES, 3600),
}


def app_usage_history(app_id: int, *, hours: int, resolution: int, bucket: int) -> list[Point]:
    """What an app used over the last `hours`, from its replicas' rollups of `resolution`, per
    `bucket` seconds: each replica's average (weighted by its samples) and maximum memory, then
    summed over the replicas, as app_usage does for the raw samples."""
    _positive("hours", hours)
    _positive("bucket", bucket)
    since = timezone.now() - timedelta(hours=hours)
    rows = UsageRollup.objects.filter(app_id=app_id, resolution=resolution, at__gte=since).values_list(
        "at", "replica", "samples", "cpu_millis_avg", "memory_bytes_avg"
    )
    per_replica: dict[tuple[int, int], list[float]] = {}
    for at, replica, samples, cpu, memory in rows:
        epoch = int(at.timestamp())
        sums = per_replica.setdefault((epoch - epoch % bucket, replica), [0, 0.0, 0.0])
        sums[0] += samples
        sums[1] += cpu * samples
        sums[2] += memory * samples
    totals: dict[int, list[float]] = {}
    for (start, _replica), (samples, cpu, memory) in per_replica.items():
        total = totals.setdefault(start, [0.0, 0.0])
        total[0] += cpu / samples
        total[1] += memory / samples
    return [
        Point(datetime.fromtimestamp(start, tz=UTC), round(cpu), round(memory))
        for start, (cpu, memory) in sorted(totals.items())
    ]
