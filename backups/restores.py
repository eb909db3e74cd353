"""Restores: a backup (or part of one) put back into a tenant, its own or another.

`restore_start` checks what is asked, computes the plan (backups.state.plan over the backup's
configuration document, narrowed to the selection, plus one action per volume whose data
comes back, or per path of a file restore) and either stores it (a dry run: nothing written,
no workflow) or starts the `backup.restore` workflow (backups/restore_steps.py), which computes
the plan again, applies it through the services (backups/apply.py), restores the volumes'
data and files on their nodes, and records the outcome on the Restore.

What this version restores of a configuration document: notifiers (without their secrets),
networks, network policies, volumes (definition and data), apps (their current spec), alert
rules and backup policies (into a location of the same name); and, restoring a whole backup
into its own tenant, the tenant's settings, quota, members (a user the platform lacks is made
without a password, by platform staff), service accounts and silences, each as the caller's role allows
(`_tenant_part`); service accounts come back without their tokens (secrets the document
does not hold). An
encrypted volume's backup is its ciphertext: it is restored into its own tenant only, while
the backed-up volume's data key is there (the new volume gets that key under its own id, as
a clone does); otherwise the plan refuses it with a 400 naming the volume.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path, PurePosixPath

from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import NotFound, ValidationError

from backups.models import Backup, Restore
from hivemind.core.names import is_dns_label
from tenants.services import audit_record, tenant_require_active

MAX_PATHS = 100
MAX_PATH = 4096
MAX_NAMES = 100
# The kinds of a configuration document this version restores, in the order they are applied.
APPLIED = ("notifier", "network", "network_policy", "volume", "app", "alert_rule", "backup_policy")
# What a whole backup brings back into its own tenant besides (never into another tenant: its
# members and quota are that tenant's), as the caller's role allows.
TENANT_PART = ("tenant", "quota", "member", "service_account", "silence")
SECTIONS = {"notifier": "notifiers", "network": "networks", "network_policy": "network_policies",
            "volume": "volumes", "app": "apps", "alert_rule": "alert_rules",
            "backup_policy": "backup_policies"}  # fmt: skip
SELECTION_KEYS = ("state", "apps", "volumes", "files")
FILES_KEYS = ("volume", "paths", "into_volume", "into_path")


# --- what is asked ---------------------------------------------------------------------------------


def _names(value, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ValidationError({field: "expected a list of names"})
    if not value or len(value) > MAX_NAMES:
        raise ValidationError({field: f"expected 1 to {MAX_NAMES} names, got {len(value)}"})
    bad = [n for n in value if not is_dns_label(n)]
    if bad:
        raise ValidationError({field: f"{bad[0][:70]!r} is not a name"})
    return sorted(set(value))


def clean_path(value, field: str) -> str:
    """An absolute path inside a volume, normalised ("/a/b"); no "..", no NUL."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError({field: f"expected an absolute path in the volume, got {str(value)[:70]!r}"})
    if len(value) > MAX_PATH or "\x00" in value:
        raise ValidationError({field: f"expected a path of at most {MAX_PATH} characters without NUL"})
    parts = [p for p in PurePosixPath(value).parts if p not in ("/", ".")]
    if ".." in parts:
        raise ValidationError({field: f"{value[:70]!r} may not contain '..'"})
    return "/" + "/".join(parts)


