"""One tenant network on one node: a Docker bridge network joined to the other nodes by VXLAN.

A network spans every node holding one of its replicas. On each such node it is

- a Docker bridge network `hm-net-<id>` with the network's subnets (the same on every
  node), this node's own `--ip-range` inside them (so two nodes never hand out the same
  address) and this node's own gateway address (the same address on two nodes would be a
  duplicate on the shared layer 2), on a bridge with a fixed name so that
- a VXLAN device (VNI = the network's, UDP 4789, learning off) can be enslaved to it, with
  one all-zeros FDB entry per peer node: broadcast and unknown unicast (ARP, neighbour
  discovery) are copied to every peer (head-end replication), no multicast underlay needed.

Every function is idempotent and repairs drift: calling `ensure_segment` again fixes what
differs from the Segment, adds what is missing and drops FDB entries of peers no longer
listed. Whether a node holds a network at all is the caller's decision (`remove_segment`).

All netlink work happens in the node's network namespace (`netns`, a name under
/run/netns; "" = this process's own): the agent runs in the host namespace and reaches its
Docker daemon by a unix socket, while the daemon, its bridges and the VXLAN devices live in
the node's namespace.

The VXLAN device exists even when a node has no peers yet: the Docker network carries the
overlay MTU from the start, so when a second node joins, only FDB entries are added and
the containers already running need no restart to get the right MTU.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
VXLAN_PORT = 4789
ZERO_MAC = "00:00:00:00:00:00"
# Outer Ethernet-less overhead on a 1500-byte underlay: IP (20 or 40) + UDP 8 + VXLAN 8 + inner Ethernet 14.
MTU_UNDERLAY4 = 1450
MTU_UNDERLAY6 = 1430
MAX_VNI = 2**24 - 1
# The transit device's (networking/transit.py): below services.VNI_BASE, so never a network's.
TRANSIT_VNI = 4095

LABEL_MANAGED = "io.hivemind.managed"
LABEL_TENANT = "io.hivemind.tenant"
LABEL_NETWORK = "io.hivemind.network"
OPTION_BRIDGE = "com.docker.network.bridge.name"
OPTION_MTU = "com.docker.network.driver.mtu"

IFF_UP = 0x1

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class OverlayError(RuntimeError):
    """A segment that cannot be made or removed as asked; the message says what and where."""


@dataclass(frozen=True)
class Segment:
    """What one node holds of one network."""

    network_id: int
    tenant_id: int
    vni: int  # 1..16777215
    subnet4: str | None  # the network's IPv4 prefix, e.g. "10.128.3.0/24" (None: IPv6-only)
    subnet6: str | None  # the network's IPv6 prefix, e.g. "fd12:3456:789a:3::/64" (None: IPv4-only)
    range4: str | None  # this node's range inside subnet4 (Docker --ip-range), e.g. "10.128.3.64/26"
    range6: str | None  # this node's range inside subnet6, e.g. "fd12:3456:789a:3:0:2::/96"
    gateway4: str | None  # this node's own gateway address (distinct per node: a duplicate on the L2 overlay else)
    gateway6: str | None
    local: str  # this node's underlay address (IPv4 or IPv6)
    peers: tuple[str, ...]  # underlay addresses of the other nodes holding this network
    mtu: int = 0  # 0 = derived: 1450 on an IPv4 underlay, 1430 on IPv6

    @property
    def overlay_mtu(self) -> int:
        """The MTU of the Docker network and the VXLAN device (the same on every node of the network)."""
        if self.mtu:
            return self.mtu
        return MTU_UNDERLAY6 if ipaddress.ip_address(self.local).version == 6 else MTU_UNDERLAY4


# --- Names ---------------------------------------------------------------------------------


def docker_network_name(network_id: int) -> str:
    return f"hm-net-{network_id}"


def _node_tag(node: str) -> str:
    """4 hex digits of the node name: device names stay unique when several nodes share a namespace."""
    return hashlib.sha256(node.encode()).hexdigest()[:4]


def bridge_name(network_id: int, node: str) -> str:
    """`hn<id>x<tag>`: at most 15 characters (Linux's limit) for ids up to 10 digits."""
    return f"hn{network_id}x{_node_tag(node)}"


def vxlan_name(network_id: int, node: str) -> str:
    """`hv<id>x<tag>`, beside its bridge `hn<id>x<tag>`."""
    return f"hv{network_id}x{_node_tag(node)}"


# --- Checking a Segment before touching anything -------------------------------------------


def _prefix(value: str | None, what: str, version: int) -> Prefix | None:
    if value is None:
        return None
    try:
        prefix = ipaddress.ip_network(value)
    except ValueError as exc:
        raise OverlayError(f"{what}: {exc}") from None
    if prefix.version != version:
        raise OverlayError(f"{what}: expected an IPv{version} prefix, got {value!r}")
    return prefix


def _address(value: str, what: str) -> Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise OverlayError(f"{what}: expected an IP address, got {value!r}") from None


def _check_family(segment: Segment, version: int) -> None:
    subnet = _prefix(getattr(segment, f"subnet{version}"), f"subnet{version}", version)
    ip_range = _prefix(getattr(segment, f"range{version}"), f"range{version}", version)
    raw_gateway = getattr(segment, f"gateway{version}")
    if subnet is None:
        if ip_range is not None or raw_gateway is not None:
            raise OverlayError(f"network {segment.network_id}: range{version}/gateway{version} without subnet{version}")
        return
    if ip_range is not None and not ip_range.subnet_of(subnet):
        raise OverlayError(f"network {segment.network_id}: range{version} {ip_range} is not inside {subnet}")
    if raw_gateway is not None and _address(raw_gateway, f"gateway{version}") not in subnet:
        raise OverlayError(f"network {segment.network_id}: gateway{version} {raw_gateway} is not inside {subnet}")


def check_segment(segment: Segment) -> None:
    """Refuse a Segment the kernel or Docker would reject halfway, leaving a half-made network."""
    if not 1 <= segment.vni <= MAX_VNI:
        raise OverlayError(f"network {segment.network_id}: VNI {segment.vni} is outside 1..{MAX_VNI}")
    if segment.subnet4 is None and segment.subnet6 is None:
        raise OverlayError(f"network {segment.network_id}: neither an IPv4 nor an IPv6 subnet")
    _check_family(segment, 4)
    _check_family(segment, 6)
    local = _address(segment.local, "local")
    for peer in segment.peers:
        if _address(peer, "peer").version != local.version:
            raise OverlayError(
                f"network {segment.network_id}: peer {peer} is not IPv{local.version} like the local address {local}"
            )
    lowest = 1280 if segment.subnet6 else 576  # IPv6 needs 1280 on every link
    if segment.mtu and not lowest <= segment.mtu <= 9000:
        raise OverlayError(f"network {segment.network_id}: MTU {segment.mtu} is outside {lowest}..9000")


# --- The Docker network --------------------------------------------------------------------


def _pools(segment: Segment) -> list[IPAMPool]:
    pools = []
    for version in (4, 6):
        subnet = getattr(segment, f"subnet{version}")
        if subnet is not None:
            pools.append(
                IPAMPool(
                    subnet=subnet,
                    iprange=getattr(segment, f"range{version}"),
                    gateway=getattr(segment, f"gateway{version}"),
                )
            )
    return pools


def _pool_key(pool: dict) -> tuple[Prefix, Prefix | None, Address | None]:
    """A pool in a form where `fd00::/64` equals `fd00:0::/64`: Docker gives back what it was given."""
    ip_range, gateway = pool.get("IPRange") or pool.get("iprange"), pool.get("Gateway") or pool.get("gateway")
    return (
        ipaddress.ip_network(pool.get("Subnet") or pool.get("subnet")),
        ipaddress.ip_network(ip_range) if ip_range else None,
        ipaddress.ip_address(gateway) if gateway else None,
    )


def _labels(segment: Segment) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_TENANT: str(segment.tenant_id), LABEL_NETWORK: str(segment.network_id)}


