"""Volumes, snapshots and storage pools through the API, without a node at work: the shared
permission suite, quotas, and every bad input as a 400 or 409 that names the problem. The
workflows themselves run on real btrfs with real agents in tests/storage/test_volumes.py."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hivemind.applications import services as app_services
from hivemind.nodes.models import Node
from storage import services
from storage.models import Snapshot, StoragePool, Volume
from tenants.models import Role, TenantUsage
from tenants.services import quota_set
from tests.api_suite import StaffOnlyAPITests, TenantOwnedAPITests

GiB = 1 << 30


def make_pool(name: str = "fast", *, free: int = 100 * GiB, provider: str = "btrfs", node: str = "st-1") -> StoragePool:
    """A pool row as its agent would have reported it (ready, with room); nothing on disk."""
    found, _ = Node.objects.get_or_create(
        name=node, defaults={"address": "10.250.0.1", "cpu_millis": 4000, "memory_bytes": 8 * GiB, "status": "ready"}
    )
    return StoragePool.objects.create(
        name=name, provider=provider, node=found, path=f"/srv/{name}", is_default=True, capacity_bytes=free,
        free_bytes=free,
    )  # fmt: skip


def ready(volume: Volume) -> Volume:
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.READY)
    volume.refresh_from_db()
    return volume


@pytest.fixture
def pool(db):
    return make_pool()


class TestVolumeAPI(TenantOwnedAPITests):
    basename = "volume"
    supports = {"create", "delete"}
    custom_actions = [
        ("expand", "post"), ("snapshot", "post"), ("revert", "post"), ("clone", "post"), ("replicate", "post"),
        ("replica", "get"), ("replica", "delete"), ("promote", "post"),
    ]  # fmt: skip

    def make(self, world, tenant):
        if not StoragePool.objects.exists():
            make_pool()
        volume = services.volume_create(
            tenant=tenant, name=f"vol-{Volume.objects.count()}", size="1Gi", actor=world.users["staff"]
        )
        return ready(volume)

    def create_payload(self, world, tenant):
        if not StoragePool.objects.exists():
            make_pool()
        return {"tenant": tenant.slug, "name": f"new-{Volume.objects.count()}", "size": "2Gi"}


class TestSnapshotAPI(TenantOwnedAPITests):
    basename = "snapshot"
    supports = {"delete"}

    def make(self, world, tenant):
        volume = TestVolumeAPI().make(world, tenant)
        snapshot = services.snapshot_create(volume=volume, name=f"snap-{Snapshot.objects.count()}", actor=None)
        Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
        return snapshot


class TestStoragePoolAPI(StaffOnlyAPITests):
    basename = "storage-pool"
    missing_key = "999999"

    def make(self, world):
        return make_pool(f"pool-{StoragePool.objects.count()}")

    def create_payload(self, world):
        Node.objects.get_or_create(name="st-1", defaults={"address": "10.250.0.1", "status": "ready"})
        count = StoragePool.objects.count()
        return {"name": f"new-{count}", "provider": "local", "node": "st-1", "path": f"/srv/new-{count}"}

    def update_payload(self, world):
        return {"is_default": False}


def test_create_holds_quota_and_answers_202_with_the_workflow(world, pool):
    client = world.client(Role.OPERATOR.value)
    response = client.post(
        reverse("api:volume-list"), {"tenant": world.a.slug, "name": "data", "size": "10Gi"}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["size_bytes"] == 10 * GiB and body["status"] == "creating" and body["workflow"]
    assert body["pool"] == "fast" and body["node"] == "st-1" and body["provider"] == "btrfs"
    assert "path" not in body and "/srv" not in response.content.decode()  # host paths never show
    usage = TenantUsage.objects.get(tenant=world.a)
    assert usage.volumes == 1 and usage.storage_bytes == 10 * GiB


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "data", "size": "10Gx"}, "size"),
        ({"name": "data", "size": "-1"}, "size"),
        ({"name": "data", "size": "512Ki"}, "size"),
        ({"name": "data", "size": ""}, "size"),
        ({"name": "Not_A_Label", "size": "1Gi"}, "name"),
        ({"name": "data", "size": "1Gi", "pool": "nope"}, "pool"),
        ({"name": "data", "size": "1Gi", "access_mode": "ReadWriteMany"}, "access_mode"),
        ({"name": "data", "size": "1Gi", "access_mode": "Sometimes"}, "access_mode"),
        ({"name": "data", "size": "1Gi", "labels": {"Bad Key": "x"}}, "labels"),
        ({"name": "data", "size": "1Gi", "encrypted": "maybe"}, "encrypted"),
        ({"name": "data", "size": "1Gi", "size_bytes": 5}, "size_bytes"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, pool, payload, field):
    response = world.client("staff").post(
        reverse("api:volume-list"), {"tenant": world.a.slug, **payload}, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Volume.objects.exists()


def test_a_pool_without_room_is_a_409_with_its_free_space(world):
    make_pool(free=3 * GiB)
    response = world.client("staff").post(
        reverse("api:volume-list"), {"tenant": world.a.slug, "name": "big", "size": "5Gi"}, format="json"
    )
    assert response.status_code == 409, response.content
    assert "3Gi free" in response.json()["detail"]
    assert not Volume.objects.exists() and TenantUsage.objects.get(tenant=world.a).storage_bytes in (0, None)


def test_quota_volumes_and_storage(world, pool):
    quota_set(tenant=world.a, limits={"storage": 3 * GiB, "volumes": 2}, actor=None)
    client = world.client("staff")
    url = reverse("api:volume-list")
    assert client.post(url, {"tenant": world.a.slug, "name": "one", "size": "2Gi"}, format="json").status_code == 202
    over = client.post(url, {"tenant": world.a.slug, "name": "two", "size": "2Gi"}, format="json")
    assert over.status_code == 409 and over.json()["code"] == "quota_exceeded", over.content
    assert "quota exceeded for storage" in over.json()["detail"]
    assert client.post(url, {"tenant": world.a.slug, "name": "two", "size": "1Gi"}, format="json").status_code == 202
    third = client.post(url, {"tenant": world.a.slug, "name": "three", "size": "1Mi"}, format="json")
    assert third.status_code == 409 and "quota exceeded for volumes" in third.json()["detail"]
    assert Volume.objects.filter(tenant=world.a).count() == 2


def test_a_name_taken_is_a_409(world, pool):
    services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None)
    response = world.client("staff").post(
        reverse("api:volume-list"), {"tenant": world.a.slug, "name": "data", "size": "1Gi"}, format="json"
    )
    assert response.status_code == 409 and response.json()["code"] == "volume_exists"


def test_expand_never_shrinks_and_holds_the_difference(world, pool):
    volume = ready(services.volume_create(tenant=world.a, name="data", size="2Gi", actor=None))
    client = world.client("staff")
    url = reverse("api:volume-expand", args=[volume.pk])
    shrink = client.post(url, {"size": "1Gi"}, format="json")
    assert shrink.status_code == 400 and "cannot shrink" in shrink.json()["size"][0]
    same = client.post(url, {"size": "2Gi"}, format="json")
    assert same.status_code == 400
    assert client.post(url, {"size": "lots"}, format="json").status_code == 400
    grow = client.post(url, {"size": "5Gi"}, format="json")
    assert grow.status_code == 202, grow.content
    assert TenantUsage.objects.get(tenant=world.a).storage_bytes == 5 * GiB
    again = client.post(url, {"size": "6Gi"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "volume_busy"


def test_what_a_provider_cannot_do_is_a_400(world):
    make_pool(provider="local")
    volume = ready(services.volume_create(tenant=world.a, name="plain", size="1Gi", actor=None))
    client = world.client("staff")
    from storage.providers import registry

    if not registry.get("local").capabilities.snapshot:
        response = client.post(reverse("api:volume-snapshot", args=[volume.pk]), {"name": "s1"}, format="json")
        assert response.status_code == 400 and "no snapshots" in response.content.decode()


def test_deleting_a_volume_an_app_mounts_is_a_409_naming_the_app(world, pool):
    volume = ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    spec = {"image": "hivemind/busybox:latest", "volumes": [{"volume": "data", "path": "/data"}]}
    app_services.app_deploy(tenant=world.a, name="db", spec=spec, actor=world.users["staff"])
    response = world.client("staff").delete(reverse("api:volume-detail", args=[volume.pk]))
    assert response.status_code == 409 and "db" in response.json()["detail"]
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.READY


@pytest.mark.parametrize(
    ("mounts", "field"),
    [
        ([{"volume": "data", "path": "data"}], "volumes[0].path"),
        ([{"volume": "data", "path": "/data/../etc"}], "volumes[0].path"),
        ([{"volume": "data", "path": "/proc/x"}], "volumes[0].path"),
        ([{"volume": "data", "path": "/"}], "volumes[0].path"),
        ([{"volume": "data", "path": "/etc"}], "volumes[0].path"),
        ([{"volume": "data", "path": "/a"}, {"volume": "data", "path": "/a"}], "volumes[1].path"),
        ([{"volume": "Data!", "path": "/a"}], "volumes[0].volume"),
        ([{"volume": "data", "path": "/a", "read_only": "yes"}], "volumes[0].read_only"),
        ([{"volume": "data", "path": "/a", "host": "/etc"}], "volumes[0]"),
        ([{"volume": "theirs", "path": "/a"}], "volumes[0].volume"),  # tenant B's volume: not A's
        ("data", "volumes"),
    ],
)
def test_mounts_are_checked_where_they_enter(world, pool, mounts, field):
    ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    ready(services.volume_create(tenant=world.b, name="theirs", size="1Gi", actor=None))
    spec = {"image": "hivemind/busybox:latest", "volumes": mounts}
    response = world.client("staff").post(
        reverse("api:app-list"), {"tenant": world.a.slug, "name": "db", "spec": spec}, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in str(response.json()), response.json()


def test_a_pool_holding_volumes_cannot_be_deleted(world, pool):
    services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None)
    response = world.client("staff").delete(reverse("api:storage-pool-detail", args=[pool.pk]))
    assert response.status_code == 409 and "tenant-a/data" in response.json()["detail"]


def test_pool_create_checks_its_fields(world):
    Node.objects.create(name="st-2", address="10.250.0.2", status="ready")
    client = world.client("staff")
    url = reverse("api:storage-pool-list")
    for payload, field in [
        ({"name": "p", "provider": "zfs", "node": "st-2", "path": "/srv/p"}, "provider"),
        ({"name": "p", "provider": "local", "node": "nope", "path": "/srv/p"}, "node"),
        ({"name": "p", "provider": "local", "node": "st-2", "path": "srv/p"}, "path"),
        ({"name": "p", "provider": "local", "node": "st-2", "path": "/srv/../etc"}, "path"),
        ({"name": "P P", "provider": "local", "node": "st-2", "path": "/srv/p"}, "name"),
    ]:
        response = client.post(url, payload, format="json")
        assert response.status_code == 400 and field in response.json(), (payload, response.content)
    made = client.post(url, {"name": "p", "provider": "local", "node": "st-2", "path": "/srv/p"}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["capabilities"]["snapshot"] in (True, False)


# --- replication (the transfers themselves: tests/storage/test_replication.py) --------------------


def test_replicate_checks_its_target_and_reports_the_replica(world, pool):
    from storage.models import VolumeReplica

    volume = ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    make_pool("here", node="st-1")
    make_pool("plain", provider="local", node="st-2")
    make_pool("there", node="st-2")
    client = world.client(Role.OPERATOR.value)
    url = reverse("api:volume-replicate", args=[volume.pk])
    for payload, field, words in [
        ({"pool": "nope"}, "pool", "no storage pool"),
        ({"pool": "here"}, "pool", "another node"),
        ({"pool": "plain"}, "pool", "btrfs pool"),
        ({"pool": "there", "interval": 1}, "interval", "greater than or equal to 5"),
        ({"pool": "there", "interval": "often"}, "interval", "valid integer"),
        ({}, "pool", "required"),
    ]:
        response = client.post(url, payload, format="json")
        assert response.status_code == 400 and words in str(response.json()[field]), (payload, response.content)
    assert not VolumeReplica.objects.exists()
    assert client.get(reverse("api:volume-replica", args=[volume.pk])).status_code == 404

    response = client.post(url, {"pool": "there", "interval": 300}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["workflow"] and body["replica"]["pool"] == "there" and body["replica"]["node"] == "st-2"
    assert body["replica"]["state"] == "replicating" and body["replica"]["lag_seconds"] is None
    # Another pool while one replica exists: a 409 that says how to go on.
    make_pool("yonder", node="st-3")
    again = client.post(url, {"pool": "yonder"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "replica_exists"
    # The volume cannot be deleted while it has a replica.
    gone = client.delete(reverse("api:volume-detail", args=[volume.pk]))
    assert gone.status_code == 409 and gone.json()["code"] == "volume_replicated"
    shown = world.client(Role.VIEWER.value).get(reverse("api:volume-replica", args=[volume.pk]))
    assert shown.status_code == 200 and shown.json()["interval"] == 300


def test_promote_needs_a_transfer_and_a_lost_node_unless_forced(world, pool):
    from django.utils import timezone

    from storage.models import VolumeReplica

    volume = ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    client = world.client(Role.OPERATOR.value)
    url = reverse("api:volume-promote", args=[volume.pk])
    assert client.post(url, {}, format="json").json()["code"] == "no_replica"
    replica = VolumeReplica.objects.create(volume=volume, pool=make_pool("there", node="st-2"))
    assert client.post(url, {}, format="json").json()["code"] == "replica_empty"
    VolumeReplica.objects.filter(pk=replica.pk).update(state="ready", last_success_at=timezone.now())
    refused = client.post(url, {}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "source_ready", refused.content
    assert client.post(url, {"force": "maybe"}, format="json").status_code == 400
    forced = client.post(url, {"force": True}, format="json")
    assert forced.status_code == 202, forced.content
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.BUSY
    assert VolumeReplica.objects.get(pk=replica.pk).state == "promoting"
    assert client.post(url, {"force": True}, format="json").status_code == 409


def test_storage_metrics_with_tenant_labels_pass_promtool(world, pool):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_metrics import promtool_check

    volume = ready(services.volume_create(tenant=world.a, name="data", size="2Gi", actor=None))
    Volume.objects.filter(pk=volume.pk).update(used_bytes=12345)
    snapshot = services.snapshot_create(volume=volume, name="s1", actor=None)
    Snapshot.objects.filter(pk=snapshot.pk).update(status=Snapshot.Status.READY)
    text = world.client("staff").get("/metrics").content.decode()  # the engine's series: staff's
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    volume_labels = (("node", "st-1"), ("pool", "fast"), ("tenant", "tenant-a"), ("volume", "data"))
    assert samples[("hivemind_storage_pool_capacity_bytes", (("node", "st-1"), ("pool", "fast"),
                                                             ("provider", "btrfs")))] == 100 * GiB  # fmt: skip
    assert samples[("hivemind_storage_pool_ready", (("node", "st-1"), ("pool", "fast")))] == 1
    assert samples[("hivemind_volume_size_bytes", volume_labels)] == 2 * GiB
    assert samples[("hivemind_volume_used_bytes", volume_labels)] == 12345
    assert samples[("hivemind_volume_snapshots", (("tenant", "tenant-a"), ("volume", "data")))] == 1
    assert promtool_check(text) == ""


def test_the_admin_lists_pools_volumes_and_snapshots_read_only(world, pool, admin_client):
    volume = ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    services.snapshot_create(volume=volume, name="s1", actor=None)
    for model in ("storagepool", "volume", "snapshot"):
        page = admin_client.get(reverse(f"admin:storage_{model}_changelist"))
        assert page.status_code == 200, model
        assert admin_client.get(reverse(f"admin:storage_{model}_add")).status_code == 403
    page = admin_client.get(reverse("admin:storage_volume_change", args=[volume.pk]))
    assert page.status_code == 200 and b"s1" in page.content


@pytest.mark.parametrize(
    ("templates", "field"),
    [
        ([{"name": "data", "size": "1Gx", "path": "/data"}], "volume_templates[0].size"),
        ([{"name": "data", "size": "1Gi", "path": "/proc"}], "volume_templates[0].path"),
        ([{"name": "Data", "size": "1Gi", "path": "/data"}], "volume_templates[0].name"),
        ([{"name": "d", "size": "1Gi", "path": "/a"}, {"name": "d", "size": "1Gi", "path": "/b"}],
         "volume_templates[1].name"),
        ([{"name": "d", "size": "1Gi", "path": "/vol"}], "volume_templates[0].path"),  # over the mount below
        ([{"name": "d", "size": "1Gi", "path": "/a", "pool": "nope"}], "volume_templates[0].pool"),
        ([{"name": "d", "size": "1Gi", "path": "/a", "hostPath": "/"}], "volume_templates[0]"),
        ([{"name": "x" * 60, "size": "1Gi", "path": "/a"}], "volume_templates[0].name"),  # db-xxx…-0 > 63
        ({"name": "d"}, "volume_templates"),
    ],
)  # fmt: skip
def test_volume_templates_are_checked_where_they_enter(world, pool, templates, field):
    ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    spec = {
        "image": "hivemind/busybox:latest",
        "volumes": [{"volume": "data", "path": "/vol"}],
        "volume_templates": templates,
    }
    response = world.client("staff").post(
        reverse("api:app-list"), {"tenant": world.a.slug, "name": "db", "spec": spec}, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in str(response.json()), response.json()


def test_a_snapshot_schedule_is_a_periodic_task_set_changed_and_removed(world, pool):
    from django_celery_beat.models import PeriodicTask

    volume = ready(services.volume_create(tenant=world.a, name="data", size="1Gi", actor=None))
    client = world.client(Role.OPERATOR.value)
    url = reverse("api:volume-snapshot-schedule", args=[volume.pk])
    for body, field in [
        ({"every": "30s"}, "every"),  # less than a minute
        ({"every": "soon"}, "every"),
        ({"every": "1h", "keep": 0}, "keep"),
        ({"every": "1h", "keep": 5000}, "keep"),
        ({"every": "1h", "at": "noon"}, "at"),
    ]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)
    assert not PeriodicTask.objects.filter(name=f"volume-snapshots-{volume.pk}").exists()
    made = client.post(url, {"every": "1h", "keep": 24}, format="json")
    assert made.status_code == 200, made.content
    assert made.json()["snapshot_schedule"] == {"every": 3600, "keep": 24, "enabled": True, "last_run_at": None}
    task = PeriodicTask.objects.get(name=f"volume-snapshots-{volume.pk}")
    assert task.task == "storage.scheduled_snapshot" and task.interval.every == 3600
    changed = client.post(url, {"every": "15m", "keep": 4}, format="json")
    assert changed.json()["snapshot_schedule"]["every"] == 900
    assert PeriodicTask.objects.filter(name=f"volume-snapshots-{volume.pk}").count() == 1
    assert client.post(url, {"every": "off"}, format="json").json()["snapshot_schedule"] is None
    assert not PeriodicTask.objects.filter(name=f"volume-snapshots-{volume.pk}").exists()
    viewer = world.client(Role.VIEWER.value).post(url, {"every": "1h"}, format="json")
    assert viewer.status_code == 403


def test_a_volume_being_created_cannot_go_but_a_waiting_template_volume_can(world, pool):
    client = world.client("staff")
    creating = services.volume_create(tenant=world.a, name="new", size="1Gi", actor=None)  # its workflow is on
    busy = client.delete(reverse("api:volume-detail", args=[creating.pk]))
    assert busy.status_code == 409 and busy.json()["code"] == "volume_creating"
    # A replica's template volume waits in `creating` with no workflow until its replica starts;
    # when the app went first, it can still be deleted.
    waiting = Volume.objects.create(tenant=world.a, name="db-data-0", pool=pool, size_bytes=GiB)
    assert waiting.status == Volume.Status.CREATING
    assert client.delete(reverse("api:volume-detail", args=[waiting.pk])).status_code == 202
    assert Volume.objects.get(pk=waiting.pk).status == Volume.Status.DELETING
