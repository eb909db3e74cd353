"""The `backup.run` workflow: one backup of a tenant into one location.

    backups.state     (control)    open or make the location's repository; write the tenant's
                                   configuration document (backups/state) as a snapshot
    backups.volumes   (node.<n>)   one per node holding selected volumes, run by that node's
                                   worker: per volume a provider snapshot named after the backup,
                                   its files read, chunked and uploaded from there (only the
                                   chunks the repository lacks), the provider snapshot deleted
    backups.manifest  (control)    per-volume figures and totals on the Backup, succeeded
    backups.retention (control)    with a policy only: backups.policies.apply_retention(policy)
                                   when that exists (a failure there is logged, never undoes the
                                   backup just made)

Locks: `volume:<pk>` shared per volume. Storage's own workflows (delete, revert, expand,
snapshot, replication) take it exclusive, so a volume cannot go or change under a run reading
it, while two backups of it (two locations, two policies) run side by side.

Idempotent steps: what an attempt recorded on the Backup row is kept; a retried attempt first
adopts the repository snapshot an earlier one wrote before it could record it (found by its
metadata: backup id, volume id). A run that fails for good is compensated: the nodes delete
their leftover provider snapshots, then the repository snapshots the run wrote are forgotten
(the ones recorded and any found by their metadata), so nothing of it stays visible; the Backup
ends `failed` with the workflow's error, which names the step and why.

Encrypted volumes are read as their provider directory holds them: gocryptfs ciphertext under
cipher/ (storage/crypt.py). The backup stays encrypted with the volume's key on top of the
repository's own encryption and restores byte-identical; the volume's data key is not in it
(it is the tenant's, under tenants/keys.py).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backups.models import Backup
from backups.repository import RepositoryError, RepositoryLocked
from backups.runs import forget_present, provider_snapshot_name, snapshot_ids
from hivemind.workflows.registry import DEFAULT_TRANSIENT, Lock, Plan, PlannedStep, WorkflowKind, step, workflow_kind

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds between updates of a volume's bytes read while it is read
TRANSIENT = (*DEFAULT_TRANSIENT, RepositoryLocked)  # a prune holds the repository: try again later


def _backup(ctx) -> Backup:
    return Backup.objects.select_related("tenant", "location__tenant", "policy").get(pk=ctx.params["backup"])


def _update_entry(backup_id: int, volume_id: int, **fields) -> None:
    """Change one volume's entry in Backup.volumes (the run's progress)."""
    with transaction.atomic():
        backup = Backup.objects.select_for_update().only("volumes").get(pk=backup_id)
        for entry in backup.volumes:
            if entry.get("volume") == volume_id:
                entry.update(fields)
        Backup.objects.filter(pk=backup_id).update(volumes=backup.volumes)


def _written_by(repository, backup_id: int, **match) -> list:
    """The repository's snapshots whose metadata says this backup wrote them (and match)."""
    return [
        info
        for info in repository.snapshots()
        if info.meta.get("backup") == backup_id and all(info.meta.get(k) == v for k, v in match.items())
    ]


def _local_directory(location) -> None:
    """A local location's directory, made on first use as `check` makes it."""
    from backups.stores import StoreError

    path = Path(location.config.get("path") or "")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise StoreError(f"backup location {location.name} ({path}): cannot make its directory: {why}") from None


def _open(backup: Backup, *, create: bool = False):
    from backups import keys

    if create and backup.location.kind == "local":
        _local_directory(backup.location)

    repository = keys.open_for(backup.location, tenant=backup.tenant, create=create)
    if backup.repository_id and repository.id != backup.repository_id:
        raise RepositoryError(
            f"backup location {backup.location.name} now holds repository {repository.id}, not {backup.repository_id} "
            "this backup began in"
        )
    return repository


