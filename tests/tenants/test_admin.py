"""The admin pages for tenancy open for staff, including guardian's object-permission page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Membership, Tenant


@pytest.fixture
def admin_client_session(world) -> Client:
    admin = get_user_model().objects.create_superuser("root-admin", password="pw-for-tests-only")
    client = Client()
    client.force_login(admin)
    return client


def test_tenancy_admin_pages_open(world, admin_client_session):
    tenant = Tenant.objects.get(slug="tenant-a")
    pages = [
        "/admin/tenants/tenant/",
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        f"/admin/tenants/tenant/{tenant.pk}/permissions/",
        "/admin/tenants/membership/",
        "/admin/tenants/serviceaccount/",
        "/admin/tenants/apitoken/",
        "/admin/tenants/auditevent/",
        "/admin/tenants/quotareservation/",
    ]
    for page in pages:
        response = admin_client_session.get(page)
        assert response.status_code == 200, page
    assert b"owner-a" in admin_client_session.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content


def test_role_changed_in_the_admin_changes_permissions(world):
    membership = Membership.objects.get(user__username="viewer-a")
    user = membership.user
    assert not user.has_perm("tenants.operate_resources", membership.tenant)
    membership.role = "operator"
    membership.save()  # what the admin's inline does
    user = get_user_model().objects.get(pk=user.pk)  # fresh permission cache
    assert user.has_perm("tenants.operate_resources", membership.tenant)


def test_admin_makes_a_token_for_a_user_or_service_account_and_shows_it_once(world, admin_client_session):
    from rest_framework.test import APIClient

    from tenants import services
    from tenants.models import ApiToken, AuditEvent

    page = admin_client_session.get("/admin/tenants/apitoken/add/")
    assert page.status_code == 200
    assert b'name="expires_in_days"' in page.content
    bot = services.service_account_create(tenant=world.a, name="ci", role="operator", actor=world.users["staff"])
    for user, name in [(world.users["viewer"], "from-admin"), (bot.user, "ci-token")]:
        answer = admin_client_session.post(
            "/admin/tenants/apitoken/add/", {"user": user.pk, "name": name, "expires_in_days": "5"}
        )
        assert answer.status_code == 200, answer.content[:500]
        assert "no-store" in answer["Cache-Control"]
        plain = answer.content.decode().split('<code id="new-token"')[1].split(">", 1)[1].split("<")[0]
        token = ApiToken.objects.get(name=name)
        assert token.user == user and token.digest == ApiToken.digest_of(plain)
        assert 4.99 < (token.expires_at - token.created_at).total_seconds() / 86400 <= 5
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        assert api.get("/api/v1/me/").json()["username"] == user.username
        listing = admin_client_session.get("/admin/tenants/apitoken/").content.decode()
        assert name in listing and plain not in listing
        assert plain not in admin_client_session.get(f"/admin/tenants/apitoken/{token.pk}/change/").content.decode()
    assert AuditEvent.objects.filter(action="token.create", actor_name="root-admin").count() == 2

    bad = admin_client_session.post("/admin/tenants/apitoken/add/", {"user": "", "name": "", "expires_in_days": "0"})
    assert bad.status_code == 200 and b"errornote" in bad.content
    assert ApiToken.objects.count() == 2

    revoked = admin_client_session.post(
        "/admin/tenants/apitoken/",
        {"action": "revoke", "_selected_action": [t.pk for t in ApiToken.objects.all()]},
        follow=True,
    )
    assert "Revoked 2 token(s)." in revoked.content.decode()
    assert {t.state for t in ApiToken.objects.all()} == {"revoked"}
