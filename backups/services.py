"""Backup locations: services write (HackSoft), the API and the CLI call these.

A location's settings are checked by its kind (backups/stores/registry.py) where they enter;
its credentials are sealed (backups/sealing.py) and only their names are ever shown. A tenant's
`local` locations live under HIVEMIND_BACKUP_DIR/<tenant>/ (the platform's disk is not the
tenant's to name): a path elsewhere is refused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from backups import endpoints, sealing
from backups.models import BackupLocation
from backups.stores import Store, StoreError
from backups.stores.registry import StoreConfigError, open_store, validate
from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from tenants.keys import KeyUnavailable
from tenants.services import audit_record

log = logging.getLogger(__name__)
# The credential names of every kind: a problem with one is reported under "secrets".
LOCAL_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAX_LOCAL_PATH = 255
SECRET_NAMES = {"access_key_id", "secret_access_key", "account_key", "sas_token", "service_account_json"}
PLATFORM_DIR = "_platform"
# In a platform location, each tenant's repository is under this prefix (and its slug).
TENANTS_PREFIX = "tenants"


def _check_name(name) -> str:
    if not isinstance(name, str) or not is_dns_label(name):
        raise ValidationError({"name": f"expected {DNS_LABEL_RULE}, got {str(name)[:70]!r}"})
    return name


def tenant_backup_dir(tenant) -> Path:
    """Where the tenant's `local` locations may be: HIVEMIND_BACKUP_DIR/<tenant slug>; the
    platform's (tenant None): HIVEMIND_BACKUP_DIR/_platform (no slug starts with "_")."""
    return Path(settings.BACKUP_DIR) / (tenant.slug if tenant is not None else PLATFORM_DIR)


def _owner(tenant) -> str:
    return f"tenant {tenant.slug}" if tenant is not None else "the platform"


def _local_path(tenant, path) -> str:
    """A local location's directory: a relative path (segments of letters, digits, '.', '_', '-',
    none starting with '.') under the tenant's backup directory, given relative or in full."""
    root = tenant_backup_dir(tenant)
    if not isinstance(path, str) or not path:
        raise ValidationError({"config": {"path": ["a local location needs a directory (relative to the tenant's)"]}})
    relative = path[len(f"{root}/") :] if path.startswith(f"{root}/") else path
    if len(relative) > MAX_LOCAL_PATH or not LOCAL_PATH.fullmatch(relative):
        why = (f"a local location of {_owner(tenant)} is a directory under {root}/: a relative path of at most "
               f"{MAX_LOCAL_PATH} characters, segments of letters, digits, '.', '_' and '-' not starting with '.'; "
               f"got {path[:80]!r}")  # fmt: skip
        raise ValidationError({"config": {"path": [why]}})
    return str(root / relative)


def _clean(tenant, kind: str, config, secrets) -> tuple[dict, dict]:
    """The settings checked by the kind, as a 400 naming the field."""
    if kind == BackupLocation.Kind.LOCAL and isinstance(config, dict) and "path" in config:
        config = {**config, "path": _local_path(tenant, config["path"])}
    try:
        config, secrets = validate(kind, config, secrets)
        if tenant is not None:  # a tenant's endpoint reaches only what the platform allows
            endpoints.check(kind, config)
        return config, secrets
    except endpoints.EndpointRefused as exc:
        raise ValidationError({"config": {exc.field: [str(exc)]}}) from None
    except StoreConfigError as exc:
        if exc.field in ("config", "secrets", "kind"):
            raise ValidationError({exc.field: [exc.message]}) from None
        secret = exc.field in SECRET_NAMES or (isinstance(secrets, dict) and exc.field in secrets)
        raise ValidationError({"secrets" if secret else "config": {exc.field: [exc.message]}}) from None


def _store_secrets(location: BackupLocation, secrets: dict) -> None:
    location.sealed_secrets = sealing.seal(location, secrets)
    location.secret_names = sorted(secrets)


def _taken(tenant, name) -> Conflict:
    if tenant is None:
        return Conflict(f"a platform backup location named {name} exists", code="backup_location_exists")
    return Conflict(f"a backup location named {name} exists in tenant {tenant.slug}", code="backup_location_exists")


@transaction.atomic
def location_create(
    *, tenant, name: str, kind: str, config: dict, secrets: dict | None = None, actor
) -> BackupLocation:
    """A location with its settings checked by its kind and its credentials sealed. Not checked
    against its server here: `location_check` does that (a location may be made before its bucket).
    `tenant` None makes a platform location (platform staff's: the API lets only them)."""
    name = _check_name(name)
    config, secrets = _clean(tenant, kind, config if config is not None else {}, secrets or {})
    try:
        with transaction.atomic():
            location = BackupLocation.objects.create(tenant=tenant, name=name, kind=kind, config=config)
    except IntegrityError:
        raise _taken(tenant, name) from None
    _store_secrets(location, secrets)
    location.save(update_fields=["sealed_secrets", "secret_names"])
    audit_record(actor=actor, tenant=tenant, action="backup_location.create", obj=location,
                 changes={"kind": kind, "config": config, "secrets_set": location.secret_names})  # fmt: skip
    return location


