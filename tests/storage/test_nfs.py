"""NFS pools (storage/providers/nfs.py) on a real nfs-ganesha, checked through the real protocol
from Python (nfs-rs): this machine has no kernel NFS client, so nothing here mounts NFS.

A managed pool's ganesha is the one its provider starts (as the pool node's agent does), once
for the session on the session's btrfs file system (tests/storage/conftest.py `nfs_managed`);
external pools point at the session's own ganesha (tests/nfs.py, `nfs_server`)."""

from __future__ import annotations

import json
import os
import time

import pytest
from django.conf import settings
from django.urls import reverse

from hivemind.applications.models import App, AppRevision, Container
from hivemind.nodes.models import Node
from storage import capabilities, services
from storage.models import StoragePool, Volume
from storage.node import report_pools
from storage.providers import registry
from storage.providers.base import StorageError, Unsupported
from storage.providers.nfs import kernel_client
from storage.steps import provider_of
from tests import nfs
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.storage.test_volumes import succeeded

MiB = 1 << 20
LABEL = "storage.hivemind.io/nfs"


def managed(tmp_path, **more):
    """A managed provider on a directory of its own (not started: nothing here needs ganesha)."""
    options = registry.get("nfs").validate_options({"address": "127.0.0.1", "port": 2049, **more}, {})
    return registry.instance("nfs", tmp_path / "pool", options)


def read(port: int, handle: str, name: str) -> bytes:
    with nfs.client("127.0.0.1", port, f"/hivemind/{handle}") as client, client.open(name, "rb") as file:
        return file.read()


def write(port: int, handle: str, name: str, data: bytes) -> None:
    with nfs.client("127.0.0.1", port, f"/hivemind/{handle}") as client, client.open(name, "wb") as file:
        file.write(data)


# -- options, through the API ----------------------------------------------------------------------