@workflow_kind
class BackupRun(WorkflowKind):
    name = "backup.run"
    description = "back up a tenant: its configuration, then each volume's data from the node holding it"

    def clean(self, params: dict) -> dict:
        params = super().clean(params)
        backup = params.get("backup")
        if isinstance(backup, bool) or not isinstance(backup, int) or not Backup.objects.filter(pk=backup).exists():
            raise ValidationError({"backup": f"no backup {str(backup)[:40]!r}"})
        return {"backup": backup}

    def plan(self, params: dict) -> Plan:
        backup = Backup.objects.get(pk=params["backup"])
        by_node: dict[str, list[int]] = {}
        for entry in backup.volumes:
            by_node.setdefault(entry["node"], []).append(entry["volume"])
        steps = [PlannedStep("backups.state")]
        steps += [
            PlannedStep("backups.volumes", queue=f"node.{node}", params={"node": node, "volumes": volumes})
            for node, volumes in sorted(by_node.items())
        ]
        steps.append(PlannedStep("backups.manifest"))
        if backup.policy_id is not None:
            steps.append(PlannedStep("backups.retention"))
        locks = [Lock(f"volume:{entry['volume']}", "shared") for entry in backup.volumes]
        return Plan(steps=steps, locks=locks, subject=f"backup:{backup.pk}")

    def on_finished(self, workflow) -> None:
        """A run that did not succeed: the Backup is failed with the workflow's error (inside the
        transaction that ends the workflow; the compensation has already run)."""
        from hivemind.workflows.models import WorkflowState

        if workflow.state == WorkflowState.SUCCEEDED:
            return
        backup = Backup.objects.select_for_update().filter(pk=workflow.params["backup"]).first()
        if backup is None:
            return
        now = timezone.now()
        for entry in backup.volumes:
            entry["state"] = "undone" if entry.get("state") == "done" else "failed"
        Backup.objects.filter(pk=backup.pk).update(
            status=Backup.Status.FAILED, error=(workflow.error or workflow.state)[:4000], finished_at=now,
            volumes=backup.volumes,
        )  # fmt: skip
        if backup.policy_id is not None:
            from backups.models import BackupPolicy

            BackupPolicy.objects.filter(pk=backup.policy_id).update(last_failure_at=now)


# --- control: the configuration document ---------------------------------------------------------


@step("backups.state", max_attempts=3, timeout=600, backoff=5.0, transient=TRANSIENT)
def write_state(ctx):
    from backups import state

    backup = _backup(ctx)
    if backup.status != Backup.Status.RUNNING:  # the first attempt, or the workflow retried
        for entry in backup.volumes:
            entry.update(state="pending", snapshot="", files=0, size=0, bytes_read=0, bytes_new=0)
        backup.status, backup.started_at, backup.finished_at, backup.error = (
            Backup.Status.RUNNING, timezone.now(), None, "",
        )  # fmt: skip
        backup.state_snapshot = ""
        backup.save(update_fields=["status", "started_at", "finished_at", "error", "volumes", "state_snapshot"])
    repository = _open(backup, create=True)
    if backup.repository_id != repository.id:
        backup.repository_id = repository.id
        backup.save(update_fields=["repository_id"])
    if backup.state_snapshot:
        return {"repository": repository.id, "snapshot": backup.state_snapshot, "adopted": True}
    adopted = _written_by(repository, backup.pk, kind="state") if ctx.attempt > 1 else []
    if adopted:
        snapshot, size, new = adopted[0].id, 0, 0
    else:
        # Scope apps or volumes: the document still describes the whole tenant; a restore
        # picks what it brings back from it.
        data = state.dumps(state.tenant_state(backup.tenant))
        meta = {"backup": backup.pk, "kind": "state", "tenant": backup.tenant.slug, "scope": backup.scope,
                "names": backup.names}  # fmt: skip
        result = repository.backup_blob("state", data, meta=meta)
        snapshot, size, new = result.id, len(data), result.bytes_new_stored
    Backup.objects.filter(pk=backup.pk).update(state_snapshot=snapshot)
    return {"repository": repository.id, "snapshot": snapshot, "bytes_read": size, "bytes_new": new}


