"""The admin's alerting pages open for a superuser with rows in them; alerts and history are read-only."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import Client

from alerting import services
from alerting.models import Alert, AlertEvent


def test_admin_pages(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    rule = services.rule_create(
        tenant=world.a, name="load", metric="hivemind_test_load", threshold=0.5, actor=world.users["staff"]
    )
    services.rules_evaluate()
    admin = get_user_model().objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(admin)
    for page in ("alertrule", "alert", "alertevent", "alertgroup", "silence"):
        response = client.get(f"/admin/alerting/{page}/")
        assert response.status_code == 200, page
    assert client.get(f"/admin/alerting/alertrule/{rule.pk}/change/").status_code == 200
    alert = Alert.objects.get(rule=rule)
    assert client.get("/admin/alerting/alert/add/").status_code == 403
    assert client.post(f"/admin/alerting/alert/{alert.pk}/change/", {"state": "resolved"}).status_code == 403
    assert AlertEvent.objects.filter(alert=alert).exists()
