"""A node's whole network policy as ONE nftables table, replaced atomically.

Hivemind nodes run dockerd with `--iptables=false`: every packet filter and NAT rule on a
node is Hivemind's, and this module writes all of them. The agent gathers the node's
desired state (the networks present, the policies resolved to addresses, the services and
their healthy replicas), `compile_ruleset` turns it into one nftables script and `apply`
loads it with one `nft -f -`, i.e. one kernel transaction.

The contract
============

1. One `table inet <table>` (IPv4 and IPv6 by the same rules). The script starts with
   `table inet T {}` (create if missing) and `delete table inet T`, then the full
   definition: the kernel commits the batch as a whole or not at all, so there is no
   instant in which the old rules are gone and the new ones not yet there, and a failed
   apply leaves the previous rules in force. Applying the same state twice changes
   nothing that matters; any drift (a rule or chain deleted or added by hand) is gone after
   the next apply, because nothing of the old table survives. The price: named counters
   start again from zero at each apply (readers of `counters()` treat a decrease as a
   reset, as Prometheus' rate() does).

   Sets lag behind rules. Measured on this kernel: the rules of the new table take effect
   at the commit, but the contents of the sets created in the same transaction become
   visible to lookups a moment later (microseconds). With the networks dispatched by a
   verdict map, 200 applies let 61 of 900,000 datagrams that had to be dropped through
   (the lookup missed, the packet fell to the chain's accept policy). So the table obeys
   one rule: a set lookup may only *grant* (its miss then fails closed, a packet dropped
   for a moment, retransmitted); whatever restricts is a plain comparison, or is written
   as a grant on the complement ("the subnet minus the isolated addresses may pass"
   rather than "the isolated addresses may not"). Measured as compiled: 0 of 740,000 in
   200 applies. The sets whose miss is harmless besides: accounting (a packet not
   counted), VIP rejection and service DNAT (a connection attempt fails once).

2. Filtering, in `filter_forward` (hook forward, priority filter - 10, policy accept:
   traffic that is none of Hivemind's is left alone):
   - ICMPv6 neighbour discovery is accepted (it is link-local by construction, and ND to
     a container's own address would otherwise count as traffic to that container);
     then `ct state established,related accept`, `ct state invalid drop`. Only the first
     packet of a connection meets the rules below.
   - Anti-spoofing (`spoof_net_<id>`): a packet entering from a segment's bridge must come
     from the segment's subnet (or an IPv6 link-local/unspecified address), else it is
     dropped and counted in `spoof_drop`. Every rule below trusts source addresses;
     without this a container with CAP_NET_RAW (Docker's default) could pose as another
     network's container. A packet routed in from another node through the transit device
     (`iifname hm-transit`, networking/transit.py) must come from the platform's network
     pools (`internal`), else it is dropped and counted in `spoof_drop` (`spoof_transit`);
     from there on it meets the rules below exactly as a packet from a local segment does
     (the destination network's ingress chain, the policies). One routed in for none of
     this node's segments is dropped and counted in `isolation_drop`.
   - A packet still addressed to a service VIP here was not DNATed: the service has no
     backend for this family/port. It is rejected (TCP reset, else ICMP port unreachable)
     so that clients fail at once instead of waiting for a timeout. The same rejection is
     in the input and output hooks, for VIPs the node itself holds or calls.
   - A replica reaching itself through its own service (after DNAT source = destination)
     is accepted: a container talking to itself is no policy's business.
   - Egress: a source in `Isolation.egress` must be allowed by some egress PolicyRule (its
     targets contain the source, its peers contain the destination or are empty, its port
     matches; counted in `policy_<id>`), else the packet is dropped and counted in
     `isolation_drop` and `drop_net_<source network>`. Not egress-isolated: go on. (In
     `egress_net_<id>` the sources of the subnet that are not isolated return, the rest
     go to `egress_policies`.) Isolation applies to addresses in this node's segments.
   - Ingress: a packet is accepted when some ingress PolicyRule allows it (its targets
     contain the destination, its peers the source or are empty, its port matches;
     counted in `policy_<id>`). Otherwise a destination inside a segment's subnet goes to
     that network's chain `ingress_net_<id>`: accepted when the source is in the same
     network, the destination is not in `Isolation.ingress` and the network is not
     `default_deny`; everything else (another network, another tenant, the
     outside world) is dropped and counted in `isolation_drop` and `drop_net_<id>`. So a
     connection needs both sides' consent, as in Kubernetes. Targets are single
     addresses; ingress targets outside this node's segments are ignored here.
   - When two policies allow the same target and port from nested peers (10.0.0.0/8 and
     10.1.2.3), the packet is counted once, for the outermost peer's policy.
   - Tightening a policy does not cut connections already established: conntrack keeps
     them, as with most container network plugins. New connections follow the new table.
   - Traffic to or from the node itself (input/output: DNS on the gateway, health checks)
     is not filtered, only VIPs without backends are rejected there.
   - Per-network accounting before anything else: `net_<id>_out` counts packets whose
     source is in the network, `net_<id>_in` those whose destination is (traffic inside a
     network counts in both; traffic crossing nodes is counted on each node it passes).

   Traffic between two containers of one network is *bridged*, not routed: it crosses the
   bridge (and, between nodes, the VXLAN port) without the IP stack. Measured on this
   kernel (6.18, br_netfilter built in, no nf_conntrack_bridge):
   - with `net.bridge.bridge-nf-call-iptables=1` an inet forward rule counts a ping
     between two ports of one bridge; with 0 it counts nothing (a `table bridge` chain
     does);
   - a `table bridge` chain cannot use conntrack here (`ct state` -> "Protocol error":
     nf_conntrack_bridge is not built), so it could not tell a reply from a new
     connection, nor undo a service's DNAT;
   - the br_netfilter switches are per network namespace (a new namespace starts with 1;
     setting 0 in one leaves the host's 1 untouched);
   - with them at 0 (in the test topology of tests/networking/test_nft.py) a container
     isolated for ingress is still reached by its network's neighbours, and a client on
     the backends' own bridge never gets an answer from a VIP: the backend's reply is
     bridged straight back, conntrack never sees it and the source stays the backend's.
   Hence br_netfilter, switched on by `ensure_kernel_settings` in the node's namespace
   only: one set of inet rules then sees routed and bridged traffic alike, with
   conntrack, and a service's DNAT is undone on replies that are bridged straight back
   to a client on the same segment. Under br_netfilter the input and output device of a
   bridged packet is the bridge, which is what the anti-spoofing rule matches. Ingress
   is enforced on every node a packet crosses, with the same verdict as long as the
   caller hands every node holding a network the same policies.

3. NAT. `nat_postrouting`: masquerade from container subnets to destinations outside
   every segment and outside the platform's network pools (`internal`: traffic between
   networks, on this node or through the transit, keeps its addresses; the way out through
   the node, v4 and v6, is masqueraded), and masquerade a DNATed
   packet whose source is the backend it was sent to (hairpin: otherwise the replica would
   see its own address as the source and drop the packet as a martian). `nat_prerouting`
   and `nat_output` (the node itself) jump to `services`: per Service, family and port,
   `dnat to numgen inc mod N map { 0 : a, 1 : b, ... } : <container port>`, i.e. exact
   round robin over the healthy backends (any node), counted in `svc_<id>`. With
   br_netfilter a DNAT to a backend on the client's own bridge is bridged back out of the
   port it came in by: that port needs hairpin mode, so the caller calls
   `set_hairpin(bridge)` after it starts containers (Docker creates their ports).
   Measured without it: the connection whose DNAT picks the caller itself never answers
   (and its SYN retransmission is DNATed anew, to another replica, 1 s later); with it the
   replica answers itself, seeing the gateway address as the source.
   Measured, a kernel quirk: for the first ~2 s after a node's bridge or port comes up
   (its IPv6 link-local addresses still tentative) the first IPv6 SYN that br_netfilter
   DNATs back into the same bridge waits for its retransmission (1 s); IPv4 does not.

4. Speed. A policy rule becomes elements of a few interval maps keyed by
   `address . peer . protocol . port` whose values are the policies' counters (one rule
   per map counts and decides in one lookup); only a rule that would expand to more than
   ELEMENTS_PER_RULE elements stays a rule of its own with anonymous sets. Measured, 1,000
   two-port rules: 0.55 s to load as rules (each anonymous set is a kernel object), 0.10 s
   as map elements (a miss there fails closed: they only grant). Networks are dispatched
   by one plain comparison per subnet (a verdict map would fail open, see 1.); addresses
   are parsed once and cached. bench/nft_policies.py: compile + re-apply of 1,000 rules in
   a quarter to half a second on the 2-core build machine.

Between nodes: traffic between two networks is routed, on the node where it leaves its
network, through the transit to the node holding the destination's slot (networking/
transit.py routes every slot of every network on another node that way, even of networks
this node holds), so it never enters another node's bridge over a segment, where
`spoof_net_<id>` would drop it. Its reply comes back the same way, so a service's DNAT,
done on the client's node, is undone there. Tested on three simulated nodes
(tests/networking/test_routing.py): a client in network B on one node reaches a server in
network A on another, at its addresses and at its virtual address, v4 and v6, exactly as
A's policy allows.

All addresses and names are validated before they reach the script (it is text handed to
nft): a bad one raises ValueError naming it.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = Path("/run/netns")
TABLE = "hivemind"
TRANSIT_DEVICE = "hm-transit"  # networking/transit.py's DEVICE: routed traffic between nodes
FAMILIES = ((4, "ip"), (6, "ip6"))
PROTOCOLS = frozenset({"tcp", "udp"})
DIRECTIONS = frozenset({"ingress", "egress"})
# A policy rule expanding to at most this many (target, peer, port) combinations becomes map
# elements, a bigger one a rule of its own (see _Policies).
ELEMENTS_PER_RULE = 64
# Neighbour discovery, router solicitation/advertisement to redirect: 133-137, a range rather than
# a set (see the module docstring). Link-local only (hop limit 255): bridged between neighbours.
ND_TYPES = "133-137"
KERNEL_SETTINGS = {
    # The node routes between its networks and to the outside.
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    # Bridged IPv4/IPv6 (inside one network, on one node or through the VXLAN port) passes the
    # inet hooks with conntrack: policies inside a network, and un-DNAT of bridged replies.
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class NftError(RuntimeError):
    """nft (or the kernel behind it) refused: the message is nft's own."""


