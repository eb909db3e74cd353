"""What every backup store is: a flat namespace of immutable objects under one location.

A store knows nothing of the repository format (backups/repository/) and the repository knows
nothing of the protocol: it names objects with keys like "data/ab/ab12..." and a store maps a
key onto a file under a directory, an S3 object under bucket/prefix, an Azure blob or a GCS
object. Keys are relative, '/'-separated, made of [A-Za-z0-9._-] segments (check_key).

Errors: every failure is a StoreError whose message names the location and carries the
server's own answer (status code and message), never a credential; NotFound for a key that
is not there; Conflict for a create-only put whose key exists (how locks are taken in the
store itself, not only in the database).
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator

KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class StoreError(RuntimeError):
    """The location failed: the message names it and says what its server answered."""


class NotFound(StoreError):
    """No object under that key."""


class Conflict(StoreError):
    """A create-only put found the key taken."""


class StoreUnavailable(StoreError, ConnectionError):
    """The location's server could not be reached, or dropped the connection, after the SDK's
    own retries. A ConnectionError, so a workflow step retries it later (with backoff) rather
    than failing the run for a server that is restarting."""


def redact(text: str, secrets) -> str:
    """`text` with every secret value blanked (a server may quote what it was sent)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"not a store key: {key!r}")
    return key


class Store(ABC):
    """One location's objects. Implementations are thread-safe for concurrent puts and gets."""

    kind: str = ""

    @abstractmethod
    def describe(self) -> str:
        """Where it is, for messages: "s3://bucket/prefix", never a credential."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        """Store `data` under `key`, whole or not at all (no reader ever sees a part). With
        create_only, raise Conflict when the key exists (atomically, at the server)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; NotFound when absent."""

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (fewer only at the end); NotFound when absent."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; NotFound when absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with `prefix`, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; an absent one is fine (deletes are retried)."""

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def check(self) -> None:
        """Prove the location reachable and writable: write, read back, list and delete a probe
        object. Raises StoreError with the server's answer at the first step that fails."""
        key = f"check/probe-{secrets.token_hex(8)}"
        payload = secrets.token_bytes(64)
        self.put(key, payload)
        try:
            if self.get(key) != payload:
                raise StoreError(f"{self.describe()}: the probe object read back differs from what was written")
            if key not in {k for k, _ in self.list("check/")}:
                raise StoreError(f"{self.describe()}: the probe object written is missing from the listing")
        finally:
            self.delete(key)
