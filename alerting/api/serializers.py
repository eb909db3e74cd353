from __future__ import annotations

import math

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerting.models import Alert, AlertEvent, AlertRule, Silence
from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer
from hivemind.core.units import QuantityError, parse_duration

MAX_THRESHOLD = 1e15


@extend_schema_field(OpenApiTypes.STR)
class DurationField(serializers.Field):
    """A duration as text ("90s", "5m", "2h", "1d") or seconds; answered in whole seconds."""

    def __init__(self, *, low: float, high: float, **kwargs):
        self.low, self.high = low, high
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            raise serializers.ValidationError("expected a duration such as 30s, 5m, 2h or 1d")
        try:
            return round(parse_duration(data, low=self.low, high=self.high))
        except QuantityError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value):
        return value


class ThresholdField(serializers.FloatField):
    """A finite number (JSON number or its text); not a boolean, NaN or infinity."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            raise serializers.ValidationError("expected a number")
        value = super().to_internal_value(data)
        if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
            raise serializers.ValidationError(
                f"expected a finite number between -{MAX_THRESHOLD:g} and {MAX_THRESHOLD:g}"
            )
        return value


class NotifierNamesField(serializers.ListField):
    """Notifiers of the rule's tenant, by name."""

    child = serializers.CharField(max_length=63)

    def to_representation(self, data):
        return [notifier.name for notifier in data.all()]


class AlertRuleSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    kind = serializers.ChoiceField(
        choices=AlertRule.Kind.choices,
        required=False,
        help_text="metric (an expression), event, or anomaly (a metric's series against their own baseline).",
    )
    matchers = serializers.JSONField(
        required=False, help_text='Label matchers: [{"label": "app", "op": "=|!=|=~|!~", "value": "web"}].'
    )
    window = DurationField(
        source="window_seconds", low=1, high=7 * 86400, required=False,
        help_text='The window aggregations and events look over, e.g. "5m" (answered in seconds).',
    )  # fmt: skip
    by = serializers.JSONField(required=False, help_text="Labels the series are combined by (like PromQL's `by`).")
    threshold = ThresholdField(required=False)
    group_by = serializers.JSONField(required=False, help_text="Labels that split notification groups.")
    labels = serializers.JSONField(required=False, help_text="Labels added to every alert.")
    annotations = serializers.JSONField(
        required=False,
        help_text="Texts with placeholders {{ value }}, {{ threshold }}, {{ labels.NAME }}, {{ rule.name }}.",
    )
    repeat_interval = DurationField(
        source="repeat_interval_seconds", low=60, high=30 * 86400, required=False,
        help_text="How often a group still firing is announced again (answered in seconds).",
    )  # fmt: skip
    notifiers = NotifierNamesField(required=False, help_text="Names of notifiers of the rule's tenant.")

    class Meta:
        model = AlertRule
        fields = ["id", "tenant", "name", "kind", "platform", "metric", "matchers", "aggregation", "window", "by",
                  "comparison", "threshold", "event", "for", "severity", "labels", "annotations", "group_by",
                  "notifiers", "repeat_interval", "enabled", "status", "status_message", "last_evaluated_at",
                  "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["status", "status_message", "last_evaluated_at", "created_at", "updated_at"]
        extra_kwargs = {
            "metric": {"help_text": "A metric /metrics serves, e.g. hivemind_container_cpu_millicores."},
            "event": {
                "help_text": "workflow_failed, node_lost (platform), replica_crash_looping, volume_almost_full, "
                "backup_failed, backup_unverified."
            },
            "platform": {"help_text": "Evaluated over every tenant's series (platform staff only)."},
        }
        validators = []  # a taken name is refused by the service, naming `name`


# `for` is a Python keyword: declared here rather than as a class attribute.
AlertRuleSerializer._declared_fields["for"] = DurationField(
    source="for_seconds", low=0, high=7 * 86400, required=False,
    help_text='How long the condition holds before the alert fires, e.g. "2m" (answered in seconds).',
)  # fmt: skip


class AlertRulePreviewSerializer(AlertRuleSerializer):
    name = serializers.CharField(
        max_length=63, required=False, help_text="A saved rule of this name lends its samples (windows)."
    )


class SilenceSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    matchers = serializers.JSONField(
        help_text='Label matchers: [{"label": "alertname", "op": "=", "value": "high-cpu"}].'
    )
    starts_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    ends_at = serializers.DateTimeField(required=False, help_text="When it ends (or give duration).")
    duration = DurationField(low=60, high=366 * 86400, required=False, write_only=True, help_text='e.g. "2h".')
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    state = serializers.SerializerMethodField(help_text="pending, active or expired.")

    class Meta:
        model = Silence
        fields = ["id", "tenant", "matchers", "starts_at", "ends_at", "duration", "comment", "state", "created_by",
                  "created_at"]  # fmt: skip
        read_only_fields = ["created_at"]

    def get_state(self, silence) -> str:
        from django.utils import timezone

        now = timezone.now()
        if silence.ends_at <= now:
            return "expired"
        return "active" if silence.starts_at <= now else "pending"

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if ("ends_at" in attrs) == ("duration" in attrs):
            raise serializers.ValidationError({"ends_at": "give either ends_at or duration (not both)"})
        return attrs


class AlertSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    rule = serializers.CharField(source="rule.name", read_only=True)
    severity = serializers.CharField(source="rule.severity", read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "tenant", "rule", "severity", "state", "silenced", "value", "labels", "annotations",
                  "active_at", "fired_at", "resolved_at", "evaluated_at"]  # fmt: skip
        read_only_fields = fields


class AlertEventSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.name", read_only=True)
    labels = serializers.JSONField(source="alert.labels", read_only=True)

    class Meta:
        model = AlertEvent
        fields = ["id", "alert", "rule", "kind", "at", "value", "message", "labels"]
        read_only_fields = fields


class PreviewSeriesSerializer(serializers.Serializer):
    labels = serializers.DictField(child=serializers.CharField())
    value = serializers.FloatField()
    matches = serializers.BooleanField(help_text="Whether it meets the rule's condition now.")


class PreviewSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="ok, error (message says why) or inactive.")
    message = serializers.CharField()
    series = PreviewSeriesSerializer(many=True)


class StrictEmpty(StrictFieldsMixin, serializers.Serializer):
    """An action that takes no body."""