def check_selection(selection) -> dict:
    """The selection in its normal form: {"state": true} (the whole configuration and every
    volume's data), {"apps": [...], "volumes": [...]} (those apps with the networks and volumes
    they use; those volumes), or {"files": {volume, paths, into_volume, into_path}}."""
    if selection is None or selection == {}:
        return {"state": True}
    if not isinstance(selection, dict):
        raise ValidationError({"selection": 'expected an object, e.g. {"apps": ["web"]} or {"files": {...}}'})
    unknown = sorted(set(selection) - set(SELECTION_KEYS))
    if unknown:
        raise ValidationError({f"selection.{unknown[0][:40]}": f"unknown; expected {', '.join(SELECTION_KEYS)}"})
    if "files" in selection:
        if len(selection) > 1:
            raise ValidationError({"selection.files": "a file restore restores files only: name nothing else"})
        return {"files": _check_files(selection["files"])}
    if "state" in selection:
        if selection["state"] is not True or len(selection) > 1:
            raise ValidationError({"selection.state": "true alone (everything), or name apps and volumes instead"})
        return {"state": True}
    clean = {}
    for key in ("apps", "volumes"):
        if key in selection:
            clean[key] = _names(selection[key], f"selection.{key}")
    return clean


def _check_files(files) -> dict:
    if not isinstance(files, dict):
        raise ValidationError({"selection.files": "expected {volume, paths, into_volume, into_path}"})
    unknown = sorted(set(files) - set(FILES_KEYS))
    if unknown:
        raise ValidationError({f"selection.files.{unknown[0][:40]}": f"unknown; expected {', '.join(FILES_KEYS)}"})
    volume = files.get("volume")
    if not isinstance(volume, str) or not is_dns_label(volume):
        raise ValidationError({"selection.files.volume": "required: the name of a volume in the backup"})
    paths = files.get("paths")
    if not isinstance(paths, list) or not 0 < len(paths) <= MAX_PATHS:
        raise ValidationError({"selection.files.paths": f"expected 1 to {MAX_PATHS} paths in the volume"})
    clean_paths = [clean_path(p, f"selection.files.paths[{i}]") for i, p in enumerate(paths)]
    if "/" in clean_paths:
        raise ValidationError({"selection.files.paths": "name files or directories, not the volume's root"})
    into_volume = files.get("into_volume") or volume
    if not isinstance(into_volume, str) or not is_dns_label(into_volume):
        raise ValidationError({"selection.files.into_volume": "expected the name of a volume of the tenant"})
    into_path = clean_path(files.get("into_path") or "/restored", "selection.files.into_path")
    return {"volume": volume, "paths": sorted(set(clean_paths)), "into_volume": into_volume, "into_path": into_path}


# --- the backup and its document -------------------------------------------------------------------


def backup_at(tenant, at: datetime) -> Backup:
    """The newest succeeded backup of `tenant` taken before `at` (point in time)."""
    found = (
        Backup.objects.filter(tenant=tenant, status=Backup.Status.SUCCEEDED, started_at__lte=at)
        .select_related("location__tenant", "tenant")
        .order_by("-started_at", "-pk")
        .first()
    )
    if found is None:
        raise ValidationError({"at": f"tenant {tenant.slug} has no succeeded backup taken before {at.isoformat()}"})
    return found


def load_document(backup: Backup) -> dict:
    from backups import keys, state

    if not backup.state_snapshot:
        raise ValidationError({"backup": f"backup {backup.pk} holds no configuration document"})
    repository = keys.open_for(backup.location, tenant=backup.tenant)
    return state.load(repository.read_blob(backup.state_snapshot))


def _volume_entries(backup: Backup) -> dict[str, dict]:
    return {entry["name"]: entry for entry in backup.volumes or [] if entry.get("snapshot")}


def _wanted(document: dict, selection: dict) -> dict[str, set[str]] | None:
    """The source names to restore by section; None: everything."""
    if selection.get("state"):
        return None
    wanted = {section: set() for section in SECTIONS.values()}
    apps = {app["name"]: app for app in document["apps"]}
    volumes = {volume["name"] for volume in document["volumes"]}
    for name in selection.get("apps", []):
        if name not in apps:
            raise ValidationError({"selection.apps": f"the backup has no app named {name}"})
        wanted["apps"].add(name)
        spec = apps[name]["spec"] or {}
        wanted["networks"].update(spec.get("networks") or [])
        wanted["volumes"].update(m["volume"] for m in spec.get("volumes") or [])
        wanted["volumes"].update(v["name"] for v in document["volumes"] if v["labels"].get("app") == name
                                 and v["labels"].get("template"))  # fmt: skip
    for name in selection.get("volumes", []):
        if name not in volumes:
            raise ValidationError({"selection.volumes": f"the backup has no volume named {name}"})
        wanted["volumes"].add(name)
    return wanted