# --- The desired state ---------------------------------------------------------------------


@dataclass(frozen=True)
class NetSegment:
    """One network present on this node: its bridge and subnets."""

    network_id: int
    tenant_id: int
    bridge: str
    subnet4: str | None
    subnet6: str | None
    default_deny: bool = False

    def subnet(self, version: int) -> _Net | None:
        raw = self.subnet4 if version == 4 else self.subnet6
        return _parse(raw, f"network {self.network_id} subnet{version}", version) if raw else None


@dataclass(frozen=True)
class PolicyRule:
    """One rule of a network policy, resolved to addresses by the caller.

    `targets` are the selected containers' addresses; `peers` the addresses or CIDRs allowed
    from (ingress) or to (egress), empty = any; `ports` (tcp|udp, port), empty = everything.
    """

    policy_id: int
    direction: str
    targets: frozenset[str]
    peers: frozenset[str]
    ports: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Isolation:
    """Containers selected by at least one policy of that direction: only what a rule allows gets through."""

    ingress: frozenset[str] = field(default_factory=frozenset)
    egress: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Service:
    """A load-balanced virtual address: (protocol, service port, container port) to healthy replicas."""

    service_id: int
    vip4: str | None
    vip6: str | None
    ports: tuple[tuple[str, int, int], ...]
    backends4: tuple[str, ...] = ()
    backends6: tuple[str, ...] = ()

    def vip(self, version: int) -> _Net | None:
        raw = self.vip4 if version == 4 else self.vip6
        return _host(raw, f"service {self.service_id} vip{version}", version) if raw else None

    def backends(self, version: int) -> list[_Net]:
        return list(_backends(self, version))


