"""Reads for tenancy."""

from __future__ import annotations

from tenants.models import Membership, Tenant, TenantQuota, TenantUsage
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
