from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.response import Response

from alerting import services
from alerting.api import serializers as s
from alerting.filtersets import AlertEventFilterSet, AlertFilterSet, AlertRuleFilterSet, SilenceFilterSet
from alerting.models import Alert, AlertEvent, AlertRule, Silence
from hivemind.core.api import TenantScopedViewSet
from hivemind.core.scoping import is_platform_staff


def _notifiers(tenant, names: list[str] | None):
    """Notifier names -> the tenant's notifiers (400 naming `notifiers` for one it does not have)."""
    if names is None:
        return None
    from notifiers.models import Notifier

    found = {n.name: n for n in Notifier.objects.filter(tenant=tenant, name__in=names)}
    missing = [name for name in names if name not in found]
    if missing:
        raise exceptions.ValidationError({"notifiers": f"tenant {tenant.slug} has no notifier named {missing[0]!r}"})
    return [found[name] for name in dict.fromkeys(names)]


class PlatformRulesHiddenMixin:
    """Platform rules read every tenant's series: they, their alerts and history are staff's only."""

    platform_field = "platform"

    def get_queryset(self):
        queryset = super().get_queryset()
        if not is_platform_staff(self.request.user):
            queryset = queryset.exclude(**{self.platform_field: True})
        return queryset


class AlertRuleViewSet(PlatformRulesHiddenMixin, TenantScopedViewSet):
    """Alert rules: a metric expression or an event, `for` how long, how severe, whom to notify.
    Evaluated from beat every HIVEMIND_ALERT_INTERVAL seconds; `status`/`status_message` say
    whether the last evaluation could run."""

    queryset = AlertRule.objects.select_related("tenant").prefetch_related("notifiers")
    serializer_class = s.AlertRuleSerializer
    filterset_class = AlertRuleFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        data = dict(serializer.validated_data)
        tenant = data.pop("tenant")
        notifiers = _notifiers(tenant, data.pop("notifiers", None)) or []
        return services.rule_create(tenant=tenant, actor=self.request.user, notifiers=notifiers, **data)

    def update_object(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("tenant", None)
        rule = serializer.instance
        notifiers = _notifiers(rule.tenant, data.pop("notifiers", None))
        return services.rule_update(rule=rule, actor=self.request.user, notifiers=notifiers, **data)

    def delete_object(self, instance) -> None:
        services.rule_delete(rule=instance, actor=self.request.user)

    @extend_schema(request=s.AlertRulePreviewSerializer, responses=s.PreviewSerializer)
    @action(detail=False, methods=["post"], permission_action="view")
    def preview(self, request):
        """The expression's current value per series and whether each meets the condition, without
        saving the rule (what the dashboard's rule editor shows as you type)."""
        body = s.AlertRulePreviewSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        tenant = data.pop("tenant")
        data.pop("notifiers", None)
        return Response(services.rule_preview(tenant=tenant, values=data, user=request.user))


class SilenceViewSet(TenantScopedViewSet):
    """Silences: while one is active, the alerts of its tenant matching all its matchers notify no
    one (they show `silenced`). They end at `ends_at`, or now with POST .../expire/."""

    queryset = Silence.objects.select_related("tenant", "created_by")
    serializer_class = s.SilenceSerializer
    filterset_class = SilenceFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def create_object(self, serializer):
        from datetime import timedelta

        from django.utils import timezone

        data = serializer.validated_data
        starts_at = data.get("starts_at") or timezone.now()
        ends_at = data.get("ends_at") or starts_at + timedelta(seconds=data["duration"])
        return services.silence_create(
            tenant=data["tenant"], matchers=data["matchers"], starts_at=starts_at, ends_at=ends_at,
            comment=data.get("comment", ""), actor=self.request.user,
        )  # fmt: skip

    @extend_schema(request=None, responses=s.SilenceSerializer)
    @action(detail=True, methods=["post"], permission_action="change")
    def expire(self, request, pk=None):
        """End the silence now."""
        silence = services.silence_expire(silence=self.get_object(), actor=request.user)
        return Response(s.SilenceSerializer(silence, context=self.get_serializer_context()).data)


class AlertViewSet(PlatformRulesHiddenMixin, TenantScopedViewSet):
    """Alerts (read-only): one per rule and label set, pending -> firing -> resolved, `silenced`
    while a silence matches; their history of state changes and notifications."""

    queryset = Alert.objects.select_related("tenant", "rule")
    serializer_class = s.AlertSerializer
    filterset_class = AlertFilterSet
    http_method_names = ["get", "head", "options"]
    platform_field = "rule__platform"

    @extend_schema(responses=s.AlertEventSerializer(many=True), operation_id="alerts_history_retrieve")
    @action(detail=True, methods=["get"], permission_action="view")
    def history(self, request, pk=None):
        """Every state change and notification of this alert, newest first."""
        alert = self.get_object()
        page = self.paginate_queryset(alert.events.select_related("rule", "alert"))
        return self.get_paginated_response(s.AlertEventSerializer(page, many=True).data)

    @extend_schema(responses=s.AlertEventSerializer(many=True))
    @action(
        detail=False, methods=["get"], permission_action="view", url_path="history", url_name="history-all",
        queryset=AlertEvent.objects.select_related("tenant", "rule", "alert"),
        filterset_class=AlertEventFilterSet, serializer_class=s.AlertEventSerializer,
    )  # fmt: skip
    def history_all(self, request):
        """The history of every alert you may see, newest first (filters: rule, kind, since)."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.AlertEventSerializer(page, many=True).data)
