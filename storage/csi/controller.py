"""The CSI Controller service on the platform's own services: a CSI volume is a tenant's Volume
made, cloned, snapshotted, expanded and deleted by the same workflows as through the API.

Idempotent as the specification asks: CreateVolume/CreateSnapshot with a name already made
return what exists when it is compatible (ALREADY_EXISTS when not), deletes of what is gone
succeed, and a call whose workflow is still running answers ABORTED for the CO to call again.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from hivemind.core.errors import Conflict, QuotaExceeded
from hivemind.nodes.models import Node
from storage import services
from storage.csi import csi_pb2 as pb
from storage.csi.core import (
    DEFAULT_SIZE,
    IGNORED_PREFIX,
    KNOWN_PARAMETERS,
    SINGLE_NODE,
    Code,
    CsiError,
    Mode,
    access_mode_for,
    caller,
    check_capability,
    hivemind_name,
    parse_id,
    pool_topology,
    reaches,
    require,
    size_for,
    snapshot_message,
    tenant_for,
    unserved,
    visible,
    volume_message,
    wait,
)
from storage.models import CsiPublication, Snapshot, StoragePool, Volume
from storage.providers import registry

RPC = pb.ControllerServiceCapability.RPC.Type
CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.PUBLISH_UNPUBLISH_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT,
    RPC.LIST_SNAPSHOTS,
    RPC.PUBLISH_READONLY,
    RPC.EXPAND_VOLUME,
    RPC.LIST_VOLUMES_PUBLISHED_NODES,
)


def _refused(exc: Exception) -> CsiError:
    """A service's refusal as the code the specification gives it."""
    if isinstance(exc, QuotaExceeded):
        return CsiError(Code.RESOURCE_EXHAUSTED, str(exc.detail))
    if isinstance(exc, Conflict):
        code = exc.get_codes() if hasattr(exc, "get_codes") else ""
        if code == "pool_full":
            return CsiError(Code.RESOURCE_EXHAUSTED, str(exc.detail))
        return CsiError(Code.FAILED_PRECONDITION, str(exc.detail))
    if isinstance(exc, ValidationError):
        parts = [f"{field}: {' '.join(map(str, errors))}" for field, errors in exc.message_dict.items()]
        return CsiError(Code.INVALID_ARGUMENT, "; ".join(parts))
    raise exc


# --- volumes ------------------------------------------------------------------------------------


def _pool(name: str | None, size_hint: int, requirement) -> StoragePool:
    """The named pool, or the default pool with the most room among those the CO's topology
    requirement reaches (its preferred topologies first)."""
    requisite, preferred = list(requirement.requisite), list(requirement.preferred)
    if name:
        pool = StoragePool.objects.select_related("node").filter(name=name).first()
        if pool is None:
            raise CsiError(Code.INVALID_ARGUMENT, f"parameters.pool: no storage pool named {name!r}")
        if requisite and not reaches(pool_topology(pool), requisite):
            raise CsiError(
                Code.RESOURCE_EXHAUSTED,
                f"pool {name} ({pool_topology(pool)}) is not reachable from the requisite topologies",
            )
        return pool
    pools = list(StoragePool.objects.select_related("node").filter(is_default=True, status=StoragePool.Status.READY))
    if requisite:
        pools = [p for p in pools if reaches(pool_topology(p), requisite)]
    if not pools:
        where = " reachable from the requisite topologies" if requisite else ""
        raise CsiError(Code.RESOURCE_EXHAUSTED, f"no default storage pool is ready{where}; name one in parameters.pool")

    def rank(pool: StoragePool):
        preference = next((i for i, t in enumerate(preferred) if reaches(pool_topology(pool), [t])), len(preferred))
        return (-preference, pool.free_bytes >= size_hint, pool.free_bytes, -pool.pk)

    return max(pools, key=rank)


def _parameters(parameters) -> dict[str, str]:
    values = {}
    for key, value in parameters.items():
        if key.startswith(IGNORED_PREFIX):
            continue
        if key not in KNOWN_PARAMETERS:
            raise CsiError(
                Code.INVALID_ARGUMENT, f"parameters: unknown parameter {key!r}; known: {', '.join(KNOWN_PARAMETERS)}"
            )
        values[key] = value
    if values.get("encrypted", "false") not in ("true", "false"):
        raise CsiError(
            Code.INVALID_ARGUMENT, f"parameters.encrypted: expected true or false, got {values['encrypted']!r}"
        )
    return values


