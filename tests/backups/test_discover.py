"""Disaster recovery's first half: a location's backups are found again from its repository
(an install that lost its database, with the tenant's repository keys): runs grouped by their
snapshots' metadata become Backup rows; syncing again adds nothing; without the key: a 409."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from backups import services
from backups.keys import open_for
from backups.models import Backup


def write_run(repository, run: int, volume_dir) -> tuple[str, str]:
    """What a backup run writes: a state snapshot and a volume's tree, tagged with the run."""
    state = repository.backup_blob("state", b'{"format": "hivemind-state"}',
                                   meta={"backup": run, "kind": "state", "tenant": "tenant-a", "scope": "tenant",
                                         "names": []})  # fmt: skip
    meta = {"backup": run, "kind": "volume", "tenant": "tenant-a", "volume": "data", "volume_id": 5, "encrypted": False}
    volume = repository.backup_tree(volume_dir, meta=meta)
    return state.id, volume.id


@pytest.fixture
def unique():
    """A directory name no earlier run left a repository in (the var dir outlives a run), removed after."""
    name = f"discover-{secrets.token_hex(6)}"
    yield name
    for tenant in ("tenant-a", "tenant-b"):
        shutil.rmtree(Path(settings.BACKUP_DIR) / tenant / name, ignore_errors=True)


def test_a_locations_backups_are_found_again_once(world, tmp_path, unique):
    location = services.location_create(tenant=world.a, name="dr", kind="local", config={"path": unique},
                                         actor=world.users["staff"])  # fmt: skip
    repository = open_for(location, create=True)
    (tmp_path / "f.txt").write_text("hello")
    first = write_run(repository, 41, tmp_path)
    (tmp_path / "f.txt").write_text("hello again")
    second = write_run(repository, 42, tmp_path)
    repository.backup_blob("state", b"{}", meta={"kind": "state"})  # not a run's: left alone

    client = world.client("operator")
    url = reverse("api:backup-location-sync", args=[location.pk])
    response = client.post(url)
    assert response.status_code == 200, response.content
    assert response.json()["found"] == 2
    older, newer = Backup.objects.filter(location=location).order_by("created_at")
    assert (older.state_snapshot, older.volumes[0]["snapshot"]) == first
    assert (newer.state_snapshot, newer.volumes[0]["snapshot"]) == second
    assert newer.status == "succeeded" and newer.volumes[0]["name"] == "data" and newer.files == 1
    assert newer.created_at == repository.snapshots()[[s.id for s in repository.snapshots()].index(second[0])].time
    assert client.post(url).json() == {"found": 0, "backups": []}


def test_without_the_repository_key_sync_is_a_409(world, unique):
    theirs = services.location_create(tenant=world.a, name="src", kind="local", config={"path": unique},
                                      actor=world.users["staff"])  # fmt: skip
    open_for(theirs, create=True)
    # Tenant B's location on the same store (staff made it point there): B has no key for it.
    mine = services.location_create(tenant=world.b, name="dst", kind="local", config={"path": unique},
                                    actor=world.users["staff"])  # fmt: skip
    mine.config = theirs.config
    mine.save()
    response = world.client("outsider").post(reverse("api:backup-location-sync", args=[mine.pk]))
    assert response.status_code == 409 and "has no key for backup repository" in response.json()["detail"]
    assert not Backup.objects.exists()
