"""Writes for storage pools, volumes and snapshots.

Every change to what a pool holds is a workflow whose node steps run on the pool's node
(storage/steps.py); the rows and the quota are held here, in the transaction that creates
the workflow, so concurrent requests never overshoot a quota or a pool. A failed workflow
undoes its node step (compensation) and its rows (`on_finished`): a volume that could not
be created leaves no row, no quota and nothing in the pool.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.core.units import parse_bytes
from hivemind.nodes.models import Node
from hivemind.workflows import engine
from networking.services import _check_labels
from storage.models import Snapshot, StoragePool, Volume
from storage.providers import registry
from storage.providers.base import OptionError
from tenants.services import audit_record, quota_adjust, quota_release, quota_reserve, tenant_require_active

MIN_SIZE = 1 << 20  # 1 MiB: a volume smaller than that is a typo
MAX_SIZE = 1 << 53  # 8 PiB, parse_bytes' own limit


def _check_name(field: str, value) -> str:
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValidationError({field: f"expected {DNS_LABEL_RULE}, got {str(value)[:70]!r}"})
    return value


def parse_size(value, field: str = "size") -> int:
    """A volume size: "10Gi", "512Mi", or a number of bytes; at least 1 MiB."""
    if isinstance(value, bool) or value in (None, ""):
        raise ValidationError({field: "expected a size such as 10Gi or 512Mi"})
    try:
        size = parse_bytes(value)
    except (ValueError, TypeError) as exc:
        raise ValidationError({field: str(exc)}) from None
    if size < MIN_SIZE:
        raise ValidationError({field: f"a volume needs at least 1Mi, got {value!r}"})
    return size


def human(size: int) -> str:
    for unit, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


# --- pools (staff) -------------------------------------------------------------------------------


@transaction.atomic
def pool_create(
    *, name: str, provider: str, node: str, path: str, actor, options: dict | None = None,
    secrets: dict | None = None, is_default: bool = False,
) -> StoragePool:  # fmt: skip
    """A pool of `provider` in directory `path` on `node` (for a shared pool such as RBD: the
    node whose agent runs its operations, and the directory where nodes attach its volumes);
    the node's agent prepares it and reports its capacity (until then it has none, and takes no
    volume). `options` are checked by the provider; `secrets` (an RBD pool's cephx key) are
    sealed and never shown again."""
    from storage import sealing

    _check_name("name", name)
    if provider not in registry.names():
        raise ValidationError({"provider": f"unknown provider {provider!r}; known: {', '.join(registry.names())}"})
    found = Node.objects.filter(name=node).first()
    if found is None:
        raise ValidationError({"node": f"no node named {node!r}"})
    if not isinstance(path, str) or not PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        raise ValidationError({"path": f"expected an absolute directory without '..', got {str(path)[:200]!r}"})
    for field, value in (("options", options), ("secrets", secrets)):
        if value is not None and not isinstance(value, dict):
            raise ValidationError({field: "expected an object"})
    try:
        checked = registry.get(provider).validate_options(dict(options or {}), dict(secrets or {}))
    except OptionError as exc:
        raise ValidationError({exc.field: str(exc)}) from None
    try:
        with transaction.atomic():
            pool = StoragePool.objects.create(
                name=name, provider=provider, node=found, path=path, options=checked, is_default=is_default,
                secret_names=sorted(secrets or {}),
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(f"a pool named {name} or in {path} on {node} exists", code="pool_exists") from None
    if secrets:
        pool.sealed_secrets = sealing.seal(pool, secrets)
        pool.save(update_fields=["sealed_secrets"])
    audit_record(actor=actor, tenant=None, action="storage_pool.create", obj=pool, changes={"provider": provider})
    return pool


@transaction.atomic
def pool_update(*, pool: StoragePool, actor, is_default: bool | None = None) -> StoragePool:
    if is_default is not None:
        pool.is_default = is_default
        pool.save(update_fields=["is_default"])
    audit_record(actor=actor, tenant=None, action="storage_pool.update", obj=pool, changes={"is_default": is_default})
    return pool


@transaction.atomic
def pool_delete(*, pool: StoragePool, actor) -> None:
    """A pool holding volumes cannot go (409 naming a few)."""
    names = list(pool.volumes.values_list("tenant__slug", "name")[:5])
    if names:
        listed = ", ".join(f"{t}/{n}" for t, n in names)
        raise Conflict(f"pool {pool.name} holds volumes ({listed}): delete them first", code="pool_in_use")
    audit_record(actor=actor, tenant=None, action="storage_pool.delete", obj=pool)
    pool.delete()


def pool_report(*, pool: StoragePool, capacity: int, free: int, error: str = "") -> None:
    """What the pool's agent found: its capacity, or why it cannot use it."""
    from django.utils import timezone

    status = StoragePool.Status.UNAVAILABLE if error else StoragePool.Status.READY
    StoragePool.objects.filter(pk=pool.pk).update(
        capacity_bytes=capacity, free_bytes=free, status=status, message=error[:2000], reported_at=timezone.now()
    )


# --- volumes -------------------------------------------------------------------------------------


def _check_min_size(pool: StoragePool, size: int, field: str = "size") -> None:
    least = registry.get(pool.provider).min_size(pool.options)
    if size < least:
        raise ValidationError({field: f"pool {pool.name} ({pool.provider}) holds volumes of at least {human(least)}"})


def _choose_pool(pool: str | None, size: int) -> StoragePool:
    if pool:
        found = StoragePool.objects.select_related("node").filter(name=pool).first()
        if found is None:
            raise ValidationError({"pool": f"no storage pool named {pool!r}"})
        return found
    candidates = list(
        StoragePool.objects.select_related("node").filter(is_default=True, status=StoragePool.Status.READY)
    )
    if not candidates:
        raise ValidationError({"pool": "no default storage pool is ready; name a pool"})
    return max(candidates, key=lambda p: (p.free_bytes >= size, p.free_bytes, -p.pk))


def _check_room(pool: StoragePool, size: int) -> None:
    if pool.status != StoragePool.Status.READY:
        raise Conflict(f"pool {pool.name} is not ready: {pool.message or 'its agent has not reported it'}",
                       code="pool_unavailable")  # fmt: skip
    if size > pool.free_bytes:
        raise Conflict(
            f"pool {pool.name} has {human(pool.free_bytes)} free ({pool.free_bytes} bytes), "
            f"not the {human(size)} asked for",
            code="pool_full",
        )


def _lock(volume: Volume) -> Volume:
    volume = Volume.objects.select_for_update(of=("self",)).select_related("tenant", "pool__node").get(pk=volume.pk)
    if volume.status in (Volume.Status.DELETING, Volume.Status.CREATING):
        raise Conflict(f"volume {volume.name} is {volume.status}", code=f"volume_{volume.status}")
    if volume.status == Volume.Status.BUSY:
        raise Conflict(f"volume {volume.name} is busy with another operation; try again when it is ready",
                       code="volume_busy")  # fmt: skip
    tenant_require_active(volume.tenant)
    return volume


def _workflow(kind: str, volume: Volume, actor, **params):
    return engine.workflow_create(kind=kind, tenant=volume.tenant, params={"volume": volume.pk, **params}, actor=actor)


@transaction.atomic
def volume_create(
    *,
    tenant,
    name: str,
    size,
    actor,
    pool: str | None = None,
    access_mode: str = Volume.AccessMode.RWO,
    encrypted: bool = False,
    labels=None,
    source: Snapshot | None = None,
    csi_name: str = "",
) -> Volume:
    """A volume in a pool (the named one, else a ready default pool with room), created by a
    workflow on the pool's node; holds one `volumes` and its size of `storage` quota. An
    encrypted one gets its own data key, wrapped by the tenant's key (storage/crypt.py); a
    clone is encrypted exactly when its origin is."""
    _check_name("name", name)
    size = parse_size(size)
    labels = _check_labels(labels)
    if access_mode not in Volume.AccessMode.values:
        raise ValidationError({"access_mode": f"expected one of {', '.join(Volume.AccessMode.values)}"})
    if not isinstance(encrypted, bool):
        raise ValidationError({"encrypted": "expected true or false"})
    tenant_require_active(tenant)
    chosen = source.volume.pool if source is not None else _choose_pool(pool, size)
    capabilities = chosen.capabilities
    if access_mode not in capabilities.access_modes:
        offered = ", ".join(capabilities.access_modes)
        raise ValidationError(
            {"access_mode": f"pool {chosen.name} ({chosen.provider}) offers {offered}, not {access_mode}"}
        )
    if source is not None:
        encrypted = source.volume.encrypted  # a clone holds its origin's ciphertext, or its plaintext
    if encrypted and not capabilities.encryption:
        raise ValidationError({"encrypted": f"pool {chosen.name} ({chosen.provider}) cannot encrypt volumes"})
    _check_min_size(chosen, size)
    _check_room(chosen, size)
    try:
        with transaction.atomic():
            volume = Volume.objects.create(
                tenant=tenant, name=name, pool=chosen, size_bytes=size, access_mode=access_mode, encrypted=encrypted,
                labels=labels, source=source, created_by=actor, csi_name=csi_name,
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(f"a volume named {name} exists in tenant {tenant.slug}", code="volume_exists") from None
    volume.reservation, volume.warnings = quota_reserve(
        tenant=tenant, amounts={"volumes": 1, "storage": size}, actor=actor, reason=f"volume {name}"
    )
    volume.save(update_fields=["reservation"])
    params = {"snapshot": source.pk} if source is not None else {}
    volume.workflow = _workflow("volume.create", volume, actor, **params)
    audit_record(actor=actor, tenant=tenant, action="volume.create", obj=volume,
                 changes={"size": size, "pool": chosen.name, "source": source.pk if source else None})  # fmt: skip
    return volume


def volume_users(volume: Volume) -> list[str]:
    """Names of the tenant's apps whose spec mounts the volume (by name, or as a template's)."""
    from hivemind.applications.models import App
    from storage.mounts import mounts

    apps = App.objects.filter(tenant_id=volume.tenant_id).exclude(status=App.Status.DELETING)
    return sorted(name for name, spec in apps.values_list("name", "revision__spec") if mounts(name, spec, volume))


def volume_claim(*, app, name: str, template: dict, pool: StoragePool, actor=None) -> Volume:
    """A replica's template volume (storage/mounts.py): its row and quota, in `pool`; the
    replica's start step makes it on the node. Labelled with its app and template."""
    _check_room(pool, template["size"])
    volume = Volume.objects.create(
        tenant=app.tenant, name=name, pool=pool, size_bytes=template["size"], labels={"app": app.name,
        "template": template["name"]}, created_by=actor,
    )  # fmt: skip
    volume.reservation, _ = quota_reserve(
        tenant=app.tenant, amounts={"volumes": 1, "storage": template["size"]}, actor=actor, reason=f"volume {name}"
    )
    volume.save(update_fields=["reservation"])
    audit_record(actor=actor, tenant=app.tenant, action="volume.claim", obj=volume,
                 changes={"size": template["size"], "pool": pool.name, "app": app.name})  # fmt: skip
    return volume


def _worked_on(volume: Volume) -> bool:
    """A workflow on the volume is still running (a replica's template volume waits in `creating`
    with none until its replica's start step makes it: such a one may be deleted)."""
    from hivemind.workflows.models import TERMINAL_STATES, Workflow

    return (
        Workflow.objects.filter(subject=f"volume:{volume.pk}").exclude(state__in=TERMINAL_STATES).exists()
        or volume.status != Volume.Status.CREATING
    )


@transaction.atomic
def volume_delete(*, volume: Volume, actor):
    """Delete a volume no app mounts (409 naming the apps), with its snapshots."""
    volume = Volume.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=volume.pk)
    if volume.status in (Volume.Status.DELETING, Volume.Status.CREATING, Volume.Status.BUSY) and _worked_on(volume):
        raise Conflict(f"volume {volume.name} is {volume.status}", code=f"volume_{volume.status}")
    users = volume_users(volume)
    if users:
        raise Conflict(f"volume {volume.name} is mounted by app(s) {', '.join(users)}: remove it from their spec first",
                       code="volume_in_use")  # fmt: skip
    if hasattr(volume, "replica"):
        raise Conflict(f"volume {volume.name} has a replica in pool {volume.replica.pool.name}: remove it first "
                       f"(DELETE /api/v1/volumes/{volume.pk}/replica/)", code="volume_replicated")  # fmt: skip
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.DELETING)
    audit_record(actor=actor, tenant=volume.tenant, action="volume.delete", obj=volume)
    return _workflow("volume.delete", volume, actor)


