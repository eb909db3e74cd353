"""The storage workflows and their steps.

Each workflow takes the volume's lock (`volume:<pk>`), runs its provider work as one step on
the queue of the pool's node, and records the result on the control queue:

    volume.create    storage.create (node)           -> storage.created (control)
    volume.delete    storage.delete (node)           -> storage.deleted (control)
    volume.expand    storage.expand (node)           -> storage.expanded (control)
    volume.revert    storage.stop_users (node), storage.revert (node), storage.start_users (node)
                     -> storage.reverted (control)
    snapshot.create  storage.snapshot (node)         -> storage.snapshotted (control)
    snapshot.delete  storage.delete_snapshot (node)  -> storage.snapshot_deleted (control)

Node steps are idempotent (the providers are: creating what exists, deleting what is gone
succeed) and the creating ones are compensated.

An encrypted volume (storage/crypt.py) gets its data key (tenants/keys.py) and its gocryptfs
ciphertext directory in `storage.create`; a clone shares its origin's data key (its snapshot
holds the origin's ciphertext and gocryptfs configuration), wrapped again under the clone's
own id. Delete and revert unmount the volume's plaintext view on the node first (a revert
mounts it again before its replicas start); the key goes with the volume's row.

A workflow that fails for good leaves the rows as they were before it (`on_finished`): a
volume that was never made has no row and holds no quota (nor a key); a snapshot that was
never taken has no row.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.db import transaction

from hivemind.workflows.registry import Lock, Plan, PlannedStep, WorkflowKind, step, workflow_kind
from storage.models import Snapshot, StoragePool, Volume
from storage.providers import registry

log = logging.getLogger(__name__)


def provider_of(pool: StoragePool):
    """The pool's provider on this node, its secrets (if any) unsealed into its options."""
    from django.conf import settings

    options = dict(pool.options)
    if pool.sealed_secrets:
        from storage import sealing

        options.update(sealing.unseal(pool))
    root = Path(pool.path)
    if registry.get(pool.provider).capabilities.shared:
        # Any node may attach a shared pool's volumes: each under a directory of its own (nodes
        # simulated on one machine share the pool's path), holding them in its own name.
        root, options["node"] = root / settings.NODE_NAME, settings.NODE_NAME
        # Where the pool itself is (a managed NFS pool's directory, served by its node) and its name.
        options.update(pool_name=pool.name, pool_node=pool.node.name, pool_path=pool.path)
    return registry.instance(pool.provider, root, options)


def _volume(ctx) -> Volume:
    return Volume.objects.select_related("pool__node", "tenant").get(pk=ctx.params["volume"])


def forget_key(volume: Volume) -> None:
    from tenants import keys

    keys.data_key_delete(tenant=volume.tenant, purpose="volume", object_id=volume.pk)


class _VolumeKind(WorkflowKind):
    """One volume's lock; `steps` run on the pool's node, then `done` on the control queue."""

    steps: tuple[str, ...] = ()
    done: str = ""

    def plan(self, params: dict) -> Plan:
        volume = Volume.objects.select_related("pool__node").get(pk=params["volume"])
        queue = f"node.{volume.pool.node.name}"
        return Plan(
            steps=[*(PlannedStep(name, queue=queue) for name in self.steps), PlannedStep(self.done)],
            locks=[Lock(f"volume:{volume.pk}")],
            subject=f"volume:{volume.pk}",
        )

    def failed(self, workflow) -> None:
        """Put the rows back as they were (inside the transaction that ends the workflow)."""

    def on_finished(self, workflow) -> None:
        from hivemind.workflows.models import WorkflowState

        if workflow.state != WorkflowState.SUCCEEDED:
            self.failed(workflow)


@workflow_kind
class VolumeCreate(_VolumeKind):
    name = "volume.create"
    description = "create a volume (empty, or cloned from a snapshot) in its pool"
    steps = ("storage.create",)
    done = "storage.created"

    def failed(self, workflow) -> None:
        from storage.services import release

        volume = Volume.objects.select_related("tenant").filter(pk=workflow.params["volume"]).first()
        if volume is not None:
            release(volume)
            if volume.encrypted:
                forget_key(volume)
            volume.delete()


@workflow_kind
class VolumeDelete(_VolumeKind):
    name = "volume.delete"
    description = "delete a volume and its snapshots"
    steps = ("storage.delete",)
    done = "storage.deleted"

    def failed(self, workflow) -> None:
        Volume.objects.filter(pk=workflow.params["volume"]).update(
            status=Volume.Status.FAILED, message=f"delete failed: {workflow.error}"[:2000]
        )


