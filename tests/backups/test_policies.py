"""Backup policies: their validation (API and admin form alike), their beat periodic tasks kept in
step, retention against a real repository at a local location, and the scheduled task."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from backups import keys, policies, services, tasks
from backups.admin import BackupPolicyForm
from backups.models import Backup, BackupLocation, BackupPolicy
from tenants.models import AuditEvent
from tests.api_suite import TenantOwnedAPITests
from tests.backups.test_runs_api import same_master_key  # noqa: F401 - the web and worker open tenant keys
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)


def location_of(tenant, name: str = "pol") -> BackupLocation:
    found = BackupLocation.objects.filter(tenant=tenant, name=name).first()
    if found is not None:
        return found
    return services.location_create(tenant=tenant, name=name, kind="local",
                                    config={"path": f"pol-{secrets.token_hex(6)}"}, actor=None)  # fmt: skip


class TestBackupPolicyAPI(TenantOwnedAPITests):
    basename = "backup-policy"
    custom_actions = [("run", "post"), ("verify", "post"), ("prune", "post")]

    def make(self, world, tenant):
        return policies.policy_create(tenant=tenant, name=f"p-{BackupPolicy.objects.count()}",
                                      location=location_of(tenant), actor=None)  # fmt: skip

    def create_payload(self, world, tenant):
        location_of(tenant)
        return {"tenant": tenant.slug, "name": f"new-{BackupPolicy.objects.count()}", "location": "pol",
                "schedule": "0 3 * * *", "keep_last": 3}  # fmt: skip

    def update_payload(self, world):
        return {"schedule": "30 4 * * 1", "keep_daily": 7}


@pytest.fixture
def location(world):
    made = location_of(world.a)
    yield made
    shutil.rmtree(made.config["path"], ignore_errors=True)


def post(world, body, who="operator"):
    body = {"tenant": world.a.slug, "name": "nightly", "location": "pol", **body}
    return world.client(who).post(reverse("api:backup-policy-list"), body, format="json")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"schedule": "61 3 * * *", "keep_last": 1}, "schedule", "minute '61' is not valid"),
        ({"schedule": "0 3 * *", "keep_last": 1}, "schedule", "expected 5 cron fields"),
        ({"schedule": "0 3 31 2 *", "keep_last": 1}, "schedule", "never occurs"),
        ({"verify_schedule": "0 25 * * *"}, "verify_schedule", "hour '25' is not valid"),
        ({"schedule": "0 3 * * *"}, "keep_last", "set keep_last or a keep_hourly..keep_monthly count"),
        ({"scope": "volumes", "names": ["nope"]}, "names", "has no volumes named nope"),
        ({"scope": "apps", "names": ["ghost"]}, "names", "has no apps named ghost"),
        ({"scope": "apps"}, "names", "needs the names"),
        ({"location": "elsewhere"}, "location", "has no backup location 'elsewhere'"),
        ({"name": "Not_A_Label"}, "name", "expected a DNS label"),
        ({"verify_read_percent": 101}, "verify_read_percent", "a whole number from 0 to 100"),
    ],
)
def test_a_bad_policy_is_a_400_naming_the_field(world, location, body, field, message):
    response = post(world, body)
    assert response.status_code == 400, response.content
    assert message in str(response.json()[field]), response.json()
    assert not BackupPolicy.objects.exists() and not PeriodicTask.objects.filter(name__startswith="backup-").exists()


def test_another_tenants_location_is_answered_as_a_missing_one(world, location):
    theirs = location_of(world.b, "theirs")
    response = post(world, {"location": "theirs"})
    assert response.status_code == 400
    missing = f"tenant {world.a.slug} has no backup location 'theirs' (nor has the platform)"
    assert response.json() == {"location": missing}
    assert theirs.config["path"] not in response.content.decode()
    with pytest.raises(Exception, match="has no backup location 'theirs'"):  # the row itself is refused too
        policies.policy_create(tenant=world.a, name="x", location=theirs, actor=None)


def test_the_periodic_tasks_follow_the_policy(world, location):
    created = post(world, {"schedule": "0 3 * * *", "keep_last": 3})
    assert created.status_code == 201, created.content
    assert post(world, {}).status_code == 409  # the name is taken
    policy = BackupPolicy.objects.get()
    task = PeriodicTask.objects.select_related("crontab").get(name=f"backup-policy-{policy.pk}")
    assert task.task == "backups.policy_run" and json.loads(task.kwargs) == {"policy": policy.pk} and task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week, str(task.crontab.timezone)) == \
        ("0", "3", "*", "UTC")  # fmt: skip
    assert task.queue == "control" and created.json()["run_task"] == task.name

    detail = reverse("api:backup-policy-detail", args=[policy.pk])
    client = world.client("operator")
    changed = client.patch(detail, {"schedule": "*/15 * * * 1-5", "verify_schedule": "0 5 * * 0",
                                    "verify_read_percent": 10}, format="json")  # fmt: skip
    assert changed.status_code == 200, changed.content
    task = PeriodicTask.objects.select_related("crontab").get(name=f"backup-policy-{policy.pk}")
    assert (task.crontab.minute, task.crontab.day_of_week) == ("*/15", "1-5")
    check = PeriodicTask.objects.get(name=f"backup-verify-{policy.pk}")
    assert check.task == "backups.policy_verify" and check.enabled
    bad = client.patch(detail, {"keep_last": 0}, format="json")  # a schedule still needs retention
    assert bad.status_code == 400 and "keep_last" in bad.json()

    assert client.patch(detail, {"enabled": False}, format="json").status_code == 200
    assert not PeriodicTask.objects.filter(name__startswith="backup-", enabled=True).exists()
    assert PeriodicTask.objects.filter(name__startswith="backup-").count() == 2
    assert client.patch(detail, {"enabled": True, "schedule": ""}, format="json").status_code == 200
    assert list(PeriodicTask.objects.filter(name__startswith="backup-").values_list("name", "enabled")) == \
        [(f"backup-verify-{policy.pk}", True)]  # fmt: skip
    assert client.delete(detail).status_code == 204
    assert not PeriodicTask.objects.filter(name__startswith="backup-").exists()
    assert AuditEvent.objects.filter(action="backup_policy.delete").exists()


def test_the_admin_form_checks_as_the_api_does_and_saving_schedules(world, location):
    from django.contrib.admin.sites import site

    from backups.admin import BackupPolicyAdmin

    data = {"tenant": world.a.pk, "name": "adm", "location": location.pk, "scope": "tenant", "names": "[]",
            "schedule": "0 99 * * *", "keep_last": 2, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0,
            "keep_monthly": 0, "verify_schedule": "", "verify_read_percent": 0, "enabled": True}  # fmt: skip
    form = BackupPolicyForm(data=data)
    assert not form.is_valid() and "hour '99' is not valid" in form.errors["schedule"][0]
    theirs = location_of(world.b, "theirs")
    form = BackupPolicyForm(data={**data, "schedule": "0 1 * * *", "location": theirs.pk})
    assert not form.is_valid() and "has no backup location 'theirs'" in form.errors["location"][0]
    form = BackupPolicyForm(data={**data, "schedule": "0 1 * * *"})
    assert form.is_valid(), form.errors
    policy = form.save(commit=False)
    request = RequestFactory().post("/admin/")
    request.user = world.users["staff"]
    BackupPolicyAdmin(BackupPolicy, site).save_model(request, policy, form, change=False)
    assert PeriodicTask.objects.get(name=f"backup-policy-{policy.pk}").crontab.hour == "1"


def _repository(location: BackupLocation):
    Path(location.config["path"]).mkdir(parents=True, exist_ok=True)
    return keys.open_for(location, create=True)


def make_backups(policy: BackupPolicy, count: int) -> list[Backup]:
    """Succeeded backups of the policy, an hour apart, each with a real state snapshot (and the
    last also a 'volume' snapshot), newest last."""
    repository = _repository(policy.location)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    made = []
    for n in range(count):
        state = repository.backup_blob("state.json", secrets.token_bytes(2000), meta={"n": n}).id
        volume = repository.backup_blob("volume", secrets.token_bytes(3000)).id
        made.append(Backup.objects.create(
            tenant=policy.tenant, location=policy.location, policy=policy, status=Backup.Status.SUCCEEDED,
            state_snapshot=state, volumes=[{"name": "data", "snapshot": volume}],
            finished_at=start + timedelta(hours=n), repository_id=repository.id,
        ))  # fmt: skip
    return made


def test_retention_keeps_exactly_the_selected_backups_and_prunes(world, location):
    policy = policies.policy_create(tenant=world.a, name="keep3", location="pol", schedule="0 * * * *",
                                    keep_last=3, actor=None)  # fmt: skip
    made = make_backups(policy, 5)
    failed = Backup.objects.create(tenant=world.a, location=location, policy=policy, status=Backup.Status.FAILED)
    result = policies.apply_retention(policy)
    kept, gone = made[2:], made[:2]
    assert sorted(result["kept"]) == [b.pk for b in kept] and sorted(result["removed"]) == [b.pk for b in gone]
    assert result["snapshots_forgotten"] == 4 and result["prune"]["packs_deleted"] >= 4
    assert set(Backup.objects.values_list("pk", flat=True)) == {*(b.pk for b in kept), failed.pk}
    held = {s.id for s in keys.open_for(location).snapshots()}
    assert held == {i for b in kept for i in (b.state_snapshot, b.volumes[0]["snapshot"])}
    assert keys.open_for(location).verify(read_data=True).ok
    again = policies.apply_retention(policy)
    assert again["removed"] == [] and "prune" not in again

    # keep_daily 1 keeps the newest of the one day they share
    policies.policy_update(policy=policy, keep_last=0, keep_daily=1, actor=None)
    assert policies.apply_retention(policy)["kept"] == [made[-1].pk]
    assert Backup.objects.filter(status=Backup.Status.SUCCEEDED).count() == 1


def test_the_scheduled_task_starts_a_run_of_the_policy_or_records_why_not(world, location):
    policy = policies.policy_create(tenant=world.a, name="sched", location="pol", schedule="* * * * *",
                                    keep_last=3, actor=None)  # fmt: skip
    started = tasks.policy_run(policy.pk)
    backup = Backup.objects.get(pk=started["backup"])
    assert backup.policy == policy and backup.workflow_id == started["workflow"] and backup.scope == "tenant"
    assert backup.workflow.kind == "backup.run"
    assert [s.name for s in backup.workflow.steps.order_by("index")][-1] == "backups.retention"

    BackupPolicy.objects.filter(pk=policy.pk).update(scope="volumes", names=["gone"])
    assert "has no volumes named gone" in tasks.policy_run(policy.pk)["skipped"]
    assert BackupPolicy.objects.get(pk=policy.pk).last_failure_at is not None
    BackupPolicy.objects.filter(pk=policy.pk).update(enabled=False)
    assert tasks.policy_run(policy.pk) == {"skipped": "the policy is gone or disabled"}


def _until(condition, timeout: float, what: str, processes=()):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    logs = "\n".join(p.output()[-3000:] for p in processes)
    raise AssertionError(f"{what} within {timeout} s\n{logs}")


def test_cli_and_beat_a_policy_every_minute_keeps_exactly_three(
    cli, same_master_key, web_server, platform_processes, world  # noqa: F811
):  # fmt: skip
    """The CLI makes a policy every minute keeping 3 and a location with three backups in it;
    beat (its periodic task due at once) starts a run, the worker runs it and its retention:
    exactly 3 are left, the newest beat's. Then verify --wait and prune through the CLI."""
    from hivemind.workflows.models import Workflow

    worker = platform_processes("worker", queues=["control"])
    location = location_of(world.a)
    login_as(cli, web_server, world, "operator")
    bad = cli("backup", "policy", "create", "every", "--location", "pol", "--schedule", "* * * *", "--keep-last", "3")
    assert bad.code == 1 and "schedule: expected 5 cron fields" in one_error_line(bad), bad
    assert cli("backup", "policy", "create", "every", "--schedule", "* * * * *").code == 2  # no --location
    made = cli("backup", "policy", "create", "every", "--location", "pol", "--schedule", "* * * * *",
               "--keep-last", "3", "--verify-schedule", "0 4 * * *", "--verify-read-percent", "20")  # fmt: skip
    assert made.code == 0 and "tenant into pol, at '* * * * *' UTC, keeping last 3." in made.out, made
    policy = BackupPolicy.objects.get(name="every")
    earlier = make_backups(policy, 3)
    listed = cli("backup", "policy", "ls").out.splitlines()
    assert listed[1].split()[:3] == ["every", "tenant", "pol"], listed
    info = cli("backup", "policy", "info", "every")
    assert "0 4 * * * (UTC), reading 20%" in info.out and "last 3" in info.out, info

    task = PeriodicTask.objects.get(name=f"backup-policy-{policy.pk}")
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=task.date_changed - timedelta(minutes=5))
    beat = platform_processes("beat")  # the task is overdue: beat sends it at once
    ran = _until(lambda: Backup.objects.filter(policy=policy, workflow__isnull=False).first(), 40,
                 "beat started no backup run", (beat, worker))  # fmt: skip
    beat.stop()
    _until(lambda: not Workflow.objects.filter(kind="backup.run").exclude(state__in=["succeeded", "failed",
           "cancelled", "compensated"]).exists(), 40, "the run did not end", (worker,))  # fmt: skip
    ran.refresh_from_db()
    assert ran.status == "succeeded", (ran.error, worker.output()[-3000:])
    left = list(Backup.objects.filter(policy=policy).order_by("pk").values_list("pk", flat=True))
    assert left == [earlier[1].pk, earlier[2].pk, ran.pk], left
    held = {s.id for s in keys.open_for(location).snapshots()}
    assert earlier[0].state_snapshot not in held and ran.state_snapshot in held
    retention = ran.workflow.steps.get(name="backups.retention").output
    assert retention["result"]["removed"] == [earlier[0].pk], retention

    verified = cli("backup", "verify", "--policy", "every", "--read-data")
    assert verified.code == 0 and "every backup verified ok" in verified.out, verified
    assert set(Backup.objects.values_list("verified", flat=True)) == {"ok"}
    one = cli("backup", "verify", str(ran.pk), "--read-percent", "50")  # the repository that backup is in
    assert one.code == 0 and "every backup verified ok" in one.out, one
    assert cli("backup", "verify").code == 2 and cli("backup", "verify", "1", "--policy", "every").code == 2
    assert cli("backup", "policy", "update", "every", "--keep-last", "1").code == 0
    pruned = cli("backup", "prune", "--policy", "every")
    assert pruned.code == 0 and "kept 1 backups, removed 2" in pruned.out, pruned
    assert list(Backup.objects.values_list("pk", flat=True)) == [ran.pk]
    login_as(cli, web_server, world, "viewer")
    assert cli("backup", "prune", "--policy", "every").code == 5
    login_as(cli, web_server, world, "operator")
    assert cli("backup", "policy", "rm", "every", "--yes").code == 0
    assert not PeriodicTask.objects.filter(name__startswith="backup-").exists()
