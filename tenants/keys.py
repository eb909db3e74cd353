"""The platform's keys: one hierarchy for everything encrypted at rest (ARCHITECTURE, "Keys").

    master key   32 random bytes: HIVEMIND_MASTER_KEY, else <var dir>/master.key (mode 0600)
      wraps  a key-encryption key per tenant (TenantKey, versioned; rotation adds a version)
        wraps  a data key per encrypted object (WrappedKey: a volume's gocryptfs password, ...)

Wrapping is AES-256-GCM (`cryptography`) with a fresh 96-bit nonce and associated data that
names what the key belongs to (tenant and version; tenant, purpose and object), so a wrapped
key copied onto another tenant's or object's row does not open. Rotating a tenant's key
re-wraps its data keys in one transaction; the data keys, and so the data, stay as they are.

The master key file is made on first use only while no tenant key exists: once one does, a
missing, unreadable or different master key is an error (at start-up: `master_key_check`,
run by Django's system checks and by every Celery worker), never a reason to make a new one.

Raw keys live only in the memory of the caller that asked for them: this module never logs,
stores or returns them anywhere else, and the admin and the API show none of these rows.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from hivemind.config import MASTER_KEY_BYTES, ConfigError, parse_master_key
from tenants.models import Tenant, TenantKey, WrappedKey

VARIABLE = "HIVEMIND_MASTER_KEY"
KEY_BYTES = 32  # AES-256 keys all the way down
NONCE_BYTES = 12
PURPOSE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


class KeyUnavailable(RuntimeError):
    """A wrapped key did not open (another tenant's or object's, a different master key, or
    damaged): the message says which key, never its bytes."""


# --- wrapping ------------------------------------------------------------------------------------


def _seal(key: bytes, plaintext: bytes, associated: str) -> tuple[bytes, bytes]:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated.encode())


def _open(key: bytes, nonce, wrapped, associated: str, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(bytes(nonce), bytes(wrapped), associated.encode())
    except (InvalidTag, ValueError):
        raise KeyUnavailable(f"{what} does not open with the key meant to wrap it") from None


def _tenant_ad(tenant_id: int, version: int) -> str:
    return f"hivemind/tenant-key/{tenant_id}/{version}"


def _data_ad(tenant_id: int, purpose: str, object_id: str) -> str:
    return f"hivemind/data-key/{tenant_id}/{purpose}/{object_id}"


# --- the master key ------------------------------------------------------------------------------


def master_key_path() -> Path:
    return Path(settings.VAR_DIR) / "master.key"


def _from_env() -> bytes:
    return settings.CONFIG.master_key


def _read_file(path: Path) -> bytes | None:
    """The key in `path`, None when there is no file; ConfigError when it is unusable."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(VARIABLE, f"not set, and {path} cannot be read: {exc.strerror}") from None
    if info.st_mode & 0o077:
        raise ConfigError(
            VARIABLE, f"not set, and {path} can be read by others (mode {info.st_mode & 0o777:o}): chmod 600 it"
        )
    try:
        raw = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(VARIABLE, f"not set, and {path} cannot be read: {getattr(exc, 'strerror', exc)}") from None
    try:
        return parse_master_key(raw, str(path))
    except ValueError as exc:
        raise ConfigError(VARIABLE, f"not set, and {exc}; the file is left as it is") from None


