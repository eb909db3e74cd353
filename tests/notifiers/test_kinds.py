"""Each kind against a real peer: the HTTP receiver (webhook, with its HMAC checked; Slack-style),
aiosmtpd (plain, STARTTLS with a certificate made in the test, implicit TLS, a login) and a real
Alertmanager whose API shows the alert, then its own notification says it resolved. Deliveries
go through the services (sealed secrets opened, attempts recorded)."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from notifiers import registry, services
from notifiers.models import Delivery
from notifiers.registry import DeliveryError
from tests.conftest import free_port
from tests.notifiers import peers

pytestmark = pytest.mark.django_db
SECRET = "a-webhook-secret-of-some-length"


def notification(tenant="tenant-a", status="firing", *, rule="crash-looping", ends_at=None, **labels) -> dict:
    starts = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    return {
        "group_key": f"{tenant}/{rule}/app=web",
        "status": status,
        "rule": {"name": rule, "severity": "critical", "tenant": tenant},
        "alerts": [
            {
                "labels": {"app": "web", **labels},
                "annotations": {"summary": "web restarts again and again", "runbook": "https://example.com/rb"},
                "starts_at": starts,
                "ends_at": ends_at,
                "value": 7.0,
                "fingerprint": "f00d",
            }
        ],
        "url": "http://hivemind.example.com/alerts/1",
    }


def deliver(notifier, payload) -> Delivery:
    """notify, then the attempt the queued task makes (pytest-django's transaction never commits,
    so nothing is queued: the test makes the attempt itself)."""
    delivery = services.notify(notifier=notifier, notification=payload)
    services.delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def make(world, kind, config, secrets=None, name=None):
    return services.notifier_create(tenant=world.a, name=name or kind, kind=kind, config=config,
                                    secrets=secrets or {}, actor=world.users["staff"])  # fmt: skip


# --- webhook ---------------------------------------------------------------------------------------


def test_webhook_posts_the_notification_signed_with_hmac(world, receiver):
    notifier = make(world, "webhook", {"url": receiver.url + "/hooks/alerts"}, {"secret": SECRET})
    payload = notification()
    before = int(time.time())
    delivery = deliver(notifier, payload)
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    assert delivery.attempts == 1 and delivery.history[0]["ok"] is True
    (request,) = receiver.wait(1)
    assert request.path == "/hooks/alerts"
    assert request.json() == payload
    timestamp = request.headers["X-Hivemind-Timestamp"]
    assert before <= int(timestamp) <= int(time.time())
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Hivemind-Signature"] == f"sha256={expected}"
    # Signed with another secret, or over another body, the signature would not match.
    other = hmac.new(b"another-secret-entirely", timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["X-Hivemind-Signature"] != f"sha256={other.hexdigest()}"


def test_a_webhook_that_refuses_keeps_its_answer_and_is_retried_then_failed(world, receiver, settings):
    settings.NOTIFIER_ATTEMPTS = 3
    settings.NOTIFIER_BACKOFF = 5
    receiver.status, receiver.answer = 503, b"maintenance until noon"
    notifier = make(world, "webhook", {"url": receiver.url}, {"secret": SECRET})
    delivery = services.notify(notifier=notifier, notification=notification())
    assert services.delivery_attempt(delivery_id=delivery.pk) == 5.0
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.PENDING
    assert "503" in delivery.last_error and "maintenance until noon" in delivery.last_error
    assert services.delivery_attempt(delivery_id=delivery.pk) is None  # not due yet: nothing sent
    assert len(receiver.received) == 1
    for expected_wait in (10.0, None):
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=datetime.now(UTC))
        assert services.delivery_attempt(delivery_id=delivery.pk) == expected_wait
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED and delivery.attempts == 3
    assert [entry["ok"] for entry in delivery.history] == [False, False, False]
    assert len(receiver.received) == 3


def test_a_webhook_that_is_down_fails_with_the_reason(world, settings):
    settings.NOTIFIER_ATTEMPTS = 1
    notifier = make(world, "webhook", {"url": f"http://127.0.0.1:{free_port()}/"}, {"secret": SECRET})
    delivery = deliver(notifier, notification())
    assert delivery.state == Delivery.State.FAILED
    assert "cannot reach http://127.0.0.1" in delivery.last_error and "refused" in delivery.last_error.lower()


# --- slack -----------------------------------------------------------------------------------------


def test_slack_posts_text_and_attachments_to_the_secret_url(world, receiver):
    url = receiver.url + "/hooks/T000/B000/XXXXSECRETXXXX"
    notifier = make(world, "slack", {"username": "hivemind"}, {"url": url})
    delivery = deliver(notifier, notification(status="resolved", ends_at=datetime.now(UTC).isoformat()))
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    (request,) = receiver.wait(1)
    assert request.path == "/hooks/T000/B000/XXXXSECRETXXXX"
    body = request.json()
    assert body["text"].startswith("[RESOLVED] crash-looping") and body["username"] == "hivemind"
    (attachment,) = body["attachments"]
    assert attachment["color"] == "#2eb67d" and attachment["title"] == "web restarts again and again"
    assert "app=web" in attachment["text"]
    assert "XXXXSECRETXXXX" not in str(notifier.config) and b"XXXXSECRETXXXX" not in bytes(notifier.sealed_secrets)


def test_slack_errors_do_not_show_the_secret_url(world, receiver, settings):
    settings.NOTIFIER_ATTEMPTS = 1
    receiver.status, receiver.answer = 404, b"no_team"
    notifier = make(world, "slack", {}, {"url": receiver.url + "/hooks/T1/B1/TOPSECRETTOKEN"})
    delivery = deliver(notifier, notification())
    assert delivery.state == Delivery.State.FAILED
    assert "404" in delivery.last_error and "no_team" in delivery.last_error
    assert "TOPSECRETTOKEN" not in delivery.last_error


# --- email -----------------------------------------------------------------------------------------

MAIL = {"from": "alerts@hivemind.example.com", "to": ["ops@example.com", "oncall@example.com"]}


def test_email_over_plain_smtp(world, smtp_servers):
    server = smtp_servers()
    notifier = make(world, "email", {**MAIL, "host": server.host, "port": server.port, "security": "none"})
    delivery = deliver(notifier, notification())
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    assert "2 recipient" in delivery.answer
    (mail,) = server.mailbox.wait(1)
    assert mail["from"] == MAIL["from"] and mail["to"] == MAIL["to"] and not mail["tls"]
    message = mail["message"]
    assert message["Subject"] == "[FIRING] crash-looping (tenant tenant-a, severity critical)"
    text = message.get_payload(decode=True).decode()
    assert "web restarts again and again" in text and "app=web" in text
    assert "More: http://hivemind.example.com/alerts/1" in text


def test_email_over_starttls_with_a_login_verifies_the_certificate(world, smtp_servers, certificate):
    directory, pem = certificate
    server = smtp_servers(starttls=directory, login=("alerts", "s3cret-password"))
    config = {**MAIL, "host": server.host, "port": server.port, "username": "alerts", "ca_certificate": pem}
    notifier = make(world, "email", config, {"password": "s3cret-password"})
    assert notifier.config["security"] == "starttls"  # the default
    delivery = deliver(notifier, notification(status="resolved"))
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    (mail,) = server.mailbox.wait(1)
    assert mail["tls"] and mail["login"]
    assert mail["message"]["Subject"].startswith("[RESOLVED] crash-looping")
    # Without the CA, the self-signed certificate is refused: nothing is sent in the clear.
    untrusted = make(world, "email", {**config, "ca_certificate": None}, {"password": "s3cret-password"}, "untrusted")
    with pytest.raises(DeliveryError) as refused:
        services.notifier_test(notifier=untrusted, actor=world.users["staff"])
    assert refused.value.setting == "security" and "certificate" in refused.value.message.lower()
    # A wrong password: the server's answer, naming the password.
    wrong = make(world, "email", config, {"password": "not-the-password"}, "wrong")
    with pytest.raises(DeliveryError) as login:
        services.notifier_test(notifier=wrong, actor=world.users["staff"])
    assert login.value.setting == "password" and "535" in login.value.message
    assert len(server.mailbox.messages) == 1


def test_email_over_implicit_tls(world, smtp_servers, certificate):
    directory, pem = certificate
    server = smtp_servers(implicit=directory)
    config = {**MAIL, "host": server.host, "port": server.port, "security": "tls", "ca_certificate": pem}
    delivery = deliver(make(world, "email", config), notification())
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    (mail,) = server.mailbox.wait(1)
    assert mail["tls"]


def test_starttls_refused_by_a_plain_server_sends_nothing(world, smtp_servers):
    server = smtp_servers()
    notifier = make(world, "email", {**MAIL, "host": server.host, "port": server.port})  # starttls by default
    with pytest.raises(DeliveryError) as refused:
        services.notifier_test(notifier=notifier, actor=world.users["staff"])
    assert refused.value.setting == "security" and "STARTTLS" in refused.value.message
    assert server.mailbox.messages == []


def test_smtp_that_does_not_connect_names_the_host(world):
    notifier = make(world, "email", {**MAIL, "host": "127.0.0.1", "port": free_port(), "security": "none"})
    with pytest.raises(DeliveryError) as refused:
        services.notifier_test(notifier=notifier, actor=world.users["staff"])
    assert refused.value.setting == "host" and "cannot connect to 127.0.0.1:" in refused.value.message


# --- alertmanager ----------------------------------------------------------------------------------


def test_alertmanager_shows_the_alert_then_resolves_it(world, alertmanager, alertmanager_sink):
    notifier = make(world, "alertmanager", {"url": alertmanager.url})
    firing = notification(rule="am-firing-then-resolved", pod="web-1")
    delivery = deliver(notifier, firing)
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    (shown,) = alertmanager.alerts(alertname="am-firing-then-resolved")
    assert shown["labels"] == {"alertname": "am-firing-then-resolved", "severity": "critical", "tenant": "tenant-a",
                               "app": "web", "pod": "web-1"}  # fmt: skip
    assert shown["annotations"]["summary"] == "web restarts again and again"
    assert shown["generatorURL"] == "http://hivemind.example.com/alerts/1"
    assert shown["status"]["state"] == "active"
    started = datetime.fromisoformat(firing["alerts"][0]["starts_at"])
    assert abs(datetime.fromisoformat(shown["startsAt"]) - started) < timedelta(milliseconds=1)  # it keeps ms
    resolved_at = datetime.now(UTC)
    delivery = deliver(notifier, {**firing, "status": "resolved"})
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    assert alertmanager.alerts(alertname="am-firing-then-resolved") == []  # no longer active
    # Alertmanager's own notifications (its webhook receiver): firing, then resolved with endsAt.
    deadline = time.monotonic() + 30
    while True:
        sent = [r.json() for r in alertmanager_sink.received if r.json()["groupLabels"].get("alertname")
                == "am-firing-then-resolved"]  # fmt: skip
        if any(body["status"] == "resolved" for body in sent):
            break
        assert time.monotonic() < deadline, sent
        time.sleep(0.2)
    resolved = next(body for body in sent if body["status"] == "resolved")
    (alert,) = resolved["alerts"]
    ends = datetime.fromisoformat(alert["endsAt"])
    assert resolved_at - timedelta(seconds=5) <= ends <= datetime.now(UTC)


def test_alertmanager_with_basic_authentication(world, tmp_path, receiver):
    manager = peers.alertmanager(tmp_path, receiver.url + "/am", login=("hivemind", "am-password"))
    try:
        assert requests.get(f"{manager.url}/api/v2/alerts", timeout=5).status_code == 401  # it does require it
        config = {"url": manager.url, "username": "hivemind"}
        notifier = make(world, "alertmanager", config, {"password": "am-password"})
        delivery = deliver(notifier, notification(rule="am-basic-auth"))
        assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
        assert len(manager.alerts(alertname="am-basic-auth")) == 1
        wrong = make(world, "alertmanager", config, {"password": "not-it"}, "wrong")
        with pytest.raises(DeliveryError) as refused:
            services.notifier_test(notifier=wrong, actor=world.users["staff"])
        assert refused.value.answered and "401 Unauthorized" in refused.value.message
        assert manager.alerts(alertname="hivemind-test") == []
    finally:
        manager.stop()


def test_alertmanager_with_a_bearer_token_sends_it(world, receiver):
    notifier = make(world, "alertmanager", {"url": receiver.url + "/"}, {"bearer_token": "tok-123"})
    delivery = deliver(notifier, notification())
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    (request,) = receiver.wait(1)
    assert request.path == "/api/v2/alerts" and request.headers["Authorization"] == "Bearer tok-123"
    basic = make(world, "alertmanager", {"url": receiver.url, "username": "am"}, {"password": "pw"}, "basic")
    deliver(basic, notification())
    assert receiver.wait(2)[1].headers["Authorization"].startswith("Basic ")


def test_every_kind_has_a_peer_test_here():
    tested = {"webhook", "slack", "email", "alertmanager"}
    assert set(registry.names()) == tested, "a new kind needs its tests against a real peer here"
