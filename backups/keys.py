"""A tenant's backup repositories and their keys.

Each backup location holds one repository (backups/repository/), made on its first backup.
Its repository key is 32 random bytes wrapped by the tenant's key (tenants/keys.py, purpose
"backup-repository", object id: the repository's id, which its unencrypted `config` object
names), so the same repository is found again by any location row that points at it — after
a location was removed and added again, or on a new install once its keys were imported.
A repository of another tenant (or another install) has no key here: opening it is refused
with a clear error and nothing is written.
"""

from __future__ import annotations

import json
import secrets

from backups.repository import Repository, RepositoryError
from backups.repository.format import HEADER_SIZE, KIND_CONFIG, check_header
from backups.stores import NotFound, Store
from tenants import keys

PURPOSE = "backup-repository"
KEY_BYTES = 32


class NoRepositoryKey(RepositoryError):
    """The location holds a repository this tenant has no key for."""


def repository_id(store: Store) -> str | None:
    """The id of the repository in `store` (from its config object, readable without the key),
    or None when the store holds none."""
    try:
        data = store.get("config")
    except NotFound:
        return None
    check_header(data, KIND_CONFIG, "config")
    try:
        return str(json.loads(data[HEADER_SIZE:])["config"]["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"{store.describe()}: its config object is not readable: {exc}") from None


def repository_key(tenant, repository: str) -> bytes:
    try:
        return keys.data_key(tenant=tenant, purpose=PURPOSE, object_id=repository)
    except keys.KeyUnavailable:
        raise NoRepositoryKey(
            f"tenant {tenant.slug} has no key for backup repository {repository} (another tenant's or another "
            "install's: import its keys with `hivemind backup keys import`)"
        ) from None


def open_repository(tenant, store: Store, *, create: bool = False, **options) -> Repository:
    """The tenant's repository in `store`, opened with its key; made (and its key kept) when the
    store holds none and `create` is set."""
    found = repository_id(store)
    if found is not None:
        return Repository.open(store, repository_key(tenant, found), **options)
    if not create:
        raise RepositoryError(f"{store.describe()}: holds no backup repository yet")
    key = secrets.token_bytes(KEY_BYTES)
    try:
        repository = Repository.init(store, key, **options)
    except RepositoryError:
        # Another backup made it at the same moment: open theirs.
        found = repository_id(store)
        if found is None:
            raise
        return Repository.open(store, repository_key(tenant, found), **options)
    try:
        keys.data_key_store(tenant=tenant, purpose=PURPOSE, object_id=repository.id, key=key)
    except Exception:
        store.delete("config")  # nothing else was written: the store holds no repository again
        raise
    return repository


def open_for(location, *, tenant=None, create: bool = False, **options) -> Repository:
    """The repository of `tenant` (default: the location's) in a backup location
    (backups/services.store_for opens its store: in a platform location, the tenant's part)."""
    from backups.services import store_for

    tenant = tenant if tenant is not None else location.tenant
    if tenant is None:
        raise ValueError(f"platform backup location {location.name} holds one repository per tenant: name the tenant")
    return open_repository(tenant, store_for(location, tenant), create=create, **options)
