"""The state serializer: a tenant's or the platform's restorable configuration as a JSON
document (docs/backup-state.md describes every field).

Objects are named by their natural keys (slugs, names, usernames), never by database ids, so a
document restores into another database or under new names. Lists are sorted by those keys,
so the same state gives byte-identical JSON (`dumps`); only the envelope's `created` differs
between two runs, and callers that need identical bytes pin it.

Runtime rows (containers, workflows, alerts and their history, usage, reservations, audit)
and secrets (tenant keys, notifier secrets, token digests, passwords) are not state.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.utils import timezone
from guardian.conf import settings as guardian_settings

FORMAT = "hivemind-state"
VERSION = 2
# Option names of a storage pool that would be a host secret: left out, listed to re-enter.
SECRET_WORDS = ("password", "passphrase", "secret", "token", "credential", "key")


def iso(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with a Z: one spelling for one instant, whatever the database's zone."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dumps(document: dict) -> bytes:
    """The document's canonical bytes: sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def envelope(kind: str, created: datetime | None) -> dict:
    return {"format": FORMAT, "version": VERSION, "created": iso(created or timezone.now()), "kind": kind}


def tenant_state(tenant, *, created: datetime | None = None) -> dict:
    """The document of one tenant: envelope plus its body (`tenant_body`)."""
    return {**envelope("tenant", created), **tenant_body(tenant)}


def platform_state(*, created: datetime | None = None) -> dict:
    """The document of the platform: nodes, pools, users and every tenant's body."""
    from hivemind.nodes.models import Node
    from networking.models import IPPool
    from storage.models import StoragePool
    from tenants.models import Tenant

    pools = []
    for pool in StoragePool.objects.select_related("node").order_by("name"):
        options, secret = _split_secrets(pool.options or {})
        pools.append(
            {
                "name": pool.name,
                "provider": pool.provider,
                "node": pool.node.name,
                "path": pool.path,
                "options": options,
                "is_default": pool.is_default,
                "secrets_to_reenter": sorted(set(secret) | set(pool.secret_names or [])),  # sealed ones too
            }
        )
    # A service account's user comes back with its account; guardian's anonymous user is made by its migrations.
    users = (
        get_user_model()
        .objects.filter(service_account__isnull=True)
        .exclude(username=guardian_settings.ANONYMOUS_USER_NAME)
        .order_by("username")
    )
    return {
        **envelope("platform", created),
        "nodes": [
            {
                "name": n.name,
                "address": n.address,
                "labels": n.labels or {},
                "taints": _taints(n.taints),
                "schedulable": not n.cordoned,
            }
            for n in Node.objects.order_by("name")
        ],
        "storage_pools": pools,
        "ip_pools": [
            {
                "name": p.name,
                "family": p.family,
                "purpose": p.purpose,
                "cidr": p.cidr,
                "default_prefix": p.default_prefix,
                "is_default": p.is_default,
            }
            for p in IPPool.objects.order_by("name")
        ],
        "users": [
            {
                "username": u.username,
                "email": u.email,
                "first_name": u.first_name,
                "last_name": u.last_name,
                "is_active": u.is_active,
                "is_staff": u.is_staff,
                "is_superuser": u.is_superuser,
            }
            for u in users
        ],
        "tenants": [tenant_body(t) for t in Tenant.objects.order_by("slug")],
    }


def tenant_body(tenant) -> dict:
    """Every restorable section of one tenant (a tenant document without its envelope)."""
    return {section: serialize(tenant) for section, serialize in SECTIONS.items()}


def tenant_section(tenant, section: str):
    """One section of the tenant's body as the document has it (the journal's snapshots)."""
    return SECTIONS[section](tenant)


def _tenant(tenant) -> dict:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "description": tenant.description,
        "isolation_level": tenant.isolation_level,
        "status": tenant.status,
        "labels": tenant.labels or {},
    }


def _username(user) -> str | None:
    return user.username if user is not None else None


