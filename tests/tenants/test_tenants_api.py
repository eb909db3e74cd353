"""Tenants themselves: who sees, edits, suspends and deletes them; usage and quotas; tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants import services
from tenants.models import ApiToken, Role, Tenant
from tests.api_suite import COVERED_BASENAMES, ROLE_ORDER

COVERED_BASENAMES.update({"tenant", "apitoken"})


def detail(slug: str) -> str:
    return reverse("api:tenant-detail", args=[slug])


def test_anonymous_gets_401_everywhere(world):
    client = APIClient()
    for method, url in [
        ("get", reverse("api:tenant-list")),
        ("get", detail("tenant-a")),
        ("patch", detail("tenant-a")),
        ("delete", detail("tenant-a")),
        ("post", reverse("api:tenant-suspend", args=["tenant-a"])),
        ("get", reverse("api:tenant-usage", args=["tenant-a"])),
        ("get", reverse("api:me")),
        ("get", reverse("api:apitoken-list")),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 401, (method, url)
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_members_see_their_tenants_only(world):
    rows = world.client("viewer").get(reverse("api:tenant-list")).json()["results"]
    assert [(row["slug"], row["my_role"]) for row in rows] == [("tenant-a", "viewer")]
    client = world.client("owner")
    for method, url in [
        ("get", detail("tenant-b")),
        ("patch", detail("tenant-b")),
        ("delete", detail("tenant-b") + "?confirm=tenant-b"),
        ("post", reverse("api:tenant-suspend", args=["tenant-b"])),
        ("post", reverse("api:tenant-resume", args=["tenant-b"])),
        ("get", reverse("api:tenant-usage", args=["tenant-b"])),
        ("get", reverse("api:tenant-quota", args=["tenant-b"])),
        ("put", reverse("api:tenant-quota", args=["tenant-b"])),
    ]:
        assert getattr(client, method)(url, {}, format="json").status_code == 404, (method, url)
    assert Tenant.objects.filter(slug="tenant-b", status="active").exists()


@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
def test_roles_on_the_tenant(world, role):
    client = world.client(role.value)
    may_edit = role in (Role.ADMIN, Role.OWNER)
    response = client.patch(detail("tenant-a"), {"description": "edited"}, format="json")
    assert response.status_code == (200 if may_edit else 403)
    assert client.get(reverse("api:tenant-usage", args=["tenant-a"])).status_code == 200
    # Creating, suspending and setting quotas belong to platform staff, whatever the role.
    assert client.post(reverse("api:tenant-list"), {"name": "X", "slug": "x"}, format="json").status_code == 403
    assert client.post(reverse("api:tenant-suspend", args=["tenant-a"])).status_code == 403
    assert client.put(reverse("api:tenant-quota", args=["tenant-a"]), {"cpu": "64"}, format="json").status_code == 403
    if role != Role.OWNER:
        assert client.delete(detail("tenant-a") + "?confirm=tenant-a").status_code == 403


def test_staff_create_suspend_resume(world):
    staff = world.client("staff")
    created = staff.post(
        reverse("api:tenant-list"),
        {"name": "Edge", "slug": "edge", "isolation_level": "hard", "labels": {"site": "lyon"}},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "active"
    suspended = staff.post(reverse("api:tenant-suspend", args=["tenant-a"]))
    assert suspended.json()["status"] == "suspended"
    # New work is refused while suspended; reads still work and nothing is lost.
    refused = world.client("owner").post(
        reverse("api:quotareservation-list"), {"tenant": "tenant-a", "amounts": {"cpu": 1}}, format="json"
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "tenant_not_active"
    assert world.client("viewer").get(detail("tenant-a")).status_code == 200
    assert staff.post(reverse("api:tenant-resume", args=["tenant-a"])).json()["status"] == "active"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"name": "Dup", "slug": "tenant-a"}, "slug", "tenant with this slug already exists."),
        ({"name": "Bad", "slug": "Not_A_Slug"}, "slug", "use 1-50 lower-case letters"),
        (
            {"name": "Bad", "slug": "bad", "isolation_level": "total"},
            "isolation_level",
            '"total" is not a valid choice.',
        ),
        ({"name": "Bad", "slug": "bad", "labels": {"Bad Key": "x"}}, "labels", "label key 'Bad Key'"),
        ({"slug": "bad"}, "name", "This field is required."),
    ],
)
def test_bad_tenant_input_names_the_field(world, payload, field, message):
    response = world.client("staff").post(reverse("api:tenant-list"), payload, format="json")
    assert response.status_code == 400
    assert message in str(response.json()[field])


def test_delete_needs_confirmation_and_an_empty_tenant(world):
    owner = world.client("owner")
    unconfirmed = owner.delete(detail("tenant-a"))
    assert unconfirmed.status_code == 400
    assert "confirm" in unconfirmed.json()
    services.service_account_create(tenant=world.a, name="bot", role=Role.VIEWER, actor=world.users["owner"])
    services.quota_reserve(tenant=world.a, amounts={"cpu": 500}, actor=world.users["owner"])
    refused = owner.delete(detail("tenant-a") + "?confirm=tenant-a")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "tenant tenant-a still owns: 1 quota reservations, 1 service accounts; delete them first"
    )
    assert Tenant.objects.filter(slug="tenant-a").exists()


def test_delete_an_empty_tenant(world):
    response = world.client("owner").delete(detail("tenant-a") + "?confirm=tenant-a")
    assert response.status_code == 204
    assert not Tenant.objects.filter(slug="tenant-a").exists()
    assert world.client("owner").get(reverse("api:me")).json()["memberships"] == []


def test_usage_and_quota(world):
    staff = world.client("staff")
    quota_url = reverse("api:tenant-quota", args=["tenant-a"])
    response = staff.put(quota_url, {"cpu": "2", "memory": "1Gi", "containers": "10", "backups": None}, format="json")
    assert response.status_code == 200, response.content
    resources = response.json()["resources"]
    assert resources["cpu"]["limit"] == 2000 and resources["memory"]["limit"] == 2**30
    assert resources["backups"]["limit"] is None
    reserve = world.client("operator").post(
        reverse("api:quotareservation-list"), {"tenant": "tenant-a", "amounts": {"cpu": "1700m"}}, format="json"
    )
    assert reserve.status_code == 201
    assert reserve.json()["warnings"] == ["cpu at 85 % of the quota (1700 of 2000 millicores)"]
    usage = world.client("viewer").get(reverse("api:tenant-usage", args=["tenant-a"])).json()["resources"]["cpu"]
    assert usage == {"limit": 2000, "used": 1700, "unit": "millicores", "percent": 85.0, "warning": True}
    over = world.client("operator").post(
        reverse("api:quotareservation-list"), {"tenant": "tenant-a", "amounts": {"cpu": "500m"}}, format="json"
    )
    assert over.status_code == 409
    assert over.json() == {
        "detail": "quota exceeded for cpu in tenant tenant-a: limit 2000 millicores, in use 1700, requested 500",
        "code": "quota_exceeded",
    }
    released = world.client("operator").delete(reverse("api:quotareservation-detail", args=[reserve.json()["id"]]))
    assert released.status_code == 204
    assert (
        world.client("viewer").get(reverse("api:tenant-usage", args=["tenant-a"])).json()["resources"]["cpu"]["used"]
        == 0
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"cpu": "-1"}, "cpu"),
        ({"memory": "lots"}, "memory"),
        ({"containers": "2.5"}, "containers"),
        ({"gpus": "1"}, "gpus"),
    ],
)
def test_bad_quota_values_name_the_field(world, payload, field):
    response = world.client("staff").put(reverse("api:tenant-quota", args=["tenant-a"]), payload, format="json")
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ({"cpu": "-2"}, "cpu: expected a CPU amount such as 500m, 0.5 or 2, got '-2'"),
        ({"cpu": "NaN"}, "cpu: expected a CPU amount such as 500m, 0.5 or 2, got 'NaN'"),
        ({"cpu": "1e30"}, "cpu: expected a CPU amount"),
        ({"containers": "9" * 30}, "containers: expected a whole number from 0 to 1000000"),
        ({"memory": "12 parsecs"}, "memory: expected a size such as 512Mi"),
        ({"containers": "x"}, "containers: expected a whole number"),
        ({"unicorns": 1}, "unknown resource 'unicorns'"),
        ({}, "expected an object of resource amounts"),
    ],
)
def test_bad_reservation_amounts(world, amounts, message):
    response = world.client("owner").post(
        reverse("api:quotareservation-list"), {"tenant": "tenant-a", "amounts": amounts}, format="json"
    )
    assert response.status_code == 400
    assert message in response.json()["amounts"][0]


# --- tokens --------------------------------------------------------------------------------


def _bearer(plain: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


def test_token_is_shown_once_stored_hashed_and_tracks_use(world):
    client = world.client("viewer")
    created = client.post(reverse("api:apitoken-list"), {"name": "laptop", "expires_in_days": 7}, format="json")
    assert created.status_code == 201
    plain = created.json()["token"]
    row = ApiToken.objects.get(pk=created.json()["id"])
    assert row.digest == ApiToken.digest_of(plain) and plain not in (row.digest, row.prefix)
    assert "token" not in client.get(reverse("api:apitoken-detail", args=[row.pk])).json()
    assert _bearer(plain).get(reverse("api:me")).json()["username"] == "viewer-a"
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_revoked_expired_and_wrong_tokens_get_401(world):
    user = world.users["viewer"]
    _, revoked = services.api_token_create(user=user, name="old")
    services.api_token_revoke(token=ApiToken.objects.get(digest=ApiToken.digest_of(revoked)), actor=user)
    token, expired = services.api_token_create(user=user, name="short", expires_at=timezone.now() + timedelta(hours=1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for plain, message in [(revoked, "token revoked"), (expired, "token expired"), ("hm_nonsense", "invalid token")]:
        response = _bearer(plain).get(reverse("api:me"))
        assert response.status_code == 401
        assert response.json()["detail"] == message


def test_another_users_token_is_404_and_delete_revokes(world):
    mine = world.client("viewer").post(reverse("api:apitoken-list"), {"name": "mine"}, format="json").json()
    other = world.client("operator")
    assert other.get(reverse("api:apitoken-detail", args=[mine["id"]])).status_code == 404
    assert other.delete(reverse("api:apitoken-detail", args=[mine["id"]])).status_code == 404
    assert world.client("viewer").delete(reverse("api:apitoken-detail", args=[mine["id"]])).status_code == 204
    assert ApiToken.objects.get(pk=mine["id"]).state == "revoked"
    assert _bearer(mine["token"]).get(reverse("api:me")).status_code == 401


def test_bad_token_input(world):
    client = world.client("viewer")
    past = client.post(reverse("api:apitoken-list"), {"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and past.json()["expires_at"] == ["must be in the future"]
    days = client.post(reverse("api:apitoken-list"), {"name": "x", "expires_in_days": 0}, format="json")
    assert days.status_code == 400 and "expires_in_days" in days.json()
