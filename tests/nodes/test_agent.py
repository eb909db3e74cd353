"""The node agent with a real Celery worker, the suite's private dockerd, Redis and PostgreSQL.

The worker consumes `node.<HIVEMIND_NODE_NAME>` (testnode under the documented test command),
so its agent registers that node and reports the Docker containers labelled
io.hivemind.managed=true into their Container rows; beat and a controller run the monitor.
"""

from __future__ import annotations

import contextlib
import uuid

import docker
import pytest
from django.conf import settings
from django.utils import timezone

from hivemind.applications.models import LABEL_APP, LABEL_MANAGED, LABEL_REPLICA, LABEL_TENANT, Container
from hivemind.nodes import services
from hivemind.nodes.agent import DOCKER_GRACE, FULL_REPORT_EVERY, Agent, container_report, parse_docker_time
from hivemind.nodes.models import Node
from hivemind.nodes.selectors import LOST_AFTER_MISSED, node_lost, node_queue_down
from storage import capabilities
from tests.conftest import wait_for
from tests.nodes.conftest import make_app, make_container, make_node

HEARTBEAT = {"HIVEMIND_NODE_HEARTBEAT": "1"}
AGENT_ENV = {**HEARTBEAT, "HIVEMIND_NODE_LABELS": "zone=test-1,disk=ssd", "HIVEMIND_NODE_ADDRESS": "10.9.8.7"}
SECOND = 1_000_000_000


@pytest.fixture
def containers(docker_client):
    """Run busybox containers for a test; every one is removed at the end."""
    made = []

    def run(busybox_image: str, name: str, command: list[str], *, managed: bool = True, **kwargs):
        labels = {LABEL_MANAGED: "true", LABEL_TENANT: "1", LABEL_APP: "1", LABEL_REPLICA: "0"} if managed else {}
        container = docker_client.containers.run(
            busybox_image, command, name=name, labels=labels, detach=True, stop_signal="SIGKILL", **kwargs
        )
        made.append(container)
        return container

    yield run
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def row(container: Container) -> Container:
    container.refresh_from_db()
    return container


def test_agent_registers_reports_containers_and_the_monitor_notices_it_die(
    platform_processes, world, docker_daemon, docker_client, busybox_image, containers
):
    name = settings.NODE_NAME
    prefix = f"hm-test-{uuid.uuid4().hex[:8]}"
    agent = platform_processes("worker", queues=[f"node.{name}"], extra_env=AGENT_ENV)

    node = wait_for(
        lambda: Node.objects.filter(name=name, status=Node.Status.READY).first(), 30, "the node to register"
    )
    info = docker_client.info()
    assert node.cpu_millis == info["NCPU"] * 1000
    assert node.memory_bytes == info["MemTotal"]
    assert node.docker_version == info["ServerVersion"]
    assert node.docker_host == settings.DOCKER_HOST
    assert node.os == info["OperatingSystem"]
    assert node.arch in ("amd64", "arm64", info["Architecture"])
    assert node.disk_bytes > 0
    assert node.address == "10.9.8.7"
    assert node.labels == {"zone": "test-1", "disk": "ssd", **capabilities.node_labels()}  # what it can attach too
    first_beat = node.last_heartbeat
    wait_for(lambda: Node.objects.get(name=name).last_heartbeat > first_beat, 10, "a heartbeat")
    assert f"node {name} registered (ready): 10.9.8.7" in agent.output()

    app, _ = make_app(world.a, "web")
    web = make_container(world.a, node, app=app, name=f"{prefix}-web-0", replica=0)
    crash = make_container(world.a, node, app=app, name=f"{prefix}-web-1", replica=1)
    pending = make_container(world.a, node, app=app, name=f"{prefix}-web-2", replica=2)
    # A row whose name an unmanaged container has: that container is not ours.
    impostor = make_container(world.a, node, app=app, name=f"{prefix}-web-3", replica=3, state=Container.State.RUNNING)

    web_docker = containers(
        busybox_image,
        web.name,
        ["sleep", "600"],
        healthcheck={"test": ["CMD", "true"], "interval": SECOND, "start_period": 0},
    )
    containers(
        busybox_image,
        crash.name,
        ["sh", "-c", "exit 3"],
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
    )
    stranger = containers(busybox_image, impostor.name, ["sleep", "600"], managed=False)

    wait_for(
        lambda: row(web).state == Container.State.RUNNING and web.health == Container.Health.HEALTHY,
        30,
        "the running container to be reported healthy",
    )
    assert web.docker_id == web_docker.id
    assert web.started_at is not None and web.started_at <= timezone.now()
    assert web.last_seen_at is not None
    assert web.exit_code is None

    wait_for(
        lambda: row(crash).state == Container.State.EXITED and crash.restarts == 2,
        30,
        f"the crashing container to be reported exited after 2 restarts (now {crash.state}, {crash.restarts})",
    )
    assert crash.exit_code == 3

    wait_for(lambda: row(impostor).state == Container.State.MISSING, 10, "the row of the unmanaged name to be missing")
    assert impostor.docker_id == ""
    stranger.reload()
    assert stranger.status == "running"  # never touched
    assert row(pending).state == Container.State.PENDING  # not made yet: nothing to miss

    web_docker.stop(timeout=0)
    wait_for(lambda: row(web).state == Container.State.EXITED, 10, "the stopped container to be reported exited")
    assert web.exit_code == 137

    web_docker.remove()
    wait_for(lambda: row(web).state == Container.State.MISSING, 10, "the removed container to be reported missing")
    stranger.reload()
    assert stranger.status == "running"
    assert LABEL_MANAGED not in stranger.labels

    # The agent dies without a word: the monitor (beat, on the control queue) notices.
    agent.kill()
    platform_processes("worker", queues=[settings.CONTROL_QUEUE], extra_env=HEARTBEAT)
    platform_processes("beat", extra_env=HEARTBEAT)
    wait_for(
        lambda: Node.objects.get(name=name).status == Node.Status.NOT_READY,
        30,
        "the monitor to mark the node not-ready",
    )
    assert Node.objects.get(name=name).state == "not-ready"


