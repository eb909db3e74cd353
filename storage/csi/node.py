"""The CSI Node service on this node: staging attaches a volume here the way a replica's start
does (storage/mounts.py: a shared volume in this node's name, a lost holder fenced first; an
encrypted volume through its plaintext view) and bind-mounts it at the staging path;
publishing bind-mounts the staging path into the CO's target path (read-only when asked).

Every call is idempotent: staging or publishing what is already there with the same source
succeeds, unstaging or unpublishing what is gone succeeds. A staged volume is recorded under
<var dir>/csi/staged/, so the agent's passes (storage/node.py keep_attachments, storage/crypt.py
reconcile) keep its attachment and view while the CO holds it, as they do for a container's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from django.conf import settings

from storage.csi import csi_pb2 as pb
from storage.csi.core import Code, CsiError, check_capability, parse_id, require, unserved
from storage.csi.staging import record as _record
from storage.models import CsiPublication, Volume
from storage.providers.base import StorageError
from storage.providers.commands import is_mountpoint, run

MOUNT_TIMEOUT = 60  # seconds: a bind mount over a hung FUSE file system fails the call instead of hanging it
RPC = pb.NodeServiceCapability.RPC.Type
CAPABILITIES = (RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME)


def _absolute(value: str, field: str) -> Path:
    require(value, field)
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts:
        raise CsiError(Code.INVALID_ARGUMENT, f"{field}: expected an absolute path without '..', got {value!r}")
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _readonly(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _bind(source: Path, target: Path, *, readonly: bool = False) -> None:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)], f"mounting {source} at {target}", timeout=MOUNT_TIMEOUT)
    if readonly:
        try:
            run(["mount", "-o", "remount,bind,ro", str(target)], f"making {target} read-only", timeout=MOUNT_TIMEOUT)
        except StorageError:
            _umount(target)
            raise


def _umount(target: Path) -> None:
    while is_mountpoint(target):  # a path mounted twice (a retried call) is unmounted twice
        run(["umount", str(target)], f"unmounting {target}", timeout=MOUNT_TIMEOUT)


def _volume(volume_id: str) -> Volume:
    require(volume_id, "volume_id")
    pk = parse_id(volume_id, "volume")
    volume = Volume.objects.select_related("tenant", "pool__node").filter(pk=pk).first() if pk else None
    if volume is None:
        raise CsiError(Code.NOT_FOUND, f"volume {volume_id} does not exist")
    return volume


def _attach(volume: Volume) -> Path:
    """The directory holding the volume's files on this node, attached for the CO."""
    from storage import capabilities, crypt
    from storage.mounts import _claim
    from storage.steps import provider_of

    pool = volume.pool
    if pool.capabilities.shared:
        if capabilities.node_labels().get(capabilities.label(pool.provider)) != "yes":
            raise CsiError(Code.FAILED_PRECONDITION, f"node {settings.NODE_NAME} cannot attach {pool.provider} volumes")
    elif pool.node.name != settings.NODE_NAME:
        raise CsiError(
            Code.FAILED_PRECONDITION,
            f"volume {volume.handle} lives on node {pool.node.name}'s disk, not on node {settings.NODE_NAME}",
        )
    provider = provider_of(pool)
    try:
        if volume.encrypted:
            return crypt.attach(volume, provider, **_claim(pool))
        return provider.attach(volume.handle, **_claim(pool))
    except StorageError as exc:
        raise CsiError(Code.FAILED_PRECONDITION, f"volume {volume.handle}: {exc}") from None


def _release(volume: Volume) -> None:
    """Give up this node's attachment when no container here binds the volume any more."""
    from storage import crypt
    from storage.steps import provider_of

    provider = provider_of(volume.pool)
    if volume.encrypted and volume.handle not in crypt.bound_under(crypt.run_dir()):
        crypt.unmount(volume.handle)
    if volume.pool.capabilities.shared and volume.handle not in crypt.bound_under(provider.root / "mounts"):
        provider.detach(volume.handle)


