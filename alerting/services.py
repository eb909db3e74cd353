"""Alerting services: rules and silences written, every rule evaluated from beat.

`rules_evaluate(now=...)` is one pass over every enabled rule (the `alerting.rules_evaluate`
task runs it every HIVEMIND_ALERT_INTERVAL seconds on the control queue). It reads each source
once per pass (sources.PassData: the metric families once, failed workflows, nodes and
containers once), keeps the values windowed rules need once per series (history.py: pruned
to the widest window), moves alerts pending -> firing -> resolved with a history row per change, applies
silences, and hands a notification per changed group to notifiers.services.notify (which
queues it and returns at once: a delivery never holds up evaluation).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from alerting import expressions as ex
from alerting import history as series_history
from alerting.models import Alert, AlertEvent, AlertGroup, AlertRule, Silence
from alerting.sources import PassData, Series, served_now
from hivemind.core import limits
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.core.scoping import is_platform_staff
from tenants.services import audit_record

log = logging.getLogger(__name__)

MAX_SERIES_PER_RULE = 5000
MAX_WINDOW = 7 * 86400
MAX_LABELS = 20
EVENT_DEFAULTS = {  # threshold an event rule fires at, and what its value is
    AlertRule.Event.WORKFLOW_FAILED: 1,  # failed workflows of a kind in the window
    AlertRule.Event.NODE_LOST: 1,  # 1 while a node is not ready
    AlertRule.Event.REPLICA_CRASH_LOOPING: 3,  # restarts of a replica in the window
    AlertRule.Event.VOLUME_ALMOST_FULL: 0.9,  # used / size
    AlertRule.Event.BACKUP_FAILED: 1,  # failed backup runs of a location (and policy) in the window
    AlertRule.Event.BACKUP_UNVERIFIED: 1,  # 1 per backup its last verification found damaged
}
PLATFORM_EVENTS = {AlertRule.Event.NODE_LOST}
ANOMALY_WINDOW = 3600  # seconds of history an anomaly rule learns its baseline from, by default
KEPT_FOR = timedelta(days=30)  # alert history, resolved alerts and ended silences are pruned after this
MIN_ANOMALY_WINDOW = 600


# --- rules ------------------------------------------------------------------------------------------


def _bad(field_name: str, message: str) -> ValidationError:
    return ValidationError({field_name: [message]})


def rule_check(*, values: dict, user, served: dict[str, set[str] | None] | None = None) -> dict:
    """Validate a rule's fields together (the serializer checked each one's type): the kind's
    fields, the metric served by a collector and its labels, the matchers' regular expressions,
    the templates, staff for platform rules. Returns the values to store."""
    kind = values.get("kind", AlertRule.Kind.METRIC)
    if values.get("platform") and not is_platform_staff(user):
        raise PermissionDenied("only platform staff may make platform rules (they see every tenant's series)")
    name = values.get("name")
    if name is not None and not is_dns_label(name):
        raise _bad("name", f"expected {DNS_LABEL_RULE}")
    try:
        matchers = ex.parse_matchers(values.get("matchers"), "matchers")
        values["matchers"] = [m.as_dict() for m in matchers]
        values["by"] = ex.parse_label_names(values.get("by"), "by")
        values["group_by"] = ex.parse_label_names(values.get("group_by"), "group_by")
        for key in ("labels", "annotations"):
            raw = values.get(key, {})
            if not isinstance(raw, dict) or len(raw) > MAX_LABELS:
                raise ex.ExpressionError(key, f"expected an object of at most {MAX_LABELS} names and texts")
            for item, text in raw.items():
                if not ex.LABEL_NAME.match(str(item)):
                    raise ex.ExpressionError(f"{key}.{item}", "expected a name of letters, digits and _")
                limit = ex.MAX_ANNOTATION if key == "annotations" else 200
                if not isinstance(text, str) or len(text) > limit:
                    raise ex.ExpressionError(f"{key}.{item}", f"expected text of at most {limit} characters")
                bad = limits.control_character(text, multiline=key == "annotations")
                if bad:
                    raise ex.ExpressionError(f"{key}.{item}", f"has a control character ({bad})")
                if key == "annotations":
                    ex.check_template(text, f"{key}.{item}")
                elif "{{" in text:
                    raise ex.ExpressionError(f"{key}.{item}", "labels are not templates; annotations are")
            values[key] = raw
    except ex.ExpressionError as exc:
        raise _bad(exc.field, exc.message) from None
    if kind == AlertRule.Kind.ANOMALY:
        if values.get("by"):
            raise _bad("by", "an anomaly rule judges each series by itself: no `by`")
        values.setdefault("window_seconds", ANOMALY_WINDOW)
        if values["window_seconds"] < MIN_ANOMALY_WINDOW:
            raise _bad("window", f"an anomaly rule learns from at least {MIN_ANOMALY_WINDOW // 60} minutes of history")
    if kind in (AlertRule.Kind.METRIC, AlertRule.Kind.ANOMALY):
        metric = values.get("metric") or ""
        if not metric:
            raise _bad("metric", "a metric rule needs a metric name (as /metrics serves it)")
        if values.get("event"):
            raise _bad("event", "a metric rule has no event; set kind to event")
        if served is None:
            served = served_now()
        if metric not in served:
            raise _bad("metric", f"no collector serves a metric named {metric!r}")
        known = served[metric]
        if known is not None:
            for index, matcher in enumerate(matchers):
                if matcher.label not in known:
                    listed = ", ".join(sorted(known)) or "none"
                    raise _bad(f"matchers[{index}].label", f"{metric} has no label {matcher.label!r} (it has {listed})")
            for index, label in enumerate(values["by"]):
                if label not in known:
                    raise _bad(f"by[{index}]", f"{metric} has no label {label!r}")
    else:
        event = values.get("event") or ""
        if not event:
            raise _bad("event", f"an event rule needs an event: one of {', '.join(AlertRule.Event.values)}")
        if values.get("metric"):
            raise _bad("metric", "an event rule has no metric; set kind to metric")
        if event in PLATFORM_EVENTS and not values.get("platform"):
            raise _bad("event", f"{event} is about the platform's nodes: a platform rule (staff) watches it")
        values.setdefault("comparison", AlertRule.Comparison.GE)
        if "threshold" not in values and event in EVENT_DEFAULTS:
            values["threshold"] = EVENT_DEFAULTS[event]
    return values


def rule_create(*, tenant, actor, notifiers=(), **values) -> AlertRule:
    values = rule_check(values=values, user=actor)
    if AlertRule.objects.filter(tenant=tenant, name=values["name"]).exists():
        raise _bad("name", f"tenant {tenant.slug} has a rule named {values['name']} already")
    _check_notifiers(tenant, notifiers)
    try:
        with transaction.atomic():
            rule = AlertRule.objects.create(tenant=tenant, created_by=actor if actor and actor.pk else None, **values)
            rule.notifiers.set(notifiers)
            audit_record(actor=actor, tenant=tenant, action="alert_rule.create", obj=rule,
                         changes={"name": rule.name, "kind": rule.kind})  # fmt: skip
    except IntegrityError:
        raise _bad("name", f"tenant {tenant.slug} has a rule named {values['name']} already") from None
    return rule


def rule_update(*, rule: AlertRule, actor, notifiers=None, **changes) -> AlertRule:
    if rule.platform and not is_platform_staff(actor):
        raise PermissionDenied("only platform staff may change a platform rule")
    current = {f: getattr(rule, f) for f in RULE_FIELDS}
    merged = rule_check(values={**current, **changes}, user=actor)
    renamed = "name" in changes and changes["name"] != rule.name
    if renamed and AlertRule.objects.filter(tenant=rule.tenant, name=changes["name"]).exclude(pk=rule.pk).exists():
        raise _bad("name", f"tenant {rule.tenant.slug} has a rule named {changes['name']} already")
    expression = ("kind", "metric", "matchers", "aggregation", "window_seconds", "by", "event")
    changed_expression = any(merged[f] != current[f] for f in expression)
    with transaction.atomic():
        for name, value in merged.items():
            setattr(rule, name, value)
        if changed_expression:
            rule.status, rule.status_message = AlertRule.Status.NEW, ""
        rule.save()
        if notifiers is not None:
            _check_notifiers(rule.tenant, notifiers)
            rule.notifiers.set(notifiers)
        if not rule.enabled:
            _resolve_all(rule, timezone.now(), "the rule was disabled")
        changed = sorted(f for f in RULE_FIELDS if merged[f] != current[f])
        audit_record(actor=actor, tenant=rule.tenant, action="alert_rule.update", obj=rule,
                     changes={"fields": changed, "notifiers_set": notifiers is not None})  # fmt: skip
    return rule


def rule_delete(*, rule: AlertRule, actor) -> None:
    if rule.platform and not is_platform_staff(actor):
        raise PermissionDenied("only platform staff may delete a platform rule")
    with transaction.atomic():
        audit_record(actor=actor, tenant=rule.tenant, action="alert_rule.delete", obj=rule)
        rule.delete()


RULE_FIELDS = (
    "name", "kind", "platform", "metric", "matchers", "aggregation", "window_seconds", "by", "comparison",
    "threshold", "event", "for_seconds", "severity", "labels", "annotations", "group_by",
    "repeat_interval_seconds", "enabled",
)  # fmt: skip


def _check_notifiers(tenant, notifiers) -> None:
    for notifier in notifiers:
        if notifier.tenant_id != tenant.pk:
            raise _bad("notifiers", f"notifier {notifier.name} belongs to another tenant")


def _resolve_all(rule: AlertRule, now: datetime, message: str) -> None:
    active = list(rule.alerts.exclude(state=Alert.State.RESOLVED))
    for alert in active:
        alert.state, alert.resolved_at = Alert.State.RESOLVED, now
    Alert.objects.bulk_update(active, ["state", "resolved_at"])
    AlertEvent.objects.bulk_create(
        AlertEvent(tenant_id=a.tenant_id, alert=a, rule=rule, kind=AlertEvent.Kind.RESOLVED, at=now, message=message)
        for a in active
    )


# --- silences -----------------------------------------------------------------------------------------


def silence_create(*, tenant, matchers: list, ends_at: datetime, actor, starts_at: datetime | None = None,
                   comment: str = "") -> Silence:  # fmt: skip
    now = timezone.now()
    starts_at = starts_at or now
    try:
        parsed = ex.parse_matchers(matchers, "matchers")
    except ex.ExpressionError as exc:
        raise _bad(exc.field, exc.message) from None
    if not parsed:
        raise _bad("matchers", "a silence needs at least one matcher (it would silence every alert)")
    if ends_at <= starts_at or ends_at <= now:
        raise _bad("ends_at", "a silence ends after it starts, and in the future")
    with transaction.atomic():
        silence = Silence.objects.create(
            tenant=tenant, matchers=[m.as_dict() for m in parsed], starts_at=starts_at, ends_at=ends_at,
            comment=comment, created_by=actor if actor and actor.pk else None,
        )  # fmt: skip
        audit_record(actor=actor, tenant=tenant, action="silence.create", obj=silence,
                     changes={"ends_at": ends_at.isoformat()})  # fmt: skip
    return silence


def silence_expire(*, silence: Silence, actor) -> Silence:
    """End the silence now (its alerts notify again from the next pass)."""
    now = timezone.now()
    if silence.ends_at > now:
        with transaction.atomic():
            silence.ends_at = max(now, silence.starts_at)
            silence.save(update_fields=["ends_at"])
            audit_record(actor=actor, tenant=silence.tenant, action="silence.expire", obj=silence)
    return silence


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One rule's evaluation: every series' value, those meeting the condition, or why none."""

    values: list[tuple[dict, float]] = field(default_factory=list)
    firing: dict[str, tuple[dict, float]] = field(default_factory=dict)  # fingerprint -> (labels, value)
    status: str = AlertRule.Status.OK
    message: str = ""
    samples: dict[str, float] = field(default_factory=dict)  # series key (history.py) -> value to keep
    notes: dict[str, str] = field(default_factory=dict)  # alert fingerprint -> why (anomaly rules)


