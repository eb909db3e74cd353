"""The CSI endpoint (storage/csi/) driven as a container orchestrator drives it: a client made
from the same csi.proto speaks gRPC over the real unix socket to the server, whose calls run
the platform's real workflows (a real worker) against real pools (a directory, btrfs on a loop
device, RBD on the session's Ceph cluster), and a real container writes into what was
published. Then the specification's idempotency and error codes, and tenancy: a CSI volume is
the tenant's, in its API and its quota, and an id of another tenant's volume is unknown."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from django.conf import settings
from django.urls import reverse

from storage import capabilities, services
from storage.csi import csi_pb2 as pb
from storage.csi import csi_pb2_grpc as rpc
from storage.csi.server import serve
from storage.models import CsiPublication, Snapshot, StoragePool, Volume
from storage.node import report_pools
from storage.providers.commands import is_mountpoint
from tenants.models import TenantQuota, TenantUsage
from tenants.services import api_token_create
from tests.applications.conftest import node  # noqa: F401 (the node fixture)
from tests.conftest import REPO, wait_for
from tests.storage.test_volumes import FAST

MiB = 1 << 20
Mode = pb.VolumeCapability.AccessMode.Mode
Code = grpc.StatusCode


class Csi:
    """A CO's three stubs on one channel to the socket."""

    def __init__(self, socket: Path):
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.identity = rpc.IdentityStub(self.channel)
        self.controller = rpc.ControllerStub(self.channel)
        self.node = rpc.NodeStub(self.channel)

    def refused(self, call, request, code: grpc.StatusCode, words: str) -> None:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=30)
        assert caught.value.code() == code, (caught.value.code(), caught.value.details())
        assert words in caught.value.details(), caught.value.details()


def mount(mode=Mode.SINGLE_NODE_WRITER, fs_type: str = "") -> pb.VolumeCapability:
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(fs_type=fs_type), access_mode={"mode": mode})


@pytest.fixture
def csi(tmp_path):
    server = serve(str(tmp_path / "csi.sock"))
    client = Csi(tmp_path / "csi.sock")
    yield client
    client.channel.close()
    server.stop(grace=1).wait()
    for point in sorted(stray_mounts(tmp_path), reverse=True):  # a failed test's stagings and publications
        subprocess.run(["umount", "-l", point], check=False)


def stray_mounts(under: Path) -> list[str]:
    prefix = f"{under}/"
    with open("/proc/self/mountinfo") as mounts:
        return [line.split()[4] for line in mounts if line.split()[4].startswith(prefix)]


def token_of(user) -> dict[str, str]:
    return {"token": api_token_create(user=user, name="csi")[1]}


def pool_for(kind: str, node, request, tmp_path) -> StoragePool:  # noqa: F811 - a Node, not the fixture
    """A default pool of this provider on the test node, reported ready by its agent's code."""
    if kind == "rbd":
        cluster = request.getfixturevalue("ceph_cluster")
        cluster.make_pool("csi")
        pool = services.pool_create(
            name="csi-rbd", provider="rbd", node=node.name, path=str(tmp_path / "rbd"), actor=None, is_default=True,
            options={"monitors": cluster.monitors, "user": "admin", "pool": "csi"}, secrets={"key": cluster.admin_key},
        )  # fmt: skip
        node.labels = {**(node.labels or {}), **capabilities.node_labels()}  # what the agent reports
        node.save(update_fields=["labels"])
    else:
        root = request.getfixturevalue("btrfs_root") if kind == "btrfs" else tmp_path / "local"
        pool = StoragePool.objects.create(name=f"csi-{kind}", provider=kind, node=node, path=str(root), is_default=True)
    assert report_pools(node.name)[pool.name] == "ready"
    return StoragePool.objects.get(pk=pool.pk)