def _taints(taints) -> list[dict]:
    return sorted((dict(t) for t in taints or []), key=lambda t: (t.get("key", ""), t.get("effect", "")))


def _split_secrets(options: dict) -> tuple[dict, list[str]]:
    secret = sorted(k for k in options if any(word in k.lower() for word in SECRET_WORDS))
    return {k: v for k, v in options.items() if k not in secret}, secret


def _quota(tenant) -> dict | None:
    from tenants.models import TenantQuota
    from tenants.quotas import RESOURCES

    quota = TenantQuota.objects.filter(tenant=tenant).first()
    if quota is None:
        return None
    return {name: getattr(quota, resource.field) for name, resource in RESOURCES.items()}


def _members(tenant) -> list[dict]:
    from tenants.models import Membership

    rows = Membership.objects.filter(tenant=tenant, user__service_account__isnull=True).select_related("user")
    return sorted(({"username": m.user.username, "role": m.role} for m in rows), key=lambda m: m["username"])


def _service_accounts(tenant) -> list[dict]:
    from tenants.models import Membership, ServiceAccount

    roles = dict(Membership.objects.filter(tenant=tenant).values_list("user_id", "role"))
    return [
        {"name": a.name, "description": a.description, "role": roles.get(a.user_id)}
        for a in ServiceAccount.objects.filter(tenant=tenant).order_by("name")
    ]


def _family(subnet: str | None, pool) -> dict | None:
    if not subnet:
        return None
    return {"subnet": subnet, "prefix": ipaddress.ip_network(subnet).prefixlen, "pool": pool.name if pool else None}


def _networks(tenant) -> list[dict]:
    from networking.models import Network

    rows = Network.objects.filter(tenant=tenant).exclude(status=Network.Status.DELETING)
    return [
        {
            "name": n.name,
            "is_default": n.is_default,
            "default_deny": n.default_deny,
            "labels": n.labels or {},
            "ipv4": _family(n.subnet4, n.pool4),
            "ipv6": _family(n.subnet6, n.pool6),
        }
        for n in rows.select_related("pool4", "pool6").order_by("name")
    ]


def _policies(tenant) -> list[dict]:
    from networking.models import NetworkPolicy

    return [{"name": p.name, "spec": p.spec} for p in NetworkPolicy.objects.filter(tenant=tenant).order_by("name")]


def _volumes(tenant) -> list[dict]:
    from storage import schedules
    from storage.models import Volume, VolumeReplica

    replicas = {
        r.volume_id: {"pool": r.pool.name, "every": r.interval_seconds}
        for r in VolumeReplica.objects.filter(volume__tenant=tenant).select_related("pool")
    }
    volumes = []
    rows = Volume.objects.filter(tenant=tenant).exclude(status=Volume.Status.DELETING).select_related("pool")
    for v in rows.order_by("name"):
        schedule = schedules.get(v)
        volumes.append(
            {
                "name": v.name,
                "size_bytes": v.size_bytes,
                "pool": v.pool.name,
                "access_mode": v.access_mode,
                "encrypted": v.encrypted,
                "labels": v.labels or {},
                "snapshot_schedule": (
                    {"every": schedule["every"], "keep": schedule["keep"], "enabled": schedule["enabled"]}
                    if schedule
                    else None
                ),
                "replica": replicas.get(v.pk),
            }
        )
    return volumes


def _desired(apps) -> dict[int, int]:
    """app pk -> pk of the revision its newest rollout targets (deploy, update, rollback, scale):
    what the user last asked for, whether or not that rollout has finished. `App.revision` is
    only moved when a rollout finishes."""
    from hivemind.workflows.models import Workflow

    wanted = {app.pk: app.revision_id for app in apps}
    rollouts = Workflow.objects.filter(kind="app.rollout", tenant_id__in={app.tenant_id for app in apps})
    for params in rollouts.order_by("created_at", "pk").values_list("params", flat=True):
        if params.get("app") in wanted and params.get("revision"):
            wanted[params["app"]] = params["revision"]
    return wanted


