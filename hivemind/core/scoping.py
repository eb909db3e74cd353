"""The one scoped queryset: `.restrict(user, action)` narrows any tenant-owned query.

A user sees an object when (a) they are platform staff, (b) their role in the object's
tenant grants the tenant-level permission for the action (roles are stored as
django-guardian object permissions on the Tenant), or (c) they hold a guardian
permission on that single object (e.g. view on one app only).
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db import models
from guardian.shortcuts import get_objects_for_user

ACTIONS = ("view", "add", "change", "delete")
DEFAULT_TENANT_PERMISSIONS = {"view": "tenants.view_resources"}
WRITE_TENANT_PERMISSION = "tenants.operate_resources"


def tenant_permission_for(model: type[models.Model], action: str) -> str:
    perms = getattr(model, "tenant_permissions", {}) or {}
    return perms.get(action) or DEFAULT_TENANT_PERMISSIONS.get(action) or WRITE_TENANT_PERMISSION


def is_platform_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


def tenants_for(user, permission: str) -> models.QuerySet:
    """The tenants in which `user`'s role grants `permission` (a tenants.* codename)."""
    from tenants.models import Tenant

    if is_platform_staff(user):
        return Tenant.objects.all()
    if user is None or not user.is_authenticated or not user.is_active:
        return Tenant.objects.none()
    return get_objects_for_user(user, permission, klass=Tenant, accept_global_perms=False, with_superuser=False)


class RestrictedQuerySet(models.QuerySet):
    def restrict(self, user: AnonymousUser | models.Model | None, action: str = "view") -> RestrictedQuerySet:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        if is_platform_staff(user):
            return self
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        model = self.model
        scope = models.Q(tenant__in=tenants_for(user, tenant_permission_for(model, action)).values("pk"))
        codename = f"{model._meta.app_label}.{action}_{model._meta.model_name}"
        granted = get_objects_for_user(user, codename, klass=model, accept_global_perms=False, with_superuser=False)
        return self.filter(scope | models.Q(pk__in=granted.values("pk")))
