"""Alert rules, silences and alerts through the API: the shared permission suite, platform rules
staff's only, the preview, and bad input as a 400 naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from alerting import services
from alerting.models import Alert, AlertEvent, AlertRule, Silence
from tenants.models import Role
from tests.api_suite import TenantOwnedAPITests

RULES = "/api/v1/alert-rules/"


@pytest.fixture(autouse=True)
def _served(collector):
    """Every test here has the test collector's metrics served."""
    collector.load[("tenant-a", "web", "0")] = 0.9
    collector.load[("tenant-b", "web", "0")] = 0.9


def make_rule(world, tenant, **values) -> AlertRule:
    name = values.pop("name", f"rule-{AlertRule.objects.count()}")
    values = {"metric": "hivemind_test_load", "threshold": 0.5, **values}
    return services.rule_create(tenant=tenant, name=name, actor=world.users["staff"], **values)


def make_alert(world, tenant, **values) -> Alert:
    rule = make_rule(world, tenant, **values)
    now = timezone.now()
    alert = Alert.objects.create(
        tenant=tenant, rule=rule, fingerprint=f"fp{Alert.objects.count()}", group_key="g", labels={"app": "web"},
        state="firing", value=1, active_at=now, fired_at=now, evaluated_at=now,
    )  # fmt: skip
    AlertEvent.objects.create(tenant=tenant, alert=alert, rule=rule, kind="firing", at=now, value=1)
    return alert


class TestAlertRuleAPI(TenantOwnedAPITests):
    basename = "alert-rule"

    def make(self, world, tenant):
        return make_rule(world, tenant)

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "name": f"new-{AlertRule.objects.count()}", "metric": "hivemind_test_load",
                "threshold": 0.5, "window": "5m", "for": "1m"}  # fmt: skip

    def update_payload(self, world):
        return {"threshold": 0.8, "severity": "critical"}


class TestSilenceAPI(TenantOwnedAPITests):
    basename = "silence"
    supports = {"create", "delete"}
    custom_actions = [("expire", "post")]

    def make(self, world, tenant):
        return services.silence_create(
            tenant=tenant, matchers=[{"label": "app", "op": "=", "value": "web"}],
            ends_at=timezone.now() + timedelta(hours=1), actor=world.users["staff"],
        )  # fmt: skip

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "matchers": [{"label": "app", "op": "=", "value": "web"}], "duration": "2h",
                "comment": "deploy"}  # fmt: skip


class TestAlertAPI(TenantOwnedAPITests):
    basename = "alert"
    supports: set[str] = set()
    custom_actions = [("history", "get")]

    def make(self, world, tenant):
        return make_alert(world, tenant)