def _generate(path: Path) -> bytes:
    """A new master key in `path` (0600, created exclusively: a process that loses the race
    reads the winner's)."""
    import base64

    key = secrets.token_bytes(MASTER_KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return master_key()
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


def _missing(path: Path, count: int) -> ConfigError:
    if not count:
        return ConfigError(VARIABLE, f"not set, and {path} does not exist yet (it is made with the first tenant key)")
    return ConfigError(
        VARIABLE,
        f"not set, and {path} does not exist, but the database holds {count} tenant key(s) wrapped by a master "
        f"key: restore that file (mode 0600) from a backup, or set {VARIABLE} to its contents. No new key is made: "
        "it could not open them, and every encrypted volume would stay locked",
    )


def master_key() -> bytes:
    """The master key (HIVEMIND_MASTER_KEY, else the var dir's file); ConfigError when there is none."""
    key = _from_env()
    if key:
        return key
    path = master_key_path()
    found = _read_file(path)
    if found is None:
        raise _missing(path, TenantKey.objects.filter(active=True).count())
    return found


def _master_key_for_new_tenant_key() -> bytes:
    """The master key, made now when there is none and nothing is wrapped by one yet."""
    key = _from_env()
    if key:
        return key
    path = master_key_path()
    found = _read_file(path)
    if found is not None:
        return found
    count = TenantKey.objects.filter(active=True).count()
    if count:
        raise _missing(path, count)
    return _generate(path)


def platform_key(purpose: str, object_id) -> bytes:
    """The key of a platform object (one no tenant owns: a platform backup location's
    credentials): derived from the master key with HKDF-SHA256, its info naming the purpose and
    the object, so nothing is stored and no two objects share one. It changes only with the
    master key (made now when there is none and nothing is wrapped by one yet)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = f"hivemind/platform/{purpose}/{object_id}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(_master_key_for_new_tenant_key())


def master_key_check() -> None:
    """Start-up: when tenant keys exist, the master key must be there and open them; raises
    ConfigError naming HIVEMIND_MASTER_KEY otherwise. Nothing is written (a SQLite database
    that does not exist yet is not made by asking it: `manage.py up --agent` refuses SQLite
    without leaving a file behind)."""
    from django.db import connection

    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        if name != ":memory:" and not name.startswith("file:") and not Path(name).exists():
            return
    try:
        sample = TenantKey.objects.filter(active=True).order_by("pk").first()
    except DatabaseError:  # not migrated yet, or no database: the start-up says so itself
        return
    if sample is None:
        if not _from_env():
            _read_file(master_key_path())  # a file that is there must be usable
        return
    key = master_key()
    try:
        _open(key, sample.nonce, sample.wrapped, _tenant_ad(sample.tenant_id, sample.version), "a tenant key")
    except KeyUnavailable:
        where = "its value" if _from_env() else f"the key in {master_key_path()}"
        raise ConfigError(
            VARIABLE,
            f"{where} does not open the tenant keys in the database: it is not the master key they were wrapped "
            "with. Restore the right one; nothing was changed",
        ) from None


# --- tenant keys ---------------------------------------------------------------------------------


def _lock_tenant(tenant: Tenant) -> Tenant:
    return Tenant.objects.select_for_update().get(pk=tenant.pk)


def _kek(row: TenantKey, master: bytes) -> bytes:
    return _open(master, row.nonce, row.wrapped, _tenant_ad(row.tenant_id, row.version),
                 f"key v{row.version} of tenant {row.tenant_id}")  # fmt: skip


def _new_tenant_key(tenant: Tenant, version: int, master: bytes) -> tuple[TenantKey, bytes]:
    kek = secrets.token_bytes(KEY_BYTES)
    nonce, wrapped = _seal(master, kek, _tenant_ad(tenant.pk, version))
    row = TenantKey.objects.create(tenant=tenant, version=version, nonce=nonce, wrapped=wrapped, active=True)
    return row, kek


def _active_key(tenant: Tenant) -> tuple[TenantKey, bytes]:
    """The tenant's active key, made on first use (call with the tenant row locked)."""
    row = TenantKey.objects.filter(tenant=tenant, active=True).first()
    if row is not None:
        return row, _kek(row, master_key())
    latest = TenantKey.objects.filter(tenant=tenant).order_by("-version").first()
    return _new_tenant_key(tenant, (latest.version + 1) if latest else 1, _master_key_for_new_tenant_key())


@transaction.atomic
def tenant_key_rotate(*, tenant: Tenant, actor) -> TenantKey:
    """A new key for the tenant: every data key of the tenant re-wrapped by it, the previous
    key retired (its wrapped bytes erased). The data keys, and the data, do not change."""
    from tenants.services import audit_record

    tenant = _lock_tenant(tenant)
    held = list(TenantKey.objects.filter(tenant=tenant).exclude(wrapped=b""))
    master = master_key() if held else _master_key_for_new_tenant_key()
    keks = {row.version: _kek(row, master) for row in held}
    old = TenantKey.objects.filter(tenant=tenant, active=True).first()
    latest = TenantKey.objects.filter(tenant=tenant).order_by("-version").first()
    now = timezone.now()
    TenantKey.objects.filter(tenant=tenant, active=True).update(active=False, retired_at=now)
    new, kek = _new_tenant_key(tenant, (latest.version + 1) if latest else 1, master)
    rewrapped = 0
    for row in WrappedKey.objects.filter(tenant=tenant).select_for_update():
        associated = _data_ad(tenant.pk, row.purpose, row.object_id)
        old_kek = keks.get(row.key_version)
        if old_kek is None:
            raise KeyUnavailable(f"{row.purpose} key of {row.object_id}: tenant key v{row.key_version} is gone")
        data_key = _open(old_kek, row.nonce, row.wrapped, associated, f"{row.purpose} key of {row.object_id}")
        row.nonce, row.wrapped = _seal(kek, data_key, associated)
        row.key_version = new.version
        row.save(update_fields=["nonce", "wrapped", "key_version"])
        rewrapped += 1
    # Nothing is wrapped by the old versions any more: forget them.
    TenantKey.objects.filter(tenant=tenant).exclude(pk=new.pk).update(
        active=False, nonce=b"", wrapped=b"", retired_at=now
    )
    audit_record(actor=actor, tenant=tenant, action="tenant.key_rotate", obj=tenant,
                 changes={"version": [old.version if old else None, new.version], "data_keys": rewrapped})  # fmt: skip
    return new


# --- data keys -----------------------------------------------------------------------------------


def _check(purpose: str, object_id) -> str:
    if not isinstance(purpose, str) or not PURPOSE.fullmatch(purpose):
        raise ValueError(f"a key purpose is a short lower-case name, got {purpose!r}")
    object_id = str(object_id)
    if not object_id or len(object_id) > 64:
        raise ValueError(f"an object id is 1-64 characters, got {len(object_id)}")
    return object_id


def _wrap_for(tenant: Tenant, purpose: str, object_id: str, data_key: bytes) -> None:
    row, kek = _active_key(tenant)
    nonce, wrapped = _seal(kek, data_key, _data_ad(tenant.pk, purpose, object_id))
    WrappedKey.objects.create(tenant=tenant, purpose=purpose, object_id=object_id, key_version=row.version,
                              nonce=nonce, wrapped=wrapped)  # fmt: skip


@transaction.atomic
def data_key_create(*, tenant: Tenant, purpose: str, object_id, exist_ok: bool = False) -> bytes:
    """A new random data key for the object, stored wrapped by the tenant's key; returns it.
    With exist_ok, the object's existing key is returned instead (a step run again)."""
    object_id = _check(purpose, object_id)
    tenant = _lock_tenant(tenant)  # one at a time with a rotation
    if WrappedKey.objects.filter(tenant=tenant, purpose=purpose, object_id=object_id).exists():
        if not exist_ok:
            raise ValueError(f"{purpose} {object_id} of tenant {tenant.slug} already has a key")
        return data_key(tenant=tenant, purpose=purpose, object_id=object_id)
    key = secrets.token_bytes(KEY_BYTES)
    _wrap_for(tenant, purpose, object_id, key)
    return key


@transaction.atomic
def data_key_store(*, tenant: Tenant, purpose: str, object_id, key: bytes) -> None:
    """Keep a data key made elsewhere (a backup repository's, made with the repository; one
    imported on a new install) wrapped for the object. Refused when the object has another key."""
    object_id = _check(purpose, object_id)
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"a data key is {KEY_BYTES} bytes")
    tenant = _lock_tenant(tenant)
    if WrappedKey.objects.filter(tenant=tenant, purpose=purpose, object_id=object_id).exists():
        if secrets.compare_digest(data_key(tenant=tenant, purpose=purpose, object_id=object_id), key):
            return
        raise ValueError(f"{purpose} {object_id} of tenant {tenant.slug} already has another key")
    _wrap_for(tenant, purpose, object_id, key)


