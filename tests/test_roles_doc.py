"""docs/roles.md's table is what the API does: each row is tried through the API for each role.

The test reads the table itself, so a row changed in the documentation without the API (or
the other way round) fails here; a new row needs a probe below, which this test asks for.
A probe makes what it needs, calls the API as the role and says whether it was allowed;
an answer that is neither a clear yes nor the documented refusal fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import services
from tenants.models import Role
from tests.api_suite import World
from tests.conftest import REPO

ROLES_DOC = REPO / "docs" / "roles.md"
COLUMNS = ["viewer", "operator", "admin", "owner", "staff"]


def read_table() -> dict[str, dict[str, bool]]:
    """{row text: {role: may?}} from the first table of docs/roles.md."""
    rows: dict[str, dict[str, bool]] = {}
    lines = ROLES_DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| may…"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert header[1:] == COLUMNS, header
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = {role: cell == "✓" for role, cell in zip(COLUMNS, cells[1:], strict=True)}
    return rows


def _verdict(response, allowed: set[int], refused: set[int]) -> bool:
    if response.status_code in allowed:
        return True
    assert response.status_code in refused, (response.status_code, response.content[:300])
    return False


def _all_same(verdicts: list[bool]) -> bool:
    assert len(set(verdicts)) == 1, f"one row, answers that disagree: {verdicts}"
    return verdicts[0]


def _new_user() -> str:
    User = get_user_model()
    return User.objects.create_user(f"newcomer{User.objects.count()}").username


def own_tokens(world: World, who: str) -> bool:
    from tests.tenants.conftest import forget_login_counts

    forget_login_counts()
    user = world.users[who]
    user.set_password("a probe's passphrase")
    user.save()
    login = APIClient().post(
        "/api/v1/auth/login/", {"username": user.username, "password": "a probe's passphrase"}, format="json"
    )
    client = world.client(who)
    made = client.post("/api/v1/tokens/", {"name": "probe", "expires_in_days": 1}, format="json")
    listed = client.get("/api/v1/tokens/")
    revoked = client.delete(f"/api/v1/tokens/{made.json()['id']}/") if made.status_code == 201 else made
    return _all_same(
        [
            _verdict(login, {201}, {401}),
            _verdict(made, {201}, {403}),
            _verdict(listed, {200}, {403}),
            _verdict(revoked, {204}, {403}),
        ]
    )


def see_tenant(world: World, who: str) -> bool:
    client, slug = world.client(who), world.a.slug
    header = {"HTTP_X_HIVEMIND_TENANT": slug}
    return _all_same(
        [
            _verdict(client.get(f"/api/v1/tenants/{slug}/"), {200}, {404}),
            _verdict(client.get(f"/api/v1/tenants/{slug}/usage/"), {200}, {404}),
            _verdict(client.get(f"/api/v1/tenants/{slug}/quota/"), {200}, {404}),
            _verdict(client.get("/api/v1/memberships/", **header), {200}, {403, 404}),
            _verdict(client.get("/api/v1/service-accounts/", **header), {200}, {403, 404}),
        ]
    )


def see_resources(world: World, who: str) -> bool:
    reservation, _ = services.quota_reserve(tenant=world.a, amounts={"cpu": 100}, actor=world.users["staff"])
    client = world.client(who)
    return _all_same(
        [
            _verdict(client.get(f"/api/v1/reservations/{reservation.pk}/"), {200}, {404}),
            _verdict(client.get("/api/v1/workflows/", HTTP_X_HIVEMIND_TENANT=world.a.slug), {200}, {403, 404}),
        ]
    )


def manage_resources(world: World, who: str) -> bool:
    client = world.client(who)
    created = client.post(
        "/api/v1/reservations/", {"tenant": world.a.slug, "amounts": {"cpu": "100m"}, "reason": "probe"}, format="json"
    )
    existing, _ = services.quota_reserve(tenant=world.a, amounts={"cpu": 100}, actor=world.users["staff"])
    released = client.delete(f"/api/v1/reservations/{existing.pk}/")
    return _all_same([_verdict(created, {201}, {403}), _verdict(released, {204}, {403})])


def manage_members(world: World, who: str) -> bool:
    client = world.client(who)
    member = client.post(
        "/api/v1/memberships/", {"tenant": world.a.slug, "user": _new_user(), "role": "viewer"}, format="json"
    )
    account = client.post(
        "/api/v1/service-accounts/", {"tenant": world.a.slug, "name": "probe-bot", "role": "viewer"}, format="json"
    )
    return _all_same([_verdict(member, {201}, {403}), _verdict(account, {201}, {403})])


def read_audit_log(world: World, who: str) -> bool:
    services.audit_record(actor=world.users["staff"], tenant=world.a, action="probe.event")
    response = world.client(who).get("/api/v1/audit-log/", HTTP_X_HIVEMIND_TENANT=world.a.slug)
    allowed = _verdict(response, {200}, {403})
    if allowed:
        assert response.json()["count"] >= 1
    return allowed


def edit_tenant(world: World, who: str) -> bool:
    response = world.client(who).patch(f"/api/v1/tenants/{world.a.slug}/", {"description": "probed"}, format="json")
    return _verdict(response, {200}, {403})


def grant_owner(world: World, who: str) -> bool:
    response = world.client(who).post(
        "/api/v1/memberships/", {"tenant": world.a.slug, "user": _new_user(), "role": "owner"}, format="json"
    )
    return _verdict(response, {201}, {403})


def delete_tenant(world: World, who: str) -> bool:
    staff = world.users["staff"]
    empty = services.tenant_create(name="Empty", slug="empty", created_by=staff)
    if who != "staff":
        services.membership_add(tenant=empty, user=world.users[who], role=Role(who), actor=staff)
    response = world.client(who).delete("/api/v1/tenants/empty/?confirm=empty")
    return _verdict(response, {204}, {403})


def platform_work(world: World, who: str) -> bool:
    client, slug = world.client(who), world.a.slug
    noop = client.post("/api/v1/workflows/", {"kind": "noop", "tenant": slug}, format="json")
    quota = client.put(f"/api/v1/tenants/{slug}/quota/", {"apps": 7}, format="json")
    created = client.post("/api/v1/tenants/", {"name": "Probe", "slug": "probe"}, format="json")
    suspended = client.post(f"/api/v1/tenants/{slug}/suspend/")
    resumed = client.post(f"/api/v1/tenants/{slug}/resume/")
    return _all_same(
        [
            _verdict(noop, {201, 202}, {403}),
            _verdict(quota, {200}, {403}),
            _verdict(created, {201}, {403}),
            _verdict(suspended, {200}, {403}),
            _verdict(resumed, {200}, {403}),
        ]
    )


def manage_users(world: World, who: str) -> bool:
    client, target = world.client(who), _new_user()
    listed = client.get("/api/v1/users/")
    created = client.post("/api/v1/users/", {"username": f"probe-{_new_user()}"}, format="json")
    deactivated = client.post(f"/api/v1/users/{target}/deactivate/")
    password = client.post(f"/api/v1/users/{target}/password/", {}, format="json")
    return _all_same(
        [
            _verdict(listed, {200}, {403}),
            _verdict(created, {201}, {403}),
            _verdict(deactivated, {200}, {404}),  # a user's URL does not exist for non-staff
            _verdict(password, {200}, {404}),
        ]
    )


def platform_alert_rules(world: World, who: str) -> bool:
    body = {"tenant": world.a.slug, "name": "probe", "metric": "hivemind_app_replicas_desired", "platform": True}
    made = world.client(who).post("/api/v1/alert-rules/", body, format="json")
    return _verdict(made, {201}, {403})


# Each row of the table, by the words it starts with, and the probe that tries it.
PROBES: dict[str, Callable[[World, str], bool]] = {
    "log in with a password; make, list and revoke their own API tokens": own_tokens,
    "see the tenant, its usage and quota": see_tenant,
    "see the tenant's resources": see_resources,
    "create, change and delete resources": manage_resources,
    "add, change and remove members": manage_members,
    "read the tenant's audit log": read_audit_log,
    "edit the tenant's name": edit_tenant,
    "grant or take away the owner role": grant_owner,
    "delete the tenant": delete_tenant,
    "create tenants, suspend and resume them": platform_work,
    "create, list and deactivate users": manage_users,
    "make platform alert rules": platform_alert_rules,
}


def probe_for(row: str) -> Callable[[World, str], bool]:
    found = [probe for start, probe in PROBES.items() if row.startswith(start)]
    assert len(found) == 1, f"docs/roles.md row {row!r} has no probe in {__file__}: add one"
    return found[0]


TABLE = read_table()


def test_every_row_has_a_probe_and_every_probe_a_row():
    for row in TABLE:
        probe_for(row)
    unused = [start for start in PROBES if not any(re.match(re.escape(start), row) for row in TABLE)]
    assert not unused, f"probes for rows the documentation no longer has: {unused}"


@pytest.mark.parametrize("role", COLUMNS)
@pytest.mark.parametrize("row", list(TABLE), ids=[re.sub(r"\W+", "-", row[:40]).strip("-") for row in TABLE])
def test_the_api_does_what_the_table_says(world, row, role):
    assert probe_for(row)(world, role) == TABLE[row][role], f"{role}: {row}"
