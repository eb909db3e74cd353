"""Every error the API answers carries a machine-readable `code` beside its `detail`."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"], body
    return body


def test_object_lookups_that_find_nothing(world):
    client = world.client("owner")
    _error(client.get("/api/v1/workflows/999999/"), 404, "not_found")
    _error(client.get("/api/v1/apps/999999/"), 404, "not_found")
    _error(client.get("/api/v1/tenants/no-such-tenant/"), 404, "not_found")
    # Another tenant's object is the same 404 as a missing one.
    _error(client.get(f"/api/v1/tenants/{world.b.slug}/"), 404, "not_found")


def test_urls_no_view_matches_are_json_under_the_api_and_pages_elsewhere(world):
    client = world.client("owner")
    _error(client.get("/api/v1/no-such-resource/"), 404, "not_found")
    _error(client.get("/api/v1/apps/1/no-such-action/"), 404, "not_found")
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_authentication_permission_method_and_media_type(world):
    _error(APIClient().get("/api/v1/apps/"), 401, "not_authenticated")
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Bearer hm_not-a-token")
    _error(bad_token.get("/api/v1/apps/"), 401, "authentication_failed")
    viewer = world.client("viewer")
    _error(viewer.post("/api/v1/tenants/", {"name": "X", "slug": "x"}, format="json"), 403, "permission_denied")
    _error(viewer.put("/api/v1/audit-log/"), 405, "method_not_allowed")
    _error(viewer.get("/api/v1/audit-log/", HTTP_X_HIVEMIND_TENANT=world.a.slug), 403, "permission_denied")
    owner = world.client("owner")
    response = owner.generic("POST", "/api/v1/reservations/", "cpu=1", content_type="text/plain")
    _error(response, 415, "unsupported_media_type")
    _error(owner.get("/api/v1/apps/", HTTP_ACCEPT="application/x-nothing"), 406, "not_acceptable")
