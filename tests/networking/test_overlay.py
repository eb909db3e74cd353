"""One tenant network across three simulated nodes (tests/netsim.py): Docker bridge networks
joined by VXLAN, over an IPv4 and an IPv6 underlay, and kept as asked when changed by hand.

About 15 s on the build machine, most of it the three daemons starting once per session."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace

import pytest
from pyroute2 import IPRoute

from hivemind.core.bootstrap import BUSYBOX_IMAGE
from networking.overlay import (
    OverlayError,
    Segment,
    bridge_name,
    docker_network_name,
    ensure_segment,
    fdb_peers,
    present_segments,
    remove_segment,
    vxlan_name,
)
from tests.conftest import wait_for
from tests.netsim import SimCluster, SimNode, sim_cluster_fixture  # noqa: F401 (the sim_cluster fixture)

SERVER = "mkdir -p /www; echo hi-$(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"


def segments(cluster: SimCluster, network_id: int, *, underlay6: bool = False) -> dict[str, Segment]:
    """One Segment per node of one network, as the IPAM would hand them out: the same v4 /24 and
    v6 /64 everywhere, a /26 and a /96 of them per node, each node's gateway the first address
    of its own range, and each node's peers the other two."""
    subnet4 = ipaddress.ip_network(f"10.128.{network_id}.0/24")
    subnet6 = ipaddress.ip_network(f"fd12:3456:789a:{network_id:x}::/64")
    local = {node.name: node.address6 if underlay6 else node.address4 for node in cluster.nodes}
    found = {}
    for number, node in enumerate(cluster.nodes):
        range4 = list(subnet4.subnets(new_prefix=26))[number]
        range6 = ipaddress.ip_network(f"{subnet6.network_address + ((number + 1) << 32)}/96")
        found[node.name] = Segment(
            network_id=network_id,
            tenant_id=7,
            vni=5000 + network_id,
            subnet4=str(subnet4),
            subnet6=str(subnet6),
            range4=str(range4),
            range6=str(range6),
            gateway4=str(range4.network_address + 1),
            gateway6=str(range6.network_address + 1),
            local=local[node.name],
            peers=tuple(address for name, address in local.items() if name != node.name),
        )
    return found


def ensure_everywhere(cluster: SimCluster, network: dict[str, Segment]) -> None:
    for node in cluster.nodes:
        assert ensure_segment(node.client, network[node.name], node=node.name, netns=node.netns) == (
            docker_network_name(network[node.name].network_id)
        )


def run_servers(cluster: SimCluster, network_id: int) -> dict[str, tuple[str, str]]:
    """A busybox httpd per node on the network; returns each node's (IPv4, IPv6) container address."""
    addresses = {}
    name = docker_network_name(network_id)
    for node in cluster.nodes:
        container = node.client.containers.run(
            f"{BUSYBOX_IMAGE}:latest",
            ["sh", "-c", SERVER],
            detach=True,
            init=True,  # busybox as PID 1 ignores SIGTERM: every removal would cost 10 s
            network=name,
            hostname=f"w-{node.name}",
            name=f"w-{network_id}-{node.name}",
        )
        container.reload()
        settings = container.attrs["NetworkSettings"]["Networks"][name]
        addresses[node.name] = (settings["IPAddress"], settings["GlobalIPv6Address"])
    return addresses


def fetch(node: SimNode, network_id: int, address: str, timeout: int = 3) -> str:
    """GET / of the httpd at `address`, from the container on `node` (busybox wget -T crashes here: nc)."""
    container = node.client.containers.get(f"w-{network_id}-{node.name}")
    request = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w {timeout} {address} 80'
    _code, output = container.exec_run(["sh", "-c", request])
    return output.decode(errors="replace")


def assert_full_mesh(cluster: SimCluster, network_id: int, addresses: dict[str, tuple[str, str]]) -> None:
    """Every node's container reaches every other node's, over IPv4 and over IPv6."""
    for client in cluster.nodes:
        for server in cluster.nodes:
            if server is client:
                continue
            for address in addresses[server.name]:
                wait_for(
                    lambda client=client, address=address, server=server: (
                        f"hi-w-{server.name}" in fetch(client, network_id, address)
                    ),
                    10,
                    f"{client.name} to reach {server.name} at {address}",
                    interval=0.2,
                )


def container_mtu(node: SimNode, network_id: int) -> int:
    container = node.client.containers.get(f"w-{network_id}-{node.name}")
    _code, output = container.exec_run(["cat", "/sys/class/net/eth0/mtu"])
    return int(output)


def device(node: SimNode, ifname: str) -> int | None:
    """The index of a device in the node's namespace (None: no such device)."""
    with IPRoute(netns=node.netns, flags=0) as ipr:
        found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


@pytest.fixture
def cluster(sim_cluster: SimCluster) -> Iterator[SimCluster]:
    """The session's nodes; the test's containers and networks are gone afterwards."""
    yield sim_cluster
    sim_cluster.clear_containers()
    for node in sim_cluster.nodes:
        for network_id in present_segments(node.client):
            remove_segment(node.client, network_id, node=node.name, netns=node.netns)


