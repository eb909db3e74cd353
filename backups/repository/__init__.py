"""Hivemind's backup repository format: chunked, deduplicated, compressed, encrypted snapshots
in any backup store (docs/backup-format.md describes the bytes)."""

from .format import DamagedObject, FormatError, RepositoryError, WrongKey
from .locks import RepositoryLocked
from .repository import (
    Entry,
    PruneResult,
    Repository,
    RestoreResult,
    SnapshotInfo,
    SnapshotResult,
    VerifyReport,
)
from .retention import Selection, select_keep

__all__ = [
    "DamagedObject",
    "Entry",
    "FormatError",
    "PruneResult",
    "Repository",
    "RepositoryError",
    "RepositoryLocked",
    "RestoreResult",
    "Selection",
    "SnapshotInfo",
    "SnapshotResult",
    "VerifyReport",
    "WrongKey",
    "select_keep",
]
