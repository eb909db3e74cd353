"""A restore plan's configuration part, applied to a tenant through the existing services.

`apply_actions(restore, actions, actor)` does what each action of a plan (backups/restores.py)
says, in the plan's order (what an object refers to first): notifiers (without secrets; a
replace changes their settings, their secrets stay), networks (network_create; a
replace changes labels and default-deny, the only settings a network changes in place),
network policies (policy_apply), volumes (volume_create with the stored definition; their
data comes back afterwards on their node), apps (app_deploy with the stored spec, replicas
and service name; a replace is an app_update to the stored spec, a new revision), alert
rules (with the notifiers restored or there by name), backup policies (policy_create, into the
tenant's location of the same name; their beat schedules with them); and of the tenant itself (a whole backup
into its own tenant, as the caller's role allows: backups/restores.py): its settings
(tenant_update), quota (quota_set), members (membership_add or membership_change_role; a user
the platform lacks is made first, without a usable password) and silences (silence_create).

Each object created is recorded on `Restore.result["created"]` as soon as it exists, so a step
run again adopts it rather than failing on its name, and the workflow's compensation
(`undo_created`) removes exactly those, newest first; what existed before is never removed.
"""

from __future__ import annotations

import copy

from django.db import transaction

from backups.models import Restore


def _record(restore: Restore, entry: dict) -> None:
    with transaction.atomic():
        row = Restore.objects.select_for_update().only("result").get(pk=restore.pk)
        result = dict(row.result or {})
        result.setdefault("created", []).append(entry)
        Restore.objects.filter(pk=restore.pk).update(result=result)
        restore.result = result


def _created(restore: Restore) -> set[tuple[str, str]]:
    result = Restore.objects.only("result").get(pk=restore.pk).result or {}
    return {(entry["kind"], entry["name"]) for entry in result.get("created", [])}


def apply_actions(restore: Restore, actions: list[dict], actor) -> list[dict]:
    """Apply the configuration actions of a plan; returns what was done, one entry each."""
    done = []
    created = _created(restore)
    for action in actions:
        kind, verb = action["kind"], action["action"]
        if kind not in APPLY or verb not in ("create", "replace"):
            continue
        if verb == "create" and (kind, action["name"]) in created:
            done.append({"kind": kind, "name": action["name"], "action": "adopted"})
            continue  # an earlier attempt of this step made it
        with transaction.atomic():  # made and recorded together: a retry finds it recorded, or not made
            obj = APPLY[kind](restore, action, actor)
            if verb == "create" and kind in UNDONE:
                _record(restore, {"kind": kind, "name": action["name"], "id": obj.pk})
        done.append({"kind": kind, "name": action["name"], "action": verb, "id": obj.pk})
    return done


def _network(restore: Restore, action: dict, actor):
    from networking import services
    from networking.models import Network

    obj, tenant = action["object"], restore.tenant
    if action["action"] == "replace":
        network = Network.objects.get(tenant=tenant, name=action["name"])
        return services.network_update(network=network, actor=actor, labels=obj["labels"],
                                       default_deny=obj["default_deny"])  # fmt: skip
    if obj.get("is_default"):  # the tenant has none yet: the one every tenant gets, as the backup's was
        network = services.network_default(tenant, actor)
        return services.network_update(network=network, actor=actor, labels=obj["labels"],
                                       default_deny=obj["default_deny"])  # fmt: skip
    ipv4, ipv6 = obj.get("ipv4"), obj.get("ipv6")
    return services.network_create(
        tenant=tenant, name=action["name"], actor=actor, ipv4=ipv4 is not None, ipv6=ipv6 is not None,
        prefix4=ipv4["prefix"] if ipv4 else None, prefix6=ipv6["prefix"] if ipv6 else None,
        labels=obj["labels"], default_deny=obj["default_deny"],
    )  # fmt: skip


def _policy(restore: Restore, action: dict, actor):
    from networking import services

    policy, _created_now = services.policy_apply(tenant=restore.tenant, name=action["name"],
                                                 spec=action["object"]["spec"], actor=actor)  # fmt: skip
    return policy


