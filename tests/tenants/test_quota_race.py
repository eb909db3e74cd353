"""50 concurrent reservations through the real HTTP API against room for 10 (PostgreSQL row locks)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import connection

from tenants import services
from tenants.models import QuotaReservation, Role, TenantUsage

pytestmark = pytest.mark.django_db(transaction=True)


def test_fifty_concurrent_reservations_never_overshoot(web_server):
    assert connection.vendor == "postgresql"
    User = get_user_model()
    staff = User.objects.create_user("staff-race", is_staff=True)
    tenant = services.tenant_create(name="Race", slug="race", created_by=staff)
    services.quota_set(tenant=tenant, limits={"containers": 10}, actor=staff)
    operator = User.objects.create_user("operator-race")
    services.membership_add(tenant=tenant, user=operator, role=Role.OPERATOR, actor=staff)
    _, token = services.api_token_create(user=operator, name="race")

    url = f"{web_server}/api/v1/reservations/"
    start = threading.Barrier(50)

    def reserve(_: int) -> requests.Response:
        start.wait(timeout=30)
        return requests.post(
            url,
            json={"tenant": "race", "amounts": {"containers": 1}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(reserve, range(50)))

    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 10, codes
    assert codes.count(409) == 40, codes
    refusals = [r.json() for r in responses if r.status_code == 409]
    assert all(body["code"] == "quota_exceeded" for body in refusals)
    assert all("limit 10 count, in use 10, requested 1" in body["detail"] for body in refusals)
    assert TenantUsage.objects.get(tenant=tenant).containers == 10
    assert QuotaReservation.objects.filter(tenant=tenant, state="held").count() == 10


def test_a_hold_outside_a_transaction_is_refused_before_it_adds_anything():
    """_hold adds first and checks after, so a refusal relies on a rollback: outside a
    transaction there would be none, and it refuses to run."""
    staff = get_user_model().objects.create_user("staff-hold", is_staff=True)
    tenant = services.tenant_create(name="Hold", slug="hold", created_by=staff)
    services.quota_set(tenant=tenant, limits={"containers": 1}, actor=staff)
    with pytest.raises(RuntimeError, match="inside a transaction"):
        services._hold(tenant, {"containers": 5})
    assert TenantUsage.objects.get(tenant=tenant).containers in (None, 0)
    with pytest.raises(services.QuotaExceeded, match="in use 0, requested 5"):
        services.quota_reserve(tenant=tenant, amounts={"containers": 5}, actor=staff)
    assert TenantUsage.objects.get(tenant=tenant).containers in (None, 0)
    assert not QuotaReservation.objects.filter(tenant=tenant).exists()