def _raw_series(rule: AlertRule, data: PassData, tenant: str | None) -> tuple[list[Series], str]:
    """The series a rule reads before aggregation, and an error when it cannot be evaluated."""
    matchers = [ex.Matcher(m["label"], m["op"], m["value"]) for m in rule.matchers]
    if rule.kind in (AlertRule.Kind.METRIC, AlertRule.Kind.ANOMALY):
        if rule.metric not in data.served():
            return [], f"cannot be evaluated: metric {rule.metric} is not served by any collector"
        equal = next((m for m in matchers if m.op == "=" and m.value), None)
        found = (
            data.series_where(rule.metric, tenant, equal.label, equal.value)
            if equal
            else data.series(rule.metric, tenant)
        )
    else:
        found = _event_series(rule, data, tenant)
    return [s for s in found if ex.matches_all(matchers, s[0])], ""


def _event_series(rule: AlertRule, data: PassData, tenant: str | None) -> list[Series]:
    event = rule.event
    if event == AlertRule.Event.WORKFLOW_FAILED:
        since = data.now - timedelta(seconds=rule.window_seconds)
        counts: dict[tuple, int] = defaultdict(int)
        for slug, kind, finished in data.failed_workflows(rule.window_seconds):
            if finished >= since and (tenant is None or slug == tenant):
                counts[(slug or "", kind)] += 1
        return [
            ({"tenant": slug, "kind": kind} if slug else {"kind": kind}, float(n)) for (slug, kind), n in counts.items()
        ]
    if event == AlertRule.Event.NODE_LOST:
        return [({"node": name}, 0.0 if status == "ready" else 1.0) for name, status in data.nodes()]
    if event == AlertRule.Event.REPLICA_CRASH_LOOPING:
        return [
            ({"tenant": slug, "app": app, "replica": str(replica), "node": node or ""}, float(restarts))
            for slug, app, replica, node, restarts in data.containers()
            if tenant is None or slug == tenant
        ]
    if event == AlertRule.Event.VOLUME_ALMOST_FULL:
        sizes = {ex.fingerprint(labels): value for labels, value in data.series("hivemind_volume_size_bytes", tenant)}
        found = []
        for labels, used in data.series("hivemind_volume_used_bytes", tenant):
            size = sizes.get(ex.fingerprint(labels))
            if size:
                found.append((labels, used / size))
        return found
    if event == AlertRule.Event.BACKUP_FAILED:
        since = data.now - timedelta(seconds=rule.window_seconds)
        failed: dict[tuple, int] = defaultdict(int)
        for slug, location, policy, finished in data.failed_backups(rule.window_seconds):
            if finished >= since and (tenant is None or slug == tenant):
                failed[(slug, location, policy)] += 1
        return [
            ({"tenant": slug, "location": location, "policy": policy}, float(n))
            for (slug, location, policy), n in failed.items()
        ]
    if event == AlertRule.Event.BACKUP_UNVERIFIED:
        return [
            ({"tenant": slug, "location": location, "backup": str(pk)}, 1.0)
            for slug, location, pk in data.damaged_backups()
            if tenant is None or slug == tenant
        ]
    return []