@transaction.atomic
def volume_expand(*, volume: Volume, size, actor):
    """A bigger volume, online where the provider can; never a smaller one."""
    volume = _lock(volume)
    new = parse_size(size)
    if new < volume.size_bytes:
        raise ValidationError({"size": f"volumes cannot shrink: {volume.name} has {human(volume.size_bytes)}, "
                                       f"asked {human(new)}"})  # fmt: skip
    if new == volume.size_bytes:
        raise ValidationError({"size": f"volume {volume.name} already has {human(new)}"})
    if not volume.pool.capabilities.expand:
        raise ValidationError({"size": f"pool {volume.pool.name} ({volume.pool.provider}) cannot expand volumes"})
    _check_room(volume.pool, new - volume.size_bytes)
    quota_adjust(reservation=volume.reservation, amounts={"storage": new - volume.size_bytes}, actor=actor)
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.BUSY)
    audit_record(actor=actor, tenant=volume.tenant, action="volume.expand", obj=volume,
                 changes={"size": [volume.size_bytes, new]})  # fmt: skip
    return _workflow("volume.expand", volume, actor, size=new, previous=volume.size_bytes)


# --- snapshots -----------------------------------------------------------------------------------


@transaction.atomic
def snapshot_create(*, volume: Volume, name: str, actor, csi_name: str = "") -> Snapshot:
    """A read-only copy of the volume as it is now (the apps using it keep running)."""
    _check_name("name", name)
    volume = _lock(volume)
    if not volume.pool.capabilities.snapshot:
        raise ValidationError({"volume": f"pool {volume.pool.name} ({volume.pool.provider}) has no snapshots"})
    try:
        with transaction.atomic():
            snapshot = Snapshot.objects.create(
                tenant=volume.tenant, volume=volume, name=name, size_bytes=volume.size_bytes, created_by=actor,
                csi_name=csi_name,
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(f"volume {volume.name} has a snapshot named {name}", code="snapshot_exists") from None
    snapshot.workflow = _workflow("snapshot.create", volume, actor, snapshot=snapshot.pk)
    audit_record(actor=actor, tenant=volume.tenant, action="snapshot.create", obj=snapshot)
    return snapshot


@transaction.atomic
def snapshot_delete(*, snapshot: Snapshot, actor):
    snapshot = Snapshot.objects.select_for_update().select_related("volume__tenant").get(pk=snapshot.pk)
    if snapshot.status in (Snapshot.Status.CREATING, Snapshot.Status.DELETING):
        raise Conflict(f"snapshot {snapshot.name} is {snapshot.status}", code=f"snapshot_{snapshot.status}")
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.DELETING)
    audit_record(actor=actor, tenant=snapshot.tenant, action="snapshot.delete", obj=snapshot)
    return _workflow("snapshot.delete", snapshot.volume, actor, snapshot=snapshot.pk)


