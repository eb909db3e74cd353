"""The transit device and its routes (networking/transit.py) in two throwaway namespaces joined
by a veth pair: what ensure_transit makes, real traffic over it (IPv4 routes with an IPv6 next
hop, and IPv6), drift repaired, stale routes gone, and nothing left by remove_transit.

About 2 s: no Docker daemon, just namespaces."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from pyroute2 import IPRoute, netns

from networking.overlay import TRANSIT_VNI, VXLAN_PORT, OverlayError, _vxlan_data
from networking.services import VNI_BASE
from networking.transit import (
    DEVICE,
    ROUTE_PROTO,
    Route,
    Transit,
    ensure_transit,
    link_local,
    mac_address,
    remove_transit,
    transit_peers,
    transit_routes,
)
from tests.netsim import IFA_F_NODAD, PREFIX, new_run

# Each side's "slot": an address on its loopback inside a prefix the other side routes to it.
SLOT4 = {1: "10.97.1.0/27", 2: "10.97.2.32/27"}
SLOT6 = {1: "fd97:1::1:0:0/96", 2: "fd97:2::2:0:0/96"}


@dataclass
class Side:
    netns: str
    node_id: int
    address4: str  # underlay
    address6: str

    def host(self, version: int) -> str:
        """The address on its loopback, inside its slot."""
        prefix = ipaddress.ip_network(SLOT4[self.node_id] if version == 4 else SLOT6[self.node_id])
        return str(prefix.network_address + 1)


def run_in(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{name}", *argv], capture_output=True, text=True, check=check, timeout=20
    )


@pytest.fixture
def pair() -> Iterator[tuple[Side, Side]]:
    run = new_run()
    sides = (
        Side(f"{PREFIX}{run}-ta", 1, "10.242.0.1", "fd00:242::1"),
        Side(f"{PREFIX}{run}-tb", 2, "10.242.0.2", "fd00:242::2"),
    )
    for side in sides:
        netns.create(side.netns)
    try:
        with IPRoute(netns=sides[0].netns, flags=0) as ipr:
            ipr.link("add", ifname="ul", kind="veth", peer={"ifname": "ul", "net_ns_fd": sides[1].netns})
        for side in sides:
            with IPRoute(netns=side.netns, flags=0) as ipr:
                for name in ("lo", "ul"):
                    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
                ul, lo = ipr.link_lookup(ifname="ul")[0], ipr.link_lookup(ifname="lo")[0]
                ipr.addr("add", index=ul, address=side.address4, prefixlen=24)
                ipr.addr("add", index=ul, address=side.address6, prefixlen=64, flags=IFA_F_NODAD)
                ipr.addr("add", index=lo, address=side.host(4), prefixlen=32)
                ipr.addr("add", index=lo, address=side.host(6), prefixlen=128, flags=IFA_F_NODAD)
            run_in(side.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        yield sides
    finally:
        for side in sides:
            with contextlib.suppress(OSError):
                netns.remove(side.netns)


def transit_of(side: Side, other: Side, *, underlay6: bool = False) -> Transit:
    return Transit(
        node_id=side.node_id,
        local=side.address6 if underlay6 else side.address4,
        peers=(other.address6 if underlay6 else other.address4,),
        routes=(Route(SLOT4[other.node_id], other.node_id), Route(SLOT6[other.node_id], other.node_id)),
    )


# Run with nsenter in a namespace: argv = family (AF_INET or AF_INET6), addresses.
LISTEN = (
    "import socket, sys; s = socket.socket(getattr(socket, sys.argv[1]));"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[2], 7000)); s.listen();"
    "print('ready', flush=True); s.settimeout(5); c, _ = s.accept(); c.sendall(b'hi')"
)
CONNECT = (
    "import socket, sys; s = socket.socket(getattr(socket, sys.argv[1])); s.settimeout(2);"
    "s.bind((sys.argv[2], 0)); s.connect((sys.argv[3], 7000)); print(s.recv(2).decode())"
)


def connects(source: Side, destination: Side, version: int) -> bool:
    """A TCP connection from `source`'s slot address to a listener on `destination`'s."""
    family = "AF_INET" if version == 4 else "AF_INET6"
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{destination.netns}", sys.executable, "-c", LISTEN, family,
         destination.host(version)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout.readline().strip() == "ready"
        argv = (sys.executable, "-c", CONNECT, family, source.host(version), destination.host(version))
        return run_in(source.netns, *argv, check=False).stdout.strip() == "hi"
    finally:
        server.kill()
        server.wait()


def device_state(side: Side) -> dict:
    with IPRoute(netns=side.netns, flags=0) as ipr:
        (index,) = ipr.link_lookup(ifname=DEVICE)
        (link,) = ipr.link("get", index=index)
        kind, data = _vxlan_data(ipr, index)
        addresses = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
        spec = link.get("IFLA_AF_SPEC").get("AF_INET6")
        return {
            "kind": kind,
            "vni": data.get("IFLA_VXLAN_ID"),
            "port": data.get("IFLA_VXLAN_PORT"),
            "learning": data.get("IFLA_VXLAN_LEARNING"),
            "local": data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6"),
            "mtu": link.get("IFLA_MTU"),
            "mac": link.get("IFLA_ADDRESS"),
            "master": link.get("IFLA_MASTER"),
            "up": bool(link["flags"] & 1),
            "addr_gen_mode": spec.get("IFLA_INET6_ADDR_GEN_MODE"),
            "addresses": addresses,
        }


def test_the_transit_vni_is_below_every_networks():
    assert TRANSIT_VNI < VNI_BASE
    assert str(link_local(1)) == "fe80::1" and str(link_local(0x1234)) == "fe80::1234"
    assert mac_address(0x1234) == "02:00:00:00:12:34" and mac_address(2**40 - 1) == "02:ff:ff:ff:ff:ff"
    for bad in (0, 2**40, True, "1"):
        with pytest.raises(OverlayError, match="node id"):
            link_local(bad)


@pytest.mark.parametrize("underlay6", [False, True], ids=["underlay4", "underlay6"])
def test_the_transit_routes_between_two_nodes_v4_and_v6(pair, underlay6):
    first, second = pair
    assert not connects(first, second, 4)  # no route yet
    ensure_transit(transit_of(first, second, underlay6=underlay6), netns=first.netns)
    ensure_transit(transit_of(second, first, underlay6=underlay6), netns=second.netns)

    state = device_state(first)
    assert state == {
        "kind": "vxlan",
        "vni": TRANSIT_VNI,
        "port": VXLAN_PORT,
        "learning": 0,
        "local": first.address6 if underlay6 else first.address4,
        "mtu": 1430 if underlay6 else 1450,
        "mac": "02:00:00:00:00:01",
        "master": None,
        "up": True,
        "addr_gen_mode": 1,
        "addresses": {("fe80::1", 64)},  # no IPv4 address, no generated one
    }
    assert transit_peers(netns=first.netns) == {second.address6 if underlay6 else second.address4}
    assert transit_routes(netns=first.netns) == {SLOT4[2]: "fe80::2", SLOT6[2]: "fe80::2"}
    shown = run_in(first.netns, "ip", "route", "show", "proto", str(ROUTE_PROTO)).stdout
    assert f"{SLOT4[2]} via inet6 fe80::2 dev {DEVICE}" in shown

    for version in (4, 6):
        assert connects(first, second, version), f"IPv{version} first -> second"
        assert connects(second, first, version), f"IPv{version} second -> first"


def test_drift_is_repaired_and_stale_routes_go(pair):
    first, second = pair
    wanted = transit_of(first, second)
    ensure_transit(wanted, netns=first.netns)
    ensure_transit(transit_of(second, first), netns=second.netns)

    # By hand: a route deleted, an IPv4 address and a stray IPv6 one added, the MTU changed,
    # address generation back on, the device down, the FDB entry gone; a route of another protocol added.
    run_in(first.netns, "ip", "route", "del", SLOT4[2])
    run_in(first.netns, "ip", "addr", "add", "192.0.2.1/24", "dev", DEVICE)
    run_in(first.netns, "ip", "addr", "add", "fe80::99/64", "dev", DEVICE, "nodad")
    run_in(first.netns, "ip", "link", "set", DEVICE, "mtu", "1300", "address", "02:00:00:00:00:99")
    run_in(first.netns, "ip", "link", "set", DEVICE, "addrgenmode", "eui64", "down")
    run_in(first.netns, "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", DEVICE, "dst", second.address4)
    run_in(first.netns, "ip", "route", "add", "10.98.0.0/24", "dev", "lo")
    assert SLOT4[2] not in transit_routes(netns=first.netns)
    ensure_transit(wanted, netns=first.netns)
    assert device_state(first)["addresses"] == {("fe80::1", 64)}
    assert device_state(first)["mtu"] == 1450 and device_state(first)["addr_gen_mode"] == 1
    assert device_state(first)["mac"] == "02:00:00:00:00:01"
    assert transit_peers(netns=first.netns) == {second.address4}
    assert transit_routes(netns=first.netns) == {SLOT4[2]: "fe80::2", SLOT6[2]: "fe80::2"}
    assert connects(first, second, 4) and connects(first, second, 6)

    # A device made otherwise (another VNI) is made anew, with the same MAC: the second side's
    # neighbour entry for it stays right (it reaches the first side without asking again).
    assert connects(second, first, 4)
    run_in(first.netns, "ip", "link", "del", DEVICE)
    run_in(first.netns, "ip", "link", "add", DEVICE, "type", "vxlan", "id", "17", "dstport", "4789")
    ensure_transit(wanted, netns=first.netns)
    assert device_state(first)["vni"] == TRANSIT_VNI
    assert connects(second, first, 4) and connects(first, second, 6)

    # A slot that moved to another next hop is replaced; one no longer listed goes.
    moved = replace(wanted, routes=(Route(SLOT4[2], 7),))
    ensure_transit(moved, netns=first.netns)
    assert transit_routes(netns=first.netns) == {SLOT4[2]: "fe80::7"}

    # Nothing of Hivemind's left after remove_transit; the other protocol's route untouched.
    remove_transit(netns=first.netns)
    remove_transit(netns=first.netns)  # nothing to remove: fine
    assert transit_routes(netns=first.netns) == {} and transit_peers(netns=first.netns) == set()
    assert "10.98.0.0/24 dev lo" in run_in(first.netns, "ip", "route").stdout
    with IPRoute(netns=first.netns, flags=0) as ipr:
        assert not ipr.link_lookup(ifname=DEVICE)
        assert not [r for r in ipr.get_routes(family=socket.AF_INET) if r["proto"] == ROUTE_PROTO]


def test_bad_transits_are_refused_before_anything_is_made(pair):
    first, second = pair
    good = transit_of(first, second)
    for bad, message in (
        (replace(good, node_id=0), "node id 0"),
        (replace(good, peers=(second.address6,)), "is not IPv4 like the local address"),
        (replace(good, routes=(Route("10.97.2.32/27", 2), Route("10.97.2.32/27", 3))), "listed twice"),
        (replace(good, routes=(Route("10.97.2.33/27", 2),)), "host bits set"),
        (replace(good, mtu=100), "MTU 100"),
    ):
        with pytest.raises(OverlayError, match=message):
            ensure_transit(bad, netns=first.netns)
    with IPRoute(netns=first.netns, flags=0) as ipr:
        assert not ipr.link_lookup(ifname=DEVICE)