def _aggregation(rule: AlertRule) -> str:
    if rule.kind == AlertRule.Kind.ANOMALY:
        return "anomaly"  # judged over the window's history: windowed
    if rule.kind == AlertRule.Kind.EVENT:
        return "increase" if rule.event == AlertRule.Event.REPLICA_CRASH_LOOPING else "last"
    return rule.aggregation


def _source(rule: AlertRule) -> str:
    return f"event:{rule.event}" if rule.kind == AlertRule.Kind.EVENT else rule.metric


def evaluate_rule(rule: AlertRule, data: PassData, history) -> Outcome:
    """The rule's expression over the pass's data and the series store's samples (key -> [(t, v)],
    oldest first; history.py)."""
    outcome = Outcome()
    tenant = None if rule.platform else rule.tenant.slug
    raw, error = _raw_series(rule, data, tenant)
    if error:
        outcome.status, outcome.message = AlertRule.Status.ERROR, error
        return outcome
    if len(raw) > MAX_SERIES_PER_RULE:
        outcome.status = AlertRule.Status.ERROR
        outcome.message = (
            f"cannot be evaluated: it matches {len(raw)} series (at most {MAX_SERIES_PER_RULE}); add matchers"
        )
        return outcome
    aggregation = _aggregation(rule)
    now_ts = data.now.timestamp()
    oldest = now_ts - rule.window_seconds
    source = _source(rule)
    values: list[tuple[dict, float]] = []
    if rule.kind == AlertRule.Kind.ANOMALY:
        _judge(rule, raw, history, outcome, now_ts, oldest, source)
        return outcome
    for labels, value in raw:
        if aggregation == "last":
            values.append((labels, value))
            continue
        key = ex.fingerprint({**labels, "__source__": source})
        outcome.samples[key] = value
        kept = [sample for sample in history.get(key, ()) if sample[0] >= oldest]
        result = ex.aggregate(aggregation, [*kept, (now_ts, value)])
        if result is not None:
            values.append((labels, result))
    if rule.kind == AlertRule.Kind.METRIC and rule.by:
        values = ex.combine_by(aggregation, rule.by, values)
    outcome.values = values
    for labels, value in values:
        if ex.compare(rule.comparison, value, rule.threshold):
            full = {**labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}
            outcome.firing[ex.fingerprint(full)] = (full, value)
    return outcome


