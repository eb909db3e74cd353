"""Disaster-recovery keys: a tenant's backup repository keys, exported under a passphrase.

A repository key is wrapped by the tenant key, itself wrapped by the install's master key: a
new install (or one whose database was lost) has neither, so the backups it finds in a store
do not open. `export_keys` writes a JSON document that carries every repository key of the
tenant encrypted with AES-256-GCM under a key derived from a passphrase (scrypt); the
associated data binds each one to the tenant slug and the repository id, so a key moved to
another entry of the document, or the document edited to another tenant, does not open.
`import_keys` opens every key first and stores them (tenants.keys.data_key_store) only when
all opened: a wrong passphrase stores nothing.

The document holds no key in the clear; whoever has it and the passphrase can read the
tenant's backups, so it is kept apart from the backups themselves (docs/backup-restore.md).

Platform staff export every tenant's keys in one document (`export_platform_keys`, format
`hivemind-platform-backup-keys`: one part per tenant, each as a tenant document's check and
repositories, under one passphrase); importing it on a new install makes the tenants it names
that do not exist yet (`import_platform_keys`), so the platform can be restored from a
platform location (backups/platform_restore.py).
"""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from django.db import transaction
from django.utils import timezone

from backups.keys import PURPOSE
from tenants import keys
from tenants.models import WrappedKey

FORMAT = "hivemind-backup-keys"
PLATFORM_FORMAT = "hivemind-platform-backup-keys"
VERSION = 1
CHECK = b"hivemind-backup-keys"
MAX_TENANTS = 10_000
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
NONCE_BYTES = 12
MIN_PASSPHRASE = 12
# What an imported document may ask of scrypt: enough for a stronger export, not a memory bomb.
MAX_SCRYPT_N = 2**20


class KeyExportError(ValueError):
    """The document or the passphrase is refused; the message names which and why (never a key)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyExportError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyExportError(f"{what}: not valid base64") from None


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _associated(slug: str, repository: str) -> bytes:
    return f"hivemind/backup-keys/{slug}/{repository}".encode()


def check_passphrase(passphrase) -> str:
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyExportError("passphrase: required")
    if len(passphrase) < MIN_PASSPHRASE:
        raise KeyExportError(f"passphrase: at least {MIN_PASSPHRASE} characters, got {len(passphrase)}")
    if len(passphrase) > 1024:
        raise KeyExportError("passphrase: at most 1024 characters")
    return passphrase


def _new_kdf(passphrase: str) -> tuple[AESGCM, dict]:
    passphrase = check_passphrase(passphrase)
    salt = secrets.token_bytes(SALT_BYTES)
    kdf = {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)}
    return AESGCM(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)), kdf


def _seal_tenant(aead: AESGCM, tenant) -> dict:
    """One tenant's part: a passphrase check (works for a tenant without repositories yet) and
    every repository key, each bound to the tenant's slug and the repository."""
    check_nonce = secrets.token_bytes(NONCE_BYTES)
    check = aead.encrypt(check_nonce, CHECK, _associated(tenant.slug, ""))
    repositories = []
    rows = WrappedKey.objects.filter(tenant=tenant, purpose=PURPOSE).order_by("object_id")
    for repository in rows.values_list("object_id", flat=True):
        key = keys.data_key(tenant=tenant, purpose=PURPOSE, object_id=repository)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = aead.encrypt(nonce, key, _associated(tenant.slug, repository))
        repositories.append({"repository": repository, "nonce": _b64(nonce), "key": _b64(sealed)})
    return {"check": {"nonce": _b64(check_nonce), "sealed": _b64(check)}, "repositories": repositories}


