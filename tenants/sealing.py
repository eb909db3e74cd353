"""Secrets of a tenant's object at rest (a notifier's tokens, a backup location's credentials):
one data key per object (tenants/keys.py, under the object's purpose), AES-256-GCM over the
secrets as JSON with associated data naming the tenant and the object, so sealed bytes copied
onto another object's row do not open. Stored as nonce || ciphertext. Rotating the tenant's
key re-wraps the data key; the sealed bytes stay as they are. An object of the platform (no
tenant: a platform backup location) is sealed with a key derived from the master key."""

from __future__ import annotations

import json
import secrets as random

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenants import keys

NONCE_BYTES = 12


class Sealer:
    """Seals the secrets of one kind of object: anything with `tenant`, `tenant_id`, `pk` and
    `sealed_secrets`. `purpose` names its data keys; `label` goes into the associated data."""

    def __init__(self, *, purpose: str, label: str, what: str):
        self.purpose = purpose
        self.label = label  # e.g. "hivemind/notifier-secrets": changing it makes stored secrets unreadable
        self.what = what  # for messages: "notifier", "backup location"

    def _associated(self, obj) -> bytes:
        return f"{self.label}/{obj.tenant_id if obj.tenant_id is not None else 'platform'}/{obj.pk}".encode()

    def _key(self, obj, *, create: bool) -> bytes:
        if obj.tenant_id is None:  # a platform object: its key comes from the master key
            return keys.platform_key(self.purpose, obj.pk)
        if create:
            return keys.data_key_create(tenant=obj.tenant, purpose=self.purpose, object_id=obj.pk, exist_ok=True)
        return keys.data_key(tenant=obj.tenant, purpose=self.purpose, object_id=obj.pk)

    def seal(self, obj, values: dict) -> bytes:
        """The sealed bytes of `values` for this (saved) object; b"" when there is nothing to seal."""
        if not values:
            return b""
        key = self._key(obj, create=True)
        nonce = random.token_bytes(NONCE_BYTES)
        plaintext = json.dumps(values, sort_keys=True).encode()
        return nonce + AESGCM(key).encrypt(nonce, plaintext, self._associated(obj))

    def unseal(self, obj) -> dict:
        """The object's secrets; KeyUnavailable when they do not open (names the object, never a value)."""
        sealed = bytes(obj.sealed_secrets or b"")
        if not sealed:
            return {}
        key = self._key(obj, create=False)
        try:
            plaintext = AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._associated(obj))
        except (InvalidTag, ValueError):
            raise keys.KeyUnavailable(f"the secrets of {self.what} {obj.pk} do not open with its key") from None
        return json.loads(plaintext)

    def forget(self, obj) -> None:
        if obj.tenant_id is None:
            return  # derived, never stored
        keys.data_key_delete(tenant=obj.tenant, purpose=self.purpose, object_id=obj.pk)