def _judge(rule: AlertRule, raw: list[Series], history, outcome: Outcome, now_ts, oldest, source) -> None:
    """An anomaly rule: each series' value against the baseline observability/anomaly.py learns
    from the series' own history in the window; the alert explains itself (band, observed, since)."""
    from datetime import UTC
    from datetime import datetime as moment

    from observability import anomaly

    for labels, value in raw:
        key = ex.fingerprint({**labels, "__source__": source})
        outcome.samples[key] = value
        kept = [sample for sample in history.get(key, ()) if sample[0] >= oldest]
        points = [*kept, (now_ts, value)]
        verdict = anomaly.judge([v for _, v in points])
        outcome.values.append((labels, value))
        if verdict.anomalous:
            full = {**labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}
            fingerprint = ex.fingerprint(full)
            outcome.firing[fingerprint] = (full, value)
            since = moment.fromtimestamp(points[verdict.since][0], UTC).isoformat(timespec="seconds")
            outcome.notes[fingerprint] = f"{verdict.explain()}, since {since}"


def _silenced(alert: Alert, silences: list[tuple[Silence, list[ex.Matcher]]]) -> bool:
    return any(s.tenant_id == alert.tenant_id and ex.matches_all(m, alert.labels) for s, m in silences)


@dataclass
class Pass:
    """What a pass changed, written in bulk at its end."""

    now: datetime
    new_alerts: list[Alert] = field(default_factory=list)
    changed_alerts: dict[int, Alert] = field(default_factory=dict)
    events: list[AlertEvent] = field(default_factory=list)
    notifications: list[tuple[AlertRule, dict]] = field(default_factory=list)

    def event(self, alert: Alert, kind: str, message: str = "") -> None:
        self.events.append(
            AlertEvent(tenant_id=alert.tenant_id, alert=alert, rule_id=alert.rule_id, kind=kind, at=self.now,
                       value=alert.value, message=message[:500])
        )  # fmt: skip

    def changed(self, alert: Alert) -> None:
        if alert.pk is not None:
            self.changed_alerts[alert.pk] = alert


