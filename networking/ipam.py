"""IPAM: the single owner of every address Hivemind hands out.

- A network's prefixes come from the pools (staff-defined; a default IPv4 and a default
  IPv6 pool are made on first use: HIVEMIND_IPV4_POOL, default 10.128.0.0/12, and a ULA /48
  with a random global ID as RFC 4193 asks, HIVEMIND_IPV6_POOL to choose one).
- Each node that runs a member of a network gets a slot of it: a non-overlapping range for
  Docker's per-daemon IPAM on that node and the node's own gateway address. An IPv4 prefix
  is split in NODE_SLOTS_V4 slots (a /24 gives 8 nodes a /27 each); an IPv6 one in /96s.

Allocation is safe under concurrency twice over: the pool (or network) row is locked for the
allocation (`select_for_update`, PostgreSQL), and the prefixes and slots are unique by
database constraint, so a writer that raced another anyway (SQLite has no row locks) gets an
IntegrityError and tries again with what is free now (`retrying`).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hivemind.core.errors import Conflict
from networking.models import IPPool, Network, NodeRange

T = TypeVar("T")

DEFAULT_V4 = "10.128.0.0/12"
DEFAULT_SERVICES_V4 = "10.96.0.0/16"  # virtual addresses of apps (like Kubernetes' service range)
NODE_BITS_V4 = 3  # a network's IPv4 prefix is split in 2**3 = 8 node slots
NODE_PREFIX_V6 = 96  # a node's slot of a network's IPv6 prefix
MAX_SLOTS = 4096  # IPv6-only networks: more nodes than any Hivemind cluster has
PREFIX_LIMITS = {4: (8, 28), 6: (48, 80)}  # what a network may ask for: a /29 leaves no room for 8 slots
ATTEMPTS = 5

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PoolExhausted(Conflict):
    pass


def retrying(allocate: Callable[[], T]) -> T:
    """Run `allocate` in a transaction (a savepoint inside the caller's); when a unique constraint
    says another writer took the same prefix or slot first, try again with what is free now."""
    for attempt in range(ATTEMPTS):
        try:
            with transaction.atomic():
                return allocate()
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def parse_cidr(value: str, *, field: str, family: int | None = None) -> IPNetwork:
    """A prefix in CIDR notation with no host bits set; a 400 naming `field` otherwise."""
    try:
        network = ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise ValidationError({field: f"expected a prefix such as 10.128.0.0/12 or fd00:1::/48: {exc}"}) from None
    if family is not None and network.version != family:
        raise ValidationError({field: f"expected an IPv{family} prefix, got {value}"})
    return network


def _configured(variable: str) -> str:
    """A pool prefix given in the environment (validated at start-up, hivemind/config.py), or ""."""
    from django.conf import settings

    return dict(settings.CONFIG.pools).get(variable, "")


def _default_v6() -> str:
    """A unique local /48 (RFC 4193): fd + 40 random bits."""
    global_id = secrets.randbits(40)
    return str(ipaddress.IPv6Network(((0xFD << 120) | (global_id << 80), 48)))


def default_pool(family: int) -> IPPool:
    """The family's default pool, made on first use from HIVEMIND_IPV{4,6}_POOL or the defaults."""
    pool = IPPool.objects.filter(family=family, is_default=True).first()
    if pool is not None:
        return pool
    variable = f"HIVEMIND_IPV{family}_POOL"
    raw = _configured(variable) or (DEFAULT_V4 if family == 4 else _default_v6())
    cidr = parse_cidr(raw, field=variable, family=family)
    try:
        with transaction.atomic():
            return IPPool.objects.create(
                name=f"default-ipv{family}",
                family=family,
                cidr=str(cidr),
                default_prefix=24 if family == 4 else 64,
                is_default=True,
            )
    except IntegrityError:  # another process made it first
        return IPPool.objects.get(family=family, is_default=True)


def check_pool(*, cidr: IPNetwork, default_prefix: int, exclude: int | None = None) -> None:
    """A pool's prefix must not overlap another pool's, and its default network prefix must fit it."""
    low, high = PREFIX_LIMITS[cidr.version]
    if not max(low, cidr.prefixlen) <= default_prefix <= high:
        raise ValidationError(
            {"default_prefix": f"expected {max(low, cidr.prefixlen)} to {high} for {cidr}, got {default_prefix}"}
        )
    for other in IPPool.objects.filter(family=cidr.version).exclude(pk=exclude):
        if ipaddress.ip_network(other.cidr).overlaps(cidr):
            raise ValidationError({"cidr": f"{cidr} overlaps pool {other.name} ({other.cidr})"})


def _used(pool: IPPool) -> list[IPNetwork]:
    field = "subnet4" if pool.family == 4 else "subnet6"
    rows = Network.objects.filter(**{f"pool{pool.family}": pool}).exclude(**{f"{field}__isnull": True})
    return [ipaddress.ip_network(value) for value in rows.values_list(field, flat=True)]


def free_prefix(pool: IPPool, prefixlen: int) -> IPNetwork:
    """The first prefix of that length in the pool that no network holds (pool row locked by the caller)."""
    cidr = ipaddress.ip_network(pool.cidr)
    if not cidr.prefixlen <= prefixlen <= cidr.max_prefixlen:
        raise ValidationError({f"prefix{pool.family}": f"pool {pool.name} ({pool.cidr}) cannot serve a /{prefixlen}"})
    used = _used(pool)
    same = {network for network in used if network.prefixlen == prefixlen}
    other = [network for network in used if network.prefixlen != prefixlen]
    for candidate in cidr.subnets(new_prefix=prefixlen):
        if candidate in same or any(candidate.overlaps(network) for network in other):
            continue
        return candidate
    raise PoolExhausted(
        f"pool {pool.name} ({pool.cidr}) has no free /{prefixlen} left ({len(used)} networks hold it)",
        code="pool_exhausted",
    )


def allocate_subnet(network: Network, family: int, prefixlen: int | None, pool: IPPool | None = None) -> None:
    """Give `network` a prefix of `family` (in the caller's transaction; the pool row is locked)."""
    pool = pool or default_pool(family)
    pool = IPPool.objects.select_for_update().get(pk=pool.pk)
    subnet = free_prefix(pool, prefixlen or pool.default_prefix)
    setattr(network, f"pool{family}", pool)
    setattr(network, f"subnet{family}", str(subnet))
    network.save(update_fields=[f"pool{family}", f"subnet{family}", "updated_at"])


def slot_ranges(network: Network, slot: int) -> dict[str, str]:
    """Slot `slot` of the network's prefixes: the node's ranges and gateways."""
    ranges = {"range4": "", "range6": "", "gateway4": "", "gateway6": ""}
    if network.subnet4:
        subnet = ipaddress.IPv4Network(network.subnet4)
        part = list(subnet.subnets(prefixlen_diff=NODE_BITS_V4))[slot]
        ranges["range4"], ranges["gateway4"] = str(part), str(part.network_address + 1)
    if network.subnet6:
        subnet = ipaddress.IPv6Network(network.subnet6)
        start = int(subnet.network_address) + ((slot + 1) << (128 - NODE_PREFIX_V6))
        part = ipaddress.IPv6Network((start, NODE_PREFIX_V6))
        ranges["range6"], ranges["gateway6"] = str(part), str(part.network_address + 1)
    return ranges


def slots_of(network: Network) -> int:
    if network.subnet4:
        return 2**NODE_BITS_V4
    subnet = ipaddress.IPv6Network(network.subnet6)
    return min(MAX_SLOTS, 2 ** (NODE_PREFIX_V6 - subnet.prefixlen) - 1)


def node_range(network: Network, node) -> NodeRange:
    """The node's slot of the network, allocated on first use (idempotent)."""

    def allocate() -> NodeRange:
        found = NodeRange.objects.filter(network=network, node=node).first()
        if found is not None:
            return found
        Network.objects.select_for_update().filter(pk=network.pk).first()  # one allocator per network
        taken = set(NodeRange.objects.filter(network=network).values_list("slot", flat=True))
        free = next((slot for slot in range(slots_of(network)) if slot not in taken), None)
        if free is None:
            raise PoolExhausted(
                f"network {network.name} spans {len(taken)} nodes, all its node ranges: "
                f"ask for a shorter prefix to span more",
                code="network_node_ranges_exhausted",
            )
        return NodeRange.objects.create(network=network, node=node, slot=free, **slot_ranges(network, free))

    return retrying(allocate)


# --- service virtual addresses --------------------------------------------------------------------


def service_pool(family: int) -> IPPool:
    """The pool of apps' virtual addresses of a family, made on first use from
    HIVEMIND_SERVICE_IPV{4,6}_POOL (default 10.96.0.0/16, and a random ULA /64)."""
    pool = IPPool.objects.filter(family=family, purpose=IPPool.Purpose.SERVICES).first()
    if pool is not None:
        return pool
    variable = f"HIVEMIND_SERVICE_IPV{family}_POOL"
    raw = _configured(variable)
    if not raw:
        raw = (
            DEFAULT_SERVICES_V4
            if family == 4
            else str(ipaddress.IPv6Network((int(ipaddress.ip_network(_default_v6()).network_address), 64)))
        )
    cidr = parse_cidr(raw, field=variable, family=family)
    try:
        with transaction.atomic():
            return IPPool.objects.create(
                name=f"services-ipv{family}", family=family, cidr=str(cidr), purpose=IPPool.Purpose.SERVICES,
                default_prefix=cidr.max_prefixlen,
            )  # fmt: skip
    except IntegrityError:
        return IPPool.objects.get(family=family, purpose=IPPool.Purpose.SERVICES)


def _free_address(pool: IPPool, taken: set[str]):
    cidr = ipaddress.ip_network(pool.cidr)
    for address in cidr.hosts():
        if str(address) not in taken:
            return str(address)
    raise PoolExhausted(f"service pool {pool.name} ({pool.cidr}) has no free address left", code="pool_exhausted")


def service_address(app):
    """The app's virtual addresses, allocated on first use (idempotent; both families)."""
    from networking.models import ServiceAddress

    def allocate():
        found = ServiceAddress.objects.filter(app=app).first()
        if found is not None:
            return found
        values = {}
        for family in (4, 6):
            pool = IPPool.objects.select_for_update().get(pk=service_pool(family).pk)
            taken = set(ServiceAddress.objects.exclude(**{f"ipv{family}": None}).values_list(f"ipv{family}", flat=True))
            values[f"ipv{family}"] = _free_address(pool, taken)
        return ServiceAddress.objects.create(app=app, **values)

    return retrying(allocate)
