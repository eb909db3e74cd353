"""The dashboard's alerting pages through Django's test client: alerts by state and their history,
rules (list, detail, create and edit forms, the live preview), silences (list, create, expire),
the tenant page's summary. Alerts come from the real evaluation pass (alerting.services.
rules_evaluate) over a test collector's series registered in the metrics engine for the test.

The scoping rules are the API's: another tenant's alert, rule or silence is a 404 for every
page and every write; a viewer sees everything of their tenant and may change nothing (403,
nothing written); platform rules, their alerts and their history are staff's only.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerting import services
from alerting.models import Alert, AlertEvent, AlertRule, Silence
from tests.alerting.conftest import collector  # noqa: F401 - the test collector, registered for the test
from tests.api_suite import ROLE_ORDER

GOOD_RULE = {
    "name": "busy",
    "kind": "metric",
    "metric": "hivemind_test_load",
    "matchers": 'app="web"',
    "aggregation": "last",
    "window": "5m",
    "comparison": ">",
    "threshold": "0.5",
    "for_duration": "2m",
    "severity": "critical",
    "labels": "team=web",
    "annotations": "summary=load of {{ labels.app }} is {{ value }}",
    "repeat_interval": "4h",
    "enabled": "on",
}


def text(response) -> str:
    return response.content.decode()


def unescaped(response) -> str:
    return text(response).replace("&#x27;", "'").replace("&quot;", '"')


def field_error(response, field: str) -> str:
    page = unescaped(response)
    error = re.search(rf'<div class="field-error" id="id_{field}_error" role="alert"><p>(.*?)</p>', page, re.S)
    assert error, f"no error next to {field}: {page[page.find('field-error') - 200 :][:600]}"
    return error.group(1)


def section(response, state: str) -> str:
    """The HTML of one state's section of the alerts page."""
    found = re.search(rf'<section class="card" id="state-{state}">(.*?)</section>', text(response), re.S)
    assert found, f"no {state} section"
    return found.group(1)


@pytest.fixture
def alerting(world, collector):  # noqa: F811
    """Tenant A: `high-load` firing for web/0 (0.9 > 0.5), `slow-load` pending for web/0 and web/1
    (for 10 minutes), `broken` (its metric is gone: it cannot be evaluated), a silence of another
    app; tenant B: `secret-rule` firing for secret-app and a silence. One evaluation pass made them."""
    staff = world.users["staff"]
    collector.load.update({
        ("tenant-a", "web", "0"): 0.9,
        ("tenant-a", "web", "1"): 0.2,
        ("tenant-b", "secret-app", "0"): 0.95,
    })  # fmt: skip
    summary = {"summary": "load of {{ labels.app }}/{{ labels.replica }} is {{ value }}"}
    high = services.rule_create(
        tenant=world.a, name="high-load", metric="hivemind_test_load", threshold=0.5, annotations=summary, actor=staff
    )
    slow = services.rule_create(
        tenant=world.a, name="slow-load", metric="hivemind_test_load", threshold=0.1, for_seconds=600,
        severity="info", actor=staff,
    )  # fmt: skip
    broken = services.rule_create(tenant=world.a, name="broken", metric="hivemind_test_load", threshold=1, actor=staff)
    AlertRule.objects.filter(pk=broken.pk).update(metric="hivemind_gone")  # as if its collector went away
    secret = services.rule_create(
        tenant=world.b, name="secret-rule", metric="hivemind_test_load", threshold=0.5, actor=staff
    )
    ends = timezone.now() + timedelta(hours=1)
    mine = services.silence_create(
        tenant=world.a, matchers=[{"label": "app", "op": "=", "value": "db"}], ends_at=ends, actor=staff
    )
    theirs = services.silence_create(
        tenant=world.b, matchers=[{"label": "app", "op": "=", "value": "secret-app"}], ends_at=ends, actor=staff,
        comment="secret-silence",
    )  # fmt: skip
    services.rules_evaluate()
    return {
        "high": high, "slow": slow, "broken": broken, "secret": secret, "silence": mine, "their_silence": theirs,
        "firing": Alert.objects.get(rule=high), "their_alert": Alert.objects.get(rule=secret),
    }  # fmt: skip


def read_pages(a: dict) -> dict[str, str]:
    return {
        "alerts": "/alerts/",
        "alerts filtered": "/alerts/?state=firing&severity=warning",
        "history": "/alerts/history/",
        "history filtered": "/alerts/history/?kind=firing&rule=high-load&page=1",
        "alert": f"/alerts/{a['firing'].pk}/",
        "rules": "/alerts/rules/",
        "rule": f"/alerts/rules/{a['high'].pk}/",
        "broken rule": f"/alerts/rules/{a['broken'].pk}/",
        "silences": "/alerts/silences/",
        "silence": f"/alerts/silences/{a['silence'].pk}/",
        "tenant": "/tenants/tenant-a/",
    }


