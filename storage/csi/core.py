"""What the CSI services share: errors as gRPC status codes, ids, access modes, sizes,
topology, and the caller (the token in a request's secrets, the tenant in its parameters)."""

from __future__ import annotations

import hashlib
import re
import time

import grpc

from hivemind.core.names import is_dns_label
from storage.csi import csi_pb2 as pb
from storage.models import Snapshot, StoragePool, Volume

PLUGIN_NAME = "csi.hivemind.io"
TOPOLOGY_PREFIX = "topology.hivemind.io/"
NODE_KEY = f"{TOPOLOGY_PREFIX}node"  # a node-local pool's volumes are reachable on its node only
DEFAULT_SIZE = 1 << 30  # a CreateVolume without a capacity range: 1 GiB (or the pool's least)
MiB = 1 << 20
WAIT = 60.0  # seconds a call waits for its workflow at most (less when the caller's deadline is nearer)
_ID = re.compile(r"([vs])([0-9]{1,18})")
Code = grpc.StatusCode
Mode = pb.VolumeCapability.AccessMode.Mode
SINGLE_NODE = {
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
}
READ_ONLY = {Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY}
# Which CSI access modes a volume of each Hivemind access mode serves.
SERVES = {
    Volume.AccessMode.RWO: SINGLE_NODE,
    Volume.AccessMode.ROX: {Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY},
    Volume.AccessMode.RWX: SINGLE_NODE | {Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_MULTI_WRITER},
}
KNOWN_PARAMETERS = ("tenant", "pool", "encrypted")
IGNORED_PREFIX = "csi.storage.k8s.io/"  # what Kubernetes' external-provisioner adds (PVC name and namespace)


class CsiError(Exception):
    """A call refused with a gRPC status code and a message that names the field and the reason."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def require(value, field: str):
    if not value:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field} is required")
    return value


# --- ids and names ------------------------------------------------------------------------------


def parse_id(value: str, kind: str) -> int | None:
    """The primary key in a volume id (`v<pk>`) or snapshot id (`s<pk>`); None when it is not one
    of ours (the caller answers as for a volume that does not exist)."""
    match = _ID.fullmatch(value or "")
    if match is None or match.group(1) != kind[0]:
        return None
    return int(match.group(2))


def hivemind_name(csi_name: str) -> str:
    """The volume's or snapshot's name in its tenant: the CO's name when it is a DNS label (what
    Kubernetes' pvc-<uuid> and snapshot-<uuid> are), else a stable digest of it."""
    if len(csi_name) > 128:
        raise CsiError(Code.INVALID_ARGUMENT, f"name: at most 128 characters, got {len(csi_name)}")
    if any((ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) <= 0x9F for c in csi_name):
        raise CsiError(Code.INVALID_ARGUMENT, "name: control characters are not allowed")
    if is_dns_label(csi_name):
        return csi_name
    return "csi-" + hashlib.sha256(csi_name.encode()).hexdigest()[:24]


# --- capabilities -------------------------------------------------------------------------------


def check_capability(capability, pool: StoragePool, field: str = "volume_capability") -> int:
    """The access mode of one VolumeCapability, after checking what Hivemind volumes can be: file
    systems mounted without extra flags, of the pool's file system type."""
    if capability.HasField("block"):
        raise CsiError(
            Code.INVALID_ARGUMENT,
            f"{field}: block access is not offered: Hivemind volumes are file systems (use mount)",
        )
    if not capability.HasField("mount"):
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}: access_type is required (mount)")
    mount = capability.mount
    fs = (pool.options or {}).get("fs", "xfs") if pool.provider == "rbd" else ""
    if mount.fs_type and mount.fs_type != fs:
        offered = f"{fs} (or empty)" if fs else "empty: the volume is a directory of the pool's file system"
        raise CsiError(
            Code.INVALID_ARGUMENT, f"{field}.mount.fs_type: pool {pool.name} offers {offered}, not {mount.fs_type!r}"
        )
    if mount.mount_flags:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}.mount.mount_flags: not supported (volumes are bind-mounted)")
    if mount.volume_mount_group:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}.mount.volume_mount_group: not supported")
    mode = capability.access_mode.mode
    if mode == Mode.UNKNOWN:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}.access_mode.mode is required")
    if mode == Mode.MULTI_NODE_SINGLE_WRITER:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}.access_mode: MULTI_NODE_SINGLE_WRITER is not offered")
    return mode


def access_mode_for(capabilities, pool: StoragePool) -> str:
    """The Hivemind access mode a new volume needs to serve every one of these capabilities."""
    require(len(capabilities), "volume_capabilities")
    modes = {check_capability(c, pool, f"volume_capabilities[{i}]") for i, c in enumerate(capabilities)}
    writers = modes - READ_ONLY
    if Mode.MULTI_NODE_MULTI_WRITER in modes or (Mode.MULTI_NODE_READER_ONLY in modes and writers):
        needed = Volume.AccessMode.RWX
    elif Mode.MULTI_NODE_READER_ONLY in modes:
        needed = Volume.AccessMode.ROX
    else:
        needed = Volume.AccessMode.RWO
    offered = pool.capabilities.access_modes
    if needed not in offered:
        raise CsiError(
            Code.INVALID_ARGUMENT,
            f"volume_capabilities: need {needed}, pool {pool.name} ({pool.provider}) offers {', '.join(offered)}",
        )
    return needed


def unserved(volume: Volume, capabilities) -> str:
    """Why the volume cannot be used with these capabilities, or "" when it can."""
    for i, capability in enumerate(capabilities):
        try:
            mode = check_capability(capability, volume.pool, f"volume_capabilities[{i}]")
        except CsiError as exc:
            return str(exc)
        if mode not in SERVES[volume.access_mode]:
            name = pb.VolumeCapability.AccessMode.Mode.Name(mode)
            return f"volume {volume.handle} is {volume.access_mode}: it does not serve {name}"
    return ""


