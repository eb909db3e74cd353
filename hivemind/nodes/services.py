"""Writes about nodes: what agents report (registration, heartbeats, their containers), what the
monitor concludes when they fall silent, and what platform staff change (labels, taints,
cordon, drain, remove).

Agents and the monitor write only the columns they own with single UPDATE statements, so a
heartbeat never undoes a label change made at the same moment; staff operations lock the
node row for their read-modify-write of labels and taints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hivemind.core.errors import Conflict
from hivemind.nodes import selectors
from hivemind.nodes.labels import LabelError, check_key, check_value
from hivemind.nodes.models import Node, TaintEffect
from hivemind.nodes.selectors import MISSED_HEARTBEATS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeFacts:
    """What an agent learns from its Docker daemon and its machine."""

    docker_version: str
    os: str
    arch: str
    cpu_millis: int
    memory_bytes: int
    disk_bytes: int


@dataclass(frozen=True)
class ContainerReport:
    """One managed container as the node's Docker shows it."""

    name: str
    docker_id: str
    state: str  # a Container.State value
    health: str  # a Container.Health value
    exit_code: int | None
    restarts: int
    started_at: datetime | None


@dataclass(frozen=True)
class Unreported:
    """A Container row placed on a node whose container the node did not report."""

    pk: int
    name: str
    state: str
    docker_id: str


def _facts_fields(facts: NodeFacts) -> dict:
    return {
        "docker_version": facts.docker_version[:64],
        "os": facts.os[:128],
        "arch": facts.arch[:32],
        "cpu_millis": facts.cpu_millis,
        "memory_bytes": facts.memory_bytes,
        "disk_bytes": facts.disk_bytes,
    }


# --- agents ------------------------------------------------------------------------------------


@transaction.atomic
def node_register(
    *, name: str, address: str, docker_host: str, facts: NodeFacts | None, labels: dict[str, str]
) -> Node:
    """Create or update this node when its agent starts. `labels` (HIVEMIND_NODE_LABELS) are
    added to those set through the API. Ready when Docker answered (`facts`), else not ready."""
    now = timezone.now()
    node = Node.objects.select_for_update().filter(name=name).first()
    if node is None:
        node = Node(name=name)
    node.address = address[:255]
    node.docker_host = docker_host[:255]
    node.labels = {**(node.labels or {}), **labels}
    if facts is not None:
        for field, value in _facts_fields(facts).items():
            setattr(node, field, value)
    node.status = Node.Status.READY if facts is not None else Node.Status.NOT_READY
    node.last_heartbeat = now
    node.save()
    return node


def node_heartbeat(*, name: str, ready: bool) -> bool:
    """Stamp the node's heartbeat (its agent lives and consumes the node's queue), ready or not
    as its agent judges Docker. False when the node's row is gone (removed by staff while its
    agent ran)."""
    now = timezone.now()
    status = Node.Status.READY if ready else Node.Status.NOT_READY
    return Node.objects.filter(name=name).update(last_heartbeat=now, status=status, updated_at=now) > 0


def node_facts_update(*, name: str, facts: NodeFacts) -> bool:
    """What the agent's latest look at Docker found (capacity, version). False when the node is gone."""
    return Node.objects.filter(name=name).update(**_facts_fields(facts), updated_at=timezone.now()) > 0


def node_agent_stopped(*, name: str) -> None:
    """The agent stopped cleanly: nobody consumes the node's queue any more."""
    Node.objects.filter(name=name).update(status=Node.Status.NOT_READY, updated_at=timezone.now())