@pytest.mark.parametrize("kind", ["local", "btrfs", "rbd"])
def test_a_container_orchestrator_drives_a_volume_through_its_whole_life(
    kind,
    csi,
    platform_processes,
    world,
    node,  # noqa: F811 - the fixture
    docker_client,
    busybox_image,
    tmp_path,
    request,
):
    """create -> controller publish -> stage -> publish -> a container writes -> unpublish ->
    unstage -> snapshot -> create from the snapshot (the data is there) -> expand -> delete."""
    platform_processes("worker", extra_env=FAST)
    pool = pool_for(kind, node, request, tmp_path)
    secrets = token_of(world.users["operator"])
    size = 320 * MiB if kind == "rbd" else 64 * MiB
    encrypted = kind == "btrfs"  # one provider's run goes through an encrypted volume's plaintext view

    info = csi.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=10)
    assert info.name == "csi.hivemind.io" and info.vendor_version
    assert csi.identity.Probe(pb.ProbeRequest(), timeout=10).ready.value is True
    plugin = csi.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest(), timeout=10)
    assert {c.service.type for c in plugin.capabilities if c.HasField("service")} == {1, 2}
    here = csi.node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=10)
    assert here.node_id == settings.NODE_NAME
    assert here.accessible_topology.segments["topology.hivemind.io/node"] == settings.NODE_NAME

    name = f"pvc-{uuid.uuid4()}"
    create = pb.CreateVolumeRequest(
        name=name, capacity_range={"required_bytes": size - MiB // 2}, volume_capabilities=[mount()],
        parameters={"tenant": world.a.slug, "encrypted": str(encrypted).lower(), "csi.storage.k8s.io/pvc/name": "data"},
        secrets=secrets,
    )  # fmt: skip
    made = csi.controller.CreateVolume(create, timeout=120).volume
    assert made.capacity_bytes == size  # whole MiB, at least what was required
    volume = Volume.objects.get(pk=int(made.volume_id[1:]))
    assert (volume.tenant, volume.name, volume.pool, volume.csi_name) == (world.a, name, pool, name)
    assert volume.status == Volume.Status.READY and volume.created_by == world.users["operator"]
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == size  # the tenant's quota counts it
    listed = world.client("viewer").get(reverse("api:volume-list"), {"tenant": world.a.slug}).json()
    assert [(v["name"], v["csi_name"]) for v in listed["results"]] == [(name, name)]  # and its API shows it
    expected = {"topology.hivemind.io/rbd": "yes"} if kind == "rbd" else {"topology.hivemind.io/node": node.name}
    assert dict(made.accessible_topology[0].segments) == expected
    again = csi.controller.CreateVolume(create, timeout=60).volume  # same name: the same volume
    assert again.volume_id == made.volume_id and Volume.objects.filter(tenant=world.a).count() == 1

    capability = mount(fs_type="xfs" if kind == "rbd" else "")
    published = csi.controller.ControllerPublishVolume(
        pb.ControllerPublishVolumeRequest(volume_id=made.volume_id, node_id=here.node_id, volume_capability=capability),
        timeout=30,
    )  # fmt: skip
    staging, target = tmp_path / "staging", tmp_path / "pods" / "target"
    stage = pb.NodeStageVolumeRequest(
        volume_id=made.volume_id, staging_target_path=str(staging), volume_capability=capability,
        publish_context=published.publish_context,
    )  # fmt: skip
    csi.node.NodeStageVolume(stage, timeout=120)
    csi.node.NodeStageVolume(stage, timeout=60)  # again: already staged, fine
    publish = pb.NodePublishVolumeRequest(
        volume_id=made.volume_id, staging_target_path=str(staging), target_path=str(target),
        volume_capability=capability,
    )  # fmt: skip
    csi.node.NodePublishVolume(publish, timeout=60)
    csi.node.NodePublishVolume(publish, timeout=60)
    assert is_mountpoint(staging) and is_mountpoint(target)

    output = docker_client.containers.run(
        busybox_image, ["sh", "-c", "echo written-by-a-container > /data/hello && cat /data/hello"],
        volumes={str(target): {"bind": "/data", "mode": "rw"}}, remove=True, network_mode="none",
    )  # fmt: skip
    assert output.decode().strip() == "written-by-a-container"
    assert (staging / "hello").read_text() == "written-by-a-container\n"  # in the volume itself
    if encrypted:  # and on the pool's disk only as ciphertext
        raw = Path(pool.path) / "volumes" / volume.handle
        assert volume.encrypted and not (raw / "hello").exists()
        assert b"written-by-a-container" not in b"".join(f.read_bytes() for f in raw.rglob("*") if f.is_file())
    usage = csi.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=made.volume_id, volume_path=str(target)), timeout=10
    ).usage  # fmt: skip
    assert usage[0].unit == pb.VolumeUsage.Unit.BYTES and usage[0].total > 0 and usage[0].used > 0

    # Expanded while a CO has it published: the controller grows the volume, the node its file system.
    grown = csi.controller.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(volume_id=made.volume_id, capacity_range={"required_bytes": 2 * size},
                                         secrets=secrets), timeout=120,
    )  # fmt: skip
    assert grown.capacity_bytes == 2 * size and grown.node_expansion_required == (kind == "rbd")
    assert Volume.objects.get(pk=volume.pk).size_bytes == 2 * size
    expanded = csi.node.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(volume_id=made.volume_id, volume_path=str(target), capacity_range={
            "required_bytes": 2 * size}), timeout=120,
    )  # fmt: skip
    assert expanded.capacity_bytes == 2 * size
    if kind == "rbd":  # its own file system, grown online: a container would see the room now
        after = csi.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=made.volume_id, volume_path=str(target)), timeout=10
        ).usage[0]  # fmt: skip
        assert after.total > usage[0].total + size // 2, (after.total, usage[0].total)
    size *= 2

    csi.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=made.volume_id, target_path=str(target)))
    csi.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=made.volume_id, target_path=str(target)))
    assert not target.exists()  # the plugin removes the target path it published at
    unstage = pb.NodeUnstageVolumeRequest(volume_id=made.volume_id, staging_target_path=str(staging))
    csi.node.NodeUnstageVolume(unstage, timeout=60)
    csi.node.NodeUnstageVolume(unstage, timeout=60)
    assert not is_mountpoint(staging)
    unpublish = pb.ControllerUnpublishVolumeRequest(volume_id=made.volume_id, node_id=here.node_id)
    csi.controller.ControllerUnpublishVolume(unpublish, timeout=30)
    csi.controller.ControllerUnpublishVolume(unpublish, timeout=30)
    assert not CsiPublication.objects.exists()

    snapshot_request = pb.CreateSnapshotRequest(source_volume_id=made.volume_id, name=f"snapshot-{uuid.uuid4()}",
                                                secrets=secrets)  # fmt: skip
    snapshot = csi.controller.CreateSnapshot(snapshot_request, timeout=120).snapshot
    assert snapshot.ready_to_use and snapshot.source_volume_id == made.volume_id and snapshot.size_bytes == size
    assert csi.controller.CreateSnapshot(snapshot_request, timeout=60).snapshot.snapshot_id == snapshot.snapshot_id
    listed = csi.controller.ListSnapshots(pb.ListSnapshotsRequest(source_volume_id=made.volume_id), timeout=10)
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snapshot.snapshot_id]

    restored = csi.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=f"pvc-{uuid.uuid4()}", capacity_range={"required_bytes": size + 64 * MiB},
            volume_capabilities=[mount()], parameters={"tenant": world.a.slug}, secrets=secrets,
            volume_content_source={"snapshot": {"snapshot_id": snapshot.snapshot_id}},
        ),
        timeout=180,
    ).volume  # fmt: skip
    assert restored.content_source.snapshot.snapshot_id == snapshot.snapshot_id
    assert restored.capacity_bytes == size + 64 * MiB  # the clone, grown to what was asked
    csi.controller.ControllerPublishVolume(
        pb.ControllerPublishVolumeRequest(volume_id=restored.volume_id, node_id=here.node_id,
                                          volume_capability=capability, readonly=True), timeout=30,
    )  # fmt: skip
    csi.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(volume_id=restored.volume_id, staging_target_path=str(tmp_path / "restored"),
                                  volume_capability=capability), timeout=120,
    )  # fmt: skip
    assert (tmp_path / "restored" / "hello").read_text() == "written-by-a-container\n"
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=restored.volume_id, staging_target_path=str(tmp_path / "restored"))
    )  # fmt: skip
    csi.controller.ControllerUnpublishVolume(pb.ControllerUnpublishVolumeRequest(volume_id=restored.volume_id))

    csi.refused(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=made.volume_id, secrets=secrets),
                Code.FAILED_PRECONDITION, "has snapshots")  # fmt: skip
    for _ in range(2):
        csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id, secrets=secrets),
                                      timeout=120)  # fmt: skip
    for gone in (restored.volume_id, made.volume_id, made.volume_id):
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=gone, secrets=secrets), timeout=120)
    assert not Volume.objects.exists() and not Snapshot.objects.exists()
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 0 and usage.storage_bytes == 0