def test_an_nfs_pool_is_added_with_checked_options(world):
    Node.objects.create(name="st-9", address="10.250.0.9", status="ready")
    client = world.client("staff")
    url = reverse("api:storage-pool-list")
    base = {"name": "shared", "provider": "nfs", "node": "st-9", "path": "/srv/hivemind/nfs",
            "options": {"address": "10.250.0.9"}}  # fmt: skip
    external = {"mode": "external", "server": "nfs.example.com", "export": "/exports/hivemind"}
    for options, message in [
        ({}, "address: expected the pool node's IP address"),
        ({"address": "10.0.0.1; rm -rf /"}, "address: expected an IP address (v4 or v6)"),
        ({"address": "nfs.example.com"}, "address: expected an IP address (v4 or v6)"),
        ({"address": "10.0.0.1", "port": 0}, "port: expected a TCP port from 1 to 65535"),
        ({"address": "10.0.0.1", "port": 65536}, "port: expected a TCP port from 1 to 65535"),
        ({"address": "10.0.0.1", "port": "2049x"}, "port: expected a TCP port from 1 to 65535"),
        ({"address": "10.0.0.1", "port": True}, "port: expected a TCP port from 1 to 65535"),
        ({"address": "10.0.0.1", "root_squash": "maybe"}, "root_squash: expected true or false"),
        ({"address": "10.0.0.1", "version": "3"}, "version: expected one of 4.1, 4.0 (a managed pool serves NFSv4"),
        ({"address": "10.0.0.1", "mode": "both"}, "mode: expected one of managed, external"),
        ({"address": "10.0.0.1", "server": "10.0.0.2"}, "server: only for mode external"),
        ({"address": "10.0.0.1", "colour": "red"}, "unknown option 'colour'"),
        ({"mode": "external", "export": "/x"}, "server: expected the NFS server's IP address or host name"),
        ({**external, "server": "nfs server;"}, "server: expected an IP address or host name"),
        ({**external, "export": "exports/hivemind"}, "export: expected the export's absolute path"),
        ({**external, "export": "/exports/../etc"}, "export: expected the export's absolute path"),
        ({**external, "export": '/x"; }'}, "export: expected the export's absolute path"),
        ({**external, "export": None}, "export: expected the export's absolute path"),
        ({**external, "address": "10.0.0.1"}, "address: only for mode managed"),
        ({**external, "root_squash": False}, "root_squash: only for mode managed"),
        ({**external, "version": "4.2"}, "version: expected one of 4.1, 4.0, 3"),
    ]:
        response = client.post(url, {**base, "options": options}, format="json")
        assert response.status_code == 400, (options, response.content)
        assert message in json.dumps(response.json()["options"]), (options, response.json())
    response = client.post(url, {**base, "secrets": {"key": "k"}}, format="json")
    assert response.status_code == 400 and "takes no secrets" in json.dumps(response.json()["secrets"])
    assert not StoragePool.objects.exists()

    made = client.post(url, base, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["options"] == {"mode": "managed", "address": "10.250.0.9", "port": 2049, "root_squash": True,
                               "version": "4.1"}  # fmt: skip
    assert body["capabilities"]["shared"] is True and "ReadWriteMany" in body["capabilities"]["access_modes"]
    made = client.post(url, {**base, "name": "filer", "path": "/srv/filer",
                             "options": {**external, "version": 3, "port": "2050"}}, format="json")  # fmt: skip
    assert made.status_code == 201, made.content
    assert made.json()["options"] == {**external, "port": 2050, "version": "3"}
    # An external server's file system is not Hivemind's: the API refuses snapshots up front.
    assert made.json()["capabilities"]["snapshot"] is False and made.json()["capabilities"]["clone"] is False
    assert body["capabilities"]["snapshot"] is True  # managed: on btrfs (else refused by its node, saying why)


# -- the done-when: exports follow the volume and its replicas --------------------------


def _replica(world, app_name: str, volume: str, node: Node) -> Container:
    """A replica placed on `node` whose app mounts `volume` (the rows the scheduler writes)."""
    spec = {"image": "hivemind/busybox", "volumes": [{"volume": volume, "path": "/data"}]}
    app = App.objects.create(tenant=world.a, name=app_name, replicas=1)
    app.revision = AppRevision.objects.create(app=app, number=1, spec=spec)
    app.save(update_fields=["revision"])
    return Container.objects.create(tenant=world.a, app=app, revision=app.revision, replica=0, node=node,
                                    name=f"{app_name}-0", state=Container.State.RUNNING)  # fmt: skip


def test_an_nfs_volume_is_exported_to_the_nodes_of_its_replicas_and_unexported_when_deleted(
    platform_processes, world, nfs_managed
):
    """The pool node's agent runs ganesha; a volume's export appears with it (for nobody), lets in
    the node its replica runs on (data written through the protocol lands in the volume's
    directory, root squashed), follows the replica to another node, and goes with the volume."""
    server = Node.objects.create(name=settings.NODE_NAME, address="127.0.0.1", status="ready")
    here = Node.objects.create(name="client-1", address="127.0.0.1", status="ready")  # nfs-rs connects from it
    there = Node.objects.create(name="client-2", address="127.0.0.2", status="ready")
    platform_processes("worker")
    staff, port = world.users["staff"], nfs_managed["options"]["port"]
    pool = services.pool_create(name="nfs", provider="nfs", node=server.name, path=str(nfs_managed["path"]),
                                options=nfs_managed["options"], actor=staff)  # fmt: skip
    began = time.monotonic()
    assert report_pools(server.name)["nfs"] == "ready"  # ganesha started (or found running)
    started = time.monotonic() - began
    pool.refresh_from_db()
    assert pool.capacity_bytes > 0 and pool.free_bytes > 0
    provider = provider_of(pool)
    assert provider.server_pid() is not None

    volume = services.volume_create(tenant=world.a, name="data", size="64Mi", pool="nfs", actor=staff)
    succeeded(volume.workflow)
    handle = Volume.objects.get(pk=volume.pk).handle
    assert provider.exports()[handle] == []  # exported, to nobody yet
    conf = (provider.ganesha_dir / "ganesha.conf").read_text()
    assert f'Pseudo = "/hivemind/{handle}"' in conf and "Squash = Root_Squash" in conf
    assert "NotFound" in nfs.refused("127.0.0.1", port, f"/hivemind/{handle}")

    replica = _replica(world, "web", "data", here)
    odd = Node.objects.create(name="odd", address='10.9.9.9; } EXPORT { Path = "/"', status="ready")
    _replica(world, "odd", "data", odd)  # a node address that is no address never reaches the config
    report_pools(server.name)  # the agent's beat: the access list from the replicas' nodes
    assert provider.exports()[handle] == ["127.0.0.1"]
    assert "CLIENT { Clients = 127.0.0.1; Access_Type = RW; }" in (provider.ganesha_dir / "ganesha.conf").read_text()
    began = time.monotonic()
    payload = os.urandom(8 * MiB)
    write(port, handle, "written-over-nfs", payload)
    seconds = time.monotonic() - began
    landed = provider.path(handle) / "written-over-nfs"
    assert landed.read_bytes() == payload and landed.stat().st_uid == 65534  # root squashed
    assert landed.parent == nfs_managed["path"] / "volumes" / handle
    print(f"ganesha ready in {started:.2f} s; 8 MiB written through nfs-rs in {seconds:.2f} s")

    Container.objects.filter(pk=replica.pk).update(node=there)  # rescheduled to another node
    report_pools(server.name)
    assert provider.exports()[handle] == ["127.0.0.2"]
    assert "NotFound" in nfs.refused("127.0.0.1", port, f"/hivemind/{handle}")  # this node is out now
    Container.objects.filter(pk=replica.pk).update(state=Container.State.REMOVED)
    report_pools(server.name)
    assert provider.exports()[handle] == []

    Container.objects.filter(tenant=world.a).delete()
    App.objects.filter(tenant=world.a).delete()
    succeeded(services.volume_delete(volume=volume, actor=staff))
    assert handle not in provider.exports()
    assert f"/hivemind/{handle}" not in (provider.ganesha_dir / "ganesha.conf").read_text()
    assert not (nfs_managed["path"] / "volumes" / handle).exists()
    assert "NotFound" in nfs.refused("127.0.0.1", port, f"/hivemind/{handle}")


def test_placement_on_a_node_without_an_nfs_client_is_refused_with_the_reason(world, tmp_path):
    from hivemind.applications.placement import place_replicas
    from hivemind.applications.spec import clean_spec
    from hivemind.applications.steps import Unschedulable

    here = "yes" if kernel_client() else "no"  # none of the build machines has one
    assert capabilities.node_labels()[LABEL] == here  # what this node's agent reports
    able = Node.objects.create(name="able", address="10.250.0.11", status="ready", cpu_millis=4000,
                               memory_bytes=8 << 30, labels={LABEL: "yes"})  # fmt: skip
    unable = Node.objects.create(name="unable", address="10.250.0.12", status="ready", cpu_millis=8000,
                                 memory_bytes=16 << 30, labels={LABEL: "no"})  # fmt: skip
    pool = StoragePool.objects.create(name="nfs", provider="nfs", node=unable, path="/srv/nfs", status="ready",
                                      options={"mode": "managed", "address": "10.250.0.12", "port": 2049})  # fmt: skip
    Volume.objects.create(tenant=world.a, name="data", pool=pool, size_bytes=64 * MiB, status="ready")
    spec = clean_spec({"image": "hivemind/busybox:latest", "volumes": [{"volume": "data", "path": "/data"}]})
    app = App(tenant=world.a, name="db")
    assert [placed.name for placed in place_replicas(app, spec, 2)] == ["able", "able"]
    Node.objects.filter(pk=able.pk).update(labels={LABEL: "no"})
    with pytest.raises(Unschedulable, match=r"storage\.hivemind\.io/nfs"):
        place_replicas(app, spec, 1)

    # A node that mounts anyway (a step run by hand) says why it cannot, and nothing is left.
    if kernel_client() is None:
        client = registry.instance("nfs", tmp_path / "client-node", {**pool.options, "node": "unable",
                                                                     "pool_node": "elsewhere"})  # fmt: skip
        with pytest.raises(StorageError, match=r"has no kernel NFS client .* storage\.hivemind\.io/nfs=yes"):
            client.attach("v1")
        assert client.attached_volumes() == []


# -- snapshots: btrfs subvolumes where the pool is on btrfs, refused elsewhere -----------------


def test_snapshots_and_clones_of_a_managed_pool_on_btrfs_are_exported_again(nfs_managed):
    """Revert replaces the volume's subvolume: its export (and access list) comes back on the new
    one; a clone is a new export."""
    provider = registry.instance("nfs", nfs_managed["path"], nfs_managed["options"])
    port = nfs_managed["options"]["port"]
    provider.prepare()
    try:
        provider.create("v900001", 64 * MiB)
        provider.export_to({"v900001": ["127.0.0.1"]})
        write(port, "v900001", "f", b"before")
        provider.snapshot("v900001", "s1")
        write(port, "v900001", "f", b"after")
        provider.revert("v900001", "s1")
        assert read(port, "v900001", "f") == b"before"  # through the export, on the new subvolume
        assert provider.exports()["v900001"] == ["127.0.0.1"]
        provider.clone("v900001", "s1", "v900002", 64 * MiB)
        assert provider.exports()["v900002"] == []  # exported, to nobody until a replica mounts it
        provider.export_to({"v900002": ["127.0.0.1"]})
        assert read(port, "v900002", "f") == b"before" and provider.exports()["v900001"] == []
        assert provider.snapshots("v900001") == ["s1"]
    finally:
        provider.delete("v900001")
        provider.delete("v900002")
    assert not set(provider.exports()) & {"v900001", "v900002"}


def test_snapshots_are_refused_where_the_pool_is_not_on_btrfs(tmp_path):
    provider = managed(tmp_path)
    provider.pool_dir.mkdir(parents=True)
    for call in (lambda: provider.snapshot("v1", "s1"), lambda: provider.clone("v1", "s1", "v2", MiB),
                 lambda: provider.revert("v1", "s1"), lambda: provider.delete_snapshot("v1", "s1")):  # fmt: skip
        with pytest.raises(Unsupported, match=rf"has no (snapshots|clones): its directory {provider.pool_dir} is on "
                                              r"\S+, not btrfs"):  # fmt: skip
            call()
    assert provider.snapshots("v1") == []


# -- external: directories under one export, through the protocol ------------------------------


def test_an_external_nfs_pool_makes_volumes_as_directories_through_the_protocol(nfs_server, tmp_path):
    options = registry.get("nfs").validate_options(nfs_server.options, {})
    provider = registry.instance("nfs", tmp_path / "ext", options)
    provider.prepare()
    assert 0 < provider.capacity().free <= provider.capacity().total
    provider.create("v41", 32 * MiB)
    provider.create("v41", 32 * MiB)  # again: nothing to do
    with pytest.raises(StorageError, match="v41 already exists with size"):
        provider.create("v41", 16 * MiB)
    assert provider.exists("v41") and not provider.exists("v42") and provider.size("v41") == 32 * MiB
    assert (nfs_server.export_dir / "v41").is_dir()

    with nfs.client("127.0.0.1", nfs_server.port, "/external") as client:
        client.mkdir("v41/deep/er", parents=True)
        with client.open("v41/deep/er/data", "wb") as file:
            file.write(b"x" * MiB)
        client.symlink("/etc", "v41/escape")  # removed, never followed
    assert (nfs_server.export_dir / "v41" / "deep" / "er" / "data").stat().st_size == MiB
    assert provider.usage("v41") == MiB
    provider.expand("v41", 64 * MiB)
    assert provider.size("v41") == 64 * MiB
    with pytest.raises(StorageError, match="cannot shrink"):
        provider.expand("v41", MiB)
    with pytest.raises(Unsupported, match=r"has no snapshots: the external server's file system"):
        provider.snapshot("v41", "s1")
    with pytest.raises(Unsupported, match=r"has no clones"):
        provider.clone("v41", "s1", "v43", MiB)

    provider.delete("v41")
    provider.delete("v41")  # again: nothing to do
    assert not provider.exists("v41") and not (nfs_server.export_dir / "v41").exists()
    assert os.path.isdir("/etc") and os.listdir(nfs_server.export_dir / ".hivemind" / "sizes") == []


def test_an_external_server_that_does_not_answer_fails_with_its_address(tmp_path):
    from tests.conftest import free_port

    options = {"mode": "external", "server": "127.0.0.1", "port": free_port(), "export": "/nothing"}
    provider = registry.instance("nfs", tmp_path / "ext", options)
    began = time.monotonic()
    with pytest.raises(StorageError, match=r"NFS pool on 127\.0\.0\.1:\d+/nothing: cannot mount the export"):
        provider.prepare()
    assert time.monotonic() - began < 15


def test_a_managed_pool_refuses_a_directory_ganesha_could_not_hold(tmp_path):
    provider = registry.instance("nfs", tmp_path / 'we"ird; }', {"address": "127.0.0.1", "port": 2049})
    with pytest.raises(StorageError, match="ganesha cannot export a directory named"):
        provider.prepare()
    assert provider.server_pid() is None


def test_a_managed_pool_whose_port_is_taken_says_so(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        provider = registry.instance("nfs", tmp_path / "pool", {"address": "127.0.0.1", "port": port})
        with pytest.raises(StorageError, match=rf"nfs-ganesha did not start: Error binding .* \(is 127\.0\.0\.1:{port} "
                                               r"taken, or not an address of this node\?\)"):  # fmt: skip
            provider.prepare()
    assert provider.server_pid() is None


def test_hivemind_pool_add_an_nfs_pool(cli, web_server, world):  # noqa: F811
    Node.objects.create(name="edge-01", address="10.250.0.21", status="ready")
    login_as(cli, web_server, world, "staff")
    base = ["pool", "add", "shared", "--provider", "nfs", "--node", "edge-01", "--path", "/srv/hivemind/nfs"]
    bad = cli(*base, "--set", "address=10.250.0.21", "--set", "port=70000")
    assert bad.code == 1 and "port: expected a TCP port from 1 to 65535" in one_error_line(bad), bad
    made = cli(*base, "--set", "address=10.250.0.21", "--set", "root_squash=false", "--set", "port=12049")
    assert made.code == 0 and "Added nfs pool shared on edge-01" in made.out, made
    expected = {"mode": "managed", "address": "10.250.0.21", "port": 12049, "root_squash": False, "version": "4.1"}
    assert StoragePool.objects.get(name="shared").options == expected
    external = cli("pool", "add", "filer", "--provider", "nfs", "--node", "edge-01", "--path", "/srv/filer",
                   "--set", "mode=external", "--set", "server=filer.example.com", "--set", "export=/exports/hm",
                   "--set", "version=3")  # fmt: skip
    assert external.code == 0, external
    assert StoragePool.objects.get(name="filer").options["version"] == "3"
