"""Backup policies: what to back up, where, when (cron, UTC), how many backups to keep, and when
to verify the location's repository.

Every value is checked here, whichever way it comes (API, CLI, admin): `validate(policy)`. A
policy's schedules are django-celery-beat periodic tasks, `backup-policy-<id>` (task
`backups.policy_run`) and `backup-verify-<id>` (task `backups.policy_verify`), on crontab
schedules in UTC; `sync_schedules` keeps them in step with the policy on every save, disable
and delete, so beat runs exactly what the policy says and the admin lists them.

`apply_retention(policy)` is the last step of a policy's run (backups/run_steps.py) and
`hivemind backup prune`: the policy's succeeded backups are split by `select_keep` with its
keep_* counts (restic's semantics), the others' snapshots forgotten in the repository and their
rows removed, then the repository pruned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from rest_framework.exceptions import ValidationError

from backups.models import Backup, BackupLocation, BackupPolicy
from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from tenants.services import audit_record

log = logging.getLogger(__name__)

RUN_TASK = "backups.policy_run"
VERIFY_TASK = "backups.policy_verify"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
KEEP_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")
MAX_KEEP = 10000
MAX_CRON = 100
PRUNE_WAIT = 30.0  # seconds a retention waits for running backups before leaving the prune to the next one
EDITABLE = ("name", "location", "scope", "names", "schedule", *KEEP_FIELDS, "verify_schedule",
            "verify_read_percent", "enabled")  # fmt: skip


def run_task_name(policy: BackupPolicy) -> str:
    return f"backup-policy-{policy.pk}"


def verify_task_name(policy: BackupPolicy) -> str:
    return f"backup-verify-{policy.pk}"


# --- validation ----------------------------------------------------------------------------------


def parse_cron(field: str, value) -> dict | None:
    """A 5-field cron expression (minute hour day-of-month month day-of-week, UTC) as crontab
    fields, or None when blank. A bad one is a 400 naming `field` and the part that is wrong."""
    from celery.schedules import crontab

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value) > MAX_CRON:
        raise ValidationError({field: f"expected a cron expression of at most {MAX_CRON} characters, e.g. '0 3 * * *'"})
    parts = value.split()
    if len(parts) != 5:
        raise ValidationError({field: f"expected 5 cron fields (minute hour day-of-month month day-of-week, UTC), "
                                      f"got {len(parts)} in {value[:MAX_CRON]!r}"})  # fmt: skip
    fields = dict(zip(CRON_FIELDS, parts, strict=True))
    for name, part in fields.items():  # one at a time, so the message names the wrong part
        try:
            crontab(**{name: part})
        except (ValueError, TypeError, IndexError) as exc:
            raise ValidationError({field: f"{name.replace('_', ' ')} {part[:40]!r} is not valid: {exc}"}) from None
    try:
        crontab(**fields)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValidationError({field: f"{value!r} is not valid: {exc}"}) from None
    return fields


def _check_count(field: str, value, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValidationError({field: f"expected a whole number from 0 to {high}, got {str(value)[:40]!r}"})
    return value


def _check_names_exist(tenant, scope: str, names: list[str]) -> None:
    from hivemind.applications.models import App
    from storage.models import Volume

    if scope == BackupPolicy.Scope.APPS:
        found = set(App.objects.filter(tenant=tenant, name__in=names).exclude(status=App.Status.DELETING)
                    .values_list("name", flat=True))  # fmt: skip
    elif scope == BackupPolicy.Scope.VOLUMES:
        found = set(Volume.objects.filter(tenant=tenant, name__in=names).values_list("name", flat=True))
    else:
        return
    missing = [n for n in names if n not in found]
    if missing:
        raise ValidationError({"names": f"tenant {tenant.slug} has no {scope} named {', '.join(missing)}"})


def location_named(tenant, location) -> BackupLocation:
    """The tenant's location of that name, else the platform location of that name (or that row,
    if it is the tenant's or the platform's). Another tenant's is answered exactly as a missing one."""
    if isinstance(location, BackupLocation):
        if location.tenant_id in (tenant.pk, None):
            return location
        raise ValidationError({"location": f"tenant {tenant.slug} has no backup location {location.name[:63]!r}"})
    if not isinstance(location, str) or not location:
        raise ValidationError({"location": "expected the name of one of the tenant's backup locations"})
    found = (BackupLocation.objects.filter(tenant=tenant, name=location).first()
             or BackupLocation.objects.filter(tenant=None, name=location).first())  # fmt: skip
    if found is None:
        raise ValidationError({"location": f"tenant {tenant.slug} has no backup location {location[:63]!r} "
                                           "(nor has the platform)"})  # fmt: skip
    return found