def test_the_specification_s_errors_idempotency_and_tenancy(csi, platform_processes, world, node, tmp_path, request):  # noqa: F811
    """INVALID_ARGUMENT naming the missing or wrong field, NOT_FOUND for what does not exist (and
    for another tenant's volume), ALREADY_EXISTS for a name asked again with other parameters,
    RESOURCE_EXHAUSTED past the tenant's quota, success for deleting what is gone."""
    platform_processes("worker", extra_env=FAST)
    pool_for("local", node, request, tmp_path)
    a, b = token_of(world.users["operator"]), token_of(world.users["outsider"])
    viewer = token_of(world.users["viewer"])
    base = {"name": "pvc-one", "capacity_range": {"required_bytes": 8 * MiB}, "volume_capabilities": [mount()],
            "parameters": {"tenant": world.a.slug}, "secrets": a}  # fmt: skip
    create = csi.controller.CreateVolume
    for change, code, words in [
        ({"name": ""}, Code.INVALID_ARGUMENT, "name is required"),
        ({"volume_capabilities": []}, Code.INVALID_ARGUMENT, "volume_capabilities is required"),
        ({"secrets": {}}, Code.UNAUTHENTICATED, "secrets.token is required"),
        ({"secrets": {"token": "hm_wrong"}}, Code.UNAUTHENTICATED, "invalid token"),
        ({"parameters": {}}, Code.INVALID_ARGUMENT, "parameters.tenant is required"),
        ({"parameters": {"tenant": world.b.slug}}, Code.INVALID_ARGUMENT, f"no tenant '{world.b.slug}'"),
        ({"secrets": viewer}, Code.PERMISSION_DENIED, "may not create volumes in tenant"),
        ({"parameters": {"tenant": world.a.slug, "colour": "red"}}, Code.INVALID_ARGUMENT, "parameter 'colour'"),
        ({"parameters": {"tenant": world.a.slug, "pool": "nope"}}, Code.INVALID_ARGUMENT, "no storage pool named"),
        ({"parameters": {"tenant": world.a.slug, "encrypted": "yes"}}, Code.INVALID_ARGUMENT, "expected true or false"),
        ({"volume_capabilities": [pb.VolumeCapability(block={}, access_mode={"mode": Mode.SINGLE_NODE_WRITER})]},
         Code.INVALID_ARGUMENT, "block access is not offered"),
        ({"volume_capabilities": [mount(Mode.MULTI_NODE_MULTI_WRITER)]}, Code.INVALID_ARGUMENT, "need ReadWriteMany"),
        ({"volume_capabilities": [mount(fs_type="ext4")]}, Code.INVALID_ARGUMENT, "fs_type"),
        ({"capacity_range": {"required_bytes": 8 * MiB, "limit_bytes": MiB}}, Code.OUT_OF_RANGE, "exceeds limit_bytes"),
        ({"volume_content_source": {"snapshot": {"snapshot_id": "s999999"}}}, Code.NOT_FOUND, "does not exist"),
    ]:  # fmt: skip
        csi.refused(create, pb.CreateVolumeRequest(**{**base, **change}), code, words)
    assert not Volume.objects.exists()

    made = create(pb.CreateVolumeRequest(**base), timeout=120).volume
    csi.refused(create, pb.CreateVolumeRequest(**{**base, "capacity_range": {"required_bytes": 16 * MiB}}),
                Code.ALREADY_EXISTS, "exists with other parameters")  # fmt: skip
    TenantQuota.objects.filter(tenant=world.a).update(storage_bytes=16 * MiB)
    two = pb.CreateVolumeRequest(**{**base, "name": "pvc-two", "capacity_range": {"required_bytes": 9 * MiB}})
    csi.refused(create, two, Code.RESOURCE_EXHAUSTED, "storage")

    # Another tenant's token: A's volume does not exist for it.
    csi.refused(csi.controller.ControllerExpandVolume,
                pb.ControllerExpandVolumeRequest(volume_id=made.volume_id, capacity_range={"required_bytes": 9 * MiB},
                                                 secrets=b), Code.NOT_FOUND, "does not exist")  # fmt: skip
    csi.refused(csi.controller.CreateSnapshot, pb.CreateSnapshotRequest(source_volume_id=made.volume_id, name="s",
                secrets=b), Code.NOT_FOUND, "does not exist")  # fmt: skip
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=made.volume_id, secrets=b), timeout=30)
    assert Volume.objects.filter(pk=int(made.volume_id[1:])).exists()  # answered as gone, not deleted
    csi.refused(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=made.volume_id, secrets=viewer),
                Code.PERMISSION_DENIED, "may not delete")  # fmt: skip

    for call, message, code, words in [
        (csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
            volume_id="v999999", node_id=node.name, volume_capability=mount()), Code.NOT_FOUND, "does not exist"),
        (csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
            volume_id=made.volume_id, node_id="elsewhere", volume_capability=mount()), Code.NOT_FOUND, "elsewhere"),
        (csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
            volume_id=made.volume_id, node_id=node.name), Code.INVALID_ARGUMENT, "volume_capability is required"),
        (csi.controller.ValidateVolumeCapabilities, pb.ValidateVolumeCapabilitiesRequest(
            volume_id="v999999", volume_capabilities=[mount()]), Code.NOT_FOUND, "does not exist"),
        (csi.controller.ListVolumes, pb.ListVolumesRequest(starting_token="nonsense"), Code.ABORTED, "starting_token"),
        (csi.node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id=made.volume_id, volume_capability=mount()), Code.INVALID_ARGUMENT, "staging_target_path is"),
        (csi.node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id=made.volume_id, staging_target_path=str(tmp_path / "s"), volume_capability=mount()),
         Code.FAILED_PRECONDITION, "ControllerPublishVolume first"),
        (csi.node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id="v999999", staging_target_path=str(tmp_path / "s"), volume_capability=mount()),
         Code.NOT_FOUND, "does not exist"),
        (csi.node.NodePublishVolume, pb.NodePublishVolumeRequest(
            volume_id=made.volume_id, staging_target_path=str(tmp_path / "s"), target_path="relative",
            volume_capability=mount()), Code.INVALID_ARGUMENT, "target_path: expected an absolute path"),
    ]:  # fmt: skip
        csi.refused(call, message, code, words)

    validated = csi.controller.ValidateVolumeCapabilities(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=made.volume_id, volume_capabilities=[mount(Mode.MULTI_NODE_READER_ONLY)]), timeout=10)  # fmt: skip
    assert not validated.HasField("confirmed") and "does not serve MULTI_NODE_READER_ONLY" in validated.message
    validated = csi.controller.ValidateVolumeCapabilities(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=made.volume_id, volume_capabilities=[mount()]), timeout=10)  # fmt: skip
    assert validated.HasField("confirmed")

    # One node at a time for a single-node volume; a second, compatible publish is idempotent.
    other = type(node).objects.create(name="csi-other", address="10.250.0.77", status="ready")
    publish = pb.ControllerPublishVolumeRequest(volume_id=made.volume_id, node_id=node.name, volume_capability=mount())
    csi.controller.ControllerPublishVolume(publish, timeout=10)
    csi.controller.ControllerPublishVolume(publish, timeout=10)
    csi.refused(csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
        volume_id=made.volume_id, node_id=node.name, volume_capability=mount(), readonly=True),
        Code.ALREADY_EXISTS, "readonly=False")  # fmt: skip
    csi.refused(csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
        volume_id=made.volume_id, node_id=other.name, volume_capability=mount()),
        Code.FAILED_PRECONDITION, "lives on node")  # fmt: skip
    csi.refused(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=made.volume_id, secrets=a),
                Code.FAILED_PRECONDITION, "unpublish it first")  # fmt: skip
    page = csi.controller.ListVolumes(pb.ListVolumesRequest(max_entries=1), timeout=10)
    assert [e.volume.volume_id for e in page.entries] == [made.volume_id] and page.next_token == ""
    assert list(page.entries[0].status.published_node_ids) == [node.name]
    csi.controller.ControllerUnpublishVolume(pb.ControllerUnpublishVolumeRequest(volume_id=made.volume_id), timeout=10)
    capacity = csi.controller.GetCapacity(pb.GetCapacityRequest(), timeout=10).available_capacity
    assert capacity == StoragePool.objects.get(name="csi-local").free_bytes > 0
    for _ in range(2):
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=made.volume_id, secrets=a), timeout=120)
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id="s999999", secrets=a), timeout=10)
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="not-ours", secrets=a), timeout=10)
    assert not Volume.objects.exists()


