"""Alert rules, the alerts they raise, their history, notification groups and silences.

- `AlertRule`: what to watch (a metric expression or a platform event), for how long before it
  fires, how bad it is, who to tell (notifiers.Notifier). `platform` rules (staff only) see every
  tenant's series; a tenant's rules only its own. `status`/`status_message` say whether the last
  evaluation could run (an unknown metric shows here, not only in a log).
- `Alert`: one per rule and label set (its fingerprint), pending -> firing -> resolved, again
  pending when the condition comes back. `AlertEvent`: a row per state change (and notification).
- `AlertGroup`: the alerts of a rule that agree on its `group_by` labels; one notification per
  group per repeat interval, firing and resolved both.
- `Silence`: matchers and a time span; the matching alerts are `silenced` and notify no one.
- `SeriesSample`: the values of the series windowed rules read, once per series and pass however
  many rules read it, kept for the widest window: what window aggregations (avg, rate, increase...)
  read (alerting/history.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hivemind.core.models import TenantOwned


class AlertRule(TenantOwned):
    class Kind(models.TextChoices):
        METRIC = "metric"
        EVENT = "event"
        ANOMALY = "anomaly"  # a metric's series judged against their own baseline (observability/anomaly.py)

    class Event(models.TextChoices):
        WORKFLOW_FAILED = "workflow_failed"
        NODE_LOST = "node_lost"
        REPLICA_CRASH_LOOPING = "replica_crash_looping"
        VOLUME_ALMOST_FULL = "volume_almost_full"
        BACKUP_FAILED = "backup_failed"
        BACKUP_UNVERIFIED = "backup_unverified"

    class Aggregation(models.TextChoices):
        AVG = "avg"
        MIN = "min"
        MAX = "max"
        SUM = "sum"
        COUNT = "count"
        LAST = "last"
        RATE = "rate"
        INCREASE = "increase"

    class Comparison(models.TextChoices):
        GT = ">"
        GE = ">="
        LT = "<"
        LE = "<="
        EQ = "=="
        NE = "!="

    class Severity(models.TextChoices):
        CRITICAL = "critical"
        WARNING = "warning"
        INFO = "info"

    class Status(models.TextChoices):
        NEW = "new"  # not evaluated yet
        OK = "ok"
        ERROR = "error"  # cannot be evaluated: status_message says why
        INACTIVE = "inactive"  # evaluates to nothing yet (backups do not exist): status_message says why

    deleted_with_tenant = True

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.METRIC)
    platform = models.BooleanField(default=False, help_text="evaluated over every tenant's series (staff only)")
    # metric rules
    metric = models.CharField(max_length=200, blank=True)
    matchers = models.JSONField(default=list, blank=True)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices, default=Aggregation.LAST)
    window_seconds = models.PositiveIntegerField(default=300)
    by = models.JSONField(default=list, blank=True, help_text="labels series are combined by")
    comparison = models.CharField(max_length=2, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField(default=0)
    # event rules
    event = models.CharField(max_length=32, choices=Event.choices, blank=True)
    # both
    for_seconds = models.PositiveIntegerField(default=0, help_text="how long the condition holds before firing")
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    labels = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(default=dict, blank=True)
    group_by = models.JSONField(default=list, blank=True, help_text="labels that split notification groups")
    notifiers = models.ManyToManyField("notifiers.Notifier", blank=True, related_name="alert_rules")
    repeat_interval_seconds = models.PositiveIntegerField(default=4 * 3600)
    enabled = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    status_message = models.CharField(max_length=500, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="alert_rule_name_unique_in_tenant")]
        indexes = [models.Index(fields=["enabled"])]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}" if self.tenant_id else self.name


class Alert(TenantOwned):
    class State(models.TextChoices):
        PENDING = "pending"
        FIRING = "firing"
        RESOLVED = "resolved"

    deleted_with_tenant = True

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    fingerprint = models.CharField(max_length=32)
    group_key = models.CharField(max_length=32)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    silenced = models.BooleanField(default=False)
    value = models.FloatField(null=True, blank=True)
    active_at = models.DateTimeField(help_text="since when the condition holds")
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    evaluated_at = models.DateTimeField()

    class Meta:
        ordering = ["-active_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "fingerprint"], name="alert_one_per_rule_series")]
        indexes = [models.Index(fields=["tenant", "state"])]

    def __str__(self) -> str:
        return f"{self.rule.name} {self.labels}"


class AlertEvent(TenantOwned):
    """One line of an alert's history: a state change, a silence starting or ending, a notification."""

    class Kind(models.TextChoices):
        PENDING = "pending"
        FIRING = "firing"
        RESOLVED = "resolved"
        SILENCED = "silenced"
        UNSILENCED = "unsilenced"
        NOTIFIED = "notified"

    deleted_with_tenant = True

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="events")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["tenant", "-at"]), models.Index(fields=["alert", "-at"])]


class AlertGroup(models.Model):
    """The notification state of a rule's alerts that agree on its `group_by` labels."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="groups")
    key = models.CharField(max_length=32)
    labels = models.JSONField(default=dict)
    notified_status = models.CharField(max_length=16, blank=True, help_text="firing or resolved, as last sent")
    notified_at = models.DateTimeField(null=True, blank=True)
    notified_alerts = models.JSONField(default=list, blank=True, help_text="fingerprints in the last firing notice")
    notifications = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "key"], name="alert_group_one_per_key")]

    def __str__(self) -> str:
        return f"{self.rule.name} {self.labels}"


class Silence(TenantOwned):
    deleted_with_tenant = True

    matchers = models.JSONField(default=list, help_text="label matchers; an alert matching them all is silenced")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    comment = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-ends_at", "-id"]
        indexes = [models.Index(fields=["ends_at"])]

    def __str__(self) -> str:
        return f"silence {self.pk} until {self.ends_at:%Y-%m-%d %H:%M}"


class SeriesSample(models.Model):
    """A series' value at one evaluation pass, shared by every rule that reads the series over a
    window (its key: the fingerprint of the source, a metric or an event, and the labels). Kept
    for the widest window of the enabled rules (alerting/history.py)."""

    key = models.CharField(max_length=32)
    at = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["at"]), models.Index(fields=["key", "at"])]

    def __str__(self) -> str:
        return f"{self.key}@{self.at:%H:%M:%S}={self.value:g}"
