"""Point in time: app changes are journaled from the audit log (before and after, when, by
whom), and a state document taken before T plus the journal up to T is the state at T: change
an app three times, ask for an instant between the second and third change, get the second."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.journal import state_at
from backups.models import JournalEntry
from backups.state import load, tenant_state
from backups.state.serialize import iso
from hivemind.applications import services
from hivemind.applications.models import App

SPEC = {"image": "hivemind/busybox:latest", "command": "httpd -f -p 8080", "env": {"V": "1"}}


def env_of(document: dict, app: str) -> str | None:
    found = next((a for a in document["apps"] if a["name"] == app), None)
    return None if found is None else found["spec"]["env"]["V"]


def test_the_state_between_the_second_and_third_change_has_the_second_spec(world):
    staff = world.users["staff"]
    web = services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=1, actor=staff)
    services.app_deploy(tenant=world.a, name="gone", spec=SPEC, replicas=1, actor=staff)
    document = tenant_state(world.a)  # the newest state backup before T
    assert env_of(document, "web") == "1"
    services.app_update(app=App.objects.get(pk=web.pk), spec={**SPEC, "env": {"V": "2"}}, actor=staff)
    services.app_scale(app=App.objects.get(pk=web.pk), replicas=3, actor=staff)
    services.app_deploy(tenant=world.a, name="later", spec={**SPEC, "env": {"V": "L"}}, replicas=2, actor=staff)
    services.app_delete(app=App.objects.get(name="gone"), actor=staff)
    between = timezone.now()
    services.app_update(app=App.objects.get(pk=web.pk), spec={**SPEC, "env": {"V": "3"}}, actor=staff)

    state, instants = state_at(document, world.a, between)
    assert env_of(state, "web") == "2" and env_of(state, "later") == "L" and env_of(state, "gone") is None
    web_state = next(a for a in state["apps"] if a["name"] == "web")
    assert web_state["replicas"] == 3 and web_state["revisions"][-1]["change"] == "journal"
    assert web_state["revisions"][-1]["created_by"] == staff.username
    load(state)  # still a valid document
    assert instants["apps"] == instants["volumes"] == iso(between)  # every part: nothing else changed
    # After the third change: the third spec; before the document: refused, it cannot go back.
    assert env_of(state_at(document, world.a, timezone.now())[0], "web") == "3"
    with pytest.raises(ValueError, match="after"):
        state_at(document, world.a, timezone.now() - timedelta(days=1))


def test_every_other_section_is_journaled_whole_once_its_change_commits(
    world, django_capture_on_commit_callbacks
):  # fmt: skip
    """Members, the quota, networks, notifiers, alert rules, silences and the tenant's settings
    as they were at T: a change after T is not in the state at T; one before T is."""
    from alerting import services as alerting
    from networking import services as networking
    from networking.models import Network
    from notifiers import services as notifiers
    from tenants import services as tenants
    from tenants.models import Role

    staff, tenant = world.users["staff"], world.a
    document = tenant_state(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        tenants.membership_add(tenant=tenant, user=world.users["granted"], role=Role.VIEWER, actor=staff)
        tenants.quota_set(tenant=tenant, limits={"apps": 9}, actor=staff)
        networking.network_create(tenant=tenant, name="backend", actor=staff, ipv6=False)
        notifiers.notifier_create(tenant=tenant, name="hook", kind="webhook", config={"url": "https://h.example/x"},
                                  secrets={"secret": "s3cret-value-1234567"}, actor=staff)  # fmt: skip
        alerting.rule_create(tenant=tenant, name="failures", kind="event", event="workflow_failed", actor=staff)
        alerting.silence_create(tenant=tenant, matchers=[{"label": "app", "op": "=", "value": "web"}], actor=staff,
                                ends_at=timezone.now() + timedelta(days=1))  # fmt: skip
    between = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        tenants.quota_set(tenant=tenant, limits={"apps": 11}, actor=staff)
        networking.network_delete(network=Network.objects.get(tenant=tenant, name="backend"), actor=staff)
        tenants.tenant_update(tenant=tenant, actor=staff, labels={"after": "yes"})
        tenants.quota_set(tenant=tenant, limits={"apps": 11}, actor=staff)  # the same again: no entry

    state, instants = state_at(document, tenant, between)
    assert "granted" in {m["username"] for m in state["members"]} and state["quota"]["apps"] == 9
    assert [n["name"] for n in state["networks"]] == ["backend"]
    assert [n["name"] for n in state["notifiers"]] == ["hook"]
    assert [r["name"] for r in state["alert_rules"]] == ["failures"]
    assert len(state["silences"]) == 1 and state["tenant"]["labels"] == {}
    assert set(instants.values()) == {iso(between)}
    load(state)  # still a valid document
    now, _ = state_at(document, tenant, timezone.now())
    assert now["quota"]["apps"] == 11 and now["networks"] == [] and now["tenant"]["labels"] == {"after": "yes"}
    assert JournalEntry.objects.filter(tenant=tenant, kind="quota").count() == 2
    quota = JournalEntry.objects.filter(tenant=tenant, kind="quota").last()
    assert quota.before["value"]["apps"] == 9 and quota.after["value"]["apps"] == 11 and quota.actor_name == "staff"


def test_entries_say_before_and_after_and_who(world):
    staff = world.users["staff"]
    web = services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=1, actor=staff)
    services.app_scale(app=App.objects.get(pk=web.pk), replicas=2, actor=staff)
    services.app_delete(app=App.objects.get(pk=web.pk), actor=staff)
    made, scaled, deleted = JournalEntry.objects.filter(tenant=world.a, name="web").order_by("at", "pk")
    assert made.before is None and made.after["replicas"] == 1 and made.after["spec"]["env"] == {"V": "1"}
    assert scaled.before == made.after and scaled.after["replicas"] == 2 and scaled.actor_name == staff.username
    assert deleted.action == "delete" and deleted.after is None and deleted.before == scaled.after
    assert not JournalEntry.objects.filter(tenant=world.b).exists()


def test_prune_drops_what_no_point_in_time_restore_can_use(world):
    from backups import journal
    from backups import services as backup_services
    from backups.models import Backup

    staff = world.users["staff"]
    web = services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=1, actor=staff)
    services.app_deploy(tenant=world.b, name="other", spec=SPEC, replicas=1, actor=staff)  # B has no backup
    location = backup_services.location_create(tenant=world.a, name="here", kind="local", config={"path": "j"},
                                               actor=staff)  # fmt: skip
    Backup.objects.create(tenant=world.a, location=location, status="succeeded", started_at=timezone.now())
    services.app_scale(app=App.objects.get(pk=web.pk), replicas=2, actor=staff)  # after the backup: kept
    assert journal.prune() == 2  # A's deploy (before its oldest backup) and all of B's
    assert list(JournalEntry.objects.values_list("tenant_id", "name", "after__replicas")) == [(world.a.pk, "web", 2)]
    assert journal.prune() == 0


def test_beat_prunes_the_journal_hourly_on_the_control_queue(world):
    from django.conf import settings

    from backups import tasks

    entry = settings.CELERY_BEAT_SCHEDULE["backups-journal-prune"]
    assert entry["task"] == tasks.journal_prune.name == "backups.journal_prune" and entry["schedule"] == 3600.0
    assert entry["options"]["queue"] == settings.CONTROL_QUEUE
    services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=1, actor=world.users["staff"])
    assert tasks.journal_prune() == {"deleted": 1}  # no backup of tenant A yet