def _envelope(format_: str, kdf: dict) -> dict:
    return {"format": format_, "version": VERSION, "created": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kdf": kdf, "cipher": "aes-256-gcm"}  # fmt: skip


def export_keys(tenant, passphrase: str) -> dict:
    """Every backup repository key of `tenant`, encrypted under `passphrase` (JSON-able)."""
    aead, kdf = _new_kdf(passphrase)
    return {**_envelope(FORMAT, kdf), "tenant": tenant.slug, **_seal_tenant(aead, tenant)}


def export_platform_keys(passphrase: str) -> dict:
    """Every tenant's backup repository keys (with each tenant's name, to make it again on a new
    install), encrypted under one `passphrase`."""
    from tenants.models import Tenant

    aead, kdf = _new_kdf(passphrase)
    parts = [{"tenant": t.slug, "name": t.name, **_seal_tenant(aead, t)} for t in Tenant.objects.order_by("slug")]
    return {**_envelope(PLATFORM_FORMAT, kdf), "tenants": parts}


def _check_envelope(document, format_: str) -> dict:
    if not isinstance(document, dict):
        raise KeyExportError("document: expected the JSON object `hivemind backup keys export` wrote")
    if document.get("format") != format_:
        raise KeyExportError(f"document.format: expected {format_!r}, got {str(document.get('format'))[:40]!r}")
    if document.get("version") != VERSION:
        got = str(document.get("version"))[:20]
        raise KeyExportError(f"document.version: this Hivemind reads version {VERSION}, got {got}")
    if document.get("cipher") != "aes-256-gcm":
        raise KeyExportError(f"document.cipher: expected 'aes-256-gcm', got {str(document.get('cipher'))[:40]!r}")
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise KeyExportError("document.kdf: expected {name: scrypt, n, r, p, salt}")
    for field, low, high in (("n", 2**14, MAX_SCRYPT_N), ("r", 1, 32), ("p", 1, 16)):
        value = kdf.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise KeyExportError(f"document.kdf.{field}: expected a whole number {low}-{high}, got {value!r}")
    if kdf["n"] & (kdf["n"] - 1):
        raise KeyExportError(f"document.kdf.n: expected a power of 2, got {kdf['n']}")
    if len(_unb64(kdf.get("salt"), "document.kdf.salt")) < 16:
        raise KeyExportError("document.kdf.salt: expected at least 16 bytes")
    return kdf


def _check_part(part: dict, where: str) -> tuple[str, dict, list]:
    """One tenant's part (a tenant document, or one entry of a platform document's `tenants`)."""
    slug = part.get("tenant")
    if not isinstance(slug, str) or not slug:
        raise KeyExportError(f"{where}.tenant: expected the slug of the tenant the keys were exported from")
    check = part.get("check")
    if not isinstance(check, dict):
        raise KeyExportError(f"{where}.check: expected {{nonce, sealed}}")
    if len(_unb64(check.get("nonce"), f"{where}.check.nonce")) != NONCE_BYTES:
        raise KeyExportError(f"{where}.check.nonce: expected {NONCE_BYTES} bytes")
    _unb64(check.get("sealed"), f"{where}.check.sealed")
    entries = part.get("repositories")
    if not isinstance(entries, list) or len(entries) > 1000:
        raise KeyExportError(f"{where}.repositories: expected a list of {{repository, nonce, key}}")
    for index, entry in enumerate(entries):
        at = f"{where}.repositories[{index}]"
        if not isinstance(entry, dict):
            raise KeyExportError(f"{at}: expected {{repository, nonce, key}}")
        repository = entry.get("repository")
        if not isinstance(repository, str) or not 0 < len(repository) <= 64:
            raise KeyExportError(f"{at}.repository: expected a repository id (1-64 characters)")
        if len(_unb64(entry.get("nonce"), f"{at}.nonce")) != NONCE_BYTES:
            raise KeyExportError(f"{at}.nonce: expected {NONCE_BYTES} bytes")
        if len(_unb64(entry.get("key"), f"{at}.key")) != keys.KEY_BYTES + 16:
            raise KeyExportError(f"{at}.key: expected an encrypted {keys.KEY_BYTES}-byte key")
    return slug, check, entries


def _check_document(document) -> tuple[str, dict, list]:
    kdf = _check_envelope(document, FORMAT)
    slug, _check, entries = _check_part(document, "document")
    return slug, kdf, entries


def _aead(kdf: dict, passphrase) -> AESGCM:
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyExportError("passphrase: required")
    return AESGCM(_derive(passphrase, _unb64(kdf["salt"], "salt"), kdf["n"], kdf["r"], kdf["p"]))


def _open_part(aead: AESGCM, slug: str, check: dict, entries: list, where: str) -> list[tuple[str, bytes]]:
    """Every key of one tenant's part, opened (nothing stored); KeyExportError naming the first
    that does not open."""
    try:
        aead.decrypt(_unb64(check["nonce"], "nonce"), _unb64(check["sealed"], "sealed"), _associated(slug, ""))
    except InvalidTag:
        raise KeyExportError("passphrase: the document does not open with it (a wrong passphrase?)") from None
    opened = []
    for index, entry in enumerate(entries):
        try:
            key = aead.decrypt(
                _unb64(entry["nonce"], "nonce"), _unb64(entry["key"], "key"), _associated(slug, entry["repository"])
            )
        except InvalidTag:
            raise KeyExportError(
                f"{where}.repositories[{index}]: the key of repository {entry['repository']} does not open "
                "(the document was edited or damaged)"
            ) from None
        opened.append((entry["repository"], key))
    return opened


def _store(tenant, opened: list[tuple[str, bytes]]) -> list[str]:
    for repository, key in opened:
        try:
            keys.data_key_store(tenant=tenant, purpose=PURPOSE, object_id=repository, key=key)
        except ValueError as exc:
            raise KeyExportError(f"repository {repository}: {exc}") from None
    return [repository for repository, _ in opened]


def import_keys(tenant, document, passphrase: str) -> list[str]:
    """Store the repository keys of an exported `document` for `tenant`; returns their
    repository ids. Every key is opened before any is stored: a wrong passphrase (or an
    edited document) stores nothing. A document exported from tenant A imports into tenant B
    too (a new install may name it otherwise): the slug it binds is the one it was made for."""
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyExportError("passphrase: required")
    slug, kdf, entries = _check_document(document)
    opened = _open_part(_aead(kdf, passphrase), slug, document["check"], entries, "document")
    with transaction.atomic():
        return _store(tenant, opened)


def import_platform_keys(document, passphrase: str, actor) -> list[dict]:
    """Store every tenant's keys of a platform document, making each tenant it names that does
    not exist here (with its name; its settings come back with its restore). Every key of every
    tenant is opened before anything is written: a wrong passphrase makes and stores nothing."""
    from django.core.exceptions import ValidationError

    from tenants.models import Tenant
    from tenants.services import tenant_create

    if not isinstance(passphrase, str) or not passphrase:
        raise KeyExportError("passphrase: required")
    kdf = _check_envelope(document, PLATFORM_FORMAT)
    parts = document.get("tenants")
    if not isinstance(parts, list) or len(parts) > MAX_TENANTS:
        raise KeyExportError(f"document.tenants: expected a list of at most {MAX_TENANTS} tenants' keys")
    aead, checked = _aead(kdf, passphrase), []
    for index, part in enumerate(parts):
        where = f"document.tenants[{index}]"
        if not isinstance(part, dict):
            raise KeyExportError(f"{where}: expected {{tenant, name, check, repositories}}")
        slug, check, entries = _check_part(part, where)
        name = part.get("name")
        if not isinstance(name, str) or not name:
            raise KeyExportError(f"{where}.name: expected the tenant's name")
        checked.append((slug, name, _open_part(aead, slug, check, entries, where)))
    done = []
    with transaction.atomic():
        for slug, name, opened in checked:
            tenant = Tenant.objects.filter(slug=slug).first()
            made = tenant is None
            if made:
                try:
                    tenant = tenant_create(name=name, slug=slug, created_by=actor)
                except ValidationError as exc:
                    raise KeyExportError(f"tenant {slug[:50]}: {'; '.join(exc.messages)}") from None
            done.append({"tenant": slug, "created": made, "repositories": _store(tenant, opened)})
    return done