@functools.lru_cache(maxsize=1 << 14)
def _backends(svc: Service, version: int) -> tuple[_Net, ...]:
    """Cached per service state: a node compiles its table at every change, and most services
    are the same as the last time."""
    raw = svc.backends4 if version == 4 else svc.backends6
    # Sorted: the same state gives the same script.
    return tuple(sorted({_host(b, f"service {svc.service_id} backend", version) for b in raw}))


# --- Addresses: parsed once, validated before they become text in the script -------------------


class _Net(NamedTuple):
    """An address or CIDR as integers (containment is two comparisons) and as nft writes it."""

    version: int
    first: int
    last: int
    text: str  # a host is its bare address: what nft prints back, and a cheaper key

    @property
    def is_host(self) -> bool:
        return self.first == self.last

    def contains(self, other: _Net) -> bool:
        return self.version == other.version and self.first <= other.first and other.last <= self.last


@functools.lru_cache(maxsize=1 << 16)
def _net(raw: str) -> _Net:
    """Cached: the agent compiles the same addresses again at every change (ipaddress is slow)."""
    net = ipaddress.ip_network(raw, strict=False)  # host bits ignored: '10.0.0.5/24' is 10.0.0.0/24
    text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return _Net(net.version, int(net.network_address), int(net.broadcast_address), text)


def _parse(raw: object, what: str, version: int | None = None) -> _Net:
    try:
        net = _net(raw)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: {raw!r} is not an address or CIDR") from exc
    if version is not None and net.version != version:
        raise ValueError(f"{what}: {raw!r} is not IPv{version}")
    return net


def _host(raw: object, what: str, version: int | None = None) -> _Net:
    net = _parse(raw, what, version)
    if not net.is_host or (isinstance(raw, str) and "/" in raw):
        raise ValueError(f"{what}: {raw!r} is not a single address")
    return net


