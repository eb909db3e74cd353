"""Notifiers and deliveries in the Django admin: read-only (the API and CLI change notifiers, so
their settings are checked by their kind and their secrets sealed). Secrets are never shown:
only the names of those set; the sealed bytes are not a field of any admin form."""

from __future__ import annotations

from django.contrib import admin

from notifiers.models import Delivery, Notifier


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Notifier)
class NotifierAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "kind", "secret_names", "created_at"]
    list_filter = ["tenant", "kind"]
    search_fields = ["name"]
    fields = readonly_fields = ["tenant", "name", "kind", "config", "secret_names", "created_at", "updated_at"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["pk", "notifier", "status", "group_key", "state", "attempts", "created_at", "delivered_at"]
    list_filter = ["state", "status", "notifier__tenant"]
    search_fields = ["group_key", "notifier__name"]
    fields = readonly_fields = [
        "notifier", "group_key", "status", "state", "attempts", "max_attempts", "last_error", "answer", "history",
        "next_attempt_at", "delivered_at", "created_at", "updated_at", "payload",
    ]  # fmt: skip
    list_select_related = ["notifier__tenant"]