@write_state.compensate
def forget_written(ctx):
    """Forget every repository snapshot this run wrote: recorded, or found by its metadata."""
    backup = Backup.objects.select_related("location__tenant").filter(pk=ctx.params["backup"]).first()
    if backup is None or not backup.repository_id:
        return {"forgotten": []}  # the repository was never opened: nothing was written
    repository = _open(backup)
    ids = [*snapshot_ids(backup), *(info.id for info in _written_by(repository, backup.pk))]
    forgotten = forget_present(repository, ids)
    with transaction.atomic():  # what is forgotten is no longer the backup's: deleting it later needs no store
        backup = Backup.objects.select_for_update().get(pk=backup.pk)
        for entry in backup.volumes:
            entry["snapshot"] = ""
        Backup.objects.filter(pk=backup.pk).update(state_snapshot="", volumes=backup.volumes)
    return {"forgotten": forgotten}


# --- node: each volume's data --------------------------------------------------------------------


def _tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (what the volume holds, read or not)."""
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _parent(backup: Backup, repository_id: str, volume_id: int) -> str | None:
    """The newest snapshot of this volume in this repository from an earlier run: files it
    recorded unchanged are not read again."""
    earlier = (
        Backup.objects.filter(
            location_id=backup.location_id, repository_id=repository_id, status=Backup.Status.SUCCEEDED
        )
        .exclude(pk=backup.pk)
        .order_by("-created_at", "-pk")
        .values_list("volumes", flat=True)[:20]
    )
    for volumes in earlier:
        for entry in volumes or []:
            if entry.get("volume") == volume_id and entry.get("snapshot"):
                return entry["snapshot"]
    return None


def _progress(backup_id: int, volume_id: int):
    last = [time.monotonic()]

    def report(_path: str, bytes_read: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            _update_entry(backup_id, volume_id, bytes_read=bytes_read)

    return report


def _back_up_volume(ctx, backup: Backup, repository, volume, entry: dict) -> dict:
    from storage.steps import provider_of

    provider = provider_of(volume.pool)
    name = provider_snapshot_name(backup.pk)
    adopted = _written_by(repository, backup.pk, kind="volume", volume_id=volume.pk) if ctx.attempt > 1 else []
    if adopted:
        stats = adopted[0].stats
        provider.delete_snapshot(volume.handle, name)
        return {"state": "done", "snapshot": adopted[0].id, "files": stats.get("files", 0),
                "bytes_read": stats.get("bytes_read", 0), "bytes_new": stats.get("bytes_new_stored", 0)}  # fmt: skip
    _update_entry(backup.pk, volume.pk, state="running", bytes_read=0)
    provider.snapshot(volume.handle, name)  # read-only, consistent; the same one on a retry
    meta = {"backup": backup.pk, "kind": "volume", "tenant": backup.tenant.slug, "volume": volume.name,
            "volume_id": volume.pk, "encrypted": volume.encrypted}  # fmt: skip
    parent = _parent(backup, repository.id, volume.pk)
    progress = _progress(backup.pk, volume.pk)
    # Its files as a directory on this node (a block provider's snapshot is mounted for the read).
    with provider.snapshot_files(volume.handle, name) as source:
        try:
            result = repository.backup_tree(source, meta=meta, parent=parent, progress=progress)
        except RepositoryError as exc:
            if parent is None or "no snapshot" not in str(exc):
                raise
            result = repository.backup_tree(source, meta=meta, progress=progress)  # the parent was forgotten
        size = _tree_size(source)
    provider.delete_snapshot(volume.handle, name)
    ctx.log.info("volume %s: %d files, %d bytes read, %d new bytes stored in %.1f s", volume.name, result.files,
                 result.bytes_read, result.bytes_new_stored, result.seconds)  # fmt: skip
    return {"state": "done", "snapshot": result.id, "files": result.files, "size": size,
            "bytes_read": result.bytes_read, "bytes_new": result.bytes_new_stored,
            "seconds": round(result.seconds, 3), "skipped": result.skipped[:20]}  # fmt: skip


@step("backups.volumes", max_attempts=3, backoff=10.0, transient=TRANSIENT)
def back_up_volumes(ctx):
    from storage.models import Volume

    backup = _backup(ctx)
    repository = _open(backup)
    wanted = ctx.step.params["volumes"]
    volumes = {v.pk: v for v in Volume.objects.select_related("pool__node").filter(pk__in=wanted)}
    gone = [str(pk) for pk in wanted if pk not in volumes]
    if gone:
        raise RepositoryError(f"volumes {', '.join(gone)} no longer exist: they cannot be backed up")
    done = []
    for volume_id in wanted:
        entry = next(e for e in backup.volumes if e["volume"] == volume_id)
        if entry.get("state") == "done" and entry.get("snapshot"):
            done.append(entry)  # an earlier attempt finished this one
            continue
        fields = _back_up_volume(ctx, backup, repository, volumes[volume_id], entry)
        _update_entry(backup.pk, volume_id, **fields)
        done.append({**entry, **fields})
    keys = ("name", "snapshot", "files", "bytes_read", "bytes_new")
    return {"node": ctx.step.params["node"], "volumes": [{k: e.get(k) for k in keys} for e in done]}


@back_up_volumes.compensate
def delete_provider_snapshots(ctx):
    """The provider snapshots this run took on this node go (the repository's are forgotten
    by the compensation of backups.state, which runs after this one)."""
    from storage.models import Volume
    from storage.steps import provider_of

    name = provider_snapshot_name(ctx.params["backup"])
    deleted = []
    for volume in Volume.objects.select_related("pool").filter(pk__in=ctx.step.params["volumes"]):
        provider_of(volume.pool).delete_snapshot(volume.handle, name)
        deleted.append(volume.name)
    return {"deleted": deleted}


# --- control: the manifest and retention ---------------------------------------------------------


@step("backups.manifest", max_attempts=3)
def manifest(ctx):
    backup = _backup(ctx)
    missing = [e["name"] for e in backup.volumes if e.get("state") != "done" or not e.get("snapshot")]
    if missing:
        raise RepositoryError(f"volumes {', '.join(missing)} were not backed up")
    state = ctx.output_of("backups.state") or {}
    now = timezone.now()
    backup.files = sum(e.get("files", 0) for e in backup.volumes)
    backup.bytes_read = sum(e.get("bytes_read", 0) for e in backup.volumes) + state.get("bytes_read", 0)
    backup.bytes_new = sum(e.get("bytes_new", 0) for e in backup.volumes) + state.get("bytes_new", 0)
    backup.status, backup.finished_at, backup.error = Backup.Status.SUCCEEDED, now, ""
    with transaction.atomic():
        backup.save(update_fields=["files", "bytes_read", "bytes_new", "status", "finished_at", "error"])
        if backup.policy_id is not None:
            from backups.models import BackupPolicy

            BackupPolicy.objects.filter(pk=backup.policy_id).update(last_success_at=now)
    return {"volumes": len(backup.volumes), "files": backup.files, "bytes_read": backup.bytes_read,
            "bytes_new": backup.bytes_new}  # fmt: skip


def retention_hook():
    """backups.policies.apply_retention when that module provides it, else None."""
    try:
        from backups import policies
    except ImportError:
        return None
    return getattr(policies, "apply_retention", None)


@step("backups.retention", max_attempts=1, timeout=1800)
def retention(ctx):
    """Apply the policy's retention after its run. A failure is logged and kept in this step's
    output: the backup just made is good, and is never undone for it."""
    backup = _backup(ctx)
    apply = retention_hook()
    if backup.policy is None or apply is None:
        return {"retention": "not applied", "why": "no policy" if backup.policy is None else "not available"}
    try:
        result = apply(backup.policy)
    except Exception as exc:
        ctx.log.warning("retention of policy %s failed: %s", backup.policy.name, exc)
        return {"retention": "failed", "error": f"{type(exc).__name__}: {exc}"[:1000]}
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = str(result)[:1000]
    return {"retention": "applied", "result": result}