def document_at(backup: Backup, at: datetime | None) -> tuple[dict, dict[str, str]]:
    """The backup's document, brought to `at` by the app journal when asked (backups/journal.py),
    and the instant each part of it is restored to."""
    from backups import journal

    document = load_document(backup)
    if at is None:
        return document, {}
    try:
        return journal.state_at(document, backup.tenant, at)
    except ValueError as exc:
        raise ValidationError({"at": str(exc)}) from None


def compute_plan(
    *, backup: Backup, into_tenant, selection: dict, rename, conflicts: str, at: datetime | None = None, actor=None
) -> list:
    """What the restore does, one action per object (backups/state/plan.py's shape), then one
    per volume whose data comes back (kind volume_data) or per path (kind file). Reads only.
    `actor` (None: the system) decides what of the tenant part it may do (`_tenant_part`)."""
    from backups import state

    if "files" in selection:
        return _file_plan(backup, into_tenant, selection["files"])
    document, _instants = document_at(backup, at)
    try:
        actions = state.plan(document, into_tenant=into_tenant, rename=rename or None, conflicts=conflicts)
    except state.StateError as exc:
        raise ValidationError({exc.path or "backup": exc.message}) from None
    wanted = _wanted(document, selection)
    entries = _volume_entries(backup)
    encrypted = {v["name"]: v["encrypted"] for v in document["volumes"]}
    same_tenant = into_tenant.pk == backup.tenant_id
    chosen, data, missing = [], [], set()
    authority = _Authority(actor, into_tenant)
    for action in actions:
        if action["kind"] in TENANT_PART:
            if wanted is None and same_tenant:
                chosen.append(_tenant_part(action, authority))
            continue
        if action["kind"] not in APPLIED:
            continue
        if wanted is not None and action["source"] not in wanted[SECTIONS[action["kind"]]]:
            continue
        if action["kind"] == "volume":
            action = _volume_action(action, entries, encrypted, same_tenant, data, backup.tenant)
        elif action["kind"] == "notifier":
            action = _notifier_action(action, missing)
        elif action["kind"] == "alert_rule":
            action = _rule_action(action, missing)
        elif action["kind"] == "backup_policy":
            action = _backup_policy_action(action, into_tenant)
        chosen.append(action)
    return chosen + data


class _Authority:
    """What `actor` may do to the tenant itself (None: the system, anything)."""

    def __init__(self, actor, tenant) -> None:
        from hivemind.core.scoping import is_platform_staff
        from tenants.models import ROLE_PERMISSIONS
        from tenants.selectors import role_of

        self.tenant = tenant
        self.staff = actor is None or is_platform_staff(actor)
        self.role = None if self.staff else role_of(user=actor, tenant=tenant)
        self.perms = set(ROLE_PERMISSIONS.get(self.role, ())) if self.role else set()

    def may(self, perm: str) -> bool:
        return self.staff or perm in self.perms


def _skip(action: dict, reason: str) -> dict:
    return {**action, "action": "skip", "reason": reason}


