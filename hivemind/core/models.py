"""Shared model bases: everything a tenant owns derives from TenantOwned."""

from __future__ import annotations

from django.db import models

from hivemind.core.scoping import RestrictedQuerySet


class TenantOwned(models.Model):
    """A resource of one tenant. `objects.restrict(user, action)` is the only way views read it.

    Class attributes a subclass may set:
    - `tenant_permissions`: which tenant-level permission grants each action
      (defaults: view -> tenants.view_resources, anything else -> tenants.operate_resources);
    - `deleted_with_tenant`: True when the rows go away with their tenant (memberships)
      instead of blocking its deletion (apps, volumes...);
    - `blocks_tenant_deletion`: the filter picking the rows that still count as owned
      (e.g. only held reservations; released ones are history).
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")

    objects = RestrictedQuerySet.as_manager()

    tenant_permissions: dict[str, str] = {}
    deleted_with_tenant = False
    blocks_tenant_deletion: dict = {}

    class Meta:
        abstract = True
