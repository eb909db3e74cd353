"""The alerting engine driven by `rules_evaluate(now=...)` over a collector of the test's own:
the state machine with `for`, window aggregations, grouping and repeat, silences, a rule that
cannot be evaluated, tenant isolation and the event rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from alerting import history, services
from alerting.models import Alert, AlertEvent, AlertGroup, AlertRule, SeriesSample
from hivemind.workflows.models import Workflow, WorkflowState

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)  # silences end in the future


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(world, tenant=None, **values) -> AlertRule:
    defaults = {"name": "high-load", "kind": "metric", "metric": "hivemind_test_load", "comparison": ">",
                "threshold": 0.5}  # fmt: skip
    return services.rule_create(tenant=tenant or world.a, actor=world.users["staff"], **{**defaults, **values})


def kinds(alert: Alert) -> list[str]:
    return list(alert.events.order_by("at", "id").values_list("kind", flat=True))


def test_pending_then_firing_after_for_then_resolved(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world, for_seconds=60, annotations={"summary": "{{ labels.app }} at {{ value }} (over {{ threshold }})"})
    services.rules_evaluate(now=at(0))
    alert = Alert.objects.get(rule=r)
    assert alert.state == "pending"
    assert alert.labels == {"tenant": "tenant-a", "app": "web", "replica": "0", "alertname": "high-load",
                            "severity": "warning"}  # fmt: skip
    assert alert.annotations == {"summary": "web at 0.9 (over 0.5)"}
    services.rules_evaluate(now=at(30))
    alert.refresh_from_db()
    assert alert.state == "pending"
    assert alert.active_at == at(0)
    services.rules_evaluate(now=at(60))
    alert.refresh_from_db()
    assert (alert.state, alert.fired_at) == ("firing", at(60))
    collector.load[("tenant-a", "web", "0")] = 0.2
    services.rules_evaluate(now=at(75))
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at, alert.value) == ("resolved", at(75), 0.9)
    assert kinds(alert) == ["pending", "firing", "notified", "resolved", "notified"]
    group = AlertGroup.objects.get(rule=r)
    assert (group.notified_status, group.notifications) == ("resolved", 2)
    r.refresh_from_db()
    assert (r.status, r.status_message, r.last_evaluated_at) == ("ok", "", at(75))


def test_a_pending_alert_that_clears_never_fires_nor_notifies(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world, for_seconds=60)
    services.rules_evaluate(now=at(0))
    collector.load[("tenant-a", "web", "0")] = 0.1
    services.rules_evaluate(now=at(15))
    alert = Alert.objects.get(rule=r)
    assert alert.state == "resolved"
    assert kinds(alert) == ["pending", "resolved"]
    assert not AlertGroup.objects.filter(rule=r).exists()
    collector.load[("tenant-a", "web", "0")] = 0.9  # back: the same alert, pending again from now
    services.rules_evaluate(now=at(30))
    alert.refresh_from_db()
    assert (alert.state, alert.active_at, alert.resolved_at) == ("pending", at(30), None)


def test_one_notification_per_group_per_repeat_interval(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    collector.load[("tenant-a", "web", "1")] = 0.8
    collector.load[("tenant-a", "api", "0")] = 0.7
    r = rule(world, group_by=["app"], repeat_interval_seconds=3600)
    result = services.rules_evaluate(now=at(0))
    assert result["alerts_changed"] == 3
    groups = {g.labels["app"]: g for g in AlertGroup.objects.filter(rule=r)}
    assert set(groups) == {"web", "api"}
    assert len(groups["web"].notified_alerts) == 2  # both replicas in one notification
    for step in range(1, 10):  # within the repeat interval: nothing more
        services.rules_evaluate(now=at(15 * step))
    assert {g.labels["app"]: g.notifications for g in AlertGroup.objects.filter(rule=r)} == {"web": 1, "api": 1}
    services.rules_evaluate(now=at(3600))
    assert {g.labels["app"]: g.notifications for g in AlertGroup.objects.filter(rule=r)} == {"web": 2, "api": 2}
    # one replica of web clears: the group still fires, no resolved notice yet
    del collector.load[("tenant-a", "web", "1")]
    services.rules_evaluate(now=at(3615))
    assert AlertGroup.objects.get(rule=r, labels__app="web").notifications == 2
    del collector.load[("tenant-a", "web", "0")]
    services.rules_evaluate(now=at(3630))
    web = AlertGroup.objects.get(rule=r, labels__app="web")
    assert (web.notified_status, web.notifications) == ("resolved", 3)
    notified = AlertEvent.objects.filter(rule=r, kind="notified", alert__labels__app="web")
    assert notified.count() == 2 + 2 + 2  # both alerts twice firing, then both (announced) resolved


def test_a_silence_suppresses_notifications_until_it_ends(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world)
    silence = services.silence_create(
        tenant=world.a, matchers=[{"label": "app", "op": "=~", "value": "we.*"}], starts_at=at(-1),
        ends_at=at(300), comment="maintenance", actor=world.users["staff"],
    )  # fmt: skip
    services.rules_evaluate(now=at(0))
    alert = Alert.objects.get(rule=r)
    assert (alert.state, alert.silenced) == ("firing", True)
    assert not AlertGroup.objects.filter(rule=r).exists()
    services.rules_evaluate(now=at(300))  # the silence has ended
    alert.refresh_from_db()
    assert alert.silenced is False
    assert AlertGroup.objects.get(rule=r).notifications == 1
    assert kinds(alert) == ["pending", "firing", "silenced", "unsilenced", "notified"]
    assert silence.comment == "maintenance"


def test_a_silence_of_another_tenant_does_not_apply(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world)
    services.silence_create(
        tenant=world.b, matchers=[{"label": "app", "op": "=", "value": "web"}],
        ends_at=datetime.now(UTC) + timedelta(hours=1), actor=world.users["staff"],
    )  # fmt: skip
    services.rules_evaluate()
    assert Alert.objects.get(rule=r).silenced is False


def test_an_unknown_metric_is_refused_and_shown_on_the_rule(world, collector):
    with pytest.raises(ValidationError) as refused:
        rule(world, metric="hivemind_no_such_metric")
    assert "metric" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        rule(world, matchers=[{"label": "colour", "op": "=", "value": "red"}])
    assert "matchers[0].label" in refused.value.message_dict
    # a metric that goes away after the rule was made (its collector removed)
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world)
    services.rules_evaluate(now=at(0))
    assert Alert.objects.get(rule=r).state == "firing"
    from observability import registry

    registry.unregister("alerting-test")
    result = services.rules_evaluate(now=at(15))
    r.refresh_from_db()
    assert result["errors"] == 1
    assert r.status == "error"
    assert r.status_message == "cannot be evaluated: metric hivemind_test_load is not served by any collector"
    assert Alert.objects.get(rule=r).state == "firing"  # nothing learnt: left as it was


def test_a_tenant_rule_sees_only_its_tenants_series_and_a_platform_rule_all(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    collector.load[("tenant-b", "web", "0")] = 0.9
    mine = rule(world)
    theirs = rule(world, world.b, name="b-load")
    platform = rule(world, name="platform-load", platform=True)
    services.rules_evaluate(now=at(0))
    assert [a.labels["tenant"] for a in Alert.objects.filter(rule=mine)] == ["tenant-a"]
    assert [a.labels["tenant"] for a in Alert.objects.filter(rule=theirs)] == ["tenant-b"]
    assert sorted(a.labels["tenant"] for a in Alert.objects.filter(rule=platform)) == ["tenant-a", "tenant-b"]
    with pytest.raises(PermissionDenied):
        services.rule_create(tenant=world.a, actor=world.users["owner"], name="mine", metric="hivemind_test_load",
                             platform=True)  # fmt: skip


def test_window_aggregations_read_the_samples_kept_and_prune_them(world, collector):
    key = ("tenant-a", "web", "0")
    avg = rule(world, name="avg-load", aggregation="avg", window_seconds=60, threshold=0.5)
    rate = rule(world, name="error-rate", metric="hivemind_test_errors_total", aggregation="rate", window_seconds=60,
                threshold=1, matchers=[{"label": "app", "op": "=", "value": "web"}])  # fmt: skip
    increase = rule(world, name="errors", metric="hivemind_test_errors_total", aggregation="increase",
                    window_seconds=60, comparison=">=", threshold=50)  # fmt: skip
    for second, load, errors in [(0, 1.0, 100), (15, 0.0, 110), (30, 0.0, 120), (45, 0.0, 5)]:
        collector.load[key] = load
        collector.errors[("tenant-a", "web")] = errors
        services.rules_evaluate(now=at(second))
    # avg over 0..45 = 0.25: below (it fired at 0, alone in its window); increase 10 + 10 + 5 (a reset) = 25,
    # rate 25 / 45 s
    assert Alert.objects.get(rule=avg).state == "resolved"
    assert not Alert.objects.filter(rule=increase).exists()
    assert not Alert.objects.filter(rule=rate).exists()
    collector.load[key] = 1.0
    collector.errors[("tenant-a", "web")] = 60
    services.rules_evaluate(now=at(60))  # avg (1+0+0+0+1)/5 = 0.4; increase 25 + 55 = 80; rate 80/60
    assert Alert.objects.get(rule=avg).state == "resolved"
    assert Alert.objects.get(rule=increase).value == 80
    assert Alert.objects.get(rule=rate).value == pytest.approx(80 / 60)
    services.rules_evaluate(now=at(75))  # the sample at 0 falls out: avg (0+0+0+1+1)/5 = 0.4, (15..75)
    collector.load[key] = 1.0
    services.rules_evaluate(now=at(90))  # (0 + 0 + 1 + 1 + 1) / 5 = 0.6
    assert (Alert.objects.get(rule=avg).state, Alert.objects.get(rule=avg).value) == ("firing", pytest.approx(0.6))
    assert not SeriesSample.objects.filter(at__lt=at(30)).exists()  # the widest window: 60 s
    # one row per series and pass, however many rules read it (rate and increase read the same one)
    assert SeriesSample.objects.count() == 2 * 5
    # another worker, with nothing in memory, reads the window from the table and sees the same
    history.store = history.SeriesStore()
    services.rules_evaluate(now=at(105))  # (0 + 1 + 1 + 1 + 1) / 5 = 0.8
    assert Alert.objects.get(rule=avg).value == pytest.approx(0.8)


def test_by_combines_series(world, collector):
    for replica, value in enumerate([0.3, 0.4, 0.5]):
        collector.load[("tenant-a", "web", str(replica))] = value
    collector.load[("tenant-a", "api", "0")] = 0.2
    r = rule(world, by=["app"], aggregation="sum", window_seconds=60, threshold=1)
    services.rules_evaluate(now=at(0))
    alert = Alert.objects.get(rule=r)
    assert alert.labels == {"app": "web", "alertname": "high-load", "severity": "warning"}
    assert alert.value == pytest.approx(1.2)


def test_workflow_failed_rule(world, collector):
    r = services.rule_create(tenant=world.a, actor=world.users["staff"], name="failures", kind="event",
                             event="workflow_failed", window_seconds=600)  # fmt: skip
    assert (r.comparison, r.threshold) == (">=", 1)
    now = datetime.now(UTC)
    Workflow.objects.create(tenant=world.a, kind="app.deploy", state=WorkflowState.FAILED, finished_at=now)
    Workflow.objects.create(tenant=world.b, kind="app.deploy", state=WorkflowState.FAILED, finished_at=now)
    Workflow.objects.create(tenant=world.a, kind="app.scale", state=WorkflowState.SUCCEEDED, finished_at=now)
    services.rules_evaluate(now=now + timedelta(seconds=1))
    alert = Alert.objects.get(rule=r)
    assert (alert.state, alert.value, alert.labels["kind"], alert.labels["tenant"]) == ("firing", 1, "app.deploy",
                                                                                        "tenant-a")  # fmt: skip
    services.rules_evaluate(now=now + timedelta(seconds=601))  # out of the window
    alert.refresh_from_db()
    assert alert.state == "resolved"


def test_volume_almost_full_and_backup_rules(world, collector):
    from prometheus_client.core import GaugeMetricFamily

    from observability import registry

    class Volumes:
        def collect(self):
            size = GaugeMetricFamily("hivemind_volume_size_bytes", "", labels=["tenant", "volume", "pool", "node"])
            used = GaugeMetricFamily("hivemind_volume_used_bytes", "", labels=["tenant", "volume", "pool", "node"])
            for name, fill in [("db", 0.95), ("logs", 0.5)]:
                size.add_metric(["tenant-a", name, "fast", "n1"], 1000)
                used.add_metric(["tenant-a", name, "fast", "n1"], 1000 * fill)
            return [size, used]

    registry.register(Volumes(), name="alerting-test-volumes")
    try:
        full = services.rule_create(tenant=world.a, actor=world.users["staff"], name="full", kind="event",
                                    event="volume_almost_full")  # fmt: skip
        services.rules_evaluate(now=at(0))
    finally:
        registry.unregister("alerting-test-volumes")
    assert [(a.labels["volume"], a.value) for a in Alert.objects.filter(rule=full)] == [("db", 0.95)]


def test_backup_failed_and_backup_unverified_rules(world, collector):
    from backups import services as backup_services
    from backups.models import Backup

    staff = world.users["staff"]
    location = backup_services.location_create(tenant=world.a, name="nightly", kind="local",
                                               config={"path": "nightly"}, actor=staff)  # fmt: skip
    theirs = backup_services.location_create(tenant=world.b, name="theirs", kind="local", config={"path": "t"},
                                             actor=staff)  # fmt: skip
    failed = services.rule_create(tenant=world.a, actor=staff, name="backup-failed", kind="event",
                                  event="backup_failed", window_seconds=3600)  # fmt: skip
    damaged = services.rule_create(tenant=world.a, actor=staff, name="backup-damaged", kind="event",
                                   event="backup_unverified")  # fmt: skip
    services.rules_evaluate(now=at(0))
    assert not Alert.objects.filter(rule__in=[failed, damaged]).exists()
    failed.refresh_from_db()
    assert failed.status == "ok"
    Backup.objects.create(tenant=world.a, location=location, status="failed", finished_at=at(10))
    Backup.objects.create(tenant=world.b, location=theirs, status="failed", finished_at=at(10))  # not A's
    ok = Backup.objects.create(tenant=world.a, location=location, status="succeeded", verified="ok")
    bad = Backup.objects.create(tenant=world.a, location=location, status="succeeded", verified="damaged")
    Backup.objects.create(tenant=world.b, location=theirs, status="succeeded", verified="damaged")
    services.rules_evaluate(now=at(15))
    assert [
        ((a.labels["location"], a.labels["policy"]), a.value, a.state) for a in Alert.objects.filter(rule=failed)
    ] == [(("nightly", ""), 1.0, "firing")]
    assert [(a.labels["backup"], a.labels["location"]) for a in Alert.objects.filter(rule=damaged)] == [
        (str(bad.pk), "nightly")
    ]
    # Verified again and found whole: the alert resolves; the failure leaves the window: so does that one.
    Backup.objects.filter(pk=bad.pk).update(verified="ok")
    services.rules_evaluate(now=at(3700))
    assert set(Alert.objects.filter(rule__in=[failed, damaged]).values_list("state", flat=True)) == {"resolved"}
    assert ok.pk


def test_replica_crash_looping_rule(world, collector):
    from tests.nodes.conftest import make_app, make_container

    app, _ = make_app(world.a, "crashy")
    container = make_container(world.a, None, app=app, replica=0, state="running", restarts=0)
    r = services.rule_create(tenant=world.a, actor=world.users["staff"], name="crash-loop", kind="event",
                             event="replica_crash_looping", window_seconds=300, threshold=3)  # fmt: skip
    for second, restarts in [(0, 0), (15, 1), (30, 2)]:
        container.restarts = restarts
        container.save(update_fields=["restarts"])
        services.rules_evaluate(now=at(second))
    assert not Alert.objects.filter(rule=r).exists()
    container.restarts = 3
    container.save(update_fields=["restarts"])
    services.rules_evaluate(now=at(45))
    alert = Alert.objects.get(rule=r)
    assert (alert.state, alert.value, alert.labels["app"], alert.labels["replica"]) == ("firing", 3, "crashy", "0")
    services.rules_evaluate(now=at(400))  # no restart in the last five minutes
    alert.refresh_from_db()
    assert alert.state == "resolved"


def test_node_lost_is_a_platform_rule(world, collector):
    from hivemind.nodes.models import Node

    with pytest.raises(ValidationError) as refused:
        services.rule_create(tenant=world.a, actor=world.users["staff"], name="lost", kind="event", event="node_lost")
    assert "event" in refused.value.message_dict
    Node.objects.create(name="gone-1", status="not-ready")
    Node.objects.create(name="fine-1", status="ready")
    r = services.rule_create(tenant=world.a, actor=world.users["staff"], name="lost", kind="event", event="node_lost",
                             platform=True)  # fmt: skip
    services.rules_evaluate(now=at(0))
    assert [a.labels["node"] for a in Alert.objects.filter(rule=r)] == ["gone-1"]


def test_an_anomaly_rule_learns_a_baseline_fires_and_explains_itself(world, collector):
    """observability/anomaly.py's detector over the series store: an hour of history by default;
    quiet noise, then a jump that lasts 3 samples fires, with the band and since when."""
    r = rule(world, name="odd-load", kind="anomaly", threshold=0)
    assert (r.window_seconds, r.status) == (3600, "new")
    noise = [50, 52, 49, 51, 50, 48, 53, 50, 51, 49]
    for n in range(60):
        collector.load[("tenant-a", "web", "0")] = noise[n % len(noise)]
        services.rules_evaluate(now=at(15 * n))
    assert not Alert.objects.filter(rule=r).exists()  # normal noise: no alarm
    for n in range(60, 63):
        collector.load[("tenant-a", "web", "0")] = 95
        services.rules_evaluate(now=at(15 * n))
    alert = Alert.objects.get(rule=r)
    assert (alert.state, alert.value) == ("firing", 95)
    explained = alert.annotations["anomaly"]
    assert explained.startswith("observed 95 is above the band"), explained
    assert explained.endswith(f"since {at(15 * 60).isoformat(timespec='seconds')}"), explained
    with pytest.raises(ValidationError) as refused:
        rule(world, name="short", kind="anomaly", window_seconds=60)
    assert "window" in refused.value.message_dict


def test_a_disabled_rule_resolves_its_alerts_and_is_not_evaluated(world, collector):
    collector.load[("tenant-a", "web", "0")] = 0.9
    r = rule(world)
    services.rules_evaluate(now=at(0))
    services.rule_update(rule=r, actor=world.users["staff"], enabled=False)
    assert Alert.objects.get(rule=r).state == "resolved"
    assert services.rules_evaluate(now=at(15))["rules"] == 0