def test_rule_create_answers_seconds_and_the_rule_as_stored(world):
    client = world.client(Role.OPERATOR.value)
    response = client.post(
        RULES,
        {"tenant": "tenant-a", "name": "busy", "metric": "hivemind_test_load", "aggregation": "avg", "window": "5m",
         "for": "2m", "comparison": ">=", "threshold": "0.75",
         "matchers": [{"label": "app", "op": "=~", "value": "w.*"}],
         "annotations": {"summary": "{{ labels.app }} is at {{ value }}"}, "repeat_interval": "1h"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["window"], body["for"], body["repeat_interval"], body["threshold"]) == (300, 120, 3600, 0.75)
    assert (body["status"], body["notifiers"], body["platform"]) == ("new", [], False)
    rule = AlertRule.objects.get(pk=body["id"])
    assert (rule.for_seconds, rule.created_by) == (120, world.users["operator"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"metric": "hivemind_no_such_metric"}, "metric"),
        ({"metric": ""}, "metric"),
        ({"matchers": [{"label": "app", "op": "=~", "value": "(web"}]}, "matchers[0].value"),
        ({"matchers": [{"label": "colour", "op": "=", "value": "red"}]}, "matchers[0].label"),
        ({"window": "soon"}, "window"),
        ({"for": "-5m"}, "for"),
        ({"threshold": "high"}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"comparison": "=>"}, "comparison"),
        ({"aggregation": "median"}, "aggregation"),
        ({"annotations": {"summary": "{{ value.__class__ }}"}}, "annotations.summary"),
        ({"kind": "anomaly", "window": "1m"}, "window"),
        ({"kind": "anomaly", "by": ["app"]}, "by"),
        ({"kind": "event", "metric": "", "event": "node_lost"}, "event"),
        ({"kind": "event", "metric": "", "event": "earthquake"}, "event"),
        ({"notifiers": ["nobody"]}, "notifiers"),
        ({"name": "Not A Label"}, "name"),
        ({"severity": "fatal"}, "severity"),
        ({"group_by": "app"}, "group_by"),
        ({"by": [1]}, "by"),
        ({"repeat_interval": "1s"}, "repeat_interval"),
        ({"enabled": "maybe"}, "enabled"),
        ({"labels": {"team": "a\x00b"}}, "labels.team"),
        ({"labels": {"team": "{{ value }}"}}, "labels.team"),
        ({"annotations": "text"}, "annotations"),
        ({"matchers": [{"label": "app", "op": "~", "value": "x"}]}, "matchers[0].op"),
    ],
)
def test_bad_rules_are_400_naming_the_field(world, payload, field):
    base = {"tenant": "tenant-a", "name": "bad", "metric": "hivemind_test_load", "threshold": 1}
    response = world.client(Role.OWNER.value).post(RULES, {**base, **payload}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not AlertRule.objects.filter(tenant__slug="tenant-a").exists()


def test_only_staff_make_platform_rules(world):
    body = {"tenant": "tenant-a", "name": "all", "metric": "hivemind_test_load", "platform": True}
    refused = world.client(Role.OWNER.value).post(RULES, body, format="json")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "only platform staff may make platform rules (they see every tenant's series)"
    assert world.client("staff").post(RULES, body, format="json").status_code == 201


def test_an_anomaly_rule_previews_its_series(world):
    body = {"tenant": "tenant-a", "name": "odd", "kind": "anomaly", "metric": "hivemind_test_load"}
    created = world.client(Role.OPERATOR.value).post(RULES, body, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["kind"], created.json()["window"]) == ("anomaly", 3600)
    preview = world.client(Role.VIEWER.value).post(f"{RULES}preview/", body, format="json").json()
    assert preview["series"] == [
        {"labels": {"tenant": "tenant-a", "app": "web", "replica": "0"}, "value": 0.9, "matches": False}
    ]  # learning: no baseline yet


def test_a_taken_name_is_400(world):
    make_rule(world, world.a, name="taken")
    response = world.client(Role.OWNER.value).post(
        RULES, {"tenant": "tenant-a", "name": "taken", "metric": "hivemind_test_load"}, format="json"
    )
    assert response.status_code == 400
    assert "name" in response.json()


def test_platform_rules_and_their_alerts_are_staffs_only(world):
    staff = world.client("staff")
    created = staff.post(
        RULES,
        {"tenant": "tenant-a", "name": "all-load", "metric": "hivemind_test_load", "platform": True},
        format="json",
    )
    assert created.status_code == 201, created.content
    services.rules_evaluate()
    platform_alerts = Alert.objects.filter(rule__platform=True)
    assert sorted(a.labels["tenant"] for a in platform_alerts) == ["tenant-a", "tenant-b"]
    owner = world.client(Role.OWNER.value)
    assert owner.get(f"{RULES}{created.json()['id']}/").status_code == 404
    assert created.json()["id"] not in {r["id"] for r in owner.get(RULES).json()["results"]}
    seen = {a["id"] for a in owner.get("/api/v1/alerts/").json()["results"]}
    assert not seen & {a.pk for a in platform_alerts}  # tenant B's series never reach tenant A's members
    history = owner.get("/api/v1/alerts/history/").json()["results"]
    assert not {e["alert"] for e in history} & {a.pk for a in platform_alerts}
    assert {a["id"] for a in staff.get("/api/v1/alerts/").json()["results"]} >= {a.pk for a in platform_alerts}


def test_preview_shows_the_current_value_per_series_of_the_callers_tenant(world):
    client = world.client(Role.VIEWER.value)
    response = client.post(
        f"{RULES}preview/", {"tenant": "tenant-a", "metric": "hivemind_test_load", "threshold": 0.5}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "message": "",
        "series": [{"labels": {"tenant": "tenant-a", "app": "web", "replica": "0"}, "value": 0.9, "matches": True}],
    }
    assert not AlertRule.objects.exists()
    other = client.post(f"{RULES}preview/", {"tenant": "tenant-b", "metric": "hivemind_test_load"}, format="json")
    assert other.status_code == 400
    assert "tenant" in other.json()
    bad = client.post(f"{RULES}preview/", {"tenant": "tenant-a", "metric": "hivemind_nope"}, format="json")
    assert bad.status_code == 400
    assert "metric" in bad.json()


def test_alert_filters_and_history(world, collector):
    rule = make_rule(world, world.a, name="load", severity="critical")
    services.rules_evaluate()
    client = world.client(Role.VIEWER.value)
    listed = client.get("/api/v1/alerts/", {"state": "firing", "severity": "critical", "rule": "load"}).json()
    assert [a["labels"]["app"] for a in listed["results"]] == ["web"]
    assert client.get("/api/v1/alerts/", {"state": "pending"}).json()["results"] == []
    alert = Alert.objects.get(rule=rule)
    history = client.get(reverse("api:alert-history", args=[alert.pk])).json()["results"]
    assert [e["kind"] for e in history] == ["notified", "firing", "pending"]  # newest first
    assert client.get("/api/v1/alerts/history/", {"rule": "load", "since": "1h"}).json()["count"] == 3
    assert client.get("/api/v1/alerts/history/", {"since": "soon"}).status_code == 400
    assert client.get("/api/v1/alerts/", {"state": "burning"}).status_code == 400


def test_silences_need_an_end_and_a_matcher_and_expire(world):
    client = world.client(Role.OPERATOR.value)
    url = "/api/v1/silences/"
    for payload, field in [
        ({"matchers": [{"label": "app", "op": "=", "value": "web"}]}, "ends_at"),
        ({"matchers": [], "duration": "1h"}, "matchers"),
        ({"matchers": [{"label": "app", "op": "=~", "value": "["}], "duration": "1h"}, "matchers[0].value"),
        ({"matchers": [{"label": "app", "op": "=", "value": "web"}], "duration": "forever"}, "duration"),
        ({"matchers": [{"label": "app", "op": "=", "value": "web"}], "ends_at": "2001-01-01T00:00:00Z"}, "ends_at"),
    ]:
        response = client.post(url, {"tenant": "tenant-a", **payload}, format="json")
        assert response.status_code == 400, (payload, response.content)
        assert field in response.json(), (payload, response.json())
    assert not Silence.objects.exists()
    created = client.post(
        url, {"tenant": "tenant-a", "matchers": [{"label": "app", "op": "=", "value": "web"}], "duration": "2h",
              "comment": "deploy"}, format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["state"], body["created_by"], body["comment"]) == ("active", "operator-a", "deploy")
    expired = client.post(f"{url}{body['id']}/expire/")
    assert expired.status_code == 200
    assert expired.json()["state"] == "expired"
    assert client.get(url, {"expired": "false"}).json()["results"] == []
    assert client.get(url, {"expired": "maybe"}).status_code == 400
