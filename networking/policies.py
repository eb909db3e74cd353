"""Network policies: the spec users write, its normal form, and its resolution to addresses.

    {"apps": ["web"],                       # selected apps of the tenant by name ...
     "labels": {"tier": "web"},             # ... and/or by their spec's labels; neither = every app
     "ingress": [                           # present: the selected apps are isolated for ingress
        {"from": [{"app": "api"},           # an app of the same tenant
                  {"app": "client", "tenant": "tenant-b"},   # an app of another tenant (its slug)
                  {"labels": {"tier": "api"}},              # the tenant's apps with these labels
                  {"network": "backend"},   # a network of the same tenant
                  {"cidr": "192.0.2.0/24"}],
         "ports": [{"protocol": "tcp", "port": 80}]}],       # [] or absent: every port
     "egress": [{"to": [...], "ports": [...]}]}              # present: isolated for egress

An absent `ingress` (or `egress`) leaves that direction alone; an empty list denies it all.
A rule with no `from` (`to`) allows any peer. Resolution reads the Address rows, so a
policy follows replicas as they come and go (each node recompiles on its next pass).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.core.exceptions import ValidationError

from hivemind.core import limits
from hivemind.core.names import is_dns_label
from networking import nft

MAX_RULES = 100
MAX_PEERS = 100
PROTOCOLS = ("tcp", "udp")
POLICY_FIELDS = {"apps", "labels", "ingress", "egress"}


def _fail(field: str, message: str):
    raise ValidationError({field: message})


def _names(field: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(field, "expected a list of app names")
    limits.check_count(field, value, MAX_PEERS, "names")
    for i, name in enumerate(value):
        if not is_dns_label(name):
            _fail(f"{field}[{i}]", f"expected an app name (a DNS label), got {name[:70]!r}")
    return sorted(set(value))


def _labels(field: str, value) -> dict[str, str]:
    from hivemind.applications.spec import clean_labels

    try:
        return clean_labels(value)
    except ValidationError as exc:
        (key, messages), *_ = exc.message_dict.items()
        _fail(field + key.removeprefix("labels"), messages[0])


def _peer(field: str, value) -> dict:
    if not isinstance(value, dict) or not value:
        _fail(
            field,
            'expected {"app": name}, {"app": name, "tenant": slug}, {"labels": {...}}, {"network": name} '
            'or {"cidr": prefix}',
        )
    keys = set(value)
    if keys in ({"labels"}, {"labels", "tenant"}):
        if "tenant" in value and (not isinstance(value["tenant"], str) or not is_dns_label(value["tenant"])):
            _fail(f"{field}.tenant", f"expected a tenant slug, got {str(value['tenant'])[:70]!r}")
        labels = _labels(f"{field}.labels", value["labels"])
        if not labels:
            _fail(f"{field}.labels", "expected at least one label")
        return {**value, "labels": labels}
    if keys in ({"app"}, {"app", "tenant"}):
        for key in sorted(keys):
            if not isinstance(value[key], str) or not is_dns_label(value[key]):
                _fail(f"{field}.{key}", f"expected a DNS label, got {str(value[key])[:70]!r}")
        return dict(value)
    if keys == {"network"}:
        if not isinstance(value["network"], str) or not is_dns_label(value["network"]):
            _fail(f"{field}.network", f"expected a network name, got {str(value['network'])[:70]!r}")
        return dict(value)
    if keys == {"cidr"}:
        try:
            return {"cidr": str(ipaddress.ip_network(str(value["cidr"]), strict=False))}
        except ValueError:
            _fail(f"{field}.cidr", f"expected an IPv4 or IPv6 prefix, got {str(value['cidr'])[:70]!r}")
    _fail(field, f"unknown peer {sorted(keys)}: expected app or labels (and tenant), network or cidr")


def _ports(field: str, value) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(field, 'expected a list of {"protocol": "tcp", "port": 80}')
    limits.check_count(field, value, MAX_PEERS, "ports")
    ports = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or set(item) - {"protocol", "port"} or "port" not in item:
            _fail(where, 'expected {"protocol": "tcp"|"udp", "port": 1-65535}')
        protocol = item.get("protocol", "tcp")
        if protocol not in PROTOCOLS:
            _fail(f"{where}.protocol", f"expected tcp or udp, got {str(protocol)[:20]!r}")
        port = item["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            _fail(f"{where}.port", f"expected a port from 1 to 65535, got {str(port)[:20]!r}")
        ports.append({"protocol": protocol, "port": port})
    return ports


def _rules(field: str, value, peers_key: str) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        _fail(field, f"expected a list of {{{peers_key}, ports}} rules")
    limits.check_count(field, value, MAX_RULES, "rules")
    rules = []
    for i, rule in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(rule, dict) or set(rule) - {peers_key, "ports"}:
            _fail(where, f"expected {{{peers_key}: [...], ports: [...]}}")
        peers = rule.get(peers_key) or []
        if not isinstance(peers, list):
            _fail(f"{where}.{peers_key}", "expected a list of peers")
        limits.check_count(f"{where}.{peers_key}", peers, MAX_PEERS, "peers")
        rules.append(
            {
                peers_key: [_peer(f"{where}.{peers_key}[{j}]", peer) for j, peer in enumerate(peers)],
                "ports": _ports(f"{where}.ports", rule.get("ports")),
            }
        )
    return rules


def clean_policy(data: Any) -> dict:
    """The normal form of a policy spec, or ValidationError naming the field as written."""
    if not isinstance(data, dict):
        _fail("spec", "expected an object with apps, ingress and egress")
    unknown = set(data) - POLICY_FIELDS
    if unknown:
        _fail("spec", f"unknown field(s): {', '.join(sorted(unknown))}; expected apps, ingress, egress")
    ingress = _rules("ingress", data.get("ingress"), "from")
    egress = _rules("egress", data.get("egress"), "to")
    if ingress is None and egress is None:
        _fail("ingress", "a policy needs ingress rules, egress rules or both (an empty list denies everything)")
    clean = {"apps": _names("apps", data.get("apps")), "labels": _labels("labels", data.get("labels"))}
    if ingress is not None:
        clean["ingress"] = ingress
    if egress is not None:
        clean["egress"] = egress
    return clean


def warnings_for(policy) -> list[str]:
    """What the policy names that does not exist (yet): it is kept, it just matches nothing."""
    from hivemind.applications.models import App
    from networking.models import Network

    found = []
    specs = dict(App.objects.filter(tenant_id=policy.tenant_id).values_list("name", "revision__spec"))
    apps = set(specs)
    wanted = policy.spec.get("labels") or {}
    if wanted and not any(_matches((spec or {}).get("labels"), wanted) for spec in specs.values()):
        found.append(f"labels: no app of tenant {policy.tenant.slug} has the labels {wanted} (yet)")
    for name in policy.spec["apps"]:
        if name not in apps:
            found.append(
                f"apps: no app named {name} in tenant {policy.tenant.slug} (the policy selects nothing for it)"
            )
    if not apps and not policy.spec["apps"]:
        found.append("apps: the tenant has no app yet (the policy selects nothing)")
    networks = set(Network.objects.filter(tenant_id=policy.tenant_id).values_list("name", flat=True))
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(policy.spec.get(direction) or []):
            for j, peer in enumerate(rule[key]):
                if "network" in peer and peer["network"] not in networks:
                    found.append(f"{direction}[{i}].{key}[{j}]: no network named {peer['network']}")
                elif "app" in peer and "tenant" not in peer and peer["app"] not in apps:
                    found.append(f"{direction}[{i}].{key}[{j}]: no app named {peer['app']}")
    return found


# --- resolution, for the nodes ------------------------------------------------------------------


def _matches(labels: dict | None, wanted: dict) -> bool:
    """An app's labels include every wanted key with its value."""
    labels = labels or {}
    return all(labels.get(key) == value for key, value in wanted.items())


