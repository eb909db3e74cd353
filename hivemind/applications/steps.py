"""The app workflows and their steps.

`app.rollout` (deploy, scale, update, restart, rollback, heal) has one planned step,
`apps.plan`, on the control queue. It compares the desired state with the Container rows,
places the new replicas (scheduler), and adds the steps that make it so, each on the
queue of the node it works on:

    apps.start  (node)   create or adopt, start and wait healthy the given containers
    apps.stop   (node)   stop and remove the given containers
    apps.finish (control) the app is running at its target revision

A rolling change (a new revision, or a restart) replaces replicas in batches of
max_surge + max_unavailable: first up to max_unavailable old replicas of the batch stop,
then the batch's new replicas start and must be healthy, then the rest of the batch's
old ones stop; so at most max_unavailable replicas are ever missing.

`app.delete` stops every container, then removes the app and releases its quota.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from hivemind.applications import containers as runtime
from hivemind.applications.models import App, AppRevision, Container, lock_containers
from hivemind.core.bulk import insert_rows
from hivemind.nodes.models import Node
from hivemind.workflows.registry import Lock, Plan, PlannedStep, WorkflowKind, step, workflow_kind

log = logging.getLogger(__name__)
PARALLEL = 8  # containers a node step creates, starts or stops at once


class Unschedulable(Exception):
    """No node can take a replica; the message explains why, node by node."""


def scheduling_lock() -> None:
    """Serialise placement decisions cluster-wide for the rest of the transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [7_412_001])
    # SQLite: transactions are IMMEDIATE, so writers are serialised already.


def place(app: App, spec: dict, slots: list[int]) -> list[Node]:
    """Nodes for new replicas of `app` at indexes `slots`, or Unschedulable with the explanation."""
    from hivemind.applications import placement

    return placement.place_replicas(app, spec, len(slots), slots)


class _AppKind(WorkflowKind):
    def on_finished(self, workflow) -> None:
        """A failed or cancelled app workflow leaves its reason on the app."""
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        app = App.objects.filter(pk=workflow.params["app"]).first()
        if app is None:
            return
        running = app.containers.filter(state=Container.State.RUNNING).exists()
        status = App.Status.DEGRADED if running else App.Status.FAILED
        App.objects.filter(pk=app.pk).update(status=status, message=workflow.error[:2000])


@workflow_kind
class Rollout(_AppKind):
    name = "app.rollout"
    description = "make an app's containers match its desired revision and replicas"

    def plan(self, params: dict) -> Plan:
        return Plan(
            steps=[PlannedStep("apps.plan")],
            locks=[Lock(f"app:{params['app']}")],
            subject=f"app:{params['app']}",
        )


@workflow_kind
class Delete(_AppKind):
    name = "app.delete"
    description = "remove an app's containers, then the app"

    def plan(self, params: dict) -> Plan:
        return Plan(
            steps=[PlannedStep("apps.plan_delete")],
            locks=[Lock(f"app:{params['app']}")],
            subject=f"app:{params['app']}",
        )


def _container_name(app: App, replica: int) -> str:
    """hm-<tenant>-<app>-<replica>-<random>: a new name for every container a rollout makes."""
    return f"hm-{app.tenant.slug}-{app.name}-{replica}-{secrets.token_hex(3)}"


class Placed(NamedTuple):
    """A container row just inserted: its key and its node, what the plan's steps need."""

    pk: int
    node: Node | None


def _new_containers(app: App, revision: AppRevision, slots: list[int]) -> list[Placed]:
    spec = revision.spec
    nodes = place(app, spec, slots)
    if spec.get("volume_templates"):
        from storage.mounts import claim_volumes

        for slot, node in zip(slots, nodes, strict=True):
            try:
                claim_volumes(app, spec, slot, node)
            except ValueError as exc:
                raise Unschedulable(f"replica {slot} of {app.name}: {exc}") from None
    rows = [
        {
            "tenant_id": app.tenant_id,
            "app_id": app.pk,
            "revision_id": revision.pk,
            "replica": slot,
            "node_id": node.pk if node else None,
            "name": _container_name(app, slot),
            "cpu_millis": spec["resources"]["cpu"],
            "memory_bytes": spec["resources"]["memory"],
        }
        for slot, node in zip(slots, nodes, strict=True)
    ]
    return [Placed(pk, node) for pk, node in zip(insert_rows(Container, rows), nodes, strict=True)]


