"""Locks kept in the store itself: `locks/<id>` objects, shared (backup, verify, forget) or
exclusive (prune).

Taking a lock is write-then-check: look for conflicting locks, write ours create-only, list
again; a conflict seen on the second look removes ours and waits or fails. Of two writers racing,
each writes before its second look, so at least one sees the other: two conflicting holders never
both proceed (they may both back off; a random pause breaks the tie). This needs a store whose
listings show every finished put, which S3, Azure, GCS and a local directory all do now.

A holder rewrites its lock every `timeout / 3` seconds; a lock not refreshed for `timeout`
seconds belongs to a process that died and no longer blocks anyone (`remove_stale` deletes it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time

from ..stores import NotFound, Store
from .format import KIND_LOCK, Keys, RepositoryError

LOCK_TIMEOUT = 30 * 60.0


class RepositoryLocked(RepositoryError):
    """Another process holds a lock that conflicts with the one asked for."""


class Lock:
    """One lock held by this process; a context manager that releases it."""

    def __init__(self, locks: Locks, key: str, document: dict):
        self.locks, self.key, self.document = locks, key, document
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name=f"lock {key}", daemon=True)
        self._refresher.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.locks.timeout / 3):
            self.document["refreshed"] = time.time()
            with contextlib.suppress(Exception):  # a failed refresh is retried; staleness is the limit
                self.locks.store.put(self.key, self.locks.keys.seal_object(KIND_LOCK, self.key, self.document))

    def release(self) -> None:
        self._stop.set()
        self._refresher.join()
        self.locks.store.delete(self.key)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Locks:
    def __init__(self, store: Store, keys: Keys, timeout: float = LOCK_TIMEOUT):
        self.store, self.keys, self.timeout = store, keys, timeout

    def held(self) -> list[tuple[str, dict]]:
        """(key, document) of every lock in the store; one that cannot be read counts as exclusive."""
        found = []
        for key, _ in self.store.list("locks/"):
            try:
                found.append((key, self.keys.open_object(KIND_LOCK, key, self.store.get(key))))
            except NotFound:
                continue  # released between the listing and the read
            except RepositoryError:
                found.append((key, {"exclusive": True, "refreshed": time.time(), "host": "?", "unreadable": True}))
        return found

    def stale(self, document: dict) -> bool:
        return time.time() - float(document.get("refreshed", 0)) > self.timeout

    def conflicts(self, exclusive: bool, own: str | None) -> list[tuple[str, dict]]:
        return [
            (key, doc)
            for key, doc in self.held()
            if key != own and not self.stale(doc) and (exclusive or doc.get("exclusive"))
        ]

    def acquire(self, *, exclusive: bool, purpose: str, wait: float = 0.0) -> Lock:
        """Take a lock, waiting up to `wait` seconds for conflicting ones to go; RepositoryLocked if not."""
        deadline = time.monotonic() + wait
        while True:
            conflict = self.conflicts(exclusive, None)
            if not conflict:
                key = f"locks/{secrets.token_hex(16)}"
                now = time.time()
                document = {
                    "exclusive": exclusive,
                    "purpose": purpose,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "created": now,
                    "refreshed": now,
                }
                self.store.put(key, self.keys.seal_object(KIND_LOCK, key, document), create_only=True)
                conflict = self.conflicts(exclusive, key)
                if not conflict:
                    return Lock(self, key, document)
                self.store.delete(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holders = ", ".join(
                    f"{key} ({'exclusive' if doc.get('exclusive') else 'shared'}, {doc.get('purpose', '?')} "
                    f"by {doc.get('host')} pid {doc.get('pid', '?')})"
                    for key, doc in conflict
                )
                raise RepositoryLocked(f"{self.store.describe()}: locked by {holders}")
            time.sleep(min(remaining, 0.1 + secrets.randbelow(200) / 1000))

    def remove_stale(self) -> list[str]:
        """Delete the locks of processes that stopped refreshing them; their keys."""
        removed = []
        for key, doc in self.held():
            if self.stale(doc):
                self.store.delete(key)
                removed.append(key)
        return removed
