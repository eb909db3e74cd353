"""The dashboard's tokens page (everyone's own) and users pages (platform staff), through Django's
test client: who may see what, secrets shown once, forms' errors next to their fields."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tenants import services
from tenants.models import ApiToken
from tests.api_suite import NON_STAFF

User = get_user_model()


def text(response) -> str:
    return response.content.decode()


def test_tokens_page_makes_one_shown_once_and_revokes_it(world, login):
    client = login("viewer")
    services.api_token_create(user=world.users["operator"], name="not-mine")
    page = client.get("/tokens/")
    assert page.status_code == 200
    assert "not-mine" not in text(page) and "No tokens yet." in text(page)

    made = client.post("/tokens/", {"name": "laptop", "expires_in_days": "7"})
    assert made.status_code == 200
    assert made["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=world.users["viewer"], name="laptop")
    plain = text(made).split('<code id="new-token" class="secret">')[1].split("<")[0]
    assert token.digest == ApiToken.digest_of(plain)
    assert plain not in text(client.get("/tokens/"))  # once
    assert "laptop" in text(client.get("/tokens/"))

    other = login("operator").post(f"/tokens/{token.pk}/revoke/")
    assert other.status_code == 404  # another user's token does not exist for them
    revoked = client.post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert revoked.status_code == 200
    assert f"Token laptop ({token.prefix}…) revoked" in text(revoked)
    token.refresh_from_db()
    assert token.state == "revoked"
    assert client.get(f"/tokens/{token.pk}/revoke/").status_code == 405


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"name": "", "expires_in_days": "30"}, "name", "This field is required."),
        ({"name": "x", "expires_in_days": "0"}, "expires_in_days", "Ensure this value is greater than or equal to 1."),
        ({"name": "x", "expires_in_days": "soon"}, "expires_in_days", "Enter a whole number."),
    ],
)
def test_token_form_errors_sit_next_to_their_field(world, login, form, field, message):
    response = login("viewer").post("/tokens/", form)
    assert response.status_code == 400
    assert f'id="id_{field}_error"' in text(response)
    assert message in text(response)
    assert not ApiToken.objects.filter(user=world.users["viewer"]).exists()


@pytest.mark.parametrize("who", NON_STAFF)
def test_users_pages_are_staffs_only(world, login, who):
    client = login(who)
    assert client.get("/users/").status_code == 403
    assert client.post("/users/", {"username": "mallory"}).status_code == 403
    for url in ["/users/owner-a/", "/users/nobody/"]:
        assert client.get(url).status_code == 404
    assert client.post("/users/owner-a/", {"password": ""}).status_code == 404
    assert client.post("/users/owner-a/deactivate/").status_code == 404
    assert User.objects.get(username="owner-a").is_active
    assert not User.objects.filter(username="mallory").exists()
    assert 'href="/users/"' not in text(client.get("/"))


def test_anonymous_users_are_sent_to_log_in(world):
    for url in ["/tokens/", "/users/", "/users/owner-a/"]:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_staff_create_a_user_with_a_generated_password(world, login):
    client = login("staff")
    listing = client.get("/users/")
    assert listing.status_code == 200 and "owner-a" in text(listing)
    made = client.post("/users/", {"username": "frank", "email": "frank@example.com", "password": ""})
    assert made.status_code == 200
    password = text(made).split('<code id="new-password" class="secret">')[1].split("<")[0]
    assert User.objects.get(username="frank").check_password(password)
    assert password not in text(client.get("/users/"))
    found = client.get("/users/", {"q": "FRAN"})
    assert "frank@example.com" in text(found) and "owner-a" not in text(found)


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"username": "bad name"}, "username", "Enter a valid username."),
        ({"username": "owner-a"}, "username", "a user named owner-a already exists"),
        ({"username": "gina", "password": "gina1"}, "password", "This password is too short."),
        ({"username": "gina", "email": "nope"}, "email", "Enter a valid email address."),
    ],
)
def test_user_form_errors_sit_next_to_their_field(world, login, form, field, message):
    response = login("staff").post("/users/", form)
    assert response.status_code == 400
    page = text(response)
    error = page.split(f'id="id_{field}_error"')[1].split("</div>")[0]
    assert message in error
    assert not User.objects.filter(username="gina").exists()
    assert 'value="bad name"' in page or form["username"] != "bad name"  # kept, to be corrected


def test_staff_reset_a_password_and_deactivate_and_activate(world, login):
    client = login("staff")
    page = client.get("/users/operator-a/")
    assert page.status_code == 200 and "tenant-a: operator" in text(page)
    before_reset = login("operator")
    assert before_reset.get("/").status_code == 200
    reset = client.post("/users/operator-a/", {"password": ""})
    assert reset.status_code == 200
    password = text(reset).split('<code id="new-password" class="secret">')[1].split("<")[0]
    assert User.objects.get(username="operator-a").check_password(password)
    assert before_reset.get("/").status_code == 302  # a new password ends the user's sessions
    weak = client.post("/users/operator-a/", {"password": "operator-a"})
    assert weak.status_code == 400
    assert "The password is too similar to the username." in text(weak)
    assert User.objects.get(username="operator-a").check_password(password)

    world.users["operator"].refresh_from_db()  # its new password's hash, for the new session
    operator_session = login("operator")
    assert operator_session.get("/").status_code == 200
    off = client.post("/users/operator-a/deactivate/", follow=True)
    assert "operator-a deactivated" in text(off)
    assert not User.objects.get(username="operator-a").is_active
    # Their session ends at once: Django's session backend refuses inactive users.
    assert operator_session.get("/").status_code == 302
    on = client.post("/users/operator-a/activate/", follow=True)
    assert "operator-a activated" in text(on)
    myself = client.post("/users/staff/deactivate/", follow=True)
    assert "you cannot deactivate yourself" in text(myself)
    assert User.objects.get(username="staff").is_active
    assert client.get("/users/staff/").status_code == 200
    assert client.post("/users/operator-a/promote/").status_code == 404
