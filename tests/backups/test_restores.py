"""The restore controller (backups/restores.py, restore_steps.py, apply.py).

Backups are made here as a run makes them (a state document and volume trees in the
location's repository, a Backup row naming their snapshots); restores run their workflows in
this process, step by step, as the workers would (`drive`), so nothing needs a worker except
where a volume's own create workflow must run on its node (driven the same way).

- a dry run into another tenant with renames, then the real restore: the plan it stores is the
  dry run's, and the apps, networks and volumes exist under the new names;
- conflicts skip, replace, rename on an app that exists;
- a volume's data restored byte-identical into a new volume on a real btrfs pool, and files
  restored from it into a directory of a volume;
- a damaged chunk: the file restore fails naming the pack and the file, nothing at the final
  names, an unaffected file restores;
- what is asked is checked (selection, encrypted volumes, another tenant's backup).
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.exceptions import NotFound, ValidationError

from backups import keys, policies, restores, services, state
from backups.models import Backup, BackupLocation, BackupPolicy, Restore
from backups.repository import DamagedObject
from backups.repository.packs import pack_key
from backups.stores import LocalStore
from hivemind.applications import services as apps
from hivemind.applications.models import App
from hivemind.nodes.models import Node
from hivemind.workflows import engine
from hivemind.workflows.models import StepState, Workflow, WorkflowState
from networking import services as networking
from networking.models import Network
from storage.models import StoragePool, Volume
from storage.steps import provider_of
from tenants.models import WrappedKey
from tests.api_suite import TenantOwnedAPITests
from tests.backups.workflows import drive as drive_workflow
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.storage.conftest import btrfs_mount, btrfs_root  # noqa: F401 - the session's btrfs file system

SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
}
GiB = 1 << 30


def this_node() -> Node:
    node, _ = Node.objects.update_or_create(name=settings.NODE_NAME, defaults={"status": Node.Status.READY})
    return node


def paper_pool() -> StoragePool:
    """A pool row only (no workflow of its volumes runs in the tests that use it)."""
    return StoragePool.objects.create(name="paper", provider="btrfs", node=this_node(), path="/srv/paper",
                                      is_default=True, capacity_bytes=100 * GiB, free_bytes=100 * GiB)  # fmt: skip


def drive(workflow: Workflow, limit: int = 60) -> Workflow:
    """Run a workflow's steps here as the workers would; a restore's volume_data step runs
    once the volumes' own create workflows have been driven."""

    def volumes_first(step) -> None:
        if step.name == "restore.volume_data":
            for other in Workflow.objects.filter(kind="volume.create", state=WorkflowState.RUNNING):
                drive(other)

    return drive_workflow(workflow, limit, before=volumes_first)


@pytest.fixture
def location(world):
    made = services.location_create(tenant=world.a, name="here", kind="local",
                                    config={"path": f"restores-{secrets.token_hex(6)}"}, actor=None)  # fmt: skip
    Path(made.config["path"]).mkdir(parents=True, exist_ok=True)
    yield made
    shutil.rmtree(made.config["path"], ignore_errors=True)


def make_backup(tenant, location, volumes: dict | None = None) -> Backup:
    """A backup as a run makes one: the tenant's document, each volume's tree (name: directory)."""
    repository = keys.open_for(location, create=True)
    document = repository.backup_blob("state", state.dumps(state.tenant_state(tenant)), meta={"kind": "state"})
    entries = []
    for name, directory in (volumes or {}).items():
        volume = Volume.objects.get(tenant=tenant, name=name)
        tree = repository.backup_tree(directory, meta={"kind": "volume", "volume": name})
        entries.append({"name": name, "volume": volume.pk, "volume_id": volume.pk, "snapshot": tree.id,
                        "size": tree.bytes_read, "files": tree.files, "bytes_read": tree.bytes_read,
                        "bytes_new": tree.bytes_new_stored, "encrypted": volume.encrypted,
                        "state": "done"})  # fmt: skip
    now = timezone.now()
    return Backup.objects.create(tenant=tenant, location=location, status=Backup.Status.SUCCEEDED,
                                 repository_id=repository.id, state_snapshot=document.id, volumes=entries,
                                 started_at=now, finished_at=now)  # fmt: skip


@pytest.fixture
def shop(world):
    """Tenant A: a network, a volume and an app using both; another app on the default network."""
    staff = world.users["staff"]
    paper_pool()
    networking.network_create(tenant=world.a, name="backend", actor=staff, labels={"tier": "db"})
    from storage import services as storage

    data = storage.volume_create(tenant=world.a, name="data", size="1Gi", actor=staff)
    Volume.objects.filter(pk=data.pk).update(status=Volume.Status.READY)
    mounts = [{"volume": "data", "path": "/data"}]
    apps.app_deploy(tenant=world.a, name="web", replicas=2, actor=staff,
                    spec={**SPEC, "networks": ["backend"], "volumes": mounts})  # fmt: skip
    apps.app_deploy(tenant=world.a, name="worker", actor=staff, spec=SPEC)
    return world.a


