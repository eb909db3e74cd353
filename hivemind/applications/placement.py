"""Where new replicas go: the scheduler over the nodes as the database knows them."""

from __future__ import annotations

from hivemind.applications.models import App


def place_replicas(app: App, spec: dict, count: int):
    from hivemind.applications import scheduler
    from hivemind.applications.steps import Unschedulable
    from hivemind.nodes.models import Node

    raise NotImplementedError((scheduler, Unschedulable, Node))
