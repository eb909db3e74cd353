"""End to end with every kind of peer at once (issue 15): a real container crash-looping on the
suite's Docker daemon, its restarts reported by the node agent, one crash-loop rule with four
notifiers of tenant A - a webhook (HTTP receiver), email (aiosmtpd over STARTTLS), Slack-style
(HTTP receiver) and a real Alertmanager - plus a fifth whose peer is down. Pending, then firing
after `for`; each peer gets exactly one firing notification for the group however many passes
run, then one resolved when the container stops crashing; the down peer's delivery is retried
with backoff and ends failed with its error kept while evaluation goes on. A silence holds every
notification back until it is expired. Deliveries are made by the service the delivery task
runs (as tests/alerting/test_end_to_end.py does), so the test sees each attempt."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from alerting import services
from alerting.models import Alert
from hivemind.nodes.agent import Agent
from notifiers import services as notifier_services
from notifiers.models import Delivery
from tests.applications.conftest import node  # noqa: F401 - this machine as a ready node
from tests.conftest import free_port
from tests.notifiers import peers
from tests.notifiers.conftest import alertmanager, alertmanager_sink, certificate, smtp_servers  # noqa: F401
from tests.observability.conftest import replicas  # noqa: F401 - managed containers with their rows

CRASH = ["sh", "-c", "sleep 0.2; exit 3"]
WINDOW = 10  # seconds: the crash-loop rule counts restarts over this window
MAIL = {"from": "alerts@hivemind.example.com", "to": ["ops@example.com"]}
SECRET = "a-secret-of-24-characters"
PEERS = ("webhook", "email", "slack", "alertmanager")


def report(node_name: str) -> None:
    """One full report of the node's containers, as its agent makes them (restart counts too)."""
    agent = Agent(node_name=node_name, docker_host=settings.DOCKER_HOST, address="10.0.0.1", labels={})
    try:
        agent.report_containers()
    finally:
        agent.stop()


def restarts(container) -> int:
    container.reload()
    return int(container.attrs.get("RestartCount") or 0)


def crash_until(container, count: int) -> None:
    deadline = time.monotonic() + 60
    while restarts(container) < count:  # Docker's backoff: 0.1, 0.2, 0.4, 0.8 s between restarts
        assert time.monotonic() < deadline, f"the container did not restart {count} times in 60 s"
        time.sleep(0.1)


def evaluate() -> dict:
    """One pass, which never waits for a peer (notify only records and queues)."""
    counts = services.rules_evaluate()
    assert not counts.get("skipped") and counts["errors"] == 0, counts
    assert counts["seconds"] < 2, counts
    return counts


def deliver_due() -> None:
    """The attempts the delivery task would make now: a retry waits for its time (the task's
    countdown), as delivery_attempt itself lets one through up to a second early."""
    due = Delivery.objects.filter(state=Delivery.State.PENDING, next_attempt_at__lte=timezone.now())
    for pk in due.values_list("pk", flat=True):
        notifier_services.delivery_attempt(delivery_id=pk)


class Peers:
    """The four live peers of tenant A's notifiers and what each was sent."""

    def __init__(self, world, receiver, slack, smtp, pem, manager, prefix: str):
        staff = world.users["staff"]
        make = notifier_services.notifier_create
        self.manager = manager
        self.receiver, self.slack, self.smtp = receiver, slack, smtp
        self.notifiers = [
            make(tenant=world.a, name=f"{prefix}-hook", kind="webhook", config={"url": f"{receiver.url}/alerts"},
                 secrets={"secret": SECRET}, actor=staff),
            make(tenant=world.a, name=f"{prefix}-mail", kind="email",
                 config={**MAIL, "host": smtp.host, "port": smtp.port, "security": "starttls", "ca_certificate": pem},
                 actor=staff),
            make(tenant=world.a, name=f"{prefix}-slack", kind="slack", config={"username": "hivemind"},
                 secrets={"url": f"{slack.url}/hooks/T1/B1/SECRETTOKEN"}, actor=staff),
            make(tenant=world.a, name=f"{prefix}-am", kind="alertmanager", config={"url": manager.url}, actor=staff),
        ]  # fmt: skip

    def statuses(self) -> dict[str, list[str]]:
        """What each peer received, in order: webhook, email and Slack from the peers themselves,
        Alertmanager from the deliveries it accepted (its API shows the alert itself)."""
        am = self.notifiers[3]
        return {
            "webhook": [r.json()["status"] for r in self.receiver.received],
            "email": [m["message"]["Subject"].split("]")[0].strip("[").lower() for m in self.smtp.mailbox.messages],
            "slack": [r.json()["text"].split("]")[0].strip("[").lower() for r in self.slack.received],
            "alertmanager": list(
                Delivery.objects.filter(notifier=am, state=Delivery.State.DELIVERED).order_by("pk")
                .values_list("status", flat=True)
            ),
        }  # fmt: skip

    def all_got(self, *statuses: str) -> None:
        assert self.statuses() == {peer: list(statuses) for peer in PEERS}


