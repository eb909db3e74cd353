"""Routing between networks across nodes: one transit VXLAN device per node and a route per
slot of another node.

A network is one layer 2 segment over the nodes that hold it (networking/overlay.py), and
every node routes between the networks it holds. Traffic from a network to another one
whose replica is on another node is routed here: every node that holds at least one
network has a device `hm-transit` in its network namespace,

- a plain VXLAN device (not on a bridge) with the reserved VNI TRANSIT_VNI (below
  services.VNI_BASE, never a network's), UDP 4789, the node's underlay address as local
  address, learning off and one all-zeros FDB entry per other node holding a network
  (head-end replication, as for the segments), the overlay MTU of the underlay's family;
- with no IPv4 address and a single IPv6 one, the link-local `fe80::<node pk>/64` (the
  interface identifier is the node's primary key: unique, stable, known to every node from
  the database), address generation off so that nothing else appears, and a MAC address
  made from the pk too (`02:` + the pk in 5 bytes): a device made anew (deleted by hand, say)
  keeps its MAC, so the neighbour entries the other nodes hold for it stay right;

and, for every slot (NodeRange) of every network on every other node, one route in the
main table: `range6 via fe80::<that node's pk> dev hm-transit` and `range4 via inet6
fe80::<pk> dev hm-transit` (an IPv4 route with an IPv6 next hop, RFC 5549 style: no IPv4
address is needed on the transit link). The routes carry the protocol number ROUTE_PROTO,
so that the reconcile pass lists exactly Hivemind's routes: it adds what is missing,
replaces what differs and deletes the rest.

Routes go to the slots of networks the node holds itself as well: a slot is more specific
than the node's own bridge route (/27 and /96 in the /24 and /64), so traffic the node
*routes* into a network (from another network) always travels the transit to the node
holding the destination, arriving there routed, never bridged in over the segment. On the
segment the receiving node's anti-spoofing would drop it (a packet entering from a
network's bridge must come from that network, networking/nft.py). Traffic inside a network
is bridged by the containers' own on-link route and never meets these routes.

A node's own traffic (not forwarded) to a container on another node leaves by the transit
too; its IPv4 routes carry a preferred source from the node's own gateway addresses (the
network's own gateway when the node holds the network, else the first held network's) so
that such a packet has an address of the platform's pools as its source.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from networking.overlay import (
    IFF_UP,
    MTU_UNDERLAY4,
    MTU_UNDERLAY6,
    TRANSIT_VNI,
    VXLAN_PORT,
    OverlayError,
    _address,
    _fdb_addresses,
    _netlink,
    _sync_fdb,
    _vxlan_data,
)

log = logging.getLogger(__name__)

DEVICE = "hm-transit"
# rtm_protocol of Hivemind's routes: 72 is "H"; iproute2's rt_protos and the kernel's RTPROT_*
# name 0-18, 42, 99 and 186-192, none of them 72.
ROUTE_PROTO = 72
MAIN_TABLE = 254
IFA_F_NODAD = 0x02  # usable at once: the address is unique by construction (a node's pk)
ADDR_GEN_MODE_NONE = 1  # IN6_ADDR_GEN_MODE_NONE: no automatic link-local address
LINK_LOCAL = ipaddress.IPv6Network("fe80::/64")


@dataclass(frozen=True)
class Route:
    """One slot of a network on another node: its prefix, reached through that node."""

    prefix: str  # e.g. "10.128.3.32/27" or "fd12:3456:789a:3:0:2::/96"
    node_id: int  # the node holding the slot (its pk: its transit address)
    source: str | None = None  # preferred source of this node's own packets (IPv4 routes only)


@dataclass(frozen=True)
class Transit:
    """What one node's transit should be."""

    node_id: int  # this node's pk: its link-local address on the transit
    local: str  # this node's underlay address
    peers: tuple[str, ...]  # underlay addresses of the other nodes holding a network
    routes: tuple[Route, ...]
    mtu: int = 0  # 0 = the overlay MTU of the underlay's family (as the segments')

    @property
    def overlay_mtu(self) -> int:
        if self.mtu:
            return self.mtu
        return MTU_UNDERLAY6 if ipaddress.ip_address(self.local).version == 6 else MTU_UNDERLAY4


def _check_node_id(node_id: int) -> int:
    if not isinstance(node_id, int) or isinstance(node_id, bool) or not 1 <= node_id < 2**40:
        raise OverlayError(f"node id {node_id!r} is not an integer from 1 to 2**40 - 1")
    return node_id


def link_local(node_id: int) -> ipaddress.IPv6Address:
    """A node's address on the transit: fe80::<pk> (the interface identifier is the pk)."""
    return LINK_LOCAL.network_address + _check_node_id(node_id)


