from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.utils import timezone
from guardian.admin import GuardedModelAdmin

from tenants import services
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


class ApiTokenAddForm(forms.ModelForm):
    """A new token for a person or a service account (their users are named sa.<tenant>.<name>)."""

    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, initial=30, required=False, help_text="Empty: the token never expires."
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens: made here for any user or service account and shown once, on the page that
    answers the Save (never stored, never put in a message or a cookie); revoked by the action."""

    list_display = ["name", "prefix", "user", "state", "created_at", "expires_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "name", "prefix", "digest", "created_at", "last_used_at"]
    autocomplete_fields = ["user"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
            kwargs["fields"] = ["user", "name", "expires_in_days"]
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["user", "name", "expires_in_days"]})]
        return super().get_fieldsets(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        days = form.cleaned_data.get("expires_in_days")
        token, plain = services.api_token_create(
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            actor=request.user,
        )
        # The admin goes on with `obj` (its log entry, the answer): make it the row just written.
        obj.__dict__.update({f.attname: getattr(token, f.attname) for f in token._meta.concrete_fields})
        obj.plain_token = plain

    def response_add(self, request, obj, post_url_continue=None):
        """The token, once: this page is the only place it is ever shown."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Token {obj.name} for {obj.user}",
            "token": obj,
            "plain": obj.plain_token,
        }
        response = TemplateResponse(request, "admin/tenants/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset) -> None:
        count = 0
        for token in queryset.select_related("user"):
            if token.revoked_at is None:
                services.api_token_revoke(token=token, actor=request.user)
                count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


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