def _source_snapshot(request, user) -> Snapshot | None:
    if not request.HasField("volume_content_source"):
        return None
    source = request.volume_content_source
    if source.HasField("volume"):
        raise CsiError(
            Code.INVALID_ARGUMENT,
            "volume_content_source.volume: cloning a volume directly is not offered: snapshot it, then "
            "create from the snapshot",
        )
    snapshot_id = require(source.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id")
    snapshot = visible(Snapshot, parse_id(snapshot_id, "snapshot"), user, "view")
    if snapshot is None:
        raise CsiError(Code.NOT_FOUND, f"snapshot {snapshot_id} does not exist")
    if snapshot.status != Snapshot.Status.READY:
        raise CsiError(Code.ABORTED, f"snapshot {snapshot_id} is {snapshot.status}: call again when it is ready")
    return snapshot


def _compatible(volume: Volume, request, size: int, source: Snapshot | None, values: dict) -> None:
    """An existing volume of the same name answers a CreateVolume only when it is what was asked."""
    limit = request.capacity_range.limit_bytes
    problems = []
    if not volume.csi_name:
        problems.append(f"a volume named {volume.name} exists in tenant {volume.tenant.slug} (not made through CSI)")
    elif volume.csi_name != request.name:
        problems.append(f"volume {volume.name} was made for CSI name {volume.csi_name!r}")
    if volume.size_bytes < size or (limit and volume.size_bytes > limit):
        problems.append(f"it has {volume.size_bytes} bytes")
    if (source.pk if source else None) != volume.source_id:
        problems.append("its content source differs")
    if values.get("pool") and values["pool"] != volume.pool.name:
        problems.append(f"it is in pool {volume.pool.name}")
    if "encrypted" in values and (values["encrypted"] == "true") != volume.encrypted:
        problems.append("its encryption differs")
    why = unserved(volume, request.volume_capabilities)
    if why:
        problems.append(why)
    if problems:
        raise CsiError(
            Code.ALREADY_EXISTS, f"volume {request.name!r} exists with other parameters: {'; '.join(problems)}"
        )


def _ready(volume_pk: int, size: int | None = None):
    def check() -> bool:
        row = Volume.objects.filter(pk=volume_pk).values_list("status", "size_bytes").first()
        if row is None:
            raise CsiError(Code.INTERNAL, f"volume v{volume_pk} could not be made: its workflow failed and undid it")
        if row[0] == Volume.Status.FAILED:
            raise CsiError(Code.INTERNAL, f"volume v{volume_pk} failed")
        return row[0] == Volume.Status.READY and (size is None or row[1] >= size)

    return check


def create_volume(request, context) -> pb.CreateVolumeResponse:
    name = require(request.name, "name")
    require(len(request.volume_capabilities), "volume_capabilities")
    user = caller(request.secrets)
    values = _parameters(request.parameters)
    tenant = tenant_for(user, values.get("tenant"))
    source = _source_snapshot(request, user)
    if source is not None and source.tenant_id != tenant.pk:
        raise CsiError(Code.NOT_FOUND, f"snapshot {source.handle} does not exist")
    if source is not None and "encrypted" in values and (values["encrypted"] == "true") != source.volume.encrypted:
        raise CsiError(
            Code.INVALID_ARGUMENT,
            f"parameters.encrypted: a volume made from snapshot {source.handle} is "
            f"encrypted exactly when its volume is ({source.volume.encrypted})",
        )
    pool = (
        source.volume.pool
        if source is not None
        else _pool(values.get("pool"), request.capacity_range.required_bytes, request.accessibility_requirements)
    )
    if (
        source is not None
        and request.accessibility_requirements.requisite
        and not reaches(pool_topology(pool), request.accessibility_requirements.requisite)
    ):
        raise CsiError(
            Code.RESOURCE_EXHAUSTED, f"the snapshot's pool {pool.name} is not reachable from the requisite topologies"
        )
    access_mode = access_mode_for(request.volume_capabilities, pool)
    least = registry.get(pool.provider).min_size(pool.options)
    if source is not None:
        least = max(least, source.size_bytes)
    size = size_for(request.capacity_range, least, default=source.size_bytes if source is not None else DEFAULT_SIZE)
    local_name = hivemind_name(name)
    existing = Volume.objects.select_related("tenant", "pool__node").filter(tenant=tenant, name=local_name).first()
    if existing is None:
        try:
            if source is not None:
                existing = services.volume_clone(snapshot=source, name=local_name, actor=user, csi_name=name)
            else:
                existing = services.volume_create(
                    tenant=tenant,
                    name=local_name,
                    size=size,
                    actor=user,
                    pool=pool.name,
                    access_mode=access_mode,
                    encrypted=values.get("encrypted") == "true",
                    csi_name=name,
                )
        except (Conflict, ValidationError) as exc:
            if not (isinstance(exc, Conflict) and exc.get_codes() == "volume_exists"):
                raise _refused(exc) from None
            existing = Volume.objects.select_related("tenant", "pool__node").get(tenant=tenant, name=local_name)
    if existing.status == Volume.Status.DELETING:
        raise CsiError(Code.ABORTED, f"volume {existing.handle} named {name!r} is being deleted: call again")
    _compatible(existing, request, size if source is None else source.size_bytes, source, values)
    wait(_ready(existing.pk), context, f"creating volume {existing.handle}")
    existing.refresh_from_db()
    if existing.size_bytes < size:  # a clone is its snapshot's size: grown to what was asked
        if existing.status == Volume.Status.READY:
            try:
                services.volume_expand(volume=existing, size=size, actor=user)
            except (Conflict, ValidationError) as exc:
                raise _refused(exc) from None
        wait(_ready(existing.pk, size), context, f"expanding volume {existing.handle}")
        existing.refresh_from_db()
    return pb.CreateVolumeResponse(volume=volume_message(existing))


def delete_volume(request, context) -> pb.DeleteVolumeResponse:
    volume_id = require(request.volume_id, "volume_id")
    user = caller(request.secrets)
    volume = visible(Volume, parse_id(volume_id, "volume"), user, "delete")
    if volume is None:
        return pb.DeleteVolumeResponse()  # gone already (or never ours): what the CO wanted
    published = list(volume.csi_publications.values_list("node__name", flat=True))
    if published:
        raise CsiError(
            Code.FAILED_PRECONDITION,
            f"volume {volume_id} is published to node(s) {', '.join(published)}: unpublish it first",
        )
    snapshots = list(volume.snapshots.exclude(csi_name="").values_list("name", flat=True)[:5])
    if snapshots:
        raise CsiError(
            Code.FAILED_PRECONDITION, f"volume {volume_id} has snapshots ({', '.join(snapshots)}): delete them first"
        )
    if volume.status != Volume.Status.DELETING:
        try:
            services.volume_delete(volume=volume, actor=user)
        except (Conflict, ValidationError) as exc:
            raise _refused(exc) from None
    wait(lambda: not Volume.objects.filter(pk=volume.pk).exists(), context, f"deleting volume {volume_id}")
    return pb.DeleteVolumeResponse()


def _volume_or_404(volume_id: str, user=None, action: str = "view") -> Volume:
    require(volume_id, "volume_id")
    pk = parse_id(volume_id, "volume")
    if user is not None:
        volume = visible(Volume, pk, user, action)
    else:
        volume = Volume.objects.select_related("tenant", "pool__node").filter(pk=pk).first() if pk else None
    if volume is None:
        raise CsiError(Code.NOT_FOUND, f"volume {volume_id} does not exist")
    return volume


def publish(request, context) -> pb.ControllerPublishVolumeResponse:
    from storage import capabilities

    volume = _volume_or_404(request.volume_id)
    node_id = require(request.node_id, "node_id")
    if not request.HasField("volume_capability"):
        raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
    mode = check_capability(request.volume_capability, volume.pool)
    why = unserved(volume, [request.volume_capability])
    if why:
        raise CsiError(Code.INVALID_ARGUMENT, why)
    node = Node.objects.filter(name=node_id).first()
    if node is None:
        raise CsiError(Code.NOT_FOUND, f"node {node_id} does not exist")
    if volume.status not in (Volume.Status.READY, Volume.Status.BUSY):
        raise CsiError(Code.ABORTED, f"volume {volume.handle} is {volume.status}: call again when it is ready")
    if volume.pool.capabilities.shared:
        label = capabilities.label(volume.pool.provider)
        if (node.labels or {}).get(label) != "yes":
            raise CsiError(
                Code.FAILED_PRECONDITION,
                f"node {node_id} cannot attach {volume.pool.provider} volumes (its label {label} is not yes)",
            )
    elif volume.pool.node_id != node.pk:
        raise CsiError(
            Code.FAILED_PRECONDITION,
            f"volume {volume.handle} lives on node {volume.pool.node.name}'s disk: it cannot be published "
            f"to node {node_id}",
        )
    name = Mode.Name(mode)
    with transaction.atomic():
        Volume.objects.select_for_update().filter(pk=volume.pk).first()  # one publish of a volume at a time
        here = CsiPublication.objects.filter(volume=volume, node=node).first()
        if here is not None:
            if here.readonly != request.readonly or here.access_mode != name:
                raise CsiError(
                    Code.ALREADY_EXISTS,
                    f"volume {volume.handle} is published to node {node_id} with readonly={here.readonly}, "
                    f"{here.access_mode}",
                )
        else:
            others = list(CsiPublication.objects.filter(volume=volume).exclude(node=node))
            single = mode in SINGLE_NODE or volume.access_mode == Volume.AccessMode.RWO
            if others and (single or any(Mode.Value(p.access_mode) in SINGLE_NODE for p in others)):
                raise CsiError(
                    Code.FAILED_PRECONDITION,
                    f"volume {volume.handle} is published to node {others[0].node.name}: it serves one node at a time",
                )
            CsiPublication.objects.create(volume=volume, node=node, readonly=request.readonly, access_mode=name)
    return pb.ControllerPublishVolumeResponse(publish_context={"node": node_id})


def unpublish(request, context) -> pb.ControllerUnpublishVolumeResponse:
    pk = parse_id(require(request.volume_id, "volume_id"), "volume")
    publications = CsiPublication.objects.filter(volume_id=pk)
    if request.node_id:
        publications = publications.filter(node__name=request.node_id)
    publications.delete()  # gone already: unpublished, as the specification wants
    return pb.ControllerUnpublishVolumeResponse()


def validate(request, context) -> pb.ValidateVolumeCapabilitiesResponse:
    volume = _volume_or_404(request.volume_id)
    require(len(request.volume_capabilities), "volume_capabilities")
    why = unserved(volume, request.volume_capabilities)
    if why:
        return pb.ValidateVolumeCapabilitiesResponse(message=why)
    confirmed = pb.ValidateVolumeCapabilitiesResponse.Confirmed(
        volume_capabilities=request.volume_capabilities,
        volume_context=request.volume_context,
        parameters=request.parameters,
    )
    return pb.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)