def _tenant_part(action: dict, authority: _Authority) -> dict:
    """The tenant's settings (admins), quota (platform staff), members (admins; the owner role
    by owners; a user the platform lacks made by staff, without a password) and silences."""
    from tenants.models import Role

    kind, verb = action["kind"], action["action"]
    if verb == "skip":
        return action
    if kind == "tenant" and not authority.may("change_tenant"):
        return _skip(action, "a tenant's settings are changed by its admins: left as they are")
    if kind == "quota":
        if action["object"] is None:
            return _skip(action, "the backup holds no quota")
        if not authority.staff:
            return _skip(action, "quotas are set by platform staff: left as it is")
    if kind == "member":
        return _member_part(action, authority, Role.OWNER)
    if kind == "service_account":
        if not authority.may("manage_members"):
            return _skip(action, "service accounts are made by the tenant's admins: not made")
        if verb == "replace":
            return _skip(action, f"{action['name']} exists: kept as it is, with its tokens")
        return {**action, "warnings": [*action["warnings"], "its API tokens are not in the backup: make new ones "
                                                            "(POST /api/v1/tokens/)"]}  # fmt: skip
    if kind == "silence" and datetime.fromisoformat(action["object"]["ends_at"]) <= timezone.now():
        return _skip(action, "it has ended since the backup")
    return action


def _member_part(action: dict, authority: _Authority, owner: str) -> dict:
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    username, role = action["name"], action["object"]["role"]
    if not authority.may("manage_members"):
        return _skip(action, "members are managed by the tenant's admins: not added")
    current = Membership.objects.filter(tenant=authority.tenant, user__username=username).first()
    roles = {role, current.role if current else None}
    if owner in roles and not (authority.staff or authority.role == owner):
        return _skip(action, "only an owner gives or takes away the owner role: left to one")
    others = Membership.objects.filter(tenant=authority.tenant, role=owner).exclude(pk=getattr(current, "pk", None))
    if current is not None and current.role == owner != role and not others.exists():
        return _skip(action, f"{username} is the tenant's last owner: left an owner")
    if not get_user_model().objects.filter(username=username).exists():
        if not authority.staff:
            return _skip(action, f"no user named {username} on this platform: platform staff make users")
        warning = (f"user {username} is made without a password: it cannot sign in until one is set "
                   f"(hivemind user passwd {username})")  # fmt: skip
        return {**action, "warnings": [*action["warnings"], warning]}
    return action


def _notifier_action(action: dict, missing: set[str]) -> dict:
    """A notifier comes back without its secrets; one its kind cannot work without (a Slack
    webhook's URL) is not made: the plan says which secrets to enter, and its rules do without."""
    from rest_framework.exceptions import ValidationError as Refused

    from notifiers import registry

    if action["action"] != "create":
        return action
    obj = action["object"]
    try:
        registry.clean(obj["kind"], obj["config"], {})
    except Refused as exc:
        missing.add(action["name"])
        needed = ", ".join(sorted((exc.detail.get("secrets") or {}) if isinstance(exc.detail, dict) else {}))
        return {**action, "action": "skip",
                "reason": f"it cannot work without its secrets ({needed or ', '.join(obj['secrets_to_reenter'])}): "
                          f"make it with them (hivemind notifier create)"}  # fmt: skip
    return action


def _rule_action(action: dict, missing: set[str]) -> dict:
    if action["action"] == "skip":
        return action
    if action["object"]["platform"]:
        return {**action, "action": "skip", "reason": "a platform rule: platform staff make those"}
    gone = [n for n in action["object"]["notifiers"] if n in missing]
    if not gone:
        return action
    obj = {**action["object"], "notifiers": [n for n in action["object"]["notifiers"] if n not in missing]}
    warning = f"without notifier(s) {', '.join(gone)}, not restored: add them to it once made"
    return {**action, "object": obj, "warnings": [*action["warnings"], warning]}


def _backup_policy_action(action: dict, tenant) -> dict:
    """A policy backs up into one of the tenant's locations, by name: one the tenant lacks must be
    added first (its credentials are not in the document)."""
    location = action["object"]["location"]
    if action["action"] == "skip":
        return action
    from backups.models import BackupLocation

    if not BackupLocation.objects.filter(tenant=tenant, name=location).exists():
        return _skip(action, f"tenant {tenant.slug} has no backup location named {location}: add it "
                             f"(hivemind backup location add {location} ...) and restore again")  # fmt: skip
    return action