def _per_node(name: str, containers: Sequence[Container | Placed]) -> list[PlannedStep]:
    by_node: dict[str, list[int]] = defaultdict(list)
    for container in containers:
        by_node[container.node.name if container.node else ""].append(container.pk)
    return [
        PlannedStep(name, queue=f"node.{node}" if node else "", params={"containers": ids})
        for node, ids in sorted(by_node.items())
    ]


def _gone(container: Container) -> bool:
    """A replica that needs replacing (see `reconcile.replica_trouble`)."""
    from hivemind.applications.reconcile import replica_trouble

    return bool(replica_trouble(container))


@step("apps.plan", max_attempts=3)
def plan_rollout(ctx):
    params = ctx.params
    with transaction.atomic():
        app = App.objects.select_for_update().select_related("tenant").get(pk=params["app"])
        target = AppRevision.objects.get(pk=params["revision"])
        replicas = params["replicas"]
        # Placed but never started (an earlier attempt, or a failed rollout): place afresh.
        Container.objects.filter(app=app, state=Container.State.PENDING, docker_id="").delete()
        # Every container not yet removed: the exited and missing ones too, so a heal clears them away.
        existing = list(app.containers.exclude(state=Container.State.REMOVED).select_related("node", "revision"))
        by_slot: dict[int, list[Container]] = defaultdict(list)
        for container in existing:
            by_slot[container.replica].append(container)
        surplus = [c for c in existing if c.replica >= replicas]
        dead = [c for c in existing if c.replica < replicas and _gone(c)]
        stale = [
            c
            for c in existing
            if c.replica < replicas and not _gone(c) and (c.revision_id != target.pk or params.get("restart"))
        ]
        empty = [slot for slot in range(replicas) if not [c for c in by_slot[slot] if not _gone(c)]]
        scheduling_lock()
        fresh = _new_containers(app, target, empty)  # raises Unschedulable before anything is kept
        steps: list[PlannedStep] = []
        if dead:
            steps += _per_node("apps.stop", [c for c in dead if c.node and c.node.status == Node.Status.READY])
            Container.objects.filter(
                pk__in=[c.pk for c in dead if not c.node or c.node.status != Node.Status.READY]
            ).update(state=Container.State.REMOVED)
        if fresh:
            steps += _per_node("apps.start", fresh)
        update = target.spec["update"]
        batch = max(1, update["max_surge"] + update["max_unavailable"])
        stale.sort(key=lambda c: c.replica)
        for start in range(0, len(stale), batch):
            old = stale[start : start + batch]
            first = old[: update["max_unavailable"]]
            if first:
                steps += _per_node("apps.stop", first)
            new = _new_containers(app, target, [c.replica for c in old])
            steps += _per_node("apps.start", new)
            rest = old[update["max_unavailable"] :]
            if rest:
                steps += _per_node("apps.stop", rest)
        if surplus:
            steps += _per_node("apps.stop", surplus)
        steps.append(PlannedStep("apps.finish", params={"revision": target.pk}))
        App.objects.filter(pk=app.pk).update(status=App.Status.DEPLOYING, message="")
    ctx.add_steps(steps)
    return {"placed": [c.pk for c in fresh], "replaced": [c.pk for c in stale], "removed": [c.pk for c in surplus]}


@plan_rollout.compensate
def unplan_rollout(ctx):
    """The rollout failed: forget replicas that never started; a first deploy gives its quota back."""
    from hivemind.applications.services import release_quota

    app = App.objects.filter(pk=ctx.params["app"]).first()
    if app is None:
        return None
    Container.objects.filter(app=app, state__in=[Container.State.PENDING, Container.State.REMOVED]).delete()
    if ctx.params.get("action") == "deploy" and not app.containers.exists():
        release_quota(app)
    return {"app": app.pk}


def _node_client():
    from hivemind.nodes.runtime import docker_client

    return docker_client()


