"""/api/v1/backups/: the shared permission suite; POST starts a run (202 with its workflow),
refused with the field named; a run's detail (per-volume figures, dedup ratio, duration);
`files` browses a volume's backup; DELETE forgets its snapshots in the repository. No answer
holds a key. And `hivemind backup run --wait`, ls, info, files and rm against the real web
process with a real worker running the run."""

from __future__ import annotations

import json
import os
import secrets
import shutil

import pytest
from django.urls import reverse

from backups import keys, services
from backups.models import Backup, BackupLocation
from hivemind.workflows.models import Workflow
from storage.steps import provider_of
from tests.api_suite import TenantOwnedAPITests
from tests.backups.test_runs import drive, make_pool, make_volume, this_node
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.storage.conftest import btrfs_mount, btrfs_root  # noqa: F401 - the session's btrfs file system


def location_of(tenant) -> BackupLocation:
    found = BackupLocation.objects.filter(tenant=tenant, name="runs").first()
    if found is not None:
        return found
    return services.location_create(tenant=tenant, name="runs", kind="local",
                                    config={"path": f"api-{secrets.token_hex(6)}"}, actor=None)  # fmt: skip


class TestBackupAPI(TenantOwnedAPITests):
    basename = "backup"
    supports = {"create", "delete"}
    custom_actions = [("files", "get"), ("verify", "post"), ("restore", "post")]

    def make(self, world, tenant):
        return Backup.objects.create(tenant=tenant, location=location_of(tenant), status=Backup.Status.SUCCEEDED)

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "location": "runs", "scope": "tenant"}


@pytest.fixture
def location(world):
    made = location_of(world.a)
    yield made
    shutil.rmtree(made.config["path"], ignore_errors=True)


def post(world, body, who="operator"):
    return world.client(who).post(reverse("api:backup-list"), {"tenant": world.a.slug, **body}, format="json")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"location": "nowhere"}, "location", "has no backup location 'nowhere'"),
        ({"location": "runs", "scope": "volumes", "names": ["ghost"]}, "names", "no volumes named ghost"),
        ({"location": "runs", "scope": "apps"}, "names", "needs the names"),
        ({"location": "runs", "scope": "all"}, "scope", "not a valid choice"),
        ({"location": "runs", "names": "data"}, "names", "list"),
        ({"location": "runs", "secret": "x"}, "secret", "unknown field"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field(world, location, body, field, message):
    response = post(world, body)
    assert response.status_code == 400, response.content
    assert message in json.dumps(response.json()[field]), response.json()
    assert not Backup.objects.exists() and not Workflow.objects.filter(kind="backup.run").exists()


def test_a_run_through_the_api_browse_its_files_and_delete_it(world, location, btrfs_root):  # noqa: F811
    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, "data", pool)
    root = provider_of(pool).path(volume.handle)
    (root / "logs").mkdir()
    (root / "logs" / "today.log").write_bytes(os.urandom(3000))
    started = post(world, {"location": "runs", "scope": "volumes", "names": ["data"]})
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["status"] == "pending" and body["workflow"] and body["location"] == "runs"
    assert [v["name"] for v in body["volumes"]] == ["data"] and body["volumes"][0]["state"] == "pending"
    drive(Workflow.objects.get(pk=body["workflow"]))

    client = world.client("viewer")
    detail = client.get(reverse("api:backup-detail", args=[body["id"]])).json()
    assert detail["status"] == "succeeded" and detail["workflow_state"] == "succeeded", detail
    assert detail["volumes"][0]["files"] == 1 and detail["volumes"][0]["bytes_read"] == 3000
    assert detail["dedup_ratio"] == round(detail["bytes_read"] / detail["bytes_new"], 2)
    assert detail["duration_seconds"] > 0
    key = keys.repository_key(world.a, detail["repository_id"])
    assert key.hex() not in json.dumps(detail) and "sealed" not in json.dumps(detail)
    listed = client.get(reverse("api:backup-list"), {"status": "succeeded", "location": "runs"}).json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]
    assert client.get(reverse("api:backup-list"), {"status": "failed"}).json()["results"] == []

    files = reverse("api:backup-files", args=[body["id"]])
    top = client.get(files, {"volume": "data"})
    assert top.status_code == 200, top.content
    assert [(e["path"], e["type"]) for e in top.json()["entries"]] == [("logs", "dir")]
    inner = client.get(files, {"volume": "data", "path": "/logs"}).json()["entries"]
    assert [(e["path"], e["size"]) for e in inner] == [("logs/today.log", 3000)] and "chunks" not in inner[0]
    assert client.get(files, {"volume": "other"}).status_code == 400
    volumes = client.get(files).json()  # no volume: the backup's volumes
    assert volumes["volume"] is None and volumes["entries"] == [{"path": "/data", "type": "volume"}]
    named = client.get(files, {"path": "/logs"})
    assert named.status_code == 400 and "volume" in named.json()["path"]
    assert client.get(files, {"volume": "data", "path": "/../etc"}).status_code == 400
    assert client.get(files, {"volume": "data", "path": "/nope"}).status_code == 404

    assert world.client("viewer").delete(reverse("api:backup-detail", args=[body["id"]])).status_code == 403
    gone = world.client("operator").delete(reverse("api:backup-detail", args=[body["id"]]))
    assert gone.status_code == 204, gone.content
    assert not Backup.objects.filter(pk=body["id"]).exists()
    assert keys.open_for(location).snapshots() == []  # forgotten in the repository


