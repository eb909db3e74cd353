"""Backup stores: where a repository's objects live (base.py says what a store is).

The cloud stores load their SDK on first use (`from backups.stores import S3Store`), so a
process that never opens one (the web process validating a location) never imports boto3,
azure-storage-blob or google-cloud-storage.
"""

from importlib import import_module

from .base import Conflict, NotFound, Store, StoreError, StoreUnavailable, check_key
from .local import LocalStore

LAZY = {"S3Store": ".s3", "AzureStore": ".azure", "GCSStore": ".gcs"}

__all__ = [
    "AzureStore",
    "Conflict",
    "GCSStore",
    "LocalStore",
    "NotFound",
    "S3Store",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "check_key",
]


def __getattr__(name: str):
    if name in LAZY:
        return getattr(import_module(LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