def _original_key(entry: dict, source: str, same_tenant: bool, tenant) -> int:
    """The id of the backed-up volume whose data key opens an encrypted volume's backup (its
    ciphertext): the restored volume gets that key under its own id, as a clone does."""
    from tenants import keys

    if not same_tenant:
        raise ValidationError(
            {"selection": f"volume {source} is encrypted: its data cannot be restored into another tenant (its "
             "ciphertext opens only with a data key of this tenant's); restore it into its own tenant"}
        )  # fmt: skip
    original = entry.get("volume_id") or entry.get("volume")
    if not original or not keys.has_data_key(tenant=tenant, purpose="volume", object_id=original):
        raise ValidationError(
            {"selection": f"volume {source} is encrypted and its data key went with the volume when it was deleted: "
             "its backup cannot be opened any more"}
        )  # fmt: skip
    return int(original)


def _volume_action(
    action: dict, entries: dict, encrypted: dict, same_tenant: bool, data: list, backup_tenant=None
) -> dict:
    source, name = action["source"], action["name"]
    if action["action"] == "replace":
        # A volume is never replaced: its data may be in use by a running app.
        return {**action, "action": "skip",
                "reason": f"{name} exists in the tenant: a volume is not replaced (its data may be in use); "
                          "restore it under another name (conflicts rename) or restore files into it"}  # fmt: skip
    entry = entries.get(source)
    if action["action"] != "create":
        return action
    if entry is None:
        return {**action, "warnings": [*action["warnings"], "the backup holds no data of it: created empty"]}
    if encrypted.get(source):
        action = {**action, "key_from": _original_key(entry, source, same_tenant, backup_tenant)}
    data.append({"action": "restore", "kind": "volume_data", "name": name, "source": source,
                 "reason": f"its data from snapshot {entry['snapshot']}", "warnings": [],
                 "object": {"volume": name, "snapshot": entry["snapshot"], "size": entry.get("size", 0),
                            "files": entry.get("files", 0)}})  # fmt: skip
    return action


def _file_plan(backup: Backup, into_tenant, files: dict) -> list:
    from storage.models import Volume

    entry = _volume_entries(backup).get(files["volume"])
    if entry is None:
        volume = files["volume"]
        raise ValidationError({"selection.files.volume": f"backup {backup.pk} holds no data of volume {volume}"})
    if entry.get("encrypted"):
        raise ValidationError({"selection.files.volume": f"volume {files['volume']} is encrypted: its backup holds "
                               "ciphertext, single files cannot be taken from it"})  # fmt: skip
    target = Volume.objects.filter(tenant=into_tenant, name=files["into_volume"]).first()
    if target is None:
        raise ValidationError(
            {"selection.files.into_volume": f"tenant {into_tenant.slug} has no volume {files['into_volume']}"}
        )
    if target.encrypted:
        raise ValidationError({"selection.files.into_volume": f"volume {target.name} is encrypted: files are "
                               "restored into plain volumes only"})  # fmt: skip
    if target.status not in ("ready", "busy"):
        raise ValidationError({"selection.files.into_volume": f"volume {target.name} is {target.status}"})
    actions = []
    for path in files["paths"]:
        final = files["into_path"].rstrip("/") + path
        obj = {"volume": target.name, "path": final, "snapshot": entry["snapshot"]}
        actions.append({"action": "restore", "kind": "file", "name": f"{target.name}:{final}",
                        "source": f"{files['volume']}:{path}", "reason": f"from snapshot {entry['snapshot']}",
                        "warnings": [], "object": obj})  # fmt: skip
    return actions


def _check_conflicts(conflicts) -> str:
    if conflicts not in Restore.Conflicts.values:
        raise ValidationError({"conflicts": f"expected one of {', '.join(Restore.Conflicts.values)}"})
    return conflicts


def _check_rename(rename) -> dict:
    if rename is None:
        return {}
    if not isinstance(rename, dict):
        raise ValidationError({"rename": 'expected {kind: {old name: new name}}, e.g. {"apps": {"web": "web2"}}'})
    return rename


