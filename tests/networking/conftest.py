"""The whole platform on the three simulated nodes of tests/netsim.py."""

from __future__ import annotations

import pytest
from django.conf import settings

from hivemind.nodes.models import Node
from networking.node import clear_node
from tests.conftest import wait_for
from tests.netsim import sim_cluster_fixture  # noqa: F401 (the sim_cluster fixture)

FAST = {"HIVEMIND_NODE_HEARTBEAT": "2"}


def start_platform(platform_processes, cluster, *, underlay6: bool = False) -> dict:
    """Controller, beat and one agent per simulated node (acting in its namespace); returns the agents."""
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    agents = {
        node.name: platform_processes(
            "worker", queues=[f"node.{node.name}"], extra_env={**FAST, **node.agent_env(underlay6=underlay6)}
        )
        for node in cluster.nodes
    }
    names = [node.name for node in cluster.nodes]
    wait_for(lambda: Node.objects.filter(name__in=names, status=Node.Status.READY).count() == 3, 60, "3 nodes")
    return agents


def stop_platform(agents: dict, cluster) -> None:
    for platform_process in agents.values():
        platform_process.stop()
    for node in cluster.nodes:
        clear_node(node.client, node=node.name, netns=node.netns)


@pytest.fixture(params=[False, True], ids=["underlay4", "underlay6"])
def platform3(request, platform_processes, world, sim_cluster):
    """The platform on three nodes, over an IPv4 and (second run) an IPv6 underlay."""
    agents = start_platform(platform_processes, sim_cluster, underlay6=request.param)
    yield sim_cluster, agents, request.param
    stop_platform(agents, sim_cluster)


@pytest.fixture
def platform3v4(platform_processes, world, sim_cluster):
    agents = start_platform(platform_processes, sim_cluster)
    yield sim_cluster, agents
    stop_platform(agents, sim_cluster)
