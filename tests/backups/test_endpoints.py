"""Where a tenant's backup location may point (backups/endpoints.py, HIVEMIND_BACKUP_ENDPOINTS):
link-local and other special addresses never; by default any other; with `public` only global
addresses; with networks only those. Checked where the setting enters (a 400 naming it) and
again before each use (a 502 with the reason from `check`); platform locations are not limited."""

from __future__ import annotations

import dataclasses

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from rest_framework.exceptions import ValidationError

from backups import services
from backups.stores import StoreError

S3_SECRETS = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret-access-key-0123456789"}


@pytest.fixture
def endpoints(settings):
    def allow(*value: str) -> None:
        settings.CONFIG = dataclasses.replace(django_settings.CONFIG, backup_endpoints=value)

    return allow


def s3(tenant, url: str, name: str = "offsite"):
    return services.location_create(tenant=tenant, name=name, kind="s3", actor=None, secrets=S3_SECRETS,
                                    config={"bucket": "hm-backups", "endpoint_url": url})  # fmt: skip


def test_link_local_is_refused_whatever_the_setting_naming_the_field(world):
    with pytest.raises(ValidationError) as caught:
        s3(world.a, "http://169.254.169.254/latest")
    assert "169.254.169.254 resolves to 169.254.169.254, a link-local address" in str(
        caught.value.detail["config"]["endpoint_url"][0])  # fmt: skip
    response = world.client("operator").post(
        reverse("api:backup-location-list"),
        {"tenant": world.a.slug, "name": "meta", "kind": "gcs", "config": {"bucket": "hm-backups", "endpoint": "http://[fe80::1]"}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400 and "link-local" in response.json()["config"]["endpoint"][0], response.content


def test_public_only_refuses_this_host_for_tenants_but_not_for_the_platform(world, endpoints):
    endpoints("public")
    with pytest.raises(ValidationError, match=r"127\.0\.0\.1, not a public address"):
        s3(world.a, "http://127.0.0.1:9000")
    with pytest.raises(ValidationError, match="not a public address"):
        blob = {"account_url": "http://127.0.0.1:10000/devstoreaccount1", "container": "backups"}
        services.location_create(tenant=world.a, name="blob", kind="azure", actor=None, config=blob,
                                 secrets={"account_key": "a2V5"})  # fmt: skip
    here = {"bucket": "hm-backups", "endpoint_url": "http://127.0.0.1:9000"}
    assert services.location_create(tenant=None, name="shared", kind="s3", actor=None, secrets=S3_SECRETS, config=here)
    # A name that does not resolve yet is taken (the server may come later).
    assert s3(world.a, "http://backups.invalid:9000")


def test_only_the_networks_named(world, endpoints):
    endpoints("10.9.0.0/16", "fd00:9::/32")
    assert s3(world.a, "http://10.9.1.2:9000").config["endpoint_url"] == "http://10.9.1.2:9000"
    assert s3(world.a, "http://[fd00:9::5]:9000", name="six")
    with pytest.raises(ValidationError, match="outside the networks tenants' locations may reach"):
        s3(world.a, "http://10.8.0.1:9000", name="other")


def test_a_location_made_before_the_setting_changed_is_refused_at_use(world, endpoints):
    location = s3(world.a, "http://127.0.0.1:9")
    endpoints("public")
    with pytest.raises(
        StoreError, match=r"backup location offsite: 127\.0\.0\.1 resolves to 127\.0\.0\.1, not a public"
    ):
        services.store_for(location)
    checked = world.client("operator").post(reverse("api:backup-location-check", args=[location.pk]))
    assert checked.status_code == 502 and "not a public address" in checked.json()["detail"], checked.content