def _differences(attrs: dict, segment: Segment, node: str) -> list[str]:
    """What of the existing Docker network differs from what the segment asks for (empty: nothing)."""
    found: list[str] = []
    labels = _labels(segment)
    want_pools = {_pool_key(pool) for pool in _pools(segment)}
    have_pools = {_pool_key(pool) for pool in (attrs.get("IPAM") or {}).get("Config") or []}
    if want_pools != have_pools:
        found.append("address pools")
    options = attrs.get("Options") or {}
    if options.get(OPTION_BRIDGE) != bridge_name(segment.network_id, node):
        found.append("bridge name")
    if options.get(OPTION_MTU) != str(segment.overlay_mtu):
        found.append("MTU")
    if bool(attrs.get("EnableIPv6")) != (segment.subnet6 is not None):
        found.append("IPv6")
    if attrs.get("Driver") != "bridge":
        found.append("driver")
    if {key: (attrs.get("Labels") or {}).get(key) for key in labels} != labels:
        found.append("labels")  # without them present_segments would not see the network
    return found


def _find_network(client: docker.DockerClient, name: str) -> dict | None:
    """The full inspection of the network called exactly `name` (Docker's name filter matches substrings)."""
    for network in client.networks.list(names=[name]):
        if network.name == name:
            try:
                return client.api.inspect_network(network.id)
            except NotFound:
                return None  # removed meanwhile
    return None


