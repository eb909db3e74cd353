"""Alerting in the Django admin: rules and silences editable (the API's checks run in the API,
not here: the admin is staff's), alerts, their history and notification groups read-only
(evaluation writes them)."""

from __future__ import annotations

from django.contrib import admin

from alerting.models import Alert, AlertEvent, AlertGroup, AlertRule, Silence


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "platform", "metric", "event", "severity", "enabled", "status",
                    "last_evaluated_at"]  # fmt: skip
    list_filter = ["kind", "severity", "enabled", "status", "platform", "tenant"]
    search_fields = ["name", "metric", "status_message"]
    list_select_related = ["tenant"]
    filter_horizontal = ["notifiers"]
    readonly_fields = ["status", "status_message", "last_evaluated_at", "created_by", "created_at", "updated_at"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["rule", "tenant", "state", "silenced", "value", "active_at", "fired_at", "resolved_at"]
    list_filter = ["state", "silenced", "rule__severity", "tenant"]
    search_fields = ["rule__name", "fingerprint"]
    list_select_related = ["rule", "tenant"]
    date_hierarchy = "active_at"


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "rule", "alert", "kind", "value", "message", "tenant"]
    list_filter = ["kind", "tenant"]
    search_fields = ["rule__name", "message"]
    list_select_related = ["rule", "alert__rule", "tenant"]
    date_hierarchy = "at"
    show_full_result_count = False


@admin.register(AlertGroup)
class AlertGroupAdmin(ReadOnlyAdmin):
    list_display = ["rule", "labels", "notified_status", "notified_at", "notifications"]
    list_filter = ["notified_status"]
    list_select_related = ["rule"]


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "matchers", "starts_at", "ends_at", "comment", "created_by"]
    list_filter = ["tenant"]
    search_fields = ["comment"]
    list_select_related = ["tenant", "created_by"]
    readonly_fields = ["created_by", "created_at"]
