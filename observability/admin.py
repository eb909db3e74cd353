"""Usage samples in the Django admin, read-only: agents write them, beat prunes them."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from observability.models import UsageSample


@admin.register(UsageSample)
class UsageSampleAdmin(admin.ModelAdmin):
    list_display = ["at", "container_name", "node", "app", "tenant", "cpu", "memory"]
    list_filter = ["node", "tenant"]
    search_fields = ["container_name"]
    list_select_related = ["node", "app", "tenant"]
    date_hierarchy = "at"
    show_full_result_count = False  # a count(*) of every sample on each page is not worth it

    @admin.display(description="CPU", ordering="cpu_millis")
    def cpu(self, sample: UsageSample) -> str:
        return f"{sample.cpu_millis}m"

    @admin.display(description="memory", ordering="memory_bytes")
    def memory(self, sample: UsageSample) -> str:
        return filesizeformat(sample.memory_bytes)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # beat prunes them (HIVEMIND_SAMPLE_RETENTION)
