"""A notifier's secrets at rest: one data key per notifier (purpose "notifier", tenants/keys.py),
AES-256-GCM over the secrets as JSON, with associated data naming the tenant and the notifier,
so sealed bytes copied onto another notifier's row do not open. Stored as nonce || ciphertext.
Rotating the tenant's key re-wraps the data key; the sealed bytes stay as they are."""

from __future__ import annotations

import json
import secrets as random

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenants import keys

PURPOSE = "notifier"
NONCE_BYTES = 12


def _associated(notifier) -> bytes:
    return f"hivemind/notifier-secrets/{notifier.tenant_id}/{notifier.pk}".encode()


def seal(notifier, values: dict) -> bytes:
    """The sealed bytes of `values` for this (saved) notifier; b"" when there is nothing to seal."""
    if not values:
        return b""
    key = keys.data_key_create(tenant=notifier.tenant, purpose=PURPOSE, object_id=notifier.pk, exist_ok=True)
    nonce = random.token_bytes(NONCE_BYTES)
    plaintext = json.dumps(values, sort_keys=True).encode()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _associated(notifier))


def unseal(notifier) -> dict:
    """The notifier's secrets; KeyUnavailable when they do not open (names the notifier, never a value)."""
    sealed = bytes(notifier.sealed_secrets or b"")
    if not sealed:
        return {}
    key = keys.data_key(tenant=notifier.tenant, purpose=PURPOSE, object_id=notifier.pk)
    try:
        plaintext = AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _associated(notifier))
    except (InvalidTag, ValueError):
        raise keys.KeyUnavailable(f"the secrets of notifier {notifier.pk} do not open with its key") from None
    return json.loads(plaintext)


def forget(notifier) -> None:
    keys.data_key_delete(tenant=notifier.tenant, purpose=PURPOSE, object_id=notifier.pk)