def _peers(world, receiver, smtp_servers, certificate, manager, prefix):  # noqa: F811
    slack = peers.http_receiver()
    directory, pem = certificate
    smtp = smtp_servers(starttls=directory)
    return Peers(world, receiver, slack, smtp, pem, manager, prefix), slack


def _gaps(delivery: Delivery) -> list[float]:
    times = [datetime.fromisoformat(entry["at"]) for entry in delivery.history]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def test_every_peer_gets_one_firing_then_one_resolved_and_a_down_peer_fails_without_stopping_evaluation(
    world, node, replicas, smtp_servers, certificate, alertmanager, alertmanager_sink, settings,  # noqa: F811
):  # fmt: skip
    settings.NOTIFIER_ATTEMPTS, settings.NOTIFIER_BACKOFF = 3, 1  # retries after 1 s, then 2 s
    receiver = peers.http_receiver()
    group, slack = _peers(world, receiver, smtp_servers, certificate, alertmanager, "all")
    try:
        down = notifier_services.notifier_create(
            tenant=world.a, name="all-down", kind="webhook", config={"url": f"http://127.0.0.1:{free_port()}/"},
            secrets={"secret": SECRET}, actor=world.users["staff"],
        )  # fmt: skip
        rule = services.rule_create(
            tenant=world.a, name="crash-loop-all-peers", kind="event", event="replica_crash_looping",
            window_seconds=WINDOW, threshold=3, for_seconds=1, notifiers=[*group.notifiers, down],
            actor=world.users["staff"],
            annotations={"summary": "{{ labels.app }}/{{ labels.replica }} restarted {{ value }} times"},
        )  # fmt: skip
        _, container = replicas(CRASH, restart_policy={"Name": "always"})
        app = replicas.app.name
        report(node.name)
        evaluate()
        crash_until(container, 4)
        report(node.name)
        evaluate()
        alert = Alert.objects.get(rule=rule)
        assert alert.state == "pending", alert.value
        assert not Delivery.objects.exists()  # pending says nothing
        time.sleep(1.1)
        report(node.name)
        assert evaluate()["notifications"] == 5  # one group, five notifiers
        alert.refresh_from_db()
        assert alert.state == "firing"
        deliver_due()
        for _ in range(3):  # still crashing: nothing new to say within the repeat interval
            report(node.name)
            assert evaluate()["notifications"] == 0
            deliver_due()
        group.all_got("firing")
        assert receiver.received[0].json()["alerts"][0]["annotations"]["summary"].startswith(f"{app}/0 restarted ")
        assert slack.received[0].path == "/hooks/T1/B1/SECRETTOKEN"
        assert group.smtp.mailbox.messages[0]["tls"]  # STARTTLS with the test's own certificate
        (shown,) = alertmanager.alerts(alertname="crash-loop-all-peers")
        assert shown["labels"] == {"alertname": "crash-loop-all-peers", "severity": "warning", "tenant": "tenant-a",
                                   "app": app, "replica": "0", "node": node.name}  # fmt: skip
        assert shown["status"]["state"] == "active"

        container.update(restart_policy={"Name": "no"})
        container.stop(timeout=1)
        report(node.name)
        deadline = time.monotonic() + WINDOW + 20
        while alert.state != "resolved":  # the restarts leave the window; passes go on meanwhile
            assert time.monotonic() < deadline, "the alert did not resolve"
            time.sleep(0.5)
            report(node.name)
            evaluate()
            deliver_due()  # the down peer's retries, as they fall due
            alert.refresh_from_db()
        failing = Delivery.objects.filter(notifier=down, status="firing").get()
        deadline = time.monotonic() + 20
        while Delivery.objects.filter(notifier=down, state=Delivery.State.PENDING).exists():
            assert time.monotonic() < deadline, "the down peer's deliveries did not end"
            time.sleep(0.2)
            deliver_due()
        group.all_got("firing", "resolved")
        assert receiver.received[1].json()["alerts"][0]["ends_at"] == alert.resolved_at.isoformat()
        assert alertmanager.alerts(alertname="crash-loop-all-peers") == []  # resolved: no longer active
        # Alertmanager's own notifications (its webhook receiver): the group fired once, then resolved.
        deadline = time.monotonic() + 30
        while True:
            told = [r.json() for r in alertmanager_sink.received
                    if r.json()["groupLabels"].get("alertname") == "crash-loop-all-peers"]  # fmt: skip
            if [body["status"] for body in told][-1:] == ["resolved"]:
                break
            assert time.monotonic() < deadline, told
            time.sleep(0.2)
        assert [body["status"] for body in told] == ["firing", "resolved"]
        assert told[1]["alerts"][0]["labels"]["app"] == app and told[1]["alerts"][0]["endsAt"].startswith("20")
        failing.refresh_from_db()
        assert failing.state == Delivery.State.FAILED and failing.attempts == 3
        assert [e["ok"] for e in failing.history] == [False] * 3 and "cannot reach" in failing.last_error
        first, second = _gaps(failing)
        assert 1.0 <= first < 1.0 + 2.5 and 2.0 <= second < 2.0 + 2.5, failing.history  # 1 s, then 2 s
        resolved = Delivery.objects.get(notifier=down, status="resolved")
        assert resolved.state == Delivery.State.FAILED and resolved.attempts == 3
        assert Delivery.objects.filter(state=Delivery.State.DELIVERED).count() == 8  # 4 peers x (firing, resolved)
    finally:
        for server in (receiver, slack):
            server.server.shutdown()
            server.server.server_close()


