"""Backup runs end to end on a real btrfs pool into a real local location: a run through a real
worker (control queue and this node's queue) whose files restore byte-identical and whose
configuration document loads; a second run after a 1 % change stores little more than the
change; failed runs (a volume gone from its node, a location that cannot be written) end
failed naming the step and leave no snapshot in the repository. The failure tests run the
workflow's steps in this process, as the workers would (`drive`)."""

from __future__ import annotations

import filecmp
import os
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from backups import keys, runs, services, state
from backups.metrics import BackupCollector
from backups.models import Backup, BackupPolicy
from backups.runs import provider_snapshot_name
from hivemind.nodes.models import Node
from hivemind.workflows.models import WorkflowState
from storage import services as storage_services
from storage.models import StoragePool, Volume
from storage.steps import provider_of
from tests.backups.workflows import drive
from tests.conftest import wait_for
from tests.storage.conftest import btrfs_mount, btrfs_root  # noqa: F401 - the session's btrfs file system
from tests.test_metrics import promtool_check

KiB = 1 << 10
FILES, FILE_SIZE = 100, 128 * KiB  # 12.5 MiB; one file is 1 %


def this_node() -> Node:
    node, _ = Node.objects.update_or_create(name=settings.NODE_NAME, defaults={"status": Node.Status.READY})
    return node


def make_pool(node: Node, root: Path) -> StoragePool:
    pool = StoragePool.objects.create(name="backups", provider="btrfs", node=node, path=str(root), is_default=True,
                                      capacity_bytes=1 << 30, free_bytes=1 << 30)  # fmt: skip
    provider_of(pool).prepare()
    return pool


def make_volume(tenant, name: str, pool: StoragePool, status: str = "ready") -> Volume:
    """A volume made as its create workflow makes it, without running one."""
    volume = Volume.objects.create(tenant=tenant, name=name, pool=pool, size_bytes=64 << 20, status=status)
    provider_of(pool).create(volume.handle, volume.size_bytes)
    return volume


def fill(directory: Path) -> None:
    (directory / "sub").mkdir()
    for n in range(FILES):
        (directory / "sub" / f"f{n:03}").write_bytes(os.urandom(FILE_SIZE))
    (directory / "readme").write_text("hello\n")
    os.symlink("sub/f000", directory / "first")


def stored_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def same_tree(left: Path, right: Path) -> None:
    compared = filecmp.dircmp(left, right)
    assert not compared.left_only and not compared.right_only and not compared.funny_files, compared.report()
    for name in compared.common_files:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name
    for name in compared.common_dirs:
        same_tree(left / name, right / name)


@pytest.fixture
def location(world):
    path = f"runs-{secrets.token_hex(6)}"
    made = services.location_create(tenant=world.a, name="here", kind="local", config={"path": path}, actor=None)
    yield made
    shutil.rmtree(made.config["path"], ignore_errors=True)


