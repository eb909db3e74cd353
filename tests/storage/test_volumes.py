"""Volumes through the whole platform on this machine's node, on real btrfs: the workflows
run by a real worker (control queue and the node's agent), apps mount volumes into real
containers, a replaced replica finds its data again, snapshots revert and clone, and a failed
create leaves nothing behind."""

from __future__ import annotations

import subprocess
import time

from hivemind.applications import services as app_services
from hivemind.applications.models import App
from hivemind.workflows.models import WorkflowState
from storage import services
from storage.models import Snapshot, StoragePool, Volume
from storage.node import report_pools
from tenants.models import TenantUsage
from tests.applications.conftest import docker_replicas, finished, node  # noqa: F401 (the node fixture)
from tests.conftest import wait_for

MiB = 1 << 20
FAST = {"HIVEMIND_NODE_HEARTBEAT": "2"}
SERVER = {
    "image": "hivemind/busybox:latest",
    "command": ["sh", "-c", "exec sleep 3600"],
    "restart": "no",
    "volumes": [{"volume": "data", "path": "/data"}],
}


def make_pool(node, root, name="suite") -> StoragePool:  # noqa: F811 - a Node, not the fixture
    pool = StoragePool.objects.create(name=name, provider="btrfs", node=node, path=str(root), is_default=True)
    assert report_pools(node.name)[name] == "ready"  # what the agent does on its beat
    return StoragePool.objects.get(pk=pool.pk)


def succeeded(workflow):
    done = finished(workflow, timeout=120)
    assert done.state == WorkflowState.SUCCEEDED, done.error
    return done


def sh(docker_client, app: App, script: str) -> str:
    running = [c for c in docker_replicas(docker_client, app) if c.status == "running"]
    assert len(running) == 1, running
    result = running[0].exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def subvolumes(root) -> str:
    return subprocess.run(["btrfs", "subvolume", "list", "-o", str(root)], capture_output=True, text=True).stdout


def test_volume_lifecycle_on_btrfs(platform_processes, world, node, btrfs_root):  # noqa: F811
    platform_processes("worker", extra_env=FAST)
    pool = make_pool(node, btrfs_root)
    assert pool.capacity_bytes > 0 and pool.free_bytes > 0
    staff = world.users["staff"]
    volume = services.volume_create(tenant=world.a, name="data", size="64Mi", actor=staff)
    succeeded(volume.workflow)
    volume.refresh_from_db()
    assert volume.status == Volume.Status.READY
    assert (btrfs_root / "volumes" / volume.handle).is_dir()
    assert f"volumes/{volume.handle}" in subvolumes(btrfs_root)

    succeeded(services.volume_expand(volume=volume, size="128Mi", actor=staff))
    volume.refresh_from_db()
    assert volume.size_bytes == 128 * MiB and volume.status == Volume.Status.READY
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == 128 * MiB

    (btrfs_root / "volumes" / volume.handle / "marker").write_text("one")
    snapshot = services.snapshot_create(volume=volume, name="first", actor=staff)
    succeeded(snapshot.workflow)
    snapshot.refresh_from_db()
    assert snapshot.status == Snapshot.Status.READY
    clone = services.volume_clone(snapshot=snapshot, name="copy", actor=staff)
    succeeded(clone.workflow)
    clone.refresh_from_db()
    assert clone.status == Volume.Status.READY and clone.source_id == snapshot.pk
    clone_dir = btrfs_root / "volumes" / clone.handle
    assert (clone_dir / "marker").read_text() == "one"
    (clone_dir / "marker").write_text("changed in the clone")
    assert (btrfs_root / "volumes" / volume.handle / "marker").read_text() == "one"  # independent

    succeeded(services.snapshot_delete(snapshot=snapshot, actor=staff))
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert (clone_dir / "marker").read_text() == "changed in the clone"  # a clone outlives its snapshot
    for gone in (clone, volume):
        succeeded(services.volume_delete(volume=gone, actor=staff))
        assert not Volume.objects.filter(pk=gone.pk).exists()
        assert not (btrfs_root / "volumes" / gone.handle).exists()
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 0 and usage.storage_bytes == 0


def test_a_failed_create_leaves_no_row_no_quota_and_nothing_on_disk(platform_processes, world, node, tmp_path):  # noqa: F811
    platform_processes("worker", extra_env=FAST)
    # A btrfs pool whose directory is not on btrfs: the node step fails for good.
    pool = StoragePool.objects.create(
        name="broken", provider="btrfs", node=node, path=str(tmp_path / "not-btrfs"), is_default=True,
        status=StoragePool.Status.READY, capacity_bytes=1 << 30, free_bytes=1 << 30,
    )  # fmt: skip
    volume = services.volume_create(tenant=world.a, name="doomed", size="16Mi", actor=world.users["staff"])
    done = finished(volume.workflow, timeout=120)
    assert done.state != WorkflowState.SUCCEEDED
    assert "btrfs" in done.error
    assert not Volume.objects.filter(pk=volume.pk).exists()
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 0 and usage.storage_bytes == 0
    assert not (tmp_path / "not-btrfs" / "volumes" / volume.handle).exists()
    pool.delete()