def mac_address(node_id: int) -> str:
    """A node's transit MAC: locally administered, unicast, the pk in the other 5 bytes."""
    return ":".join(f"{byte:02x}" for byte in (2, *_check_node_id(node_id).to_bytes(5, "big")))


def _wanted_routes(transit: Transit) -> dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, str | None]]:
    """prefix -> (next hop, preferred source); two slots with one prefix are an error (never from IPAM)."""
    wanted = {}
    for route in transit.routes:
        try:
            prefix = ipaddress.ip_network(route.prefix)
        except ValueError as exc:
            raise OverlayError(f"transit route {route.prefix!r}: {exc}") from None
        if prefix in wanted:
            raise OverlayError(f"transit route {prefix} is listed twice")
        source = None
        if route.source is not None and prefix.version == 4:
            source = str(_address(route.source, f"source of the route to {prefix}"))
        wanted[prefix] = (str(link_local(route.node_id)), source)
    return wanted


def check_transit(transit: Transit) -> None:
    """Refuse a Transit the kernel would reject halfway."""
    link_local(transit.node_id)
    local = _address(transit.local, "local")
    for peer in transit.peers:
        if _address(peer, "peer").version != local.version:
            raise OverlayError(f"transit: peer {peer} is not IPv{local.version} like the local address {local}")
    if transit.mtu and not 1280 <= transit.mtu <= 9000:
        raise OverlayError(f"transit: MTU {transit.mtu} is outside 1280..9000")
    _wanted_routes(transit)


# --- The device --------------------------------------------------------------------------------


def _matches(ipr: IPRoute, index: int, transit: Transit) -> bool:
    """A VXLAN device with the transit VNI, port, local address and no learning (fixed at creation)."""
    kind, data = _vxlan_data(ipr, index)
    local = data.get("IFLA_VXLAN_LOCAL6") or data.get("IFLA_VXLAN_LOCAL")
    return (
        kind == "vxlan"
        and data.get("IFLA_VXLAN_ID") == TRANSIT_VNI
        and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT
        and not data.get("IFLA_VXLAN_LEARNING")
        and local is not None
        and ipaddress.ip_address(local) == ipaddress.ip_address(transit.local)
    )


def _addr_gen_mode(link) -> int | None:
    spec = link.get("IFLA_AF_SPEC")
    inet6 = spec.get("AF_INET6") if spec is not None else None
    return inet6.get("IFLA_INET6_ADDR_GEN_MODE") if inet6 is not None else None


def _ensure_device(ipr: IPRoute, transit: Transit) -> int:
    """The device as `transit` wants it, up, with exactly its link-local address; returns its index."""
    found = ipr.link_lookup(ifname=DEVICE)
    if found and not _matches(ipr, found[0], transit):
        log.info("transit device %s differs (VNI, port, local address or learning): recreating it", DEVICE)
        ipr.link("del", index=found[0])
        found = []
    if not found:
        local = ipaddress.ip_address(transit.local)
        try:
            ipr.link(
                "add",
                ifname=DEVICE,
                kind="vxlan",
                vxlan_id=TRANSIT_VNI,
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                mtu=transit.overlay_mtu,
                address=mac_address(transit.node_id),
                **{("vxlan_local6" if local.version == 6 else "vxlan_local"): str(local)},
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST or not ipr.link_lookup(ifname=DEVICE):
                raise OverlayError(
                    f"cannot create the transit device {DEVICE} (VNI {TRANSIT_VNI}, local {local}): {exc.args[-1]}"
                    + (" (another device has this VNI and port already)" if exc.code == errno.EEXIST else "")
                ) from exc
        found = ipr.link_lookup(ifname=DEVICE)
    index = found[0]
    (link,) = ipr.link("get", index=index)
    if _addr_gen_mode(link) != ADDR_GEN_MODE_NONE:  # before it goes up: no EUI-64 address appears
        spec = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", ADDR_GEN_MODE_NONE]]}]]}
        ipr.link("set", index=index, IFLA_AF_SPEC=spec)
    wanted = {"mtu": transit.overlay_mtu, "address": mac_address(transit.node_id)}
    changes = {key: value for key, value in wanted.items() if link.get(f"IFLA_{key.upper()}") != value}
    if changes or not link["flags"] & IFF_UP:
        ipr.link("set", index=index, state="up", **changes)
    _sync_addresses(ipr, index, link_local(transit.node_id))
    return index


def _sync_addresses(ipr: IPRoute, index: int, own: ipaddress.IPv6Address) -> None:
    """fe80::<pk>/64 and nothing else (no IPv4 address, no address another tool added)."""
    present = False
    for addr in ipr.get_addr(index=index):
        address = ipaddress.ip_address(addr.get_attr("IFA_ADDRESS"))
        if address == own and addr["prefixlen"] == LINK_LOCAL.prefixlen:
            present = True
            continue
        try:
            ipr.addr("del", index=index, address=str(address), prefixlen=addr["prefixlen"])
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise
    if not present:
        ipr.addr("add", index=index, address=str(own), prefixlen=LINK_LOCAL.prefixlen, flags=IFA_F_NODAD)


# --- The routes --------------------------------------------------------------------------------


def _present_routes(ipr: IPRoute) -> dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, str | None, int]]:
    """Hivemind's transit routes in the main table: prefix -> (next hop, preferred source, device)."""
    found = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_routes(family=family, table=MAIN_TABLE, proto=ROUTE_PROTO):
            prefix = ipaddress.ip_network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}", strict=False)
            via = route.get_attr("RTA_VIA")
            hop = via["addr"] if via else route.get_attr("RTA_GATEWAY")
            found[prefix] = (hop, route.get_attr("RTA_PREFSRC"), route.get_attr("RTA_OIF"))
    return found


