"""The journal of restorable state, for point-in-time restores.

Every change to an app (deploy, update, scale, rollback, delete) leaves a JournalEntry: the
app as it is meant to be after it (name, service name, replicas, the spec its newest rollout
targets) and as it was before (the previous entry's after). Entries are written from the
audit log (a post_save receiver on AuditEvent), in the transaction of the change, so a
change that rolls back leaves none, and none is missed.

Every change to another section of a tenant's state document (its settings, quota, members,
service accounts, networks, network policies, volume definitions, notifiers, alert rules,
silences, backup policies: `SECTION_ACTIONS`) leaves an entry holding that whole section as
the document writes it (backups/state/serialize.py `tenant_section`), taken once the change
has committed (so a service that audits before it deletes is seen after the delete; a
rolled-back change leaves nothing), and only when the section differs from the last entry's.

The state of a tenant at an instant T is its newest state backup taken before T (a state
document, backups/state) with the entries after that document's `created` up to T replayed
onto it (`replay`): every part of the document is then as it was at T (`instants` says so,
per part).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from backups.models import JournalEntry
from backups.state.serialize import iso
from tenants.models import AuditEvent

APP_ACTIONS = {"app.deploy", "app.update", "app.scale", "app.rollback", "app.delete"}
# The audit actions that change a section of the document (other than apps), and which.
SECTION_ACTIONS = {
    "tenant.update": "tenant",
    "quota.set": "quota",
    **dict.fromkeys(("membership.add", "membership.change", "membership.remove"), "members"),
    **dict.fromkeys(("service_account.create", "service_account.delete"), "service_accounts"),
    **dict.fromkeys(("network.create", "network.update", "network.delete"), "networks"),
    **dict.fromkeys(("network_policy.create", "network_policy.update", "network_policy.delete"), "network_policies"),
    **dict.fromkeys(
        (
            "volume.create",
            "volume.claim",
            "volume.expand",
            "volume.delete",
            "volume.schedule",
            "volume.replicate",
            "volume.unreplicate",
            "volume.promote",
        ),
        "volumes",
    ),
    **dict.fromkeys(("notifier.create", "notifier.update", "notifier.delete"), "notifiers"),
    **dict.fromkeys(("alert_rule.create", "alert_rule.update", "alert_rule.delete"), "alert_rules"),
    **dict.fromkeys(("silence.create", "silence.expire"), "silences"),
    **dict.fromkeys(("backup_policy.create", "backup_policy.update", "backup_policy.delete"), "backup_policies"),
}
# The parts of a state document the journal brings to T.
JOURNALED = ("apps", *sorted(set(SECTION_ACTIONS.values())))


def _app_record(event: AuditEvent, previous: dict | None) -> dict | None:
    from hivemind.applications.models import App

    subject = getattr(event, "subject", None)  # the App the service just changed (audit_record)
    if isinstance(subject, App) and str(subject.pk) == event.object_id and App.revision.is_cached(subject):
        app = subject
    else:
        app = App.objects.filter(pk=event.object_id, tenant_id=event.tenant_id).select_related("revision").first()
    if app is None:
        return None
    changes = event.changes or {}
    if event.action in ("app.update", "app.rollback"):
        revision = app.revisions.filter(number=changes.get("revision")).first()
        spec = revision.spec if revision is not None else None
    elif previous is not None:  # a scale keeps the spec the app is heading for
        spec = previous["spec"]
    else:
        spec = app.revision.spec if app.revision_id else None
    return {"name": app.name, "service_name": app.service_name, "replicas": app.replicas, "spec": spec}


@receiver(post_save, sender=AuditEvent, dispatch_uid="backups.journal")
def record(sender, instance: AuditEvent, created: bool, **kwargs) -> None:
    """Journal a change as the audit log records it: an app's now, another section's once the
    change has committed."""
    if not created or instance.tenant_id is None:
        return
    section = SECTION_ACTIONS.get(instance.action)
    if section is not None:
        tenant_id, at, actor = instance.tenant_id, instance.created_at, instance.actor_name
        transaction.on_commit(lambda: snapshot(tenant_id, section, at, actor))
        return
    if instance.action not in APP_ACTIONS:
        return
    name = instance.object_repr
    last = JournalEntry.objects.filter(tenant_id=instance.tenant_id, kind="app", name=name).order_by("-at", "-pk")
    previous = last.values_list("after", flat=True).first()
    if instance.action == "app.delete":
        after, action = None, JournalEntry.Action.DELETE
    else:
        after, action = _app_record(instance, previous), JournalEntry.Action.PUT
        if after is None:
            return
        name = after["name"]
    JournalEntry.objects.create(
        tenant_id=instance.tenant_id, at=instance.created_at, actor_name=instance.actor_name, kind="app", name=name,
        action=action, before=previous, after=after,
    )  # fmt: skip


def snapshot(tenant_id: int, section: str, at: datetime, actor_name: str = "") -> JournalEntry | None:
    """Journal the tenant's `section` as it is now, when it differs from the last entry's."""
    from backups.state.serialize import tenant_section
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    value = json.loads(json.dumps(tenant_section(tenant, section)))
    last = JournalEntry.objects.filter(tenant_id=tenant_id, kind=section).order_by("-at", "-pk")
    previous = last.values_list("after", flat=True).first()
    if previous is not None and previous.get("value") == value:
        return None
    return JournalEntry.objects.create(
        tenant_id=tenant_id, at=at, actor_name=actor_name or "", kind=section, name="", action=JournalEntry.Action.PUT,
        before=previous, after={"value": value},
    )  # fmt: skip


def entries(tenant, since: datetime, until: datetime):
    """The tenant's entries after `since` up to and including `until`, oldest first."""
    return JournalEntry.objects.filter(tenant=tenant, at__gt=since, at__lte=until).order_by("at", "pk")


