"""The replication workflows (storage/replication.py) and their steps.

    volume.replicate    storage.replica_snapshot (source node), storage.replica_send (source node),
                        storage.replica_trim (target node), storage.replica_trim (source node)
                        -> storage.replicated (control)
    volume.promote      storage.replica_promote (target node) -> storage.replica_promoted (control)
    volume.unreplicate  storage.replica_trim (target node: everything), storage.replica_trim
                        (source node: everything) -> storage.unreplicated (control)

They hold the volume's lock (promote also the locks of the apps mounting it, so their
self-healing waits until the volume has moved). Every node step is idempotent: a step run
again after its worker died adopts what the earlier attempt made. The snapshot exists already
(`snapshot` returns), a stream the target holds already is not sent again (the sender asks the
target first), and a receive cut off by the sender's death removes its half-made subvolume
(the provider's receive; the next receive into the volume does too).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hivemind.workflows.registry import (
    Lock,
    Plan,
    PlannedStep,
    TransientError,
    WorkflowKind,
    step,
    workflow_kind,
)
from storage import channel
from storage.models import Snapshot, StoragePool, Volume, VolumeReplica
from storage.replication import apps_mounting, replication_name, replication_snapshots
from storage.steps import provider_of

log = logging.getLogger(__name__)


def _queue(pool: StoragePool) -> str:
    return f"node.{pool.node.name}"


def _rows(ctx) -> tuple[Volume, StoragePool]:
    volume = Volume.objects.select_related("pool__node", "tenant").get(pk=ctx.params["volume"])
    target = StoragePool.objects.select_related("node").get(pk=ctx.params["pool"])
    return volume, target


class _ReplicaKind(WorkflowKind):
    def _plan(self, params: dict, steps) -> Plan:
        return Plan(steps=steps, locks=[Lock(f"volume:{params['volume']}")], subject=f"volume:{params['volume']}")

    def _pools(self, params: dict) -> tuple[Volume, StoragePool]:
        volume = Volume.objects.select_related("pool__node").get(pk=params["volume"])
        return volume, StoragePool.objects.select_related("node").get(pk=params["pool"])


@workflow_kind
class VolumeReplicate(_ReplicaKind):
    name = "volume.replicate"
    description = "ship a snapshot of a volume to its replica's pool on another node"

    def plan(self, params: dict) -> Plan:
        volume, target = self._pools(params)
        source = _queue(volume.pool)
        return self._plan(params, [
            PlannedStep("storage.replica_snapshot", queue=source),
            PlannedStep("storage.replica_send", queue=source),
            PlannedStep("storage.replica_trim", queue=_queue(target), params={"side": "target", "keep": True}),
            PlannedStep("storage.replica_trim", queue=source, params={"side": "source", "keep": True}),
            PlannedStep("storage.replicated"),
        ])  # fmt: skip

    def on_finished(self, workflow) -> None:
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        # Only a transfer's own state: a promote or removal asked meanwhile keeps its own.
        VolumeReplica.objects.filter(pk=workflow.params["replica"], state=VolumeReplica.State.REPLICATING).update(
            state=VolumeReplica.State.FAILED, last_error=(workflow.error or workflow.state)[:2000]
        )


@workflow_kind
class VolumePromote(_ReplicaKind):
    name = "volume.promote"
    description = "make a volume's replica the volume and move the apps mounting it to the replica's node"

    def plan(self, params: dict) -> Plan:
        from storage.mounts import app_locks

        volume, target = self._pools(params)
        plan = self._plan(params, [
            PlannedStep("storage.replica_promote", queue=_queue(target)),
            PlannedStep("storage.replica_promoted"),
        ])  # fmt: skip
        plan.locks += [Lock(key) for key in app_locks(volume)]
        return plan

    def on_finished(self, workflow) -> None:
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        error = f"promote failed: {workflow.error or workflow.state}"[:2000]
        Volume.objects.filter(pk=workflow.params["volume"], status=Volume.Status.BUSY).update(
            status=Volume.Status.READY, message=error
        )
        VolumeReplica.objects.filter(pk=workflow.params["replica"], state=VolumeReplica.State.PROMOTING).update(
            state=VolumeReplica.State.READY, last_error=error
        )


@workflow_kind
class VolumeUnreplicate(_ReplicaKind):
    name = "volume.unreplicate"
    description = "stop replicating a volume and delete its replica"

    def plan(self, params: dict) -> Plan:
        volume, target = self._pools(params)
        return self._plan(params, [
            PlannedStep("storage.replica_trim", queue=_queue(target), params={"side": "target", "keep": False}),
            PlannedStep("storage.replica_trim", queue=_queue(volume.pool), params={"side": "source", "keep": False}),
            PlannedStep("storage.unreplicated"),
        ])  # fmt: skip

    def on_finished(self, workflow) -> None:
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        VolumeReplica.objects.filter(pk=workflow.params["replica"], state=VolumeReplica.State.REMOVING).update(
            state=VolumeReplica.State.FAILED, last_error=f"remove failed: {workflow.error or workflow.state}"[:2000]
        )


# --- node steps ----------------------------------------------------------------------------------


@step("storage.replica_snapshot", max_attempts=3, timeout=300)
def replica_snapshot(ctx):
    """A new snapshot of the volume, named after the workflow (a retry finds it)."""
    volume, _ = _rows(ctx)
    name = replication_name(ctx.workflow_id)
    provider_of(volume.pool).snapshot(volume.handle, name)
    return {"snapshot": name, "taken_at": timezone.now().isoformat()}


@replica_snapshot.compensate
def unreplica_snapshot(ctx):
    """The transfer failed before the target held the snapshot: it goes (a sent one stays: the
    next transfer can start from it)."""
    if ctx.output_of("storage.replica_send"):
        return
    volume = Volume.objects.select_related("pool").filter(pk=ctx.params["volume"]).first()
    if volume is not None:
        provider_of(volume.pool).delete_snapshot(volume.handle, replication_name(ctx.workflow_id))


@step("storage.replica_send", max_attempts=5, timeout=3600, backoff=2.0)
def replica_send(ctx):
    """Stream the snapshot to the target's agent: incremental from the newest replication
    snapshot both pools hold, else full; nothing when the target holds it already."""
    volume, target = _rows(ctx)
    name = replication_name(ctx.workflow_id)
    provider = provider_of(volume.pool)
    try:
        base = channel.endpoint_of(target.node)
        there = channel.held(base, pool=target.pk, volume=volume.handle)
    except channel.ChannelError as exc:
        raise TransientError(str(exc)) from None
    if name in there:
        return {"snapshot": name, "adopted": True, "bytes_sent": 0, "bytes_received": 0, "seconds": 0}
    here = provider.snapshots(volume.handle)
    common = [s for s in replication_snapshots(here) if s in there and s != name]
    parent = common[-1] if common else None
    try:
        result = channel.send(
            base, pool=target.pk, volume=volume.handle, snapshot=name, parent=parent,
            export=lambda out: provider.export(volume.handle, name, out, parent=parent),
            rate=settings.CONFIG.replication_rate,
        )  # fmt: skip
    except channel.ChannelError as exc:
        if exc.status in (0, 409) or exc.status >= 500:
            raise TransientError(str(exc)) from None
        raise
    ctx.log.info("volume %s: sent %s (parent %s) to %s: %s", volume, name, parent or "none (full)", target.name, result)
    return {
        "snapshot": name, "parent": parent, "full": parent is None, "bytes_sent": result["sent"],
        "bytes_received": result["received"], "seconds": result["seconds"],
    }  # fmt: skip


@step("storage.replica_trim", max_attempts=3, timeout=300)
def replica_trim(ctx):
    """Delete the replication snapshots of the volume in this side's pool, but the one this
    workflow sent (`keep`); on the target without `keep`, the whole copy."""
    volume, target = _rows(ctx)
    side, keep = ctx.step.params["side"], ctx.step.params["keep"]
    pool = target if side == "target" else volume.pool
    provider = provider_of(pool)
    if side == "target" and not keep:
        provider.delete(volume.handle)  # the replica pool holds nothing else of the volume
        return {"deleted": "all"}
    kept = replication_name(ctx.workflow_id) if keep else None
    gone = [s for s in replication_snapshots(provider.snapshots(volume.handle)) if s != kept]
    for name in gone:
        provider.delete_snapshot(volume.handle, name)
    return {"deleted": gone, "kept": kept}


@step("storage.replica_promote", max_attempts=3, timeout=600)
def replica_promote(ctx):
    """On the replica's node: the volume made from the newest snapshot received (writable, its size)."""
    volume, target = _rows(ctx)
    provider = provider_of(target)
    received = replication_snapshots(provider.snapshots(volume.handle))
    if not received:
        raise RuntimeError(f"pool {target.name} holds no snapshot of volume {volume.name} to promote")
    newest = received[-1]
    provider.promote(volume.handle, newest, volume.size_bytes)
    return {"snapshot": newest, "pool": target.name}


