"""The dashboard's Volumes pages through Django's test client: what a member of the tenant sees
(size and use with a bar, pool and node, snapshots, clones, the apps mounting it), the
navigation, and the scoping (another tenant's volume is a 404 and never listed)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from storage import services
from storage.models import Snapshot, StoragePool, Volume
from tests.api_suite import ROLE_ORDER
from tests.dashboard.conftest import deploy

GiB = 1 << 30


def text(response) -> str:
    return response.content.decode()


@pytest.fixture
def vols(world, ready_node) -> dict:
    """`data` in tenant A (4 GiB, 1 GiB used, a snapshot, a clone, mounted by app `db`); `secret-vol` in B."""
    staff = world.users["staff"]
    StoragePool.objects.create(
        name="fast", provider="btrfs", node=ready_node, path="/srv/fast", is_default=True,
        capacity_bytes=100 * GiB, free_bytes=90 * GiB,
    )  # fmt: skip
    data = services.volume_create(tenant=world.a, name="data", size="4Gi", actor=staff, labels={"tier": "db"})
    Volume.objects.filter(pk=data.pk).update(status=Volume.Status.READY, used_bytes=GiB)
    data.refresh_from_db()
    snapshot = services.snapshot_create(volume=data, name="nightly", actor=staff)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
    clone = services.volume_clone(snapshot=Snapshot.objects.get(pk=snapshot.pk), name="data-copy", actor=staff)
    db = deploy(world.a, "db", staff, volumes=[{"volume": "data", "path": "/data"}])
    secret = services.volume_create(tenant=world.b, name="secret-vol", size="1Gi", actor=staff)
    return {"data": data, "clone": clone, "db": db, "secret": secret}


@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
def test_every_member_sees_the_list_and_a_volumes_page(world, vols, login, role):
    client = login(role.value)
    data = vols["data"]
    listed = client.get("/volumes/")
    assert listed.status_code == 200
    page = text(listed)
    row = re.search(rf'<tr><td><a href="/volumes/{data.pk}/">data</a>.*?</tr>', page, re.S).group(0)
    assert "4 GiB" in row and "1 GiB" in row and 'aria-valuenow="25"' in row and "width: 25" in row
    assert "fast" in row and world.a.slug not in row and "<td>db</td>" in row and "<td>1</td>" in row
    assert "data-copy" in page and "secret-vol" not in page
    assert "/srv/fast" not in page  # host paths never show

    detail = client.get(f"/volumes/{data.pk}/")
    assert detail.status_code == 200
    page = text(detail)
    assert "1 GiB used of 4 GiB (25 %)" in page
    assert "<td>nightly</td>" in page and '<span class="tag">tier=db</span>' in page
    assert f'<a href="/apps/{vols["db"].pk}/">db</a>' in page
    assert f'<a href="/volumes/{vols["clone"].pk}/">data-copy</a> from nightly' in page
    assert "/srv/fast" not in page and "secret" not in page
    clone_page = text(client.get(f"/volumes/{vols['clone'].pk}/"))
    assert f'<a href="/volumes/{data.pk}/">data</a>@nightly' in clone_page


def test_the_navigation_links_the_volumes_page(world, vols, login):
    client = login("viewer")
    assert '<a href="/volumes/">Volumes</a>' in text(client.get("/"))
    page = text(client.get(f"/volumes/{vols['data'].pk}/"))
    assert '<a href="/volumes/" aria-current="page">Volumes</a>' in page
    assert '<p class="crumbs"><a href="/volumes/">Volumes</a> /</p>' in page


def test_another_tenants_volume_is_a_404_and_never_listed(world, vols, login):
    secret = vols["secret"]
    client = login("owner")
    response = client.get(f"/volumes/{secret.pk}/")
    assert response.status_code == 404 and "secret" not in text(response)
    assert client.get("/volumes/999999/").status_code == 404
    assert "secret" not in text(client.get("/volumes/"))
    for url in ("/volumes/", f"/volumes/{vols['data'].pk}/"):
        assert Client().get(url).status_code == 302, url  # anonymous: to the login page