def _page(queryset, max_entries: int, token: str):
    """One page of a listing by primary key: `starting_token` is the last key of the page before."""
    if max_entries < 0:
        raise CsiError(Code.INVALID_ARGUMENT, "max_entries cannot be negative")
    if token:
        if not token.isdigit():
            raise CsiError(Code.ABORTED, f"starting_token {token!r} is not one this plugin gave")
        queryset = queryset.filter(pk__gt=int(token))
    rows = list(queryset.order_by("pk")[: max_entries + 1] if max_entries else queryset.order_by("pk"))
    more = bool(max_entries) and len(rows) > max_entries
    rows = rows[:max_entries] if more else rows
    return rows, str(rows[-1].pk) if more else ""


def list_volumes(request, context) -> pb.ListVolumesResponse:
    queryset = Volume.objects.exclude(csi_name="").select_related("tenant", "pool__node")
    rows, next_token = _page(queryset, request.max_entries, request.starting_token)
    published: dict[int, list[str]] = {}
    for volume_pk, node in CsiPublication.objects.filter(volume__in=rows).values_list("volume_id", "node__name"):
        published.setdefault(volume_pk, []).append(node)
    response = pb.ListVolumesResponse(next_token=next_token)
    for volume in rows:
        entry = response.entries.add(volume=volume_message(volume))
        entry.status.published_node_ids.extend(sorted(published.get(volume.pk, [])))
        if volume.status == Volume.Status.FAILED:
            entry.status.volume_condition.abnormal = True
            entry.status.volume_condition.message = volume.message
    return response


