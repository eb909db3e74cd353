"""A tenant's repository keys: made with the repository on first use, wrapped by the tenant's
key, found again by the repository's id; another tenant's repository refused, nothing written."""

from __future__ import annotations

import pytest

from backups import keys
from backups.stores import LocalStore
from tenants import keys as tenant_keys


def test_a_repository_is_made_once_and_opened_again_with_the_tenants_key(world, tmp_path):
    store = LocalStore(tmp_path)
    assert keys.repository_id(store) is None
    with pytest.raises(keys.RepositoryError, match="holds no backup repository"):
        keys.open_repository(world.a, store)
    made = keys.open_repository(world.a, store, create=True)
    assert keys.repository_id(store) == made.id
    stored = tenant_keys.data_key(tenant=world.a, purpose=keys.PURPOSE, object_id=made.id)
    assert len(stored) == 32
    snapshot = made.backup_blob("state", b"the tenant's document")
    again = keys.open_repository(world.a, store, create=True)
    assert again.id == made.id and again.read_blob(snapshot.id) == b"the tenant's document"


def test_another_tenants_repository_is_refused_and_left_as_it_was(world, tmp_path):
    store = LocalStore(tmp_path)
    keys.open_repository(world.a, store, create=True).backup_blob("state", b"A's")
    before = sorted(store.list())
    with pytest.raises(keys.NoRepositoryKey, match="tenant tenant-b has no key for backup repository"):
        keys.open_repository(world.b, store, create=True)
    assert sorted(store.list()) == before


def test_a_key_that_does_not_open_the_repository_is_refused(world, tmp_path):
    store = LocalStore(tmp_path)
    made = keys.open_repository(world.a, store, create=True)
    # B holds a key under A's repository id (say, imported from the wrong export): it does not open it.
    tenant_keys.data_key_store(tenant=world.b, purpose=keys.PURPOSE, object_id=made.id, key=b"\x01" * 32)
    before = sorted(store.list())
    with pytest.raises(keys.RepositoryError, match="does not open repository"):
        keys.open_repository(world.b, store)
    assert sorted(store.list()) == before
    with pytest.raises(ValueError, match="already has another key"):
        tenant_keys.data_key_store(tenant=world.b, purpose=keys.PURPOSE, object_id=made.id, key=b"\x02" * 32)
