"""Snapshot schedules: a volume's snapshots taken every interval, the newest `keep` of them
kept, run from beat.

A schedule is a django-celery-beat periodic task (`volume-snapshots-<volume id>`, task
`storage.scheduled_snapshot`), so it is listed and can be paused in the admin with the
platform's other periodic tasks, and survives restarts of beat. Each run takes a snapshot
named `auto-<UTC time>` through the normal snapshot workflow, then deletes the oldest
`auto-*` snapshots beyond `keep` (the user's own snapshots are never touched). A run that
finds the volume busy (another workflow holds it) is skipped: the next one takes its place.
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from hivemind.core.errors import Conflict
from hivemind.core.units import QuantityError, parse_duration
from storage.models import Snapshot, Volume

log = logging.getLogger(__name__)
TASK = "storage.scheduled_snapshot"
PREFIX = "auto-"
MIN_EVERY = 60  # seconds
MAX_EVERY = 366 * 86400
MAX_KEEP = 1000


def task_name(volume: Volume) -> str:
    return f"volume-snapshots-{volume.pk}"


def get(volume: Volume) -> dict | None:
    """{"every": seconds, "keep": n, "enabled": bool, "last_run_at": time} or None."""
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.select_related("interval").filter(name=task_name(volume)).first()
    if task is None or task.interval is None:
        return None
    kwargs = json.loads(task.kwargs or "{}")
    return {
        "every": int(task.interval.every),
        "keep": int(kwargs.get("keep", 0)),
        "enabled": task.enabled,
        "last_run_at": task.last_run_at,
    }


def clean(every, keep) -> tuple[int | None, int]:
    """`every`: a duration ("1h", 3600) of at least a minute, or None/0/"off" to remove; `keep`: 1-1000."""
    if every in (None, 0, "0", "", "off"):
        return None, 0
    try:
        seconds = int(parse_duration(every, low=MIN_EVERY, high=MAX_EVERY))
    except (QuantityError, ValueError, TypeError) as exc:
        raise ValidationError({"every": f"{exc} (at least a minute; off removes the schedule)"}) from None
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise ValidationError({"keep": f"expected how many snapshots to keep, 1 to {MAX_KEEP}, got {keep!r}"})
    return seconds, keep


@transaction.atomic
def schedule_set(*, volume: Volume, every, keep, actor) -> dict | None:
    """Create, change or (every off) remove the volume's snapshot schedule."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tenants.services import audit_record

    seconds, keep = clean(every, keep)
    if seconds is not None and not volume.pool.capabilities.snapshot:
        raise ValidationError({"every": f"pool {volume.pool.name} ({volume.pool.provider}) has no snapshots"})
    name = task_name(volume)
    if seconds is None:
        PeriodicTask.objects.filter(name=name).delete()
        audit_record(actor=actor, tenant=volume.tenant, action="volume.schedule", obj=volume, changes={"every": None})
        return None
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": TASK,
            "interval": interval,
            "kwargs": json.dumps({"volume": volume.pk, "keep": keep}),
            "enabled": True,
            "queue": _control_queue(),
            "description": f"snapshots of volume {volume.tenant.slug}/{volume.name}, keep {keep}",
        },
    )
    audit_record(actor=actor, tenant=volume.tenant, action="volume.schedule", obj=volume,
                 changes={"every": seconds, "keep": keep})  # fmt: skip
    return get(volume)


def schedule_remove(volume: Volume) -> None:
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name=task_name(volume)).delete()


def _control_queue() -> str:
    from django.conf import settings

    return settings.CONTROL_QUEUE


def run(volume_id: int, keep: int) -> dict:
    """One scheduled run: a snapshot now, then the oldest automatic ones beyond `keep` go."""
    from storage import services

    volume = Volume.objects.select_related("tenant", "pool").filter(pk=volume_id).first()
    if volume is None:
        return {"skipped": "the volume is gone"}
    name = PREFIX + timezone.now().strftime("%Y%m%d-%H%M%S")
    try:
        services.snapshot_create(volume=volume, name=name, actor=None)
    except (Conflict, ValidationError) as exc:
        log.info("scheduled snapshot of volume %s skipped: %s", volume, exc)
        return {"skipped": str(exc)}
    pruned = []
    automatic = Snapshot.objects.filter(volume=volume, name__startswith=PREFIX).order_by("-created_at", "-pk")
    for old in automatic[keep:]:
        if old.status != Snapshot.Status.READY:
            continue
        try:
            services.snapshot_delete(snapshot=old, actor=None)
            pruned.append(old.name)
        except Conflict as exc:  # the volume is busy with the new snapshot: the next run prunes it
            log.info("pruning snapshot %s of %s waits: %s", old.name, volume, exc)
            break
    return {"snapshot": name, "pruned": pruned}
