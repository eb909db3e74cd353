"""Writes of the usage samples: what an agent's sampling pass saw, and their pruning."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hivemind.applications.models import Container
from hivemind.nodes.models import Node
from observability.models import NodeUsageSample, UsageSample


class ContainerUsage(NamedTuple):
    """What one container used, as an agent measured it."""

    container_name: str
    cpu_millis: int
    memory_bytes: int


@transaction.atomic
def usage_samples_record(*, node_name: str, at: datetime, usages: Sequence[ContainerUsage]) -> int:
    """Store one sampling pass of a node (its containers' rows in one insert, and the node's
    total in one row); returns the number of container rows stored.

    A sample's app and tenant are those of the Container row of the same name (Docker's labels
    could name an app deleted since): a container no replica owns any longer is not stored.
    """
    if not usages:
        return 0
    owners = {
        name: (app_id, tenant_id)
        for name, app_id, tenant_id in Container.objects.filter(
            name__in=[usage.container_name for usage in usages]
        ).values_list("name", "app_id", "tenant_id")
    }
    node_id = Node.objects.filter(name=node_name).values_list("pk", flat=True).first()
    rows = [
        UsageSample(
            at=at,
            node_id=node_id,
            app_id=owners[usage.container_name][0],
            tenant_id=owners[usage.container_name][1],
            container_name=usage.container_name,
            cpu_millis=usage.cpu_millis,
            memory_bytes=usage.memory_bytes,
        )
        for usage in usages
        if usage.container_name in owners
    ]
    UsageSample.objects.bulk_create(rows)
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
    """Delete the samples older than HIVEMIND_SAMPLE_RETENTION (one DELETE); returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.CONFIG.sample_retention)
    deleted, _ = UsageSample.objects.filter(at__lt=cutoff).delete()
    NodeUsageSample.objects.filter(at__lt=cutoff).delete()
    return deleted
