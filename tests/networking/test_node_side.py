"""The node side on the suite's node: a prefix that overlaps a route the node already has is
refused with the route named, and the per-tenant bridges of earlier releases go once no
container uses them (the upgrade in place, docs/networking.md)."""

from __future__ import annotations

import subprocess

from django.conf import settings

from hivemind.applications import services as app_services
from hivemind.nodes.models import Node
from hivemind.workflows.models import WorkflowState
from networking.node import NodeNetworking
from networking.tenant_networks import LABEL, network_name
from tests.applications.conftest import finished, node, spec  # noqa: F401 (the node fixture)


def in_node(*argv: str) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{settings.CONFIG.node_netns}", *argv], check=True)


def test_a_prefix_overlapping_a_route_of_the_node_is_refused_naming_it(platform_processes, world, node, docker_client):  # noqa: F811
    platform_processes("worker")
    # The first network gets the first /24 of the default pool: the node routes there already
    # (as to a LAN or through a VPN).
    in_node("ip", "route", "add", "10.128.0.0/16", "dev", "lo")
    try:
        app = app_services.app_deploy(tenant=world.a, name="web", spec=spec(), actor=world.users["staff"])
        workflow = finished(app.workflow)
        assert workflow.state == WorkflowState.FAILED
        assert "prefix 10.128.0.0/24 overlaps the route to 10.128.0.0/16 via lo on node" in workflow.error
        assert not docker_client.containers.list(all=True, filters={"label": "io.hivemind.managed=true"})
    finally:
        in_node("ip", "route", "del", "10.128.0.0/16", "dev", "lo")


def test_a_legacy_tenant_bridge_goes_once_no_container_uses_it(world, node, docker_client, busybox_image):  # noqa: F811
    labels = {LABEL: str(world.a.pk), "io.hivemind.managed": "true"}
    legacy = docker_client.networks.create(network_name(world.a.pk), driver="bridge", labels=labels)
    still_running = docker_client.containers.run(
        busybox_image, ["sleep", "600"], detach=True, init=True, network=legacy.name
    )
    networking = NodeNetworking(node=Node.objects.get(pk=node.pk), client=docker_client)
    try:
        networking.reconcile()
        assert docker_client.networks.list(names=[legacy.name]), "removed while a container used it"
    finally:
        still_running.remove(force=True)
    networking.reconcile()
    assert not [n for n in docker_client.networks.list(names=[legacy.name]) if n.name == legacy.name]