def summary(plan: list[dict]) -> list[tuple[str, str, str, str]]:
    return [(a["action"], a["kind"], a["source"], a["name"]) for a in plan]


def test_a_dry_run_lists_exactly_what_the_real_restore_then_does_into_another_tenant(world, shop, location):
    backup = make_backup(shop, location)
    owner_b = world.users["outsider"]
    rename = {"apps": {"web": "storefront"}, "networks": {"backend": "db-net"}}
    dry = restores.restore_start(backup=backup, into_tenant=world.b, rename=rename, dry_run=True, actor=owner_b)
    assert dry.status == Restore.Status.SUCCEEDED and dry.workflow is None
    assert summary(dry.plan) == [
        ("create", "network", "backend", "db-net"),
        ("create", "network", "default", "default"),
        ("create", "volume", "data", "data"),
        ("create", "app", "web", "storefront"),
        ("create", "app", "worker", "worker"),
    ]
    assert not App.objects.filter(tenant=world.b).exists()  # a dry run writes nothing
    [web] = [a for a in dry.plan if a["source"] == "web"]
    assert web["object"]["spec"]["networks"] == ["db-net"]

    real = restores.restore_start(backup=backup, into_tenant=world.b, rename=rename, actor=owner_b)
    assert real.status == Restore.Status.PENDING and real.workflow.kind == "backup.restore"
    finished = drive(real.workflow)
    real.refresh_from_db()
    assert finished.state == WorkflowState.SUCCEEDED, finished.error
    assert real.status == Restore.Status.SUCCEEDED and real.plan == dry.plan
    assert not real.result.get("plan_changed")
    storefront = App.objects.select_related("revision").get(tenant=world.b, name="storefront")
    assert storefront.replicas == 2 and storefront.revision.spec["networks"] == ["db-net"]
    assert storefront.revision.spec["volumes"][0]["volume"] == "data"
    assert App.objects.filter(tenant=world.b, name="worker").exists()
    assert Network.objects.get(tenant=world.b, name="db-net").labels == {"tier": "db"}
    assert Volume.objects.get(tenant=world.b, name="data").size_bytes == GiB
    steps = list(finished.steps.filter(phase="forward").order_by("index").values_list("name", flat=True))
    assert steps == ["restore.plan", "restore.apply", "restore.apps", "restore.finish"]
    # A second dry run now finds what the restore made.
    again = restores.restore_start(backup=backup, into_tenant=world.b, rename=rename, dry_run=True, actor=owner_b)
    assert {a["action"] for a in again.plan} == {"skip"}


@pytest.mark.parametrize(
    ("conflicts", "expected"),
    [
        ("skip", [("skip", "app", "web", "web")]),
        ("replace", [("replace", "app", "web", "web")]),
        ("rename", [("create", "app", "web", "web-restored")]),
    ],
)
def test_conflicts_on_an_existing_app(world, shop, location, conflicts, expected):
    backup = make_backup(shop, location)
    staff = world.users["staff"]
    web = App.objects.get(tenant=shop, name="web")
    apps.app_update(app=web, spec={**SPEC, "env": {"MODE": "changed"}, "networks": ["backend"]}, actor=staff)
    restore = restores.restore_start(backup=backup, into_tenant=shop, selection={"apps": ["web"]},
                                     conflicts=conflicts, actor=world.users["operator"])  # fmt: skip
    assert [s for s in summary(restore.plan) if s[1] == "app"] == expected
    assert drive(restore.workflow).state == WorkflowState.SUCCEEDED
    web.refresh_from_db()
    revision = web.revisions.order_by("-number").first()
    if conflicts == "skip":
        assert revision.number == 2 and revision.spec["env"] == {"MODE": "changed"}
    elif conflicts == "replace":  # an update to the backed-up spec: a new revision
        assert revision.number == 3 and revision.change.startswith("restored")
        assert revision.spec == web.revisions.get(number=1).spec  # the backed-up spec, exactly
    else:
        copy = App.objects.select_related("revision").get(tenant=shop, name="web-restored")
        assert copy.revision.spec["networks"] == ["backend-restored"] and revision.number == 2