# --- control steps -------------------------------------------------------------------------------


@step("storage.replicated", max_attempts=3)
def replicated(ctx):
    sent = ctx.output_of("storage.replica_send") or {}
    taken = parse_datetime((ctx.output_of("storage.replica_snapshot") or {}).get("taken_at") or "") or timezone.now()
    fields = {
        "last_snapshot": sent.get("snapshot", ""), "last_success_at": taken, "last_error": "",
        "transfers": F("transfers") + 1,
    }  # fmt: skip
    if not sent.get("adopted"):  # an adopted transfer's figures died with the worker that made it
        fields.update(
            bytes_last_transfer=sent.get("bytes_received", 0), seconds_last_transfer=sent.get("seconds", 0),
            full_last_transfer=bool(sent.get("full")),
        )  # fmt: skip
    VolumeReplica.objects.filter(pk=ctx.params["replica"]).update(**fields)
    VolumeReplica.objects.filter(pk=ctx.params["replica"], state=VolumeReplica.State.REPLICATING).update(
        state=VolumeReplica.State.READY
    )
    return {"snapshot": sent.get("snapshot"), "bytes": sent.get("bytes_received"), "as_of": taken.isoformat()}


@step("storage.replica_promoted", max_attempts=3)
def replica_promoted(ctx):
    """The volume lives in the replica's pool now. The apps' replicas on the old node are
    given up (its agent removes their containers if it comes back) and each app heals onto
    the new node; the snapshots left in the old pool are marked failed."""
    from hivemind.applications.models import App, Container
    from hivemind.workflows import engine

    volume, target = _rows(ctx)
    old = volume.pool
    started = []
    with transaction.atomic():
        Volume.objects.filter(pk=volume.pk).update(pool=target, status=Volume.Status.READY, message="")
        VolumeReplica.objects.filter(pk=ctx.params["replica"]).delete()
        volume.snapshots.filter(status=Snapshot.Status.READY).update(
            status=Snapshot.Status.FAILED,
            message=f"left in pool {old.name} on node {old.node.name} when the volume was promoted to {target.name}",
        )
        for app in apps_mounting(volume):
            Container.objects.filter(app=app, node=old.node).exclude(state=Container.State.REMOVED).update(
                state=Container.State.REMOVED
            )
            if app.revision_id is None:
                continue
            App.objects.filter(pk=app.pk).update(status=App.Status.DEGRADED, message=f"volume {volume.name} moved")
            workflow = engine.workflow_create(
                kind="app.rollout", tenant=app.tenant,
                params={"app": app.pk, "revision": app.revision_id, "replicas": app.replicas, "action": "heal"},
            )  # fmt: skip
            started.append(workflow.pk)
    log.warning("volume %s promoted from pool %s to %s; healing apps with workflows %s", volume, old.name,
                target.name, started)  # fmt: skip
    return {"pool": target.name, "node": target.node.name, "heals": started}


@step("storage.unreplicated", max_attempts=3)
def unreplicated(ctx):
    VolumeReplica.objects.filter(pk=ctx.params["replica"]).delete()
    return {"removed": True}