# --- starting one --------------------------------------------------------------------------------


def visible_backup(user, pk) -> Backup:
    """The backup `pk` if `user` may see it (404 otherwise, whoever's it is)."""
    found = Backup.objects.restrict(user, "view").select_related("location__tenant", "tenant").filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no backup {str(pk)[:20]}")
    return found


def restore_start(
    *, backup: Backup, into_tenant, selection=None, rename=None, conflicts: str = "skip", dry_run: bool = False,
    at: datetime | None = None, actor,
) -> Restore:  # fmt: skip
    """Plan a restore of `backup` into `into_tenant`: a dry run stores the plan and ends; a real
    one starts the `backup.restore` workflow. With `at`, the newest succeeded backup of the
    backup's tenant taken before then is restored instead (its instant per part in result.at)."""
    from hivemind.workflows import engine

    selection = check_selection(selection)
    conflicts = _check_conflicts(conflicts)
    rename = _check_rename(rename)
    if not isinstance(dry_run, bool):
        raise ValidationError({"dry_run": "expected true or false"})
    if at is not None:
        backup = backup_at(backup.tenant, at)
    if backup.status != Backup.Status.SUCCEEDED:
        raise ValidationError({"backup": f"backup {backup.pk} is {backup.status}: only a succeeded one restores"})
    tenant_require_active(into_tenant)
    plan = compute_plan(backup=backup, into_tenant=into_tenant, selection=selection, rename=rename,
                        conflicts=conflicts, at=at, actor=actor)  # fmt: skip
    result = {}
    if at is not None:
        # Volumes' data and files: as the backup's run read them; the configuration: per part,
        # as the journal brings it (apps to `at`, the rest to the document's time).
        when = (backup.started_at or backup.created_at).isoformat()
        instants = document_at(backup, at)[1] if "files" not in selection else {}
        parts = {a["source"]: when for a in plan if a["kind"] in ("volume_data", "file")}
        result["at"] = {"asked": at.isoformat(), "backup": backup.pk, "state": instants, "volumes": parts}
    with transaction.atomic():
        restore = Restore.objects.create(
            tenant=into_tenant, backup=backup, selection=selection, rename=rename, conflicts=conflicts,
            dry_run=dry_run, at=at, plan=plan, result=result,
            status=Restore.Status.SUCCEEDED if dry_run else Restore.Status.PENDING,
            finished_at=timezone.now() if dry_run else None,
        )  # fmt: skip
        if not dry_run:
            restore.workflow = engine.workflow_create(
                kind="backup.restore", tenant=into_tenant, params={"restore": restore.pk}, actor=actor
            )
            restore.save(update_fields=["workflow"])
        audit_record(actor=actor, tenant=into_tenant, action="backup.restore", obj=restore,
                     changes={"backup": backup.pk, "dry_run": dry_run, "actions": len(plan)})  # fmt: skip
    return restore


# --- files, on the node holding the volume --------------------------------------------------------


def restore_files(repository, snapshot: str, paths: list[str], root: Path, into_path: str) -> dict:
    """Restore `paths` of a volume snapshot under `root`/`into_path` (root: the volume's
    directory on this node). Everything is restored first into a hidden directory beside
    the target (the repository checks every chunk before writing it); only when all is
    restored is it moved into place, so a damaged chunk leaves nothing at the final names.
    What exists at a final name is replaced."""
    root = Path(root)
    into = root / into_path.lstrip("/")
    staging = root / f".hivemind-restore-{secrets.token_hex(6)}"
    try:
        result = repository.restore(snapshot, staging, paths=[p.lstrip("/") for p in paths])
        into.mkdir(parents=True, exist_ok=True)
        for path in paths:
            relative = path.lstrip("/")
            source, final = staging / relative, into / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(source, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"files": result.files, "dirs": result.dirs, "bytes": result.bytes_written}