def _route_spec(prefix, hop: str, source: str | None, index: int) -> dict:
    spec = {"dst": str(prefix), "oif": index, "proto": ROUTE_PROTO, "table": MAIN_TABLE}
    if prefix.version == 4:
        spec["via"] = {"family": socket.AF_INET6, "addr": hop}
        if source is not None:
            spec["prefsrc"] = source
    else:
        spec["gateway"] = hop
    return spec


def _sync_routes(ipr: IPRoute, index: int, transit: Transit) -> None:
    wanted = _wanted_routes(transit)
    present = _present_routes(ipr)
    local4 = {addr.get_attr("IFA_ADDRESS") for addr in ipr.get_addr(family=socket.AF_INET)}
    for prefix, (hop, source) in sorted(wanted.items(), key=lambda item: str(item[0])):
        if source is not None and source not in local4:
            source = None  # not on this node (yet): the kernel would refuse the route
        if present.get(prefix) == (hop, source, index):
            continue
        try:
            ipr.route("replace", **_route_spec(prefix, hop, source, index))
        except NetlinkError as exc:
            raise OverlayError(f"cannot route {prefix} via {hop} dev {DEVICE}: {exc.args[-1]}") from exc
    for prefix in sorted(set(present) - set(wanted), key=str):
        family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
        try:
            ipr.route("del", family=family, dst=str(prefix), proto=ROUTE_PROTO, table=MAIN_TABLE)
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:  # gone meanwhile (its device deleted, say)
                raise


# --- The interface -----------------------------------------------------------------------------


def ensure_transit(transit: Transit, *, netns: str = "") -> None:
    """Make the node's transit device, its forwarding entries and routes exactly `transit`,
    repairing whatever differs (idempotent). `netns`: the node's namespace ("" = this process's)."""
    check_transit(transit)
    with _netlink(netns) as ipr:
        index = _ensure_device(ipr, transit)
        _sync_fdb(ipr, index, transit.local, transit.peers)
        _sync_routes(ipr, index, transit)


def remove_transit(*, netns: str = "") -> None:
    """No transit device and no Hivemind route left (a node that holds no network any more)."""
    with _netlink(netns) as ipr:
        for index in ipr.link_lookup(ifname=DEVICE):
            try:
                ipr.link("del", index=index)  # its routes go with it
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
        for prefix in _present_routes(ipr):
            family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
            try:
                ipr.route("del", family=family, dst=str(prefix), proto=ROUTE_PROTO, table=MAIN_TABLE)
            except NetlinkError as exc:
                if exc.code != errno.ESRCH:
                    raise


def transit_routes(*, netns: str = "") -> dict[str, str]:
    """Hivemind's transit routes now: prefix -> next hop (for tests and operators)."""
    with _netlink(netns) as ipr:
        return {str(prefix): hop for prefix, (hop, _source, _index) in _present_routes(ipr).items()}


def transit_peers(*, netns: str = "") -> set[str]:
    """The underlay addresses the transit device floods to (empty without a device)."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=DEVICE)
        return {str(address) for address in _fdb_addresses(ipr, found[0])} if found else set()


def peer_addresses(addresses: Iterable[str], local: str) -> tuple[str, ...]:
    """The peers' underlay addresses of the local address's family, sorted, without the node itself."""
    family = ipaddress.ip_address(local).version
    return tuple(
        sorted({a for a in addresses if a and ipaddress.ip_address(a).version == family and a != local}, key=str)
    )