def test_a_silence_holds_every_notification_back_until_it_is_expired(
    world, node, replicas, smtp_servers, certificate, alertmanager,  # noqa: F811
):  # fmt: skip
    receiver = peers.http_receiver()
    group, slack = _peers(world, receiver, smtp_servers, certificate, alertmanager, "quiet")
    try:
        rule = services.rule_create(
            tenant=world.a, name="crash-loop-silenced", kind="event", event="replica_crash_looping",
            window_seconds=60, threshold=3, for_seconds=1, notifiers=group.notifiers, actor=world.users["staff"],
        )  # fmt: skip
        silence = services.silence_create(
            tenant=world.a, matchers=[{"label": "app", "op": "=", "value": replicas.app.name}],
            ends_at=timezone.now() + timedelta(hours=1), actor=world.users["staff"], comment="maintenance",
        )  # fmt: skip
        _, container = replicas(CRASH, restart_policy={"Name": "always"})
        report(node.name)
        evaluate()
        crash_until(container, 4)
        report(node.name)
        evaluate()
        time.sleep(1.1)
        for _ in range(3):
            report(node.name)
            assert evaluate()["notifications"] == 0
        alert = Alert.objects.get(rule=rule)
        assert alert.state == "firing" and alert.silenced
        assert not Delivery.objects.exists()
        assert group.statuses() == {peer: [] for peer in PEERS}
        assert alertmanager.alerts(alertname="crash-loop-silenced") == []

        services.silence_expire(silence=silence, actor=world.users["staff"])
        report(node.name)
        assert evaluate()["notifications"] == 4
        alert.refresh_from_db()
        assert alert.state == "firing" and not alert.silenced
        deliver_due()
        group.all_got("firing")
        (shown,) = alertmanager.alerts(alertname="crash-loop-silenced")
        assert shown["labels"]["app"] == replicas.app.name
    finally:
        for server in (receiver, slack):
            server.server.shutdown()
            server.server.server_close()
