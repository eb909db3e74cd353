"""POST /api/v1/auth/login/: a password for a token, the same answer for every failure,
rate limits per address and per user name (Redis, shared by every web process), audit."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants import services
from tenants.models import ApiToken, AuditEvent
from tests.tenants.conftest import forget_login_counts

User = get_user_model()
PASSWORD = "correct horse battery staple"
URL = "/api/v1/auth/login/"


@pytest.fixture(autouse=True)
def _fresh_counts(fresh_login_counts):
    """The login counts live in Redis (the suite's database): each test starts from none."""


@pytest.fixture
def people(db):
    alice = User.objects.create_user("alice", password=PASSWORD)
    gone = User.objects.create_user("gone", password=PASSWORD, is_active=False)
    return {"alice": alice, "gone": gone}


def login(payload: dict, address: str = "192.0.2.10"):
    return APIClient(REMOTE_ADDR=address).post(URL, payload, format="json")


def test_the_route_is_the_documented_one():
    assert reverse("api:auth-login") == URL


def test_a_password_buys_a_token_that_works(people):
    response = login({"username": "alice", "password": PASSWORD, "name": "cli@laptop", "expires_in_days": 7})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"token", "id", "name", "expires_at", "username", "is_staff"}
    assert body["name"] == "cli@laptop" and body["username"] == "alice" and body["is_staff"] is False
    token = ApiToken.objects.get(pk=body["id"])
    assert token.digest == ApiToken.digest_of(body["token"]) and token.user == people["alice"]
    days = (token.expires_at - timezone.now()).total_seconds() / 86400
    assert 6.99 < days <= 7
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert client.get(reverse("api:me")).json()["username"] == "alice"
    people["alice"].refresh_from_db()
    assert people["alice"].last_login is not None
    event = AuditEvent.objects.get(action="auth.login")
    assert event.actor == people["alice"] and event.changes == {"address": "192.0.2.10", "token": "cli@laptop"}


def test_defaults_are_a_30_day_token_named_cli(people):
    body = login({"username": "alice", "password": PASSWORD}).json()
    token = ApiToken.objects.get(pk=body["id"])
    assert token.name == "cli"
    assert 29.99 < (token.expires_at - timezone.now()).total_seconds() / 86400 <= 30


def test_every_failure_answers_the_same_bytes_in_comparable_time(people):
    tenant = services.tenant_create(name="T", slug="t", created_by=people["alice"])
    services.service_account_create(tenant=tenant, name="bot", role="viewer", actor=people["alice"])
    attempts = {
        "wrong password": {"username": "alice", "password": "not it at all"},
        "unknown user": {"username": "nobody", "password": PASSWORD},
        "inactive user": {"username": "gone", "password": PASSWORD},
        "service account": {"username": "sa.t.bot", "password": PASSWORD},
        "guardian's anonymous user": {"username": "AnonymousUser", "password": PASSWORD},
    }
    answers, seconds = {}, {}
    for reason, payload in attempts.items():
        forget_login_counts()
        login(payload)  # warm: the first hash of a process is slower
        start = time.perf_counter()
        response = login(payload)
        seconds[reason] = time.perf_counter() - start
        answers[reason] = (response.status_code, response["WWW-Authenticate"], response.content)
    assert len(set(answers.values())) == 1, answers
    status, challenge, content = answers["wrong password"]
    assert status == 401 and challenge.startswith("Bearer")
    assert content == b'{"detail":"wrong user name or password","code":"authentication_failed"}'
    # Each failure hashes the password once: none is an order of magnitude quicker.
    assert max(seconds.values()) < 4 * min(seconds.values()), seconds
    assert not ApiToken.objects.exists()
    failures = AuditEvent.objects.filter(action="auth.login_failed")
    assert {(e.actor_name, e.changes["reason"]) for e in failures} == {
        ("alice", "wrong password"),
        ("nobody", "unknown user"),
        ("gone", "inactive user"),
        ("sa.t.bot", "no password (a service account, or never set)"),
        ("AnonymousUser", "no password (a service account, or never set)"),
    }
    assert all(e.actor is None and e.tenant is None and e.changes["address"] == "192.0.2.10" for e in failures)


def test_too_many_attempts_for_one_user_name_answer_429(people):
    for number in range(10):  # 10 a minute per user name, from any address
        response = login({"username": "alice", "password": "wrong"}, address=f"192.0.2.{number}")
        assert response.status_code == 401
    throttled = login({"username": "ALICE", "password": PASSWORD}, address="198.51.100.1")
    assert throttled.status_code == 429
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert throttled.json()["code"] == "throttled"
    assert not ApiToken.objects.exists()  # not even the right password gets through now
    assert login({"username": "bob", "password": "x"}, address="198.51.100.1").status_code == 401


def test_too_many_attempts_from_one_address_answer_429(people):
    for number in range(30):  # 30 a minute per address, whatever the name
        assert login({"username": f"guess-{number}", "password": "x"}).status_code == 401
    throttled = login({"username": "alice", "password": PASSWORD})
    assert throttled.status_code == 429 and "Retry-After" in throttled
    # X-Forwarded-For is anyone's to write: it does not make a new address.
    spoofed = APIClient(REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert spoofed.post(URL, {"username": "alice", "password": PASSWORD}, format="json").status_code == 429
    assert login({"username": "alice", "password": PASSWORD}, address="192.0.2.11").status_code == 201


def test_bad_input_names_the_field(people):
    cases = [
        ({"username": "alice"}, "password", "This field is required."),
        ({"password": PASSWORD}, "username", "This field is required."),
        ({"username": "alice", "password": PASSWORD, "expires_in_days": 0}, "expires_in_days", "Ensure this value"),
        ({"username": "alice", "password": PASSWORD, "expires_in_days": 366}, "expires_in_days", "Ensure this value"),
        ({"username": "alice", "password": PASSWORD, "scope": "all"}, "scope", "unknown field; expected"),
    ]
    for payload, field, message in cases:
        response = login(payload)
        assert response.status_code == 400, (payload, response.content)
        assert response.json()[field][0].startswith(message), response.json()
    assert not ApiToken.objects.exists()


def test_a_token_in_the_request_is_not_needed_nor_looked_at(people):
    client = APIClient(REMOTE_ADDR="192.0.2.10")
    client.credentials(HTTP_AUTHORIZATION="Bearer hm_revoked-or-whatever")
    assert client.post(URL, {"username": "alice", "password": PASSWORD}, format="json").status_code == 201
