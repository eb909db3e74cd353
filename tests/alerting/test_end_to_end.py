"""End to end on the suite's Docker daemon: a real container that keeps crashing, its restarts
reported by the node agent, a crash-loop rule and the same condition as a metric rule over the
metrics engine's `hivemind_container_restarts_total`: pending, firing, one notification to a
real HTTP receiver (the webhook notifier, delivered by the service the delivery task runs),
then resolved and announced once more when the container stops crashing."""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from alerting import services
from alerting.models import Alert
from hivemind.nodes.agent import Agent
from notifiers import services as notifier_services
from notifiers.models import Delivery
from tests.applications.conftest import node  # noqa: F401 - this machine as a ready node
from tests.notifiers import peers
from tests.observability.conftest import replicas  # noqa: F401 - managed containers with their rows

CRASH = ["sh", "-c", "sleep 0.2; exit 3"]


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


def deliver_all(receiver) -> list[dict]:
    for delivery in Delivery.objects.filter(state=Delivery.State.PENDING):
        notifier_services.delivery_attempt(delivery_id=delivery.pk)
    return [r.json() for r in receiver.received]


def test_a_crash_looping_container_fires_notifies_once_and_resolves(world, node, replicas):  # noqa: F811
    receiver = peers.http_receiver()
    try:
        hook = notifier_services.notifier_create(
            tenant=world.a, name="hook", kind="webhook", config={"url": f"{receiver.url}/alerts"},
            secrets={"secret": "a-secret-of-24-characters"}, actor=world.users["staff"],
        )  # fmt: skip
        event_rule = services.rule_create(
            tenant=world.a, name="crash-loop", kind="event", event="replica_crash_looping", window_seconds=120,
            threshold=3, for_seconds=1, notifiers=[hook], actor=world.users["staff"],
            annotations={"summary": "{{ labels.app }}/{{ labels.replica }} restarted {{ value }} times"},
        )  # fmt: skip
        metric_rule = services.rule_create(
            tenant=world.a, name="restarts", metric="hivemind_container_restarts_total", aggregation="increase",
            window_seconds=120, comparison=">=", threshold=3, actor=world.users["staff"],
        )  # fmt: skip
        row, container = replicas(CRASH, restart_policy={"Name": "always"})
        report(node.name)
        services.rules_evaluate()
        deadline = time.monotonic() + 60
        while restarts(container) < 4:  # Docker's backoff: 0.1, 0.2, 0.4, 0.8 s between restarts
            assert time.monotonic() < deadline, "the container did not restart 4 times in 60 s"
            time.sleep(0.2)
        report(node.name)
        row.refresh_from_db()
        assert row.restarts >= 4
        services.rules_evaluate()
        alert = Alert.objects.get(rule=event_rule)
        assert alert.state == "pending", alert.value
        assert alert.labels["app"] == replicas.app.name and alert.labels["replica"] == "0"
        assert Alert.objects.get(rule=metric_rule).state == "firing"  # no `for`
        time.sleep(1.1)
        report(node.name)
        services.rules_evaluate()
        alert.refresh_from_db()
        assert alert.state == "firing"
        for _ in range(3):  # still crashing: nothing new to say within the repeat interval
            report(node.name)
            services.rules_evaluate()
        sent = deliver_all(receiver)
        assert [n["status"] for n in sent] == ["firing"]
        assert sent[0]["rule"] == {"name": "crash-loop", "severity": "warning", "tenant": "tenant-a"}
        summary = sent[0]["alerts"][0]["annotations"]["summary"]
        assert summary.startswith(f"{replicas.app.name}/0 restarted ")

        container.update(restart_policy={"Name": "no"})
        container.stop(timeout=1)
        report(node.name)
        later = timezone.now() + timedelta(seconds=121)  # the restarts are out of the window
        services.rules_evaluate(now=later)
        alert.refresh_from_db()
        assert alert.state == "resolved"
        sent = deliver_all(receiver)
        assert [n["status"] for n in sent] == ["firing", "resolved"]
        assert sent[1]["alerts"][0]["ends_at"] == later.isoformat()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