def test_a_clean_stop_marks_the_node_not_ready_and_a_restart_keeps_api_labels(platform_processes, docker_daemon):
    name = settings.NODE_NAME
    make_node(name, labels={"zone": "old", "set-by": "staff"}, status=Node.Status.NOT_READY, address="")
    agent = platform_processes("worker", queues=[f"node.{name}"], extra_env=AGENT_ENV)
    node = wait_for(
        lambda: Node.objects.filter(name=name, status=Node.Status.READY).first(), 30, "the node to register"
    )
    assert node.labels == {"zone": "test-1", "set-by": "staff", "disk": "ssd", **capabilities.node_labels()}
    agent.stop()
    assert Node.objects.get(name=name).status == Node.Status.NOT_READY
    assert "agent stopped, node marked not-ready" in agent.output()


def test_workers_of_other_queues_start_no_agent(platform_processes, docker_daemon):
    worker = platform_processes("worker", queues=[settings.CONTROL_QUEUE, "node.elsewhere"], extra_env=HEARTBEAT)
    wait_for(lambda: "ready." in worker.output(), 10, "the worker")
    assert not Node.objects.exists()
    assert "node agent started" not in worker.output()


# --- single passes, in this process -----------------------------------------------------------


def test_a_report_inspects_only_new_or_changed_containers(db, docker_daemon, containers, busybox_image):
    agent = Agent(node_name="lean", docker_host=docker_daemon.endpoint, labels={}, address="")
    sleeper = containers(busybox_image, f"lean-{uuid.uuid4().hex[:6]}", ["sleep", "600"])
    api = agent.client().api
    inspected, real_inspect = [], api.inspect_container
    api.inspect_container = lambda ident: inspected.append(ident) or real_inspect(ident)  # counts, then asks Docker

    def report():
        inspected.clear()
        return {r.docker_id: r for r in agent.managed_containers()}[sleeper.id]

    assert report().state == "running" and sleeper.id in inspected  # new: inspected
    assert report().state == "running" and sleeper.id not in inspected  # unchanged: the last report stands
    sleeper.stop(timeout=0)
    assert report().state == "exited" and sleeper.id in inspected  # changed: inspected again
    looked = []
    for _ in range(FULL_REPORT_EVERY):
        report()
        looked.append(sleeper.id in inspected)
    assert looked.count(True) == 1  # one report in every FULL_REPORT_EVERY inspects all (restart counts)