def _create_network(client: docker.DockerClient, segment: Segment, node: str) -> None:
    name = docker_network_name(segment.network_id)
    try:
        client.networks.create(
            name,
            driver="bridge",
            enable_ipv6=segment.subnet6 is not None,
            ipam=IPAMConfig(driver="default", pool_configs=_pools(segment)),
            options={OPTION_BRIDGE: bridge_name(segment.network_id, node), OPTION_MTU: str(segment.overlay_mtu)},
            labels=_labels(segment),
            check_duplicate=True,
        )
    except APIError as exc:
        if "already exists" not in str(exc):  # another caller made it meanwhile: the next call checks it
            raise


def _ensure_network(client: docker.DockerClient, segment: Segment, node: str) -> str:
    """The Docker network as the segment wants it; returns the name of the bridge it actually uses.

    A network that differs (an old definition, or changed by hand) is recreated when no
    container uses it. With containers it is left alone, with a warning, and the overlay is
    joined to its bridge as it is: cutting the running containers off would be worse, and
    a rollout moves them onto a new network.
    """
    name = docker_network_name(segment.network_id)
    attrs = _find_network(client, name)
    if attrs is not None:
        differences = _differences(attrs, segment, node)
        if differences and attrs.get("Containers"):
            log.warning(
                "Docker network %s differs (%s) but has %d containers: left as it is until a rollout moves them",
                name,
                ", ".join(differences),
                len(attrs["Containers"]),
            )
            return (attrs.get("Options") or {}).get(OPTION_BRIDGE) or f"br-{attrs['Id'][:12]}"
        if differences:
            log.info("Docker network %s differs (%s): recreating it", name, ", ".join(differences))
            _remove_network(client, attrs)
            attrs = None
    if attrs is None:
        _create_network(client, segment, node)
    return bridge_name(segment.network_id, node)


def _remove_network(client: docker.DockerClient, attrs: dict) -> None:
    """Remove one network; containers on it are an error that names them (Docker's says only "active endpoints")."""
    containers = sorted(c.get("Name") or cid[:12] for cid, c in (attrs.get("Containers") or {}).items())
    if containers:
        raise OverlayError(f"Docker network {attrs['Name']} still has containers: {', '.join(containers)}")
    try:
        client.api.remove_network(attrs["Id"])
    except NotFound:
        pass
    except APIError as exc:
        if "active endpoints" in str(exc):
            raise OverlayError(f"Docker network {attrs['Name']} still has containers (joined meanwhile)") from exc
        raise


# --- The VXLAN device and its forwarding entries -------------------------------------------


def _netlink(netns: str) -> IPRoute:
    """A netlink socket in the node's namespace; a missing namespace is an error, never made here
    (pyroute2 would otherwise create an empty one, and the overlay would silently go nowhere)."""
    if not netns:
        return IPRoute()
    if not (NETNS_DIR / netns).exists():
        raise OverlayError(f"no network namespace {netns!r} (no {NETNS_DIR / netns})")
    return IPRoute(netns=netns, flags=0)


def _vxlan_data(ipr: IPRoute, index: int) -> tuple[str | None, dict]:
    (link,) = ipr.link("get", index=index)
    info = link.get("IFLA_LINKINFO")
    if info is None:
        return None, {}
    data = info.get("IFLA_INFO_DATA")
    return info.get("IFLA_INFO_KIND"), {name: value for name, value in (data["attrs"] if data else [])}


def _vxlan_matches(ipr: IPRoute, index: int, segment: Segment) -> bool:
    """True when the device is a VXLAN device with the segment's VNI, local address, port and no learning.
    These cannot be changed in place: a device that differs is recreated."""
    kind, data = _vxlan_data(ipr, index)
    local = data.get("IFLA_VXLAN_LOCAL6") or data.get("IFLA_VXLAN_LOCAL")
    return (
        kind == "vxlan"
        and data.get("IFLA_VXLAN_ID") == segment.vni
        and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT
        and not data.get("IFLA_VXLAN_LEARNING")
        and local is not None
        and ipaddress.ip_address(local) == ipaddress.ip_address(segment.local)
    )


def _create_vxlan(ipr: IPRoute, name: str, segment: Segment) -> int:
    local = ipaddress.ip_address(segment.local)
    spec = {
        "ifname": name,
        "kind": "vxlan",
        "vxlan_id": segment.vni,
        "vxlan_port": VXLAN_PORT,
        "vxlan_learning": 0,
        "mtu": segment.overlay_mtu,
        ("vxlan_local6" if local.version == 6 else "vxlan_local"): str(local),
    }
    try:
        ipr.link("add", **spec)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST or not ipr.link_lookup(ifname=name):
            raise OverlayError(
                f"cannot create VXLAN device {name} (VNI {segment.vni}, local {local}): {exc.args[-1]}"
                + (" (another device has this VNI and port already)" if exc.code == errno.EEXIST else "")
            ) from exc
    return ipr.link_lookup(ifname=name)[0]