def volume_clone(*, snapshot: Snapshot, name: str, actor, labels=None, csi_name: str = "") -> Volume:
    """A new, independent volume with the snapshot's contents, in the same pool."""
    if snapshot.status != Snapshot.Status.READY:
        raise Conflict(f"snapshot {snapshot.name} is {snapshot.status}", code=f"snapshot_{snapshot.status}")
    if not snapshot.volume.pool.capabilities.clone:
        raise ValidationError({"snapshot": f"pool {snapshot.volume.pool.name} cannot clone"})
    origin = snapshot.volume
    return volume_create(
        tenant=snapshot.tenant, name=name, size=snapshot.size_bytes, actor=actor, access_mode=origin.access_mode,
        labels=labels, source=snapshot, csi_name=csi_name,
    )  # fmt: skip


@transaction.atomic
def volume_revert(*, volume: Volume, snapshot: Snapshot, actor):
    """The volume's contents become the snapshot's: the replicas using it stop, the volume is
    reverted, they start again."""
    volume = _lock(volume)
    if snapshot.volume_id != volume.pk:
        raise ValidationError({"snapshot": f"snapshot {snapshot.name} is not of volume {volume.name}"})
    if snapshot.status != Snapshot.Status.READY:
        raise Conflict(f"snapshot {snapshot.name} is {snapshot.status}", code=f"snapshot_{snapshot.status}")
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.BUSY)
    audit_record(actor=actor, tenant=volume.tenant, action="volume.revert", obj=volume,
                 changes={"snapshot": snapshot.name})  # fmt: skip
    return _workflow("volume.revert", volume, actor, snapshot=snapshot.pk)


def release(volume: Volume, actor=None) -> None:
    if volume.reservation is not None:
        quota_release(reservation=volume.reservation, actor=actor)
