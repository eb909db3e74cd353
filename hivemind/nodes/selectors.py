"""Reads about nodes: capacity against what their containers ask for."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from hivemind.nodes.models import Node

# A container still holds its node's resources until it is removed.
_HOLDS_RESOURCES = ~Q(containers__state="removed")


def nodes_with_allocation(queryset: QuerySet[Node] | None = None) -> QuerySet[Node]:
    """Nodes annotated with `allocated_cpu_millis`, `allocated_memory_bytes` and `container_count`:
    the sum of the requests of their containers that are not removed (one query, no N+1)."""
    queryset = Node.objects.all() if queryset is None else queryset
    return queryset.annotate(
        allocated_cpu_millis=Coalesce(Sum("containers__cpu_millis", filter=_HOLDS_RESOURCES), Value(0)),
        allocated_memory_bytes=Coalesce(Sum("containers__memory_bytes", filter=_HOLDS_RESOURCES), Value(0)),
        container_count=Count("containers", filter=_HOLDS_RESOURCES),
    )


def node_container_names(*, node: Node, limit: int = 10) -> list[str]:
    """Names of the containers that still hold the node (not removed), for messages."""
    from hivemind.applications.models import Container

    return list(
        Container.objects.filter(node=node)
        .exclude(state=Container.State.REMOVED)
        .order_by("name")
        .values_list("name", flat=True)[:limit]
    )


# What `Node.state` shows, as query conditions (the API's and the CLI's `state` filter).
NODE_STATES = {
    "ready": Q(status=Node.Status.READY, cordoned=False, draining=False),
    "not-ready": ~Q(status=Node.Status.READY),
    "cordoned": Q(status=Node.Status.READY, cordoned=True, draining=False),
    "draining": Q(status=Node.Status.READY, draining=True),
}


# A node whose agent missed this many heartbeats in a row is not ready (the nodes monitor).
MISSED_HEARTBEATS = 3
# A silent agent's node is lost (its replicas are replaced elsewhere, steps for it fail) only
# after this many missed heartbeats: twice what makes it not ready, so a machine that stalls
# for a few seconds under load flaps to not-ready without anything being moved.
LOST_AFTER_MISSED = 6


def lost_since() -> datetime:
    """Heartbeats older than this mean the node's agent is gone, not just late."""
    return timezone.now() - timedelta(seconds=LOST_AFTER_MISSED * settings.CONFIG.node_heartbeat)


def node_lost(node: Node) -> bool:
    """A not-ready node whose replicas must go elsewhere: its agent still beats (so Docker failed
    it: the agent's own judgement) or has been silent for LOST_AFTER_MISSED heartbeats.
    Not-ready with a heartbeat a little too old is a late agent: wait for it."""
    if node.status == Node.Status.READY:
        return False
    beat = node.last_heartbeat
    if beat is None or beat < lost_since():
        return True
    return beat >= timezone.now() - timedelta(seconds=MISSED_HEARTBEATS * settings.CONFIG.node_heartbeat)


def node_queue_down(queue: str) -> str | None:
    """For the workflow reconciler: why node.<name> will not be consumed. That is a question of
    its agent's heartbeats, not of the node's readiness: an agent whose Docker is slow still takes
    its steps (and they fail or retry on their own), while a step queued for an agent that
    stopped beating (for LOST_AFTER_MISSED heartbeats) would wait for ever."""
    if not queue.startswith("node."):
        return None
    name = queue.removeprefix("node.")
    node = Node.objects.filter(name=name).values("status", "last_heartbeat").first()
    if node is None:
        return f"node {name} is not registered"
    if node["status"] != Node.Status.READY and (
        node["last_heartbeat"] is None or node["last_heartbeat"] < lost_since()
    ):
        silent = LOST_AFTER_MISSED * settings.CONFIG.node_heartbeat
        return f"node {name} is not ready and its agent has not beaten for {silent} s"
    return None