def test_manage_py_csi_serves_the_socket_and_the_proto_s_modules_are_current(tmp_path, subprocess_env):
    """The command `manage.py up` runs (HIVEMIND_CSI_SOCKET) answers on its socket, mode 0600, and
    stops on SIGTERM; csi_pb2*.py are what grpc_tools makes of csi.proto today."""
    socket = tmp_path / "node.sock"
    env = {**subprocess_env, "HIVEMIND_CSI_SOCKET": str(socket), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "csi"], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: socket.exists() or process.poll() is not None, 30, "the CSI socket")
        assert process.poll() is None, process.stdout.read()
        assert (socket.stat().st_mode & 0o777) == 0o600
        client = Csi(socket)
        assert client.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=10).name == "csi.hivemind.io"
        caps = client.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest(), timeout=10).capabilities
        assert {c.rpc.type for c in caps} == {1, 2, 3}
        controller = client.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest(), timeout=10)
        rpcs = pb.ControllerServiceCapability.RPC.Type
        assert {rpcs.Name(c.rpc.type) for c in controller.capabilities} == {
            "CREATE_DELETE_VOLUME", "PUBLISH_UNPUBLISH_VOLUME", "LIST_VOLUMES", "GET_CAPACITY",
            "CREATE_DELETE_SNAPSHOT", "LIST_SNAPSHOTS", "PUBLISH_READONLY", "EXPAND_VOLUME",
            "LIST_VOLUMES_PUBLISHED_NODES",
        }  # fmt: skip
        client.channel.close()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    bad = subprocess.run([sys.executable, str(REPO / "manage.py"), "csi", "--socket", "relative.sock"], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0 and "--socket: expected an absolute path" in bad.stderr

    out = tmp_path / "gen"
    (out / "storage" / "csi").mkdir(parents=True)
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    outputs = [f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}"]
    assert protoc.main(["protoc", f"-I{REPO}", f"-I{well_known}", *outputs, str(REPO / "storage/csi/csi.proto")]) == 0
    for name in ("csi_pb2.py", "csi_pb2_grpc.py", "csi_pb2.pyi"):
        assert (out / "storage/csi" / name).read_text() == (REPO / "storage/csi" / name).read_text(), (
            f"{name} is stale: run make csi-proto"
        )