def test_a_failed_restore_removes_what_it_made_and_nothing_else(world, shop, location):
    backup = make_backup(shop, location)
    # The worker app's name is free in B, but an app there mounts nothing: make "storefront"'s
    # deploy fail by a network that vanished between the plan and the apps' step.
    restore = restores.restore_start(backup=backup, into_tenant=world.b, selection={"apps": ["web"]},
                                     actor=world.users["outsider"])  # fmt: skip
    workflow = restore.workflow
    for _ in range(2):  # restore.plan, restore.apply
        step = workflow.steps.filter(state=StepState.PENDING).order_by("index").first()
        engine.execute_step(step.pk, hostname="test@here")
    Network.objects.filter(tenant=world.b, name="backend").delete()  # gone before the apps' step
    Volume.objects.filter(tenant=world.b, name="data").update(status=Volume.Status.READY)  # as its workflow ends
    existing = Volume.objects.create(tenant=world.b, name="kept", pool=StoragePool.objects.get(name="paper"),
                                     size_bytes=1)  # fmt: skip
    finished = drive(workflow)
    restore.refresh_from_db()
    assert finished.state != WorkflowState.SUCCEEDED and restore.status == Restore.Status.FAILED
    assert "restore.apps" in restore.error and "backend" in restore.error
    assert not App.objects.filter(tenant=world.b).exists()
    assert Volume.objects.get(tenant=world.b, name="data").status == Volume.Status.DELETING  # its delete began
    assert Volume.objects.filter(pk=existing.pk).exists()


def test_a_point_in_time_restore_takes_the_newest_backup_before_it_and_says_per_part_the_instant(
    world, shop, location
):  # fmt: skip
    from backups.state.serialize import iso

    staff, web = world.users["staff"], App.objects.get(tenant=shop, name="web")
    first = make_backup(shop, location)
    apps.app_update(app=web, spec={**SPEC, "env": {"MODE": "then"}, "networks": ["backend"]}, actor=staff)
    at = timezone.now()
    apps.app_update(app=web, spec={**SPEC, "env": {"MODE": "later"}, "networks": ["backend"]}, actor=staff)
    later = make_backup(shop, location)
    Backup.objects.filter(pk=later.pk).update(started_at=at + timedelta(seconds=1))

    restore = restores.restore_start(backup=later, into_tenant=world.b, at=at, selection={"apps": ["web"]},
                                     dry_run=True, actor=world.users["outsider"])  # fmt: skip
    assert restore.backup == first and restore.result["at"]["backup"] == first.pk
    [app] = [a for a in restore.plan if a["kind"] == "app"]
    assert app["object"]["spec"]["env"] == {"MODE": "then"}  # the journal brought it to `at`
    instants = restore.result["at"]["state"]
    assert instants["apps"] == instants["networks"] == iso(at)
    with pytest.raises(ValidationError, match="has no succeeded backup taken before"):
        restores.restore_start(backup=later, into_tenant=world.b, at=first.started_at - timedelta(days=1),
                               dry_run=True, actor=world.users["outsider"])  # fmt: skip


def test_notifiers_come_back_without_their_secrets_and_rules_with_the_notifiers_made(world, shop, location):
    from alerting import services as alerting
    from alerting.models import AlertRule
    from notifiers import services as notifiers
    from notifiers.models import Notifier

    staff = world.users["staff"]
    mail = notifiers.notifier_create(
        tenant=shop, name="mail", kind="email", actor=staff,
        config={"host": "smtp.example.com", "from": "ops@example.com", "to": ["a@example.com"], "username": "ops"},
        secrets={"password": "smtp-password-1234"},
    )  # fmt: skip
    hook = notifiers.notifier_create(tenant=shop, name="hook", kind="webhook", config={"url": "https://h.example/x"},
                                     secrets={"secret": "s3cret-value-1234567"}, actor=staff)  # fmt: skip
    alerting.rule_create(tenant=shop, name="failures", kind="event", event="workflow_failed", severity="critical",
                         notifiers=[mail, hook], actor=staff)  # fmt: skip
    backup = make_backup(shop, location)
    restore = restores.restore_start(backup=backup, into_tenant=world.b, actor=world.users["outsider"])
    by_kind = {(a["kind"], a["source"]): a for a in restore.plan}
    mailed = by_kind[("notifier", "mail")]
    assert mailed["action"] == "create" and mailed["warnings"] == ["secrets to enter again: password"]
    hooked = by_kind[("notifier", "hook")]
    assert hooked["action"] == "skip" and "cannot work without its secrets (secret)" in hooked["reason"]
    rule = by_kind[("alert_rule", "failures")]
    assert rule["object"]["notifiers"] == ["mail"] and "without notifier(s) hook" in rule["warnings"][-1]
    assert drive(restore.workflow).state == WorkflowState.SUCCEEDED
    made = Notifier.objects.get(tenant=world.b, name="mail")
    assert made.config["username"] == "ops" and made.secret_names == []
    assert not Notifier.objects.filter(tenant=world.b, name="hook").exists()
    restored = AlertRule.objects.get(tenant=world.b, name="failures")
    assert [n.name for n in restored.notifiers.all()] == ["mail"] and restored.event == "workflow_failed"