def test_a_run_on_the_nodes_worker_restores_byte_identical_and_the_next_stores_only_the_change(
    platform_processes, world, btrfs_root, location, tmp_path  # noqa: F811
):  # fmt: skip
    platform_processes("worker")
    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, "data", pool)
    source = provider_of(pool).path(volume.handle)
    fill(source)
    policy = BackupPolicy.objects.create(tenant=world.a, name="nightly", location=location)

    backup = runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"], policy=policy,
                               actor=world.users["operator"])  # fmt: skip
    assert backup.status == Backup.Status.PENDING and backup.workflow is not None
    first = finished(backup)
    assert first.status == Backup.Status.SUCCEEDED, first.error
    [entry] = first.volumes
    assert entry["name"] == "data" and entry["state"] == "done" and entry["files"] == FILES + 1
    assert entry["bytes_read"] == FILES * FILE_SIZE + 6 and entry["size"] == entry["bytes_read"]
    assert first.bytes_new > FILES * FILE_SIZE * 0.9  # random data: nothing to deduplicate the first time
    steps = list(first.workflow.steps.order_by("index").values_list("name", "queue"))
    assert steps == [("backups.state", "control"), ("backups.volumes", settings.NODE_QUEUE),
                     ("backups.manifest", "control"), ("backups.retention", "control")]  # fmt: skip
    assert BackupPolicy.objects.get(pk=policy.pk).last_success_at == first.finished_at
    name = provider_snapshot_name(first.pk)
    assert name not in provider_of(pool).snapshots(volume.handle)  # the provider snapshot went after the upload

    repository = keys.open_for(location)
    restored = tmp_path / "restored"
    repository.restore(entry["snapshot"], restored)
    same_tree(source, restored)
    assert os.readlink(restored / "first") == "sub/f000"
    document = state.load(repository.read_blob(first.state_snapshot))
    assert document["tenant"]["slug"] == world.a.slug and any(v["name"] == "data" for v in document["volumes"])
    meta = {info.id: info.meta for info in repository.snapshots()}
    assert meta[entry["snapshot"]]["backup"] == first.pk and meta[entry["snapshot"]]["volume"] == "data"

    (source / "sub" / "f050").write_bytes(os.urandom(FILE_SIZE))  # 1 % of the volume changes
    before = stored_bytes(Path(location.config["path"]))
    second = finished(runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"],
                                        actor=world.users["operator"]))  # fmt: skip
    assert second.status == Backup.Status.SUCCEEDED, second.error
    added = stored_bytes(Path(location.config["path"])) - before
    assert FILE_SIZE <= added <= 1.5 * FILE_SIZE, added
    assert second.volumes[0]["bytes_read"] == FILE_SIZE  # the other files were known unchanged: not read
    assert runs.dedup_ratio(second) > 0.5
    again = tmp_path / "again"
    keys.open_for(location).restore(second.volumes[0]["snapshot"], again)
    same_tree(source, again)

    series = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in BackupCollector().collect() for s in f.samples
    }
    labels = (("location", "here"), ("tenant", world.a.slug))
    assert series[("hivemind_backup_last_bytes_new", labels)] == second.bytes_new
    assert series[("hivemind_backup_runs", (*labels[:1], ("status", "succeeded"), labels[1]))] == 2
    assert ("hivemind_backup_last_success_timestamp_seconds", (*labels[:1], ("policy", "nightly"), labels[1])) in series


def finished(backup: Backup, timeout: float = 60) -> Backup:
    workflow = backup.workflow

    def done():
        workflow.refresh_from_db()
        return workflow.is_terminal

    wait_for(done, timeout, f"backup {backup.pk} to finish")
    backup.refresh_from_db()
    return backup


def test_a_run_failing_on_its_node_forgets_what_it_wrote_and_names_the_step(world, btrfs_root, location):  # noqa: F811
    pool = make_pool(this_node(), btrfs_root)
    provider = provider_of(pool)
    kept, lost = make_volume(world.a, "a-kept", pool), make_volume(world.a, "b-lost", pool)
    (provider.path(kept.handle) / "data").write_bytes(os.urandom(200 * KiB))
    backup = runs.backup_start(tenant=world.a, location=location, actor=world.users["operator"])
    assert [v["name"] for v in backup.volumes] == ["a-kept", "b-lost"]
    provider.delete(lost.handle)  # the volume is gone from its node behind the platform's back

    workflow = drive(backup.workflow)
    backup.refresh_from_db()
    assert workflow.state == WorkflowState.FAILED and backup.status == Backup.Status.FAILED
    assert backup.error.startswith("step 2 (backups.volumes) failed: StorageError: volume"), backup.error
    assert "does not exist" in backup.error, backup.error
    assert [v["state"] for v in backup.volumes] == ["undone", "failed"]
    assert workflow.steps.get(phase="compensate", name="backups.state").output["forgotten"]  # written, then forgotten
    assert runs.snapshot_ids(backup) == []  # removing the record later needs no store
    repository = keys.open_for(location)
    assert repository.snapshots() == []  # neither the document nor a-kept's data stays visible
    assert provider_snapshot_name(backup.pk) not in provider.snapshots(kept.handle)
    compensated = workflow.steps.filter(phase="compensate").values_list("name", "state")
    assert sorted(compensated) == [("backups.state", "succeeded"), ("backups.volumes", "succeeded")]