class _Addresses:
    """Addresses of apps and prefixes of networks, read once per compilation."""

    def __init__(self) -> None:
        from networking.models import Address, Network

        self.by_app: dict[tuple[int, str], set[str]] = {}
        self.by_tenant: dict[int, set[str]] = {}
        rows = Address.objects.values_list("container__tenant_id", "container__app__name", "ipv4", "ipv6")
        for tenant_id, app, ipv4, ipv6 in rows:
            found = {a for a in (ipv4, ipv6) if a}
            self.by_app.setdefault((tenant_id, app), set()).update(found)
            self.by_tenant.setdefault(tenant_id, set()).update(found)
        self.networks = {
            (tenant_id, name): {s for s in (s4, s6) if s}
            for tenant_id, name, s4, s6 in Network.objects.values_list("tenant_id", "name", "subnet4", "subnet6")
        }
        from tenants.models import Tenant

        self.tenants = dict(Tenant.objects.values_list("slug", "pk"))
        from hivemind.applications.models import App

        self.labels: dict[int, dict[str, dict]] = {}  # tenant -> app name -> its labels
        for tenant_id, name, spec in App.objects.values_list("tenant_id", "name", "revision__spec"):
            self.labels.setdefault(tenant_id, {})[name] = (spec or {}).get("labels") or {}

    def _labelled(self, tenant_id: int, wanted: dict) -> set[str]:
        names = [name for name, labels in self.labels.get(tenant_id, {}).items() if _matches(labels, wanted)]
        return set().union(*(self.by_app.get((tenant_id, name), set()) for name in names))

    def peers(self, tenant_id: int, peer: dict) -> set[str]:
        if "cidr" in peer:
            return {peer["cidr"]}
        if "network" in peer:
            return self.networks.get((tenant_id, peer["network"]), set())
        owner = self.tenants.get(peer["tenant"]) if "tenant" in peer else tenant_id
        if "labels" in peer:
            return self._labelled(owner, peer["labels"])
        return self.by_app.get((owner, peer["app"]), set())

    def targets(self, tenant_id: int, apps: list[str], labels: dict) -> set[str]:
        """The selected apps' addresses: named in `apps` (when any) and having `labels` (when any)."""
        found = set(self.by_tenant.get(tenant_id, set()))
        if apps:
            found &= set().union(*(self.by_app.get((tenant_id, app), set()) for app in apps))
        if labels:
            found &= self._labelled(tenant_id, labels)
        return found


