"""Storage in the Django admin: read-only (the services and workflows write pools, volumes and
snapshots; the API and CLI change them). No key material is ever shown."""

from __future__ import annotations

from django.contrib import admin

from storage.models import Snapshot, StoragePool, Volume


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class SnapshotInline(admin.TabularInline):
    model = Snapshot
    extra = 0
    can_delete = False
    fields = readonly_fields = ["name", "status", "size_bytes", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StoragePool)
class StoragePoolAdmin(ReadOnlyAdmin):
    list_display = ["name", "provider", "node", "path", "status", "capacity_bytes", "free_bytes", "is_default"]
    list_filter = ["provider", "status", "node"]


@admin.register(Volume)
class VolumeAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "pool", "size_bytes", "used_bytes", "status", "encrypted", "created_at"]
    list_filter = ["tenant", "pool", "status", "encrypted"]
    search_fields = ["name"]
    inlines = [SnapshotInline]


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    list_display = ["name", "volume", "tenant", "status", "created_at"]
    list_filter = ["tenant", "status"]
