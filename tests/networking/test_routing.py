"""Routing between networks across nodes (networking/transit.py) through the whole platform on
three simulated nodes: tenant A's server on sim-2, tenant B's client on sim-1 and another app
of B on sim-3, each pinned by its node selector. Without a policy nothing crosses; A's policy
lets exactly B's client reach the server on TCP 8080, over IPv4 and IPv6, at its addresses and
at its virtual address; a route or the transit device deleted by hand comes back after one
reconcile pass; once the apps and the network are gone, no node keeps a route or a device.

About 1 min on the build machine, most of it the platform starting and the deploys."""

from __future__ import annotations

import ipaddress
import subprocess

from hivemind.applications import services as app_services
from hivemind.applications.models import App
from hivemind.nodes.models import Node
from networking import nft, services
from networking.models import Address, Network, NodeRange, ServiceAddress
from networking.node import NodeNetworking
from networking.overlay import TRANSIT_VNI
from networking.transit import DEVICE, link_local, transit_peers, transit_routes
from tests.applications.test_multinode import finished
from tests.conftest import wait_for


def pinned(node: str, command: str = "httpd -f -p 8080", **extra) -> dict:
    return {
        "image": "hivemind/busybox:latest",
        "command": ["sh", "-c", command],
        "resources": {"cpu": "100m", "memory": "16Mi"},
        "health": {"type": "tcp", "port": 8080, "interval": 0.5, "timeout": 1, "retries": 3},
        "placement": {"node_selector": {"hivemind.io/node": node}},
        **extra,
    }


SERVER = pinned(
    "sim-2", "httpd -p 8081; exec httpd -f -p 8080", ports=[{"container_port": 8080, "name": "http"}]
)  # fmt: skip


def reaches(cluster, app: App, address: str, port: int = 8080) -> bool:
    """Whether the app's replica connects to address:port (1 s: a dropped SYN costs that much)."""
    row = app.containers.select_related("node").get()
    client = next(node.client for node in cluster.nodes if node.name == row.node.name)
    return client.containers.get(row.name).exec_run(["nc", "-w", "1", address, str(port)]).exit_code == 0


def slots(network: Network) -> dict[str, tuple[str, str]]:
    return {r.node.name: (r.range4, r.range6) for r in NodeRange.objects.filter(network=network).select_related("node")}


def routes_inside(node, network: Network) -> list[str]:
    """The node's transit routes into the network's prefixes."""
    prefixes = [ipaddress.ip_network(p) for p in (network.subnet4, network.subnet6) if p]
    return [
        route for route in transit_routes(netns=node.netns) if any(map(ipaddress.ip_network(route).overlaps, prefixes))
    ]


def test_networks_route_to_each_other_across_nodes_as_policies_allow(platform3v4, world):
    cluster, _agents = platform3v4
    sim1, sim2, sim3 = cluster.nodes
    staff = world.users["staff"]
    server = app_services.app_deploy(tenant=world.a, name="server", spec=SERVER, actor=staff)
    client = app_services.app_deploy(tenant=world.b, name="client", spec=pinned("sim-1"), actor=staff)
    other = app_services.app_deploy(tenant=world.b, name="other", spec=pinned("sim-3"), actor=staff)
    for app in (server, client, other):
        finished(app.workflow)
    placed = {app.name: app.containers.select_related("node").get().node.name for app in (server, client, other)}
    assert placed == {"server": "sim-2", "client": "sim-1", "other": "sim-3"}
    net_a = Network.objects.get(tenant=world.a, is_default=True)
    net_b = Network.objects.get(tenant=world.b, is_default=True)
    nodes = {node.name: Node.objects.get(name=node.name) for node in cluster.nodes}

    # Every node routes to the other nodes' slots through the transit, whichever network they hold.
    a_on_2, b_on_1 = slots(net_a)["sim-2"], slots(net_b)["sim-1"]
    via2, via1 = str(link_local(nodes["sim-2"].pk)), str(link_local(nodes["sim-1"].pk))
    for node, slot, hop in ((sim1, a_on_2, via2), (sim3, a_on_2, via2), (sim2, b_on_1, via1)):
        wait_for(
            lambda node=node, slot=slot, hop=hop: all(transit_routes(netns=node.netns).get(p) == hop for p in slot),
            20,
            f"{node.name} to route {slot} via {hop}",
        )
    for node in cluster.nodes:
        assert transit_peers(netns=node.netns) == {n.address4 for n in cluster.nodes if n is not node}
    shown = subprocess.run(
        ["nsenter", f"--net=/run/netns/{sim1.netns}", "ip", "-d", "link", "show", DEVICE],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"vxlan id {TRANSIT_VNI}" in shown and "nolearning" in shown

    target = Address.objects.get(container__app=server)
    vip = ServiceAddress.objects.get(app=server)
    addresses = (target.ipv4, target.ipv6, vip.ipv4, vip.ipv6)
    for address in addresses:
        assert not reaches(cluster, client, address), f"B's client reached {address} without a policy"

    policy, _ = services.policy_apply(
        tenant=world.a,
        name="from-b-client",
        spec={
            "apps": ["server"],
            "ingress": [
                {"from": [{"app": "client", "tenant": world.b.slug}], "ports": [{"protocol": "tcp", "port": 8080}]}
            ],
        },
        actor=staff,
    )
    for address in addresses:
        wait_for(lambda a=address: reaches(cluster, client, a), 15, f"the policy to open {address}", interval=0.2)
        assert not reaches(cluster, other, address), f"B's other app reached {address}"
    for address in (target.ipv4, target.ipv6):
        assert not reaches(cluster, client, address, 8081), "another port got through"
    drops = nft.counters(netns=sim2.netns)
    assert drops["isolation_drop"][0] > 0 and drops["spoof_drop"] == (0, 0)

    # By hand: the client node's IPv4 route to the server's slot and the server node's device
    # deleted. One reconcile pass on each brings them back (the agents' own passes may beat it).
    subprocess.run(["nsenter", f"--net=/run/netns/{sim1.netns}", "ip", "route", "del", a_on_2[0]], check=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{sim2.netns}", "ip", "link", "del", DEVICE], check=True)
    for node in (sim1, sim2):
        NodeNetworking(node=nodes[node.name], client=node.client, netns=node.netns).reconcile()
    assert transit_routes(netns=sim1.netns)[a_on_2[0]] == via2
    assert transit_routes(netns=sim2.netns)[b_on_1[0]] == via1
    assert reaches(cluster, client, target.ipv4) and reaches(cluster, client, target.ipv6)

    services.policy_delete(policy=policy, actor=staff)
    for address in (target.ipv4, target.ipv6):
        wait_for(lambda a=address: not reaches(cluster, client, a), 15, f"{address} to close again", interval=0.2)

    # The apps go, then A's network: no node keeps a route into it; holding nothing, no device.
    for app in (server, client, other):
        finished(app_services.app_delete(app=App.objects.get(pk=app.pk), actor=staff))
    services.network_delete(network=net_a, actor=staff)

    def bare(node) -> bool:
        with_device = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node.netns}", "ip", "link", "show", DEVICE], capture_output=True
        )
        return not routes_inside(node, net_a) and not transit_routes(netns=node.netns) and with_device.returncode != 0

    for node in cluster.nodes:
        wait_for(lambda node=node: bare(node), 60, f"{node.name} to drop its transit routes and device")
