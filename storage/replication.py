"""Volume replication: a copy of a volume in a pool on another node, kept by shipping snapshots.

    replica_set      start (or re-schedule) replicating a volume to a pool on another node
    replica_start    ship one snapshot now (`volume.replicate`)
    replica_promote  make the copy the volume (`volume.promote`): after its node is lost
    replica_remove   stop replicating and delete the copy (`volume.unreplicate`)
    replications_due what beat starts: the replicas whose interval has passed

Each transfer takes a new snapshot of the volume, sends it to the other pool over the agents'
data channel (storage/channel.py) as an incremental stream from the newest snapshot both
pools hold (a full stream when they hold none in common), then deletes the older replication
snapshots on both sides: after a transfer each pool holds exactly one, the parent of the next.
The workflows and their steps are in storage/replication_steps.py.

Replication snapshots have no Snapshot row and never appear in the tenant's list. Their
provider names are `s<REPLICATION_BASE + the workflow's id>`: a range the snapshots' own
primary keys (`s<pk>`) never reach, and the same name whenever a step of one workflow runs again.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from hivemind.core.errors import Conflict
from storage.models import StoragePool, Volume, VolumeReplica
from tenants.services import audit_record, tenant_require_active

REPLICATION_BASE = 10**17
MIN_INTERVAL = 5  # seconds
MAX_INTERVAL = 7 * 86400


def replication_name(workflow_id: int) -> str:
    return f"s{REPLICATION_BASE + int(workflow_id)}"


def is_replication(name: str) -> bool:
    return name.startswith("s") and name[1:].isdigit() and int(name[1:]) >= REPLICATION_BASE


def replication_snapshots(names: list[str]) -> list[str]:
    """The replication snapshots among `names`, oldest first."""
    return sorted((n for n in names if is_replication(n)), key=lambda n: int(n[1:]))


def lag_seconds(replica: VolumeReplica, now=None) -> float | None:
    """How old the copy is (None before the first transfer)."""
    if replica.last_success_at is None:
        return None
    return round(((now or timezone.now()) - replica.last_success_at).total_seconds(), 3)


def _check_interval(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError({"interval": "expected a number of seconds, or null to replicate only when asked"})
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ValidationError({"interval": f"expected {MIN_INTERVAL} to {MAX_INTERVAL} seconds, got {value}"})
    return value


def _target_pool(volume: Volume, name) -> StoragePool:
    if not isinstance(name, str) or not name:
        raise ValidationError({"pool": "expected the name of a storage pool on another node"})
    pool = StoragePool.objects.select_related("node").filter(name=name).first()
    if pool is None:
        raise ValidationError({"pool": f"no storage pool named {name[:70]!r}"})
    if pool.node_id == volume.pool.node_id:
        raise ValidationError({"pool": f"pool {pool.name} is on node {pool.node.name}, the volume's own node: "
                                       "a replica must be on another node"})  # fmt: skip
    source = volume.pool.capabilities
    if not (source.export and source.incremental and source.snapshot):
        raise ValidationError({"pool": f"volume {volume.name} is in pool {volume.pool.name} ({volume.pool.provider}), "
                                       "which cannot send snapshot streams"})  # fmt: skip
    if pool.provider != volume.pool.provider:
        kind = volume.pool.provider
        raise ValidationError({"pool": f"pool {pool.name} is {pool.provider}; the volume's streams are {kind} "
                                       f"streams: choose a {kind} pool"})  # fmt: skip
    if pool.status != StoragePool.Status.READY:
        raise Conflict(f"pool {pool.name} is not ready: {pool.message or 'its agent has not reported it'}",
                       code="pool_unavailable")  # fmt: skip
    return pool


def _locked(volume: Volume) -> Volume:
    volume = Volume.objects.select_for_update(of=("self",)).select_related("tenant", "pool__node").get(pk=volume.pk)
    if volume.status != Volume.Status.READY:
        raise Conflict(f"volume {volume.name} is {volume.status}", code=f"volume_{volume.status}")
    tenant_require_active(volume.tenant)
    return volume


def _start(replica: VolumeReplica, actor):
    from hivemind.workflows import engine

    VolumeReplica.objects.filter(pk=replica.pk).update(
        state=VolumeReplica.State.REPLICATING, last_attempt_at=timezone.now()
    )
    replica.state = VolumeReplica.State.REPLICATING
    return engine.workflow_create(
        kind="volume.replicate",
        tenant=replica.volume.tenant,
        params={"volume": replica.volume_id, "replica": replica.pk, "pool": replica.pool_id},
        actor=actor,
    )


@transaction.atomic
def replica_set(*, volume: Volume, pool, actor, interval=None):
    """Keep a copy of the volume in `pool` (a pool on another node), shipped every `interval`
    seconds (None: only when asked); starts a transfer now. Returns (replica, workflow)."""
    volume = _locked(volume)
    interval = _check_interval(interval)
    target = _target_pool(volume, pool)
    replica = VolumeReplica.objects.select_for_update().filter(volume=volume).first()
    if replica is None:
        replica = VolumeReplica.objects.create(volume=volume, pool=target, interval_seconds=interval)
    elif replica.pool_id != target.pk:
        raise Conflict(f"volume {volume.name} has a replica in pool {replica.pool.name} already: remove it first "
                       f"(DELETE /api/v1/volumes/{volume.pk}/replica/)", code="replica_exists")  # fmt: skip
    elif replica.state in (VolumeReplica.State.PROMOTING, VolumeReplica.State.REMOVING):
        raise Conflict(f"the replica of volume {volume.name} is {replica.state}", code=f"replica_{replica.state}")
    else:
        replica.interval_seconds = interval
        replica.save(update_fields=["interval_seconds", "updated_at"])
    replica.volume = volume
    audit_record(actor=actor, tenant=volume.tenant, action="volume.replicate", obj=volume,
                 changes={"pool": target.name, "interval": interval})  # fmt: skip
    if replica.state == VolumeReplica.State.REPLICATING:
        return replica, None  # a transfer is on its way; the schedule goes on from it
    return replica, _start(replica, actor)


def replications_due(now=None) -> list[int]:
    """Beat: start a transfer for every scheduled replica whose interval has passed since its
    last attempt (none while its volume is busy or its node is not ready); the workflow ids."""
    from hivemind.nodes.models import Node

    now = now or timezone.now()
    started = []
    candidates = VolumeReplica.objects.filter(
        interval_seconds__isnull=False,
        state__in=[VolumeReplica.State.PENDING, VolumeReplica.State.READY, VolumeReplica.State.FAILED],
        volume__status=Volume.Status.READY,
        volume__pool__node__status=Node.Status.READY,
        pool__node__status=Node.Status.READY,
    ).select_related("volume__tenant")
    for replica in candidates:
        last = replica.last_attempt_at
        if last is not None and (now - last).total_seconds() < replica.interval_seconds:
            continue
        with transaction.atomic():
            locked = VolumeReplica.objects.select_for_update().filter(pk=replica.pk, state=replica.state).first()
            if locked is None:
                continue
            locked.volume = replica.volume
            started.append(_start(locked, None).pk)
    return started


@transaction.atomic
def replica_start(*, volume: Volume, actor):
    """Ship a snapshot now (the schedule goes on from it)."""
    volume = _locked(volume)
    replica = VolumeReplica.objects.select_for_update().filter(volume=volume).first()
    if replica is None:
        raise Conflict(f"volume {volume.name} has no replica", code="no_replica")
    if replica.state not in (VolumeReplica.State.PENDING, VolumeReplica.State.READY, VolumeReplica.State.FAILED):
        raise Conflict(f"the replica of volume {volume.name} is {replica.state}", code=f"replica_{replica.state}")
    replica.volume = volume
    return _start(replica, actor)


@transaction.atomic
def replica_promote(*, volume: Volume, actor, force: bool = False):
    """The copy becomes the volume: its pool becomes the volume's pool (data as of the last
    transfer) and the apps mounting it are rescheduled there. Refused while the volume's node
    is ready (its data is newer than the copy) unless `force`."""
    from storage import services

    if not isinstance(force, bool):
        raise ValidationError({"force": "expected true or false"})
    volume = Volume.objects.select_for_update(of=("self",)).select_related("tenant", "pool__node").get(pk=volume.pk)
    if volume.status in (Volume.Status.CREATING, Volume.Status.DELETING):
        raise Conflict(f"volume {volume.name} is {volume.status}", code=f"volume_{volume.status}")
    tenant_require_active(volume.tenant)
    replica = VolumeReplica.objects.select_for_update().select_related("pool__node").filter(volume=volume).first()
    if replica is None:
        raise Conflict(f"volume {volume.name} has no replica to promote", code="no_replica")
    if replica.state in (VolumeReplica.State.PROMOTING, VolumeReplica.State.REMOVING):
        raise Conflict(f"the replica of volume {volume.name} is {replica.state}", code=f"replica_{replica.state}")
    if replica.last_success_at is None:
        raise Conflict(f"no transfer of volume {volume.name} to pool {replica.pool.name} has succeeded yet: "
                       "the replica holds nothing to promote", code="replica_empty")  # fmt: skip
    source = volume.pool.node
    if source.status == source.Status.READY and not force:
        raise Conflict(
            f"node {source.name}, which holds volume {volume.name}, is ready: its data is newer than the replica's "
            f"(as of {replica.last_success_at.isoformat(timespec='seconds')}). Promote with force=true to use the "
            "replica anyway (what was written since is lost)",
            code="source_ready",
        )
    VolumeReplica.objects.filter(pk=replica.pk).update(state=VolumeReplica.State.PROMOTING)
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.BUSY)
    audit_record(actor=actor, tenant=volume.tenant, action="volume.promote", obj=volume,
                 changes={"pool": [volume.pool.name, replica.pool.name], "force": force})  # fmt: skip
    return services._workflow("volume.promote", volume, actor, replica=replica.pk, pool=replica.pool_id)


@transaction.atomic
def replica_remove(*, volume: Volume, actor):
    """Stop replicating and delete the copy (and the replication snapshots on both sides)."""
    from storage import services

    volume = Volume.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=volume.pk)
    replica = VolumeReplica.objects.select_for_update().filter(volume=volume).first()
    if replica is None:
        raise Conflict(f"volume {volume.name} has no replica", code="no_replica")
    if replica.state in (VolumeReplica.State.PROMOTING, VolumeReplica.State.REMOVING):
        raise Conflict(f"the replica of volume {volume.name} is {replica.state}", code=f"replica_{replica.state}")
    VolumeReplica.objects.filter(pk=replica.pk).update(state=VolumeReplica.State.REMOVING, interval_seconds=None)
    audit_record(actor=actor, tenant=volume.tenant, action="volume.unreplicate", obj=volume)
    return services._workflow("volume.unreplicate", volume, actor, replica=replica.pk, pool=replica.pool_id)


def apps_mounting(volume: Volume) -> list:
    """The tenant's apps (not being deleted) whose spec mounts the volume."""
    from hivemind.applications.models import App

    apps = App.objects.filter(tenant_id=volume.tenant_id).exclude(status=App.Status.DELETING).select_related("revision")
    return [
        app
        for app in apps
        if any(m.get("volume") == volume.name for m in ((app.revision.spec if app.revision else None) or {}).get(
            "volumes") or [])
    ]  # fmt: skip
