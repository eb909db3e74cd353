"""The dashboard's Backups pages through Django's test client: locations with their last check
(and the Check button for those who may), policies, backups with sizes, dedup and
verification, one backup's page; another tenant's backup is a 404 and never listed."""

from __future__ import annotations

import re

import pytest

from backups import services
from backups.models import Backup, BackupLocation, BackupPolicy

MiB = 1 << 20


def text(response) -> str:
    return response.content.decode()


@pytest.fixture
def stored(world) -> dict:
    staff = world.users["staff"]
    nightly = services.location_create(tenant=world.a, name="nightly", kind="local", config={"path": "nightly"},
                                       actor=staff)  # fmt: skip
    theirs = services.location_create(tenant=world.b, name="theirs", kind="local", config={"path": "theirs"},
                                      actor=staff)  # fmt: skip
    policy = BackupPolicy.objects.create(tenant=world.a, name="daily", location=nightly, schedule="0 3 * * *",
                                         keep_daily=7)  # fmt: skip
    done = Backup.objects.create(
        tenant=world.a, location=nightly, policy=policy, status="succeeded", files=12, bytes_read=300 * MiB,
        bytes_new=100 * MiB, verified="damaged",
        volumes=[{"name": "data", "state": "done", "files": 12, "bytes_read": 300 * MiB, "bytes_new": 100 * MiB,
                  "encrypted": True}],
        verify_report={"damaged": {"data/ab/ab12": "fails its authentication tag"}},
    )  # fmt: skip
    secret = Backup.objects.create(tenant=world.b, location=theirs, status="succeeded", bytes_read=1, bytes_new=1)
    return {"nightly": nightly, "done": done, "secret": secret}


def test_members_see_locations_policies_and_backups(world, stored, login):
    page = text(login("viewer").get("/backups/"))
    location = re.search(r'<table id="location-table">.*?</table>', page, re.S).group(0)
    assert "<td>nightly</td>" in location and "state-unknown" in location and "theirs" not in location
    assert "Check</button>" not in location  # a viewer may not
    policies = re.search(r'<table id="policy-table">.*?</table>', page, re.S).group(0)
    assert "<td>daily</td>" in policies and "<code>0 3 * * *</code>" in policies and "daily 7" in policies
    row = re.search(rf'<tr><td><a href="/backups/{stored["done"].pk}/">.*?</tr>', page, re.S).group(0)
    assert "300 MiB" in row and "100 MiB" in row and "3.0x" in row and "state-damaged" in row
    assert f"/backups/{stored['secret'].pk}/" not in page
    operator = text(login("operator").get("/backups/"))
    assert f'action="/backups/locations/{stored["nightly"].pk}/check/"' in operator


def test_a_backups_page_shows_its_volumes_and_damage(world, stored, login):
    page = text(login("viewer").get(f"/backups/{stored['done'].pk}/"))
    assert (
        '<td>data</td><td><span class="state state-done">done</span></td><td>12</td><td>300 MiB</td>'
        "<td>100 MiB</td><td>yes (stored as ciphertext)</td>"
    ) in page
    assert "<code>data/ab/ab12</code>: fails its authentication tag" in page
    assert '<a href="/backups/" aria-current="page">Backups</a>' in page


def test_another_tenants_backup_and_location_are_404(world, stored, login):
    client = login("owner")
    assert client.get(f"/backups/{stored['secret'].pk}/").status_code == 404
    theirs = BackupLocation.objects.get(name="theirs")
    assert client.post(f"/backups/locations/{theirs.pk}/check/").status_code == 404


def test_check_from_the_page(world, stored, login):
    assert login("viewer").post(f"/backups/locations/{stored['nightly'].pk}/check/").status_code == 403
    response = login("operator").post(f"/backups/locations/{stored['nightly'].pk}/check/", follow=True)
    assert "reachable and writable" in text(response)
    assert BackupLocation.objects.get(pk=stored["nightly"].pk).check_state == "ok"


def test_back_up_now_starts_a_run_of_the_whole_tenant(world, stored, login):
    url = f"/backups/locations/{stored['nightly'].pk}/back-up/"
    assert login("viewer").post(url).status_code == 403
    response = login("operator").post(url)
    backup = Backup.objects.filter(location=stored["nightly"]).exclude(pk=stored["done"].pk).get()
    assert response.status_code == 302 and response["Location"] == f"/backups/{backup.pk}/"
    assert backup.scope == "tenant" and backup.workflow is not None and backup.workflow.kind == "backup.run"
    page = text(login("viewer").get(f"/backups/{backup.pk}/"))
    assert f'<a href="/workflows/{backup.workflow.pk}/">workflow {backup.workflow.pk}</a>' in page
