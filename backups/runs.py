"""Backup runs: services that start and remove them, and selectors that read them.

A run is a `Backup` row and its `backup.run` workflow (backups/run_steps.py): the tenant's
configuration document is written on the control queue, each volume's data is read, chunked
and uploaded by the worker of the node that holds the volume, then the manifest is recorded.
`Backup.volumes` is the run's progress as it goes: one entry per volume, pending, running
(with the bytes read so far), done (with its repository snapshot and figures).

A run's provider snapshots are named `s<BACKUP_SNAPSHOT_BASE + backup id>`: a range no
Snapshot row's own `s<pk>` reaches, below the replication range (storage/replication.py), so
neither storage's snapshots nor replication ever take one of them for theirs.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from django.db import transaction
from rest_framework.exceptions import ValidationError

from backups.models import Backup, BackupLocation, BackupPolicy
from hivemind.core import limits
from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from tenants.services import audit_record, tenant_require_active

log = logging.getLogger(__name__)

BACKUP_SNAPSHOT_BASE = 9 * 10**16  # below storage.replication.REPLICATION_BASE (10**17)
MAX_NAMES = 100
MAX_PATH = 4096
# Volumes a run reads: one being made, deleted or left failed has no data to read yet.
READABLE = (Backup.Status.SUCCEEDED,)
VOLUME_STATES = ("ready", "busy")
FINISHED = (Backup.Status.SUCCEEDED, Backup.Status.FAILED)


def provider_snapshot_name(backup_id: int) -> str:
    """The provider snapshot a run takes of each of its volumes (the same on every attempt)."""
    return f"s{BACKUP_SNAPSHOT_BASE + int(backup_id)}"


# --- what a run covers ---------------------------------------------------------------------------


def _check_names(scope: str, names) -> list[str]:
    if names is None:
        names = []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValidationError({"names": "expected a list of names"})
    if scope == BackupPolicy.Scope.TENANT:
        if names:
            raise ValidationError({"names": "a backup of the whole tenant names nothing: use scope apps or volumes"})
        return []
    if not names:
        raise ValidationError({"names": f"scope {scope} needs the names of the {scope} to back up"})
    if len(names) > MAX_NAMES:
        raise ValidationError({"names": f"at most {MAX_NAMES} names, got {len(names)}"})
    bad = [n for n in names if not is_dns_label(n)]
    if bad:
        raise ValidationError({"names": f"expected {DNS_LABEL_RULE}, got {bad[0][:70]!r}"})
    return sorted(set(names))


def _apps_volumes(tenant, names: list[str]):
    """The named apps (all must exist) and the tenant's volumes they mount."""
    from hivemind.applications.models import App
    from storage.models import Volume
    from storage.mounts import mounts

    apps = {
        name: spec
        for name, spec in App.objects.filter(tenant=tenant, name__in=names)
        .exclude(status=App.Status.DELETING)
        .values_list("name", "revision__spec")
    }
    missing = [n for n in names if n not in apps]
    if missing:
        raise ValidationError({"names": f"tenant {tenant.slug} has no apps named {', '.join(missing)}"})
    volumes = Volume.objects.filter(tenant=tenant, status__in=VOLUME_STATES).select_related("pool__node")
    return [v for v in volumes if any(mounts(name, spec, v) for name, spec in apps.items())]


