"""The gRPC servicers (messages in, messages out: the work is in controller.py and node.py) and
the server on a unix socket. Each call runs in a worker thread with its own database
connection; a refusal is a gRPC status with a message naming the field and the reason, and
anything unexpected is logged with its traceback and answered INTERNAL."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from concurrent import futures
from pathlib import Path

import grpc
from django import db

from storage.csi import controller, node
from storage.csi import csi_pb2 as pb
from storage.csi import csi_pb2_grpc as rpc
from storage.csi.core import PLUGIN_NAME, CsiError

log = logging.getLogger(__name__)
WORKERS = 8  # concurrent calls (each may wait for a workflow)
MAX_SOCKET_PATH = 107  # sun_path's limit


def _call(handler):
    """Run one RPC: a database connection of its own, CsiError as its status code."""

    @functools.wraps(handler)
    def method(self, request, context):
        db.close_old_connections()
        try:
            return handler(request, context)
        except CsiError as exc:
            context.abort(exc.code, str(exc))
        except Exception:
            log.exception("CSI %s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{handler.__name__} failed unexpectedly: see the CSI server's log")
        finally:
            db.connection.close()  # calls are rare and threads many: no connection is kept idle

    return method


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("hivemind")
    return "1.0.0"


def plugin_info(request, context):
    return pb.GetPluginInfoResponse(name=PLUGIN_NAME, vendor_version=_version())


def plugin_capabilities(request, context):
    Service = pb.PluginCapability.Service.Type
    response = pb.GetPluginCapabilitiesResponse()
    for kind in (Service.CONTROLLER_SERVICE, Service.VOLUME_ACCESSIBILITY_CONSTRAINTS):
        response.capabilities.add().service.type = kind
    response.capabilities.add().volume_expansion.type = pb.PluginCapability.VolumeExpansion.Type.ONLINE
    return response


def probe(request, context):
    from storage.models import StoragePool

    try:
        StoragePool.objects.exists()
    except db.Error as exc:
        raise CsiError(grpc.StatusCode.FAILED_PRECONDITION, f"the platform's database does not answer: {exc}") from None
    response = pb.ProbeResponse()
    response.ready.value = True
    return response


def controller_capabilities(request, context):
    response = pb.ControllerGetCapabilitiesResponse()
    for kind in controller.CAPABILITIES:
        response.capabilities.add().rpc.type = kind
    return response


def node_capabilities(request, context):
    response = pb.NodeGetCapabilitiesResponse()
    for kind in node.CAPABILITIES:
        response.capabilities.add().rpc.type = kind
    return response


class Identity(rpc.IdentityServicer):
    GetPluginInfo = _call(plugin_info)
    GetPluginCapabilities = _call(plugin_capabilities)
    Probe = _call(probe)


class Controller(rpc.ControllerServicer):
    CreateVolume = _call(controller.create_volume)
    DeleteVolume = _call(controller.delete_volume)
    ControllerPublishVolume = _call(controller.publish)
    ControllerUnpublishVolume = _call(controller.unpublish)
    ValidateVolumeCapabilities = _call(controller.validate)
    ListVolumes = _call(controller.list_volumes)
    GetCapacity = _call(controller.get_capacity)
    ControllerGetCapabilities = _call(controller_capabilities)
    CreateSnapshot = _call(controller.create_snapshot)
    DeleteSnapshot = _call(controller.delete_snapshot)
    ListSnapshots = _call(controller.list_snapshots)
    ControllerExpandVolume = _call(controller.expand)


class Node(rpc.NodeServicer):
    NodeStageVolume = _call(node.stage)
    NodeUnstageVolume = _call(node.unstage)
    NodePublishVolume = _call(node.publish)
    NodeUnpublishVolume = _call(node.unpublish)
    NodeGetVolumeStats = _call(node.stats)
    NodeExpandVolume = _call(node.expand)
    NodeGetCapabilities = _call(node_capabilities)
    NodeGetInfo = _call(node.info)


def check_socket(path: str) -> Path:
    """The socket path as HIVEMIND_CSI_SOCKET or --socket gives it, checked."""
    socket = Path(path)
    if not socket.is_absolute():
        raise ValueError(f"expected an absolute path, got {path!r}")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(f"a unix socket path has at most {MAX_SOCKET_PATH} bytes, {path!r} has {len(path)}")
    if socket.exists() and not socket.is_socket():
        raise ValueError(f"{path} exists and is not a socket")
    return socket


def serve(path: str) -> grpc.Server:
    """The CSI server listening on the unix socket at `path` (made mode 0600: root's, as the
    kubelet's plugin sockets are); stop it with .stop(grace)."""
    socket = check_socket(path)
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)  # a socket left by a killed server
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"))
    rpc.add_IdentityServicer_to_server(Identity(), server)
    rpc.add_ControllerServicer_to_server(Controller(), server)
    rpc.add_NodeServicer_to_server(Node(), server)
    old = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix://{socket}")
        server.start()
    finally:
        os.umask(old)
    os.chmod(socket, 0o600)
    return server