def resolve(policies) -> tuple[list[nft.PolicyRule], nft.Isolation]:
    """Every policy as nft rules over today's addresses, and the isolated addresses."""
    addresses = _Addresses()
    rules: list[nft.PolicyRule] = []
    isolated = {"ingress": set(), "egress": set()}
    for policy in policies:
        targets = addresses.targets(policy.tenant_id, policy.spec["apps"], policy.spec.get("labels") or {})
        for direction, key in (("ingress", "from"), ("egress", "to")):
            entries = policy.spec.get(direction)
            if entries is None:
                continue
            isolated[direction] |= targets
            for rule in entries:
                peers: set[str] = set()
                for peer in rule[key]:
                    peers |= addresses.peers(policy.tenant_id, peer)
                if rule[key] and not peers:
                    continue  # every peer it names is absent: it allows nothing (yet)
                if not targets:
                    continue
                ports = tuple((p["protocol"], p["port"]) for p in rule["ports"])
                rules.append(
                    nft.PolicyRule(
                        policy_id=policy.pk,
                        direction=direction,
                        targets=frozenset(targets),
                        peers=frozenset(peers),
                        ports=ports,
                    )
                )
    return rules, nft.Isolation(ingress=frozenset(isolated["ingress"]), egress=frozenset(isolated["egress"]))