def _volume(restore: Restore, action: dict, actor):
    from storage import services
    from storage.models import StoragePool

    obj = action["object"]
    pool = obj["pool"] if StoragePool.objects.filter(name=obj["pool"]).exists() else None
    volume = services.volume_create(
        tenant=restore.tenant, name=action["name"], size=obj["size_bytes"], actor=actor, pool=pool,
        access_mode=obj["access_mode"], encrypted=obj["encrypted"], labels=obj["labels"],
    )  # fmt: skip
    if action.get("key_from"):
        # Its backup is the backed-up volume's ciphertext: the new volume gets that volume's key
        # (in this transaction, before its create step runs and initialises with it).
        from tenants import keys

        keys.data_key_copy(tenant=restore.tenant, purpose="volume", source_id=action["key_from"], object_id=volume.pk)
    return volume


def as_input(spec: dict) -> dict:
    """A stored spec (the normal form of hivemind/applications/spec.py) as the services take
    one: its CPU quantities are millicores, which the spec reads as "<n>m"."""
    spec = copy.deepcopy(spec)
    resources = spec.get("resources") or {}
    for field in ("cpu", "cpu_limit"):
        if isinstance(resources.get(field), int):
            resources[field] = f"{resources[field]}m"
    return spec


def _app(restore: Restore, action: dict, actor):
    from hivemind.applications import services
    from hivemind.applications.models import App

    obj = action["object"]
    if obj["spec"] is None:
        raise ValueError(f"app {action['source']} has no spec in the backup: it cannot be deployed")
    if action["action"] == "replace":
        app = App.objects.get(tenant=restore.tenant, name=action["name"])
        services.app_update(app=app, spec=as_input(obj["spec"]), actor=actor,
                            change=f"restored from backup {restore.backup_id}")  # fmt: skip
        return app
    return services.app_deploy(tenant=restore.tenant, name=action["name"], spec=as_input(obj["spec"]),
                               replicas=obj["replicas"], service_name=obj["service_name"], actor=actor)  # fmt: skip


def _notifier(restore: Restore, action: dict, actor):
    from notifiers import services
    from notifiers.models import Notifier

    obj = action["object"]
    if action["action"] == "replace":  # its settings; the secrets it has stay
        notifier = Notifier.objects.get(tenant=restore.tenant, name=action["name"])
        return services.notifier_update(notifier=notifier, config=obj["config"], actor=actor)
    return services.notifier_create(tenant=restore.tenant, name=action["name"], kind=obj["kind"],
                                    config=obj["config"], secrets={}, actor=actor)  # fmt: skip


def _alert_rule(restore: Restore, action: dict, actor):
    from alerting import services
    from alerting.models import AlertRule
    from notifiers.models import Notifier

    obj = action["object"]
    values = {field: obj[field] for field in services.RULE_FIELDS if field in obj}
    notifiers = list(Notifier.objects.filter(tenant=restore.tenant, name__in=obj["notifiers"]))
    if action["action"] == "replace":
        rule = AlertRule.objects.get(tenant=restore.tenant, name=action["name"])
        return services.rule_update(rule=rule, actor=actor, notifiers=notifiers, **values)
    return services.rule_create(tenant=restore.tenant, actor=actor, notifiers=notifiers, **values)


def _tenant(restore: Restore, action: dict, actor):
    from tenants import services

    obj = action["object"]
    fields = {field: obj[field] for field in ("name", "description", "isolation_level", "labels")}
    return services.tenant_update(tenant=restore.tenant, actor=actor, **fields)


def _quota(restore: Restore, action: dict, actor):
    from tenants import services
    from tenants.models import TenantQuota
    from tenants.quotas import RESOURCES

    TenantQuota.objects.get_or_create(tenant=restore.tenant)
    limits = {name: limit for name, limit in action["object"].items() if name in RESOURCES}
    return services.quota_set(tenant=restore.tenant, limits=limits, actor=actor)


def _member(restore: Restore, action: dict, actor):
    from django.contrib.auth import get_user_model

    from tenants import services
    from tenants.models import Membership

    username, role = action["name"], action["object"]["role"]
    if action["action"] == "replace":
        membership = Membership.objects.get(tenant=restore.tenant, user__username=username)
        return services.membership_change_role(membership=membership, role=role, actor=actor)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:  # the plan allowed it (platform staff): no password until one is set
        user, _generated = services.user_create(username=username, actor=actor)
        user.set_unusable_password()
        user.save(update_fields=["password"])
        _record(restore, {"kind": "user", "name": username, "id": user.pk})
    return services.membership_add(tenant=restore.tenant, user=user, role=role, actor=actor)


def _service_account(restore: Restore, action: dict, actor):
    from tenants import services
    from tenants.models import Role

    obj = action["object"]
    return services.service_account_create(tenant=restore.tenant, name=action["name"], role=obj["role"] or Role.VIEWER,
                                           actor=actor, description=obj["description"])  # fmt: skip