def test_a_whole_backup_brings_the_tenant_its_members_silences_and_backup_policies_back_as_the_role_allows(
    world, location
):  # fmt: skip
    """Into its own tenant: an admin's restore sets the settings and members it may (not the
    quota, not a user the platform lacks, not the owner role); platform staff's does all, making
    the missing user without a password. Into another tenant none of it is planned."""
    from django.contrib.auth import get_user_model

    from alerting import services as alerting
    from alerting.models import Silence
    from backups.apply import undo_created
    from tenants import services as tenants
    from tenants.models import Membership, Role, ServiceAccount, TenantQuota

    staff, admin, tenant = world.users["staff"], world.users["admin"], world.a
    carol = get_user_model().objects.create_user("carol")
    tenants.membership_add(tenant=tenant, user=carol, role=Role.VIEWER, actor=staff)
    tenants.quota_set(tenant=tenant, limits={"apps": 7, "storage": 5 * GiB}, actor=staff)
    tenants.tenant_update(tenant=tenant, actor=staff, labels={"env": "prod"}, description="the shop")
    alerting.silence_create(tenant=tenant, matchers=[{"label": "app", "op": "=", "value": "web"}], actor=staff,
                            comment="maintenance", ends_at=timezone.now() + timedelta(days=30))  # fmt: skip
    policies.policy_create(tenant=tenant, name="daily", location="here", schedule="0 2 * * *", keep_daily=7,
                           actor=staff)  # fmt: skip
    tenants.service_account_create(tenant=tenant, name="ci", role=Role.OPERATOR, actor=staff, description="deploys")
    backup = make_backup(tenant, location)
    tenants.service_account_delete(account=ServiceAccount.objects.get(tenant=tenant, name="ci"), actor=staff)
    policies.policy_delete(policy=BackupPolicy.objects.get(tenant=tenant, name="daily"), actor=staff)
    # What is lost since: carol (the user too), a role changed, the quota, the labels, the silence.
    Membership.objects.filter(user=carol).delete()
    carol.delete()
    viewer = Membership.objects.get(tenant=tenant, user=world.users["viewer"])
    tenants.membership_change_role(membership=viewer, role=Role.OPERATOR, actor=staff)
    tenants.quota_set(tenant=tenant, limits={"apps": 20, "storage": None}, actor=staff)
    tenants.tenant_update(tenant=tenant, actor=staff, labels={}, description="")
    Silence.objects.filter(tenant=tenant).delete()

    def part(plan):
        return {(a["kind"], a["name"]): (a["action"], a["reason"]) for a in plan if a["kind"] in restores.TENANT_PART}

    by_admin = part(restores.restore_start(backup=backup, into_tenant=tenant, conflicts="replace", dry_run=True,
                                           actor=admin).plan)  # fmt: skip
    assert by_admin[("tenant", "tenant-a")][0] == "replace"
    assert by_admin[("quota", "tenant-a")] == ("skip", "quotas are set by platform staff: left as it is")
    assert by_admin[("member", "carol")] == (
        "skip", "no user named carol on this platform: platform staff make users")  # fmt: skip
    assert by_admin[("member", "viewer-a")][0] == "replace" and by_admin[("service_account", "ci")][0] == "create"
    assert by_admin[("member", "owner-a")][0] == "skip" and "only an owner" in by_admin[("member", "owner-a")][1]
    [silence] = [key for key in by_admin if key[0] == "silence"]
    assert by_admin[silence][0] == "create"
    into_b = restores.restore_start(backup=backup, into_tenant=world.b, dry_run=True, actor=world.users["outsider"])
    assert not part(into_b.plan)  # another tenant's members and quota are not B's
    [policy_b] = [a for a in into_b.plan if a["kind"] == "backup_policy"]
    assert policy_b["action"] == "skip" and "tenant-b has no backup location named here" in policy_b["reason"]

    restore = restores.restore_start(backup=backup, into_tenant=tenant, conflicts="replace", actor=staff)
    plan = part(restore.plan)
    assert plan[("quota", "tenant-a")][0] == "replace" and plan[("member", "carol")][0] == "create"
    [made] = [a for a in restore.plan if a["name"] == "carol"]
    assert made["warnings"] == ["user carol is made without a password: it cannot sign in until one is set "
                                "(hivemind user passwd carol)"]  # fmt: skip
    assert drive(restore.workflow).state == WorkflowState.SUCCEEDED
    tenant.refresh_from_db()
    assert tenant.labels == {"env": "prod"} and tenant.description == "the shop"
    quota = TenantQuota.objects.get(tenant=tenant)
    assert quota.apps == 7 and quota.storage_bytes == 5 * GiB
    carol = get_user_model().objects.get(username="carol")
    assert not carol.has_usable_password()
    roles = dict(Membership.objects.filter(tenant=tenant).values_list("user__username", "role"))
    assert roles["carol"] == Role.VIEWER and roles["viewer-a"] == Role.VIEWER and roles["owner-a"] == Role.OWNER
    [back] = Silence.objects.filter(tenant=tenant)
    assert back.comment == "maintenance" and back.matchers == [{"label": "app", "op": "=", "value": "web"}]
    ci = ServiceAccount.objects.get(tenant=tenant, name="ci")
    assert ci.description == "deploys" and Membership.objects.get(user=ci.user).role == Role.OPERATOR
    daily = BackupPolicy.objects.get(tenant=tenant, name="daily")
    assert daily.location == location and daily.schedule == "0 2 * * *" and daily.keep_daily == 7
    assert PeriodicTask.objects.filter(name=f"backup-policy-{daily.pk}", enabled=True).exists()  # beat runs it again

    # Its compensation removes what it made (the member, the user made for it, the silence) only.
    assert undo_created(restore, staff) == []
    assert not get_user_model().objects.filter(username="carol").exists()
    assert not Silence.objects.filter(tenant=tenant).exists()
    assert not BackupPolicy.objects.filter(tenant=tenant).exists()
    assert not ServiceAccount.objects.filter(tenant=tenant).exists()
    assert not PeriodicTask.objects.filter(name=f"backup-policy-{daily.pk}").exists()
    assert Membership.objects.get(tenant=tenant, user=world.users["viewer"]).role == Role.VIEWER