def _advance(rule: AlertRule, outcome: Outcome, alerts: dict[str, Alert], silences, work: Pass) -> None:
    """The state machine of one rule's alerts."""
    now = work.now
    context = {"name": rule.name, "severity": rule.severity}
    for key, (labels, value) in outcome.firing.items():
        alert = alerts.get(key)
        annotations = {
            name: ex.render(text, labels=labels, value=value, threshold=rule.threshold, rule=context)
            for name, text in rule.annotations.items()
        }
        if key in outcome.notes:
            annotations["anomaly"] = outcome.notes[key]
        group = ex.fingerprint({name: labels.get(name, "") for name in rule.group_by})
        if alert is None:
            alert = Alert(
                tenant_id=rule.tenant_id, rule=rule, fingerprint=key, group_key=group, labels=labels,
                annotations=annotations, state=Alert.State.PENDING, value=value, active_at=now, evaluated_at=now,
            )  # fmt: skip
            alerts[key] = alert
            work.new_alerts.append(alert)
            work.event(alert, AlertEvent.Kind.PENDING)
        elif alert.state == Alert.State.RESOLVED:
            alert.state, alert.active_at, alert.fired_at, alert.resolved_at = Alert.State.PENDING, now, None, None
            alert.value = value
            work.event(alert, AlertEvent.Kind.PENDING)
        alert.value, alert.annotations, alert.evaluated_at, alert.group_key = value, annotations, now, group
        if alert.state == Alert.State.PENDING and (now - alert.active_at).total_seconds() >= rule.for_seconds:
            alert.state, alert.fired_at = Alert.State.FIRING, now
            work.event(alert, AlertEvent.Kind.FIRING)
        work.changed(alert)
    for key, alert in alerts.items():
        if key not in outcome.firing and alert.state != Alert.State.RESOLVED:
            alert.state, alert.resolved_at, alert.evaluated_at = Alert.State.RESOLVED, now, now
            work.event(alert, AlertEvent.Kind.RESOLVED)
            work.changed(alert)
    for alert in alerts.values():
        silenced = alert.state != Alert.State.RESOLVED and _silenced(alert, silences)
        if silenced != alert.silenced:
            alert.silenced = silenced
            work.event(alert, AlertEvent.Kind.SILENCED if silenced else AlertEvent.Kind.UNSILENCED)
            work.changed(alert)