def test_a_replaced_replica_reads_its_data_and_a_revert_restores_a_snapshot(
    platform_processes,
    world,
    node,  # noqa: F811
    docker_client,
    btrfs_root,
):
    platform_processes("worker", extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    make_pool(node, btrfs_root)
    staff = world.users["staff"]
    volume = services.volume_create(tenant=world.a, name="data", size="64Mi", actor=staff)
    succeeded(volume.workflow)
    app = app_services.app_deploy(tenant=world.a, name="db", spec=SERVER, actor=staff)
    succeeded(app.workflow)
    sh(docker_client, app, "echo first > /data/state; sync")

    victim = next(c for c in docker_replicas(docker_client, app) if c.status == "running")
    victim.kill()  # restart "no": the heal replaces it with a new container
    wait_for(
        lambda: any(c.status == "running" and c.name != victim.name for c in docker_replicas(docker_client, app)),
        60,
        "a replacement replica",
    )
    assert sh(docker_client, app, "cat /data/state") == "first"

    snapshot = services.snapshot_create(volume=volume, name="good", actor=staff)
    succeeded(snapshot.workflow)  # taken while the app runs
    sh(docker_client, app, "echo second > /data/state; head -c 1048576 /dev/zero > /data/more; sync")
    before = sh(docker_client, app, "cat /data/state")
    assert before == "second"
    revert = services.volume_revert(volume=volume, snapshot=Snapshot.objects.get(pk=snapshot.pk), actor=staff)
    succeeded(revert)
    wait_for(lambda: any(c.status == "running" for c in docker_replicas(docker_client, app)), 60, "the replica back")
    assert sh(docker_client, app, "cat /data/state; ls /data") == "first\nstate"
    volume.refresh_from_db()
    assert volume.status == Volume.Status.READY

    # The volume is the app's: it cannot go while mounted; after the app, it can.
    from hivemind.core.errors import Conflict

    try:
        services.volume_delete(volume=volume, actor=staff)
        raise AssertionError("deleted a mounted volume")
    except Conflict as exc:
        assert "db" in str(exc)
    succeeded(app_services.app_delete(app=app, actor=staff))
    time.sleep(0.5)
    succeeded(services.volume_delete(volume=volume, actor=staff))


def test_each_replica_index_keeps_its_own_template_volume_across_scale_down_and_up(
    platform_processes,
    world,
    node,  # noqa: F811
    docker_client,
    btrfs_root,
):
    platform_processes("worker", extra_env=FAST)
    make_pool(node, btrfs_root)
    staff = world.users["staff"]
    spec = {
        "image": "hivemind/busybox:latest",
        # Each replica writes its host name (db-<index>) once, into its own volume.
        "command": ["sh", "-c", "[ -f /data/first ] || hostname > /data/first; exec sleep 3600"],
        "restart": "no",
        "volume_templates": [{"name": "data", "size": "32Mi", "path": "/data"}],
    }
    app = app_services.app_deploy(tenant=world.a, name="db", spec=spec, replicas=2, actor=staff)
    succeeded(app.workflow)
    claims = {v.name: v for v in Volume.objects.filter(tenant=world.a)}
    assert set(claims) == {"db-data-0", "db-data-1"}
    for claim in claims.values():
        assert claim.status == Volume.Status.READY and claim.labels == {"app": "db", "template": "data"}
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == 64 * MiB

    def firsts() -> dict[int, str]:
        out = {}
        for container in docker_replicas(docker_client, app):
            if container.status == "running":
                replica = int(container.labels["io.hivemind.replica"])
                out[replica] = container.exec_run(["cat", "/data/first"]).output.decode().strip()
        return out

    assert firsts() == {0: "db-0", 1: "db-1"}
    succeeded(app_services.app_scale(app=App.objects.get(pk=app.pk), replicas=1, actor=staff))
    assert Volume.objects.filter(name="db-data-1").exists()  # kept when the app scales down
    (btrfs_root / "volumes" / claims["db-data-1"].handle / "marker").write_text("kept")
    succeeded(app_services.app_scale(app=App.objects.get(pk=app.pk), replicas=2, actor=staff))
    assert firsts() == {0: "db-0", 1: "db-1"}  # replica 1 found its own volume again
    replica1 = next(c for c in docker_replicas(docker_client, app) if c.labels["io.hivemind.replica"] == "1")
    assert replica1.exec_run(["cat", "/data/marker"]).output.decode() == "kept"
    assert Volume.objects.filter(tenant=world.a).count() == 2

    # The volumes are the app's while it exists; after it, they stay until deleted.
    from hivemind.core.errors import Conflict

    try:
        services.volume_delete(volume=Volume.objects.get(name="db-data-0"), actor=staff)
        raise AssertionError("deleted a replica's volume while its app exists")
    except Conflict as exc:
        assert "db" in str(exc)
    succeeded(app_services.app_delete(app=App.objects.get(pk=app.pk), actor=staff))
    for volume in Volume.objects.filter(tenant=world.a):
        succeeded(services.volume_delete(volume=volume, actor=staff))
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == 0


def test_scheduled_snapshots_keep_the_newest_and_leave_the_users_own(platform_processes, world, node, btrfs_root):  # noqa: F811
    from storage import schedules

    platform_processes("worker", extra_env=FAST)
    make_pool(node, btrfs_root)
    staff = world.users["staff"]
    volume = services.volume_create(tenant=world.a, name="data", size="32Mi", actor=staff)
    succeeded(volume.workflow)
    volume.refresh_from_db()
    mine = services.snapshot_create(volume=volume, name="mine", actor=staff)
    succeeded(mine.workflow)
    schedules.schedule_set(volume=volume, every="1h", keep=2, actor=staff)
    taken = []
    for _ in range(3):
        result = schedules.run(volume.pk, 2)
        assert "snapshot" in result, result
        taken.append(result["snapshot"])
        snap = Snapshot.objects.get(volume=volume, name=result["snapshot"])
        wait_for(lambda s=snap: Snapshot.objects.get(pk=s.pk).status == Snapshot.Status.READY, 60, "the snapshot")
        wait_for(lambda: not Snapshot.objects.filter(volume=volume, status="deleting").exists(), 60, "pruning")
        time.sleep(1.1)  # names are per second
    names = set(Snapshot.objects.filter(volume=volume).values_list("name", flat=True))
    assert names == {"mine", *taken[1:]}, names
    on_disk = {p.name for p in (btrfs_root / "snapshots" / volume.handle).iterdir()}
    assert on_disk == {s.handle for s in Snapshot.objects.filter(volume=volume)}
    succeeded(services.volume_delete(volume=volume, actor=staff))
    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(name=f"volume-snapshots-{volume.pk}").exists()


def test_a_node_gone_during_a_create_fails_it_cleanly_and_its_leftovers_go_later(
    platform_processes,
    world,
    node,  # noqa: F811
    btrfs_root,
):
    import os
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from hivemind.nodes.models import Node
    from storage.node import STRAY_GRACE, remove_strays
    from storage.steps import provider_of

    # The pool's node stopped beating long ago: nothing consumes its queue.
    pool = StoragePool.objects.create(
        name="gone", provider="btrfs", node=node, path=str(btrfs_root), is_default=True,
        status=StoragePool.Status.READY, capacity_bytes=1 << 30, free_bytes=1 << 30,
    )  # fmt: skip
    Node.objects.filter(pk=node.pk).update(
        status=Node.Status.NOT_READY, last_heartbeat=timezone.now() - timedelta(hours=1)
    )
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    volume = services.volume_create(tenant=world.a, name="orphan", size="16Mi", actor=world.users["staff"])
    done = finished(volume.workflow, timeout=120)
    assert done.state != WorkflowState.SUCCEEDED and node.name in done.error, done.error
    assert not Volume.objects.filter(pk=volume.pk).exists()
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 0 and usage.storage_bytes == 0

    # What such a create may leave on the node (its step ran, the node went before it reported)
    # is removed by the node's own report once it is old enough; a volume with a row stays.
    provider = provider_of(pool)
    provider.prepare()
    provider.create(volume.handle, 16 << 20)
    provider.snapshot(volume.handle, "s999999")
    kept = Volume.objects.create(tenant=world.a, name="kept", pool=pool, size_bytes=16 << 20, status="ready")
    provider.create(kept.handle, 16 << 20)
    assert remove_strays(pool, provider) == []  # too fresh: it may be being made right now
    later = os.stat(btrfs_root / "volumes" / volume.handle).st_mtime + STRAY_GRACE + 1
    assert remove_strays(pool, provider, now=later) == [volume.handle]
    assert not (btrfs_root / "volumes" / volume.handle).exists()
    assert not (btrfs_root / "snapshots" / volume.handle).exists()
    assert provider.exists(kept.handle)