def get_capacity(request, context) -> pb.GetCapacityResponse:
    name = request.parameters.get("pool")
    pools = StoragePool.objects.select_related("node").filter(status=StoragePool.Status.READY)
    pools = pools.filter(name=name) if name else pools.filter(is_default=True)
    pools = list(pools)
    if request.HasField("accessible_topology"):
        pools = [p for p in pools if reaches(pool_topology(p), [request.accessible_topology])]
    return pb.GetCapacityResponse(available_capacity=max((p.free_bytes for p in pools), default=0))


def expand(request, context) -> pb.ControllerExpandVolumeResponse:
    user = caller(request.secrets)
    volume = _volume_or_404(request.volume_id, user, "change")
    if not request.HasField("capacity_range"):
        raise CsiError(Code.INVALID_ARGUMENT, "capacity_range is required")
    size = size_for(request.capacity_range, volume.size_bytes, default=volume.size_bytes)
    node_expansion = registry.get(volume.pool.provider).capabilities.node_expansion
    if size > volume.size_bytes:
        if not volume.pool.capabilities.expand:
            raise CsiError(
                Code.INVALID_ARGUMENT, f"pool {volume.pool.name} ({volume.pool.provider}) cannot expand volumes"
            )
        if volume.status == Volume.Status.READY:
            try:
                services.volume_expand(volume=volume, size=size, actor=user)
            except (Conflict, ValidationError) as exc:
                raise _refused(exc) from None
        wait(_ready(volume.pk, size), context, f"expanding volume {volume.handle}")
        volume.refresh_from_db()
    return pb.ControllerExpandVolumeResponse(capacity_bytes=volume.size_bytes, node_expansion_required=node_expansion)


