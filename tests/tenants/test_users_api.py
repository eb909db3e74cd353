"""People's accounts through the API: platform staff create, list, change, deactivate them and
set their passwords; nobody else may, and for nobody else does a user name exist."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient

from tenants import services
from tenants.models import AuditEvent, Role
from tests.api_suite import StaffOnlyAPITests

User = get_user_model()


def bearer(plain: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


class TestUserAPI(StaffOnlyAPITests):
    basename = "user"
    lookup = "username"
    custom_actions = [("deactivate", "post"), ("activate", "post"), ("password", "post")]
    missing_key = "nobody-by-that-name"

    def make(self, world):
        user, _ = services.user_create(username=f"person-{User.objects.count()}", actor=world.users["staff"])
        return user

    def create_payload(self, world):
        return {"username": f"new-{User.objects.count()}", "email": "new@example.com"}

    def update_payload(self, world):
        return {"email": "changed@example.com"}


def test_create_with_a_generated_password_shown_once(world):
    staff = world.client("staff")
    created = staff.post(reverse("api:user-list"), {"username": "bob", "email": "bob@example.com"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    generated = body.pop("generated_password")
    assert len(generated) >= 16
    assert body["username"] == "bob" and body["is_active"] is True and body["is_staff"] is False
    assert "password" not in body
    assert User.objects.get(username="bob").check_password(generated)
    shown = staff.get(reverse("api:user-detail", args=["bob"])).json()
    assert "generated_password" not in shown and "password" not in shown
    event = AuditEvent.objects.get(action="user.create", object_repr="bob")
    assert event.actor_name == "staff" and event.tenant is None


def test_create_with_a_password_of_ones_own(world):
    staff = world.client("staff")
    payload = {"username": "carol", "password": "a long enough passphrase", "is_staff": True}
    created = staff.post(reverse("api:user-list"), payload, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["generated_password"] is None
    carol = User.objects.get(username="carol")
    assert carol.check_password("a long enough passphrase") and carol.is_staff


def test_bad_input_names_the_field(world):
    staff = world.client("staff")
    url = reverse("api:user-list")
    cases = [
        ({"username": "bob smith"}, "username", "Enter a valid username."),
        ({"username": ""}, "username", "This field may not be blank."),
        ({"username": "x" * 151}, "username", "Ensure this field has no more than 150 characters."),
        ({"username": "sa.tenant-a.bot"}, "username", "names starting with sa. belong to service accounts"),
        ({"username": "STAFF"}, "username", "a user named STAFF already exists"),
        ({"username": "dave", "password": "dave"}, "password", "The password is too similar to the username."),
        ({"username": "dave", "password": "12345678"}, "password", "This password is too common."),
        ({"username": "dave", "email": "not-an-address"}, "email", "Enter a valid email address."),
        ({"username": "dave", "is_superuser": True}, "is_superuser", "unknown field; expected"),
        ({"username": "dave", "is_active": False}, "is_active", "unknown field; expected"),
    ]
    for payload, field, message in cases:
        response = staff.post(url, payload, format="json")
        assert response.status_code == 400, (payload, response.content)
        assert field in response.json(), (payload, response.json())
        assert any(m.startswith(message) for m in response.json()[field]), (payload, response.json())
    assert not User.objects.filter(username="dave").exists()
    detail = reverse("api:user-detail", args=["owner-a"])
    unknown = staff.patch(detail, {"username": "x", "colour": "red"}, format="json")
    assert unknown.status_code == 400 and set(unknown.json()) == {"username", "colour"}


def test_list_filters_and_shows_memberships(world):
    staff = world.client("staff")
    rows = staff.get(reverse("api:user-list"), {"limit": 100}).json()["results"]
    by_name = {row["username"]: row for row in rows}
    assert {"staff", "owner-a", "viewer-a", "owner-b", "granted"} <= set(by_name)
    assert by_name["owner-a"]["memberships"] == [{"tenant": "tenant-a", "role": "owner"}]
    services.service_account_create(tenant=world.a, name="bot", role=Role.VIEWER, actor=world.users["staff"])
    rows = staff.get(reverse("api:user-list"), {"limit": 100}).json()["results"]
    assert not [row for row in rows if row["username"].startswith("sa.")]  # listed with their tenant
    assert "AnonymousUser" not in {row["username"] for row in rows}  # django-guardian's stand-in
    assert staff.get(reverse("api:user-detail", args=["AnonymousUser"])).status_code == 404
    assert staff.get(reverse("api:user-detail", args=["sa.tenant-a.bot"])).status_code == 404
    found = staff.get(reverse("api:user-list"), {"search": "VIEW"}).json()["results"]
    assert [row["username"] for row in found] == ["viewer-a"]
    services.user_deactivate(user=world.users["granted"], actor=world.users["staff"])
    inactive = staff.get(reverse("api:user-list"), {"is_active": "false"}).json()["results"]
    assert [row["username"] for row in inactive] == ["granted"]
    bad = staff.get(reverse("api:user-list"), {"is_active": "maybe"})
    assert bad.status_code == 400 and bad.json()["is_active"] == "expected true or false"


def test_deactivating_a_user_stops_their_tokens_at_once(world):
    _, plain = services.api_token_create(user=world.users["operator"], name="laptop")
    assert bearer(plain).get(reverse("api:me")).status_code == 200
    staff = world.client("staff")
    response = staff.post(reverse("api:user-deactivate", args=["operator-a"]))
    assert response.status_code == 200 and response.json()["is_active"] is False
    refused = bearer(plain).get(reverse("api:me"))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "the token's user is inactive"
    assert staff.post(reverse("api:user-activate", args=["operator-a"])).json()["is_active"] is True
    assert bearer(plain).get(reverse("api:me")).status_code == 200
    actions = list(AuditEvent.objects.filter(object_repr="operator-a").values_list("action", flat=True))
    assert {"user.deactivate", "user.activate"} <= set(actions)


def test_staff_cannot_lock_themselves_out(world):
    staff = world.client("staff")
    response = staff.post(reverse("api:user-deactivate", args=["staff"]))
    assert response.status_code == 409 and response.json()["code"] == "self_deactivation"
    response = staff.patch(reverse("api:user-detail", args=["staff"]), {"is_staff": False}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "self_demotion"
    assert User.objects.get(username="staff").is_active


def test_set_password_generated_or_given_and_validated(world):
    staff = world.client("staff")
    url = reverse("api:user-password", args=["viewer-a"])
    generated = staff.post(url, {}, format="json")
    assert generated.status_code == 200, generated.content
    password = generated.json()["generated_password"]
    assert generated.json()["username"] == "viewer-a"
    assert User.objects.get(username="viewer-a").check_password(password)
    given = staff.post(url, {"password": "another long passphrase"}, format="json")
    assert given.json() == {"username": "viewer-a", "generated_password": None}
    weak = staff.post(url, {"password": "short"}, format="json")
    assert weak.status_code == 400
    assert weak.json()["password"] == ["This password is too short. It must contain at least 8 characters."]
    assert User.objects.get(username="viewer-a").check_password("another long passphrase")
    extra = staff.post(url, {"password": "another long passphrase", "force": True}, format="json")
    assert extra.status_code == 400 and "force" in extra.json()
    assert AuditEvent.objects.filter(action="user.password_set", object_repr="viewer-a").count() == 2


def test_a_user_made_through_the_api_becomes_a_member_by_name(world, fresh_login_counts):
    staff = world.client("staff")
    created = staff.post(reverse("api:user-list"), {"username": "erin"}, format="json").json()
    owner = world.client("owner")
    added = owner.post(
        reverse("api:membership-list"), {"tenant": "tenant-a", "user": "erin", "role": "operator"}, format="json"
    )
    assert added.status_code == 201, added.content
    login = APIClient().post(
        reverse("api:auth-login"), {"username": "erin", "password": created["generated_password"]}, format="json"
    )
    assert login.status_code == 201, login.content
    me = bearer(login.json()["token"]).get(reverse("api:me")).json()
    assert me["memberships"] == [{"tenant": "tenant-a", "role": "operator"}]
    # A deactivated user cannot be added to a tenant (the member field takes active users only).
    staff.post(reverse("api:user-deactivate", args=["erin"]))
    again = owner.post(
        reverse("api:membership-list"), {"tenant": "tenant-b", "user": "erin", "role": "viewer"}, format="json"
    )
    assert again.status_code == 400 and "user" in again.json()


def test_the_openapi_schema_describes_login_and_users(db):
    schema = APIClient().get("/api/schema/?format=json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    login = paths["/api/v1/auth/login/"]["post"]
    assert login["security"] == [{}]  # needs no token
    assert set(login["responses"]) == {"201", "400", "401", "429", "503"}
    assert login["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/LoginResult")
    assert components["Login"]["required"] == ["password", "username"]
    days = components["Login"]["properties"]["expires_in_days"]
    assert (days["minimum"], days["maximum"], days["default"]) == (1, 365, 30)
    assert set(paths["/api/v1/users/"]) == {"get", "post"}
    assert set(paths["/api/v1/users/{username}/"]) == {"get", "patch"}  # deactivated, never deleted
    for action in ("deactivate", "activate", "password"):
        assert "post" in paths[f"/api/v1/users/{{username}}/{action}/"], action
    created = components["UserCreate"]["properties"]
    assert created["password"]["writeOnly"] and created["generated_password"]["readOnly"]
    assert components["User"]["properties"]["is_active"]["readOnly"]
    result = paths["/api/v1/users/{username}/password/"]["post"]["responses"]["200"]
    assert result["content"]["application/json"]["schema"]["$ref"].endswith("/UserPasswordResult")