def write_pages(a: dict) -> dict[str, str]:
    return {
        "new rule": "/alerts/rules/new/",
        "edit rule": f"/alerts/rules/{a['high'].pk}/edit/",
        "silence an alert": f"/alerts/silences/?alert={a['firing'].pk}",
    }


@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
def test_every_alerting_page_answers_200_to_every_member(world, alerting, login, role):
    client = login(role.value)
    for name, url in read_pages(alerting).items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        assert "Traceback" not in text(response) and "secret" not in text(response), (name, url)
    alerts = client.get("/alerts/")
    firing = section(alerts, "firing")
    assert ">high-load</a>" in firing and '<span class="tag">replica=0</span>' in firing
    assert "load of web/0 is 0.9" in firing  # the annotation, rendered
    assert '<span class="state state-warning">warning</span>' in firing and "<td>0.9</td>" in firing
    assert "firing for" in firing


def test_alerts_are_grouped_by_state_and_filtered(world, alerting, login):
    client = login("viewer")
    alerts = client.get("/alerts/")
    assert section(alerts, "firing").count('<tr><td><a href="/alerts/') == 1
    pending = section(alerts, "pending")
    assert pending.count(">slow-load</a>") == 2 and "pending for" in pending
    assert "replica=1" in pending and "replica=1" not in section(alerts, "firing")
    assert "None." in section(alerts, "silenced") and "None." in section(alerts, "resolved")
    only_pending = client.get("/alerts/?state=pending")
    assert 'id="state-pending"' in text(only_pending) and 'id="state-firing"' not in text(only_pending)
    info = client.get("/alerts/?severity=info")  # slow-load is info, high-load warning
    assert "None." in section(info, "firing") and section(info, "pending").count(">slow-load</a>") == 2
    assert client.get("/alerts/?state=nonsense").status_code == 200  # a bad filter filters nothing
    # The history: every state change, newest first, with its alert's labels.
    history = text(client.get("/alerts/history/"))
    assert history.count('<span class="state state-pending">pending</span>') == 3
    assert history.count('<span class="state state-firing">firing</span>') == 1
    filtered = text(client.get("/alerts/history/?kind=firing"))
    assert filtered.count("<tr><td title=") == 1 and ">high-load</a>" in filtered
    detail = text(client.get(f"/alerts/{alerting['firing'].pk}/"))
    assert "load of web/0 is 0.9" in detail and "<code>hivemind_test_load &gt; 0.5</code>" in detail
    assert 'id="alert-state">firing</span>' in detail
    events = re.search(r'<table id="event-table">(.*?)</table>', detail, re.S).group(1)
    assert [kind for kind in re.findall(r'<span class="state state-(\w+)">', events)] == [
        "notified",
        "firing",
        "pending",
    ]


def test_the_history_is_paginated(world, alerting, login):
    alert, rule = alerting["firing"], alerting["high"]
    now = timezone.now()
    AlertEvent.objects.bulk_create(
        AlertEvent(
            tenant=world.a, alert=alert, rule=rule, kind="notified", at=now - timedelta(seconds=i), message=f"n{i}"
        )
        for i in range(60)
    )
    client = login("viewer")
    first = text(client.get("/alerts/history/"))
    assert "Page 1 of 2" in first and ">n0<" in first and ">n59<" not in first
    assert ">n59<" in text(client.get("/alerts/history/?page=2"))
    assert "Page 1 of 2" in text(client.get(f"/alerts/{alert.pk}/"))


def test_rules_show_their_condition_status_and_why_one_cannot_be_evaluated(world, alerting, login):
    client = login("viewer")
    page = text(client.get("/alerts/rules/"))
    row = re.search(r'<tr><td><a href="/alerts/rules/\d+/">broken</a>.*?</tr>', page, re.S).group(0)
    assert '<span class="state state-error">error</span>' in row
    assert "cannot be evaluated: metric hivemind_gone is not served by any collector" in row
    high = re.search(r'<tr><td><a href="/alerts/rules/\d+/">high-load</a>.*?</tr>', page, re.S).group(0)
    assert "<code>hivemind_test_load &gt; 0.5</code>" in high and "1 firing" in high and "ago" in high
    slow = re.search(r'<tr><td><a href="/alerts/rules/\d+/">slow-load</a>.*?</tr>', page, re.S).group(0)
    assert "<td>10m</td>" in slow and "2 pending" in slow
    detail = text(client.get(f"/alerts/rules/{alerting['broken'].pk}/"))
    assert 'id="rule-message"' in detail and "metric hivemind_gone is not served by any collector" in detail


