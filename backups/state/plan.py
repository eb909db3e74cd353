"""The restore controller's dry run: what restoring a tenant document into a tenant would do.

`plan(document, into_tenant=..., rename=..., conflicts=...)` reads the target tenant (and the
platform's users and pools) and returns one action per object of the document, in the order a
restore applies them (what an object refers to comes before it):

    {"action": "create" | "replace" | "skip", "kind": "app", "name": "web2", "source": "web",
     "reason": "...", "warnings": [...], "object": {... as it would be written ...}}

`object` is the document's object with the name mapping applied to it and to everything it
refers to by name (an app's networks and volumes, a policy's apps and networks, a rule's
notifiers, a template volume's app), so the restore writes exactly what the plan lists. It
only reads: nothing is written.
"""

from __future__ import annotations

import copy

from django.contrib.auth import get_user_model

from backups.state.schema import StateError, load
from backups.state.serialize import silence_key, tenant_body
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label

CONFLICTS = ("skip", "replace", "rename")
RENAMEABLE = ("service_accounts", "notifiers", "networks", "network_policies", "volumes", "apps", "alert_rules",
              "backup_policies")  # fmt: skip
# The order a restore applies them in: an object's references exist before it.
ORDER = ("service_accounts", "notifiers", "networks", "network_policies", "volumes", "apps", "alert_rules",
         "backup_policies")  # fmt: skip
KIND = {
    "service_accounts": "service_account",
    "notifiers": "notifier",
    "networks": "network",
    "network_policies": "network_policy",
    "volumes": "volume",
    "apps": "app",
    "alert_rules": "alert_rule",
    "backup_policies": "backup_policy",
}
SUFFIX = "-restored"


def plan(
    document: bytes | str | dict,
    *,
    into_tenant,
    rename: dict | None = None,
    conflicts: str = "skip",
    tenant: str | None = None,
) -> list[dict]:
    """The actions restoring `document` into `into_tenant` (a Tenant or a slug, existing or
    not) would take. For a platform document, `tenant` names the tenant of it to restore."""
    if conflicts not in CONFLICTS:
        raise StateError("conflicts", f"expected one of {', '.join(CONFLICTS)}, got {str(conflicts)[:40]!r}")
    body = _body(load(document), tenant)
    target, slug = _target(into_tenant)
    rename = _check_rename(rename, body)
    current = tenant_body(target) if target is not None else None
    names = _names(body, current, rename, conflicts)

    actions = [_tenant_action(body, current, slug, conflicts), _quota_action(body, current, slug, conflicts)]
    actions += _member_actions(body, current, conflicts)
    for section in ORDER:
        for item in body[section]:
            source, final = item["name"], names[section][item["name"]]
            action, reason = names["_actions"][section][source]
            obj = _rewrite(section, copy.deepcopy(item), names)
            obj["name"] = final
            actions.append(
                {
                    "action": action,
                    "kind": KIND[section],
                    "name": final,
                    "source": source,
                    "reason": reason,
                    "warnings": _warnings(section, obj),
                    "object": obj,
                }
            )
    actions += _silence_actions(body, current)
    return actions


# -- the document and the target ---------------------------------------------------------
def _body(document: dict, tenant: str | None) -> dict:
    if document["kind"] == "tenant":
        if tenant is not None and tenant != document["tenant"]["slug"]:
            raise StateError("tenant", f"the document is tenant {document['tenant']['slug']}'s, not {tenant}'s")
        return document
    if tenant is None:
        raise StateError("tenant", "a platform document holds every tenant: name the one to restore")
    for body in document["tenants"]:
        if body["tenant"]["slug"] == tenant:
            return body
    raise StateError("tenant", f"the document has no tenant {tenant}")


def _target(into_tenant):
    from tenants.models import Tenant

    if isinstance(into_tenant, Tenant):
        return into_tenant, into_tenant.slug
    if not isinstance(into_tenant, str) or not is_dns_label(into_tenant) or len(into_tenant) > 50:
        raise StateError("into_tenant", f"expected a Tenant or a tenant slug, got {str(into_tenant)[:70]!r}")
    return Tenant.objects.filter(slug=into_tenant).first(), into_tenant