def selected_volumes(tenant, scope: str, names: list[str]) -> list:
    """The volumes a run of `scope` reads, by name; a named volume missing is a 400, one that
    cannot be read now (being made, deleted, failed) a 409 naming it."""
    from storage.models import Volume

    rows = Volume.objects.filter(tenant=tenant).select_related("pool__node").order_by("name")
    if scope == BackupPolicy.Scope.TENANT:
        return list(rows.filter(status__in=VOLUME_STATES))
    if scope == BackupPolicy.Scope.APPS:
        return sorted(_apps_volumes(tenant, names), key=lambda v: v.name)
    found = {v.name: v for v in rows.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValidationError({"names": f"tenant {tenant.slug} has no volumes named {', '.join(missing)}"})
    unreadable = [f"{n} ({found[n].status})" for n in names if found[n].status not in VOLUME_STATES]
    if unreadable:
        raise Conflict(f"volumes {', '.join(unreadable)} cannot be backed up now: only ready ones can",
                       code="volume_not_ready")  # fmt: skip
    return [found[n] for n in names]


def volume_entry(volume) -> dict:
    """A volume's entry in Backup.volumes before the run reads it."""
    return {
        "name": volume.name,
        "volume": volume.pk,
        "node": volume.pool.node.name,
        "encrypted": volume.encrypted,
        "state": "pending",
        "snapshot": "",
        "files": 0,
        "size": 0,
        "bytes_read": 0,
        "bytes_new": 0,
    }


# --- services ------------------------------------------------------------------------------------


def backup_start(
    *, tenant, location: BackupLocation, scope: str = "tenant", names=None, policy: BackupPolicy | None = None,
    actor,
) -> Backup:  # fmt: skip
    """Start a backup run of the tenant into `location`: the Backup row (pending) and its
    `backup.run` workflow. The location's last check is not required: the run itself shows
    whether the location works."""
    from hivemind.workflows import engine

    if scope not in BackupPolicy.Scope.values:
        raise ValidationError({"scope": f"expected one of {', '.join(BackupPolicy.Scope.values)}, got {scope!r}"})
    if not isinstance(location, BackupLocation) or location.tenant_id not in (tenant.pk, None):
        raise ValidationError({"location": f"no backup location of tenant {tenant.slug} was given"})
    if policy is not None and (policy.tenant_id != tenant.pk or policy.location_id != location.pk):
        raise ValidationError({"policy": f"policy {policy.name} belongs to another tenant or location"})
    names = _check_names(scope, names)
    tenant_require_active(tenant)
    with transaction.atomic():
        volumes = selected_volumes(tenant, scope, names)
        backup = Backup.objects.create(
            tenant=tenant, location=location, policy=policy, scope=scope, names=names,
            volumes=[volume_entry(v) for v in volumes],
        )  # fmt: skip
        backup.workflow = engine.workflow_create(
            kind="backup.run", tenant=tenant, params={"backup": backup.pk}, actor=actor
        )
        backup.save(update_fields=["workflow"])
        changes = {"location": location.name, "scope": scope, "names": names, "volumes": [v.name for v in volumes],
                   "policy": policy.name if policy else None}  # fmt: skip
        audit_record(actor=actor, tenant=tenant, action="backup.start", obj=backup, changes=changes)
    return backup


def snapshot_ids(backup: Backup) -> list[str]:
    """The repository snapshots the backup recorded: its configuration document's and its volumes'."""
    ids = [backup.state_snapshot] if backup.state_snapshot else []
    ids += [v["snapshot"] for v in backup.volumes or [] if isinstance(v, dict) and v.get("snapshot")]
    return ids


def forget_present(repository, ids: list[str]) -> list[str]:
    """Forget those of `ids` the repository holds (a retry, or a snapshot already gone, is fine)."""
    present = [i for i in dict.fromkeys(ids) if repository.store.exists(f"snapshots/{i}")]
    if present:
        repository.forget(present)
    return present


def backup_delete(*, backup: Backup, actor) -> list[str]:
    """Forget the backup's snapshots in its location's repository, then remove its row; returns
    the snapshots forgotten. Their data goes at the repository's next prune. Refused (409) while
    the run is going: cancel its workflow first. The location's answer (StoreError) leaves the
    row as it was."""
    from backups import keys
    from backups.repository import RepositoryError

    backup = Backup.objects.select_related("location__tenant", "tenant").get(pk=backup.pk)
    if backup.status not in FINISHED:
        workflow = f" (`hivemind workflow cancel {backup.workflow_id}`)" if backup.workflow_id else ""
        raise Conflict(f"backup {backup.pk} is {backup.status}: cancel its workflow first{workflow}",
                       code="backup_running")  # fmt: skip
    ids = snapshot_ids(backup)
    forgotten: list[str] = []
    if ids and backup.repository_id:
        try:
            repository = keys.open_for(backup.location, tenant=backup.tenant)
        except RepositoryError as exc:
            if "holds no backup repository" not in str(exc):
                raise
            repository = None  # the location was emptied by hand: nothing to forget
        if repository is not None:
            forgotten = forget_present(repository, ids)
    with transaction.atomic():
        audit_record(actor=actor, tenant=backup.tenant, action="backup.delete", obj=backup,
                     changes={"snapshots_forgotten": len(forgotten)})  # fmt: skip
        backup.delete()
    return forgotten


# --- selectors -----------------------------------------------------------------------------------


def dedup_ratio(backup: Backup) -> float:
    """Bytes read per byte the repository did not hold yet."""
    return round(backup.bytes_read / max(backup.bytes_new, 1), 2)


def duration_seconds(backup: Backup) -> float | None:
    if backup.started_at is None:
        return None
    from django.utils import timezone

    return round(((backup.finished_at or timezone.now()) - backup.started_at).total_seconds(), 3)


def check_path(path) -> str:
    """A path inside a volume backup: '/'-separated, no '..', bounded, no control characters."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str):
        raise ValidationError({"path": "expected a path in the volume, e.g. /data/logs"})
    limits.check_text("path", path, MAX_PATH)
    if ".." in PurePosixPath(path).parts:
        raise ValidationError({"path": f"a path in a backup may not contain '..', got {path[:80]!r}"})
    return path


def volume_snapshot(backup: Backup, volume: str) -> str:
    """The repository snapshot holding `volume`'s data in the backup (400 naming those there)."""
    if backup.status != Backup.Status.SUCCEEDED:
        raise Conflict(f"backup {backup.pk} is {backup.status}: only a succeeded backup can be browsed",
                       code="backup_not_succeeded")  # fmt: skip
    entries = [v for v in backup.volumes or [] if isinstance(v, dict) and v.get("snapshot")]
    for entry in entries:
        if entry.get("name") == volume:
            return entry["snapshot"]
    held = ", ".join(e["name"] for e in entries) or "none"
    why = f"backup {backup.pk} holds no volume named {str(volume)[:70]!r} (it holds: {held})"
    raise ValidationError({"volume": why})


def backup_files(*, backup: Backup, volume: str, path: str = "") -> list[dict]:
    """A directory's entries in a volume's backup (or the one entry of a file), for browsing."""
    from backups import keys

    path = check_path(path)
    snapshot = volume_snapshot(backup, volume)
    repository = keys.open_for(backup.location, tenant=backup.tenant)
    return [
        {"path": e.path, "type": e.type, "size": e.size, "mode": f"{e.mode:04o}", "uid": e.uid, "gid": e.gid,
         "mtime_ns": e.mtime_ns, **({"target": e.target} if e.type == "symlink" else {})}
        for e in repository.list_files(snapshot, path)
    ]  # fmt: skip