def test_write_pages_answer_200_to_an_operator(world, alerting, login):
    client = login("operator")
    for name, url in write_pages(alerting).items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        assert 'name="csrfmiddlewaretoken"' in text(response), name
    edit = unescaped(client.get(f"/alerts/rules/{alerting['high'].pk}/edit/"))
    assert 'value="high-load"' in edit and 'value="hivemind_test_load"' in edit and 'value="0.5"' in edit
    assert "summary=load of {{ labels.app }}/{{ labels.replica }} is {{ value }}" in edit
    rules = text(client.get("/alerts/rules/"))
    assert "New rule…" in rules
    assert "Edit…" in text(client.get(f"/alerts/rules/{alerting['high'].pk}/"))


def test_another_tenants_alerts_rules_and_silences_are_404_everywhere(world, alerting, login):
    alert, rule, silence = alerting["their_alert"], alerting["secret"], alerting["their_silence"]
    client = login("owner")  # the strongest role in tenant A, nothing in B
    for url in [
        f"/alerts/{alert.pk}/",
        f"/alerts/rules/{rule.pk}/",
        f"/alerts/rules/{rule.pk}/edit/",
        f"/alerts/silences/{silence.pk}/",
        f"/alerts/silences/?alert={alert.pk}",
    ]:
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
        assert "secret" not in text(response) and "Traceback" not in text(response)
    for url, data in {
        f"/alerts/rules/{rule.pk}/edit/": {**GOOD_RULE, "name": "secret-rule"},
        f"/alerts/rules/{rule.pk}/edit/?partial=preview": {**GOOD_RULE, "preview": "1"},
        f"/alerts/rules/{rule.pk}/delete/": {},
        f"/alerts/silences/{silence.pk}/expire/": {},
    }.items():
        assert client.post(url, data).status_code == 404, url
    rule.refresh_from_db()
    silence.refresh_from_db()
    assert (rule.threshold, rule.severity) == (0.5, "warning") and silence.ends_at > timezone.now()
    for url in ["/alerts/", "/alerts/history/", "/alerts/rules/", "/alerts/silences/", "/tenants/tenant-a/"]:
        page = text(client.get(url))
        assert "secret" not in page and f"/alerts/{alert.pk}/" not in page, url


def test_platform_rules_and_their_alerts_are_staffs_only(world, alerting, login):
    rule = services.rule_create(
        tenant=world.a, name="platform-load", platform=True, metric="hivemind_test_load", threshold=0.5,
        actor=world.users["staff"],
    )  # fmt: skip
    services.rules_evaluate()
    alerts = Alert.objects.filter(rule=rule)
    assert alerts.count() == 2  # web/0 of A and secret-app of B: every tenant's series
    owner = login("owner")
    for url in ["/alerts/", "/alerts/history/", "/alerts/rules/", "/tenants/tenant-a/"]:
        assert "platform-load" not in text(owner.get(url)), url
    assert owner.get(f"/alerts/rules/{rule.pk}/").status_code == 404
    for alert in alerts:  # both belong to the rule's tenant, A
        assert owner.get(f"/alerts/{alert.pk}/").status_code == 404
    assert "1 firing" in text(owner.get("/tenants/tenant-a/"))
    staff = login("staff")
    staff.post("/tenant/switch/", {"tenant": "tenant-a"})
    assert "platform-load" in text(staff.get("/alerts/rules/"))
    assert staff.get(f"/alerts/rules/{rule.pk}/").status_code == 200
    form = {**GOOD_RULE, "name": "platform-load", "matchers": ""}
    preview = staff.post(f"/alerts/rules/{rule.pk}/edit/", {**form, "preview": "1"})
    assert preview.status_code == 200 and "tenant=tenant-b" in text(preview)  # every tenant's series
    assert staff.post(f"/alerts/rules/{rule.pk}/edit/", form).status_code == 302
    rule.refresh_from_db()
    assert rule.platform and rule.severity == "critical"


