"""Two nodes on one machine: two Docker daemons, two agents (Celery workers on node.<name>),
the controller and beat. The agents register their nodes and heartbeat every second."""

from __future__ import annotations

from collections import Counter

import pytest
from django.conf import settings

from hivemind.applications import services
from hivemind.applications.models import LABEL_APP, App, Container
from hivemind.core import bootstrap
from hivemind.nodes import services as node_services
from hivemind.nodes.models import Node
from hivemind.nodes.runtime import docker_client as make_client
from hivemind.workflows.models import Workflow, WorkflowState
from networking.node import clear_node
from tests.applications.conftest import healthy_replicas
from tests.conftest import node_namespace, wait_for

SECOND = "node-b"
# Heartbeats every 2 s: a node is not ready after 6 s without one (1 s flaps on a busy machine).
FAST = {"HIVEMIND_NODE_HEARTBEAT": "2"}


SECOND_ADDRESS = "10.240.255.2"


@pytest.fixture(scope="session")
def second_netns():
    with node_namespace("b", SECOND_ADDRESS) as name:
        yield name


@pytest.fixture(scope="session")
def second_daemon(docker_daemon, second_netns):
    root = settings.VAR_DIR / "docker-b"
    service = bootstrap.ensure_dockerd(f"unix://{root / 'docker.sock'}", root, netns=second_netns)
    client = make_client(service.endpoint)
    bootstrap.ensure_busybox_image(client)
    yield service
    client.close()
    service.stop()


@pytest.fixture
def cluster(platform_processes, world, docker_client, busybox_image, second_daemon, second_netns):
    second = make_client(second_daemon.endpoint)
    agents = {}

    def start_agent(name: str):
        if name == settings.NODE_NAME:
            agents[name] = platform_processes("worker", queues=[f"node.{name}"], extra_env=FAST)
        else:
            env = {
                **FAST, "HIVEMIND_NODE_NAME": name, "HIVEMIND_DOCKER_HOST": second_daemon.endpoint,
                "HIVEMIND_NODE_NETNS": second_netns, "HIVEMIND_NODE_ADDRESS": SECOND_ADDRESS,
            }  # fmt: skip
            agents[name] = platform_processes("worker", queues=[f"node.{name}"], extra_env=env)
        return agents[name]

    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST)
    platform_processes("beat", extra_env=FAST)
    start_agent(settings.NODE_NAME)
    start_agent(SECOND)
    wait_for(
        lambda: Node.objects.filter(status=Node.Status.READY, name__in=[settings.NODE_NAME, SECOND]).count() == 2,
        60,
        "both nodes to register",
    )
    clients = {settings.NODE_NAME: docker_client, SECOND: second}
    yield clients, start_agent, agents
    for agent in agents.values():  # first, or a heal could start containers while the nodes are cleared
        agent.stop()
    namespaces = {settings.NODE_NAME: settings.CONFIG.node_netns, SECOND: second_netns}
    clear_nodes(clients, namespaces)
    second.close()


def clear_nodes(clients: dict, namespaces: dict) -> None:
    """Remove what Hivemind made on each node: containers, networks with their devices, rules."""
    for node, client in clients.items():
        clear_node(client, node=node, netns=namespaces[node])


SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
    "health": {"type": "tcp", "port": 8080, "interval": 0.5, "timeout": 1, "retries": 3},
}


def finished(workflow: Workflow, timeout: float = 120) -> Workflow:
    def done():
        workflow.refresh_from_db()
        return workflow.is_terminal

    try:
        wait_for(done, timeout, f"workflow {workflow.pk} ({workflow.kind}) to finish")
    except AssertionError as exc:
        steps = [(s.index, s.name, s.queue, s.state, s.attempts, s.error) for s in workflow.steps.all()]
        raise AssertionError(f"{exc}: {workflow.state} {workflow.waiting_on} {steps}") from None
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    return workflow


def per_node(clients, app: App) -> dict[str, int]:
    return {
        name: len(
            client.containers.list(filters={"label": f"{LABEL_APP}={app.pk}", "status": "running"}, ignore_removed=True)
        )
        for name, client in clients.items()
    }


def healthy_count(clients, app: App) -> int:
    return sum(healthy_replicas(client, app) for client in clients.values())