# --- snapshots ----------------------------------------------------------------------------------


def create_snapshot(request, context) -> pb.CreateSnapshotResponse:
    source_id = require(request.source_volume_id, "source_volume_id")
    name = require(request.name, "name")
    user = caller(request.secrets)
    volume = _volume_or_404(source_id, user, "change")
    local_name = hivemind_name(name)
    existing = (
        Snapshot.objects.select_related("volume__pool", "tenant").filter(tenant=volume.tenant, csi_name=name).first()
    )
    if existing is not None and existing.volume_id != volume.pk:
        raise CsiError(Code.ALREADY_EXISTS, f"snapshot {name!r} exists, of volume {existing.volume.handle}")
    if existing is None:
        try:
            existing = services.snapshot_create(volume=volume, name=local_name, actor=user, csi_name=name)
        except (Conflict, ValidationError) as exc:
            if isinstance(exc, Conflict) and exc.get_codes() == "volume_busy":
                raise CsiError(Code.ABORTED, str(exc.detail)) from None
            raise _refused(exc) from None

    def ready() -> bool:
        status = Snapshot.objects.filter(pk=existing.pk).values_list("status", flat=True).first()
        if status is None or status == Snapshot.Status.FAILED:
            raise CsiError(Code.INTERNAL, f"snapshot {existing.handle} could not be made: its workflow failed")
        return status == Snapshot.Status.READY

    try:
        wait(ready, context, f"snapshot {existing.handle}")
    except CsiError as exc:
        if exc.code != Code.ABORTED:
            raise  # still being cut: answered with ready_to_use false, as the specification allows
    existing.refresh_from_db()
    return pb.CreateSnapshotResponse(snapshot=snapshot_message(existing))


def delete_snapshot(request, context) -> pb.DeleteSnapshotResponse:
    snapshot_id = require(request.snapshot_id, "snapshot_id")
    user = caller(request.secrets)
    snapshot = visible(Snapshot, parse_id(snapshot_id, "snapshot"), user, "delete")
    if snapshot is None:
        return pb.DeleteSnapshotResponse()
    if snapshot.status != Snapshot.Status.DELETING:
        try:
            services.snapshot_delete(snapshot=snapshot, actor=user)
        except (Conflict, ValidationError) as exc:
            raise _refused(exc) from None
    wait(lambda: not Snapshot.objects.filter(pk=snapshot.pk).exists(), context, f"deleting snapshot {snapshot_id}")
    return pb.DeleteSnapshotResponse()


def list_snapshots(request, context) -> pb.ListSnapshotsResponse:
    queryset = Snapshot.objects.exclude(csi_name="").select_related("volume")
    if request.snapshot_id:
        queryset = queryset.filter(pk=parse_id(request.snapshot_id, "snapshot") or 0)
    if request.source_volume_id:
        queryset = queryset.filter(volume_id=parse_id(request.source_volume_id, "volume") or 0)
    rows, next_token = _page(queryset, request.max_entries, request.starting_token)
    response = pb.ListSnapshotsResponse(next_token=next_token)
    for snapshot in rows:
        response.entries.add(snapshot=snapshot_message(snapshot))
    return response
