"""/api/v1/notifiers/: the shared permission suite, secrets write-only, bad settings named,
the `test` action against real peers (200, 400 naming the setting, 502 with the answer) and
the deliveries list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hivemind.core.errors import Conflict
from notifiers import sealing, services
from notifiers.models import Notifier
from tenants.models import AuditEvent, Role, Tenant
from tenants.services import tenant_delete
from tests.api_suite import TenantOwnedAPITests
from tests.conftest import free_port
from tests.notifiers.test_kinds import MAIL, SECRET, notification

URL = "https://hooks.example.com/hivemind"


class TestNotifierAPI(TenantOwnedAPITests):
    basename = "notifier"
    custom_actions = [("test", "post"), ("deliveries", "get")]

    def make(self, world, tenant):
        return services.notifier_create(
            tenant=tenant, name=f"hook-{Notifier.objects.count()}", kind="webhook", config={"url": URL},
            secrets={"secret": SECRET}, actor=world.users["staff"],
        )  # fmt: skip

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "name": f"new-{Notifier.objects.count()}", "kind": "slack",
                "config": {"channel": "#ops"}, "secrets": {"url": URL}}  # fmt: skip

    def update_payload(self, world):
        return {"config": {"url": URL + "/v2"}}


def post(world, body, who="operator"):
    return world.client(who).post(reverse("api:notifier-list"), {"tenant": world.a.slug, **body}, format="json")


def test_secrets_are_write_only_and_said_to_be_set(world):
    response = post(world, {"name": "hook", "kind": "webhook", "config": {"url": URL}, "secrets": {"secret": SECRET}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secrets_set"] == ["secret"] and "secrets" not in body
    assert SECRET not in response.content.decode()
    detail = world.client("viewer").get(reverse("api:notifier-detail", args=[body["id"]]))
    assert SECRET not in detail.content.decode() and detail.json()["config"] == {"url": URL}
    events = AuditEvent.objects.filter(action__startswith="notifier.")
    assert events.exists() and all(SECRET not in str(event.changes) for event in events)
    notifier = Notifier.objects.get(pk=body["id"])
    assert SECRET.encode() not in bytes(notifier.sealed_secrets) and sealing.unseal(notifier) == {"secret": SECRET}


def test_update_merges_settings_and_keeps_unchanged_secrets(world):
    created = post(world, {"name": "mail", "kind": "email", "config": {**MAIL, "host": "smtp.example.com",
                    "username": "alerts"}, "secrets": {"password": "pw-1"}}).json()  # fmt: skip
    url = reverse("api:notifier-detail", args=[created["id"]])
    client = world.client("operator")
    response = client.patch(url, {"config": {"port": 2525}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["config"]["port"] == 2525 and response.json()["config"]["host"] == "smtp.example.com"
    notifier = Notifier.objects.get(pk=created["id"])
    assert sealing.unseal(notifier) == {"password": "pw-1"}
    client.patch(url, {"secrets": {"password": "pw-2"}}, format="json")
    assert sealing.unseal(Notifier.objects.get(pk=created["id"])) == {"password": "pw-2"}
    # Unsetting the username while a password is set: named.
    response = client.patch(url, {"config": {"username": None}}, format="json")
    assert response.status_code == 400 and "username" in response.json()["config"]
    response = client.patch(url, {"secrets": {"password": None}, "config": {"username": None}}, format="json")
    assert response.status_code == 200 and response.json()["secrets_set"] == []
    response = client.patch(url, {"kind": "webhook"}, format="json")
    assert response.status_code == 400 and "kind" in response.json()


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        ({"kind": "webhook", "config": {"url": "ftp://example.com/x"}, "secrets": {"secret": SECRET}}, "config", "url"),
        ({"kind": "webhook", "config": {"url": "file:///etc/passwd"}, "secrets": {"secret": SECRET}}, "config", "url"),
        ({"kind": "webhook", "config": {"url": URL}, "secrets": {"secret": "short"}}, "secrets", "secret"),
        ({"kind": "webhook", "config": {}, "secrets": {"secret": SECRET}}, "config", "url"),
        ({"kind": "webhook", "config": {"url": URL}}, "secrets", "secret"),
        ({"kind": "webhook", "config": {"url": URL, "secret": SECRET}}, "config", "secret"),
        ({"kind": "webhook", "config": {"url": URL, "verbose": True}, "secrets": {"secret": SECRET}}, "config",
         "verbose"),
        ({"kind": "email", "config": {**MAIL, "host": "smtp.example.com", "to": ["not an address"]}}, "config", "to"),
        ({"kind": "email", "config": {**MAIL, "host": "smtp.example.com", "from": "nobody"}}, "config", "from"),
        ({"kind": "email", "config": {**MAIL, "host": "smtp.example.com", "port": 70000}}, "config", "port"),
        ({"kind": "email", "config": {**MAIL, "host": "smtp.example.com", "port": 0}}, "config", "port"),
        ({"kind": "email", "config": {**MAIL, "host": "bad host!"}}, "config", "host"),
        ({"kind": "email", "config": {**MAIL, "host": "h.example.com", "security": "ssl3"}}, "config", "security"),
        ({"kind": "slack", "config": {}, "secrets": {"url": "gopher://chat.example.com/"}}, "secrets", "url"),
        ({"kind": "alertmanager", "config": {"url": "http://am:9093"}, "secrets": {"password": "x"}}, "config",
         "username"),
    ],
)  # fmt: skip
def test_bad_settings_are_a_400_naming_them(world, body, where, field):
    response = post(world, {"name": "bad", **body})
    assert response.status_code == 400, response.content
    assert field in response.json()[where], response.json()
    assert not Notifier.objects.filter(name="bad").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "pager", "config": {}}, "kind"),
        ({"kind": "webhook", "config": {"url": URL}, "secrets": {"secret": SECRET}, "colour": "red"}, "colour"),
        ({"kind": "webhook", "config": "url=x", "secrets": {"secret": SECRET}}, "config"),
        ({"kind": "webhook", "config": {"url": URL}, "secrets": ["x"]}, "secrets"),
        ({"kind": "webhook", "config": {"url": URL}, "secrets": {"secret": SECRET}, "name": "Not_A_Label"}, "name"),
    ],
)
def test_bad_fields_are_a_400_naming_them(world, body, field):
    response = post(world, {"name": "bad", **body})
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()


def test_a_taken_name_is_a_409(world):
    body = {"name": "hook", "kind": "webhook", "config": {"url": URL}, "secrets": {"secret": SECRET}}
    assert post(world, body).status_code == 201
    response = post(world, body)
    assert response.status_code == 409 and response.json()["code"] == "notifier_exists"


def _test(world, notifier, who="operator"):
    return world.client(who).post(reverse("api:notifier-test", args=[notifier.pk]), format="json")


def test_the_test_action_answers_what_the_peer_said(world, receiver):
    notifier = services.notifier_create(tenant=world.a, name="hook", kind="webhook", config={"url": receiver.url},
                                        secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    response = _test(world, notifier)
    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True, "answer": "200 OK: ok"}
    (request,) = receiver.wait(1)
    assert request.json()["rule"]["name"] == "hivemind-test" and request.json()["rule"]["tenant"] == "tenant-a"
    assert _test(world, notifier, "viewer").status_code == 403
    receiver.status, receiver.answer = 500, b"receiver exploded"
    response = _test(world, notifier)
    assert response.status_code == 502
    assert response.json()["code"] == "notifier_error" and "receiver exploded" in response.json()["detail"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # a plain test server, on purpose
def test_the_test_action_names_smtp_settings_that_do_not_connect(world, smtp_servers):
    closed = services.notifier_create(
        tenant=world.a, name="closed", kind="email", actor=world.users["staff"],
        config={**MAIL, "host": "127.0.0.1", "port": free_port(), "security": "none"},
    )  # fmt: skip
    response = _test(world, closed)
    assert response.status_code == 400
    assert "cannot connect to 127.0.0.1" in response.json()["config"]["host"][0]
    server = smtp_servers(login=("alerts", "right"))
    wrong = services.notifier_create(
        tenant=world.a, name="wrong", kind="email", actor=world.users["staff"], secrets={"password": "wrong"},
        config={**MAIL, "host": server.host, "port": server.port, "security": "none", "username": "alerts"},
    )  # fmt: skip
    response = _test(world, wrong)
    assert response.status_code == 400 and "535" in response.json()["secrets"]["password"][0]
    services.notifier_update(notifier=wrong, actor=world.users["staff"], secrets={"password": "right"})
    response = _test(world, wrong)
    assert response.status_code == 200, response.content
    assert server.mailbox.wait(1)[0]["message"]["Subject"].startswith("[FIRING] hivemind-test")


def test_deliveries_are_listed_newest_first_and_filtered(world, settings):
    settings.NOTIFIER_ATTEMPTS = 1
    notifier = services.notifier_create(
        tenant=world.a, name="down", kind="webhook", config={"url": f"http://127.0.0.1:{free_port()}/"},
        secrets={"secret": SECRET}, actor=world.users["staff"],
    )  # fmt: skip
    first = services.notify(notifier=notifier, notification=notification())
    second = services.notify(notifier=notifier, notification=notification(status="resolved"))
    services.delivery_attempt(delivery_id=first.pk)
    url = reverse("api:notifier-deliveries", args=[notifier.pk])
    client = world.client(Role.VIEWER.value)
    rows = client.get(url).json()["results"]
    assert [row["id"] for row in rows] == [second.pk, first.pk]
    assert rows[1]["state"] == "failed" and "cannot reach" in rows[1]["last_error"] and rows[1]["attempts"] == 1
    assert [row["id"] for row in client.get(url, {"state": "pending"}).json()["results"]] == [second.pk]
    assert client.get(url, {"state": "lost"}).status_code == 400
    detail = client.get(reverse("api:notifier-detail", args=[notifier.pk])).json()
    assert detail["deliveries"] == {"pending": 1, "sending": 0, "delivered": 0, "failed": 1}


def test_the_admin_shows_notifiers_and_deliveries_without_secrets(world, admin_client):
    notifier = services.notifier_create(tenant=world.a, name="hook", kind="webhook", config={"url": URL},
                                        secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    delivery = services.notify(notifier=notifier, notification=notification())
    pages = [
        reverse("admin:notifiers_notifier_changelist"),
        reverse("admin:notifiers_notifier_change", args=[notifier.pk]),
        reverse("admin:notifiers_delivery_changelist"),
        reverse("admin:notifiers_delivery_change", args=[delivery.pk]),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert SECRET not in response.content.decode() and "sealed" not in response.content.decode().lower()
    assert "hook" in admin_client.get(pages[0]).content.decode()
    assert admin_client.get(reverse("admin:notifiers_notifier_add")).status_code == 403


def test_secrets_that_do_not_open_are_a_409_and_can_be_set_again(world, receiver):
    notifier = services.notifier_create(tenant=world.a, name="hook", kind="webhook", config={"url": receiver.url},
                                        secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    other = services.notifier_create(tenant=world.a, name="other", kind="webhook", config={"url": receiver.url},
                                     secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    Notifier.objects.filter(pk=notifier.pk).update(sealed_secrets=bytes(other.sealed_secrets))  # not its own
    response = _test(world, notifier)
    assert response.status_code == 409 and response.json()["code"] == "notifier_secrets_unavailable"
    url = reverse("api:notifier-detail", args=[notifier.pk])
    response = world.client("operator").patch(url, {"secrets": {"secret": SECRET + "-new"}}, format="json")
    assert response.status_code == 200, response.content
    assert _test(world, notifier).status_code == 200


def test_times_given_as_datetimes_are_stored_as_text(world):
    from datetime import UTC, datetime

    notifier = services.notifier_create(tenant=world.a, name="hook", kind="webhook", config={"url": URL},
                                        secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    payload = notification()
    payload["alerts"][0]["starts_at"] = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    delivery = services.notify(notifier=notifier, notification=payload)
    delivery.refresh_from_db()
    assert delivery.payload["alerts"][0]["starts_at"] == "2026-01-02T03:04:05Z"


def test_a_tenant_with_notifiers_is_not_deleted_until_they_are(world):
    tenant = world.b
    notifier = services.notifier_create(tenant=tenant, name="hook", kind="webhook", config={"url": URL},
                                        secrets={"secret": SECRET}, actor=world.users["staff"])  # fmt: skip
    services.notify(notifier=notifier, notification=notification(tenant=tenant.slug))
    with pytest.raises(Conflict) as refused:
        tenant_delete(tenant=tenant, confirm=tenant.slug, actor=world.users["staff"])
    assert "1 notifiers" in str(refused.value.detail)
    services.notifier_delete(notifier=notifier, actor=world.users["staff"])
    tenant_delete(tenant=tenant, confirm=tenant.slug, actor=world.users["staff"])
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
