"""Tenant networks through the whole platform on three simulated nodes (tests/netsim.py):
real agents (one Celery worker per node, acting in its node's namespace), the controller and
beat; replicas placed by the scheduler on all three nodes talk over the VXLAN overlay, over
IPv4 and IPv6 and with an IPv4 or an IPv6 underlay, while another tenant's cannot reach them.
A node that goes and a network that goes leave nothing behind on the others."""

from __future__ import annotations

import ipaddress

from hivemind.applications import services as app_services
from hivemind.applications.models import App
from hivemind.nodes import services as node_services
from hivemind.nodes.models import Node
from networking import nft, services
from networking.models import Address, Network, NodeRange
from networking.overlay import bridge_name, fdb_peers, present_segments
from tests.applications.test_multinode import SPEC, finished
from tests.conftest import wait_for


def reaches(cluster, row, address: str, port: int = 8080) -> bool:
    """Whether the replica `row` (a Container) connects to address:port from its node."""
    client = next(node.client for node in cluster.nodes if node.name == row.node.name)
    return client.containers.get(row.name).exec_run(["nc", "-w", "2", address, str(port)]).exit_code == 0


def test_replicas_on_three_nodes_reach_each_other_and_no_other_tenant(platform3, world):
    cluster, _agents, underlay6 = platform3
    staff = world.users["staff"]
    web = app_services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=3, actor=staff)
    finished(web.workflow)
    rows = list(web.containers.select_related("node"))
    assert sorted(row.node.name for row in rows) == [node.name for node in cluster.nodes]
    addresses = {a.container_id: a for a in Address.objects.filter(container__app=web)}
    assert len(addresses) == 3 and all(a.ipv4 and a.ipv6 for a in addresses.values())
    for source in rows:
        for target in rows:
            if target.pk == source.pk:
                continue
            for address in (addresses[target.pk].ipv4, addresses[target.pk].ipv6):
                assert reaches(cluster, source, address), f"{source.node} -> {target.node} {address}"

    # On the nodes themselves: every container address is unique and inside its node's slot.
    network = Network.objects.get(tenant=world.a, is_default=True)
    slots = {r.node.name: (ipaddress.ip_network(r.range4), ipaddress.ip_network(r.range6))
             for r in NodeRange.objects.filter(network=network).select_related("node")}  # fmt: skip
    seen = []
    for node in cluster.nodes:
        for found in node.client.containers.list(filters={"label": f"io.hivemind.app={web.pk}"}):
            settings_ = found.attrs["NetworkSettings"]["Networks"][f"hm-net-{network.pk}"]
            v4, v6 = ipaddress.ip_address(settings_["IPAddress"]), ipaddress.ip_address(settings_["GlobalIPv6Address"])
            assert v4 in slots[node.name][0] and v6 in slots[node.name][1], (node.name, v4, v6)
            seen += [v4, v6]
    assert len(seen) == 6 == len(set(seen))

    # Each node floods to the other two, over the underlay's family.
    for node in cluster.nodes:
        expected = {n.address6 if underlay6 else n.address4 for n in cluster.nodes if n is not node}
        assert fdb_peers(network.pk, node=node.name, netns=node.netns) == expected

    stranger = app_services.app_deploy(tenant=world.b, name="stranger", spec=SPEC, replicas=1, actor=staff)
    finished(stranger.workflow)
    outsider = stranger.containers.select_related("node").get()
    for target in rows:
        for address in (addresses[target.pk].ipv4, addresses[target.pk].ipv6):
            assert not reaches(cluster, outsider, address), f"tenant B reached {target.node} {address}"


def test_a_node_or_a_network_that_goes_leaves_nothing_on_the_others(platform3, world):
    cluster, agents, underlay6 = platform3
    staff = world.users["staff"]
    web = app_services.app_deploy(tenant=world.a, name="web", spec=SPEC, replicas=3, actor=staff)
    finished(web.workflow)
    network = Network.objects.get(tenant=world.a, is_default=True)
    first, second, third = cluster.nodes
    gone = third.address6 if underlay6 else third.address4

    # The third node's agent stops; the node is removed: the others stop flooding to it.
    agents[third.name].stop()
    wait_for(lambda: Node.objects.get(name=third.name).status == Node.Status.NOT_READY, 30, "node 3 not ready")
    node_services.node_remove(node=Node.objects.get(name=third.name), actor=staff)
    for node in (first, second):
        wait_for(
            lambda node=node: gone not in fdb_peers(network.pk, node=node.name, netns=node.netns),
            30,
            f"{node.name} to forget {third.name}",
        )
    finished(app_services.app_delete(app=App.objects.get(pk=web.pk), actor=staff))

    # The app is gone: after the grace period no node holds the network; deleted, it is nowhere.
    services.network_delete(network=network, actor=staff)

    def dropped(node) -> bool:
        return not present_segments(node.client) and bridge_name(network.pk, node.name) not in nft.listing(
            netns=node.netns
        )

    for node in (first, second):
        wait_for(lambda node=node: dropped(node), 60, f"{node.name} to drop the network and its rules")
        assert not fdb_peers(network.pk, node=node.name, netns=node.netns)
    assert not NodeRange.objects.filter(network_id=network.pk).exists()