def validate(policy: BackupPolicy) -> None:
    """Check (and normalise) every field of the policy as it would be saved; a 400 naming the
    field. The API, the CLI and the admin's form all come through here."""
    from backups.runs import _check_names

    tenant = policy.tenant
    if not is_dns_label(policy.name):
        raise ValidationError({"name": f"expected {DNS_LABEL_RULE}, got {str(policy.name)[:70]!r}"})
    policy.location = location_named(tenant, policy.location if policy.location_id else None)
    if policy.scope not in BackupPolicy.Scope.values:
        raise ValidationError({"scope": f"expected one of {', '.join(BackupPolicy.Scope.values)}, "
                                        f"got {str(policy.scope)[:20]!r}"})  # fmt: skip
    policy.names = _check_names(policy.scope, policy.names)
    _check_names_exist(tenant, policy.scope, policy.names)
    policy.schedule = (policy.schedule or "").strip()
    policy.verify_schedule = (policy.verify_schedule or "").strip()
    parse_cron("schedule", policy.schedule)
    parse_cron("verify_schedule", policy.verify_schedule)
    for field in KEEP_FIELDS:
        _check_count(field, getattr(policy, field), MAX_KEEP)
    if policy.schedule and not any(getattr(policy, f) for f in KEEP_FIELDS):
        raise ValidationError({"keep_last": "a scheduled policy keeps a bounded number of backups: set keep_last "
                                            "or a keep_hourly..keep_monthly count above 0"})  # fmt: skip
    _check_count("verify_read_percent", policy.verify_read_percent, 100)
    if not isinstance(policy.enabled, bool):
        raise ValidationError({"enabled": "expected true or false"})


# --- services ------------------------------------------------------------------------------------


def _taken(tenant, name: str) -> Conflict:
    return Conflict(f"tenant {tenant.slug} already has a backup policy named {name}", code="backup_policy_exists")


def _changes(policy: BackupPolicy) -> dict:
    return {f: (policy.location.name if f == "location" else getattr(policy, f)) for f in EDITABLE}


def save(policy: BackupPolicy, *, actor, action: str) -> BackupPolicy:
    """Validate, store and schedule the policy (new or changed)."""
    validate(policy)
    try:
        with transaction.atomic():
            policy.save()
            sync_schedules(policy)
            audit_record(actor=actor, tenant=policy.tenant, action=action, obj=policy, changes=_changes(policy))
    except IntegrityError:
        raise _taken(policy.tenant, policy.name) from None
    return policy


def policy_create(*, tenant, name, location, actor, **values) -> BackupPolicy:
    unknown = sorted(set(values) - set(EDITABLE))
    if unknown:
        raise ValidationError({unknown[0]: "not a field of a backup policy"})
    if BackupPolicy.objects.filter(tenant=tenant, name=name).exists():
        raise _taken(tenant, name)
    policy = BackupPolicy(tenant=tenant, name=name, location=location_named(tenant, location), **values)
    return save(policy, actor=actor, action="backup_policy.create")


def policy_update(*, policy: BackupPolicy, actor, **changes) -> BackupPolicy:
    """Change the given fields (None: left as is)."""
    policy = BackupPolicy.objects.select_related("tenant", "location").get(pk=policy.pk)
    for field, value in changes.items():
        if field not in EDITABLE:
            raise ValidationError({field: "not a field of a backup policy"})
        if value is None:
            continue
        if field == "location":
            value = location_named(policy.tenant, value)
        setattr(policy, field, value)
    if changes.get("name") and BackupPolicy.objects.filter(tenant=policy.tenant, name=policy.name) \
            .exclude(pk=policy.pk).exists():  # fmt: skip
        raise _taken(policy.tenant, policy.name)
    return save(policy, actor=actor, action="backup_policy.update")


@transaction.atomic
def policy_delete(*, policy: BackupPolicy, actor) -> None:
    """Remove the policy and its schedules. Its backups stay (no longer retained by it)."""
    remove_schedules(policy)
    audit_record(actor=actor, tenant=policy.tenant, action="backup_policy.delete", obj=policy,
                 changes={"backups_kept": policy.backups.count()})  # fmt: skip
    policy.delete()


