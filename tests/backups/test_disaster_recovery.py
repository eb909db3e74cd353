"""Disaster recovery (docs/backups.md): a second platform with an empty database of its own,
another master key and its own node, given only the exported repository keys and the S3
location, brings a tenant's app and volume back byte-identical, the app running.

Platform 1 is the test's own database and a real worker on a btrfs pool: a tenant, a volume
with files, an app mounting it, a whole-tenant backup into an S3 location on moto, the keys
exported under a passphrase. Then the disaster: platform 1's worker stops and everything it
ran on the node is removed. Platform 2 is a fresh install started here as `make run` would
start it, but only its web process and one worker (SQLite in a directory of its own, another
Redis database, another master key, node `drnode` whose agent mounts and registers a default
btrfs pool of its own); it is driven only through the `hivemind` CLI, as its admin: tenant
create, keys import, location add, location sync, restore (the tenant's members come back, their
users made without a password); then it backs up again into the same repository, finding
platform 1's chunks there.

The admin's CLI context names the tenant there was at login ("default"), so every command
here names the restored tenant with --tenant while the tenant header says "default": the
restore and run APIs answer such a request (they once failed with a 500 re-reading what they
had just made through the header's tenant), and `backup restore` follows its workflow in the
tenant restored into.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests
from django.conf import settings

from backups import export, runs, services
from backups.models import Backup
from hivemind.applications import services as apps
from hivemind.applications.models import LABEL_MANAGED
from networking.node import clear_node
from storage import loopfs
from storage.models import StoragePool, Volume
from storage.steps import provider_of
from tests.applications.conftest import finished, node  # noqa: F401 (the node fixture)
from tests.cli.conftest import Cli
from tests.conftest import REPO, PlatformProcess, free_port, wait_for
from tests.storage.conftest import btrfs_mount, btrfs_root  # noqa: F401 - the session's btrfs file system

PASSPHRASE = "correct horse battery staple"
NODE2 = "drnode"
REDIS2 = "redis://127.0.0.1:6379/5"  # a Redis database no other test uses
SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
    "volumes": [{"volume": "data", "path": "/data"}],
}


def fill(directory: Path) -> dict[str, str]:
    """A few files (random, so nothing deduplicates by accident), a nested one, a symlink;
    their SHA-256 by path as `sha256sum` inside a container prints them."""
    (directory / "sub" / "deeper").mkdir(parents=True)
    for n in range(8):
        (directory / "sub" / f"f{n}.bin").write_bytes(os.urandom(96 << 10))
    (directory / "sub" / "deeper" / "notes.txt").write_text("kept across the disaster\n")
    (directory / "empty").write_bytes(b"")
    os.symlink("sub/f0.bin", directory / "link")
    return {
        f"./{p.relative_to(directory)}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class SecondPlatform:
    """A fresh install: its own SQLite database, var dir, master key, Redis database and node."""

    def __init__(self, base_env: dict, root: Path):
        self.root = root
        self.storage = root / "storage"
        self.env = {
            **base_env,
            "HIVEMIND_DATABASE_URL": f"sqlite:///{root / 'p2.sqlite3'}",
            "HIVEMIND_VAR_DIR": str(root / "var"),
            "HIVEMIND_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "HIVEMIND_SECRET_KEY": secrets.token_urlsafe(40),
            "HIVEMIND_REDIS_URL": REDIS2,
            "HIVEMIND_NODE_NAME": NODE2,
            "HIVEMIND_STORAGE_POOL": "btrfs",
            "HIVEMIND_STORAGE_DIR": str(self.storage),
            "HIVEMIND_STORAGE_SIZE": "1Gi",
            "HIVEMIND_STEP_HEARTBEAT": "1",
            "HIVEMIND_RECONCILE_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: list[PlatformProcess] = []
        self.base = ""

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def start(self) -> str:
        """Migrate the empty database, make the admin, start web and worker; the admin's password."""
        self.root.mkdir(parents=True)
        redis.Redis.from_url(REDIS2).flushdb()
        self.manage("migrate", "--no-input", "-v", "0")
        password = self.manage("shell", "-c", "from hivemind.core import bootstrap; print(bootstrap.ensure_admin())")
        port = free_port()
        bindir = Path(sys.executable).parent
        web = [str(bindir / "gunicorn"), "hivemind.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "--threads", "8", "--no-control-socket", "--log-level", "warning"]  # fmt: skip
        worker = [str(bindir / "celery"), "-A", "hivemind", "worker", "-Q", f"control,node.{NODE2}", "-c", "2",
                  "-n", "p2@%h", "-l", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip
        self.processes.append(PlatformProcess("p2-web", web, self.env, self.root / "web.log"))
        self.processes.append(PlatformProcess("p2-worker", worker, self.env, self.root / "worker.log"))
        self.base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.base}/admin/login/", timeout=5).status_code == 200
            assert all(p.process.poll() is None for p in self.processes), self.logs()
            return False

        wait_for(up, 60, "platform 2's web process")
        wait_for(lambda: "ready." in self.processes[1].output(), 60, "platform 2's worker")
        return password.split()[-1]  # after the shell's own lines

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if (self.storage / "btrfs").exists():
            loopfs.release(self.storage / "btrfs", self.storage / "pool.img")


def test_a_new_install_with_the_exported_keys_restores_the_tenant_from_s3_byte_identical_and_running(
    platform_processes, world, node, btrfs_root, s3_peer, docker_client, subprocess_env, tmp_path  # noqa: F811
):  # fmt: skip
    started = time.monotonic()
    # --- platform 1: a tenant's volume with files, an app mounting it, a backup on S3 ---------
    worker = platform_processes("worker")
    staff, tenant = world.users["staff"], world.a
    pool = StoragePool.objects.create(name="p1", provider="btrfs", node=node, path=str(btrfs_root), is_default=True,
                                      capacity_bytes=1 << 30, free_bytes=1 << 30)  # fmt: skip
    provider_of(pool).prepare()
    volume = Volume.objects.create(tenant=tenant, name="data", pool=pool, size_bytes=64 << 20, status="ready")
    provider_of(pool).create(volume.handle, volume.size_bytes)
    expected = fill(provider_of(pool).path(volume.handle))
    app = apps.app_deploy(tenant=tenant, name="web", spec=SPEC, actor=staff)
    assert finished(app.workflow).state == "succeeded", app.workflow.error
    prefix = f"dr/{secrets.token_hex(6)}"
    config = {**s3_peer.config, "prefix": prefix}
    location = services.location_create(tenant=tenant, name="offsite", kind="s3", config=config,
                                        secrets=dict(s3_peer.secrets), actor=None)  # fmt: skip
    backup = runs.backup_start(tenant=tenant, location=location, actor=staff)
    wait_for(lambda: Backup.objects.get(pk=backup.pk).finished_at, 60, "the backup run")
    backup.refresh_from_db()
    assert backup.status == Backup.Status.SUCCEEDED, backup.error
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(export.export_keys(tenant, PASSPHRASE)))

    # --- the disaster: platform 1 stops, what it ran on the node is gone ----------------------
    worker.stop()
    clear_node(docker_client, node=settings.NODE_NAME, netns=settings.CONFIG.node_netns)
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})

    # --- platform 2: an empty database, another master key, only the keys file and the bucket --
    second = SecondPlatform(subprocess_env, tmp_path / "p2")
    try:
        password = second.start()
        cli = Cli(tmp_path / "home")
        login = cli("login", "--server", second.base, "--username", "admin", "--password-stdin", input=password)
        assert login.code == 0, login

        def pool_ready():
            shown = cli("pool", "ls", "-o", "json")
            assert shown.code == 0, shown
            return [p for p in json.loads(shown.out) if p["status"] == "ready" and p["node"] == NODE2]

        try:  # its agent registers the node, then makes a btrfs pool on a loop file (slow beside a parallel run)
            wait_for(pool_ready, 120, f"platform 2's node {NODE2} and its default pool")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{second.logs()}") from None
        slug = tenant.slug
        made = cli("tenant", "create", tenant.name, "--slug", slug)
        assert made.code == 0, made
        imported = cli("backup", "keys", "import", str(keys_file), "--passphrase-stdin", "--tenant", slug,
                       input=PASSPHRASE + "\n")  # fmt: skip
        assert imported.code == 0, imported
        added = cli("backup", "location", "add", "offsite", "--kind", "s3", "--tenant", slug,
                    *[a for k, v in config.items() for a in ("--set", f"{k}={v}")],
                    *[a for k, v in s3_peer.secrets.items() for a in ("--secret", f"{k}={v}")])  # fmt: skip
        assert added.code == 0, added
        synced = cli("backup", "location", "sync", "offsite", "--tenant", slug)
        assert synced.code == 0, synced
        listed = cli("backup", "ls", "--tenant", slug, "-o", "json")
        assert listed.code == 0, listed
        [found] = json.loads(listed.out)
        assert found["status"] == "succeeded" and found["location"] == "offsite", found

        # The admin's context names the only tenant there was at login ("default"): an API call
        # whose header names it while its body names the tenant restored into is answered.
        saved = cli.saved()
        context = saved["contexts"][saved["current-context"]]
        assert context["tenant"] == "default", context
        api = requests.Session()
        api.headers.update({"Authorization": f"Bearer {context['token']}", "X-Hivemind-Tenant": "default"})
        dry = api.post(f"{second.base}/api/v1/restores/", json={"tenant": slug, "backup": found["id"], "dry_run": True},
                       timeout=30)  # fmt: skip
        assert dry.status_code == 201, dry.text
        assert {(a["action"], a["kind"], a["name"]) for a in dry.json()["plan"]} >= {
            ("create", "volume", "data"), ("restore", "volume_data", "data"), ("create", "app", "web"),
            ("create", "member", "owner-a"), ("create", "member", "viewer-a")}  # fmt: skip

        restored = cli("backup", "restore", str(found["id"]), "--tenant", slug)
        assert restored.code == 0, f"{restored}\n{second.logs()}"

        shown = cli("app", "info", "web", "--tenant", slug, "-o", "json")
        assert shown.code == 0, shown
        restored_app = json.loads(shown.out)

        def running():
            return [c for c in docker_client.containers.list(filters={"label": f"io.hivemind.app={restored_app['id']}"})
                    if c.status == "running"]  # fmt: skip

        [container] = wait_for(running, 60, "the restored app's container")
        listing = container.exec_run(["sh", "-c", "cd /data && find . -type f | sort | xargs sha256sum"])
        assert listing.exit_code == 0, listing.output
        got = {path: digest for digest, path in (line.split() for line in listing.output.decode().splitlines())}
        assert got == expected
        assert container.exec_run(["readlink", "/data/link"]).output.decode().strip() == "sub/f0.bin"

        # The members came back, their users made without a password (staff set one).
        scoped = {"X-Hivemind-Tenant": slug}
        members = api.get(f"{second.base}/api/v1/memberships/", headers=scoped, timeout=10)
        assert members.status_code == 200, members.text
        roles = {m["user"]: m["role"] for m in members.json()["results"]}
        assert roles == {"owner-a": "owner", "admin-a": "admin", "operator-a": "operator", "viewer-a": "viewer"}

        # The new install backs up into the same repository with the imported keys (the header
        # still names "default").
        again = api.post(f"{second.base}/api/v1/backups/", json={"tenant": slug, "location": "offsite"}, timeout=30)
        assert again.status_code == 202, again.text
        url = f"{second.base}/api/v1/backups/{again.json()['id']}/"
        done = wait_for(lambda: (b := api.get(url, headers=scoped, timeout=10).json())["finished_at"] and b, 60,
                        "platform 2's backup run")  # fmt: skip
        assert done["status"] == "succeeded", done
        assert done["bytes_new"] < done["bytes_read"] / 50, done  # the files' chunks are platform 1's, found again
    finally:
        second.stop()
        clear_node(docker_client, node=NODE2, netns=settings.CONFIG.node_netns)
    assert time.monotonic() - started < 120