@transaction.atomic
def data_key_copy(*, tenant: Tenant, purpose: str, source_id, object_id) -> bytes:
    """Give `object_id` the same data key as `source_id` (a clone of an encrypted volume holds
    the origin's ciphertext, readable only with its key), wrapped for the new object; an
    object that has its key already keeps it."""
    source_id, object_id = _check(purpose, source_id), _check(purpose, object_id)
    tenant = _lock_tenant(tenant)
    if WrappedKey.objects.filter(tenant=tenant, purpose=purpose, object_id=object_id).exists():
        return data_key(tenant=tenant, purpose=purpose, object_id=object_id)
    key = data_key(tenant=tenant, purpose=purpose, object_id=source_id)
    _wrap_for(tenant, purpose, object_id, key)
    return key


def data_key(*, tenant: Tenant, purpose: str, object_id) -> bytes:
    """The object's data key, unwrapped; KeyUnavailable when it has none or it does not open."""
    object_id = _check(purpose, object_id)
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else int(tenant)
    for _attempt in range(3):  # a rotation committing between the two reads: read again
        row = WrappedKey.objects.filter(tenant_id=tenant_id, purpose=purpose, object_id=object_id).first()
        if row is None:
            raise KeyUnavailable(f"{purpose} {object_id} of tenant {tenant_id} has no key")
        kek_row = TenantKey.objects.filter(tenant_id=tenant_id, version=row.key_version).exclude(wrapped=b"").first()
        if kek_row is None:
            continue
        kek = _kek(kek_row, master_key())
        return _open(kek, row.nonce, row.wrapped, _data_ad(tenant_id, purpose, object_id),
                     f"{purpose} key of {object_id}")  # fmt: skip
    raise KeyUnavailable(f"{purpose} {object_id} of tenant {tenant_id}: its tenant key version is gone")


def data_key_delete(*, tenant: Tenant, purpose: str, object_id) -> bool:
    """Forget the object's key (its ciphertext is unreadable from then on); True when there was one."""
    object_id = _check(purpose, object_id)
    deleted, _ = WrappedKey.objects.filter(tenant_id=tenant.pk, purpose=purpose, object_id=object_id).delete()
    return bool(deleted)


def has_data_key(*, tenant: Tenant, purpose: str, object_id) -> bool:
    return WrappedKey.objects.filter(
        tenant_id=tenant.pk, purpose=purpose, object_id=_check(purpose, object_id)
    ).exists()
