"""Thin Celery tasks of the networking package."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import shared_task
from django.conf import settings
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)


@shared_task(name="networking.sync", ignore_result=True, acks_late=False, expires=60)
def sync() -> dict:
    """On node.<name>: one reconcile pass of this node's networks now (a peer joined one of them)."""
    from hivemind.nodes.models import Node
    from hivemind.nodes.runtime import docker_client
    from networking.node import NodeNetworking

    node = Node.objects.get(name=settings.NODE_NAME)
    client = docker_client()
    try:
        return NodeNetworking(node=node, client=client).reconcile()
    finally:
        client.close()


def sync_nodes(names: Iterable[str]) -> None:
    """Ask these nodes' agents for a pass now; a lost message only delays them to their next beat."""
    for name in names:
        try:
            sync.apply_async(queue=f"node.{name}")
        except OperationalError as exc:
            log.warning("could not ask node %s to sync its networks: %s", name, exc)