@workflow_kind
class VolumeExpand(_VolumeKind):
    name = "volume.expand"
    description = "give a volume more room (online where its provider can)"
    steps = ("storage.expand",)
    done = "storage.expanded"

    def failed(self, workflow) -> None:
        from tenants.services import quota_adjust

        volume = Volume.objects.filter(pk=workflow.params["volume"]).first()
        if volume is None:
            return
        delta = workflow.params["size"] - workflow.params["previous"]
        if volume.reservation is not None:
            quota_adjust(reservation=volume.reservation, amounts={"storage": -delta}, actor=None)
        Volume.objects.filter(pk=volume.pk).update(
            status=Volume.Status.READY, message=f"expand failed: {workflow.error}"[:2000]
        )


@workflow_kind
class VolumeRevert(_VolumeKind):
    name = "volume.revert"
    description = "stop the replicas using a volume, revert it to a snapshot, start them again"
    steps = ("storage.stop_users", "storage.revert", "storage.start_users")
    done = "storage.reverted"

    def plan(self, params: dict) -> Plan:
        """Also the locks of the apps mounting the volume: their self-healing waits meanwhile
        instead of replacing the replicas this workflow stopped on purpose."""
        from storage.mounts import app_locks

        plan = super().plan(params)
        volume = Volume.objects.get(pk=params["volume"])
        return Plan(steps=plan.steps, locks=[*plan.locks, *(Lock(key) for key in app_locks(volume))],
                    subject=plan.subject)  # fmt: skip

    def failed(self, workflow) -> None:
        Volume.objects.filter(pk=workflow.params["volume"]).update(
            status=Volume.Status.READY, message=f"revert failed: {workflow.error}"[:2000]
        )


@workflow_kind
class SnapshotCreate(_VolumeKind):
    name = "snapshot.create"
    description = "take a read-only snapshot of a volume"
    steps = ("storage.snapshot",)
    done = "storage.snapshotted"

    def failed(self, workflow) -> None:
        Snapshot.objects.filter(pk=workflow.params["snapshot"]).delete()


@workflow_kind
class SnapshotDelete(_VolumeKind):
    name = "snapshot.delete"
    description = "delete a snapshot"
    steps = ("storage.delete_snapshot",)
    done = "storage.snapshot_deleted"

    def failed(self, workflow) -> None:
        Snapshot.objects.filter(pk=workflow.params["snapshot"]).update(
            status=Snapshot.Status.FAILED, message=f"delete failed: {workflow.error}"[:2000]
        )


# --- node steps ----------------------------------------------------------------------------------


@step("storage.create", max_attempts=3, timeout=600)
def create(ctx):
    volume = _volume(ctx)
    provider = provider_of(volume.pool)
    provider.prepare()
    if "snapshot" in ctx.params:
        source = Snapshot.objects.select_related("volume").get(pk=ctx.params["snapshot"])
        provider.clone(source.volume.handle, source.handle, volume.handle, volume.size_bytes)
        if volume.encrypted:
            _clone_key(volume, source.volume, provider)
    else:
        provider.create(volume.handle, volume.size_bytes)
        if volume.encrypted:
            from storage import crypt
            from tenants import keys

            key = keys.data_key_create(tenant=volume.tenant, purpose="volume", object_id=volume.pk, exist_ok=True)
            with provider.writable(volume.handle) as root:  # attached for it where volumes must be
                crypt.initialise(root, key)
    return {"handle": volume.handle, "encrypted": volume.encrypted}


def _clone_key(volume: Volume, origin: Volume, provider) -> None:
    """The clone holds the origin's ciphertext: it opens with the origin's data key, which the
    clone gets under its own id (so either can go without the other)."""
    from storage import crypt
    from storage.providers.base import StorageError
    from tenants import keys

    with provider.writable(volume.handle) as root:
        if not crypt.is_initialised(root):
            raise StorageError(f"the snapshot of volume {origin.handle} holds no ciphertext: cannot clone it encrypted")
    keys.data_key_copy(tenant=volume.tenant, purpose="volume", source_id=origin.pk, object_id=volume.pk)


@create.compensate
def uncreate(ctx):
    volume = Volume.objects.select_related("pool").filter(pk=ctx.params["volume"]).first()
    if volume is not None:
        if volume.encrypted:
            from storage import crypt

            crypt.unmount(volume.handle)
        provider_of(volume.pool).delete(volume.handle)


@step("storage.delete", max_attempts=3, timeout=600)
def delete(ctx):
    volume = _volume(ctx)
    if volume.encrypted:
        from storage import crypt

        crypt.unmount(volume.handle)  # no app mounts it any more: nothing uses the view
    provider_of(volume.pool).delete(volume.handle)  # its snapshots too
    return {"deleted": volume.handle}