def test_what_is_asked_is_checked(world, shop, location):
    backup = make_backup(shop, location)
    operator = world.users["operator"]
    cases = [
        ({"selection": {"apps": ["nope"]}}, "the backup has no app named nope"),
        ({"selection": {"colour": 1}}, "selection.colour"),
        ({"selection": {"files": {"volume": "data", "paths": ["/../etc"]}}}, "may not contain '..'"),
        ({"selection": {"files": {"volume": "data", "paths": ["/a"]}}}, "holds no data of volume data"),
        ({"selection": {"state": True, "apps": ["web"]}}, "true alone"),
        ({"conflicts": "merge"}, "expected one of skip, replace, rename"),
        ({"rename": {"apps": {"ghost": "x"}}}, "the document has no app named ghost"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValidationError, match=message):
            restores.restore_start(backup=backup, into_tenant=shop, dry_run=True, actor=operator, **kwargs)
    assert not Restore.objects.exists()
    with pytest.raises(NotFound):
        restores.visible_backup(world.users["outsider"], backup.pk)  # B's owner cannot see A's backup
    assert restores.visible_backup(world.users["viewer"], backup.pk) == backup


def test_an_encrypted_volumes_data_is_refused_into_another_tenant(world, shop, location, tmp_path):
    Volume.objects.filter(tenant=shop, name="data").update(encrypted=True)
    (tmp_path / "cipher").mkdir()
    backup = make_backup(shop, location, volumes={"data": tmp_path})
    with pytest.raises(ValidationError, match="volume data is encrypted: its data cannot be restored into another"):
        restores.restore_start(backup=backup, into_tenant=world.b, selection={"volumes": ["data"]}, dry_run=True,
                               actor=world.users["outsider"])  # fmt: skip


def test_an_encrypted_volume_restores_into_its_tenant_opening_with_the_backed_up_volumes_key(
    world, location, btrfs_root  # noqa: F811
):  # fmt: skip
    from storage import crypt
    from tenants import keys as tenant_keys

    pool = StoragePool.objects.create(name="real", provider="btrfs", node=this_node(), path=str(btrfs_root),
                                      is_default=True, capacity_bytes=1 << 30, free_bytes=1 << 30)  # fmt: skip
    provider = provider_of(pool)
    provider.prepare()
    volume = Volume.objects.create(tenant=world.a, name="secret", pool=pool, size_bytes=64 << 20, status="ready",
                                   encrypted=True)  # fmt: skip
    provider.create(volume.handle, volume.size_bytes)
    key = tenant_keys.data_key_create(tenant=world.a, purpose="volume", object_id=volume.pk)
    directory, marker = provider.path(volume.handle), b"plaintext marker " * 64
    crypt.initialise(directory, key, scryptn=10)
    try:
        (crypt.mount(directory, volume.handle, key) / "notes.txt").write_bytes(marker)
    finally:
        crypt.unmount(volume.handle)
    backup = make_backup(world.a, location, volumes={"secret": directory})

    restore = restores.restore_start(backup=backup, into_tenant=world.a, selection={"volumes": ["secret"]},
                                     conflicts="rename", actor=world.users["operator"])  # fmt: skip
    finished = drive(restore.workflow)
    assert finished.state == WorkflowState.SUCCEEDED, finished.error
    copy = Volume.objects.get(tenant=world.a, name="secret-restored")
    assert copy.encrypted and crypt.volume_key(copy) == key
    same_tree(directory, provider.path(copy.handle))  # the ciphertext, byte-identical
    try:
        assert (crypt.mount(provider.path(copy.handle), copy.handle, key) / "notes.txt").read_bytes() == marker
    finally:
        crypt.unmount(copy.handle)

    # Once the backed-up volume's key is gone (the volume deleted), its backup cannot open.
    tenant_keys.data_key_delete(tenant=world.a, purpose="volume", object_id=volume.pk)
    with pytest.raises(ValidationError, match="its data key went with the volume when it was deleted"):
        restores.restore_start(backup=backup, into_tenant=world.a, selection={"volumes": ["secret"]},
                               conflicts="rename", dry_run=True, actor=world.users["operator"])  # fmt: skip


def fill(directory: Path) -> None:
    (directory / "dir" / "deep").mkdir(parents=True)
    (directory / "dir" / "deep" / "one.bin").write_bytes(os.urandom(300_000))
    (directory / "dir" / "two.txt").write_text("two\n")
    (directory / "top.txt").write_text("top\n")
    os.symlink("dir/two.txt", directory / "link")


def same_tree(left: Path, right: Path) -> None:
    def listing(root: Path):
        return sorted((str(p.relative_to(root)), p.is_symlink(), p.is_dir()) for p in root.rglob("*"))

    assert listing(left) == listing(right)
    for path in left.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert (right / path.relative_to(left)).read_bytes() == path.read_bytes(), path


def test_a_volume_restores_byte_identical_into_a_new_volume_and_files_into_a_directory(
    world, location, btrfs_root  # noqa: F811
):  # fmt: skip
    pool = StoragePool.objects.create(name="real", provider="btrfs", node=this_node(), path=str(btrfs_root),
                                      is_default=True, capacity_bytes=1 << 30, free_bytes=1 << 30)  # fmt: skip
    provider = provider_of(pool)
    provider.prepare()
    volume = Volume.objects.create(tenant=world.a, name="data", pool=pool, size_bytes=64 << 20, status="ready")
    provider.create(volume.handle, volume.size_bytes)
    source = provider.path(volume.handle)
    fill(source)
    backup = make_backup(world.a, location, volumes={"data": source})

    restore = restores.restore_start(backup=backup, into_tenant=world.a, selection={"volumes": ["data"]},
                                     conflicts="rename", actor=world.users["operator"])  # fmt: skip
    assert summary(restore.plan) == [("create", "volume", "data", "data-restored"),
                                     ("restore", "volume_data", "data", "data-restored")]  # fmt: skip
    finished = drive(restore.workflow)
    assert finished.state == WorkflowState.SUCCEEDED, finished.error
    copy = Volume.objects.get(tenant=world.a, name="data-restored")
    assert copy.status == Volume.Status.READY
    same_tree(source, provider.path(copy.handle))
    assert os.readlink(provider.path(copy.handle) / "link") == "dir/two.txt"

    (source / "top.txt").write_text("changed\n")
    files = restores.restore_start(
        backup=backup, into_tenant=world.a, actor=world.users["operator"],
        selection={"files": {"volume": "data", "paths": ["/dir", "/top.txt"], "into_path": "/restored"}},
    )  # fmt: skip
    assert summary(files.plan) == [("restore", "file", "data:/dir", "data:/restored/dir"),
                                   ("restore", "file", "data:/top.txt", "data:/restored/top.txt")]  # fmt: skip
    assert drive(files.workflow).state == WorkflowState.SUCCEEDED
    assert (source / "restored" / "top.txt").read_text() == "top\n" and (source / "top.txt").read_text() == "changed\n"
    same_tree(source / "dir", source / "restored" / "dir")
    assert not [p for p in source.iterdir() if p.name.startswith(".hivemind-restore")]


def test_a_damaged_chunk_stops_a_file_restore_naming_it_and_leaves_nothing_at_the_final_names(world, tmp_path):
    store = LocalStore(tmp_path / "store")
    repository = keys.open_repository(world.a, store, create=True)
    source = tmp_path / "source"
    (source / "dir").mkdir(parents=True)
    (source / "dir" / "good.txt").write_text("unaffected\n")
    (source / "dir" / "bad.bin").write_bytes(os.urandom(50_000))
    (source / "other.txt").write_text("other\n")
    snapshot = repository.backup_tree(source).id
    [entry] = repository.list_files(snapshot, "dir/bad.bin")
    pack_id, offset, _length = repository.index[bytes.fromhex(entry.chunks[0])]
    damaged = store.root / pack_key(pack_id)
    data = bytearray(damaged.read_bytes())
    data[offset + 20] ^= 0xFF
    damaged.write_bytes(bytes(data))

    volume = tmp_path / "volume"
    volume.mkdir()
    with pytest.raises(DamagedObject) as raised:
        restores.restore_files(keys.open_repository(world.a, store), snapshot, ["/other.txt", "/dir"], volume, "/r")
    assert pack_key(pack_id) in str(raised.value) and "dir/bad.bin" in str(raised.value)
    assert sorted(p.name for p in volume.rglob("*")) == []  # nothing at the final names, no staging left
    done = restores.restore_files(keys.open_repository(world.a, store), snapshot, ["/dir/good.txt"], volume, "/r")
    assert done["files"] == 1 and (volume / "r" / "dir" / "good.txt").read_text() == "unaffected\n"


# --- the API -------------------------------------------------------------------------------------


def backup_of(tenant) -> Backup:
    """A backup of `tenant` (its document only) in a location of its own."""
    found = Backup.objects.filter(tenant=tenant).first()
    if found is not None:
        return found
    made = services.location_create(tenant=tenant, name="api", kind="local",
                                    config={"path": f"restores-api-{secrets.token_hex(6)}"}, actor=None)  # fmt: skip
    Path(made.config["path"]).mkdir(parents=True, exist_ok=True)
    return make_backup(tenant, made)


class TestRestoreAPI(TenantOwnedAPITests):
    basename = "restore"
    supports = {"create"}

    @pytest.fixture(autouse=True)
    def _locations(self, db):
        yield
        for location in BackupLocation.objects.all():
            shutil.rmtree(location.config["path"], ignore_errors=True)

    def make(self, world, tenant):
        return Restore.objects.create(tenant=tenant, dry_run=True, status=Restore.Status.SUCCEEDED)

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "backup": backup_of(tenant).pk, "dry_run": True}


