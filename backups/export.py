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
VERSION = 1
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


def export_keys(tenant, passphrase: str) -> dict:
    """Every backup repository key of `tenant`, encrypted under `passphrase` (JSON-able)."""
    passphrase = check_passphrase(passphrase)
    salt = secrets.token_bytes(SALT_BYTES)
    derived = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    aead = AESGCM(derived)
    check_nonce = secrets.token_bytes(NONCE_BYTES)
    # A passphrase check that works even for a tenant without repositories yet.
    check = aead.encrypt(check_nonce, b"hivemind-backup-keys", _associated(tenant.slug, ""))
    repositories = []
    rows = WrappedKey.objects.filter(tenant=tenant, purpose=PURPOSE).order_by("object_id")
    for repository in rows.values_list("object_id", flat=True):
        key = keys.data_key(tenant=tenant, purpose=PURPOSE, object_id=repository)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = aead.encrypt(nonce, key, _associated(tenant.slug, repository))
        repositories.append({"repository": repository, "nonce": _b64(nonce), "key": _b64(sealed)})
    return {
        "format": FORMAT,
        "version": VERSION,
        "tenant": tenant.slug,
        "created": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": "aes-256-gcm",
        "check": {"nonce": _b64(check_nonce), "sealed": _b64(check)},
        "repositories": repositories,
    }


def _check_document(document) -> tuple[str, dict, list]:
    if not isinstance(document, dict):
        raise KeyExportError("document: expected the JSON object `hivemind backup keys export` wrote")
    if document.get("format") != FORMAT:
        raise KeyExportError(f"document.format: expected {FORMAT!r}, got {str(document.get('format'))[:40]!r}")
    if document.get("version") != VERSION:
        got = str(document.get("version"))[:20]
        raise KeyExportError(f"document.version: this Hivemind reads version {VERSION}, got {got}")
    if document.get("cipher") != "aes-256-gcm":
        raise KeyExportError(f"document.cipher: expected 'aes-256-gcm', got {str(document.get('cipher'))[:40]!r}")
    slug = document.get("tenant")
    if not isinstance(slug, str) or not slug:
        raise KeyExportError("document.tenant: expected the slug of the tenant the keys were exported from")
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
    check = document.get("check")
    if not isinstance(check, dict):
        raise KeyExportError("document.check: expected {nonce, sealed}")
    if len(_unb64(check.get("nonce"), "document.check.nonce")) != NONCE_BYTES:
        raise KeyExportError(f"document.check.nonce: expected {NONCE_BYTES} bytes")
    _unb64(check.get("sealed"), "document.check.sealed")
    entries = document.get("repositories")
    if not isinstance(entries, list) or len(entries) > 1000:
        raise KeyExportError("document.repositories: expected a list of {repository, nonce, key}")
    for index, entry in enumerate(entries):
        where = f"document.repositories[{index}]"
        if not isinstance(entry, dict):
            raise KeyExportError(f"{where}: expected {{repository, nonce, key}}")
        repository = entry.get("repository")
        if not isinstance(repository, str) or not 0 < len(repository) <= 64:
            raise KeyExportError(f"{where}.repository: expected a repository id (1-64 characters)")
        if len(_unb64(entry.get("nonce"), f"{where}.nonce")) != NONCE_BYTES:
            raise KeyExportError(f"{where}.nonce: expected {NONCE_BYTES} bytes")
        if len(_unb64(entry.get("key"), f"{where}.key")) != keys.KEY_BYTES + 16:
            raise KeyExportError(f"{where}.key: expected an encrypted {keys.KEY_BYTES}-byte key")
    return slug, kdf, entries


def import_keys(tenant, document, passphrase: str) -> list[str]:
    """Store the repository keys of an exported `document` for `tenant`; returns their
    repository ids. Every key is opened before any is stored: a wrong passphrase (or an
    edited document) stores nothing. A document exported from tenant A imports into tenant B
    too (a new install may name it otherwise): the slug it binds is the one it was made for."""
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyExportError("passphrase: required")
    slug, kdf, entries = _check_document(document)
    derived = _derive(passphrase, _unb64(kdf["salt"], "salt"), kdf["n"], kdf["r"], kdf["p"])
    aead = AESGCM(derived)
    try:
        aead.decrypt(
            _unb64(document["check"]["nonce"], "nonce"),
            _unb64(document["check"]["sealed"], "sealed"),
            _associated(slug, ""),
        )
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
                f"document.repositories[{index}]: the key of repository {entry['repository']} does not open "
                "(the document was edited or damaged)"
            ) from None
        opened.append((entry["repository"], key))
    with transaction.atomic():
        for repository, key in opened:
            try:
                keys.data_key_store(tenant=tenant, purpose=PURPOSE, object_id=repository, key=key)
            except ValueError as exc:
                raise KeyExportError(f"repository {repository}: {exc}") from None
    return [repository for repository, _ in opened]