@transaction.atomic
def location_update(
    *, location: BackupLocation, actor, name: str | None = None, config: dict | None = None,
    secrets: dict | None = None,
) -> BackupLocation:  # fmt: skip
    """Change settings: `config` and `secrets` are merged onto what is set (a null value unsets
    one), then the whole is checked by the kind again. The kind never changes; a change of
    settings makes the last check's result unknown again."""
    location = BackupLocation.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=location.pk)
    changes: dict = {}
    if name is not None and name != location.name:
        changes["name"] = [location.name, _check_name(name)]
        location.name = name
    if config is not None or secrets is not None:
        for where, given in (("config", config), ("secrets", secrets)):
            if given is not None and not isinstance(given, dict):
                raise ValidationError({where: "expected an object of settings"})
        merged_config = {k: v for k, v in {**location.config, **(config or {})}.items() if v is not None}
        if secrets is None:  # unchanged credentials are not opened: check the config against their names
            merged_secrets = dict.fromkeys(location.secret_names, "x" * 40)
        else:
            try:
                old = sealing.unseal(location)
            except KeyUnavailable:  # damaged: what is sent now replaces them all
                old = {}
            merged_secrets = {k: v for k, v in {**old, **secrets}.items() if v is not None}
        new_config, new_secrets = _clean(location.tenant, location.kind, merged_config, merged_secrets)
        if new_config != location.config:
            changes["config"] = new_config
        location.config = new_config
        if secrets is not None:
            _store_secrets(location, new_secrets)
            changes["secrets_changed"] = sorted(secrets)
        location.check_state, location.check_error, location.checked_at = BackupLocation.Check.UNKNOWN, "", None
    try:
        with transaction.atomic():
            location.save()
    except IntegrityError:
        raise _taken(location.tenant, name) from None
    audit_record(actor=actor, tenant=location.tenant, action="backup_location.update", obj=location, changes=changes)
    return location


@transaction.atomic
def location_delete(*, location: BackupLocation, actor) -> None:
    """The location's row, its credentials and the records of its backups go; what it stores
    stays where it is. Refused while a policy backs up into it."""
    policies = sorted(f"{t}/{n}" if location.is_platform else n
                      for t, n in location.policies.values_list("tenant__slug", "name"))  # fmt: skip
    if policies:
        raise Conflict(f"backup location {location.name} is used by policies {', '.join(policies)}: "
                       "change or delete them first", code="backup_location_in_use")  # fmt: skip
    if location.is_platform:
        tenants = sorted(set(location.backups.values_list("tenant__slug", flat=True)))
        if tenants:  # their records would go with it: the tenants' to remove, not staff's
            raise Conflict(f"platform backup location {location.name} holds backups of tenants {', '.join(tenants)}: "
                           "they remove them first (hivemind backup rm)", code="backup_location_in_use")  # fmt: skip
    audit_record(actor=actor, tenant=location.tenant, action="backup_location.delete", obj=location)
    sealing.forget(location)
    location.delete()


def store_for(location: BackupLocation, tenant=None) -> Store:
    """The location's store, its credentials opened; Conflict when they do not open. For a
    platform location and a tenant: that tenant's part of it (tenants/<slug>/ under its path or
    prefix), where the tenant's repository is."""
    try:
        secrets = sealing.unseal(location)
    except KeyUnavailable as exc:
        raise Conflict(f"{exc}: set its credentials again", code="backup_location_secrets_unavailable") from None
    config = location.config
    if not location.is_platform:
        try:
            endpoints.check(location.kind, config)
        except endpoints.EndpointRefused as exc:
            raise StoreError(f"backup location {location.name}: {exc}") from None
    if location.is_platform and tenant is not None:
        part = f"{TENANTS_PREFIX}/{tenant.slug}"
        if location.kind == BackupLocation.Kind.LOCAL:
            config = {**config, "path": f"{config['path']}/{part}"}
        else:
            config = {**config, "prefix": "/".join(p for p in (config.get("prefix") or "", part) if p)}
    return open_store(location.kind, config, secrets)


def location_check(*, location: BackupLocation, actor) -> str:
    """Write, read back, list and delete a probe object at the location. Records the result on
    the row either way; returns what was proven, or raises StoreError with the server's answer."""
    store = store_for(location)
    try:
        if location.kind == BackupLocation.Kind.LOCAL:
            _make_directory(Path(location.config["path"]), store)
        store.check()
    except StoreError as exc:
        _record_check(location, BackupLocation.Check.FAILED, str(exc))
        audit_record(actor=actor, tenant=location.tenant, action="backup_location.check", obj=location,
                     changes={"ok": False})  # fmt: skip
        raise
    _record_check(location, BackupLocation.Check.OK, "")
    audit_record(actor=actor, tenant=location.tenant, action="backup_location.check", obj=location,
                 changes={"ok": True})  # fmt: skip
    return f"{store.describe()} is reachable and writable (a probe object written, read back, listed and deleted)"


def _make_directory(path: Path, store: Store) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{store.describe()}: cannot make the directory: {exc.strerror or exc}") from None


def _record_check(location: BackupLocation, state: str, error: str) -> None:
    location.check_state, location.check_error, location.checked_at = state, error[:2000], timezone.now()
    BackupLocation.objects.filter(pk=location.pk).update(
        check_state=state, check_error=location.check_error, checked_at=location.checked_at
    )
