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
