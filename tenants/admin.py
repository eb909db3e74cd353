from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from tenants.models import (
    ApiToken,
    AuditEvent,
    Membership,
    QuotaReservation,
    ServiceAccount,
    Tenant,
    TenantQuota,
    TenantUsage,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class QuotaInline(admin.StackedInline):
    model = TenantQuota
    can_delete = False
    verbose_name_plural = "quota (empty = no limit)"


class UsageInline(admin.StackedInline):
    model = TenantUsage
    can_delete = False
    readonly_fields = [f.name for f in TenantUsage._meta.fields if f.name not in ("id", "tenant")]
    exclude = ["id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(GuardedModelAdmin):
    """Tenants, with guardian's per-object permission page (Object permissions button)."""

    list_display = ["slug", "name", "status", "isolation_level", "created_at"]
    list_filter = ["status", "isolation_level"]
    search_fields = ["slug", "name", "description"]
    inlines = [MembershipInline, QuotaInline, UsageInline]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(ServiceAccount)
class ServiceAccountAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "user", "created_at"]
    list_filter = ["tenant"]
    readonly_fields = ["user", "created_by", "created_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made through the API or CLI (shown once); here they can be seen and revoked."""

    list_display = ["name", "prefix", "user", "state", "created_at", "expires_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "name", "prefix", "digest", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(QuotaReservation)
class QuotaReservationAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "amounts", "state", "reason", "created_at"]
    list_filter = ["state", "tenant"]
    readonly_fields = ["tenant", "amounts", "state", "created_by", "created_at", "released_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant_slug", "actor_name", "action", "object_type", "object_repr"]
    list_filter = ["action", "tenant_slug"]
    search_fields = ["actor_name", "object_repr", "tenant_slug"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
