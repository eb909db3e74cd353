"""Thin Celery tasks of the backups package: what a backup policy's periodic tasks call
(backups/policies.py keeps them in step with the policy)."""

from __future__ import annotations

import logging

from celery import shared_task

from backups import verify  # registers the backup.verify workflow kind in the worker

log = logging.getLogger(__name__)


@shared_task(name="backups.policy_run", ignore_result=True)
def policy_run(policy: int) -> dict:
    """Beat (`backup-policy-<id>`): start a backup run of the policy; one that cannot start
    (a named volume not ready, the tenant suspended) is recorded as the policy's failure."""
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.utils import timezone
    from rest_framework.exceptions import ValidationError

    from backups import policies
    from backups.models import BackupPolicy
    from hivemind.core.errors import Conflict

    row = BackupPolicy.objects.select_related("tenant", "location").filter(pk=policy).first()
    if row is None or not row.enabled:
        return {"skipped": "the policy is gone or disabled"}
    try:
        backup = policies.run_now(policy=row, actor=None)
    except (ValidationError, DjangoValidationError, Conflict) as exc:
        log.warning("scheduled backup of policy %s not started: %s", row, exc)
        BackupPolicy.objects.filter(pk=row.pk).update(last_failure_at=timezone.now())
        return {"skipped": str(exc)}
    return {"backup": backup.pk, "workflow": backup.workflow_id}


@shared_task(name="backups.policy_verify", ignore_result=True)
def policy_verify(policy: int) -> dict:
    """Beat (`backup-verify-<id>`): verify the policy's location, reading its verify_read_percent."""
    from backups.models import BackupPolicy

    row = BackupPolicy.objects.select_related("tenant", "location__tenant").filter(pk=policy).first()
    if row is None or not row.enabled:
        return {"skipped": "the policy is gone or disabled"}
    workflow = verify.verify_start(location=row.location, read_data=row.verify_read_percent or False, policy=row,
                                   actor=None)  # fmt: skip
    return {"workflow": workflow.pk}


@shared_task(name="backups.journal_prune", ignore_result=True)
def journal_prune() -> dict:
    """Beat, hourly: drop the app journal's entries no point-in-time restore can use."""
    from backups import journal

    return {"deleted": journal.prune()}