def _ensure_vxlan(ipr: IPRoute, segment: Segment, node: str, bridge: str) -> int:
    """The VXLAN device as the segment wants it, enslaved to `bridge` and up; returns its index."""
    bridges = ipr.link_lookup(ifname=bridge)
    if not bridges:
        raise OverlayError(
            f"bridge {bridge} of Docker network {docker_network_name(segment.network_id)} is not in this network "
            "namespace: does the Docker daemon run in the namespace given as netns?"
        )
    name = vxlan_name(segment.network_id, node)
    found = ipr.link_lookup(ifname=name)
    if found and not _vxlan_matches(ipr, found[0], segment):
        log.info("VXLAN device %s differs from network %s: recreating it", name, segment.network_id)
        ipr.link("del", index=found[0])
        found = []
    index = found[0] if found else _create_vxlan(ipr, name, segment)
    (link,) = ipr.link("get", index=index)
    wanted = {"master": bridges[0], "mtu": segment.overlay_mtu}
    changes = {key: value for key, value in wanted.items() if link.get(f"IFLA_{key.upper()}") != value}
    if changes or not link["flags"] & IFF_UP:
        ipr.link("set", index=index, state="up", **changes)
    return index


def _fdb_addresses(ipr: IPRoute, index: int) -> set[Address]:
    """The peers the device floods to: its all-zeros entries (the bridge's own entries have no destination)."""
    found = set()
    for entry in ipr.fdb("dump", ifindex=index):
        destination = entry.get("NDA_DST")
        if entry.get("NDA_LLADDR") == ZERO_MAC and destination:
            found.add(ipaddress.ip_address(destination))
    return found


def _sync_fdb(ipr: IPRoute, index: int, local: str, peers: Iterable[str]) -> None:
    """One all-zeros entry per peer, none for anything else. The node's own address is never a
    peer: flooding to itself would send every broadcast back into its own bridge."""
    wanted = {ipaddress.ip_address(peer) for peer in peers} - {ipaddress.ip_address(local)}
    present = _fdb_addresses(ipr, index)
    for peer in sorted(wanted - present, key=str):
        ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=str(peer))
    for peer in sorted(present - wanted, key=str):
        try:
            ipr.fdb("del", ifindex=index, lladdr=ZERO_MAC, dst=str(peer))
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:  # removed meanwhile by another caller
                raise


# --- The interface -------------------------------------------------------------------------


def ensure_segment(client: docker.DockerClient, segment: Segment, *, node: str, netns: str = "") -> str:
    """Make the network exist on this node as `segment` says, repairing whatever differs;
    returns the Docker network name containers join.

    `client` is the node's Docker daemon, `node` its Hivemind node name (device names carry
    it), `netns` the namespace that daemon runs in.
    """
    check_segment(segment)
    with _netlink(netns) as ipr:  # first: a wrong namespace fails before Docker is touched
        bridge = _ensure_network(client, segment, node)
        index = _ensure_vxlan(ipr, segment, node, bridge)
        _sync_fdb(ipr, index, segment.local, segment.peers)
    return docker_network_name(segment.network_id)


def remove_segment(client: docker.DockerClient, network_id: int, *, node: str, netns: str = "") -> None:
    """Remove the network from this node: its Docker network, then its VXLAN device.

    The containers must be gone: with any left, OverlayError names them and nothing is
    removed. Removing what is not there is fine.
    """
    with _netlink(netns) as ipr:
        attrs = _find_network(client, docker_network_name(network_id))
        if attrs is not None:
            _remove_network(client, attrs)
        for index in ipr.link_lookup(ifname=vxlan_name(network_id, node)):
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


def present_segments(client: docker.DockerClient) -> set[int]:
    """Ids of the Hivemind networks that have a Docker network on this daemon."""
    ids = set()
    for network in client.networks.list(filters={"label": [f"{LABEL_MANAGED}=true", LABEL_NETWORK]}):
        value = (network.attrs.get("Labels") or {}).get(LABEL_NETWORK, "")
        if value.isdigit():
            ids.add(int(value))
    return ids


def fdb_peers(network_id: int, *, node: str, netns: str = "") -> set[str]:
    """The underlay addresses the network's VXLAN device floods to now (empty without a device)."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=vxlan_name(network_id, node))
        return {str(address) for address in _fdb_addresses(ipr, found[0])} if found else set()