def test_a_viewers_writes_are_403_and_change_nothing(world, alerting, login):
    rule, silence = alerting["high"], alerting["silence"]
    client = login("viewer")
    before = (AlertRule.objects.count(), Silence.objects.count())
    for url, data in {
        "/alerts/rules/new/": {**GOOD_RULE},
        "/alerts/rules/new/?partial=preview": {**GOOD_RULE, "preview": "1"},
        f"/alerts/rules/{rule.pk}/edit/": {**GOOD_RULE, "name": "high-load"},
        f"/alerts/rules/{rule.pk}/delete/": {},
        "/alerts/silences/": {"matchers": 'app="web"', "duration": "1h"},
        f"/alerts/silences/{silence.pk}/expire/": {},
    }.items():
        response = client.post(url, data)
        assert response.status_code == 403, (url, response.status_code)
        assert "Traceback" not in text(response)
    for url in ["/alerts/rules/new/", f"/alerts/rules/{rule.pk}/edit/"]:
        assert client.get(url).status_code == 403, url
    rule.refresh_from_db()
    silence.refresh_from_db()
    assert (rule.threshold, rule.severity, rule.metric) == (0.5, "warning", "hivemind_test_load")
    assert silence.ends_at > timezone.now()
    assert (AlertRule.objects.count(), Silence.objects.count()) == before
    # No buttons for what the viewer may not do.
    assert "New rule…" not in text(client.get("/alerts/rules/"))
    detail = text(client.get(f"/alerts/rules/{rule.pk}/"))
    assert "Edit…" not in detail and "Delete" not in detail
    assert "Silence…" not in text(client.get("/alerts/")) and "Silence…" not in text(
        client.get(f"/alerts/{alerting['firing'].pk}/")
    )
    silences = text(client.get("/alerts/silences/"))
    assert 'id="silence-form"' not in silences
    assert "Expire now" not in text(client.get(f"/alerts/silences/{silence.pk}/"))


def test_csrf_is_enforced_on_every_alerting_form(world, alerting, login):
    rule, silence = alerting["high"], alerting["silence"]
    client = login("operator", enforce_csrf_checks=True)
    forms = {
        "/alerts/rules/new/": {**GOOD_RULE},
        f"/alerts/rules/{rule.pk}/edit/": {**GOOD_RULE, "name": "high-load", "threshold": "0.7"},
        "/alerts/silences/": {"matchers": 'app="web"', "duration": "1h"},
        f"/alerts/silences/{silence.pk}/expire/": {},
        f"/alerts/rules/{rule.pk}/delete/": {},
    }
    before = (AlertRule.objects.count(), Silence.objects.count())
    for url, data in forms.items():
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "Form expired" in text(response)
    rule.refresh_from_db()
    silence.refresh_from_db()
    assert rule.threshold == 0.5 and silence.ends_at > timezone.now()
    assert (AlertRule.objects.count(), Silence.objects.count()) == before
    client.get("/alerts/rules/new/")  # sets the CSRF cookie, as a browser would
    token = client.cookies["csrftoken"].value
    for url, data in forms.items():
        response = client.post(url, {**data, "csrfmiddlewaretoken": token})
        assert response.status_code == 302, (url, text(response)[:2000])
    assert not AlertRule.objects.filter(pk=rule.pk).exists()  # the last one deleted it
    assert AlertRule.objects.filter(tenant=world.a, name="busy").exists()
    silence.refresh_from_db()
    assert silence.ends_at <= timezone.now()


def rules_state() -> list:
    return list(AlertRule.objects.order_by("pk").values_list("pk", "updated_at"))


BAD_RULES = [
    ({"name": "Bad_Name"}, "name", "expected a DNS label"),
    ({"name": ""}, "name", "This field is required"),
    ({"name": "high-load"}, "name", "tenant tenant-a has a rule named high-load already"),
    ({"metric": "hivemind_nope"}, "metric", "no collector serves a metric named 'hivemind_nope'"),
    ({"metric": ""}, "metric", "a metric rule needs a metric name"),
    ({"matchers": 'nolabel="x"'}, "matchers", "matchers[0].label: hivemind_test_load has no label 'nolabel'"),
    ({"matchers": "app=web"}, "matchers", 'expected label="value"'),
    ({"matchers": 'app=~"("'}, "matchers", "matchers[0].value: not a regular expression"),
    ({"by": "nolabel"}, "by", "by[0]: hivemind_test_load has no label 'nolabel'"),
    ({"window": "5 parsecs"}, "window", "expected a duration such as 30, 30s, 5m, 2h or 1d"),
    ({"window": "30d"}, "window", "expected 1 to 604800 seconds"),
    ({"for_duration": "-1m"}, "for_duration", "expected a duration"),
    ({"repeat_interval": "10s"}, "repeat_interval", "expected 60 to 2.592e+06 seconds"),
    ({"threshold": "lots"}, "threshold", "expected a number, got 'lots'"),
    ({"threshold": "NaN"}, "threshold", "expected a finite number"),
    ({"threshold": "1e300"}, "threshold", "expected a finite number"),
    ({"threshold": ""}, "threshold", "a metric rule needs a threshold"),
    ({"comparison": "=>"}, "comparison", "Select a valid choice"),
    ({"aggregation": "median"}, "aggregation", "Select a valid choice"),
    ({"severity": "apocalyptic"}, "severity", "Select a valid choice"),
    ({"labels": "novalue"}, "labels", "expected key=value"),
    ({"labels": "team={{ value }}"}, "labels", "labels.team: labels are not templates"),
    ({"labels": "bad-name=x"}, "labels", "labels.bad-name: expected a name of letters"),
    ({"annotations": "summary={{ nope }}"}, "annotations", "unknown placeholder '{{ nope }}'"),
    ({"annotations": "summary=\x1b[2J"}, "annotations", "has a control character"),
    ({"kind": "event", "event": ""}, "event", "an event rule needs an event"),
    ({"kind": "event", "event": "node_lost"}, "event", "a platform rule (staff) watches it"),
    ({"kind": "outlier"}, "kind", "Select a valid choice"),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_RULES, ids=[f"{b[1]}:{b[2][:24]}" for b in BAD_RULES])
