"""Verifying a location: the backup.verify workflow against a real repository in a directory, a
clean one marks its backups ok, one flipped byte in a pack marks exactly the backups whose
snapshots use it damaged (naming the files) and records backup.verify_failed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from backups import keys, policies, verify
from backups.models import Backup
from hivemind.workflows.models import Workflow
from tenants.models import AuditEvent
from tests.backups.test_policies import location_of, make_backups
from tests.backups.test_runs import drive


@pytest.fixture
def policy(world):
    import shutil

    made = policies.policy_create(tenant=world.a, name="checked", location=location_of(world.a), keep_last=5,
                                  actor=None)  # fmt: skip
    yield made
    shutil.rmtree(made.location.config["path"], ignore_errors=True)


def _pack_of(location, snapshot: str) -> str:
    """The pack file holding the (one) chunk of a blob snapshot."""
    repository = keys.open_for(location)
    repository.load_index(full=True)
    chunk = repository._snapshot(snapshot)["chunks"][0]
    pack_id = repository.index[bytes.fromhex(chunk)][0]
    return f"{location.config['path']}/data/{pack_id[:2]}/{pack_id}"


def test_a_clean_repository_verifies_ok_through_the_api_and_the_workflow(world, policy):
    made = make_backups(policy, 2)
    response = world.client("operator").post(reverse("api:backup-policy-verify", args=[policy.pk]),
                                             {"read_percent": 50}, format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    assert response.json()["read_data"] == 50 and response.json()["location"] == "pol"
    assert world.client("viewer").post(reverse("api:backup-policy-verify", args=[policy.pk])).status_code == 403
    workflow = drive(Workflow.objects.get(pk=response.json()["workflow"]))
    assert workflow.state == "succeeded", workflow.error
    for backup in Backup.objects.filter(pk__in=[b.pk for b in made]):
        assert backup.verified == "ok" and backup.verified_at is not None
        assert backup.verify_report["read_data"] == 50 and backup.verify_report["packs"] >= 4
    assert not AuditEvent.objects.filter(action="backup.verify_failed").exists()


def test_one_flipped_byte_marks_exactly_the_backups_using_that_pack_damaged(world, policy):
    made = make_backups(policy, 3)
    victim = made[1]
    volume_snapshot = victim.volumes[0]["snapshot"]
    path = _pack_of(policy.location, volume_snapshot)
    with open(path, "r+b") as pack:
        pack.seek(40)
        byte = pack.read(1)
        pack.seek(40)
        pack.write(bytes([byte[0] ^ 0xFF]))

    structure = verify.verify_location(policy.location, read_data=False)  # sizes are right: not found
    assert structure["damaged"] == [] and len(structure["ok"]) == 3

    result = verify.verify_location(policy.location, read_data=True)
    assert result["damaged"] == [victim.pk] and sorted(result["ok"]) == sorted(b.pk for b in made if b != victim)
    victim.refresh_from_db()
    assert victim.verified == "damaged"
    assert victim.verify_report["files_affected"] == {"volume data": ["volume"]}
    assert any(key.startswith("data/") for key in victim.verify_report["damaged_objects"])
    assert all(b.verified == "ok" for b in Backup.objects.exclude(pk=victim.pk))
    event = AuditEvent.objects.get(action="backup.verify_failed")
    assert event.tenant == world.a and event.changes["backups"] == [victim.pk]
    assert event.changes["location"] == "pol"


def test_read_data_is_checked(policy):
    with pytest.raises(Exception, match="a percentage 0 to 100"):
        verify.verify_start(location=policy.location, read_data=150, actor=None)