# --- sizes --------------------------------------------------------------------------------------


def size_for(capacity_range, least: int, *, default: int = DEFAULT_SIZE) -> int:
    """The size to make: at least `required_bytes` (whole MiB), at most `limit_bytes`."""
    required, limit = capacity_range.required_bytes, capacity_range.limit_bytes
    if required < 0 or limit < 0:
        raise CsiError(Code.OUT_OF_RANGE, "capacity_range: byte counts cannot be negative")
    if limit and required > limit:
        raise CsiError(Code.OUT_OF_RANGE, f"capacity_range: required_bytes {required} exceeds limit_bytes {limit}")
    size = max(required or (min(default, limit) if limit else default), least, MiB)
    size = -(-size // MiB) * MiB
    if limit and size > limit:
        raise CsiError(
            Code.OUT_OF_RANGE,
            f"capacity_range: the pool's smallest volume ({size} bytes in whole MiB) exceeds limit_bytes {limit}",
        )
    return size


# --- topology -----------------------------------------------------------------------------------


def pool_topology(pool: StoragePool) -> dict[str, str]:
    """Where a pool's volumes can be attached: its node (node-local), or any node able to (shared)."""
    if pool.capabilities.shared:
        return {f"{TOPOLOGY_PREFIX}{pool.provider}": "yes"}
    return {NODE_KEY: pool.node.name}


def node_topology(node_name: str, labels: dict[str, str]) -> dict[str, str]:
    from storage import capabilities

    segments = {NODE_KEY: node_name}
    for key, value in labels.items():
        if key.startswith(capabilities.PREFIX) and value == "yes" and not key.endswith("-path"):
            segments[f"{TOPOLOGY_PREFIX}{key[len(capabilities.PREFIX) :]}"] = "yes"
    return segments


def reaches(pool_segments: dict[str, str], topologies) -> bool:
    """Whether a volume with these segments is accessible from one of the topologies."""
    return any(all(t.segments.get(k) == v for k, v in pool_segments.items()) for t in topologies)


# --- the caller ---------------------------------------------------------------------------------


def caller(secrets) -> object:
    """The user whose API token is in the request's secrets."""
    from rest_framework.exceptions import AuthenticationFailed

    from hivemind.core.authentication import token_user

    token = secrets.get("token", "")
    if not token:
        raise CsiError(
            Code.UNAUTHENTICATED,
            "secrets.token is required: an API token of a user who may manage volumes in the tenant",
        )
    try:
        user, _ = token_user(token)
    except AuthenticationFailed as exc:
        raise CsiError(Code.UNAUTHENTICATED, f"secrets.token: {exc.detail}") from None
    return user


def tenant_for(user, slug: str | None):
    """The tenant named by the `tenant` parameter, where `user` may create volumes."""
    from hivemind.core.scoping import may_in_tenant, tenant_permission_for, tenants_for

    require(slug, "parameters.tenant")
    tenant = tenants_for(user, tenant_permission_for(Volume, "view")).filter(slug=slug).first()
    if tenant is None:
        raise CsiError(Code.INVALID_ARGUMENT, f"parameters.tenant: no tenant {slug!r} that the token's user can see")
    if not may_in_tenant(user, tenant_permission_for(Volume, "add"), tenant):
        raise CsiError(Code.PERMISSION_DENIED, f"the token's user may not create volumes in tenant {slug}")
    return tenant


def visible(model, pk: int | None, user, action: str):
    """The row with this primary key that `user` may act on; None when they cannot see it (or it
    does not exist); PERMISSION_DENIED when they can see it but not act on it."""
    if pk is None:
        return None
    queryset = model.objects.select_related("tenant", *(["pool__node"] if model is Volume else ["volume__pool"]))
    found = queryset.restrict(user, action).filter(pk=pk).first()
    if found is None and action != "view" and model.objects.restrict(user, "view").filter(pk=pk).exists():
        raise CsiError(Code.PERMISSION_DENIED, f"the token's user may not {action} {model._meta.model_name} {pk}")
    return found


# --- waiting for a workflow ---------------------------------------------------------------------


def wait(predicate, context, what: str) -> None:
    """Poll `predicate` (reading the database) until true, for at most WAIT seconds or until
    just before the caller's deadline; ABORTED ("pending, call again") after that, as the
    specification asks of an operation still running."""
    remaining = context.time_remaining() if context is not None else None
    budget = WAIT if remaining is None else max(0.0, min(WAIT, remaining - 0.5))
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise CsiError(Code.ABORTED, f"{what} is still in progress: call again")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def snapshot_message(snapshot: Snapshot) -> pb.Snapshot:
    message = pb.Snapshot(
        size_bytes=snapshot.size_bytes,
        snapshot_id=snapshot.handle,
        source_volume_id=snapshot.volume.handle,
        ready_to_use=snapshot.status == Snapshot.Status.READY,
    )
    message.creation_time.FromDatetime(snapshot.created_at)
    return message


def volume_message(volume: Volume) -> pb.Volume:
    message = pb.Volume(capacity_bytes=volume.size_bytes, volume_id=volume.handle)
    message.volume_context.update({"tenant": volume.tenant.slug, "name": volume.name, "pool": volume.pool.name})
    message.accessible_topology.add().segments.update(pool_topology(volume.pool))
    if volume.source_id is not None:
        message.content_source.snapshot.snapshot_id = f"s{volume.source_id}"
    return message
