"""Writes for networks and address pools. Addresses themselves come from networking/ipam.py.

A network exists in the database first: its devices appear on a node when a replica that
joins it is placed there, and go when the last one leaves (networking/node.py). So creating
a network holds quota and allocates prefixes in one transaction, and deleting one that no
app uses needs no workflow: every node drops what it held on its next reconcile pass.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hivemind.core import limits
from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.nodes.labels import LabelError, check_key, check_value, parse_labels
from networking import ipam
from networking.models import IPPool, Network, NetworkPolicy
from networking.policies import clean_policy
from tenants.models import QuotaReservation
from tenants.services import audit_record, quota_release, quota_reserve, tenant_require_active

DEFAULT_NAME = "default"
VNI_BASE = 4096  # VNIs below are left to whatever else a site runs over VXLAN


def _check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValidationError({field: f"expected {DNS_LABEL_RULE}, got {str(value)[:70]!r}"})
    return value


def _check_labels(labels) -> dict[str, str]:
    """Labels as a {key: value} object or `k=v,k2=v2`, with the node labels' rules for keys and values."""
    if labels in (None, ""):
        return {}
    try:
        if isinstance(labels, str):
            return parse_labels(labels)
        if not isinstance(labels, dict):
            raise LabelError("expected an object of label keys and values")
        limits.check_count("labels", labels, limits.MAX_LABELS, "labels")
        for key, value in labels.items():
            if not isinstance(value, str):
                raise LabelError(f"label {key!r}: expected a string value")
            check_key(key)
            check_value(key, value)
        return dict(labels)
    except LabelError as exc:
        raise ValidationError({"labels": str(exc)}) from None


def _check_prefix(family: int, value) -> int | None:
    if value is None:
        return None
    low, high = ipam.PREFIX_LIMITS[family]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError({f"prefix{family}": f"expected a prefix length from {low} to {high}, got {value!r}"})
    return value