def test_a_location_that_cannot_be_written_fails_at_the_state_step(world, location):
    Path(location.config["path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(location.config["path"]).write_text("a file where the directory should be")
    backup = runs.backup_start(tenant=world.a, location=location, actor=world.users["operator"])
    drive(backup.workflow)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.FAILED and backup.finished_at is not None
    assert backup.error.startswith("step 1 (backups.state) failed: StoreError: backup location here"), backup.error
    assert not backup.repository_id and not backup.state_snapshot


def test_what_a_run_covers_is_checked_before_it_starts(world, location, btrfs_root):  # noqa: F811
    from rest_framework.exceptions import ValidationError

    from hivemind.core.errors import Conflict

    pool = make_pool(this_node(), btrfs_root)
    make_volume(world.a, "data", pool)
    theirs = services.location_create(tenant=world.b, name="theirs", kind="local", config={"path": "x"}, actor=None)
    cases = [
        ({"location": theirs}, "location"),
        ({"scope": "everything"}, "scope"),
        ({"scope": "volumes", "names": ["data", "nope", "gone"]}, "no volumes named gone, nope"),
        ({"scope": "apps", "names": ["web"]}, "no apps named web"),
        ({"scope": "volumes"}, "needs the names"),
        ({"scope": "tenant", "names": ["data"]}, "names nothing"),
        ({"scope": "volumes", "names": ["Bad_Name"]}, "DNS label"),
    ]
    for given, message in cases:
        with pytest.raises(ValidationError, match=message):
            runs.backup_start(**{"tenant": world.a, "location": location, "actor": None, **given})
    make_volume(world.a, "making", pool, status="creating")
    with pytest.raises(Conflict, match=r"making \(creating\)"):
        runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["making"], actor=None)
    assert not Backup.objects.exists()
    # a whole-tenant run reads the ready volumes only
    backup = runs.backup_start(tenant=world.a, location=location, actor=None)
    assert [v["name"] for v in backup.volumes] == ["data"]
    assert backup.workflow.locks == [{"key": f"volume:{backup.volumes[0]['volume']}", "mode": "shared"}]
    # scope apps: the volumes the named apps mount, by name or as their templates' volumes
    from hivemind.applications.models import App, AppRevision

    make_volume(world.a, "db-store-0", pool)
    make_volume(world.a, "unused", pool)
    for name, spec in (("web", {"volumes": [{"volume": "data", "path": "/d"}]}),
                       ("db", {"volume_templates": [{"name": "store", "size": "1Gi", "path": "/s"}]})):  # fmt: skip
        app = App.objects.create(tenant=world.a, name=name)
        App.objects.filter(pk=app.pk).update(revision=AppRevision.objects.create(app=app, number=1, spec=spec))
    both = runs.backup_start(tenant=world.a, location=location, scope="apps", names=["web", "db"], actor=None)
    assert [v["name"] for v in both.volumes] == ["data", "db-store-0"] and both.names == ["db", "web"]


def test_metrics_are_labelled_by_tenant_location_and_policy_only(world, location):
    Backup.objects.create(tenant=world.a, location=location, status=Backup.Status.FAILED, error="free text")
    families: list[Metric] = list(BackupCollector().collect(tenant=world.a.slug))
    labels = {name for family in families for sample in family.samples for name in sample.labels}
    assert labels <= {"tenant", "location", "policy", "status"}
    failed = [s for f in families for s in f.samples if s.name == "hivemind_backup_failed_runs"]
    assert [(s.labels, s.value) for s in failed] == [({"tenant": world.a.slug, "location": "here"}, 1)]
    assert list(BackupCollector().collect(tenant=world.b.slug))[5].samples == []
    now = timezone.now()
    Backup.objects.create(tenant=world.a, location=location, status=Backup.Status.SUCCEEDED, bytes_read=300,
                          bytes_new=100, started_at=now - timedelta(seconds=90), finished_at=now)  # fmt: skip
    registry = CollectorRegistry()
    registry.register(BackupCollector())
    text = generate_latest(registry).decode()
    assert 'hivemind_backup_last_dedup_ratio{location="here",tenant="tenant-a"} 3.0' in text
    assert 'hivemind_backup_last_duration_seconds{location="here",tenant="tenant-a"} 90.0' in text
    assert "hivemind_backup_damaged" not in text.replace("# HELP hivemind_backup_damaged", "").replace(
        "# TYPE hivemind_backup_damaged", ""
    )  # nothing verified yet
    Backup.objects.create(tenant=world.a, location=location, status=Backup.Status.SUCCEEDED, verified="damaged",
                          verified_at=now)  # fmt: skip
    Backup.objects.filter(status=Backup.Status.SUCCEEDED).update(verified_at=now)
    text = generate_latest(registry).decode()
    assert 'hivemind_backup_damaged{location="here",tenant="tenant-a"} 1.0' in text
    verified = [s for f in registry.collect() for s in f.samples if s.name.endswith("_last_verified_timestamp_seconds")]
    assert [(s.labels["location"], s.value) for s in verified] == [("here", now.timestamp())]
    assert promtool_check(text) == ""


def test_an_encrypted_volume_is_backed_up_as_its_ciphertext_and_restores_to_open_with_its_key(
    world, btrfs_root, location, tmp_path  # noqa: F811
):  # fmt: skip
    from storage import crypt

    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, "secret", pool)
    Volume.objects.filter(pk=volume.pk).update(encrypted=True)
    directory, key, marker = provider_of(pool).path(volume.handle), os.urandom(32), b"plaintext marker " * 64
    crypt.initialise(directory, key, scryptn=10)
    try:
        (crypt.mount(directory, volume.handle, key) / "notes.txt").write_bytes(marker)
    finally:
        crypt.unmount(volume.handle)
    backup = runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["secret"], actor=None)
    drive(backup.workflow)
    backup.refresh_from_db()
    assert backup.status == Backup.Status.SUCCEEDED, backup.error
    assert backup.volumes[0]["encrypted"] is True
    repository = keys.open_for(location)
    assert repository.snapshots()[-1].meta["encrypted"] is True
    restored = tmp_path / "restored"
    repository.restore(backup.volumes[0]["snapshot"], restored)
    same_tree(directory, restored)
    assert (restored / "cipher" / "gocryptfs.conf").is_file()
    assert not any(marker[:16] in p.read_bytes() for p in restored.rglob("*") if p.is_file())  # ciphertext only
    handle = f"v{volume.pk + 10**9}"  # a view of the restored copy, under a handle of its own
    try:
        assert (crypt.mount(restored, handle, key) / "notes.txt").read_bytes() == marker
    finally:
        crypt.unmount(handle)