def stage(request, context) -> pb.NodeStageVolumeResponse:
    volume = _volume(request.volume_id)
    staging = _absolute(request.staging_target_path, "staging_target_path")
    if not request.HasField("volume_capability"):
        raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
    check_capability(request.volume_capability, volume.pool)
    why = unserved(volume, [request.volume_capability])
    if why:
        raise CsiError(Code.FAILED_PRECONDITION, why)
    if volume.status not in (Volume.Status.READY, Volume.Status.BUSY):
        raise CsiError(Code.ABORTED, f"volume {volume.handle} is {volume.status}: call again when it is ready")
    if not CsiPublication.objects.filter(volume=volume, node__name=settings.NODE_NAME).exists():
        raise CsiError(
            Code.FAILED_PRECONDITION,
            f"volume {volume.handle} is not published to node {settings.NODE_NAME}: ControllerPublishVolume first",
        )
    _record(volume.handle, str(staging))  # before attaching: the agent's pass must not take it away meanwhile
    try:
        source = _attach(volume)
        if is_mountpoint(staging):
            if _same(staging, source):
                return pb.NodeStageVolumeResponse()
            raise CsiError(Code.ALREADY_EXISTS, f"staging_target_path {staging} holds another mount")
        _bind(source, staging)
    except Exception:
        if not is_mountpoint(staging):
            _record(volume.handle, None)
        raise
    return pb.NodeStageVolumeResponse()


def unstage(request, context) -> pb.NodeUnstageVolumeResponse:
    require(request.volume_id, "volume_id")
    staging = _absolute(request.staging_target_path, "staging_target_path")
    _umount(staging)
    pk = parse_id(request.volume_id, "volume")
    handle = f"v{pk}" if pk else None
    if handle:
        _record(handle, None)
        volume = Volume.objects.select_related("tenant", "pool__node").filter(pk=pk).first()
        if volume is not None:
            _release(volume)
    return pb.NodeUnstageVolumeResponse()


def publish(request, context) -> pb.NodePublishVolumeResponse:
    volume = _volume(request.volume_id)
    target = _absolute(request.target_path, "target_path")
    staging = _absolute(request.staging_target_path, "staging_target_path")
    if not request.HasField("volume_capability"):
        raise CsiError(Code.INVALID_ARGUMENT, "volume_capability is required")
    check_capability(request.volume_capability, volume.pool)
    if not is_mountpoint(staging):
        raise CsiError(Code.FAILED_PRECONDITION, f"volume {volume.handle} is not staged at {staging}")
    if is_mountpoint(target):
        if _same(target, staging) and _readonly(target) == request.readonly:
            return pb.NodePublishVolumeResponse()
        raise CsiError(
            Code.ALREADY_EXISTS, f"target_path {target} is mounted with another volume or another readonly setting"
        )
    try:
        _bind(staging, target, readonly=request.readonly)
    except StorageError as exc:
        raise CsiError(Code.INTERNAL, str(exc)) from None
    return pb.NodePublishVolumeResponse()


def unpublish(request, context) -> pb.NodeUnpublishVolumeResponse:
    require(request.volume_id, "volume_id")
    target = _absolute(request.target_path, "target_path")
    _umount(target)
    if target.is_dir():
        with contextlib.suppress(OSError):  # not empty: not ours to remove
            target.rmdir()  # the specification: the plugin removes the target path it published at
    return pb.NodeUnpublishVolumeResponse()


def stats(request, context) -> pb.NodeGetVolumeStatsResponse:
    _volume(request.volume_id)
    path = _absolute(request.volume_path, "volume_path")
    if not path.exists():
        raise CsiError(Code.NOT_FOUND, f"volume_path {path} does not exist")
    fs = os.statvfs(path)
    Unit = pb.VolumeUsage.Unit
    return pb.NodeGetVolumeStatsResponse(
        usage=[
            pb.VolumeUsage(
                unit=Unit.BYTES,
                total=fs.f_blocks * fs.f_frsize,
                available=fs.f_bavail * fs.f_frsize,
                used=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            ),
            pb.VolumeUsage(unit=Unit.INODES, total=fs.f_files, available=fs.f_favail, used=fs.f_files - fs.f_ffree),
        ]
    )


def expand(request, context) -> pb.NodeExpandVolumeResponse:
    from storage.steps import provider_of

    volume = _volume(request.volume_id)
    _absolute(request.volume_path, "volume_path")
    if volume.pool.capabilities.node_expansion:
        try:
            provider_of(volume.pool).expand(
                volume.handle, volume.size_bytes
            )  # the file system grows where it is attached
        except StorageError as exc:
            raise CsiError(Code.INTERNAL, f"volume {volume.handle}: {exc}") from None
    return pb.NodeExpandVolumeResponse(capacity_bytes=volume.size_bytes)


def info(request, context) -> pb.NodeGetInfoResponse:
    from storage import capabilities
    from storage.csi.core import node_topology

    response = pb.NodeGetInfoResponse(node_id=settings.NODE_NAME)
    response.accessible_topology.segments.update(node_topology(settings.NODE_NAME, capabilities.node_labels()))
    return response