@transaction.atomic
def network_create(
    *,
    tenant,
    name: str,
    actor,
    ipv4: bool = True,
    ipv6: bool = True,
    prefix4: int | None = None,
    prefix6: int | None = None,
    labels: dict | None = None,
    default_deny: bool = False,
    is_default: bool = False,
) -> Network:
    """A tenant network with its prefixes (dual stack unless asked). Holds one `networks` of the
    quota, except the tenant's default network, which every tenant has."""
    _check_name("name", name)
    if not (ipv4 or ipv6):
        raise ValidationError({"ipv4": "a network needs IPv4, IPv6 or both"})
    prefix4, prefix6 = _check_prefix(4, prefix4), _check_prefix(6, prefix6)
    labels = _check_labels(labels)
    tenant_require_active(tenant)
    try:
        with transaction.atomic():
            network = Network.objects.create(
                tenant=tenant, name=name, labels=labels, default_deny=default_deny, is_default=is_default,
                created_by=actor,
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(f"a network named {name} exists in tenant {tenant.slug}", code="network_exists") from None
    network.vni = VNI_BASE + network.pk
    network.save(update_fields=["vni"])
    if not is_default:
        network.reservation, _warnings = quota_reserve(
            tenant=tenant, amounts={"networks": 1}, actor=actor, reason=f"network {name}"
        )
        network.save(update_fields=["reservation"])
    if ipv4:
        ipam.retrying(lambda: ipam.allocate_subnet(network, 4, prefix4))
    if ipv6:
        ipam.retrying(lambda: ipam.allocate_subnet(network, 6, prefix6))
    audit_record(
        actor=actor, tenant=tenant, action="network.create", obj=network,
        changes={"subnet4": network.subnet4, "subnet6": network.subnet6},
    )  # fmt: skip
    return network


def network_default(tenant, actor=None) -> Network:
    """The tenant's default network, made on first use."""
    found = Network.objects.filter(tenant=tenant, is_default=True).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return network_create(tenant=tenant, name=DEFAULT_NAME, actor=actor, is_default=True)
    except Conflict:  # made meanwhile by another request (or a network the tenant named "default")
        found = Network.objects.filter(tenant=tenant, is_default=True).first()
        if found is None:
            raise
        return found


def networks_for_spec(tenant, spec: dict, actor=None) -> list[Network]:
    """The networks an app's spec names, in order; none named: the tenant's default network.
    A name the tenant has no network of is a 400 naming the list entry."""
    names = spec.get("networks") or []
    if not names:
        return [network_default(tenant, actor)]
    found = {n.name: n for n in Network.objects.filter(tenant=tenant, name__in=names)}
    if DEFAULT_NAME in names and DEFAULT_NAME not in found:  # named before its first use made it
        default = network_default(tenant, actor)
        if default.name == DEFAULT_NAME:
            found[DEFAULT_NAME] = default
    for i, name in enumerate(names):
        network = found.get(name)
        if network is None:
            raise ValidationError({f"networks[{i}]": f"tenant {tenant.slug} has no network named {name}"})
        if network.status == Network.Status.DELETING:
            raise ValidationError({f"networks[{i}]": f"network {name} is being deleted"})
    return [found[name] for name in names]


@transaction.atomic
def network_update(*, network: Network, actor, labels=None, default_deny: bool | None = None) -> Network:
    """Labels and default-deny change in place; prefixes and the VNI never do."""
    network = Network.objects.select_for_update().get(pk=network.pk)
    changes = {}
    if labels is not None:
        network.labels = changes["labels"] = _check_labels(labels)
    if default_deny is not None:
        network.default_deny = changes["default_deny"] = default_deny
    network.save()
    audit_record(actor=actor, tenant=network.tenant, action="network.update", obj=network, changes=changes)
    return network


def apps_using(network: Network) -> list[str]:
    """Names of the apps whose current revision joins the network, or that still have a member on it."""
    from hivemind.applications.models import App

    names = set(
        App.objects.filter(tenant_id=network.tenant_id, containers__addresses__network=network).values_list(
            "name", flat=True
        )
    )
    for app in App.objects.filter(tenant_id=network.tenant_id).select_related("revision"):
        wanted = (app.revision.spec.get("networks") if app.revision else None) or []
        if network.name in wanted or (network.is_default and not wanted):
            names.add(app.name)
    return sorted(names)


@transaction.atomic
def network_delete(*, network: Network, actor) -> None:
    """Delete a network no app uses (409 naming the apps otherwise) and give its quota back."""
    network = Network.objects.select_for_update().get(pk=network.pk)
    users = apps_using(network)
    if users:
        raise Conflict(
            f"network {network.name} is used by app(s) {', '.join(users[:10])}{' …' if len(users) > 10 else ''}: "
            f"move or delete them first",
            code="network_in_use",
        )
    if network.reservation_id:
        held = QuotaReservation.objects.get(pk=network.reservation_id)
        if held.state == QuotaReservation.State.HELD:
            quota_release(reservation=held, actor=actor)
    audit_record(actor=actor, tenant=network.tenant, action="network.delete", obj=network)
    network.delete()


# --- pools (staff) ------------------------------------------------------------------------------


@transaction.atomic
def pool_create(*, name: str, cidr: str, actor, default_prefix: int | None = None, is_default: bool = False) -> IPPool:
    _check_name("name", name)
    network = ipam.parse_cidr(cidr, field="cidr")
    default_prefix = default_prefix or (24 if network.version == 4 else 64)
    ipam.check_pool(cidr=network, default_prefix=default_prefix)
    if is_default:
        IPPool.objects.filter(family=network.version, is_default=True).update(is_default=False)
    try:
        with transaction.atomic():
            pool = IPPool.objects.create(
                name=name, family=network.version, cidr=str(network), default_prefix=default_prefix,
                is_default=is_default,
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(f"a pool named {name} (or with the prefix {network}) exists", code="pool_exists") from None
    audit_record(actor=actor, tenant=None, action="ip_pool.create", obj=pool, changes={"cidr": pool.cidr})
    return pool


@transaction.atomic
def pool_update(*, pool: IPPool, actor, default_prefix: int | None = None, is_default: bool | None = None) -> IPPool:
    pool = IPPool.objects.select_for_update().get(pk=pool.pk)
    if default_prefix is not None:
        ipam.check_pool(cidr=ipam.parse_cidr(pool.cidr, field="cidr"), default_prefix=default_prefix, exclude=pool.pk)
        pool.default_prefix = default_prefix
    if is_default:
        IPPool.objects.filter(family=pool.family, is_default=True).exclude(pk=pool.pk).update(is_default=False)
    if is_default is not None:
        pool.is_default = is_default
    pool.save()
    audit_record(actor=actor, tenant=None, action="ip_pool.update", obj=pool)
    return pool


@transaction.atomic
def pool_delete(*, pool: IPPool, actor) -> None:
    held = Network.objects.filter(pool4=pool).count() + Network.objects.filter(pool6=pool).count()
    if held:
        raise Conflict(f"pool {pool.name} holds the prefixes of {held} network(s)", code="pool_in_use")
    audit_record(actor=actor, tenant=None, action="ip_pool.delete", obj=pool)
    pool.delete()


# --- network policies ---------------------------------------------------------------------------


def _sync_all_nodes() -> None:
    """Every ready node recompiles its rules now (after the commit), not at its next beat."""
    from hivemind.nodes.models import Node
    from networking.tasks import sync_nodes

    names = list(Node.objects.filter(status=Node.Status.READY).values_list("name", flat=True))
    transaction.on_commit(lambda: sync_nodes(names))


@transaction.atomic
def policy_apply(*, tenant, name: str, spec, actor) -> tuple[NetworkPolicy, bool]:
    """Create the policy, or replace the spec of the tenant's policy of that name (as `kubectl
    apply`); returns (policy, created)."""
    _check_name("name", name)
    clean = clean_policy(spec)
    tenant_require_active(tenant)
    policy = NetworkPolicy.objects.select_for_update().filter(tenant=tenant, name=name).first()
    created = policy is None
    if created:
        try:
            with transaction.atomic():
                policy = NetworkPolicy.objects.create(tenant=tenant, name=name, spec=clean, created_by=actor)
        except IntegrityError:
            raise Conflict(f"a policy named {name} was created meanwhile", code="policy_exists") from None
    else:
        policy.spec = clean
        policy.save(update_fields=["spec", "updated_at"])
    audit_record(
        actor=actor, tenant=tenant, action="network_policy.create" if created else "network_policy.update",
        obj=policy, changes=clean,
    )  # fmt: skip
    _sync_all_nodes()
    return policy, created


@transaction.atomic
def policy_delete(*, policy: NetworkPolicy, actor) -> None:
    audit_record(actor=actor, tenant=policy.tenant, action="network_policy.delete", obj=policy)
    policy.delete()
    _sync_all_nodes()
