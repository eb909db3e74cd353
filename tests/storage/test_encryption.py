"""Encrypted volumes through the whole platform on this machine's node, on real btrfs and real
gocryptfs: an app writes into an encrypted volume and the pool holds only ciphertext; another
tenant's key opens nothing; snapshots, clones and reverts stay encrypted; after a rotation of
the tenant's key a new replica reads the data; the plaintext view is mounted again when its
gocryptfs dies and unmounted when no container binds it; keys show in no API answer or log;
and a worker without the master key its tenant keys need does not start."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from hivemind.applications import services as app_services
from storage import crypt, services
from storage.models import Snapshot, Volume
from tenants import keys
from tenants.models import AuditEvent, TenantKey, WrappedKey
from tests.applications.conftest import docker_replicas, finished, node  # noqa: F401 (the node fixture)
from tests.conftest import wait_for
from tests.storage.test_volumes import FAST, SERVER, make_pool, sh, succeeded

ENV = {**FAST, "HIVEMIND_CRYPT_SCRYPTN": "10"}  # gocryptfs -init in 0.07 s instead of 0.5 s


@pytest.fixture
def views():
    """Whatever plaintext views the test leaves mounted go at the end."""
    yield
    crypt.release_all()


def ciphertext_holds(root: Path, needle: bytes) -> list[str]:
    """Files under `root` whose name or content contains `needle`."""
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if needle in name.encode() or needle in path.read_bytes():
                found.append(str(path))
    return found


def gocryptfs_pids(point: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"gocryptfs") and str(point).encode() in argv:
                pids.append(int(proc.name))
    return pids


def test_an_encrypted_volume_in_an_app(platform_processes, world, node, docker_client, btrfs_root, views):  # noqa: F811
    worker = platform_processes("worker", extra_env=ENV)
    platform_processes("beat", extra_env=ENV)
    make_pool(node, btrfs_root)
    staff = world.users["staff"]
    volume = services.volume_create(tenant=world.a, name="data", size="64Mi", actor=staff, encrypted=True)
    succeeded(volume.workflow)
    volume.refresh_from_db()
    assert volume.encrypted and volume.status == Volume.Status.READY
    raw = btrfs_root / "volumes" / volume.handle
    assert (raw / "cipher" / "gocryptfs.conf").is_file()
    key = keys.data_key(tenant=world.a, purpose="volume", object_id=volume.pk)

    app = app_services.app_deploy(tenant=world.a, name="db", spec=SERVER, actor=staff)
    succeeded(app.workflow)
    marker = f"plaintext-marker-{secrets.token_hex(8)}"
    sh(docker_client, app, f"echo {marker} > /data/secret-notes.txt; head -c 1048576 /dev/zero > /data/zeros; sync")
    point = crypt.mountpoint(volume.handle)
    assert crypt.state(volume.handle) == "mounted"
    assert (point / "secret-notes.txt").read_text().strip() == marker  # the view, on the node, while in use
    # The pool holds ciphertext only: neither the marker nor the file's name, nor a run of zeros.
    assert ciphertext_holds(raw, marker.encode()) == []
    assert ciphertext_holds(raw, b"secret-notes") == []
    assert ciphertext_holds(raw, b"\0" * 4096) == []

    # Another tenant's key opens nothing: its key-encryption key does not unwrap A's data key,
    # and its own data key is the wrong gocryptfs password (exit 12).
    key_b = keys.data_key_create(tenant=world.b, purpose="volume", object_id=10**9)
    row = WrappedKey.objects.get(tenant=world.a, purpose="volume", object_id=str(volume.pk))
    kek_b = keys._kek(TenantKey.objects.get(tenant=world.b, active=True), keys.master_key())
    with pytest.raises(keys.KeyUnavailable):
        keys._open(kek_b, row.nonce, row.wrapped, keys._data_ad(world.a.pk, "volume", str(volume.pk)), "A's key")
    elsewhere = btrfs_root.parent / f"wrong-{volume.handle}"
    elsewhere.mkdir()
    try:
        result = subprocess.run(["gocryptfs", "-q", str(raw / "cipher"), str(elsewhere)],
                                input=base64.b64encode(key_b) + b"\n", capture_output=True, timeout=60)  # fmt: skip
        assert result.returncode == crypt.WRONG_PASSWORD, result
        assert not os.path.ismount(elsewhere)
    finally:
        elsewhere.rmdir()

    # A snapshot and its clone stay encrypted; the clone opens with its own copy of the key.
    snapshot = services.snapshot_create(volume=volume, name="good", actor=staff)
    succeeded(snapshot.workflow)
    assert ciphertext_holds(btrfs_root / "snapshots", marker.encode()) == []
    clone = services.volume_clone(snapshot=Snapshot.objects.get(pk=snapshot.pk), name="copy", actor=staff)
    succeeded(clone.workflow)
    clone.refresh_from_db()
    assert clone.encrypted and keys.data_key(tenant=world.a, purpose="volume", object_id=clone.pk) == key
    clone_view = crypt.attach(clone, crypt_provider(clone))
    assert (clone_view / "secret-notes.txt").read_text().strip() == marker
    assert ciphertext_holds(btrfs_root / "volumes" / clone.handle, marker.encode()) == []
    crypt.unmount(clone.handle)

    # A revert: the view is let go, the volume reverted, mounted again before the replica starts.
    sh(docker_client, app, "echo changed > /data/secret-notes.txt; sync")
    succeeded(services.volume_revert(volume=volume, snapshot=Snapshot.objects.get(pk=snapshot.pk), actor=staff))
    wait_for(lambda: any(c.status == "running" for c in docker_replicas(docker_client, app)), 60, "the replica back")
    assert sh(docker_client, app, "cat /data/secret-notes.txt") == marker

    # Its gocryptfs dies: the view is stale, and the agent's next beat mounts it again.
    killed = set(gocryptfs_pids(point))
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def served_again() -> bool:
        serving = set(gocryptfs_pids(point))
        return bool(serving) and not serving & killed and crypt.state(volume.handle) == "mounted"

    wait_for(served_again, 30, "the stale view mounted again by the agent")
    assert (point / "secret-notes.txt").read_text().strip() == marker

    # Rotate tenant A's key; a new replica, on a view mounted afresh, reads the data.
    keys.tenant_key_rotate(tenant=world.a, actor=staff)
    assert WrappedKey.objects.get(pk=row.pk).key_version == 2
    succeeded(app_services.app_delete(app=app, actor=staff))
    crypt.unmount(volume.handle)
    reader = app_services.app_deploy(tenant=world.a, name="reader", spec=SERVER, actor=staff)
    succeeded(reader.workflow)
    assert sh(docker_client, reader, "cat /data/secret-notes.txt") == marker

    # No key in an API answer, the audit log or the worker's log.
    body = world.client("staff").get(reverse("api:volume-detail", args=[volume.pk])).content
    master = keys.master_key()
    secrets_seen = [base64.b64encode(k) for k in (key, master)] + [k.hex().encode() for k in (key, master)]
    changes = str(list(AuditEvent.objects.values_list("changes", flat=True))).encode()
    for secret in secrets_seen:
        assert secret not in body and secret not in changes
        assert secret.decode() not in worker.output()

    # No container binds the view any more: the next reconcile after the grace unmounts it.
    succeeded(app_services.app_delete(app=reader, actor=staff))
    wait_for(lambda: not docker_replicas(docker_client, reader), 30, "the reader's container gone")
    os.utime(crypt.run_dir() / f".{volume.handle}.lock", (0, 0))  # its last use, long ago
    crypt.reconcile(settings.NODE_NAME)  # (or the agent's beat, whichever comes first)
    wait_for(lambda: crypt.state(volume.handle) == "absent", 15, "the unused view unmounted")
    assert not point.exists()

    for gone in (clone, volume):
        succeeded(services.volume_delete(volume=gone, actor=staff))
    assert not WrappedKey.objects.filter(tenant=world.a, purpose="volume").exists()
    assert not raw.exists()


def crypt_provider(volume):
    from storage.steps import provider_of

    return provider_of(volume.pool)


def test_a_worker_without_the_master_key_does_not_start(platform_processes, world):
    keys.data_key_create(tenant=world.a, purpose="volume", object_id=1)
    path = keys.master_key_path()
    saved = path.read_bytes()
    path.unlink()
    try:
        with pytest.raises(AssertionError) as caught:
            platform_processes("worker", extra_env=ENV)
        assert f"HIVEMIND_MASTER_KEY: not set, and {path} does not exist" in str(caught.value)
        assert not path.exists()  # nothing generated in its place
    finally:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(saved)
