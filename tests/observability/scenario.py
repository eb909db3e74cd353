"""Usage samples with known values, and what node_usage/app_usage must make of them.

Shared by the PostgreSQL test (test_selectors.py) and the SQLite one, which runs `check()` in a
`manage.py shell` on an embedded database (the selectors write SQL per vendor)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import mean

from django.utils import timezone

from hivemind.applications.models import App
from hivemind.nodes.models import Node
from observability.models import NodeUsageSample, UsageSample
from observability.selectors import Point, app_usage, node_usage

MiB = 2**20


@dataclass
class Scenario:
    node1: Node
    node2: Node
    web: App
    db: App
    start: datetime  # a 300 s boundary, 15 minutes ago


def build(tenant) -> Scenario:
    """node1 runs web-1, web-2 (app web) and db-1 (app db); node2 runs web-3.

    Bucket `start` (60 s): web-1 twice (100, 300), web-2 once (50), db-1 once at its last
    microsecond (7), web-3 once (1000). Bucket start+60 s: nothing. Bucket start+120 s: web-1
    once, exactly at the bucket's first instant (400). Memory is cpu x 10 MiB throughout, which
    takes web-3 past 2**31 bytes. One sample of node1 is 61 minutes old: outside every window.

    The nodes' own rows (one per sampling pass, what node_usage reads): node1 passes at
    start+5 s (157), start+35 s (357), start+120 s (400) and 61 minutes ago; node2 at start+20 s.
    """
    now = timezone.now()
    epoch = int(now.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % 300 - 900, tz=UTC)
    node1 = Node.objects.create(name="usage-node-1")
    node2 = Node.objects.create(name="usage-node-2")
    web = App.objects.create(tenant=tenant, name="usage-web")
    db = App.objects.create(tenant=tenant, name="usage-db")

    def sample(node, app, name, at, cpu):
        return UsageSample(
            at=at, node=node, tenant=tenant, app=app, container_name=name, cpu_millis=cpu, memory_bytes=cpu * 10 * MiB
        )

    s = timedelta(seconds=1)
    UsageSample.objects.bulk_create(
        [
            sample(node1, web, "web-1", start + 5 * s, 100),
            sample(node1, web, "web-1", start + 35 * s, 300),
            sample(node1, web, "web-2", start + 10 * s, 50),
            sample(node1, db, "db-1", start + 60 * s - timedelta(microseconds=1), 7),
            sample(node2, web, "web-3", start + 20 * s, 1000),
            sample(node1, web, "web-1", start + 120 * s, 400),
            sample(node1, web, "web-1", now - timedelta(minutes=61), 9999),
        ]
    )
    NodeUsageSample.objects.bulk_create(
        NodeUsageSample(at=at, node=node, cpu_millis=cpu, memory_bytes=cpu * 10 * MiB, containers=3)
        for node, at, cpu in [
            (node1, start + 5 * s, 157),
            (node1, start + 35 * s, 357),
            (node1, start + 120 * s, 400),
            (node1, now - timedelta(minutes=61), 9999),
            (node2, start + 20 * s, 1000),
        ]
    )
    return Scenario(node1, node2, web, db, start)


def point(at: datetime, cpu: float) -> Point:
    return Point(at, round(cpu), round(cpu * 10 * MiB))


def check(sc: Scenario) -> None:
    minute = timedelta(seconds=60)
    web1_first = mean([100, 300])  # the mean of web-1's two samples, not their sum

    assert node_usage([sc.node1.pk, sc.node2.pk, 999_999]) == {
        sc.node1.pk: [point(sc.start, mean([157, 357])), point(sc.start + 2 * minute, 400)],  # passes averaged
        sc.node2.pk: [point(sc.start, 1000)],
        999_999: [],
    }
    assert app_usage([sc.web.pk, sc.db.pk]) == {
        sc.web.pk: [point(sc.start, web1_first + 50 + 1000), point(sc.start + 2 * minute, 400)],
        sc.db.pk: [point(sc.start, 7)],
    }
    # One 5-minute bucket: node1's three passes averaged together; web-1's three samples likewise.
    assert node_usage([sc.node1.pk], bucket=300) == {sc.node1.pk: [point(sc.start, mean([157, 357, 400]))]}
    assert app_usage([sc.db.pk, sc.web.pk], bucket=300)[sc.web.pk] == [
        point(sc.start, mean([100, 300, 400]) + 50 + 1000)
    ]
    # The last 10 minutes hold none of them (start is 15 minutes ago)...
    assert node_usage([sc.node1.pk], minutes=10) == {sc.node1.pk: []}
    # ...and the last 2 hours hold the 61-minute-old sample too, in a bucket of its own.
    assert len(node_usage([sc.node1.pk], minutes=120)[sc.node1.pk]) == 3
    assert node_usage([]) == {}