def test_docker_down_registers_the_node_not_ready(db, tmp_path):
    agent = Agent(node_name="no-docker", docker_host=f"unix://{tmp_path}/absent.sock", labels={}, address="10.0.0.9")
    agent.register()
    node = Node.objects.get(name="no-docker")
    assert (node.status, node.docker_version, node.address) == (Node.Status.NOT_READY, "", "10.0.0.9")
    assert agent.beat() is True
    Node.objects.filter(name="no-docker").delete()
    assert agent.beat() is False  # removed while the agent ran: the thread stops beating


def test_a_recovered_docker_makes_the_node_ready(db, docker_daemon):
    agent = Agent(node_name="flaky", docker_host="unix:///nonexistent/docker.sock", labels={}, address="")
    agent.register()
    assert Node.objects.get(name="flaky").status == Node.Status.NOT_READY
    agent.docker_host, agent._client = docker_daemon.endpoint, None
    assert agent.beat() is True
    node = Node.objects.get(name="flaky")
    assert node.status == Node.Status.READY
    assert node.cpu_millis > 0


def test_a_docker_that_fails_to_answer_once_leaves_the_node_ready(db, docker_daemon):
    """A busy Docker that misses a report is not an outage: only DOCKER_GRACE misses in a row are."""
    agent = Agent(node_name="busy", docker_host=docker_daemon.endpoint, labels={}, address="")
    agent.register()
    assert Node.objects.get(name="busy").status == Node.Status.READY
    agent.docker_host, agent._client = "unix:///nonexistent/docker.sock", None
    for _ in range(DOCKER_GRACE - 1):
        assert agent.beat() is True
        assert Node.objects.get(name="busy").status == Node.Status.READY
    assert agent.beat() is True
    node = Node.objects.get(name="busy")
    assert node.status == Node.Status.NOT_READY
    # Its agent still beats, so steps queued for the node are still taken: the queue is not down.
    assert node_queue_down("node.busy") is None
    agent.docker_host, agent._client = docker_daemon.endpoint, None
    assert agent.beat() is True
    assert Node.objects.get(name="busy").status == Node.Status.READY


def test_a_queue_is_down_when_its_node_is_unknown_or_its_agent_fell_silent(db, settings):
    now = timezone.now()
    beats = settings.CONFIG.node_heartbeat
    late = now - timezone.timedelta(seconds=4 * beats)  # not ready (3 missed), not yet lost (6)
    lost = now - timezone.timedelta(seconds=LOST_AFTER_MISSED * beats + 1)
    make_node("stopped", status=Node.Status.NOT_READY, last_heartbeat=now)  # agent just stopped: wait
    make_node("late", status=Node.Status.NOT_READY, last_heartbeat=late)  # a stalled machine: wait
    make_node("gone", status=Node.Status.NOT_READY, last_heartbeat=lost)
    make_node("never", status=Node.Status.NOT_READY, last_heartbeat=None)
    make_node("unmarked", status=Node.Status.READY, last_heartbeat=lost)  # the monitor decides first
    assert node_queue_down("control") is None
    for name in ("stopped", "late", "unmarked"):
        assert node_queue_down(f"node.{name}") is None, name
    assert "node gone is not ready and its agent has not beaten for" in node_queue_down("node.gone")
    assert "node never is not ready" in node_queue_down("node.never")
    assert node_queue_down("node.ghost") == "node ghost is not registered"