@transaction.atomic
def node_containers_report(*, node_name: str, reports: list[ContainerReport], seen_at: datetime) -> list[Unreported]:
    """Update the Container rows of the managed containers a node reports, matched by name.

    A row placed on another node, or removed, is left alone. Returns the rows placed on this
    node (created, running or exited) that the node did not report: the agent checks each
    once more before `node_containers_mark_missing`, since one may have been made meanwhile.
    """
    from hivemind.applications.models import Container, lock_containers

    node = Node.objects.filter(name=node_name).only("pk").first()
    if node is None:
        return []
    ours = Container.objects.filter(Q(node=node) | Q(node__isnull=True)).exclude(state=Container.State.REMOVED)
    lock_containers(ours.filter(name__in=[report.name for report in reports]))
    for report in reports:
        ours.filter(name=report.name).update(
            node=node,
            docker_id=report.docker_id,
            state=report.state,
            health=report.health,
            exit_code=report.exit_code,
            restarts=report.restarts,
            started_at=report.started_at,
            last_seen_at=seen_at,
        )
    made = [Container.State.CREATED, Container.State.RUNNING, Container.State.EXITED]
    rows = (
        Container.objects.filter(node=node, state__in=made)
        .exclude(name__in=[report.name for report in reports])
        .values_list("pk", "name", "state", "docker_id")
    )
    return [Unreported(*row) for row in rows]


def node_orphans(*, node_name: str, reports: list[ContainerReport]) -> list[str]:
    """Names of managed containers on the node that no live Container row places there: a
    replica replaced while its node was unreachable, or what a deleted app left. Every row is
    made before its container, so a container being created is never one of them."""
    from hivemind.applications.models import Container

    names = [report.name for report in reports]
    kept = set(
        Container.objects.filter(node__name=node_name, name__in=names)
        .exclude(state=Container.State.REMOVED)
        .values_list("name", flat=True)
    )
    return [name for name in names if name not in kept]


def node_containers_mark_missing(*, node_name: str, containers: list[Unreported]) -> int:
    """Mark rows `missing` whose container is confirmed absent; a row that changed since it was
    read (a step made or replaced its container) is left alone."""
    from hivemind.applications.models import Container

    marked = [
        row.name
        for row in containers
        if Container.objects.filter(pk=row.pk, node__name=node_name, state=row.state, docker_id=row.docker_id).update(
            state=Container.State.MISSING, health=Container.Health.NONE
        )
    ]
    if marked:
        log.warning("node %s no longer has container(s) %s: marked missing", node_name, ", ".join(marked))
    return len(marked)


def nodes_mark_unresponsive(*, now: datetime | None = None) -> list[str]:
    """The monitor: ready nodes whose last heartbeat is older than three heartbeats become not ready."""
    cutoff = (now or timezone.now()) - timedelta(seconds=MISSED_HEARTBEATS * settings.CONFIG.node_heartbeat)
    stale = Node.objects.filter(status=Node.Status.READY).filter(
        Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True)
    )
    names = list(stale.values_list("name", flat=True))
    if names:
        # Same condition again: a node that beat since the read above stays ready.
        stale.filter(name__in=names).update(status=Node.Status.NOT_READY, updated_at=timezone.now())
        for name in names:
            log.warning("node %s missed %d heartbeats: marked not-ready", name, MISSED_HEARTBEATS)
    return names


# --- staff operations --------------------------------------------------------------------------


def _audit(actor, action: str, node: Node, changes: dict) -> None:
    from tenants.services import audit_record

    audit_record(actor=actor, tenant=None, action=action, obj=node, changes=changes)


def _locked(node: Node) -> Node:
    return Node.objects.select_for_update().get(pk=node.pk)


@transaction.atomic
def node_label(*, node: Node, set_labels: dict[str, str] | None = None, remove: list[str] | None = None, actor) -> Node:
    """Set and remove labels in one change. Removing a label the node lacks is not an error."""
    set_labels, remove = set_labels or {}, remove or []
    if not set_labels and not remove:
        raise ValidationError({"detail": "name at least one label to set or remove"})
    try:
        for key, value in set_labels.items():
            check_value(check_key(key), value)
    except LabelError as exc:
        raise ValidationError({"set": str(exc)}) from None
    try:
        for key in remove:
            check_key(key)
    except LabelError as exc:
        raise ValidationError({"remove": str(exc)}) from None
    both = sorted(set(set_labels) & set(remove))
    if both:
        raise ValidationError({"remove": f"label {both[0]!r} is both set and removed"})
    node = _locked(node)
    labels = {k: v for k, v in (node.labels or {}).items() if k not in remove}
    labels.update(set_labels)
    if labels != node.labels:
        _audit(actor, "node.label", node, {"labels": {"from": node.labels, "to": labels}})
        node.labels = labels
        node.save(update_fields=["labels", "updated_at"])
    return node