def test_bad_rule_input_shows_the_error_next_to_the_field_and_creates_nothing(
    world, alerting, login, change, field, message
):
    client = login("operator")
    before = rules_state()
    response = client.post("/alerts/rules/new/", {**GOOD_RULE, **change})
    assert response.status_code == 400, text(response)[:2000]
    assert message in field_error(response, field)
    assert f'aria-describedby="id_{field}_helptext id_{field}_error"' in text(response) or (
        f'aria-describedby="id_{field}_error"' in text(response)
    )
    assert rules_state() == before
    # The same refusal on an edit, which changes nothing.
    if field != "name" or "already" not in message:
        edit = client.post(f"/alerts/rules/{alerting['slow'].pk}/edit/", {**GOOD_RULE, "name": "slow-load", **change})
        assert edit.status_code == 400 and message in field_error(edit, field)
        slow = AlertRule.objects.get(pk=alerting["slow"].pk)
        assert (slow.name, slow.threshold, slow.severity) == ("slow-load", 0.1, "info")


def test_a_created_rule_is_listed_shown_and_served_by_the_api(world, alerting, login):
    client = login("operator")
    response = client.post("/alerts/rules/new/", GOOD_RULE)
    assert response.status_code == 302, text(response)[:3000]
    rule = AlertRule.objects.get(tenant=world.a, name="busy")
    assert response["Location"] == f"/alerts/rules/{rule.pk}/"
    assert (rule.metric, rule.threshold, rule.for_seconds, rule.severity, rule.created_by) == (
        "hivemind_test_load",
        0.5,
        120,
        "critical",
        world.users["operator"],
    )
    assert rule.matchers == [{"label": "app", "op": "=", "value": "web"}] and rule.labels == {"team": "web"}
    detail = text(client.get(response["Location"]))
    assert "Rule busy saved" in detail and '<span class="tag">team=web</span>' in detail
    listed = text(client.get("/alerts/rules/"))
    assert "<code>hivemind_test_load{app=&quot;web&quot;} &gt; 0.5</code>" in listed and "<td>2m</td>" in listed
    api = world.client("viewer").get("/api/v1/alert-rules/?name=busy", HTTP_X_HIVEMIND_TENANT="tenant-a")
    assert api.status_code == 200
    (served,) = api.json()["results"]
    assert (served["metric"], served["threshold"], served["for"], served["severity"]) == (
        "hivemind_test_load",
        0.5,
        120,
        "critical",
    )
    assert served["annotations"] == {"summary": "load of {{ labels.app }} is {{ value }}"}
    # An event rule from the same form: the metric box's text is not sent with it.
    event_rule = {"name": "crashes", "kind": "event", "event": "replica_crash_looping", "threshold": "", "matchers": ""}
    event = client.post("/alerts/rules/new/", {**GOOD_RULE, **event_rule})
    assert event.status_code == 302, text(event)[:3000]
    crashes = AlertRule.objects.get(tenant=world.a, name="crashes")
    assert (crashes.kind, crashes.metric, crashes.event, crashes.threshold, crashes.comparison) == (
        "event",
        "",
        "replica_crash_looping",
        3,
        ">=",
    )