def _check_rename(rename, body: dict) -> dict[str, dict[str, str]]:
    """{section: {name in the document: name in the target}}, each checked."""
    if rename is None:
        return {section: {} for section in RENAMEABLE}
    if not isinstance(rename, dict):
        raise StateError("rename", 'expected {kind: {old name: new name}}, e.g. {"apps": {"web": "web2"}}')
    checked = {section: {} for section in RENAMEABLE}
    for section, mapping in rename.items():
        if section not in RENAMEABLE:
            raise StateError(f"rename.{section}", f"unknown kind; expected one of {', '.join(RENAMEABLE)}")
        if not isinstance(mapping, dict):
            raise StateError(f"rename.{section}", "expected {old name: new name}")
        known = {item["name"] for item in body[section]}
        for old, new in mapping.items():
            if old not in known:
                raise StateError(f"rename.{section}.{old}", f"the document has no {KIND[section]} named {old}")
            if not is_dns_label(new):
                raise StateError(f"rename.{section}.{old}", f"expected {DNS_LABEL_RULE}, got {str(new)[:70]!r}")
            checked[section][old] = new
    return checked


# -- names ------------------------------------------------------------------------------
def _free(wanted: str, avoid: set[str]) -> str:
    """The first of wanted-restored, wanted-restored-2, ... that nothing holds (63 at most)."""
    number = 1
    while True:
        suffix = SUFFIX if number == 1 else f"{SUFFIX}-{number}"
        name = wanted[: 63 - len(suffix)].rstrip("-") + suffix
        if name not in avoid:
            return name
        number += 1


def _template_of(volume: dict, apps: dict[str, str]) -> str | None:
    """A template volume's name under its app's new name (storage/mounts.py claim_name), if
    the app is renamed: the app finds its replicas' volumes by that name."""
    from storage.mounts import claim_name

    app, template = volume["labels"].get("app"), volume["labels"].get("template")
    if app not in apps or apps[app] == app or not template:
        return None
    prefix = f"{app}-{template}-"
    index = volume["name"].removeprefix(prefix)
    if not volume["name"].startswith(prefix) or not index.isdigit():
        return None
    return claim_name(apps[app], template, int(index))


def _names(body: dict, current: dict | None, rename: dict, conflicts: str) -> dict:
    """Each section's {source name: target name}, and (under "_actions") what happens to each."""
    names: dict = {"_actions": {}}
    default = next((n["name"] for n in current["networks"] if n["is_default"]), None) if current else None
    # Apps are named before volumes: a renamed app's template volumes follow it.
    for section in ("service_accounts", "notifiers", "networks", "network_policies", "apps", "volumes", "alert_rules",
                    "backup_policies"):  # fmt: skip
        taken = {item["name"] for item in current[section]} if current else set()
        wanted_of = {}
        for item in body[section]:
            wanted = rename[section].get(item["name"])
            if wanted is None and section == "volumes":
                wanted = _template_of(item, names["apps"])
            wanted_of[item["name"]] = wanted or item["name"]
        avoid = taken | set(wanted_of.values())
        mapped, actions, planned = {}, {}, {}
        for item in body[section]:
            source, wanted = item["name"], wanted_of[item["name"]]
            if section == "networks" and item["is_default"] and default is not None:
                wanted = default
            if wanted in planned:
                raise StateError(
                    f"rename.{section}", f"{planned[wanted]} and {source} would both be named {wanted} in the target"
                )
            if section == "networks" and item["is_default"] and default is not None:
                final = wanted
                action = "replace" if conflicts == "replace" else "skip"
                reason = f"the tenant's default network {default} takes the document's default network's place"
            elif wanted not in taken:
                final, action, reason = wanted, "create", "not in the tenant"
            elif conflicts == "skip":
                final, action, reason = wanted, "skip", f"{wanted} exists in the tenant: left as it is"
            elif conflicts == "replace":
                final, action, reason = wanted, "replace", f"{wanted} exists in the tenant: replaced"
            else:
                final = _free(wanted, avoid | set(planned))
                action, reason = "create", f"{wanted} exists in the tenant: created as {final}"
            planned[final] = source
            mapped[source], actions[source] = final, (action, reason)
        names[section], names["_actions"][section] = mapped, actions
    return names