def _alert_body(alert: Alert) -> dict:
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": (alert.fired_at or alert.active_at).isoformat(),
        "ends_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "value": alert.value,
        "fingerprint": alert.fingerprint,
    }


def _notify_groups(rule: AlertRule, alerts: dict[str, Alert], groups: dict[str, AlertGroup], work: Pass) -> list:
    """Decide, per group of the rule's alerts, whether a notification goes: firing when the group
    starts firing or its repeat interval has passed, resolved once when every alert it announced
    has resolved. Silenced alerts count as not firing, but a silence does not announce a resolve."""
    by_group: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts.values():
        by_group[alert.group_key].append(alert)
    touched = []
    for key, members in by_group.items():
        group = groups.get(key)
        firing = [a for a in members if a.state == Alert.State.FIRING and not a.silenced]
        status = None
        if firing:
            due = group is None or group.notified_status != "firing" or group.notified_at is None
            if not due and (work.now - group.notified_at).total_seconds() >= rule.repeat_interval_seconds:
                due = True
            if due:
                status, sent = "firing", firing
        elif group is not None and group.notified_status == "firing":
            announced = [a for a in members if a.fingerprint in set(group.notified_alerts)]
            if all(a.state == Alert.State.RESOLVED for a in announced):
                status, sent = "resolved", announced
        if status is None:
            continue
        if group is None:
            labels = {name: members[0].labels.get(name, "") for name in rule.group_by}
            group = AlertGroup(rule=rule, key=key, labels=labels)
            groups[key] = group
        group.notified_status, group.notified_at = status, work.now
        group.notified_alerts = [a.fingerprint for a in sent] if status == "firing" else []
        group.notifications += 1
        touched.append(group)
        notification = {
            "group_key": f"{rule.tenant.slug}/{rule.name}/{key}",
            "status": status,
            "rule": {"name": rule.name, "severity": rule.severity, "tenant": rule.tenant.slug},
            "alerts": [_alert_body(a) for a in sent],
            "url": f"/api/v1/alerts/?rule={rule.pk}",
        }
        work.notifications.append((rule, notification))
        for alert in sent:
            work.event(alert, AlertEvent.Kind.NOTIFIED, f"{status} notification")
    return touched


