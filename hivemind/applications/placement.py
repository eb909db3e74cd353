"""Where new replicas go: the scheduler over the nodes as the database knows them.

Called by the `apps.plan` step while it holds the cluster-wide scheduling lock, so two
rollouts never place onto the same free capacity.
"""

from __future__ import annotations

from hivemind.applications import scheduler
from hivemind.applications.models import App
from hivemind.nodes.models import Node


def _with_volume_node(app: App, spec: dict) -> dict:
    """The spec's placement, plus the node its node-local volumes live on (storage/mounts.py)."""
    from hivemind.applications.spec import NODE_NAME_LABEL
    from hivemind.applications.steps import Unschedulable
    from storage.mounts import required_labels, required_node

    placement = spec["placement"]
    needed = required_labels(app.tenant_id, spec)  # what attaching its shared volumes takes
    if needed:
        selector = dict(placement.get("node_selector") or {})
        for key, value in needed.items():
            if selector.get(key, value) != value:
                raise Unschedulable(f"app {app.name} mounts volumes that need {key}={value}, but its placement asks "
                                    f"for {key}={selector[key]}")  # fmt: skip
            selector[key] = value
        placement = {**placement, "node_selector": selector}
    node = required_node(app.tenant_id, spec)
    if node is None:
        return placement
    selector = dict(placement.get("node_selector") or {})
    if selector.get(NODE_NAME_LABEL, node) != node:
        raise Unschedulable(
            f"app {app.name} must run on node {node}, where its volumes are, but its placement asks for "
            f"{selector[NODE_NAME_LABEL]}"
        )
    selector[NODE_NAME_LABEL] = node
    return {**placement, "node_selector": selector}


def _for_slot(app: App, base: dict, spec: dict, slot: int) -> dict:
    """`base` plus what replica index `slot`'s template volumes require (storage/mounts.py)."""
    from hivemind.applications.steps import Unschedulable
    from storage.mounts import slot_placement

    try:
        needed = slot_placement(app, spec, slot)
    except ValueError as exc:
        raise Unschedulable(f"cannot place replica {slot} of {app.name}: {exc}") from None
    if not needed:
        return base
    selector = dict(base.get("node_selector") or {})
    for key, value in needed.items():
        if selector.get(key, value) != value:
            raise Unschedulable(
                f"replica {slot} of {app.name} must run where its volumes are ({key}={value}), but its "
                f"placement asks for {key}={selector[key]}"
            )
        selector[key] = value
    return {**base, "node_selector": selector}


def place_replicas(app: App, spec: dict, count: int, slots: list[int] | None = None) -> list[Node]:
    """Nodes for `count` new replicas of `app` (replica indexes `slots`, default 0..count-1);
    Unschedulable explains why one cannot go anywhere."""
    from hivemind.applications.steps import Unschedulable

    if count == 0:
        return []
    slots = list(slots) if slots is not None else list(range(count))
    base = _with_volume_node(app, spec)
    shared = scheduler.Placement.from_spec(base)
    requests = [
        scheduler.Request(
            tenant=app.tenant.slug,
            app=app.name,
            cpu_millis=spec["resources"]["cpu"],
            memory_bytes=spec["resources"]["memory"],
            isolation=app.tenant.isolation_level,
            placement=scheduler.Placement.from_spec(_for_slot(app, base, spec, slot))
            if spec.get("volume_templates")
            else shared,
            replica=slot,
        )
        for slot in slots
    ]
    decisions = scheduler.place(requests, scheduler.nodes_for_scheduling())
    unplaced = [decision for decision in decisions if not decision.placed]
    if unplaced:
        raise Unschedulable(
            f"cannot place {len(unplaced)} of {count} new replica(s) of {app.name}: {unplaced[0].explanation}"
        )
    nodes = Node.objects.in_bulk([decision.node_id for decision in decisions])
    return [nodes[decision.node_id] for decision in decisions]
