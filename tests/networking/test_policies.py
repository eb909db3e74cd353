"""Network policies on the suite's node with real traffic, IPv4 and IPv6: a policy of tenant A
lets exactly tenant B's client app reach A's server on one TCP port; nothing else gets
through; removing the policy closes it again; rules flushed by hand come back on the next
reconcile pass."""

from __future__ import annotations

import subprocess

from django.conf import settings

from hivemind.applications import services as app_services
from hivemind.applications.models import App
from hivemind.nodes.models import Node
from networking import services
from networking.models import Address
from networking.node import NodeNetworking
from tests.applications.conftest import finished, node, spec  # noqa: F401 (the node fixture)
from tests.conftest import wait_for

SERVER = spec(command=["sh", "-c", "httpd -p 8081; exec httpd -f -p 8080"], labels={"tier": "db"})


def reaches(docker_client, app: App, address: str, port: int) -> bool:
    row = app.containers.get()
    return docker_client.containers.get(row.name).exec_run(["nc", "-w", "2", address, str(port)]).exit_code == 0


def test_a_policy_lets_exactly_what_it_names_through(platform_processes, world, node, docker_client):  # noqa: F811
    platform_processes("worker")
    staff = world.users["staff"]
    server = app_services.app_deploy(tenant=world.a, name="server", spec=SERVER, actor=staff)
    client = app_services.app_deploy(tenant=world.b, name="client", spec=spec(labels={"role": "client"}), actor=staff)
    other = app_services.app_deploy(tenant=world.b, name="other", spec=spec(), actor=staff)
    for app in (server, client, other):
        finished(app.workflow)
    target = Address.objects.get(container__app=server)
    addresses = (target.ipv4, target.ipv6)
    for address in addresses:
        assert not reaches(docker_client, client, address, 8080)

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
        wait_for(lambda a=address: reaches(docker_client, client, a, 8080), 15, f"the policy to open {address}")
        assert not reaches(docker_client, client, address, 8081), "another port got through"
        assert not reaches(docker_client, other, address, 8080), "another app got through"

    # A rule flushed by hand on the node comes back with the next reconcile pass.
    netns = settings.CONFIG.node_netns
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", "nft", "flush", "chain", "inet", "hivemind", "filter_forward"],
        check=True,
    )
    assert reaches(docker_client, other, target.ipv4, 8080)  # wide open without the rules
    NodeNetworking(node=Node.objects.get(pk=node.pk), client=docker_client).reconcile()
    assert not reaches(docker_client, other, target.ipv4, 8080)
    assert reaches(docker_client, client, target.ipv4, 8080)

    services.policy_delete(policy=policy, actor=staff)
    for address in addresses:
        wait_for(lambda a=address: not reaches(docker_client, client, a, 8080), 15, f"{address} to close again")

    # The same by labels: the apps labelled tier=db accept B's apps labelled role=client.
    services.policy_apply(
        tenant=world.a,
        name="by-labels",
        spec={
            "labels": {"tier": "db"},
            "ingress": [
                {
                    "from": [{"labels": {"role": "client"}, "tenant": world.b.slug}],
                    "ports": [{"protocol": "tcp", "port": 8080}],
                }
            ],
        },
        actor=staff,
    )
    wait_for(lambda: reaches(docker_client, client, target.ipv6, 8080), 15, "the labels policy to open")
    assert not reaches(docker_client, other, target.ipv6, 8080), "an app without the label got through"
