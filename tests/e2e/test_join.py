"""`make agent` (`manage.py up --agent`) on a further machine: its node joins and takes replicas.

The second machine is simulated as in tests/applications/test_multinode.py: a second Docker
daemon on this machine, and an agent with a node name of its own, pointed at the suite's
PostgreSQL test database and Redis like a real second machine would be at the first one's.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection

from hivemind.applications import services
from hivemind.nodes.models import Node
from hivemind.nodes.runtime import docker_client as make_client
from tests.applications.test_multinode import (  # noqa: F401 - fixtures
    SECOND_ADDRESS,
    SPEC,
    clear_nodes,
    finished,
    per_node,
    second_daemon,
    second_netns,
)
from tests.conftest import wait_for
from tests.e2e.platform import MakeTarget

pytestmark = pytest.mark.e2e

JOINING = "node-j"
FAST = {"HIVEMIND_NODE_HEARTBEAT": "2"}


@pytest.mark.timeout(600)
def test_make_agent_joins_a_node_that_takes_replicas(
    platform_processes,
    world,
    docker_client,
    busybox_image,
    second_daemon,  # noqa: F811 - the fixture imported above
    second_netns,  # noqa: F811 - the fixture imported above
    subprocess_env,
    tmp_path,
):
    second = make_client(second_daemon.endpoint)
    clients = {settings.NODE_NAME: docker_client, JOINING: second}
    for client in clients.values():  # what an interrupted earlier run may have left would be counted
        for container in client.containers.list(all=True, filters={"label": "io.hivemind.managed=true"}):
            container.remove(force=True)
    # The first machine: controller, beat and its own agent on the shared database and broker.
    first_machine = [
        platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=FAST),
        platform_processes("beat", extra_env=FAST),
        platform_processes("worker", queues=[settings.NODE_QUEUE], extra_env=FAST),
    ]
    wait_for(lambda: Node.objects.filter(name=settings.NODE_NAME, status=Node.Status.READY).exists(), 60, "node 1")

    db = connection.settings_dict
    subprocess_env.update(
        FAST,
        HIVEMIND_DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        HIVEMIND_REDIS_URL=settings.CELERY_BROKER_URL,
        HIVEMIND_SECRET_KEY=settings.SECRET_KEY,
        HIVEMIND_NODE_NAME=JOINING,
        HIVEMIND_DOCKER_HOST=second_daemon.endpoint,
        HIVEMIND_NODE_NETNS=second_netns,
        HIVEMIND_NODE_ADDRESS=SECOND_ADDRESS,
        HIVEMIND_VAR_DIR=str(tmp_path / "second-machine"),
    )
    agent = MakeTarget("agent", subprocess_env)
    output = agent.output
    try:
        output.wait_for(r"^\[database\] answers, schema up to date$", timeout=240)
        output.wait_for(r"^\[docker\] answers$", timeout=60)
        output.wait_for(r"^\[image\] hivemind/busybox:latest up to date", timeout=60)
        output.wait_for(rf"Hivemind agent for node {JOINING} is starting", timeout=60)
        output.wait_for(rf"^agent\s+\| .*agent\.{JOINING}@\S+ ready", timeout=120)
        wait_for(
            lambda: Node.objects.filter(name=JOINING, status=Node.Status.READY).exists(), 60, f"{JOINING} to register"
        )
        joined = Node.objects.get(name=JOINING)
        assert joined.docker_host == second_daemon.endpoint

        app = services.app_deploy(tenant=world.a, name="spread", spec=SPEC, replicas=2, actor=world.users["staff"])
        finished(app.workflow)
        assert Counter(app.containers.values_list("node__name", flat=True)) == {settings.NODE_NAME: 1, JOINING: 1}
        assert per_node(clients, app) == {settings.NODE_NAME: 1, JOINING: 1}
        steps = {(s.name, s.queue, (s.worker or "").split("@")[0]) for s in app.workflow.steps.all()}
        assert ("apps.start", f"node.{JOINING}", f"agent.{JOINING}") in steps

        # Only the agent runs there: no web, controller, beat, Redis or migration of its own.
        prefixes = {match.group(1) for line in output.lines if (match := re.match(r"^(\S+)\s*\| ", line))}
        assert prefixes == {"agent"}, prefixes
        assert not [line for line in output.lines if "migrat" in line or "redis-server" in line]
        agent.note_processes()
    finally:
        try:
            agent.interrupt(60)
        finally:
            # The first machine stops too, or its reconciler would replace what is removed here.
            for platform_process in reversed(first_machine):
                platform_process.stop()
            clear_nodes(clients, {settings.NODE_NAME: settings.CONFIG.node_netns, JOINING: second_netns})
            second.close()
    agent.assert_stopped_cleanly()
    # A clean stop marks the node not ready at once; the second daemon (not started by it) is left alone.
    assert Node.objects.get(name=JOINING).status == Node.Status.NOT_READY
    assert second_daemon.process is None or second_daemon.process.poll() is None