def _taint_key(taint: dict) -> tuple[str, str]:
    return taint["key"], taint["effect"]


@transaction.atomic
def node_taint(*, node: Node, add: list[dict] | None = None, remove: list[dict] | None = None, actor) -> Node:
    """Add taints ({key, value, effect}; one per key and effect, a new value replaces the old) and
    remove taints ({key} removes every effect of the key, {key, effect} just that one)."""
    add, remove = add or [], remove or []
    if not add and not remove:
        raise ValidationError({"detail": "name at least one taint to add or remove"})
    effects = TaintEffect.values
    clean_add = []
    for taint in add:
        try:
            key = check_key(taint.get("key"), "taint")
            value = check_value(key, taint.get("value", ""), "taint")
        except LabelError as exc:
            raise ValidationError({"add": str(exc)}) from None
        if taint.get("effect") not in effects:
            raise ValidationError(
                {"add": f"taint {key!r}: effect must be one of {', '.join(effects)}, got {taint.get('effect')!r}"}
            )
        clean_add.append({"key": key, "value": value, "effect": taint["effect"]})
    for taint in remove:
        try:
            check_key(taint.get("key"), "taint")
        except LabelError as exc:
            raise ValidationError({"remove": str(exc)}) from None
        if taint.get("effect") not in (None, "", *effects):
            raise ValidationError(
                {"remove": f"taint {taint['key']!r}: effect must be one of {', '.join(effects)} or left out"}
            )
    node = _locked(node)
    before = list(node.taints or [])

    def removed(taint: dict) -> bool:
        return any(taint["key"] == r["key"] and r.get("effect") in (None, "", taint["effect"]) for r in remove)

    taints = [t for t in before if not removed(t)]
    for taint in clean_add:
        taints = [t for t in taints if _taint_key(t) != _taint_key(taint)] + [taint]
    taints.sort(key=_taint_key)
    if taints != before:
        _audit(actor, "node.taint", node, {"taints": {"from": before, "to": taints}})
        node.taints = taints
        node.save(update_fields=["taints", "updated_at"])
    return node


def _set_flags(node: Node, actor, action: str, **flags: bool) -> Node:
    node = _locked(node)
    changed = {name: {"from": getattr(node, name), "to": value} for name, value in flags.items()}
    changed = {name: change for name, change in changed.items() if change["from"] != change["to"]}
    if changed:
        for name, value in flags.items():
            setattr(node, name, value)
        node.save(update_fields=[*flags, "updated_at"])
        _audit(actor, action, node, changed)
    return node


@transaction.atomic
def node_cordon(*, node: Node, actor) -> Node:
    """No new replicas are placed on the node; what runs there stays."""
    return _set_flags(node, actor, "node.cordon", cordoned=True)


@transaction.atomic
def node_uncordon(*, node: Node, actor) -> Node:
    """The node takes new replicas again; a drain in progress stops."""
    return _set_flags(node, actor, "node.uncordon", cordoned=False, draining=False)


@transaction.atomic
def node_drain(*, node: Node, actor) -> Node:
    """Cordon the node and mark it draining. Moving its replicas to other nodes is the app
    reconciler's job: it places replicas of a draining node elsewhere, then removes them here."""
    return _set_flags(node, actor, "node.drain", cordoned=True, draining=True)


@transaction.atomic
def node_remove(*, node: Node, actor) -> None:
    """Forget a node. Refused while it is ready and still holds containers (not removed): drain it
    first, or stop its agent. Its Container rows keep their history, with no node."""
    node = _locked(node)
    if node.status == Node.Status.READY:
        count = selectors.nodes_with_allocation(Node.objects.filter(pk=node.pk)).get().container_count
        if count:
            names = selectors.node_container_names(node=node, limit=5)
            listed = ", ".join(names) + (f" and {count - len(names)} more" if count > len(names) else "")
            raise Conflict(
                f"node {node.name} is ready and still has {count} container(s): {listed}; "
                "drain it and wait until they have moved, or stop its agent, before removing it",
                code="node_not_empty",
            )
    _audit(actor, "node.remove", node, {"status": node.status})
    node.delete()
