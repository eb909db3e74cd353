"""The Celery tasks of nodes. Thin: each one calls one service."""

from __future__ import annotations

from celery import shared_task

from hivemind.nodes import services


@shared_task(name="nodes.monitor", ignore_result=True)
def monitor() -> list[str]:
    """Beat, on the control queue: ready nodes that missed three heartbeats become not-ready."""
    return services.nodes_mark_unresponsive()
