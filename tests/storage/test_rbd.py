"""RBD pools through the platform, on the session's throwaway Ceph cluster (tests/ceph.py):
added by staff with the cephx key sealed (never shown again), prepared and measured by the
node's agent, and volumes made, snapshotted, cloned, expanded and deleted by real workflows,
checked in the cluster through librbd."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from hivemind.nodes.models import Node
from storage import services
from storage.models import Snapshot, StoragePool, Volume
from storage.node import report_pools
from storage.steps import provider_of
from tenants.models import TenantUsage
from tests.applications.conftest import node  # noqa: F401 (the node fixture)
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.storage.test_volumes import FAST, succeeded

MiB = 1 << 20


def images(cluster, pool: str = "platform") -> set[str]:
    import rbd

    with cluster.rados() as handle, handle.open_ioctx(pool) as ioctx:
        return set(rbd.RBD().list(ioctx))


def options(cluster, **more) -> dict:
    cluster.make_pool("platform")
    return {"monitors": cluster.monitors, "user": "admin", "pool": "platform", **more}


def test_an_rbd_pool_is_added_with_its_key_sealed_and_checked_fields(world, ceph_cluster):
    Node.objects.create(name="st-9", address="10.250.0.9", status="ready")
    client = world.client("staff")
    url = reverse("api:storage-pool-list")
    base = {"name": "ceph", "provider": "rbd", "node": "st-9", "path": "/var/lib/hivemind/rbd",
            "options": options(ceph_cluster), "secrets": {"key": ceph_cluster.admin_key}}  # fmt: skip
    for change, field, message in [
        ({"secrets": {}}, "secrets", "key: expected the cephx user's secret"),
        ({"secrets": {"key": "k", "token": "t"}}, "secrets", "unknown secret 'token'"),
        ({"options": {**base["options"], "fs": "btrfs"}}, "options", "fs: expected one of xfs, ext4"),
        ({"options": {"pool": "platform"}}, "options", "monitors: expected"),
        ({"options": {**base["options"], "colour": "red"}}, "options", "unknown option 'colour'"),
        ({"secrets": "key"}, "secrets", "expected an object"),
        ({"provider": "local", "secrets": {}}, "options", "the local provider takes no options"),
        ({"provider": "local", "options": {}}, "secrets", "the local provider takes no secrets"),
    ]:
        response = client.post(url, {**base, **change}, format="json")
        assert response.status_code == 400, (change, response.content)
        assert message in json.dumps(response.json()[field]), (change, response.json())
    assert not StoragePool.objects.exists()

    made = client.post(url, base, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["secrets_set"] == ["key"] and "secrets" not in body
    assert body["options"] == {**options(ceph_cluster), "fs": "xfs", "prefix": "hivemind-"}
    assert body["capabilities"]["shared"] is True and body["capabilities"]["expand_online"] is True
    shown = client.get(reverse("api:storage-pool-detail", args=[body["id"]])).content.decode()
    assert ceph_cluster.admin_key not in shown and ceph_cluster.admin_key not in made.content.decode()
    pool = StoragePool.objects.get(pk=body["id"])
    assert ceph_cluster.admin_key.encode() not in bytes(pool.sealed_secrets)
    assert provider_of(pool).key == ceph_cluster.admin_key  # unsealed only where the provider runs
    assert world.client("owner").get(url).status_code == 403


def test_the_agent_prepares_an_rbd_pool_or_says_why_not(world, ceph_cluster, node, tmp_path):  # noqa: F811
    good = services.pool_create(name="ceph", provider="rbd", node=node.name, path=str(tmp_path / "good"),
                                options=options(ceph_cluster), secrets={"key": ceph_cluster.admin_key},
                                actor=world.users["staff"])  # fmt: skip
    missing = services.pool_create(name="nopool", provider="rbd", node=node.name, path=str(tmp_path / "missing"),
                                   options={**options(ceph_cluster), "pool": "no-such-pool"},
                                   secrets={"key": ceph_cluster.admin_key}, actor=world.users["staff"])  # fmt: skip
    report = report_pools(node.name)
    assert report["ceph"] == "ready", report
    assert "the cluster has no pool no-such-pool" in report["nopool"]
    good.refresh_from_db()
    missing.refresh_from_db()
    assert good.status == StoragePool.Status.READY and good.capacity_bytes > 0 and good.free_bytes > 0
    assert missing.status == StoragePool.Status.UNAVAILABLE and "no-such-pool" in missing.message


def test_volume_lifecycle_on_rbd(platform_processes, world, ceph_cluster, node, tmp_path):  # noqa: F811
    platform_processes("worker", extra_env=FAST)
    staff = world.users["staff"]
    pool = services.pool_create(name="ceph", provider="rbd", node=node.name, path=str(tmp_path / "rbd"),
                                options=options(ceph_cluster, prefix="life-"),
                                secrets={"key": ceph_cluster.admin_key}, actor=staff)  # fmt: skip
    assert report_pools(node.name)["ceph"] == "ready"
    with pytest.raises(Exception, match="holds volumes of at least 300Mi"):
        services.volume_create(tenant=world.a, name="tiny", size="64Mi", pool="ceph", actor=staff)

    volume = services.volume_create(tenant=world.a, name="data", size="320Mi", pool="ceph", actor=staff)
    succeeded(volume.workflow)
    volume.refresh_from_db()
    assert volume.status == Volume.Status.READY
    assert f"life-{volume.handle}" in images(ceph_cluster)
    provider = provider_of(pool)
    (provider.attach(volume.handle) / "marker").write_text("one")  # as a replica's node does
    snapshot = services.snapshot_create(volume=volume, name="first", actor=staff)
    succeeded(snapshot.workflow)
    snapshot.refresh_from_db()
    assert snapshot.status == Snapshot.Status.READY and provider.snapshots(volume.handle) == [snapshot.handle]

    clone = services.volume_clone(snapshot=snapshot, name="copy", actor=staff)
    succeeded(clone.workflow)
    clone.refresh_from_db()
    assert provider.parent(clone.handle) == f"{volume.handle}@{snapshot.handle}"  # copy-on-write
    assert (provider.attach(clone.handle) / "marker").read_text() == "one"

    succeeded(services.volume_expand(volume=volume, size="1Gi", actor=staff))  # while attached: online
    assert provider.size(volume.handle) == 1 << 30
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == (1 << 30) + 320 * MiB

    succeeded(services.snapshot_delete(snapshot=snapshot, actor=staff))
    assert provider.parent(clone.handle) is None  # flattened first: the clone outlives its snapshot
    assert (provider.path(clone.handle) / "marker").read_text() == "one"
    for gone in (clone, volume):
        succeeded(services.volume_delete(volume=gone, actor=staff))
        assert not Volume.objects.filter(pk=gone.pk).exists()
    assert not {f"life-{volume.handle}", f"life-{clone.handle}"} & images(ceph_cluster)
    assert not provider.attached(volume.handle) and not provider.attached(clone.handle)
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 0 and usage.storage_bytes == 0


def test_nodes_report_what_they_can_attach_and_replicas_go_only_where_they_can(world, ceph_cluster):
    """This machine attaches RBD volumes through rbd-fuse (no krbd, no nbd here); a replica
    mounting an RBD volume goes only to a node that reports it can, and when none can the
    scheduler says which label it looked for."""
    from hivemind.applications.models import App
    from hivemind.applications.placement import place_replicas
    from hivemind.applications.spec import clean_spec
    from hivemind.applications.steps import Unschedulable
    from storage import capabilities

    labels = capabilities.node_labels()
    assert {k: v for k, v in labels.items() if "/rbd" in k} == {"storage.hivemind.io/rbd": "yes",
                                                                "storage.hivemind.io/rbd-path": "fuse"}  # fmt: skip
    able = Node.objects.create(name="able", address="10.250.0.11", status="ready", cpu_millis=4000,
                               memory_bytes=8 << 30, labels={"storage.hivemind.io/rbd": "yes"})  # fmt: skip
    unable = Node.objects.create(name="unable", address="10.250.0.12", status="ready", cpu_millis=8000,
                                 memory_bytes=16 << 30, labels={"storage.hivemind.io/rbd": "no"})  # fmt: skip
    pool = StoragePool.objects.create(name="ceph", provider="rbd", node=unable, path="/srv/rbd",
                                      options=options(ceph_cluster), status="ready")  # fmt: skip
    Volume.objects.create(tenant=world.a, name="data", pool=pool, size_bytes=512 * MiB, status="ready")
    spec = clean_spec({"image": "hivemind/busybox:latest", "volumes": [{"volume": "data", "path": "/data"}]})
    app = App(tenant=world.a, name="db")
    assert [placed.name for placed in place_replicas(app, spec, 2)] == ["able", "able"]  # not the pool's own node
    Node.objects.filter(pk=able.pk).update(labels={"storage.hivemind.io/rbd": "no"})
    with pytest.raises(Unschedulable, match=r"storage\.hivemind\.io/rbd"):
        place_replicas(app, spec, 1)


def test_hivemind_pool_add_and_rm_an_rbd_pool(cli, web_server, world, ceph_cluster):  # noqa: F811
    Node.objects.create(name="edge-01", address="10.250.0.21", status="ready")
    login_as(cli, web_server, world, "staff")
    base = ["pool", "add", "ceph", "--provider", "rbd", "--node", "edge-01", "--path", "/srv/rbd",
            "--set", f"monitors={ceph_cluster.monitors}", "--set", "pool=platform"]  # fmt: skip
    bad = cli(*base, "--set", "fs=btrfs", "--secret", f"key={ceph_cluster.admin_key}")
    assert bad.code == 1 and "fs: expected one of xfs, ext4" in one_error_line(bad), bad
    made = cli(*base, "--secret", f"key={ceph_cluster.admin_key}")
    assert made.code == 0 and "Added rbd pool ceph on edge-01" in made.out, made
    listed = cli("pool", "ls", "-o", "json")
    assert listed.code == 0 and ceph_cluster.admin_key not in listed.out
    assert json.loads(listed.out)[0]["secrets_set"] == ["key"]
    assert cli("pool", "rm", "nope", "--yes").code == 6
    gone = cli("pool", "rm", "ceph", "--yes")
    assert gone.code == 0 and "Deleted storage pool ceph." in gone.out, gone
    assert not StoragePool.objects.exists()