def test_a_running_backup_is_not_deleted(world, location):
    started = post(world, {"location": "runs"}).json()
    refused = world.client("operator").delete(reverse("api:backup-detail", args=[started["id"]]))
    assert refused.status_code == 409 and refused.json()["code"] == "backup_running", refused.content
    assert f"hivemind workflow cancel {started['workflow']}" in refused.json()["detail"]


# --- the CLI, against the real web process and a real worker -----------------------------------------


@pytest.fixture
def same_master_key(world, subprocess_env):
    """The web process opens the tenant's keys as this process does (its var dir is its own)."""
    from tenants import keys as tenant_keys

    subprocess_env["HIVEMIND_MASTER_KEY"] = tenant_keys.master_key_path().read_text().strip()


def test_cli_runs_a_backup_waiting_then_lists_browses_and_removes_it(
    cli, same_master_key, web_server, platform_processes, world, btrfs_root, location  # noqa: F811
):  # fmt: skip
    platform_processes("worker")
    pool = make_pool(this_node(), btrfs_root)
    volume = make_volume(world.a, "data", pool)
    (provider_of(pool).path(volume.handle) / "logs").mkdir()
    (provider_of(pool).path(volume.handle) / "logs" / "today.log").write_text("a line\n")
    login_as(cli, web_server, world, "operator")
    assert cli("backup", "run", "--location", "runs", "--apps", "a", "--volumes", "b").code == 2

    ran = cli("backup", "run", "--location", "runs", "--volumes", "data")
    assert ran.code == 0, ran
    number = Backup.objects.get().pk
    assert f"Backup {number} into runs: workflow" in ran.out and "backups.volumes" in ran.out, ran
    assert f"Backup {number} succeeded: 1 files, " in ran.out and "step 2/3 backups.volumes" in ran.out, ran
    row = cli("backup", "ls").out.splitlines()[1].split()
    assert row[:5] == [str(number), "volumes:", "data", "runs", "succeeded"], row
    info = cli("backup", "info", str(number))
    assert info.code == 0 and "data" in info.out and "done" in info.out, info
    listed = cli("backup", "files", str(number), "--volume", "data", "/logs")
    assert listed.code == 0 and "logs/today.log" in listed.out, listed
    missing = cli("backup", "files", str(number), "--volume", "data", "/nope")
    assert missing.code == 6 and "no nope" in one_error_line(missing), missing

    login_as(cli, web_server, world, "viewer")
    assert cli("backup", "rm", str(number)).code == 5
    login_as(cli, web_server, world, "operator")
    assert cli("backup", "rm", str(number)).code == 0
    assert cli("backup", "info", str(number)).code == 6
    assert keys.open_for(location).snapshots() == []