def test_an_rbd_volume_is_backed_up_from_a_mounted_view_of_its_snapshot(
    platform_processes, world, ceph_cluster, location, tmp_path
):  # fmt: skip
    """A block provider's snapshot is read as files through a copy-on-write clone of it attached
    for the read (storage/providers/rbd.py `snapshot_files`), removed after; a restore writes
    into the volume attached for it (`writable`)."""
    import rbd

    platform_processes("worker")
    ceph_cluster.make_pool("backups")
    pool = storage_services.pool_create(
        name="ceph", provider="rbd", node=this_node().name, path=str(tmp_path / "rbd"), actor=None,
        options={"monitors": ceph_cluster.monitors, "pool": "backups", "prefix": "runs-"},
        secrets={"key": ceph_cluster.admin_key},
    )  # fmt: skip
    provider = provider_of(pool)
    volume = Volume.objects.create(tenant=world.a, name="data", pool=pool, size_bytes=320 << 20, status="ready")
    provider.create(volume.handle, volume.size_bytes)
    with provider.writable(volume.handle) as root:
        fill(root)
        kept = tmp_path / "kept"
        shutil.copytree(root, kept, symlinks=True)
    assert not provider.attached(volume.handle)

    backup = finished(runs.backup_start(tenant=world.a, location=location, scope="volumes", names=["data"],
                                        actor=world.users["operator"]))  # fmt: skip
    assert backup.status == Backup.Status.SUCCEEDED, backup.error
    [entry] = backup.volumes
    assert entry["files"] == FILES + 1 and entry["bytes_read"] == FILES * FILE_SIZE + 6
    restored = tmp_path / "restored"
    keys.open_for(location).restore(entry["snapshot"], restored)
    same_tree(kept, restored)
    with ceph_cluster.rados() as handle, handle.open_ioctx("backups") as ioctx:
        assert rbd.RBD().list(ioctx) == [f"runs-{volume.handle}"]  # the snapshot's view went after the read
    assert provider.snapshots(volume.handle) == []  # and the snapshot itself

    (kept / "readme").write_text("changed after the backup\n")
    other = Volume.objects.create(tenant=world.a, name="copy", pool=pool, size_bytes=320 << 20, status="ready")
    provider.create(other.handle, other.size_bytes)
    with provider.writable(other.handle) as root:
        keys.open_for(location).restore(entry["snapshot"], root)
    with provider.writable(other.handle) as root:
        same_tree(restored, root)
    for made in (volume, other):
        provider.delete(made.handle)
