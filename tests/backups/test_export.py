"""Disaster-recovery keys: a tenant's repository keys exported under a passphrase and imported
on a "new install" (its WrappedKey rows gone), after which the repository opens again; a wrong
passphrase or an edited document stores nothing."""

from __future__ import annotations

import json

import pytest

from backups import export, keys
from backups.stores import LocalStore
from tenants import keys as tenant_keys
from tenants.models import WrappedKey

PASSPHRASE = "correct horse battery staple"


def test_keys_round_trip_into_a_fresh_install_and_the_repository_opens_again(world, tmp_path):
    store = LocalStore(tmp_path)
    repository = keys.open_repository(world.a, store, create=True)
    snapshot = repository.backup_blob("state", b"A's document")
    document = json.loads(json.dumps(export.export_keys(world.a, PASSPHRASE)))  # JSON-able
    assert document["tenant"] == world.a.slug and document["kdf"]["n"] >= 2**15
    assert [entry["repository"] for entry in document["repositories"]] == [repository.id]
    raw = tenant_keys.data_key(tenant=world.a, purpose=keys.PURPOSE, object_id=repository.id)
    assert raw.hex() not in json.dumps(document) and export._b64(raw) not in json.dumps(document)

    # The database is lost: the tenant's repository keys are gone, the repository does not open.
    WrappedKey.objects.filter(tenant=world.a, purpose=keys.PURPOSE).delete()
    with pytest.raises(keys.NoRepositoryKey):
        keys.open_repository(world.a, store)

    with pytest.raises(export.KeyExportError, match="wrong passphrase"):
        export.import_keys(world.a, document, PASSPHRASE + "x")
    assert not WrappedKey.objects.filter(tenant=world.a, purpose=keys.PURPOSE).exists()

    assert export.import_keys(world.a, document, PASSPHRASE) == [repository.id]
    assert keys.open_repository(world.a, store).read_blob(snapshot.id) == b"A's document"
    # Importing again is harmless (the same key).
    assert export.import_keys(world.a, document, PASSPHRASE) == [repository.id]


def test_an_exported_document_imports_into_another_tenant_row(world, tmp_path):
    store = LocalStore(tmp_path)
    repository = keys.open_repository(world.a, store, create=True)
    snapshot = repository.backup_blob("state", b"A's")
    document = export.export_keys(world.a, PASSPHRASE)
    export.import_keys(world.b, document, PASSPHRASE)  # a new install naming the tenant otherwise
    assert keys.open_repository(world.b, store).read_blob(snapshot.id) == b"A's"


def test_an_edited_document_is_refused_and_nothing_is_stored(world, tmp_path):
    for index in range(2):
        keys.open_repository(world.a, LocalStore(tmp_path / str(index)), create=True)
    document = export.export_keys(world.a, PASSPHRASE)
    # The second entry's key moved under the first's id: its associated data no longer matches.
    first, second = document["repositories"]
    edited = {**document, "repositories": [first, {**second, "repository": "0" * 32}]}
    with pytest.raises(export.KeyExportError, match=r"repositories\[1\]: the key of repository 0{32} does not open"):
        export.import_keys(world.b, edited, PASSPHRASE)
    assert not WrappedKey.objects.filter(tenant=world.b, purpose=keys.PURPOSE).exists()
    # The document claims another tenant: nothing opens.
    with pytest.raises(export.KeyExportError, match="wrong passphrase"):
        export.import_keys(world.b, {**document, "tenant": "tenant-b"}, PASSPHRASE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "x"}, "document.format: expected 'hivemind-backup-keys'"),
        ({"version": 9}, "document.version: this Hivemind reads version 1"),
        ({"kdf": {"name": "scrypt", "n": 2**30, "r": 8, "p": 1, "salt": "AAAA"}}, "document.kdf.n: expected"),
        ({"kdf": {"name": "scrypt", "n": 3 * 2**14, "r": 8, "p": 1, "salt": "AAAA"}}, "power of 2"),
        ({"repositories": [{"repository": "r", "nonce": "!!", "key": ""}]}, r"repositories\[0\].nonce: not valid"),
        ({"repositories": "x"}, "document.repositories: expected a list"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(world, change, message):
    document = {**export.export_keys(world.a, PASSPHRASE), **change}
    with pytest.raises(export.KeyExportError, match=message):
        export.import_keys(world.a, document, PASSPHRASE)


def test_a_short_passphrase_is_refused_on_export(world):
    with pytest.raises(export.KeyExportError, match="passphrase: at least 12 characters, got 5"):
        export.export_keys(world.a, "short")
