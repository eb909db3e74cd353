"""Self-healing: compare each app's desired replicas with what the agents report, and start a
`heal` rollout for every app that lacks healthy replicas.

A replica needs replacing when its container exited, went missing, turned unhealthy, or
sits on a node that is not ready, is draining, or has a NoExecute taint it does not tolerate.
The rollout's plan step decides what to stop and where the replacements go; an app that
already has a workflow running is left to it (its lock would make the heal wait anyway).
Apps that are deploying, failed or being deleted are not touched: a failed app needs a
person (update, rollback or delete).
"""

from __future__ import annotations

import logging

from django.db.models import Q

from hivemind.applications.models import App, Container
from hivemind.nodes.models import Node
from hivemind.nodes.selectors import node_lost
from hivemind.workflows import engine
from hivemind.workflows.models import ACTIVE_STATES, Workflow

log = logging.getLogger(__name__)


def replica_trouble(container: Container) -> str:
    """Why a live replica must be replaced, or '': it exited, went missing, turned unhealthy, or
    sits on a node that is not ready, is draining, or has a NoExecute taint it does not tolerate.
    Needs the container's node and revision loaded."""
    from hivemind.applications.scheduler import evicting_taint

    if container.state in (Container.State.EXITED, Container.State.MISSING):
        return container.state
    if container.health == Container.Health.UNHEALTHY:
        return "unhealthy"
    node = container.node
    if node is None or node_lost(node):
        return "node not ready"
    if node.status != Node.Status.READY:
        return ""  # a late heartbeat: the node may be back in a moment (see node_lost)
    if node.draining:
        return "node draining"
    taint = evicting_taint(node.taints, container.revision.spec.get("placement"))
    if taint is not None:
        return f"node taint {taint} not tolerated"
    return ""


def _needs_healing(app: App) -> str:
    """Why the app needs a heal rollout, or ''."""
    live = list(app.containers.exclude(state=Container.State.REMOVED).select_related("node", "revision"))
    broken = [(c, why) for c in live if (why := replica_trouble(c))]
    if broken:
        return f"{len(broken)} replica(s) down: " + ", ".join(f"{c.replica} ({why})" for c, why in broken[:5])
    slots = {c.replica for c in live if c.state == Container.State.RUNNING}
    missing = [slot for slot in range(app.replicas) if slot not in slots]
    if missing:
        return f"replica(s) {', '.join(map(str, missing[:5]))} not running"
    return ""


def reconcile_apps() -> list[int]:
    """Start heal rollouts where needed; the ids of the workflows started."""
    busy = set(
        Workflow.objects.filter(state__in=ACTIVE_STATES, subject__startswith="app:").values_list("subject", flat=True)
    )
    started = []
    for app in App.objects.filter(Q(status=App.Status.RUNNING) | Q(status=App.Status.DEGRADED)).select_related(
        "tenant", "revision"
    ):
        if f"app:{app.pk}" in busy or app.revision is None:
            continue
        reason = _needs_healing(app)
        if not reason:
            continue
        App.objects.filter(pk=app.pk).update(status=App.Status.DEGRADED, message=reason)
        workflow = engine.workflow_create(
            kind="app.rollout",
            tenant=app.tenant,
            params={"app": app.pk, "revision": app.revision_id, "replicas": app.replicas, "action": "heal"},
        )
        log.warning("app %s of %s: %s; healing with workflow %s", app.name, app.tenant.slug, reason, workflow.pk)
        started.append(workflow.pk)
    return started
