"""Platform backup locations (backups/services.py, api/views.py): made by platform staff, used
by any tenant by name, each tenant backing up into a repository of its own under
tenants/<slug>/ with its own key.

- the staff-only API suite (403 on the list, 404 on each one for everyone else);
- two tenants back up into one platform location through the API: two repositories, neither
  opens with the other tenant's key, a restore plan reads the document, a verify through a
  policy marks that tenant's backups only, a sync finds a tenant's runs again;
- a tenant's own location of the same name comes first;
- credentials are sealed with a key of the master key's (no tenant key), never returned; a
  platform location holding tenants' backups or used by their policies cannot go.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from backups import keys, policies, restores, sealing, services, verify
from backups.metrics import BackupCollector
from backups.models import Backup, BackupLocation, Restore
from hivemind.workflows.models import Workflow, WorkflowState
from tenants.models import WrappedKey
from tests.api_suite import StaffOnlyAPITests
from tests.backups.workflows import drive
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)

SECRET = "platform-secret-access-key-0123456789"


@pytest.fixture(autouse=True)
def platform_dir():
    """The platform's local locations (their repositories outlive the test's rolled-back rows)."""
    yield
    shutil.rmtree(Path(settings.BACKUP_DIR) / services.PLATFORM_DIR, ignore_errors=True)


def platform_location(world, name: str = "shared") -> BackupLocation:
    return services.location_create(tenant=None, name=name, kind="local", config={"path": f"p-{secrets.token_hex(6)}"},
                                    actor=world.users["staff"])  # fmt: skip


class TestPlatformBackupLocationAPI(StaffOnlyAPITests):
    basename = "platform-backup-location"
    missing_key = "999999"
    custom_actions = [("check", "post")]

    def make(self, world):
        return platform_location(world, f"shared-{BackupLocation.objects.count()}")

    def create_payload(self, world):
        return {"name": f"new-{BackupLocation.objects.count()}", "kind": "local", "config": {"path": "made"}}

    def update_payload(self, world):
        return {"config": {"path": f"moved-{secrets.token_hex(4)}"}}


def _run(world, who: str, tenant, location: str = "shared") -> Backup:
    response = world.client(who).post(reverse("api:backup-list"), {"tenant": tenant.slug, "location": location},
                                      format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    backup = Backup.objects.get(pk=response.json()["id"])
    assert drive(backup.workflow).state == WorkflowState.SUCCEEDED
    backup.refresh_from_db()
    return backup


def test_two_tenants_back_up_into_one_platform_location_each_into_a_repository_of_its_own(world):
    staff = world.client("staff")
    body = {"name": "shared", "kind": "local", "config": {"path": "shared-here"}}
    made = staff.post(reverse("api:platform-backup-location-list"), body, format="json")
    assert made.status_code == 201, made.content
    location = BackupLocation.objects.get(pk=made.json()["id"])
    assert location.tenant is None and location.config["path"] == f"{settings.BACKUP_DIR}/_platform/shared-here"
    # Tenants do not see it among their locations.
    listed = world.client("operator").get(reverse("api:backup-location-list"), {"tenant": world.a.slug})
    assert [row["name"] for row in listed.json()["results"]] == []

    a, b = _run(world, "operator", world.a), _run(world, "outsider", world.b)
    assert a.status == b.status == Backup.Status.SUCCEEDED and a.location == b.location == location
    assert a.repository_id != b.repository_id
    root = Path(location.config["path"]) / "tenants"
    assert (root / "tenant-a" / "config").is_file() and (root / "tenant-b" / "config").is_file()
    with pytest.raises(keys.NoRepositoryKey, match="tenant tenant-a has no key for backup repository"):
        keys.open_repository(world.a, services.store_for(location, world.b))
    assert staff.get(reverse("api:platform-backup-location-detail", args=[location.pk])).json()["tenants"] == [
        "tenant-a", "tenant-b"]  # fmt: skip

    # On /metrics each tenant's last run there has its own series, the location named as the platform's.
    durations = {tuple(sample.labels.values()) for family in BackupCollector().collect() for sample in family.samples
                 if family.name == "hivemind_backup_last_duration_seconds"}  # fmt: skip
    assert durations == {("tenant-a", "platform:shared"), ("tenant-b", "platform:shared")}

    # A restore reads A's document from A's repository there.
    plan = restores.restore_start(backup=a, into_tenant=world.a, dry_run=True, actor=world.users["operator"]).plan
    assert {(x["kind"], x["name"]) for x in plan} >= {("tenant", "tenant-a"), ("member", "owner-a")}

    # A verification through A's policy marks A's backups only.
    policy = policies.policy_create(tenant=world.a, name="nightly", location="shared", actor=world.users["staff"],
                                    keep_last=3)  # fmt: skip
    assert policy.location == location
    workflow = verify.verify_start(location=location, policy=policy, read_data=True, actor=world.users["staff"])
    assert drive(workflow).state == WorkflowState.SUCCEEDED
    a.refresh_from_db(), b.refresh_from_db()
    assert a.verified == Backup.Verified.OK and not b.verified_at
    with pytest.raises(Exception, match="holds one repository per tenant"):
        verify.verify_start(location=location, actor=world.users["staff"])

    # Disaster recovery: A's records gone, a sync of A's part finds its run again (and B's stays B's).
    Backup.objects.filter(tenant=world.a).delete()
    url = reverse("api:platform-backup-location-sync", args=[location.pk])
    synced = staff.post(url, {"tenant": world.a.slug}, format="json")
    assert synced.status_code == 200 and synced.json()["found"] == 1, synced.content
    [found] = Backup.objects.filter(tenant=world.a)
    assert found.repository_id == a.repository_id and found.state_snapshot == a.state_snapshot
    assert staff.post(url, {"tenant": world.b.slug}, format="json").json()["found"] == 0
    assert staff.post(url, {"tenant": "no-such"}, format="json").status_code == 400

    # It cannot go while tenants' policies use it or their backups are recorded in it.
    gone = staff.delete(reverse("api:platform-backup-location-detail", args=[location.pk]))
    assert gone.status_code == 409 and "tenant-a/nightly" in gone.json()["detail"], gone.content
    policies.policy_delete(policy=policy, actor=world.users["staff"])
    gone = staff.delete(reverse("api:platform-backup-location-detail", args=[location.pk]))
    assert gone.status_code == 409 and "holds backups of tenants tenant-a, tenant-b" in gone.json()["detail"]
    assert BackupLocation.objects.filter(pk=location.pk).exists()


def test_a_tenants_own_location_of_the_same_name_comes_first(world):
    shared = platform_location(world)
    assert policies.location_named(world.a, "shared") == shared
    own = services.location_create(tenant=world.a, name="shared", kind="local", config={"path": "own"}, actor=None)
    assert policies.location_named(world.a, "shared") == own
    assert policies.location_named(world.b, "shared") == shared
    with pytest.raises(Exception, match="has no backup location 'nowhere' \\(nor has the platform\\)"):
        policies.location_named(world.a, "nowhere")


def test_credentials_are_sealed_with_a_key_of_the_master_keys_and_never_returned(world):
    keys_before = WrappedKey.objects.count()
    made = world.client("staff").post(
        reverse("api:platform-backup-location-list"),
        {"name": "offsite", "kind": "s3", "config": {"bucket": "platform-backups", "endpoint_url": "http://127.0.0.1:9"},
         "secrets": {"access_key_id": "AKIDPLATFORM", "secret_access_key": SECRET}},
        format="json",
    )  # fmt: skip
    assert made.status_code == 201, made.content
    assert SECRET.encode() not in made.content and made.json()["secrets_set"] == ["access_key_id", "secret_access_key"]
    location = BackupLocation.objects.get(pk=made.json()["id"])
    assert SECRET.encode() not in bytes(location.sealed_secrets)
    assert sealing.unseal(location) == {"access_key_id": "AKIDPLATFORM", "secret_access_key": SECRET}
    assert WrappedKey.objects.count() == keys_before  # no tenant's key holds it
    # Sealed bytes copied onto another platform location's row do not open there.
    other = platform_location(world, "other")
    BackupLocation.objects.filter(pk=other.pk).update(sealed_secrets=location.sealed_secrets)
    other.refresh_from_db()
    with pytest.raises(Exception, match="do not open"):
        sealing.unseal(other)
    shown = world.client("staff").get(reverse("api:platform-backup-location-detail", args=[location.pk]))
    assert SECRET.encode() not in shown.content and "secrets" not in shown.json()


PASSPHRASE = "correct horse battery staple"


def test_the_platform_comes_back_from_a_platform_location_with_the_platform_keys(world):
    """Every tenant backs up into a platform location; the platform's keys are exported; the
    tenants are lost (rows, keys, a member's user); the keys document makes them again, and one
    restore call brings each back from its newest backup: settings, quota, members."""
    from django.contrib.auth import get_user_model

    from tenants import services as tenants
    from tenants.models import Membership, Role, Tenant, TenantQuota

    staff_user = world.users["staff"]
    carol = get_user_model().objects.create_user("carol")
    tenants.membership_add(tenant=world.a, user=carol, role=Role.VIEWER, actor=staff_user)
    tenants.quota_set(tenant=world.a, limits={"apps": 7}, actor=staff_user)
    tenants.tenant_update(tenant=world.a, actor=staff_user, labels={"env": "prod"})
    location = platform_location(world)
    a, b = _run(world, "operator", world.a), _run(world, "outsider", world.b)
    staff = world.client("staff")
    exported = staff.post(reverse("api:platform-backup-location-export-keys"), {"passphrase": PASSPHRASE},
                          format="json")  # fmt: skip
    assert exported.status_code == 200, exported.content
    document = exported.json()
    assert {part["tenant"] for part in document["tenants"]} >= {"tenant-a", "tenant-b"}  # and "default"
    assert a.repository_id in exported.content.decode() and PASSPHRASE not in exported.content.decode()
    assert world.client("admin").post(reverse("api:platform-backup-location-export-keys"),
                                      {"passphrase": PASSPHRASE}, format="json").status_code == 404  # fmt: skip

    # The disaster: both tenants and everything of theirs gone, carol too.
    Backup.objects.all().delete()
    Workflow.objects.filter(tenant__in=[world.a, world.b]).delete()
    for tenant in (world.a, world.b):
        tenants.tenant_delete(tenant=tenant, confirm=tenant.slug, actor=staff_user)
    carol.delete()
    assert not Tenant.objects.filter(slug__in=["tenant-a", "tenant-b"]).exists()

    wrong = staff.post(reverse("api:platform-backup-location-import-keys"),
                       {"passphrase": "not the passphrase at all", "document": document}, format="json")  # fmt: skip
    assert wrong.status_code == 400 and "passphrase" in wrong.json(), wrong.content
    assert not Tenant.objects.filter(slug__in=["tenant-a", "tenant-b"]).exists()  # nothing made
    imported = staff.post(reverse("api:platform-backup-location-import-keys"),
                          {"passphrase": PASSPHRASE, "document": document}, format="json")  # fmt: skip
    assert imported.status_code == 200, imported.content
    created = {t["tenant"]: t["created"] for t in imported.json()["tenants"]}
    assert created == {**dict.fromkeys(Tenant.objects.exclude(slug__in=["tenant-a", "tenant-b"]).values_list(
        "slug", flat=True), False), "tenant-a": True, "tenant-b": True}  # fmt: skip
    assert Tenant.objects.get(slug="tenant-a").name == "Tenant A"

    url = reverse("api:platform-backup-location-restore", args=[location.pk])
    dry = staff.post(url, {"dry_run": True}, format="json")
    assert dry.status_code == 200, dry.content
    entries = {e["tenant"]: e for e in dry.json()["tenants"]}
    assert set(entries) == {"tenant-a", "tenant-b"} and entries["tenant-a"]["workflow"] is None
    assert entries["tenant-a"]["backups_found"] == 1 and entries["tenant-a"]["actions"] > 0
    assert not Membership.objects.filter(tenant__slug="tenant-a").exists()  # a dry run restores nothing

    done = staff.post(url, {"tenants": ["tenant-a", "tenant-b"]}, format="json")
    assert done.status_code == 200, done.content
    for entry in done.json()["tenants"]:
        restore = Restore.objects.get(pk=entry["restore"])
        assert entry["backups_found"] == 0 and restore.backup.repository_id in (a.repository_id, b.repository_id)
        assert drive(restore.workflow).state == WorkflowState.SUCCEEDED, restore.workflow.error
    tenant_a = Tenant.objects.get(slug="tenant-a")
    roles = dict(Membership.objects.filter(tenant=tenant_a).values_list("user__username", "role"))
    assert roles == {"owner-a": "owner", "admin-a": "admin", "operator-a": "operator", "viewer-a": "viewer",
                     "carol": "viewer"}  # fmt: skip
    assert not get_user_model().objects.get(username="carol").has_usable_password()
    assert TenantQuota.objects.get(tenant=tenant_a).apps == 7 and tenant_a.labels == {"env": "prod"}
    assert dict(Membership.objects.filter(tenant__slug="tenant-b").values_list("user__username", "role")) == {
        "owner-b": "owner"}  # fmt: skip

    unknown = staff.post(url, {"tenants": ["no-such"]}, format="json")
    assert unknown.status_code == 400 and "no tenant no-such here" in str(unknown.json()), unknown.content


def test_cli_exports_every_tenants_keys_imports_them_and_restores_the_platform(
    cli, same_master_key, web_server, world, tmp_path  # noqa: F811
):  # fmt: skip
    """`backup keys export --all`, `keys import` (making the lost tenant), `restore-platform`
    (dry run, then started; its workflows driven here as the workers would)."""
    from tenants import services as tenants
    from tenants.models import Membership, Tenant

    login_as(cli, web_server, world, "staff")
    assert cli("backup", "location", "add", "shared", "--platform", "--kind", "local", "--set", "path=cli").code == 0
    started = cli("backup", "run", "--location", "shared", "--tenant", "tenant-a", "--no-wait")
    assert started.code == 0, started
    [backup] = Backup.objects.filter(tenant=world.a)
    assert drive(backup.workflow).state == WorkflowState.SUCCEEDED
    keys_file = tmp_path / "all-keys.json"
    exported = cli("backup", "keys", "export", "--all", "--out", str(keys_file), "--passphrase-stdin",
                   input=PASSPHRASE + "\n")  # fmt: skip
    assert exported.code == 0 and f"of {Tenant.objects.count()} tenant(s) written to" in exported.out, exported
    assert cli("backup", "keys", "export", "--all", "--tenant", "tenant-a", "--out", "x").code == 2

    Backup.objects.all().delete()
    Workflow.objects.filter(tenant=world.a).delete()
    tenants.tenant_delete(tenant=world.a, confirm="tenant-a", actor=world.users["staff"])
    imported = cli("backup", "keys", "import", str(keys_file), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert imported.code == 0 and "tenant tenant-a: made, 1 repository key(s)" in imported.out, imported

    dry = cli("backup", "restore-platform", "shared", "--dry-run", "-o", "json")
    assert dry.code == 0, dry
    [entry] = json.loads(dry.out)["tenants"]
    assert entry["tenant"] == "tenant-a" and entry["backups_found"] == 1 and entry["workflow"] is None
    real = cli("backup", "restore-platform", "shared", "--tenants", "tenant-a", "--no-wait")
    assert real.code == 0 and "tenant-a" in real.out and "started" in real.out, real
    restore = Restore.objects.filter(tenant__slug="tenant-a", dry_run=False).get()
    assert drive(restore.workflow).state == WorkflowState.SUCCEEDED
    assert Membership.objects.filter(tenant=Tenant.objects.get(slug="tenant-a")).count() == 4

    login_as(cli, web_server, world, "outsider")
    refused = cli("backup", "restore-platform", "shared", "--dry-run")
    assert refused.code == 5 and "only platform staff" in one_error_line(refused), refused
