"""Backup locations in the Django admin: read-only (the API and CLI change them, so their
settings are checked by their kind and their credentials sealed). Credentials are never
shown: only the names of those set; the sealed bytes are not a field of any admin form."""

from __future__ import annotations

from django.contrib import admin

from backups.models import BackupLocation


@admin.register(BackupLocation)
class BackupLocationAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "kind", "check_state", "checked_at", "created_at"]
    list_filter = ["tenant", "kind", "check_state"]
    search_fields = ["name"]
    fields = readonly_fields = ["tenant", "name", "kind", "config", "secret_names", "check_state", "check_error",
                                "checked_at", "created_at", "updated_at"]  # fmt: skip

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