def _port(raw: object, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= 65535:
        raise ValueError(f"{what}: port {raw!r} is not an integer from 1 to 65535")
    return raw


def _protocol(raw: object, what: str) -> str:
    if raw not in PROTOCOLS:
        raise ValueError(f"{what}: protocol {raw!r} is not one of {sorted(PROTOCOLS)}")
    return str(raw)


def _ident(raw: object, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ValueError(f"{what}: {raw!r} is not a non-negative integer")
    return raw


def check_table(table: str) -> str:
    if not isinstance(table, str) or not _NAME.fullmatch(table):
        raise ValueError(f"table name {table!r}: letters, digits and _, at most 32, starting with a letter")
    return table


def _outermost(nets: Iterable[_Net]) -> list[_Net]:
    """Sorted, without the CIDRs another one contains: interval sets refuse overlapping
    elements. Two CIDRs nest or are disjoint, so comparing with the last one kept is enough."""
    kept: list[_Net] = []
    for net in sorted(set(nets), key=lambda n: (n.first, -n.last)):
        if not kept or not kept[-1].contains(net):
            kept.append(net)
    return kept


def _by_family(raw: Iterable[str], what: str, parse: Callable[[object, str], _Net] = _parse) -> dict[int, list[_Net]]:
    split: dict[int, list[_Net]] = {4: [], 6: []}
    for value in raw:
        net = parse(value, what)
        split[net.version].append(net)
    return {version: _outermost(nets) for version, nets in split.items()}


@dataclass(frozen=True)
class _Segment:
    """A NetSegment checked, with its subnets parsed."""

    network_id: int
    bridge: str
    default_deny: bool
    subnets: dict[int, _Net | None]

    def holds(self, net: _Net) -> bool:
        subnet = self.subnets[net.version]
        return subnet is not None and subnet.contains(net)


def _segments(segments: Sequence[NetSegment]) -> list[_Segment]:
    """Ids and bridges unique, subnets disjoint: each container address belongs to one network."""
    checked: list[_Segment] = []
    for seg in sorted(segments, key=lambda s: s.network_id):
        _ident(seg.network_id, "network id")
        _ident(seg.tenant_id, f"network {seg.network_id} tenant id")
        if not isinstance(seg.bridge, str) or not _IFNAME.fullmatch(seg.bridge):
            raise ValueError(f"network {seg.network_id}: bridge {seg.bridge!r} is not an interface name")
        subnets = {version: seg.subnet(version) for version, _ in FAMILIES}
        for other in checked:
            if other.network_id == seg.network_id or other.bridge == seg.bridge:
                raise ValueError(f"network {seg.network_id} (bridge {seg.bridge}) is listed twice")
            for version, net in subnets.items():
                theirs = other.subnets[version]
                if net and theirs and (net.contains(theirs) or theirs.contains(net)):
                    clash = f"subnets {theirs.text} and {net.text} overlap"
                    raise ValueError(f"networks {other.network_id} and {seg.network_id}: {clash}")
        checked.append(_Segment(seg.network_id, seg.bridge, seg.default_deny, subnets))
    return checked


def _segment_of(net: _Net, segments: list[_Segment]) -> _Segment | None:
    return next((seg for seg in segments if seg.holds(net)), None)


# --- Small pure helpers that write nft syntax --------------------------------------------------


def _set(items: Iterable[_Net]) -> str:
    """An anonymous set (nft turns a one-element set into a plain comparison by itself)."""
    return "{ " + ", ".join(i.text for i in items) + " }"


def _counter(name: str) -> str:
    return f'counter name "{name}"'


def _family_map(pairs: list[tuple[_Net, str]], proto: str, side: str) -> str:
    """`counter name ip saddr map { subnet : "name", ... }`: one lookup picks the right counter."""
    entries = ", ".join(f'{net.text} : "{name}"' for net, name in pairs)
    return f"counter name {proto} {side} map {{ {entries} }}"


def _subnet_pairs(segments: list[_Segment], version: int, name: str) -> list[tuple[_Net, str]]:
    """(subnet, counter name) for every segment with a subnet of that family; `name` is a format."""
    return [(s.subnets[version], name.format(s.network_id)) for s in segments if s.subnets[version] is not None]


# --- Policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """A PolicyRule checked and split by family once (1,000 of them must compile fast)."""

    policy_id: int
    direction: str
    targets: dict[int, list[_Net]]
    peers: dict[int, list[_Net]]
    any_peer: bool
    ports: tuple[tuple[str, int], ...]  # () = every port and protocol


def _parse_rule(rule: PolicyRule) -> _Rule:
    what = f"policy {rule.policy_id}"
    _ident(rule.policy_id, "policy id")
    if rule.direction not in DIRECTIONS:
        raise ValueError(f"{what}: direction {rule.direction!r} is not ingress or egress")
    return _Rule(
        policy_id=rule.policy_id,
        direction=rule.direction,
        targets=_by_family(rule.targets, f"{what} target", _host),
        peers=_by_family(rule.peers, f"{what} peer"),
        any_peer=not rule.peers,
        ports=tuple(sorted({(_protocol(p, what), _port(n, what)) for p, n in rule.ports})),
    )


_ANY = {4: _net("0.0.0.0/0"), 6: _net("::/0")}


@dataclass
class _Policies:
    """One direction's rules for one family, compiled.

    A rule that expands to at most ELEMENTS_PER_RULE (target, peer, port) combinations
    becomes elements of two maps, `<direction>_ports<v>` (address . address . protocol .
    port) and `<direction>_any<v>` (address . address: the rules without ports), whose
    values are the policy's counter: one rule per map then counts and decides with a
    single lookup. Loading elements costs the kernel far less than a rule with its own
    anonymous sets (measured: 1,000 two-port rules, 0.55 s as rules, 0.10 s as elements).
    Bigger rules stay rules with anonymous sets, so that no policy multiplies into
    millions of elements.
    """

    with_ports: dict[tuple[str, str, int], list[tuple[_Net, int]]] = field(default_factory=dict)
    without_ports: dict[str, list[tuple[_Net, int]]] = field(default_factory=dict)
    lines: list[tuple[_Net, str]] = field(default_factory=list)  # (a target, to find its segment; the rule)

    def add(self, rule: _Rule, version: int, proto: str, targets: list[_Net], verdict: str) -> None:
        peers = [_ANY[version]] if rule.any_peer else rule.peers[version]
        if not targets or not peers:
            return  # nothing allowed in this family (peers given, none of this family)
        if len(targets) * len(peers) * max(1, len(rule.ports)) <= ELEMENTS_PER_RULE:
            for target in targets:
                for peer in peers:
                    if rule.ports:
                        for l4, port in rule.ports:
                            self.with_ports.setdefault((target.text, l4, port), []).append((peer, rule.policy_id))
                    else:
                        self.without_ports.setdefault(target.text, []).append((peer, rule.policy_id))
            return
        mine, theirs = ("daddr", "saddr") if rule.direction == "ingress" else ("saddr", "daddr")
        parts = [f"{proto} {mine} {_set(targets)}"]
        if not rule.any_peer:
            parts.append(f"{proto} {theirs} {_set(peers)}")
        if rule.ports:
            parts.append("meta l4proto . th dport { " + ", ".join(f"{p} . {n}" for p, n in rule.ports) + " }")
        parts.append(f"{_counter(f'policy_{rule.policy_id}')} {verdict}")
        self.lines.append((targets[0], " ".join(parts)))


def _map_elements(groups: dict, render: Callable[[object, str], str]) -> list[str]:
    """`<key with the peer in it> : "policy_<id>"`, with the overlapping peers of one group
    resolved: the outermost CIDR wins (allowing the union is what the rules mean; the counter
    goes to the policy of the outermost, the lowest id among equals)."""
    elements = []
    for group in sorted(groups):
        ranked = sorted(groups[group], key=lambda item: (item[0].first, -item[0].last, item[1]))
        kept: list[tuple[_Net, int]] = []
        for peer, policy_id in ranked:
            if not kept or not kept[-1][0].contains(peer):
                kept.append((peer, policy_id))
        elements += [f'{render(group, peer.text)} : "policy_{policy_id}"' for peer, policy_id in kept]
    return elements


def _map(name: str, version: int, with_ports: bool, elements: list[str]) -> list[str]:
    addr = "ipv4_addr" if version == 4 else "ipv6_addr"
    key = f"{addr} . {addr} . inet_proto . inet_service" if with_ports else f"{addr} . {addr}"
    body = ",\n\t\t\t".join(elements)
    return [
        f"\tmap {name} {{",
        f"\t\ttype {key} : counter",
        "\t\tflags interval",
        f"\t\telements = {{ {body} }}",
        "\t}",
    ]


def _compiled_maps(direction: str, policies: dict[int, _Policies]) -> tuple[list[str], dict[int, list[str]]]:
    """The map declarations of one direction and, per family, the rules that look them up."""
    declarations: list[str] = []
    lookups: dict[int, list[str]] = {4: [], 6: []}
    mine, theirs = ("daddr", "saddr") if direction == "ingress" else ("saddr", "daddr")
    verdict = "accept" if direction == "ingress" else "return"
    for version, proto in FAMILIES:
        compiled = policies[version]
        ported = _map_elements(compiled.with_ports, lambda g, peer: f"{g[0]} . {peer} . {g[1]} . {g[2]}")
        if ported:
            name = f"{direction}_ports{version}"
            declarations += _map(name, version, True, ported)
            lookups[version].append(
                f"counter name {proto} {mine} . {proto} {theirs} . meta l4proto . th dport map @{name} {verdict}"
            )
        portless = _map_elements(compiled.without_ports, lambda g, peer: f"{g} . {peer}")
        if portless:
            name = f"{direction}_any{version}"
            declarations += _map(name, version, False, portless)
            lookups[version].append(f"counter name {proto} {mine} . {proto} {theirs} map @{name} {verdict}")
    return declarations, lookups


def _compile_policies(
    rules: list[_Rule], segments: list[_Segment]
) -> tuple[dict[int, _Policies], dict[int, _Policies]]:
    """Ingress and egress rules, per family. Ingress targets outside this node's segments are
    left out: their traffic is not this node's to admit."""
    ingress = {4: _Policies(), 6: _Policies()}
    egress = {4: _Policies(), 6: _Policies()}
    for rule in rules:
        for version, proto in FAMILIES:
            if rule.direction == "egress":
                egress[version].add(rule, version, proto, rule.targets[version], "return")
                continue
            by_segment: dict[int, list[_Net]] = {}
            for target in rule.targets[version]:
                seg = _segment_of(target, segments)
                if seg is not None:
                    by_segment.setdefault(seg.network_id, []).append(target)
            for targets in by_segment.values():
                ingress[version].add(rule, version, proto, targets, "accept")
    return ingress, egress


def _complement(subnet: _Net, holes: Iterable[_Net]) -> list[str]:
    """The subnet without the `holes` (addresses), as nft range elements: 'a-b', or 'a'.

    Isolation is written as "accept the rest of the subnet" (a set hit grants) instead of
    "refuse these" (a set hit restricts), so that a lookup that misses fails closed (see
    the module docstring: sets of a new table lag behind its rules for a moment).
    """
    make = ipaddress.IPv4Address if subnet.version == 4 else ipaddress.IPv6Address
    ranges, start = [], subnet.first
    for hole in sorted(h for h in set(holes) if subnet.contains(h)):
        if hole.first > start:
            ranges.append((start, hole.first - 1))
        start = max(start, hole.last + 1)
    if start <= subnet.last:
        ranges.append((start, subnet.last))
    return [f"{make(a)}" if a == b else f"{make(a)}-{make(b)}" for a, b in ranges]


def _open_part(proto: str, side: str, subnet: _Net, closed: list[_Net]) -> str | None:
    """`ip daddr <subnet>` or `ip daddr { <subnet without closed> }`; None when nothing is open."""
    if not closed:
        return f"{proto} {side} {subnet.text}"
    rest = _complement(subnet, closed)
    return f"{proto} {side} {{ {', '.join(rest)} }}" if rest else None


def _ingress_chain(seg: _Segment, big_rules: list[str], isolated: dict[int, list[_Net]]) -> list[str]:
    """Packets to a container of `seg` that no policy map admitted: big policy rules, then
    the same network (unless default deny, and only to destinations not isolated), then drop."""
    lines = list(big_rules)
    if not seg.default_deny:
        for version, proto in FAMILIES:
            subnet = seg.subnets[version]
            if subnet is None:
                continue
            closed = [n for n in isolated[version] if subnet.contains(n)]
            if closed:
                destinations = _open_part(proto, "daddr", subnet, closed)
                if destinations:
                    lines.append(f"{proto} saddr {subnet.text} {destinations} accept")
            else:
                lines.append(f"{proto} saddr {subnet.text} accept")
    lines.append(f"{_counter(f'drop_net_{seg.network_id}')} {_counter('isolation_drop')} drop")
    return lines


def _egress_gate(seg: _Segment, isolated: dict[int, list[_Net]]) -> list[str]:
    """Packets from `seg`'s subnets: the sources not egress-isolated go on (return), the
    others go to the egress policies. A positive lookup again: a miss means the policies."""
    lines = []
    for version, proto in FAMILIES:
        subnet = seg.subnets[version]
        if subnet is not None:
            sources = _open_part(proto, "saddr", subnet, [n for n in isolated[version] if subnet.contains(n)])
            if sources:
                lines.append(f"{sources} return")
    return [*lines, "goto egress_policies"]


def _egress_chain(segments: list[_Segment], lookups: dict[int, list[str]], egress: dict[int, _Policies]) -> list[str]:
    """Packets from an egress-isolated container: an allowing rule returns to the ingress
    checks, anything else is dropped and counted for the source's network."""
    lines = [*lookups[4], *lookups[6]]
    lines += [line for version, _ in FAMILIES for _, line in egress[version].lines]
    for version, proto in FAMILIES:
        pairs = _subnet_pairs(segments, version, "drop_net_{}")
        if pairs:
            lines.append(_family_map(pairs, proto, "saddr"))
    lines.append(f"{_counter('isolation_drop')} drop")
    return lines


# --- Services ----------------------------------------------------------------------------------


def _target(addr: _Net, port: int) -> str:
    return f"[{addr.text}]:{port}" if addr.version == 6 else f"{addr.text}:{port}"


@functools.lru_cache(maxsize=1 << 14)
def _service_lines(svc: Service) -> tuple[str, ...]:
    """DNAT rules of one service: per family with backends and per port, numgen round robin.
    Cached per service state, like _backends."""
    _ident(svc.service_id, "service id")
    what = f"service {svc.service_id}"
    ports = [(_protocol(p, what), _port(sp, what), _port(cp, what)) for p, sp, cp in svc.ports]
    lines = []
    for version, proto in FAMILIES:
        vip, backends = svc.vip(version), svc.backends(version)
        if vip is None or not backends:
            continue  # left to the VIP rejection in the filter chains
        for l4, service_port, container_port in ports:
            match = f"{proto} daddr {vip.text} {l4} dport {service_port} {_counter(f'svc_{svc.service_id}')}"
            if len(backends) == 1:
                lines.append(f"{match} dnat {proto} to {_target(backends[0], container_port)}")
                continue
            table = ", ".join(f"{i} : {b.text}" for i, b in enumerate(backends))
            mod = len(backends)
            lines.append(f"{match} dnat {proto} to numgen inc mod {mod} map {{ {table} }} : {container_port}")
    return tuple(lines)


def _vip_reject_lines(services: Sequence[Service]) -> list[str]:
    """A packet still addressed to a VIP after the NAT hooks found no backend: refuse it loudly."""
    lines = []
    for version, proto in FAMILIES:
        vips = sorted({v for s in services if (v := s.vip(version)) is not None})
        if vips:
            lines.append(f"{proto} daddr {_set(vips)} meta l4proto tcp reject with tcp reset")
            lines.append(f"{proto} daddr {_set(vips)} reject")
    return lines


def _hairpin_elements(services: Sequence[Service], version: int) -> tuple[str, ...]:
    """`b . b` for every backend of the family: nft cannot compare saddr with daddr, a set of pairs can."""
    return tuple(f"{b.text} . {b.text}" for b in sorted({b for s in services for b in s.backends(version)}))


def _hairpin_set(version: int, elements: tuple[str, ...]) -> list[str]:
    addr = "ipv4_addr" if version == 4 else "ipv6_addr"
    lines = [f"\tset hairpin{version} {{", f"\t\ttype {addr} . {addr}"]
    if elements:
        lines.append("\t\telements = { " + ", ".join(elements) + " }")
    return [*lines, "\t}"]


@dataclass(frozen=True)
class Table:
    """A compiled table: `script` loads all of it in one transaction; `skeleton` is the same
    without what `update_script` can change in place (the services' chains and the hairpin
    sets), so that a change of backends only is told from any other change."""

    name: str
    script: str
    skeleton: str
    chains: dict[str, tuple[str, ...]]  # svc_<id> -> its rules
    sets: dict[str, tuple[str, ...]]  # hairpin4 / hairpin6 -> their elements


def update_script(table: Table, old: Table) -> str:
    """The nft script that turns `old` (applied, with the same skeleton) into `table` in one
    transaction: each changed service chain flushed and written again, each changed hairpin
    set emptied and filled. A few lines instead of the whole table: the load balancer follows
    a health change without reloading every rule, set and counter (counters keep counting).
    '' when nothing changed. The skeletons must be equal (ValueError otherwise)."""
    if table.skeleton != old.skeleton or table.name != old.name:
        raise ValueError("update_script needs tables of the same skeleton: apply the whole script")
    name, lines = table.name, []
    for chain, rules in sorted(table.chains.items()):
        if old.chains.get(chain) != rules:
            lines.append(f"flush chain inet {name} {chain}")
            lines += [f"add rule inet {name} {chain} {rule}" for rule in rules]
    for set_name, elements in sorted(table.sets.items()):
        if old.sets.get(set_name) != elements:
            lines.append(f"flush set inet {name} {set_name}")
            if elements:
                lines.append(f"add element inet {name} {set_name} {{ " + ", ".join(elements) + " }")
    return "\n".join(lines) + "\n" if lines else ""


# --- The table ---------------------------------------------------------------------------------


def _chain(name: str, lines: list[str], hook: str = "") -> list[str]:
    head = [f"\tchain {name} {{"] + ([f"\t\t{hook}"] if hook else [])
    return head + [f"\t\t{line}" for line in lines] + ["\t}"]


def _accounting(segments: list[_Segment]) -> list[str]:
    """`net_<id>_out` by source, `net_<id>_in` by destination: one lookup each per family."""
    lines = []
    for version, proto in FAMILIES:
        for side, suffix in (("saddr", "out"), ("daddr", "in")):
            pairs = _subnet_pairs(segments, version, "net_{}_" + suffix)
            if pairs:
                lines.append(_family_map(pairs, proto, side))
    return lines


def _spoof_guard(seg: _Segment) -> list[str]:
    """The chain for packets entering from `seg`'s bridge: the sources it may carry return,
    anything else is dropped. Plain comparisons, no set: nothing to lag behind. IPv6
    link-local and :: are neighbour discovery and multicast listener traffic, bridged
    between ports; a network without an IPv4 subnet has no IPv4 sender at all."""
    allowed = [(proto, subnet) for version, proto in FAMILIES if (subnet := seg.subnets[version]) is not None]
    allowed += [("ip6", _net("fe80::/10")), ("ip6", _net("::"))]
    return [f"{proto} saddr {net.text} return" for proto, net in allowed] + [f"{_counter('spoof_drop')} drop"]


def _transit_guard(pools: dict[int, list[_Net]]) -> list[str]:
    """The chain for packets routed in from another node through the transit: a source in the
    platform's network pools returns, anything else is dropped (plain comparisons, no set)."""
    lines = [f"{proto} saddr {pool.text} return" for version, proto in FAMILIES for pool in pools[version]]
    return [*lines, f"{_counter('spoof_drop')} drop"]


def compile_ruleset(
    segments: Sequence[NetSegment],
    rules: Sequence[PolicyRule],
    isolation: Isolation,
    services: Sequence[Service],
    *,
    table: str = TABLE,
    internal: Sequence[str] = (),
) -> str:
    """The nft script that makes `table` exactly this state in one transaction (see the module
    docstring). `internal`: the prefixes of the platform's network pools (every network's
    addresses come from them): never masqueraded to, the only sources the transit may carry."""
    return compile_table(segments, rules, isolation, services, table=table, internal=internal).script


def compile_table(
    segments: Sequence[NetSegment],
    rules: Sequence[PolicyRule],
    isolation: Isolation,
    services: Sequence[Service],
    *,
    table: str = TABLE,
    internal: Sequence[str] = (),
) -> Table:
    """compile_ruleset's script with its parts (see Table)."""
    check_table(table)
    segs = _segments(segments)
    pools = _by_family(internal, "internal prefix")
    parsed = sorted((_parse_rule(r) for r in rules), key=lambda r: r.policy_id)
    ingress_iso = _by_family(isolation.ingress, "ingress isolation", _host)
    egress_iso = _by_family(isolation.egress, "egress isolation", _host)
    services = sorted(services, key=lambda s: s.service_id)
    chains = {f"svc_{svc.service_id}": _service_lines(svc) for svc in services}
    hairpins = {f"hairpin{v}": _hairpin_elements(services, v) for v, _ in FAMILIES} if services else {}
    dispatch = [
        f"{proto} daddr {vip.text} jump svc_{svc.service_id}"
        for svc in services
        for version, proto in FAMILIES
        if (vip := svc.vip(version)) is not None
    ]
    vip_rejects = _vip_reject_lines(services)
    ingress, egress = _compile_policies(parsed, segs)
    ingress_maps, ingress_lookups = _compiled_maps("ingress", ingress)
    egress_maps, egress_lookups = _compiled_maps("egress", egress)

    counters = ["isolation_drop", "spoof_drop"]
    for seg in segs:
        counters += [f"drop_net_{seg.network_id}", f"net_{seg.network_id}_in", f"net_{seg.network_id}_out"]
    counters += [f"policy_{pid}" for pid in sorted({r.policy_id for r in parsed})]
    counters += [f"svc_{s.service_id}" for s in services]

    # Only grants hang on set lookups below; what restricts is a plain comparison (docstring).
    forward = _accounting(segs)
    forward += [f"icmpv6 type {ND_TYPES} accept", "ct state established,related accept", "ct state invalid drop"]
    forward += [f'iifname "{seg.bridge}" jump spoof_net_{seg.network_id}' for seg in segs]
    forward.append(f'iifname "{TRANSIT_DEVICE}" jump spoof_transit')
    if vip_rejects:
        forward.append("jump reject_vips")
    if hairpins:  # a replica reaching itself through its service (a set lookup: a grant)
        forward += [f"ct status dnat {proto} saddr . {proto} daddr @hairpin{v} accept" for v, proto in FAMILIES]
    gated = [seg for seg in segs if any(seg.holds(n) for n in egress_iso[4] + egress_iso[6])]
    for seg in gated:
        forward += [
            f"{proto} saddr {subnet.text} jump egress_net_{seg.network_id}"
            for version, proto in FAMILIES
            if (subnet := seg.subnets[version]) is not None
        ]
    forward += ingress_lookups[4] + ingress_lookups[6]
    for seg in segs:
        forward += [
            f"{proto} daddr {subnet.text} jump ingress_net_{seg.network_id}"
            for version, proto in FAMILIES
            if (subnet := seg.subnets[version]) is not None
        ]
    # Routed in from another node but for none of this node's segments: not the transit's to carry.
    forward.append(f'iifname "{TRANSIT_DEVICE}" {_counter("isolation_drop")} drop')

    postrouting = []
    if hairpins:
        postrouting += [
            f"ct status dnat {proto} saddr . {proto} daddr @hairpin{version} masquerade" for version, proto in FAMILIES
        ]
    subnets = [(proto, subnet) for seg in segs for version, proto in FAMILIES if (subnet := seg.subnets[version])]
    postrouting += [f"{proto} daddr {subnet.text} return" for proto, subnet in subnets]  # between networks: no NAT
    postrouting += [f"{proto} daddr {pool.text} return" for version, proto in FAMILIES for pool in pools[version]]
    postrouting += [f"{proto} saddr {subnet.text} masquerade" for proto, subnet in subnets]

    # The skeleton has the service chains and hairpin sets empty; the script has them filled.
    out = [f"table inet {table} {{}}", f"delete table inet {table}", f"table inet {table} {{"]
    out += [f"\tcounter {name} {{}}" for name in counters]
    out += ingress_maps + egress_maps
    fillings = {}  # index in `out` of a placeholder -> (skeleton lines, script lines)
    for version, _ in FAMILIES:
        if hairpins:
            fillings[len(out)] = (_hairpin_set(version, ()), _hairpin_set(version, hairpins[f"hairpin{version}"]))
            out.append("")
    if vip_rejects:
        out += _chain("reject_vips", vip_rejects)
    out += _chain("egress_policies", _egress_chain(segs, egress_lookups, egress))
    for seg in gated:
        out += _chain(f"egress_net_{seg.network_id}", _egress_gate(seg, egress_iso))
    out += _chain("spoof_transit", _transit_guard(pools))
    for seg in segs:
        out += _chain(f"spoof_net_{seg.network_id}", _spoof_guard(seg))
        big = [line for version, _ in FAMILIES for target, line in ingress[version].lines if seg.holds(target)]
        out += _chain(f"ingress_net_{seg.network_id}", _ingress_chain(seg, big, ingress_iso))
    out += _chain("filter_forward", forward, "type filter hook forward priority filter - 10; policy accept;")
    if vip_rejects:  # hooks on the node's own traffic only when they have something to do
        for hook in ("input", "output"):
            out += _chain(
                f"filter_{hook}", ["jump reject_vips"], f"type filter hook {hook} priority filter - 10; policy accept;"
            )
    for chain, lines in chains.items():
        fillings[len(out)] = (_chain(chain, []), _chain(chain, list(lines)))
        out.append("")
    out += _chain("services", dispatch)
    out += _chain("nat_prerouting", ["jump services"], "type nat hook prerouting priority dstnat; policy accept;")
    # nft 1.0.6 knows the name dstnat for prerouting only; -100 is its value.
    out += _chain("nat_output", ["jump services"], "type nat hook output priority -100; policy accept;")
    out += _chain("nat_postrouting", postrouting, "type nat hook postrouting priority srcnat; policy accept;")
    out.append("}")
    skeleton, script = [], []
    for index, line in enumerate(out):
        if index in fillings:
            skeleton += fillings[index][0]
            script += fillings[index][1]
        else:
            skeleton.append(line)
            script.append(line)
    return Table(
        name=table,
        script="\n".join(script) + "\n",
        skeleton="\n".join(skeleton) + "\n",
        chains=chains,
        sets=hairpins,
    )


# --- Talking to the kernel ---------------------------------------------------------------------


def _in_netns(netns: str) -> list[str]:
    """The command prefix that runs a tool in the node's namespace ([] = this process's own).
    `nsenter --net` rather than `ip netns exec`: no /sys remount, nothing else changes."""
    if not netns:
        return []
    if "/" in netns or netns in (".", "..") or not (NETNS_DIR / netns).exists():
        raise NftError(f"no network namespace {netns!r} (no {NETNS_DIR / netns})")
    return ["nsenter", f"--net={NETNS_DIR / netns}"]


def _nft(args: list[str], *, netns: str, stdin: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise NftError("nft is not installed (apt-get install nftables)")
    done = subprocess.run([*_in_netns(netns), binary, *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NftError(done.stderr.strip() or f"nft {' '.join(args)} exited with {done.returncode}")
    return done.stdout


def apply(ruleset: str, *, netns: str = "") -> None:
    """Load a script from compile_ruleset as one transaction: all of it, or (NftError) none of it."""
    _nft(["-f", "-"], netns=netns, stdin=ruleset)


def remove(*, table: str = TABLE, netns: str = "") -> None:
    """Delete the table if present (create-then-delete in one transaction: no error when absent)."""
    check_table(table)
    apply(f"table inet {table} {{}}\ndelete table inet {table}\n", netns=netns)


def listing(*, table: str = TABLE, netns: str = "") -> str:
    """The table as the kernel holds it, without counter values (`nft -s`): saved after an
    apply and compared later, it shows drift; '' when the table does not exist."""
    check_table(table)
    try:
        return _nft(["-s", "list", "table", "inet", table], netns=netns)
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return ""
        raise


def counters(*, table: str = TABLE, netns: str = "") -> dict[str, tuple[int, int]]:
    """Named counters of the table -> (packets, bytes); {} when the table does not exist."""
    check_table(table)
    try:
        raw = _nft(["-j", "list", "counters", "table", "inet", table], netns=netns)
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return {}
        raise
    found = {}
    for item in json.loads(raw).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == table:
            found[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
    return found


def ensure_kernel_settings(*, netns: str = "") -> None:
    """Switch on, in `netns` only, what the table relies on (each is per network namespace):

    - `net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`: the node routes between its
      networks and out to the world;
    - `net.bridge.bridge-nf-call-iptables`, `...-ip6tables`: bridged traffic (containers of
      one network, on this node or through the VXLAN port) passes the inet hooks with
      conntrack, so policies inside a network hold and a service's DNAT is undone on replies
      bridged straight back to the client. A new namespace starts with these at 1 already;
      they are set anyway, since a host-wide tool may have turned them off.

    Reads the values back: a kernel without br_netfilter fails here, not silently later.
    """
    sysctl = shutil.which("sysctl") or "/usr/sbin/sysctl"
    argv = [*_in_netns(netns), sysctl, "-q", "-w", *(f"{k}={v}" for k, v in KERNEL_SETTINGS.items())]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NftError(f"cannot set kernel settings: {done.stderr.strip()}")
    check = subprocess.run(
        [*_in_netns(netns), sysctl, "-n", *KERNEL_SETTINGS], capture_output=True, text=True, check=False
    )
    values = check.stdout.split()
    if check.returncode != 0 or values != list(KERNEL_SETTINGS.values()):
        raise NftError(f"kernel settings did not stick: {dict(zip(KERNEL_SETTINGS, values, strict=False))}")


def set_hairpin(bridge: str, *, netns: str = "") -> None:
    """Hairpin mode on every container port of `bridge`, so a replica's call to its own
    service can be sent back out of the port it came in by (see the module docstring).

    Call it after starting containers: Docker creates a port per container. VXLAN ports are
    left alone on purpose: hairpin there would flood a broadcast arriving from a peer back
    to every peer, a loop across nodes.
    """
    if not isinstance(bridge, str) or not _IFNAME.fullmatch(bridge):
        raise ValueError(f"bridge {bridge!r} is not an interface name")
    _in_netns(netns)  # a missing namespace is an error, never created here
    with IPRoute(netns=netns, flags=0) if netns else IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            raise NftError(f"no bridge {bridge} in network namespace {netns or '(own)'}")
        _hairpin_ports(ipr, found[0], ipr.get_links())


def _hairpin_ports(ipr: IPRoute, bridge_index: int, links) -> None:
    """Hairpin on the container ports among `links` (a listing, maybe already stale) whose
    master is the bridge. A port gone since the listing (its container removed meanwhile by
    another rollout or a delete on this node) has nothing left to set: skipped, not an error."""
    for link in links:
        if link.get("IFLA_MASTER") != bridge_index:
            continue
        info = link.get("IFLA_LINKINFO")
        if info is not None and info.get("IFLA_INFO_KIND") == "vxlan":
            continue
        try:
            ipr.brport("set", index=link["index"], mode=1)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