def _rewrite(section: str, obj: dict, names: dict) -> dict:
    """Replace every reference by name inside one object with the target's name."""
    if section == "apps":
        for spec in [obj["spec"], *(r["spec"] for r in obj["revisions"])]:
            if spec is None:
                continue
            spec["networks"] = [names["networks"].get(n, n) for n in spec.get("networks") or []]
            for mount in spec.get("volumes") or []:
                mount["volume"] = names["volumes"].get(mount["volume"], mount["volume"])
        if obj["service_name"] == obj["name"]:
            obj["service_name"] = names["apps"][obj["name"]]
    elif section == "network_policies":
        spec = obj["spec"]
        spec["apps"] = sorted(names["apps"].get(a, a) for a in spec.get("apps") or [])
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction) or []:
                for peer in rule.get(peers_key) or []:
                    if "app" in peer and not peer.get("tenant"):
                        peer["app"] = names["apps"].get(peer["app"], peer["app"])
                    if "network" in peer:
                        peer["network"] = names["networks"].get(peer["network"], peer["network"])
    elif section == "alert_rules":
        obj["notifiers"] = sorted(names["notifiers"].get(n, n) for n in obj["notifiers"])
    elif section == "backup_policies" and obj["scope"] in ("apps", "volumes"):
        obj["names"] = sorted(names[obj["scope"]].get(n, n) for n in obj["names"])
    elif section == "volumes" and obj["labels"].get("template") and obj["labels"].get("app") in names["apps"]:
        obj["labels"]["app"] = names["apps"][obj["labels"]["app"]]
    return obj


def _warnings(section: str, obj: dict) -> list[str]:
    """What the restore will have to decide that the document cannot (a pool missing here)."""
    from storage.models import StoragePool

    warnings = []
    if section == "volumes":
        pools = {obj["pool"], *([obj["replica"]["pool"]] if obj["replica"] else [])}
        here = set(StoragePool.objects.filter(name__in=pools).values_list("name", flat=True))
        for pool in sorted(pools - here):
            warnings.append(f"no storage pool named {pool} here: the restore must choose another")
    if section == "notifiers" and obj["secrets_to_reenter"]:
        warnings.append(f"secrets to enter again: {', '.join(obj['secrets_to_reenter'])}")
    return warnings


# -- objects without a name of their own ---------------------------------------------------
def _tenant_action(body: dict, current: dict | None, slug: str, conflicts: str) -> dict:
    obj = {**body["tenant"], "slug": slug}
    if current is None:
        action, reason = "create", f"no tenant {slug} here"
    elif conflicts == "replace":
        action, reason = "replace", f"tenant {slug} exists: its settings replaced"
    else:
        action, reason = "skip", f"tenant {slug} exists: its settings left as they are"
    return _action(action, "tenant", slug, body["tenant"]["slug"], reason, obj)


def _quota_action(body: dict, current: dict | None, slug: str, conflicts: str) -> dict:
    if current is None or current["quota"] is None:
        action, reason = "create", "the tenant has no quota"
    elif conflicts == "replace":
        action, reason = "replace", "the tenant's quota replaced"
    else:
        action, reason = "skip", "the tenant has a quota: left as it is"
    return _action(action, "quota", slug, body["tenant"]["slug"], reason, body["quota"])


def _member_actions(body: dict, current: dict | None, conflicts: str) -> list[dict]:
    members = {m["username"]: m["role"] for m in current["members"]} if current else {}
    usernames = [m["username"] for m in body["members"]]
    users = set(get_user_model().objects.filter(username__in=usernames).values_list("username", flat=True))
    actions = []
    for member in body["members"]:
        username = member["username"]
        if username not in users:
            action, reason = "create", f"no user named {username} on this platform: made (without a password)"
        elif username not in members:
            action, reason = "create", "not a member of the tenant"
        elif conflicts == "replace":
            action, reason = "replace", f"a member already (as {members[username]}): role set to {member['role']}"
        else:
            action, reason = "skip", f"a member already (as {members[username]}): left as it is"
        actions.append(_action(action, "member", username, username, reason, dict(member)))
    return actions


def _silence_actions(body: dict, current: dict | None) -> list[dict]:
    here = {silence_key(s) for s in current["silences"]} if current else set()
    actions = []
    for silence in body["silences"]:
        name = f"{silence['starts_at']}..{silence['ends_at']}"
        if silence_key(silence) in here:
            action, reason = "skip", "the same silence (matchers and times) exists in the tenant"
        else:
            action, reason = "create", "not in the tenant"
        actions.append(_action(action, "silence", name, name, reason, dict(silence)))
    return actions


def _action(action: str, kind: str, name: str, source: str, reason: str, obj) -> dict:
    return {
        "action": action,
        "kind": kind,
        "name": name,
        "source": source,
        "reason": reason,
        "warnings": [],
        "object": obj,
    }