def test_replicas_leave_a_lost_node_but_wait_for_a_late_one(db, settings):
    """Not ready because Docker failed (the agent still beats) or silent for LOST_AFTER_MISSED
    heartbeats: lost. Not ready for a few missed heartbeats only: late, nothing moves yet."""
    now = timezone.now()
    beats = settings.CONFIG.node_heartbeat
    cases = {
        "ready": (Node.Status.READY, now, False),
        "docker-down": (Node.Status.NOT_READY, now, True),
        "late": (Node.Status.NOT_READY, now - timezone.timedelta(seconds=4 * beats), False),
        "lost": (Node.Status.NOT_READY, now - timezone.timedelta(seconds=LOST_AFTER_MISSED * beats + 1), True),
        "never": (Node.Status.NOT_READY, None, True),
    }
    for name, (status, beat, expected) in cases.items():
        assert node_lost(make_node(name, status=status, last_heartbeat=beat)) is expected, name


def test_monitor_marks_only_silent_ready_nodes(db, settings):
    now = timezone.now()
    make_node("fresh", last_heartbeat=now)
    make_node("silent", last_heartbeat=now - timezone.timedelta(seconds=3 * settings.CONFIG.node_heartbeat + 1))
    make_node("never", last_heartbeat=None)
    make_node("down", status=Node.Status.NOT_READY, last_heartbeat=None)
    assert sorted(services.nodes_mark_unresponsive(now=now)) == ["never", "silent"]
    assert dict(Node.objects.values_list("name", "status")) == {
        "fresh": "ready",
        "silent": "not-ready",
        "never": "not-ready",
        "down": "not-ready",
    }


def test_container_report_from_inspect():
    attrs = {
        "Id": "abc",
        "Name": "/web-0",
        "RestartCount": 4,
        "State": {
            "Status": "dead",
            "ExitCode": 1,
            "StartedAt": "2026-05-01T10:00:00.123456789Z",
            "Health": {"Status": "unhealthy"},
        },
    }
    report = container_report(attrs)
    assert (report.name, report.docker_id, report.state, report.health) == ("web-0", "abc", "exited", "unhealthy")
    assert (report.exit_code, report.restarts) == (1, 4)
    assert report.started_at.isoformat() == "2026-05-01T10:00:00.123456+00:00"
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    created = container_report({"Name": "/x", "State": {"Status": "created", "ExitCode": 0}})
    assert (created.state, created.exit_code, created.health, created.started_at) == ("created", None, "none", None)


@pytest.mark.django_db(transaction=True)
def test_a_report_and_a_rollout_lock_the_same_containers_in_one_order():
    """Two real connections. A rollout's start (here: the other connection) holds the lower
    replica's row and will take the higher one next; the node's report lists the higher one
    first, as Docker may. The report takes its rows in key order, so it waits for the lower
    one holding nothing, and both finish. (Taken in the report's order, the two deadlocked and
    PostgreSQL failed one of them: a deploy's apps.start, retried 6 s later.)"""
    import threading

    import psycopg
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tenants.services import tenant_create

    staff = get_user_model().objects.create_user("staff-locks", is_staff=True)
    tenant = tenant_create(name="Locks", slug="locks", created_by=staff)
    node = make_node("locknode")
    low, high = (make_container(tenant, node, state=Container.State.CREATED) for _ in range(2))
    assert low.pk < high.pk
    table = Container._meta.db_table
    db = connection.settings_dict
    rollout = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"])
    rollout.execute("SET lock_timeout = '10s'")
    reported, failed = [], []
    reports = [
        services.ContainerReport(name, f"id-{name}", Container.State.RUNNING, Container.Health.NONE, None, 0, None)
        for name in (high.name, low.name)
    ]

    def report():
        try:
            at = timezone.now()
            reported.append(services.node_containers_report(node_name=node.name, reports=reports, seen_at=at))
        except Exception as exc:  # a deadlock is reported here or in the rollout's connection
            failed.append(exc)
        finally:
            connection.close()  # this thread's own

    try:
        rollout.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [low.pk])  # noqa: S608
        thread = threading.Thread(target=report)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the report did not wait for the rollout's row"
        rollout.execute(f"UPDATE {table} SET state = 'running' WHERE id = %s", [high.pk])  # noqa: S608
        rollout.commit()
        thread.join(30)
        assert not failed and reported == [[]]
    finally:
        rollout.close()
    assert set(Container.objects.values_list("docker_id", flat=True)) == {f"id-{low.name}", f"id-{high.name}"}