def test_an_anomaly_rule_from_the_form_learns_its_window_and_needs_no_threshold(world, alerting, login):
    client = login("operator")
    # The metric rule's boxes (by, aggregation, comparison, threshold) are not sent with it.
    anomaly = {**GOOD_RULE, "name": "odd-load", "kind": "anomaly", "window": "", "by": "app"}
    made = client.post("/alerts/rules/new/", anomaly)
    assert made.status_code == 302, text(made)[:3000]
    rule = AlertRule.objects.get(tenant=world.a, name="odd-load")
    assert (rule.kind, rule.metric, rule.window_seconds, rule.by) == ("anomaly", "hivemind_test_load", 3600, [])
    assert rule.matchers == [{"label": "app", "op": "=", "value": "web"}]
    short = client.post("/alerts/rules/new/", {**anomaly, "name": "too-short", "window": "5m"})
    assert "at least 10 minutes of history" in field_error(short, "window")
    assert not AlertRule.objects.filter(name="too-short").exists()
    form = text(client.get(f"/alerts/rules/{rule.pk}/edit/"))
    assert '<option value="anomaly" selected>anomaly</option>' in form and 'data-kind="metric anomaly"' in form


def test_an_operator_edits_and_deletes_a_rule(world, alerting, login):
    rule = alerting["high"]
    client = login("operator")
    form = {**GOOD_RULE, "name": "high-load", "matchers": "", "threshold": "0.95", "enabled": ""}
    response = client.post(f"/alerts/rules/{rule.pk}/edit/", form)
    assert response.status_code == 302, text(response)[:3000]
    rule.refresh_from_db()
    assert (rule.threshold, rule.severity, rule.enabled) == (0.95, "critical", False)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == Alert.State.RESOLVED  # disabling resolves its alerts (the service's rule)
    assert client.post(f"/alerts/rules/{rule.pk}/delete/").status_code == 302
    assert not AlertRule.objects.filter(pk=rule.pk).exists()


