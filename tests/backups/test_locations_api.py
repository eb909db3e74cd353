"""/api/v1/backup-locations/: the shared permission suite, credentials write-only and sealed,
bad settings named, a tenant's local locations kept under its own directory, and `check`
(200 when a probe object went through, 502 with the server's answer when not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from backups import sealing, services
from backups.models import BackupLocation
from hivemind.config import ConfigError, load_config
from hivemind.core.errors import Conflict
from tenants.keys import KeyUnavailable
from tenants.models import AuditEvent
from tenants.services import tenant_delete
from tests.api_suite import TenantOwnedAPITests

SECRET = "s3cr3t-Access-Key-Value-42"


class TestBackupLocationAPI(TenantOwnedAPITests):
    basename = "backup-location"
    custom_actions = [("check", "post")]

    def make(self, world, tenant):
        return services.location_create(
            tenant=tenant, name=f"loc-{BackupLocation.objects.count()}", kind="local",
            config={"path": f"dir-{BackupLocation.objects.count()}"}, actor=world.users["staff"],
        )  # fmt: skip

    def create_payload(self, world, tenant):
        n = BackupLocation.objects.count()
        return {"tenant": tenant.slug, "name": f"new-{n}", "kind": "local", "config": {"path": f"new-{n}"}}

    def update_payload(self, world):
        return {"config": {"path": "moved"}}


def post(world, body, who="operator"):
    return world.client(who).post(reverse("api:backup-location-list"), {"tenant": world.a.slug, **body}, format="json")


def test_a_relative_local_path_is_under_the_tenants_directory_and_check_proves_it(world):
    response = post(world, {"name": "nightly", "kind": "local", "config": {"path": "nightly"}})
    assert response.status_code == 201, response.content
    body = response.json()
    root = Path(settings.BACKUP_DIR) / world.a.slug
    assert body["config"] == {"path": str(root / "nightly")} and body["check_state"] == "unknown"
    checked = world.client("operator").post(reverse("api:backup-location-check", args=[body["id"]]))
    assert checked.status_code == 200, checked.content
    assert checked.json()["ok"] is True and "reachable and writable" in checked.json()["detail"]
    assert (root / "nightly").is_dir() and not list((root / "nightly").rglob("probe-*"))  # the probe went again
    location = BackupLocation.objects.get(pk=body["id"])
    assert location.check_state == "ok" and location.checked_at is not None


def test_a_failed_check_is_a_502_with_the_reason_and_is_kept(world):
    location = services.location_create(tenant=world.a, name="blocked", kind="local", config={"path": "blocked"},
                                        actor=world.users["staff"])  # fmt: skip
    where = Path(location.config["path"])
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("a file where the directory should be")
    try:
        response = world.client("operator").post(reverse("api:backup-location-check", args=[location.pk]))
        assert response.status_code == 502, response.content
        assert "blocked" in response.json()["detail"] and "File exists" in response.json()["detail"]
        location.refresh_from_db()
        assert location.check_state == "failed" and "File exists" in location.check_error
        shown = world.client("viewer").get(reverse("api:backup-location-detail", args=[location.pk])).json()
        assert shown["check_state"] == "failed" and shown["check_error"] == location.check_error
    finally:
        where.unlink()


@pytest.mark.parametrize(
    "path", ["/etc", "/tmp/elsewhere", "../tenant-b/x", "/var/lib/../../etc", "tenant-b/../../tenant-b"]
)
def test_a_local_path_outside_the_tenants_directory_is_refused(world, path):
    response = post(world, {"name": "escape", "kind": "local", "config": {"path": path}})
    assert response.status_code == 400, response.content
    assert "path" in response.json()["config"], response.json()
    assert not BackupLocation.objects.filter(name="escape").exists()


def test_another_tenants_directory_is_refused(world):
    other = str(Path(settings.BACKUP_DIR) / world.b.slug / "theirs")
    response = post(world, {"name": "theirs", "kind": "local", "config": {"path": other}})
    assert response.status_code == 400 and "path" in response.json()["config"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "tape", "config": {}}, "kind"),
        ({"kind": "local", "config": "path=x"}, "config"),
        ({"kind": "local", "config": {"path": "x"}, "secrets": ["x"]}, "secrets"),
        ({"kind": "local", "config": {"path": "x"}, "name": "Not_A_Label"}, "name"),
        ({"kind": "local", "config": {}}, "config"),
        ({"kind": "local", "config": {"path": "x", "colour": "red"}}, "config"),
    ],
)
def test_bad_fields_are_a_400_naming_them(world, body, field):
    response = post(world, {"name": "bad", **body})
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not BackupLocation.objects.filter(name="bad").exists()


def test_names_are_unique_in_a_tenant_and_the_kind_never_changes(world):
    assert post(world, {"name": "same", "kind": "local", "config": {"path": "a"}}).status_code == 201
    again = post(world, {"name": "same", "kind": "local", "config": {"path": "b"}})
    assert again.status_code == 409 and "same" in again.json()["detail"]
    location = BackupLocation.objects.get(name="same")
    response = world.client("operator").patch(
        reverse("api:backup-location-detail", args=[location.pk]), {"kind": "s3"}, format="json"
    )
    assert response.status_code == 400 and "kind" in response.json()


def test_credentials_are_sealed_and_never_shown(world):
    location = services.location_create(tenant=world.a, name="creds", kind="local", config={"path": "creds"},
                                        actor=world.users["staff"])  # fmt: skip
    # A local location takes no credentials: the kind says so and nothing is stored.
    response = world.client("operator").patch(
        reverse("api:backup-location-detail", args=[location.pk]), {"secrets": {"token": SECRET}}, format="json"
    )
    assert response.status_code == 400 and SECRET not in response.content.decode()
    # Sealing itself: bytes on the row are not the secret and open only on that row.
    location.sealed_secrets = sealing.seal(location, {"access_key_id": SECRET})
    location.save()
    assert SECRET.encode() not in bytes(location.sealed_secrets)
    assert sealing.unseal(BackupLocation.objects.get(pk=location.pk)) == {"access_key_id": SECRET}
    other = services.location_create(tenant=world.a, name="other", kind="local", config={"path": "other"},
                                     actor=world.users["staff"])  # fmt: skip
    sealing.seal(other, {"access_key_id": "its own"})  # gives it a data key of its own
    other.sealed_secrets = location.sealed_secrets
    with pytest.raises(KeyUnavailable, match="do not open"):
        sealing.unseal(other)
    for who in ("viewer", "operator"):
        listing = world.client(who).get(reverse("api:backup-location-list")).content.decode()
        assert SECRET not in listing and "sealed" not in listing
    assert all(SECRET not in str(event.changes) for event in AuditEvent.objects.filter(action__startswith="backup_"))


def test_a_tenant_with_locations_is_not_deleted_until_they_are(world):
    location = services.location_create(tenant=world.b, name="keep", kind="local", config={"path": "keep"},
                                        actor=world.users["staff"])  # fmt: skip
    with pytest.raises(Conflict, match="backup"):
        tenant_delete(tenant=world.b, confirm=world.b.slug, actor=world.users["staff"])
    services.location_delete(location=location, actor=world.users["staff"])
    tenant_delete(tenant=world.b, confirm=world.b.slug, actor=world.users["staff"])


@pytest.mark.parametrize(
    ("value", "message"),
    [("backups", "expected an absolute directory, got 'backups'"), ("/srv/../etc", "'..' is not allowed")],
)
def test_backup_dir_setting_is_checked_at_start_up(value, message):
    with pytest.raises(ConfigError, match="HIVEMIND_BACKUP_DIR") as refused:
        load_config({"HIVEMIND_BACKUP_DIR": value})
    assert message in str(refused.value)
    assert load_config({"HIVEMIND_BACKUP_DIR": "/srv/backups/"}).backup_dir == "/srv/backups"


def test_an_s3_location_checked_against_a_real_server_with_its_credentials_merged(world, s3_peer):
    body = {"name": "offsite", "kind": "s3", "config": {**s3_peer.config, "prefix": "api-test"},
            "secrets": dict(s3_peer.secrets)}  # fmt: skip
    created = post(world, body)
    assert created.status_code == 201, created.content
    answer = created.json()
    assert answer["secrets_set"] == sorted(s3_peer.secrets) and "secrets" not in answer
    assert all(value not in created.content.decode() for value in s3_peer.secrets.values())
    client = world.client("operator")
    check = reverse("api:backup-location-check", args=[answer["id"]])
    assert client.post(check).status_code == 200
    # A wrong secret key: the server's own answer, and the location says so.
    detail = reverse("api:backup-location-detail", args=[answer["id"]])
    changed = client.patch(detail, {"secrets": {"secret_access_key": "not-the-key"}}, format="json")
    assert changed.status_code == 200 and changed.json()["check_state"] == "unknown"
    location = BackupLocation.objects.get(pk=answer["id"])
    assert sealing.unseal(location)["access_key_id"] == s3_peer.secrets["access_key_id"]  # merged, kept
    refused = client.post(check)
    assert refused.status_code == 502 and "SignatureDoesNotMatch" in refused.json()["detail"], refused.content
    assert "not-the-key" not in refused.content.decode()
    # A bucket that does not exist: named by the server.
    client.patch(detail, {"secrets": dict(s3_peer.secrets), "config": {"bucket": "no-such-bucket"}}, format="json")
    missing = client.post(check)
    assert missing.status_code == 502 and "NoSuchBucket" in missing.json()["detail"], missing.content
