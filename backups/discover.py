"""Finding a location's backups again from its repository: disaster recovery.

On a fresh install (an empty database), a tenant whose repository keys were imported
(backups/export.py) adds the location its backups are in and syncs it: every backup run the
repository holds — its state snapshot and its volumes' snapshots, grouped by the run they say
they belong to (their metadata: the run's id on the install that wrote them) — becomes a
Backup row again, and can be listed, browsed, verified and restored like any other.
Syncing again adds only what is new; snapshots already recorded are left alone.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from backups.keys import open_for
from backups.models import Backup, BackupLocation
from backups.repository import SnapshotInfo
from tenants.services import audit_record


def _known(location: BackupLocation, tenant) -> set[str]:
    known = set()
    rows = Backup.objects.filter(location=location, tenant=tenant)
    for state_snapshot, volumes in rows.values_list("state_snapshot", "volumes"):
        known.add(state_snapshot)
        known.update(entry.get("snapshot") for entry in volumes or [] if isinstance(entry, dict))
    known.discard("")
    return known


def _volume_entry(info: SnapshotInfo) -> dict:
    stats = info.stats or {}
    return {
        "name": info.meta.get("volume"), "volume_id": info.meta.get("volume_id"), "snapshot": info.id,
        "encrypted": bool(info.meta.get("encrypted")), "files": stats.get("files", 0),
        "bytes_read": stats.get("bytes_read", 0), "bytes_new": stats.get("bytes_new_stored", 0), "state": "done",
    }  # fmt: skip


def location_sync(*, location: BackupLocation, actor, tenant=None) -> list[Backup]:
    """Record the runs the tenant's repository at the location (default: the location's tenant;
    a platform location: the tenant named) holds that no Backup row names yet; returns the rows
    made (oldest first). A run is recorded when its state snapshot is there."""
    tenant = tenant if tenant is not None else location.tenant
    repository = open_for(location, tenant=tenant)
    known = _known(location, tenant)
    runs: dict[object, dict] = defaultdict(lambda: {"state": None, "volumes": []})
    for info in repository.snapshots():
        if info.id in known or "backup" not in info.meta:
            continue
        run = runs[(info.meta.get("tenant"), info.meta["backup"])]
        if info.meta.get("kind") == "state":
            run["state"] = info
        elif info.meta.get("kind") == "volume":
            run["volumes"].append(info)
    made = []
    with transaction.atomic():
        for run in sorted((r for r in runs.values() if r["state"] is not None), key=lambda r: r["state"].time):
            state: SnapshotInfo = run["state"]
            volumes = sorted(run["volumes"], key=lambda info: str(info.meta.get("volume")))
            entries = [_volume_entry(info) for info in volumes]
            finished = max([state.time, *(info.time for info in volumes)])
            backup = Backup.objects.create(
                tenant=tenant, location=location, scope=state.meta.get("scope") or "tenant",
                names=state.meta.get("names") or [], status=Backup.Status.SUCCEEDED, repository_id=repository.id,
                state_snapshot=state.id, volumes=entries, files=sum(e["files"] for e in entries),
                bytes_read=sum(e["bytes_read"] for e in entries), bytes_new=sum(e["bytes_new"] for e in entries),
                started_at=state.time, finished_at=finished,
            )  # fmt: skip
            Backup.objects.filter(pk=backup.pk).update(created_at=state.time)
            made.append(backup)
        audit_record(actor=actor, tenant=tenant, action="backup_location.sync", obj=location,
                     changes={"found": [b.pk for b in made]})  # fmt: skip
    return made