def test_the_preview_shows_each_series_value_without_saving(world, alerting, login):
    client = login("operator")
    before = AlertRule.objects.count()
    form = {**GOOD_RULE, "name": "", "matchers": "", "preview": "1"}
    response = client.post("/alerts/rules/new/", form)
    assert response.status_code == 200, text(response)[:3000]
    table = re.search(r'<table id="preview-table">(.*?)</table>', text(response), re.S).group(1)
    rows = re.findall(r"<tr( class=\"matches\")?><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    shown = sorted((re.findall(r"replica=(\d)", labels)[0], value, meets) for _, labels, value, meets in rows)
    assert shown == [("0", "0.9", "yes"), ("1", "0.2", "no")]  # only tenant A's series
    assert "secret" not in table and AlertRule.objects.count() == before
    # The fragment the page's script asks for while one types: the table alone.
    partial = client.post("/alerts/rules/new/?partial=preview", {**form, "threshold": "0.1"})
    assert partial.status_code == 200 and text(partial).startswith('<div id="rule-preview"')
    assert text(partial).count('class="matches"') == 2 and "<html" not in text(partial)
    # A bad expression is an error next to its field, in the preview too.
    bad = client.post("/alerts/rules/new/", {**form, "metric": "hivemind_nope"})
    assert bad.status_code == 400 and "no collector serves" in field_error(bad, "metric")
    assert "Nothing to preview" in text(bad)
    # An event rule's preview: nothing matches yet, and it says so.
    backups = client.post("/alerts/rules/new/", {**form, "kind": "event", "event": "backup_failed", "threshold": ""})
    assert backups.status_code == 200 and "backups do not exist yet" not in text(backups)
    # Editing: the saved rule's form previews the same way.
    edit = client.post(f"/alerts/rules/{alerting['high'].pk}/edit/", {**form, "name": "high-load"})
    assert edit.status_code == 200 and 'id="preview-table"' in text(edit)
    assert AlertRule.objects.count() == before


def test_silencing_an_alert_shows_it_silenced_until_the_silence_expires(world, alerting, login):
    alert = alerting["firing"]
    client = login("operator")
    prefilled = unescaped(client.get(f"/alerts/silences/?alert={alert.pk}"))
    assert 'value="alertname="high-load", app="web", replica="0", tenant="tenant-a""' in prefilled
    response = client.post(
        "/alerts/silences/", {"matchers": 'alertname="high-load", app="web"', "duration": "1h", "comment": "deploying"}
    )
    assert response.status_code == 302, text(response)[:3000]
    silence = Silence.objects.get(comment="deploying")
    assert silence.matchers == [
        {"label": "alertname", "op": "=", "value": "high-load"}, {"label": "app", "op": "=", "value": "web"}
    ]  # fmt: skip
    assert 3590 <= (silence.ends_at - timezone.now()).total_seconds() <= 3600
    detail = text(client.get(response["Location"]))
    assert 'id="silence-state">active</span>' in detail and f'href="/alerts/{alert.pk}/"' in detail
    services.rules_evaluate()
    alerts = client.get("/alerts/")
    assert ">high-load</a>" in section(alerts, "silenced") and ">high-load</a>" not in section(alerts, "firing")
    assert '<span class="state state-silenced">silenced</span>' in text(client.get(f"/alerts/{alert.pk}/"))
    assert "1 silenced" in text(client.get("/tenants/tenant-a/"))
    assert client.post(f"/alerts/silences/{silence.pk}/expire/").status_code == 302
    expired = text(client.get(f"/alerts/silences/{silence.pk}/"))
    assert 'id="silence-state">expired</span>' in expired and "Expire now" not in expired
    services.rules_evaluate()
    alerts = client.get("/alerts/")
    assert ">high-load</a>" in section(alerts, "firing") and ">high-load</a>" not in section(alerts, "silenced")
    history = text(client.get("/alerts/history/?rule=high-load"))
    assert "state-silenced" in history and "state-unsilenced" in history


BAD_SILENCES = [
    ({"matchers": ""}, "matchers", "This field is required"),
    ({"matchers": "app"}, "matchers", 'expected label="value"'),
    ({"matchers": 'app=~"["'}, "matchers", "matchers[0].value: not a regular expression"),
    ({"matchers": '1app="x"'}, "matchers", 'expected label="value"'),
    ({"duration": "10s"}, "duration", "expected 60 to"),
    ({"duration": "forever"}, "duration", "expected a duration"),
    ({"duration": ""}, "duration", "give a duration or an end time"),
    ({"ends_at": "2026-13-45"}, "ends_at", "Enter a valid date/time"),
    ({"duration": "", "ends_at": "2001-01-01 00:00"}, "ends_at", "a silence ends after it starts, and in the future"),
    ({"ends_at": "2099-01-01 00:00"}, "ends_at", "give either a duration or an end time"),
    ({"comment": "x" * 501}, "comment", "at most 500 characters"),
]


@pytest.mark.parametrize(
    ("change", "field", "message"), BAD_SILENCES, ids=[f"{b[1]}:{b[2][:24]}" for b in BAD_SILENCES]
)
def test_bad_silence_input_shows_the_error_next_to_the_field_and_creates_nothing(
    world, alerting, login, change, field, message
):
    client = login("operator")
    before = Silence.objects.count()
    response = client.post("/alerts/silences/", {"matchers": 'app="web"', "duration": "1h", **change})
    assert response.status_code == 400
    assert message in field_error(response, field)
    assert Silence.objects.count() == before


def test_a_silence_until_an_end_time(world, alerting, login):
    client = login("operator")
    response = client.post(
        "/alerts/silences/", {"matchers": 'app="web"', "duration": "", "ends_at": "2099-01-01 12:00"}
    )
    assert response.status_code == 302
    assert Silence.objects.order_by("-pk").first().ends_at.isoformat() == "2099-01-01T12:00:00+00:00"


def test_the_tenant_page_summarises_alerts_and_links_them(world, alerting, login):
    page = text(login("viewer").get("/tenants/tenant-a/"))
    summary = re.search(r'<p id="tenant-alerts">(.*?)</p>', page, re.S).group(1)
    assert '<a href="/alerts/?state=firing"><span class="state state-firing">1 firing</span></a>' in summary
    assert '<a href="/alerts/?state=pending"><span class="state state-pending">2 pending</span></a>' in summary


def test_the_navigation_links_the_alerts_pages(world, alerting, login):
    client = login("viewer")
    assert '<a href="/alerts/">Alerts</a>' in text(client.get("/"))
    page = text(client.get(f"/alerts/rules/{alerting['high'].pk}/"))
    assert '<a href="/alerts/" aria-current="page">Alerts</a>' in page
    assert '<a href="/alerts/rules/" aria-current="page">Rules</a>' in text(client.get("/alerts/rules/"))


def test_alerting_pages_cost_the_same_number_of_queries_for_few_or_many_alerts(world, alerting, login, collector):  # noqa: F811
    """No N+1: the pages' queries do not grow with the number of alerts, rules or silences."""
    client = login("viewer")
    staff = world.users["staff"]
    counts: dict[str, list[int]] = {}
    for total in (3, 40):
        for n in range(total):
            collector.load[("tenant-a", f"app{n}", "0")] = 0.9
            if not AlertRule.objects.filter(tenant=world.a, name=f"rule-{n}").exists():
                services.rule_create(
                    tenant=world.a, name=f"rule-{n}", metric="hivemind_test_load", threshold=0.5, actor=staff,
                    matchers=[{"label": "app", "op": "=", "value": f"app{n}"}],
                )  # fmt: skip
                services.silence_create(
                    tenant=world.a, matchers=[{"label": "app", "op": "=", "value": f"nothing{n}"}], actor=staff,
                    ends_at=timezone.now() + timedelta(hours=1),
                )  # fmt: skip
        services.rules_evaluate()
        for url in ["/alerts/", "/alerts/history/", "/alerts/rules/", "/alerts/silences/", "/tenants/tenant-a/",
                    f"/alerts/silences/{alerting['silence'].pk}/", f"/alerts/rules/{alerting['high'].pk}/",
                    f"/alerts/{alerting['firing'].pk}/"]:  # fmt: skip
            client.get(url)
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.setdefault(url, []).append(len(queries))
    assert Alert.objects.filter(tenant=world.a, state="firing").count() >= 41
    for url, (few, many) in counts.items():
        assert few == many, (url, few, many)


def test_a_rule_notifies_the_tenants_notifiers_picked_on_its_form(world, alerting, login):
    from notifiers import services as notifier_services

    staff = world.users["staff"]
    hook = {"kind": "webhook", "config": {"url": "https://hooks.example.com/hivemind"}, "actor": staff,
            "secrets": {"secret": "s" * 32}}  # fmt: skip
    ops = notifier_services.notifier_create(tenant=world.a, name="ops-hook", **hook)
    notifier_services.notifier_create(tenant=world.b, name="secret-hook", **hook)
    client = login("operator")
    form = text(client.get("/alerts/rules/new/"))
    assert 'value="ops-hook"' in form and "secret-hook" not in form
    refused = client.post("/alerts/rules/new/", {**GOOD_RULE, "notifiers": ["secret-hook"]})
    assert refused.status_code == 400 and "Select a valid choice" in field_error(refused, "notifiers")
    assert not AlertRule.objects.filter(name="busy").exists()
    assert client.post("/alerts/rules/new/", {**GOOD_RULE, "notifiers": ["ops-hook"]}).status_code == 302
    rule = AlertRule.objects.get(tenant=world.a, name="busy")
    assert list(rule.notifiers.all()) == [ops]
    assert 'value="ops-hook" id="id_notifiers_0" checked' in text(client.get(f"/alerts/rules/{rule.pk}/edit/"))
    assert "ops-hook, again every 4h while firing" in text(client.get(f"/alerts/rules/{rule.pk}/"))
    assert client.post(f"/alerts/rules/{rule.pk}/edit/", {**GOOD_RULE}).status_code == 302  # none picked
    assert not rule.notifiers.exists()


HOSTILE = [
    ("name", "busy\x00", "Null characters are not allowed"),
    ("name", "x" * 64, "at most 63 characters"),
    ("metric", "hivemind_test_load\x1b[2J", "no collector serves a metric named"),
    ("matchers", 'app="\x01"', "matchers[0].value: expected text of at most 200 printable characters"),
    ("matchers", ", ".join(f'l{i}="x"' for i in range(21)), "at most 20 matchers"),
    ("threshold", "Infinity", "expected a finite number"),
    ("threshold", "9" * 41, "at most 40 characters"),
    ("window", "1e400s", "expected a duration"),
    ("labels", "team=" + "x" * 201, "labels.team: expected text of at most 200 characters"),
    ("annotations", "summary=" + "x" * 2001, "annotations.summary: expected text of at most 2000 characters"),
]


@pytest.mark.parametrize(("field", "value", "message"), HOSTILE, ids=[f"{f}:{m[:24]}" for f, _, m in HOSTILE])
def test_hostile_rule_input_is_refused_next_to_its_field(world, alerting, login, field, value, message):
    client = login("operator")
    before = rules_state()
    for form in ({**GOOD_RULE, field: value}, {**GOOD_RULE, field: value, "preview": "1"}):
        response = client.post("/alerts/rules/new/", form)
        assert response.status_code == 400, (form.get("preview"), response.status_code)
        assert message in field_error(response, field)
    assert rules_state() == before


def test_anonymous_users_are_sent_to_the_login_page(world, alerting):
    from django.test import Client

    client = Client()
    for name, url in {**read_pages(alerting), **write_pages(alerting)}.items():
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), (name, url)
    rule, silence = alerting["high"], alerting["silence"]
    before = (rules_state(), list(Silence.objects.values_list("pk", "ends_at")))
    for url, data in {
        "/alerts/rules/new/": GOOD_RULE,
        f"/alerts/rules/{rule.pk}/edit/": {**GOOD_RULE, "name": "high-load"},
        f"/alerts/rules/{rule.pk}/delete/": {},
        "/alerts/silences/": {"matchers": 'app="web"', "duration": "1h"},
        f"/alerts/silences/{silence.pk}/expire/": {},
    }.items():
        assert client.post(url, data).status_code == 302, url
    assert (rules_state(), list(Silence.objects.values_list("pk", "ends_at"))) == before
