"""Reads for tenancy."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q

from tenants.models import ApiToken, Membership, Tenant, TenantQuota, TenantUsage
from tenants.quotas import RESOURCES, WARNING_PERCENT, usage_percent


def tenant_usage(*, tenant: Tenant) -> dict:
    quota = TenantQuota.objects.get(tenant=tenant)
    usage = TenantUsage.objects.get(tenant=tenant)
    resources = {}
    for name, resource in RESOURCES.items():
        used, limit = getattr(usage, resource.field) or 0, getattr(quota, resource.field)
        percent = usage_percent(used, limit)
        resources[name] = {
            "limit": limit,
            "used": used,
            "unit": resource.unit,
            "percent": percent,
            "warning": percent is not None and percent >= WARNING_PERCENT,
        }
    return {"tenant": tenant.slug, "resources": resources}


def role_of(*, user, tenant: Tenant) -> str | None:
    if not user or not user.is_authenticated:
        return None
    membership = Membership.objects.filter(tenant=tenant, user=user).only("role").first()
    return membership.role if membership else None


def people(*, search: str = "", active: bool | None = None):
    """Users who are people, by user name: not service accounts (listed with their tenant) nor
    django-guardian's stand-in for anonymous visitors."""
    from guardian.conf.settings import ANONYMOUS_USER_NAME

    users = (
        get_user_model()
        .objects.filter(service_account__isnull=True)
        .exclude(username=ANONYMOUS_USER_NAME)
        .order_by("username")
    )
    if search:
        users = users.filter(Q(username__icontains=search) | Q(email__icontains=search))
    if active is not None:
        users = users.filter(is_active=active)
    return users


def own_tokens(*, user):
    """A user's own API tokens, newest first (revoked and expired ones too, to see what went)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at")
