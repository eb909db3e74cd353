"""Restoring the platform from a platform backup location: disaster recovery of every tenant
at once (docs/backups.md, "Disaster recovery").

On a new install, platform staff import the platform's keys document (backups/export.py
`import_platform_keys`: it makes the tenants it names), add the platform location again and
call `platform_restore`: for each tenant (all of them, or those named) whose repository the
location holds and whose key is here, the location's runs are recorded again (as a sync does)
and the tenant's newest succeeded backup is restored whole into it (backups/restores.py), as
platform staff — so its settings, quota and members come back with its apps, networks,
volumes and the rest; members' users the install lacks are made without a password. Each
tenant's restore is a workflow of its own; a tenant that cannot be restored is reported with
the reason and does not stop the others.

A dry run records the location's runs (what a sync records: nothing of any tenant changes)
and stores each tenant's plan without starting it.
"""

from __future__ import annotations

from rest_framework.exceptions import APIException, ValidationError

from backups import keys, restores
from backups.discover import location_sync
from backups.models import Backup, BackupLocation, Restore
from backups.repository import RepositoryError
from backups.services import store_for
from hivemind.core.names import is_dns_label
from tenants.services import audit_record

MAX_TENANTS = 1000


def _check_tenants(tenants) -> list[str] | None:
    if tenants is None:
        return None
    if not isinstance(tenants, list) or not 0 < len(tenants) <= MAX_TENANTS:
        raise ValidationError({"tenants": f"expected a list of 1 to {MAX_TENANTS} tenant slugs"})
    bad = [t for t in tenants if not isinstance(t, str) or not is_dns_label(t)]
    if bad:
        raise ValidationError({"tenants": f"{str(bad[0])[:60]!r} is not a tenant slug"})
    return sorted(set(tenants))


def platform_restore(
    *, location: BackupLocation, actor, tenants=None, conflicts: str = Restore.Conflicts.REPLACE, dry_run: bool = False
) -> list[dict]:
    """One entry per tenant: {tenant, backup, restore, workflow, actions, backups_found} when its
    restore was planned or started; {tenant, skipped} or {tenant, error} otherwise."""
    from tenants.models import Tenant

    if not location.is_platform:
        raise ValidationError({"location": f"{location.name} is a tenant's location: restore its backups one by one"})
    if not isinstance(dry_run, bool):
        raise ValidationError({"dry_run": "expected true or false"})
    if conflicts not in Restore.Conflicts.values:
        raise ValidationError({"conflicts": f"expected one of {', '.join(Restore.Conflicts.values)}"})
    wanted = _check_tenants(tenants)
    found = Tenant.objects.order_by("slug")
    if wanted is not None:
        found = found.filter(slug__in=wanted)
        missing = sorted(set(wanted) - set(found.values_list("slug", flat=True)))
        if missing:
            raise ValidationError({"tenants": f"no tenant {', '.join(missing)} here: import the platform's keys "
                                              "(hivemind backup keys import) to make them"})  # fmt: skip
    results = [_one(location, tenant, actor, conflicts, dry_run, named=wanted is not None) for tenant in found]
    results = [r for r in results if r is not None]
    audit_record(actor=actor, tenant=None, action="backup.platform_restore", obj=location,
                 changes={"dry_run": dry_run, "tenants": [r["tenant"] for r in results if "restore" in r]})  # fmt: skip
    return results


def _one(location: BackupLocation, tenant, actor, conflicts: str, dry_run: bool, named: bool) -> dict | None:
    entry = {"tenant": tenant.slug}
    repository = keys.repository_id(store_for(location, tenant))
    if repository is None:  # most tenants of an install may have none there: listed only when named
        return {**entry, "skipped": f"the location holds no repository of tenant {tenant.slug}"} if named else None
    try:
        keys.repository_key(tenant, repository)
    except keys.NoRepositoryKey as exc:
        return {**entry, "skipped": str(exc)}
    try:
        synced = location_sync(location=location, actor=actor, tenant=tenant)
        backup = (
            Backup.objects.filter(tenant=tenant, location=location, status=Backup.Status.SUCCEEDED)
            .order_by("-started_at", "-pk")
            .first()
        )
        if backup is None:
            return {**entry, "backups_found": len(synced), "skipped": "no succeeded backup of it in the location"}
        restore = restores.restore_start(backup=backup, into_tenant=tenant, selection={}, conflicts=conflicts,
                                         dry_run=dry_run, actor=actor)  # fmt: skip
    except (ValidationError, APIException, RepositoryError) as exc:
        detail = getattr(exc, "detail", None)
        return {**entry, "error": str(detail if detail is not None else exc)[:2000]}
    return {**entry, "backups_found": len(synced), "backup": backup.pk, "restore": restore.pk,
            "workflow": restore.workflow_id, "actions": len(restore.plan)}  # fmt: skip