def _apps(tenant) -> list[dict]:
    from hivemind.applications.models import App, AppRevision

    apps = list(App.objects.filter(tenant=tenant).exclude(status=App.Status.DELETING).order_by("name"))
    desired = _desired(apps)
    revisions: dict[int, list[dict]] = {app.pk: [] for app in apps}
    numbers: dict[int, int] = {}
    rows = AppRevision.objects.filter(app__in=apps).select_related("created_by").order_by("app_id", "number")
    for r in rows:
        numbers[r.pk] = r.number
        revisions[r.app_id].append(
            {
                "number": r.number,
                "spec": r.spec,
                "change": r.change,
                "created_at": iso(r.created_at),
                "created_by": _username(r.created_by),
            }
        )
    result = []
    for app in apps:
        current = numbers.get(desired[app.pk])
        spec = next((r["spec"] for r in revisions[app.pk] if r["number"] == current), None)
        result.append(
            {
                "name": app.name,
                "service_name": app.service_name,
                "replicas": app.replicas,
                "revision": current,
                "spec": spec,
                "revisions": revisions[app.pk],
            }
        )
    return result


def _notifiers(tenant) -> list[dict]:
    from notifiers.models import Notifier

    return [
        {"name": n.name, "kind": n.kind, "config": n.config or {}, "secrets_to_reenter": sorted(n.secret_names or [])}
        for n in Notifier.objects.filter(tenant=tenant).order_by("name")
    ]


RULE_FIELDS = (
    "kind",
    "platform",
    "metric",
    "matchers",
    "aggregation",
    "window_seconds",
    "by",
    "comparison",
    "threshold",
    "event",
    "for_seconds",
    "severity",
    "labels",
    "annotations",
    "group_by",
    "repeat_interval_seconds",
    "enabled",
)


def _alert_rules(tenant) -> list[dict]:
    from alerting.models import AlertRule

    rules = AlertRule.objects.filter(tenant=tenant).prefetch_related("notifiers").order_by("name")
    return [
        {
            "name": r.name,
            **{f: getattr(r, f) for f in RULE_FIELDS},
            "notifiers": sorted(n.name for n in r.notifiers.all()),
        }
        for r in rules
    ]


def _backup_policies(tenant) -> list[dict]:
    """What a tenant backs up, where (its location by name: the location's credentials are not
    here) and when (version 2)."""
    from backups.models import BackupPolicy
    from backups.policies import EDITABLE

    rows = BackupPolicy.objects.filter(tenant=tenant).select_related("location").order_by("name")
    fields = [f for f in EDITABLE if f not in ("name", "location")]
    return [{"name": p.name, "location": p.location.name, **{f: getattr(p, f) for f in fields}} for p in rows]


def _silences(tenant) -> list[dict]:
    """Silences that still matter (not ended): an ended one is history."""
    from alerting.models import Silence

    rows = Silence.objects.filter(tenant=tenant, ends_at__gt=timezone.now()).select_related("created_by")
    silences = [
        {
            "matchers": s.matchers,
            "starts_at": iso(s.starts_at),
            "ends_at": iso(s.ends_at),
            "comment": s.comment,
            "created_by": _username(s.created_by),
        }
        for s in rows
    ]
    return sorted(silences, key=lambda s: (*silence_key(s), s["comment"]))


def silence_key(silence: dict) -> tuple:
    """A silence has no name: it is known by what it silences and when."""
    return (silence["starts_at"], silence["ends_at"], json.dumps(silence["matchers"], sort_keys=True))


# The tenant body's sections in the document's order, each serialized on its own.
SECTIONS = {
    "tenant": _tenant,
    "quota": _quota,
    "members": _members,
    "service_accounts": _service_accounts,
    "networks": _networks,
    "network_policies": _policies,
    "volumes": _volumes,
    "apps": _apps,
    "notifiers": _notifiers,
    "alert_rules": _alert_rules,
    "silences": _silences,
    "backup_policies": _backup_policies,
}