@step("storage.expand", max_attempts=3, timeout=300)
def expand(ctx):
    volume = _volume(ctx)
    provider_of(volume.pool).expand(volume.handle, ctx.params["size"])
    return {"size": ctx.params["size"]}


@step("storage.snapshot", max_attempts=3, timeout=300)
def snapshot(ctx):
    volume = _volume(ctx)
    taken = Snapshot.objects.get(pk=ctx.params["snapshot"])
    provider_of(volume.pool).snapshot(volume.handle, taken.handle)
    return {"snapshot": taken.handle}


@snapshot.compensate
def unsnapshot(ctx):
    volume = Volume.objects.select_related("pool").filter(pk=ctx.params["volume"]).first()
    if volume is not None:
        provider_of(volume.pool).delete_snapshot(volume.handle, f"s{ctx.params['snapshot']}")


@step("storage.delete_snapshot", max_attempts=3, timeout=300)
def delete_snapshot(ctx):
    volume = _volume(ctx)
    provider_of(volume.pool).delete_snapshot(volume.handle, f"s{ctx.params['snapshot']}")
    return {"deleted": f"s{ctx.params['snapshot']}"}


@step("storage.stop_users", max_attempts=3, timeout=300)
def stop_users(ctx):
    """Stop (not remove) this node's running containers that mount the volume."""
    from storage.mounts import stop_users as stop

    return {"stopped": stop(_volume(ctx))}


@stop_users.compensate
def restart_users(ctx):
    """The revert failed: what was stopped runs again, on the data as it was."""
    from storage.mounts import start_containers

    start_containers((ctx.output or {}).get("stopped") or [])


@step("storage.revert", max_attempts=3, timeout=600)
def revert(ctx):
    volume = _volume(ctx)
    provider = provider_of(volume.pool)
    if volume.encrypted:
        from storage import crypt

        # gocryptfs holds the ciphertext directory the revert replaces: let it go first, and
        # mount the reverted one again for the replicas start_users starts.
        crypt.unmount(volume.handle)
        provider.revert(volume.handle, f"s{ctx.params['snapshot']}")
        crypt.unmount(volume.handle)  # in case a view of the old one was mounted meanwhile
        if (ctx.output_of("storage.stop_users") or {}).get("stopped"):
            crypt.attach(volume, provider)
    else:
        provider.revert(volume.handle, f"s{ctx.params['snapshot']}")
    return {"reverted_to": f"s{ctx.params['snapshot']}"}


@step("storage.start_users", max_attempts=3, timeout=300)
def start_users(ctx):
    """Start again what stop_users stopped (on a retry: whatever of it is not running)."""
    from storage.mounts import start_containers

    stopped = (ctx.output_of("storage.stop_users") or {}).get("stopped") or []
    volume = _volume(ctx)
    if stopped and volume.encrypted:
        from storage import crypt

        crypt.attach(volume, provider_of(volume.pool))  # a retry after a restart of the node
    return {"started": start_containers(stopped)}


# --- control steps -------------------------------------------------------------------------------


@step("storage.created", max_attempts=3)
def created(ctx):
    Volume.objects.filter(pk=ctx.params["volume"]).update(status=Volume.Status.READY, message="")
    return {"ready": True}


@step("storage.deleted", max_attempts=3)
def deleted(ctx):
    from storage.schedules import schedule_remove
    from storage.services import release

    volume = Volume.objects.filter(pk=ctx.params["volume"]).first()
    if volume is None:
        return {"removed": True}
    with transaction.atomic():
        schedule_remove(volume)
        release(volume)
        if volume.encrypted:
            forget_key(volume)
        Volume.objects.filter(source__volume=volume).update(source=None)
        volume.snapshots.all().delete()
        volume.delete()
    return {"removed": True}


@step("storage.expanded", max_attempts=3)
def expanded(ctx):
    Volume.objects.filter(pk=ctx.params["volume"]).update(
        size_bytes=ctx.params["size"], status=Volume.Status.READY, message=""
    )
    return {"size": ctx.params["size"]}


@step("storage.reverted", max_attempts=3)
def reverted(ctx):
    Volume.objects.filter(pk=ctx.params["volume"]).update(status=Volume.Status.READY, message="")
    return {"reverted": True}


@step("storage.snapshotted", max_attempts=3)
def snapshotted(ctx):
    Snapshot.objects.filter(pk=ctx.params["snapshot"]).update(status=Snapshot.Status.READY, message="")
    return {"ready": True}


@step("storage.snapshot_deleted", max_attempts=3)
def snapshot_deleted(ctx):
    Volume.objects.filter(source_id=ctx.params["snapshot"]).update(source=None)
    Snapshot.objects.filter(pk=ctx.params["snapshot"]).delete()
    return {"removed": True}