def test_the_api_plans_a_dry_run_starts_a_restore_and_hides_another_tenants_backup(world, shop, location):
    backup = make_backup(shop, location)
    url = reverse("api:restore-list")
    body = {"tenant": world.b.slug, "backup": backup.pk, "rename": {"apps": {"web": "shop"}}, "dry_run": True}
    response = world.client("outsider").post(url, body, format="json")
    assert response.status_code == 404, response.content  # B's owner cannot see A's backup
    staff_b = world.client("staff")
    response = staff_b.post(url, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["workflow"] is None and ("create", "app", "web", "shop") in summary(response.json()["plan"])
    response = staff_b.post(url, {**body, "dry_run": False}, format="json")
    assert response.status_code == 202 and response.json()["workflow"] is not None
    response = staff_b.post(url, {**body, "selection": {"apps": ["ghost"]}}, format="json")
    assert response.status_code == 400 and "no app named ghost" in str(response.json()["selection.apps"])

    # The same through the backup's own route; and its verification.
    own = reverse("api:backup-restore", args=[backup.pk])
    response = world.client("operator").post(
        own, {"rename": {"apps": {"web": "shop"}}, "dry_run": True}, format="json"
    )  # fmt: skip  (into the backup's own tenant)
    assert response.status_code == 201 and response.json()["tenant"] == shop.slug, response.content
    assert ("create", "app", "web", "shop") in summary(response.json()["plan"])
    assert world.client("viewer").post(own, {"dry_run": True}, format="json").status_code == 403
    assert world.client("outsider").post(own, {"dry_run": True}, format="json").status_code == 404
    verified = world.client("operator").post(reverse("api:backup-verify", args=[backup.pk]), {"read_data": True},
                                             format="json")  # fmt: skip
    assert verified.status_code == 202 and verified.json()["read_data"] is True, verified.content
    assert drive(Workflow.objects.get(pk=verified.json()["workflow"])).state == WorkflowState.SUCCEEDED
    backup.refresh_from_db()
    assert backup.verified == Backup.Verified.OK


HOSTILE = [None, "", "x" * 5000, 0, -1, 1.5, True, [], {}, [[["deep"]]], {"a": {"b": {"c": 1}}}, "\x00", "../etc",
           ["/../x"], {"web": 1}, {"web": {"x": "y"}}]  # fmt: skip


def test_hostile_values_in_a_restore_request_are_refused_with_a_400(world, shop, location):
    backup = make_backup(shop, location)
    base = {"tenant": shop.slug, "backup": backup.pk, "dry_run": True}
    client = world.client("operator")

    def post(body):
        response = client.post(reverse("api:restore-list"), body, format="json")
        assert response.status_code < 500, (body, response.content)
        return response.status_code

    for value in HOSTILE:
        for body in (
            {**base, "selection": value},
            {**base, "selection": {"apps": value}},
            {**base, "selection": {"volumes": value}},
            {**base, "selection": {"files": value}},
            {**base, "selection": {"files": {"volume": "data", "paths": value}}},
            {**base, "selection": {"files": {"volume": value, "paths": ["/a"]}}},
            {**base, "selection": {"files": {"volume": "data", "paths": ["/a"], "into_path": value}}},
            {**base, "rename": value},
            {**base, "rename": {"apps": value}},
            {**base, "rename": {"apps": {"web": value}}},
            {**base, "conflicts": value},
            {**base, "at": value},
            {**base, "backup": value},
            {**base, "dry_run": value},
        ):
            post(body)
    assert post({**base, "rename": {"apps": {"web": "web"}}, "colour": 1}) == 400  # an unknown field
    keys_url = reverse("api:restore-import-keys")
    for value in HOSTILE:
        for body in ({"tenant": shop.slug, "passphrase": "p" * 12, "document": value},
                     {"tenant": shop.slug, "passphrase": value, "document": {}},
                     {"tenant": value, "passphrase": "p" * 12, "document": {}}):  # fmt: skip
            response = world.client("admin").post(keys_url, body, format="json")
            assert 400 <= response.status_code < 500, (body, response.content)


def test_keys_export_and_import_through_the_api_admins_only(world, location):
    keys.open_for(location, create=True)
    url, body = reverse("api:restore-export-keys"), {"tenant": world.a.slug, "passphrase": "a long passphrase"}
    assert world.client("operator").post(url, body, format="json").status_code == 403
    assert world.client("outsider").post(url, body, format="json").status_code == 404
    response = world.client("admin").post(url, body, format="json")
    assert response.status_code == 200, response.content
    document = response.json()
    assert "a long passphrase" not in response.content.decode() and len(document["repositories"]) == 1
    WrappedKey.objects.filter(tenant=world.a, purpose=keys.PURPOSE).delete()
    imported = reverse("api:restore-import-keys")
    wrong = world.client("owner").post(imported, {**body, "passphrase": "not the passphrase", "document": document},
                                       format="json")  # fmt: skip
    assert wrong.status_code == 400 and "wrong passphrase" in str(wrong.json()["passphrase"])
    right = world.client("owner").post(imported, {**body, "document": document}, format="json")
    assert right.status_code == 200 and right.json()["repositories"] == [document["repositories"][0]["repository"]]
    keys.open_for(location)  # opens again


# --- the CLI, against the real web process -------------------------------------------------------


def test_cli_plans_a_restore_runs_it_lists_restores_and_moves_the_keys(
    cli, same_master_key, web_server, platform_processes, world, location, tmp_path  # noqa: F811
):  # fmt: skip
    networking.network_create(tenant=world.a, name="backend", actor=world.users["staff"])
    backup = make_backup(world.a, location)
    login_as(cli, web_server, world, "operator")
    assert cli("backup", "restore", str(backup.pk), "--rename", "backend=x").code == 2
    planned = cli("backup", "restore", str(backup.pk), "--rename", "networks:backend=db-net", "--dry-run",
                  "--tenant", world.a.slug)  # fmt: skip
    assert planned.code == 0, planned
    assert ["create", "network", "backend", "db-net"] in [line.split()[:4] for line in planned.out.splitlines()]
    assert "Dry run: nothing was written." in planned.out and not Network.objects.filter(name="db-net").exists()
    listed = cli("backup", "restores", "--tenant", world.a.slug)
    assert listed.out.splitlines()[1].split()[:4] == [str(Restore.objects.get().pk), str(backup.pk), "dry", "run"]
    platform_processes("worker")
    ran = cli("backup", "restore", str(backup.pk), "--rename", "networks:backend=db-net",
              "--tenant", world.a.slug)  # fmt: skip
    assert ran.code == 0 and "restore.apply" in ran.out, ran
    restored = Restore.objects.get(dry_run=False)
    assert f"Restore {restored.pk} succeeded." in ran.out and Network.objects.filter(name="db-net").exists()

    exported = tmp_path / "keys.json"
    refused = cli("backup", "keys", "export", "--out", str(exported), "--passphrase-stdin", "--tenant", world.a.slug,
                  input="a long passphrase\n")  # fmt: skip
    assert refused.code == 5 and "only tenant admins and owners" in one_error_line(refused)
    login_as(cli, web_server, world, "admin")
    done = cli("backup", "keys", "export", "--out", str(exported), "--passphrase-stdin", "--tenant", world.a.slug,
               input="a long passphrase\n")  # fmt: skip
    assert done.code == 0 and "1 repository key(s)" in done.out, done
    assert exported.stat().st_mode & 0o777 == 0o600
    WrappedKey.objects.filter(tenant=world.a, purpose=keys.PURPOSE).delete()
    wrong = cli("backup", "keys", "import", str(exported), "--passphrase-stdin", "--tenant", world.a.slug,
                input="another passphrase\n")  # fmt: skip
    assert wrong.code != 0 and "wrong passphrase" in one_error_line(wrong)
    right = cli("backup", "keys", "import", str(exported), "--passphrase-stdin", "--tenant", world.a.slug,
                input="a long passphrase\n")  # fmt: skip
    assert right.code == 0, right
    assert keys.open_for(location).read_blob(backup.state_snapshot)
