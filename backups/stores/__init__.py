"""Backup stores: where a repository's objects live (base.py says what a store is)."""

from .base import Conflict, NotFound, Store, StoreError, check_key
from .local import LocalStore

__all__ = ["Conflict", "LocalStore", "NotFound", "Store", "StoreError", "check_key"]