def test_containers_on_three_nodes_reach_each_other_over_ipv4_and_ipv6(cluster):
    network = segments(cluster, 1)
    ensure_everywhere(cluster, network)
    addresses = run_servers(cluster, 1)
    assert_full_mesh(cluster, 1, addresses)
    for node in cluster.nodes:
        others = {peer.address4 for peer in cluster.nodes if peer is not node}
        assert fdb_peers(1, node=node.name, netns=node.netns) == others
        assert present_segments(node.client) == {1}
        assert container_mtu(node, 1) == 1450
    # Again: nothing to do, so nothing is made anew (the containers stay on their network).
    first = device(cluster.nodes[0], vxlan_name(1, "sim-1"))
    ensure_everywhere(cluster, network)
    assert device(cluster.nodes[0], vxlan_name(1, "sim-1")) == first
    assert_full_mesh(cluster, 1, addresses)


def test_overlay_over_an_ipv6_underlay(cluster):
    network = segments(cluster, 2, underlay6=True)
    ensure_everywhere(cluster, network)
    addresses = run_servers(cluster, 2)
    assert_full_mesh(cluster, 2, addresses)
    node = cluster.nodes[1]
    assert fdb_peers(2, node=node.name, netns=node.netns) == {cluster.nodes[0].address6, cluster.nodes[2].address6}
    assert container_mtu(node, 2) == 1430


def test_drift_is_repaired_and_dropped_peers_lose_their_entry(cluster):
    network = segments(cluster, 3)
    ensure_everywhere(cluster, network)
    addresses = run_servers(cluster, 3)
    first, second, third = cluster.nodes

    # By hand: one FDB entry of the first node gone, the second node's VXLAN device deleted.
    with IPRoute(netns=first.netns, flags=0) as ipr:
        index = ipr.link_lookup(ifname=vxlan_name(3, first.name))[0]
        ipr.fdb("del", ifindex=index, lladdr="00:00:00:00:00:00", dst=second.address4)
    with IPRoute(netns=second.netns, flags=0) as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=vxlan_name(3, second.name))[0])
    assert fdb_peers(3, node=first.name, netns=first.netns) == {third.address4}
    assert fdb_peers(3, node=second.name, netns=second.netns) == set()
    assert "hi-" not in fetch(first, 3, addresses[second.name][0], timeout=1)  # the overlay is the only way

    ensure_everywhere(cluster, network)
    assert fdb_peers(3, node=first.name, netns=first.netns) == {second.address4, third.address4}
    assert fdb_peers(3, node=second.name, netns=second.netns) == {first.address4, third.address4}
    with IPRoute(netns=second.netns, flags=0) as ipr:
        (link,) = ipr.link("get", ifname=vxlan_name(3, second.name))
        assert link.get("IFLA_MASTER") == ipr.link_lookup(ifname=bridge_name(3, second.name))[0]
    assert_full_mesh(cluster, 3, addresses)

    # The third node leaves the network: the others stop flooding to it.
    for node, other in ((first, second), (second, first)):
        segment = replace(network[node.name], peers=(other.address4,))
        ensure_segment(node.client, segment, node=node.name, netns=node.netns)
    assert fdb_peers(3, node=first.name, netns=first.netns) == {second.address4}
    assert fdb_peers(3, node=second.name, netns=second.netns) == {first.address4}

    # Removal: refused while a container is on the network, complete once it is gone.
    with pytest.raises(OverlayError, match=f"w-3-{third.name}"):
        remove_segment(third.client, 3, node=third.name, netns=third.netns)
    assert device(third, vxlan_name(3, third.name)) is not None
    third.clear_containers()
    remove_segment(third.client, 3, node=third.name, netns=third.netns)
    remove_segment(third.client, 3, node=third.name, netns=third.netns)  # nothing left to remove: fine
    assert device(third, vxlan_name(3, third.name)) is None
    assert device(third, bridge_name(3, third.name)) is None
    assert present_segments(third.client) == set()
    assert not third.client.networks.list(names=[docker_network_name(3)])


def test_a_changed_docker_network_without_containers_is_recreated(cluster):
    node = cluster.nodes[0]
    segment = segments(cluster, 4)[node.name]
    node.client.networks.create(
        docker_network_name(4), driver="bridge", options={"com.docker.network.driver.mtu": "1500"}
    )
    ensure_segment(node.client, segment, node=node.name, netns=node.netns)
    attrs = node.client.networks.get(docker_network_name(4)).attrs
    assert attrs["Options"]["com.docker.network.bridge.name"] == bridge_name(4, node.name)
    assert {pool["Subnet"] for pool in attrs["IPAM"]["Config"]} == {segment.subnet4, segment.subnet6}
    assert attrs["Labels"]["io.hivemind.network"] == "4"
    assert present_segments(node.client) == {4}


def test_a_wrong_namespace_is_an_error_not_a_new_namespace(cluster):
    node = cluster.nodes[0]
    with pytest.raises(OverlayError, match="no network namespace"):
        ensure_segment(node.client, segments(cluster, 5)[node.name], node=node.name, netns="hmt-no-such-netns")
    assert not node.client.networks.list(names=[docker_network_name(5)])
