"""Backup locations in the Django admin: read-only (the API and CLI change them, so their
settings are checked by their kind and their credentials sealed). Credentials are never
shown: only the names of those set; the sealed bytes are not a field of any admin form."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from backups.models import Backup, BackupLocation, BackupPolicy, Restore


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


class BackupPolicyForm(forms.ModelForm):
    """Checked as the API checks it (backups/policies.py validate)."""

    class Meta:
        model = BackupPolicy
        fields = ["tenant", "name", "location", "scope", "names", "schedule", "keep_last", "keep_hourly",
                  "keep_daily", "keep_weekly", "keep_monthly", "verify_schedule", "verify_read_percent",
                  "enabled"]  # fmt: skip

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors or not self.instance.tenant_id:
            return
        from rest_framework.exceptions import ValidationError

        from backups import policies

        try:
            policies.validate(self.instance)
        except ValidationError as exc:
            for field, message in exc.detail.items():
                self.add_error(field if field in self.fields else None, str(message[0] if isinstance(message, list)
                                                                              else message))  # fmt: skip


@admin.register(BackupPolicy)
class BackupPolicyAdmin(admin.ModelAdmin):
    """Saved through backups/policies.py, so its periodic tasks follow every edit."""

    form = BackupPolicyForm
    list_display = ["name", "tenant", "location", "scope", "schedule", "keep_last", "enabled", "last_success_at"]
    list_filter = ["tenant", "enabled", "scope"]
    search_fields = ["name"]
    readonly_fields = ["last_success_at", "last_failure_at", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:
        from backups import policies

        policies.save(obj, actor=request.user, action="backup_policy.update" if change else "backup_policy.create")

    def delete_model(self, request, obj) -> None:
        from backups import policies

        policies.policy_delete(policy=obj, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for policy in queryset:
            self.delete_model(request, policy)


class _ReadOnly(admin.ModelAdmin):
    """Runs and restores are made by their workflows: the admin shows them, the API and the CLI
    start them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Backup)
class BackupAdmin(_ReadOnly):
    list_display = ["pk", "tenant", "location", "policy", "scope", "status", "verified", "bytes_read", "bytes_new",
                    "created_at"]  # fmt: skip
    list_filter = ["tenant", "status", "verified"]
    list_select_related = ["tenant", "location", "policy"]
    fields = readonly_fields = ["tenant", "location", "policy", "scope", "names", "status", "workflow",
                                "repository_id", "state_snapshot", "volumes", "files", "bytes_read", "bytes_new",
                                "error", "verified", "verified_at", "verify_report", "started_at", "finished_at",
                                "created_at"]  # fmt: skip


@admin.register(Restore)
class RestoreAdmin(_ReadOnly):
    list_display = ["pk", "tenant", "backup", "status", "dry_run", "conflicts", "created_at"]
    list_filter = ["tenant", "status", "dry_run"]
    list_select_related = ["tenant", "backup"]
    fields = readonly_fields = ["tenant", "backup", "selection", "rename", "conflicts", "dry_run", "at", "plan",
                                "result", "status", "workflow", "error", "created_at", "finished_at"]  # fmt: skip
