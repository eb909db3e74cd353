"""Verifying a location's repository and recording what it found on the backups there.

    backup.verify   one control step (backups.verify): the tenant's repository at the location
                    is opened and verified (structure always; with read_data all packs, or a
                    percentage of them, downloaded and every chunk decrypted and checked)

The report's affected snapshots are mapped back to the Backup rows that recorded them (their
configuration document's snapshot and each volume's): those become `verified=damaged` with a
`verify_report` naming the damaged objects and, per volume, the files affected; every other
succeeded backup there becomes `verified=ok`. Damage is recorded in the tenant's audit log as
`backup.verify_failed` naming the location and the backups (the platform's record of events;
alert rules of kind event read platform state, see the report of issue 16).
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backups.models import Backup, BackupLocation, BackupPolicy
from backups.repository import RepositoryLocked
from hivemind.workflows.registry import DEFAULT_TRANSIENT, Plan, PlannedStep, WorkflowKind, step, workflow_kind
from tenants.services import audit_record

log = logging.getLogger(__name__)

KIND = "backup.verify"
MAX_LISTED = 200  # damaged objects and files per volume kept in a report


def check_read_data(value) -> bool | int:
    """False (structure only), True (every pack) or a percentage 1-100 of the packs."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and 0 <= value <= 100:
        return value if 0 < value < 100 else bool(value)
    raise ValidationError({"read_data": f"expected true, false or a percentage 0 to 100, got {str(value)[:20]!r}"})


def verify_start(*, location: BackupLocation, read_data=False, policy: BackupPolicy | None = None, tenant=None,
                 actor):  # fmt: skip
    """Start the `backup.verify` workflow of the tenant's repository at the location (the
    policy's tenant, else `tenant`, else the location's; returns the Workflow)."""
    from hivemind.workflows import engine

    tenant = policy.tenant if policy is not None else tenant or location.tenant
    if tenant is None:
        raise ValidationError({"location": f"platform backup location {location.name} holds one repository per "
                               "tenant: verify it through a tenant's policy"})  # fmt: skip
    params = {"location": location.pk, "tenant": tenant.pk, "read_data": check_read_data(read_data)}
    if policy is not None:
        params["policy"] = policy.pk
    return engine.workflow_create(kind=KIND, tenant=tenant, params=params, actor=actor)


@workflow_kind
class BackupVerify(WorkflowKind):
    name = KIND
    description = "verify a backup location's repository and mark its backups ok or damaged"

    def clean(self, params: dict) -> dict:
        params = super().clean(params)
        location = params.get("location")
        if isinstance(location, bool) or not isinstance(location, int) or \
                not BackupLocation.objects.filter(pk=location).exists():  # fmt: skip
            raise ValidationError({"location": f"no backup location {str(location)[:40]!r}"})
        cleaned = {"location": location, "read_data": check_read_data(params.get("read_data", False))}
        tenant = params.get("tenant")
        if tenant is not None:
            if isinstance(tenant, bool) or not isinstance(tenant, int):
                raise ValidationError({"tenant": f"expected a tenant id, got {str(tenant)[:40]!r}"})
            cleaned["tenant"] = tenant
        if params.get("policy") is not None:
            cleaned["policy"] = params["policy"]
        return cleaned

    def plan(self, params: dict) -> Plan:
        return Plan(steps=[PlannedStep("backups.verify")], subject=f"backup-location:{params['location']}")


def _entries(backup: Backup) -> dict[str, str]:
    """snapshot id -> what it holds in the backup ("state" or "volume <name>")."""
    found = {backup.state_snapshot: "state"} if backup.state_snapshot else {}
    for entry in backup.volumes or []:
        if isinstance(entry, dict) and entry.get("snapshot"):
            found[entry["snapshot"]] = f"volume {entry.get('name', '?')}"
    return found


def record(location: BackupLocation, report, read_data, tenant=None) -> dict:
    """Mark the succeeded backups of the tenant's repository at the location (default: the
    location's tenant) ok or damaged from a VerifyReport; returns a summary."""
    tenant = tenant if tenant is not None else location.tenant
    now = timezone.now()
    damaged_objects = dict(list(report.damaged.items())[:MAX_LISTED])
    checked = {"read_data": read_data, "packs": report.packs, "packs_read": report.packs_read,
               "snapshots": report.snapshots}  # fmt: skip
    damaged, ok = [], []
    with transaction.atomic():
        rows = Backup.objects.select_for_update().filter(location=location, tenant=tenant,
                                                         status=Backup.Status.SUCCEEDED)  # fmt: skip
        for backup in rows:
            files: dict[str, list[str]] = {}
            for snapshot, what in _entries(backup).items():
                if snapshot in report.affected:
                    files[what] = report.affected[snapshot][:MAX_LISTED]
            if files:
                backup.verified = Backup.Verified.DAMAGED
                backup.verify_report = {**checked, "damaged_objects": damaged_objects, "files_affected": files}
                damaged.append(backup.pk)
            else:
                backup.verified = Backup.Verified.OK
                backup.verify_report = checked
                ok.append(backup.pk)
            backup.verified_at = now
            backup.save(update_fields=["verified", "verify_report", "verified_at"])
        if damaged:
            audit_record(actor=None, tenant=tenant, action="backup.verify_failed", obj=location,
                         changes={"location": location.name, "backups": damaged,
                                  "damaged_objects": sorted(damaged_objects)[:20]})  # fmt: skip
    if damaged:
        log.warning("verify of backup location %s: backups %s damaged (%d objects)", location, damaged,
                    len(report.damaged))  # fmt: skip
    return {"ok": ok, "damaged": damaged, "damaged_objects": damaged_objects,
            "unindexed_packs": len(report.unindexed_packs), **checked}  # fmt: skip


def verify_location(location: BackupLocation, read_data=False, tenant=None) -> dict:
    """Verify the tenant's repository at the location (default: the location's tenant) now and
    record the result on its backups."""
    from backups import keys

    read_data = check_read_data(read_data)
    repository = keys.open_for(location, tenant=tenant)
    report = repository.verify(read_data=read_data)
    return record(location, report, read_data, tenant)


@step("backups.verify", max_attempts=3, timeout=6 * 3600, backoff=30.0,
      transient=(*DEFAULT_TRANSIENT, RepositoryLocked))  # fmt: skip
def verify_step(ctx):
    from tenants.models import Tenant

    location = BackupLocation.objects.select_related("tenant").get(pk=ctx.params["location"])
    tenant = Tenant.objects.get(pk=ctx.params["tenant"]) if ctx.params.get("tenant") else None
    result = verify_location(location, ctx.params.get("read_data", False), tenant)
    return {k: result[k] for k in ("ok", "damaged", "packs", "packs_read", "snapshots")}