PASS_LOCK = 0x616C657274  # "alert": the PostgreSQL advisory lock one pass holds


@contextmanager
def _one_pass_at_a_time():
    """True when this pass may run: no other pass (a slow one overlapping beat's next) runs now.
    Two at once would raise the same alerts twice and announce them twice."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PASS_LOCK])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PASS_LOCK])


def rules_evaluate(*, now: datetime | None = None, families=None) -> dict:
    """One evaluation pass of every enabled rule. Returns counts (rules, errors, alerts changed,
    notifications, seconds) for the task's log and the benchmark; `skipped` when another pass
    was still running (the next one does the same work)."""
    with _one_pass_at_a_time() as mine:
        if not mine:
            log.warning("alert evaluation skipped: the previous pass is still running")
            return {"skipped": True, "rules": 0, "errors": 0, "alerts_changed": 0, "events": 0, "notifications": 0,
                    "seconds": 0.0}  # fmt: skip
        return _rules_evaluate(now=now, families=families)


def _rules_evaluate(*, now: datetime | None, families) -> dict:
    started = time.perf_counter()
    now = now or timezone.now()
    data = PassData(now=now, families=families)
    rules = list(AlertRule.objects.filter(enabled=True).select_related("tenant"))
    ids = [r.pk for r in rules]
    windows = [r.window_seconds for r in rules if _aggregation(r) in ex.WINDOWED]
    widest = min(max(windows, default=0), MAX_WINDOW)
    history = series_history.store.load(now=now, window=widest) if widest else {}
    alerts: dict[int, dict[str, Alert]] = defaultdict(dict)
    for alert in Alert.objects.filter(rule_id__in=ids):
        alerts[alert.rule_id][alert.fingerprint] = alert
    groups: dict[int, dict[str, AlertGroup]] = defaultdict(dict)
    for group in AlertGroup.objects.filter(rule_id__in=ids):
        groups[group.rule_id][group.key] = group
    silences = [
        (s, [ex.Matcher(m["label"], m["op"], m["value"]) for m in s.matchers])
        for s in Silence.objects.filter(starts_at__lte=now, ends_at__gt=now)
    ]
    work = Pass(now=now)
    samples: dict[str, float] = {}
    status_changed: list[AlertRule] = []
    touched_groups: list[AlertGroup] = []
    errors = 0
    for rule in rules:
        try:
            outcome = evaluate_rule(rule, data, history)
        except Exception as exc:  # one broken rule must not stop the others; it says why on itself
            log.exception("alert rule %s could not be evaluated", rule)
            outcome = Outcome(status=AlertRule.Status.ERROR, message=f"cannot be evaluated: {exc}"[:500])
        if outcome.status == AlertRule.Status.ERROR:
            errors += 1
        if (rule.status, rule.status_message) != (outcome.status, outcome.message):
            rule.status, rule.status_message = outcome.status, outcome.message
            status_changed.append(rule)
        samples.update(outcome.samples)
        if outcome.status != AlertRule.Status.OK:
            continue  # its alerts stay as they were: nothing was learnt about them
        _advance(rule, outcome, alerts[rule.pk], silences, work)
        touched_groups += _notify_groups(rule, alerts[rule.pk], groups[rule.pk], work)
    with transaction.atomic():
        Alert.objects.bulk_create(work.new_alerts, batch_size=1000)
        Alert.objects.bulk_update(
            list(work.changed_alerts.values()),
            ["state", "silenced", "value", "labels", "annotations", "group_key", "active_at", "fired_at",
             "resolved_at", "evaluated_at"],
            batch_size=500,
        )  # fmt: skip
        AlertEvent.objects.bulk_create(work.events, batch_size=1000)
        new_groups = [g for g in touched_groups if g.pk is None]
        AlertGroup.objects.bulk_create(new_groups)
        AlertGroup.objects.bulk_update(
            [g for g in touched_groups if g not in new_groups],
            ["notified_status", "notified_at", "notified_alerts", "notifications"],
        )
        series_history.store.save(now=now, values=samples, window=widest)
        AlertRule.objects.bulk_update(status_changed, ["status", "status_message"], batch_size=500)
        AlertRule.objects.filter(pk__in=ids).update(last_evaluated_at=now)
    sent = _deliver(work.notifications)
    return {
        "rules": len(rules),
        "errors": errors,
        "alerts_changed": len(work.new_alerts) + len(work.changed_alerts),
        "events": len(work.events),
        "notifications": sent,
        "seconds": time.perf_counter() - started,
    }


def _deliver(notifications: list[tuple[AlertRule, dict]]) -> int:
    """Hand each notification to every notifier of its rule (notifiers.services.notify queues it
    and returns at once). A notifier that cannot take it is logged; evaluation goes on."""
    if not notifications:
        return 0
    rule_ids = {rule.pk for rule, _ in notifications}
    through = AlertRule.notifiers.through
    by_rule = defaultdict(list)
    for link in through.objects.filter(alertrule_id__in=rule_ids).select_related("notifier__tenant"):
        by_rule[link.alertrule_id].append(link.notifier)
    if not by_rule:
        return 0
    from notifiers.services import notify

    sent = 0
    for rule, notification in notifications:
        for notifier in by_rule.get(rule.pk, []):
            try:
                notify(notifier=notifier, notification=notification)
                sent += 1
            except Exception:
                log.exception("notifier %s did not take the notification of %s", notifier, rule)
    return sent


# --- preview ------------------------------------------------------------------------------------------


def rule_preview(*, tenant, values: dict, user) -> dict:
    """The expression's current value per series, and whether each meets the condition, without
    saving anything (the dashboard's live preview). Windowed aggregations read the series store
    (history.py): what other rules over the same series kept, else only the current value."""
    now = timezone.now()
    data = PassData(now=now)
    values = rule_check(values=dict(values), user=user, served=data.served())
    rule = AlertRule(tenant=tenant, **{k: v for k, v in values.items() if k in RULE_FIELDS})
    rule.name = rule.name or "preview"
    outcome = evaluate_rule(rule, data, {})
    if outcome.samples:  # a windowed rule: what the store kept of its series
        history = series_history.load_keys(list(outcome.samples), now=now, window=rule.window_seconds)
        outcome = evaluate_rule(rule, data, history)

    def matches(labels: dict, value: float) -> bool:
        if rule.kind == AlertRule.Kind.ANOMALY:  # outside the band long enough
            full = {**labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}
            return ex.fingerprint(full) in outcome.firing
        return ex.compare(rule.comparison, value, rule.threshold)

    series = [
        {"labels": labels, "value": value, "matches": matches(labels, value)} for labels, value in outcome.values[:1000]
    ]
    return {"status": outcome.status, "message": outcome.message, "series": series}


def history_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what is older than KEPT_FOR: history rows, alerts resolved since, silences that
    ended since. Firing and pending alerts stay whatever their age (their oldest history goes)."""
    cutoff = (now or timezone.now()) - KEPT_FOR
    events, _ = AlertEvent.objects.filter(at__lt=cutoff).delete()
    _, alerts = Alert.objects.filter(state=Alert.State.RESOLVED, resolved_at__lt=cutoff).delete()
    silences, _ = Silence.objects.filter(ends_at__lt=cutoff).delete()
    return {"events": events, "alerts": alerts.get(Alert._meta.label, 0), "silences": silences}