# --- schedules -----------------------------------------------------------------------------------


def _crontab(fields: dict):
    from django_celery_beat.models import CrontabSchedule

    crontab, _ = CrontabSchedule.objects.get_or_create(timezone="UTC", **fields)
    return crontab


def _sync_one(name: str, cron: str, task: str, policy: BackupPolicy, what: str) -> None:
    from django.conf import settings
    from django_celery_beat.models import PeriodicTask

    fields = parse_cron("schedule", cron)
    if fields is None:
        PeriodicTask.objects.filter(name=name).delete()
        return
    PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": task, "crontab": _crontab(fields), "interval": None,
            "kwargs": json.dumps({"policy": policy.pk}), "enabled": policy.enabled,
            "queue": settings.CONTROL_QUEUE,
            "description": f"{what} of backup policy {policy.tenant.slug}/{policy.name} ({cron} UTC)",
        },
    )  # fmt: skip


def sync_schedules(policy: BackupPolicy) -> None:
    """The policy's periodic tasks as it says: present with its crontab when a schedule is set
    (enabled as the policy is), absent when not."""
    _sync_one(run_task_name(policy), policy.schedule, RUN_TASK, policy, "backups")
    _sync_one(verify_task_name(policy), policy.verify_schedule, VERIFY_TASK, policy, "verification")


def remove_schedules(policy: BackupPolicy) -> None:
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name__in=[run_task_name(policy), verify_task_name(policy)]).delete()


# --- running -------------------------------------------------------------------------------------


def run_now(*, policy: BackupPolicy, actor) -> Backup:
    """Start a backup run of the policy now (its workflow runs it, retention last)."""
    from backups.runs import backup_start

    return backup_start(tenant=policy.tenant, location=policy.location, scope=policy.scope, names=policy.names,
                        policy=policy, actor=actor)  # fmt: skip


@dataclasses.dataclass
class _Item:
    id: int
    time: datetime


def apply_retention(policy: BackupPolicy) -> dict:
    """Keep the policy's succeeded backups its keep_* counts select; forget the others'
    snapshots, remove their rows, prune the repository. Returns what was kept and removed. A
    policy with no keep_* count keeps everything. A prune that waits on a running backup longer
    than PRUNE_WAIT is left to the next retention (the forgotten snapshots are gone already)."""
    from backups import keys
    from backups.repository import RepositoryLocked, select_keep
    from backups.runs import forget_present, snapshot_ids

    policy = BackupPolicy.objects.select_related("tenant", "location__tenant").get(pk=policy.pk)
    rows = {b.pk: b for b in Backup.objects.filter(policy=policy, location=policy.location,
                                                   status=Backup.Status.SUCCEEDED)}  # fmt: skip
    counts = {f: getattr(policy, f) for f in KEEP_FIELDS}
    if not any(counts.values()):
        return {"kept": sorted(rows), "removed": [], "why": "the policy sets no keep_* count: everything is kept"}
    items = [_Item(b.pk, b.finished_at or b.started_at or b.created_at) for b in rows.values()]
    selection = select_keep(items, keep_last=counts["keep_last"], hourly=counts["keep_hourly"],
                            daily=counts["keep_daily"], weekly=counts["keep_weekly"],
                            monthly=counts["keep_monthly"])  # fmt: skip
    removed = [item.id for item in selection.forget]
    result = {"kept": [i.id for i in selection.keep], "removed": removed, "snapshots_forgotten": 0}
    if not removed:
        return result
    repository = keys.open_for(policy.location, tenant=policy.tenant)
    for backup_id in removed:
        result["snapshots_forgotten"] += len(forget_present(repository, snapshot_ids(rows[backup_id])))
        Backup.objects.filter(pk=backup_id).delete()  # each as soon as its snapshots are gone
    audit_record(actor=None, tenant=policy.tenant, action="backup_policy.retention", obj=policy,
                 changes={"kept": result["kept"], "removed": removed})  # fmt: skip
    try:
        result["prune"] = dataclasses.asdict(repository.prune(wait=PRUNE_WAIT))
    except RepositoryLocked as exc:
        result["prune"] = {"deferred": str(exc)}
    return result
