"""Writes of the usage samples: what an agent's sampling pass saw, and their pruning."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from hivemind.applications.models import Container
from hivemind.nodes.models import Node
from observability.models import ContainerStat, NodeStat, NodeUsageSample, UsageSample


class ContainerUsage(NamedTuple):
    """What one container used, as an agent measured it (network and block: Docker's counters)."""

    container_name: str
    cpu_millis: int
    memory_bytes: int
    network_rx_bytes: int = 0
    network_tx_bytes: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0


class NodeUsage(NamedTuple):
    """A node's machine, as its agent read it."""

    cpu_used_ratio: float
    load1: float
    load5: float
    load15: float
    memory_total_bytes: int
    memory_available_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int


def node_usage_record(*, node_name: str, at: datetime, usage: NodeUsage) -> bool:
    """Replace the node's NodeStat; False when no node has that name."""
    node_id = Node.objects.filter(name=node_name).values_list("pk", flat=True).first()
    if node_id is None:
        return False
    NodeStat.objects.update_or_create(node_id=node_id, defaults={"at": at, **usage._asdict()})
    return True


def _figures(usage: ContainerUsage) -> dict:
    return {key: value for key, value in usage._asdict().items() if key != "container_name"}


STAT_FIELDS = [
    "at", "cpu_millis", "memory_bytes", "network_rx_bytes", "network_tx_bytes", "block_read_bytes", "block_write_bytes"
]  # fmt: skip


def usage_samples_record(*, node_name: str, at: datetime, usages: Sequence[ContainerUsage]) -> int:
    """Store one sampling pass of a node (its containers' rows in one insert, the node's total in
    one row, and each container's latest figures in ContainerStat, one upsert); returns the
    number of container rows stored.

    A sample's app and tenant are those of the Container row of the same name (Docker's labels
    could name an app deleted since): a container no replica owns any longer is not stored. A
    container deleted while the pass is stored (a replica stopped that moment) fails the pass's
    foreign keys: it is stored once more, without that container.
    """
    if not usages:
        return 0
    try:
        return _record_samples(node_name, at, usages)
    except IntegrityError:
        return _record_samples(node_name, at, usages)


@transaction.atomic
def _record_samples(node_name: str, at: datetime, usages: Sequence[ContainerUsage]) -> int:
    owners = {
        name: (app_id, tenant_id, pk, replica)
        for name, app_id, tenant_id, pk, replica in Container.objects.filter(
            name__in=[usage.container_name for usage in usages]
        ).values_list("name", "app_id", "tenant_id", "pk", "replica")
    }
    node_id = Node.objects.filter(name=node_name).values_list("pk", flat=True).first()
    rows = [
        UsageSample(
            at=at,
            node_id=node_id,
            app_id=owners[usage.container_name][0],
            tenant_id=owners[usage.container_name][1],
            container_name=usage.container_name,
            replica=owners[usage.container_name][3],
            cpu_millis=usage.cpu_millis,
            memory_bytes=usage.memory_bytes,
        )
        for usage in usages
        if usage.container_name in owners
    ]
    UsageSample.objects.bulk_create(rows)
    stats = [
        ContainerStat(container_id=owners[usage.container_name][2], at=at, **_figures(usage))
        for usage in usages
        if usage.container_name in owners
    ]
    ContainerStat.objects.bulk_create(
        stats, update_conflicts=True, unique_fields=["container"], update_fields=STAT_FIELDS
    )
    if rows and node_id is not None:
        NodeUsageSample.objects.create(
            at=at,
            node_id=node_id,
            cpu_millis=sum(row.cpu_millis for row in rows),
            memory_bytes=sum(row.memory_bytes for row in rows),
            containers=len(rows),
        )
    return len(rows)


def usage_samples_prune(*, now: datetime | None = None) -> int:
    """Delete the samples older than HIVEMIND_SAMPLE_RETENTION (one DELETE), and the rollups older
    than theirs; returns how many samples went."""
    from observability import rollups

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CONFIG.sample_retention)
    deleted, _ = UsageSample.objects.filter(at__lt=cutoff).delete()
    NodeUsageSample.objects.filter(at__lt=cutoff).delete()
    rollups.prune(now=now)
    return deleted