def replay(document: dict, journal) -> dict:
    """A copy of a tenant state document (or a platform document's tenant body) with the
    journal's entries applied: apps made, changed or removed (a changed spec becomes a new
    revision of the app: change "journal", the entry's time and actor), and every other
    section as its newest entry has it."""
    body = copy.deepcopy(document)
    apps = {app["name"]: app for app in body.get("apps", [])}
    for entry in journal:
        if entry.kind in SECTIONS_JOURNALED:  # the whole section as it was then
            body[entry.kind] = copy.deepcopy((entry.after or {}).get("value"))
            continue
        if entry.kind != "app":
            continue
        if entry.action == JournalEntry.Action.DELETE:
            apps.pop(entry.name, None)
            continue
        after = entry.after or {}
        app = apps.setdefault(entry.name, {"name": entry.name, "service_name": after.get("service_name", entry.name),
                                           "replicas": 0, "revision": None, "spec": None, "revisions": []})  # fmt: skip
        app["service_name"] = after.get("service_name", app["service_name"])
        app["replicas"] = after.get("replicas", app["replicas"])
        spec = after.get("spec")
        if spec is not None and spec != app.get("spec"):
            number = max((r["number"] for r in app["revisions"]), default=0) + 1
            revision = {"number": number, "spec": spec, "change": "journal", "created_at": iso(entry.at),
                        "created_by": entry.actor_name or None}  # fmt: skip
            app["revisions"].append(revision)
            app["revision"], app["spec"] = number, spec
    body["apps"] = [apps[name] for name in sorted(apps)]
    return body


def state_at(document: dict, tenant, at: datetime) -> tuple[dict, dict[str, str]]:
    """The tenant's state at `at` from a state document taken before it: (document, the instant
    each part is restored to, ISO 8601)."""
    taken = datetime.fromisoformat(document["created"])
    if taken > at:
        raise ValueError(f"the state document was taken at {taken.isoformat()}, after {at.isoformat()}")
    state = replay(document, entries(tenant, taken, at))
    instants = {part: iso(at if part in JOURNALED else taken) for part in PARTS}
    return state, instants


PARTS = ("tenant", "quota", "members", "service_accounts", "apps", "networks", "network_policies", "volumes",
         "alert_rules", "silences", "notifiers", "backup_policies")  # fmt: skip
SECTIONS_JOURNALED = frozenset(SECTION_ACTIONS.values())


def prune() -> int:
    """Drop the entries no point-in-time restore can use: those older than their tenant's oldest
    successful backup (a restore to T starts from a backup taken before T), and every entry of
    a tenant with no backup yet (its first backup will be taken after them). Returns how many."""
    from django.db.models import Min, Q

    from backups.models import Backup

    oldest = dict(
        Backup.objects.filter(status=Backup.Status.SUCCEEDED, started_at__isnull=False)
        .values_list("tenant_id")
        .annotate(first=Min("started_at"))
        .order_by()
    )
    useless = ~Q(tenant_id__in=list(oldest))
    for tenant_id, first in oldest.items():
        useless |= Q(tenant_id=tenant_id, at__lt=first)
    deleted, _ = JournalEntry.objects.filter(useless).delete()
    return deleted
