"""The backup routes never return a credential or a key: every read route of locations,
policies, backups and restores (list, detail and their read actions), the dashboard's Backups
pages, the admin's backup pages and /metrics are searched for a location's credentials and
for the tenant's repository key in every encoding it could leak in."""

from __future__ import annotations

import base64

from django.test import Client
from django.urls import reverse

from backups import keys, policies, restores, services
from backups.models import Backup
from backups.state import dumps, tenant_state
from tenants import keys as tenant_keys


def test_no_route_returns_a_credential_or_a_key(world, s3_peer):
    staff = world.users["staff"]
    location = services.location_create(tenant=world.a, name="offsite", kind="s3",
                                        config={**s3_peer.config, "prefix": "no-secrets"},
                                        secrets=dict(s3_peer.secrets), actor=staff)  # fmt: skip
    repository = keys.open_for(location, create=True)
    state = repository.backup_blob("state", dumps(tenant_state(world.a)), meta={"kind": "state"})
    backup = Backup.objects.create(tenant=world.a, location=location, status="succeeded", state_snapshot=state.id,
                                   repository_id=repository.id)  # fmt: skip
    policy = policies.policy_create(tenant=world.a, name="nightly", location="offsite", actor=staff,
                                    schedule="0 3 * * *", keep_daily=7)  # fmt: skip
    restore = restores.restore_start(backup=backup, into_tenant=world.a, selection={}, rename={}, conflicts="skip",
                                     dry_run=True, actor=staff)  # fmt: skip
    shared = services.location_create(tenant=None, name="shared", kind="s3", actor=staff,
                                      config={**s3_peer.config, "prefix": "no-secrets-platform"},
                                      secrets=dict(s3_peer.secrets))  # fmt: skip
    key = tenant_keys.data_key(tenant=world.a, purpose=keys.PURPOSE, object_id=repository.id)
    forbidden = {
        *s3_peer.secrets.values(),
        key.hex(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
    }

    urls = [
        reverse("api:backup-location-list"),
        reverse("api:backup-location-detail", args=[location.pk]),
        reverse("api:backup-policy-list"),
        reverse("api:backup-policy-detail", args=[policy.pk]),
        reverse("api:backup-list"),
        reverse("api:backup-detail", args=[backup.pk]),
        reverse("api:restore-list"),
        reverse("api:restore-detail", args=[restore.pk]),
        "/api/schema/",
    ]
    for who in ("viewer", "operator", "owner", "staff"):
        client = world.client(who)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, (who, url, response.status_code)
            body = response.content.decode()
            assert not [value for value in forbidden if value in body], (who, url)
    for url in (reverse("api:platform-backup-location-list"),
                reverse("api:platform-backup-location-detail", args=[shared.pk])):  # fmt: skip
        response = world.client("staff").get(url)
        assert response.status_code == 200 and not [v for v in forbidden if v in response.content.decode()], url
    # The location's check answers with what was proven, never with what proved it.
    checked = world.client("operator").post(reverse("api:backup-location-check", args=[location.pk]))
    assert checked.status_code == 200 and not [v for v in forbidden if v in checked.content.decode()]

    staff_client = Client()
    staff.is_superuser = True
    staff.save()
    staff_client.force_login(staff)
    staff_client.post("/tenant/switch/", {"tenant": world.a.slug})
    for url in [
        "/admin/backups/backuplocation/", f"/admin/backups/backuplocation/{location.pk}/change/",
        f"/admin/backups/backuplocation/{shared.pk}/change/",
        "/admin/backups/backuppolicy/", f"/admin/backups/backuppolicy/{policy.pk}/change/",
        "/admin/backups/backup/", "/admin/backups/restore/", "/metrics",
        "/backups/", f"/backups/{backup.pk}/",
    ]:  # fmt: skip
        response = staff_client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        body = response.content.decode()
        assert not [value for value in forbidden if value in body], url