def test_spread_scale_across_two_nodes(cluster, world):
    clients, _, _ = cluster
    staff = world.users["staff"]
    app = services.app_deploy(tenant=world.a, name="spread", spec=SPEC, replicas=4, actor=staff)
    finished(app.workflow)
    assert per_node(clients, app) == {settings.NODE_NAME: 2, SECOND: 2}
    assert Counter(app.containers.values_list("node__name", flat=True)) == {settings.NODE_NAME: 2, SECOND: 2}
    finished(services.app_scale(app=app, replicas=6, actor=staff))
    assert per_node(clients, app) == {settings.NODE_NAME: 3, SECOND: 3}
    finished(services.app_scale(app=app, replicas=1, actor=staff))
    assert sum(per_node(clients, app).values()) == 1


def test_a_lost_node_is_healed_elsewhere_and_nothing_is_duplicated_on_return(cluster, world):
    clients, start_agent, agents = cluster
    staff = world.users["staff"]
    app = services.app_deploy(tenant=world.a, name="survivor", spec=SPEC, replicas=2, actor=staff)
    finished(app.workflow)
    assert per_node(clients, app) == {settings.NODE_NAME: 1, SECOND: 1}

    agents[SECOND].kill()  # the node's agent dies; its container keeps running on its daemon
    wait_for(lambda: Node.objects.get(name=SECOND).status == Node.Status.NOT_READY, 30, f"{SECOND} to be not ready")
    heal = wait_for(
        lambda: Workflow.objects.filter(subject=f"app:{app.pk}", params__action="heal").first(), 30, "a heal rollout"
    )
    finished(heal)
    assert list(app.containers.values_list("node__name", flat=True)) == [settings.NODE_NAME] * 2
    assert per_node(clients, app)[settings.NODE_NAME] == 2

    start_agent(SECOND)  # it comes back with the stale replica still running
    wait_for(lambda: Node.objects.get(name=SECOND).status == Node.Status.READY, 30, f"{SECOND} to be ready again")
    wait_for(lambda: per_node(clients, app)[SECOND] == 0, 30, f"the orphan on {SECOND} to be removed")
    assert per_node(clients, app) == {settings.NODE_NAME: 2, SECOND: 0}
    app.refresh_from_db()
    assert app.status == App.Status.RUNNING


def settled(app: App) -> bool:
    """No workflow of the app is still running."""
    workflows = Workflow.objects.filter(subject=f"app:{app.pk}")
    return not workflows.exclude(state__in=[WorkflowState.SUCCEEDED, WorkflowState.FAILED]).exists()


def test_noexecute_taints_evict_and_drain_moves_replicas(cluster, world):
    clients, _, _ = cluster
    staff = world.users["staff"]
    second = Node.objects.get(name=SECOND)
    plain = services.app_deploy(tenant=world.a, name="plain", spec=SPEC, replicas=2, actor=staff)
    tolerant_spec = {**SPEC, "placement": {"tolerations": [{"key": "maintenance", "effect": "NoExecute"}]}}
    tolerant = services.app_deploy(tenant=world.a, name="tolerant", spec=tolerant_spec, replicas=2, actor=staff)
    for app in (plain, tolerant):
        finished(app.workflow)
        assert per_node(clients, app) == {settings.NODE_NAME: 1, SECOND: 1}

    # NoExecute: what does not tolerate the taint leaves the node; what tolerates it stays.
    node_services.node_taint(node=second, add=[{"key": "maintenance", "value": "", "effect": "NoExecute"}], actor=staff)
    wait_for(lambda: per_node(clients, plain) == {settings.NODE_NAME: 2, SECOND: 0}, 60, "plain to leave the node")
    wait_for(lambda: settled(plain), 60, "the eviction to finish")
    assert per_node(clients, tolerant) == {settings.NODE_NAME: 1, SECOND: 1}
    evictions = Workflow.objects.filter(subject=f"app:{plain.pk}", params__action="heal")
    assert evictions.exists() and not evictions.exclude(state=WorkflowState.SUCCEEDED).exists()
    assert not Workflow.objects.filter(subject=f"app:{tolerant.pk}", params__action="heal").exists()

    # Drain: every replica moves to the other node, and nothing new lands on the drained one.
    node_services.node_drain(node=second, actor=staff)
    wait_for(lambda: per_node(clients, tolerant) == {settings.NODE_NAME: 2, SECOND: 0}, 60, "tolerant to move")
    wait_for(lambda: settled(tolerant), 60, "the drain to finish")
    assert not Container.objects.filter(node=second).exclude(state=Container.State.REMOVED).exists()
    for app in (plain, tolerant):
        app.refresh_from_db()
        assert app.status == App.Status.RUNNING, app.message
        assert healthy_count(clients, app) == 2