@step("apps.start", max_attempts=3, timeout=600)
def start_containers(ctx):
    from networking.node import NodeNetworking, record_addresses
    from networking.services import networks_for_spec
    from networking.tasks import sync_nodes

    ids = ctx.step.params["containers"]
    client = _node_client()
    try:
        rows = list(Container.objects.filter(pk__in=ids).select_related("revision", "app", "node", "tenant"))
        node = Node.objects.get(name=settings.NODE_NAME)
        networking = NodeNetworking(node=node, client=client)
        joined, peers = {}, set()
        for revision in {row.revision_id: row.revision for row in rows}.values():
            tenant = rows[0].tenant
            names, to_sync = networking.join(networks_for_spec(tenant, revision.spec))
            joined[revision.pk] = names
            peers.update(to_sync)
        sync_nodes(peers)  # they add this node to their networks' forwarding entries now, not next beat
        from storage.mounts import ensure_claims_here

        ensure_claims_here(rows)  # the replicas' own template volumes, made here before they start
        # Docker creates and starts several containers at once faster than one after another.
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(rows) or 1)) as pool:
            list(pool.map(lambda row: runtime.ensure_running(client, row, joined[row.revision_id]), rows))
        readiness = runtime.wait_all_ready(client, rows)
        now = timezone.now()
        for container in rows:
            container.state, container.started_at, container.last_seen_at = Container.State.RUNNING, now, now
            container.docker_id, container.health = readiness[container.name][:2]
        with transaction.atomic():
            lock_containers(Container.objects.filter(pk__in=[container.pk for container in rows]))
            Container.objects.bulk_update(rows, ["state", "started_at", "last_seen_at", "docker_id", "health"])
        record_addresses(rows, node, {name: ready.networks for name, ready in readiness.items()})
        networking.hairpin({name for names in joined.values() for name in names})
        started = [container.name for container in rows]
        ctx.log.info("%d replica(s) of app %s ready on %s", len(started), ctx.params["app"], settings.NODE_NAME)
    except runtime.ContainerFailed as exc:
        raise RuntimeError(str(exc)) from None
    finally:
        client.close()
    return {"started": started}


@start_containers.compensate
def unstart_containers(ctx):
    client = _node_client()
    try:
        for container in Container.objects.filter(pk__in=ctx.step.params["containers"]):
            runtime.remove(client, container.name)
            Container.objects.filter(pk=container.pk).update(state=Container.State.REMOVED)
    finally:
        client.close()


@step("apps.stop", max_attempts=3, timeout=300)
def stop_containers(ctx):
    client = _node_client()
    try:
        rows = list(Container.objects.filter(pk__in=ctx.step.params["containers"]))
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(rows) or 1)) as pool:
            list(pool.map(lambda row: runtime.remove(client, row.name), rows))  # stops run side by side
        with transaction.atomic():
            stopped = Container.objects.filter(pk__in=[row.pk for row in rows])
            lock_containers(stopped)
            stopped.delete()
        removed = [row.name for row in rows]
    finally:
        client.close()
    return {"removed": removed}


@step("apps.finish", max_attempts=3)
def finish_rollout(ctx):
    app = App.objects.get(pk=ctx.params["app"])
    Container.objects.filter(app=app, state=Container.State.REMOVED).delete()
    App.objects.filter(pk=app.pk).update(
        revision_id=ctx.step.params["revision"], status=App.Status.RUNNING, message="", updated_at=timezone.now()
    )
    return {"revision": ctx.step.params["revision"]}


@step("apps.plan_delete", max_attempts=3)
def plan_delete(ctx):
    app = App.objects.get(pk=ctx.params["app"])
    live = list(app.containers.select_related("node"))
    reachable = [c for c in live if c.node and c.node.status == Node.Status.READY]
    ctx.add_steps([*_per_node("apps.stop", reachable), PlannedStep("apps.remove_app")])
    return {"containers": len(live)}


@step("apps.remove_app", max_attempts=3)
def remove_app(ctx):
    from hivemind.applications.services import release_quota

    app = App.objects.filter(pk=ctx.params["app"]).first()
    if app is None:
        return {"removed": True}  # an earlier attempt finished the job
    with transaction.atomic():
        release_quota(app)
        app.containers.all().delete()
        App.objects.filter(pk=app.pk).update(revision=None)
        Container.objects.filter(app=app).delete()
        app.revisions.all().delete()
        app.delete()
    return {"removed": True}