def _silence(restore: Restore, action: dict, actor):
    from datetime import datetime

    from alerting import services

    obj = action["object"]
    return services.silence_create(
        tenant=restore.tenant, matchers=obj["matchers"], starts_at=datetime.fromisoformat(obj["starts_at"]),
        ends_at=datetime.fromisoformat(obj["ends_at"]), comment=obj["comment"], actor=actor,
    )  # fmt: skip


def _backup_policy(restore: Restore, action: dict, actor):
    from backups import policies
    from backups.models import BackupPolicy

    obj = action["object"]
    values = {field: obj[field] for field in policies.EDITABLE if field not in ("name", "location")}
    if action["action"] == "replace":
        policy = BackupPolicy.objects.get(tenant=restore.tenant, name=action["name"])
        return policies.policy_update(policy=policy, actor=actor, location=obj["location"], **values)
    return policies.policy_create(tenant=restore.tenant, name=action["name"], location=obj["location"], actor=actor,
                                  **values)  # fmt: skip


APPLY = {"tenant": _tenant, "quota": _quota, "member": _member, "service_account": _service_account,
         "silence": _silence, "notifier": _notifier,
         "network": _network, "network_policy": _policy, "volume": _volume, "app": _app,
         "alert_rule": _alert_rule, "backup_policy": _backup_policy}  # fmt: skip
# What a restore's compensation removes when this restore created it (settings and quotas it
# set are not objects it made: they stay, as a replaced app's new revision does).
UNDONE = {"notifier", "network", "network_policy", "volume", "app", "alert_rule", "member", "silence",
          "backup_policy", "service_account"}  # fmt: skip


def undo_created(restore: Restore, actor=None) -> list[str]:
    """Remove what this restore created (newest first); returns what could not be, and why.
    Apps and volumes go through their delete workflows; what existed before is not touched."""
    from django.contrib.auth import get_user_model

    from alerting import services as alerting
    from alerting.models import AlertRule, Silence
    from backups import policies
    from backups.models import BackupPolicy
    from hivemind.applications import services as apps
    from hivemind.applications.models import App
    from networking import services as networking
    from networking.models import Network, NetworkPolicy
    from notifiers import services as notifiers
    from notifiers.models import Notifier
    from storage import services as storage
    from storage.models import Volume
    from tenants import services as tenants
    from tenants.models import Membership, ServiceAccount

    models = {"app": App, "volume": Volume, "network": Network, "network_policy": NetworkPolicy,
              "notifier": Notifier, "alert_rule": AlertRule, "member": Membership, "silence": Silence,
              "backup_policy": BackupPolicy, "service_account": ServiceAccount}  # fmt: skip
    left = []
    result = Restore.objects.only("result").get(pk=restore.pk).result or {}
    for entry in reversed(result.get("created", [])):
        if entry["kind"] == "user":  # made for a member: gone unless it has since got a password or a tenant
            user = get_user_model().objects.filter(pk=entry["id"], memberships__isnull=True).first()
            if user is not None and not user.has_usable_password():
                user.delete()
            continue
        obj = models[entry["kind"]].objects.filter(pk=entry["id"], tenant_id=restore.tenant_id).first()
        if obj is None:
            continue
        try:
            with transaction.atomic():
                if entry["kind"] == "member":
                    tenants.membership_remove(membership=obj, actor=actor)
                elif entry["kind"] == "silence":
                    obj.delete()
                elif entry["kind"] == "backup_policy":
                    policies.policy_delete(policy=obj, actor=actor)
                elif entry["kind"] == "service_account":
                    tenants.service_account_delete(account=obj, actor=actor)
                elif entry["kind"] == "app":
                    apps.app_delete(app=obj, actor=actor)
                elif entry["kind"] == "volume":
                    storage.volume_delete(volume=obj, actor=actor)
                elif entry["kind"] == "network":
                    networking.network_delete(network=obj, actor=actor)
                elif entry["kind"] == "notifier":
                    notifiers.notifier_delete(notifier=obj, actor=actor)
                elif entry["kind"] == "alert_rule":
                    alerting.rule_delete(rule=obj, actor=actor)
                else:
                    networking.policy_delete(policy=obj, actor=actor)
        except Exception as exc:  # one that cannot go now must not keep the others
            left.append(f"{entry['kind']} {entry['name']}: {exc}")
    return left
