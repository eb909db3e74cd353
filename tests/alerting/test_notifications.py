"""Evaluation hands notifications to the rule's notifiers (notifiers.services.notify records a
Delivery and queues it): one per group per repeat interval, firing and resolved both, none while
silenced; the payload is the contract the notifiers read."""

from __future__ import annotations

from datetime import timedelta

from alerting import services
from alerting.models import Alert
from notifiers import services as notifier_services
from notifiers.models import Delivery
from tests.alerting.test_evaluation import at


def webhook(world, name="ops"):
    return notifier_services.notifier_create(
        tenant=world.a, name=name, kind="webhook", config={"url": "http://127.0.0.1:9/hook"},
        secrets={"secret": "a-secret-of-24-characters"}, actor=world.users["staff"],
    )  # fmt: skip


def test_deliveries_follow_the_groups(world, collector):
    ops, pager = webhook(world), webhook(world, "pager")
    collector.load[("tenant-a", "web", "0")] = 0.9
    collector.load[("tenant-a", "web", "1")] = 0.95
    rule = services.rule_create(
        tenant=world.a, name="load", metric="hivemind_test_load", threshold=0.5, group_by=["app"],
        repeat_interval_seconds=3600, notifiers=[ops, pager], actor=world.users["staff"],
        annotations={"summary": "{{ labels.app }}/{{ labels.replica }} at {{ value }}"},
    )  # fmt: skip
    result = services.rules_evaluate(now=at(0))
    assert result["notifications"] == 2  # one group, two notifiers
    delivery = Delivery.objects.get(notifier=ops)
    payload = delivery.payload
    assert (delivery.status, payload["status"]) == ("firing", "firing")
    assert payload["rule"] == {"name": "load", "severity": "warning", "tenant": "tenant-a"}
    assert payload["group_key"].startswith("tenant-a/load/")
    assert payload["url"] == f"/api/v1/alerts/?rule={rule.pk}"
    assert sorted(a["annotations"]["summary"] for a in payload["alerts"]) == ["web/0 at 0.9", "web/1 at 0.95"]
    assert all(a["ends_at"] is None and a["starts_at"] == at(0).isoformat() for a in payload["alerts"])
    for second in (15, 30, 45):
        assert services.rules_evaluate(now=at(second))["notifications"] == 0
    collector.load.clear()
    services.rules_evaluate(now=at(60))
    resolved = Delivery.objects.get(notifier=ops, status="resolved").payload
    assert {a["ends_at"] for a in resolved["alerts"]} == {at(60).isoformat()}
    assert resolved["group_key"] == payload["group_key"]
    assert Delivery.objects.filter(notifier=pager).count() == 2


def test_silenced_alerts_are_not_delivered(world, collector):
    ops = webhook(world)
    collector.load[("tenant-a", "web", "0")] = 0.9
    services.rule_create(tenant=world.a, name="load", metric="hivemind_test_load", threshold=0.5, notifiers=[ops],
                         actor=world.users["staff"])  # fmt: skip
    services.silence_create(
        tenant=world.a, matchers=[{"label": "alertname", "op": "=", "value": "load"}], starts_at=at(-60),
        ends_at=at(120), actor=world.users["staff"],
    )  # fmt: skip
    services.rules_evaluate(now=at(0))
    assert Alert.objects.get().silenced
    assert not Delivery.objects.exists()
    services.rules_evaluate(now=at(120) + timedelta(seconds=1))
    assert Delivery.objects.filter(status="firing").count() == 1


def test_rules_name_notifiers_through_the_api(world, collector):
    webhook(world)
    client = world.client("operator")
    body = {"tenant": "tenant-a", "name": "load", "metric": "hivemind_test_load", "notifiers": ["ops"]}
    created = client.post("/api/v1/alert-rules/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["notifiers"] == ["ops"]
    changed = client.patch(f"/api/v1/alert-rules/{created.json()['id']}/", {"notifiers": []}, format="json")
    assert changed.json()["notifiers"] == []
