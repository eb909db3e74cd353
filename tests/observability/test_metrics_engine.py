"""The metrics engine: node, container and health collectors over what a real agent sampled from
the suite's dockerd, the tenant filter, and the per-tenant endpoint /api/v1/metrics/."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from hivemind.applications.models import Container
from hivemind.nodes.agent import Agent
from hivemind.workflows.models import Workflow, WorkflowState
from observability import registry
from observability.models import ContainerStat, NodeStat, UsageSample
from observability.sampling import MachineReader, block_bytes, cpu_times, meminfo, network_bytes
from tenants import services as tenant_services
from tenants.models import Role
from tests.nodes.conftest import make_app, make_container
from tests.observability.conftest import BURN, IDLE
from tests.test_metrics import promtool_check

# Five pings to the container's gateway, then idle: traffic both ways on its interface.
PINGER = ["sh", "-c", "gw=$(ip route | awk '/default/ {print $3}'); ping -c 5 -i 0.2 -W 1 $gw; sleep 600"]


def series(families, name: str) -> dict[tuple, float]:
    """{sorted label items: value} of one sample name."""
    return {tuple(sorted(s.labels.items())): s.value for family in families for s in family.samples if s.name == name}


def one(families, name: str, **labels) -> float:
    wanted = [v for k, v in series(families, name).items() if labels.items() <= dict(k).items()]
    assert len(wanted) == 1, (name, labels, series(families, name))
    return wanted[0]


def test_figures_parsers():
    assert cpu_times("cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4\n") == (160, 980)
    assert meminfo("MemTotal:       16 kB\nMemFree:  1 kB\nMemAvailable:   8 kB\n") == (16384, 8192)
    raw = {
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"op": "Read", "value": 5}, {"op": "Write", "value": 7}, {"op": "write", "value": 1},
                {"op": "Total", "value": 13},
            ]
        },
    }  # fmt: skip
    assert network_bytes(raw) == (11, 22) and block_bytes(raw) == (5, 8)
    assert network_bytes({}) == (0, 0) and block_bytes({"blkio_stats": {}}) == (0, 0)


def test_machine_reader_needs_a_baseline_and_says_what_proc_says(tmp_path):
    reader = MachineReader()
    assert reader.read(str(tmp_path)) is None  # the CPU baseline
    time.sleep(0.2)
    usage = reader.read(str(tmp_path))
    assert usage is not None and 0 <= usage.cpu_used_ratio <= 1
    total, _ = meminfo(Path("/proc/meminfo").read_text())
    assert usage.memory_total_bytes == total and 0 < usage.memory_available_bytes <= total
    assert usage.disk_total_bytes > 0 and 0 <= usage.disk_free_bytes <= usage.disk_total_bytes
    assert MachineReader(proc=str(tmp_path)).read(None) is None  # no /proc there: nothing, logged


@pytest.fixture
def bridge(docker_client):
    """A Docker bridge network of the test's own (the suite's dockerd has no default bridge)."""
    network = docker_client.networks.create(f"hm-metrics-{uuid.uuid4().hex[:6]}", driver="bridge")
    yield network.name
    network.remove()


def test_collectors_serve_what_the_agent_sampled(node, bridge, replicas):
    burner, _ = replicas(BURN, nano_cpus=500_000_000)
    pinger, pinging = replicas(PINGER, network=bridge)
    idle, idling = replicas(IDLE)
    agent = Agent(node_name=node.name, docker_host=settings.DOCKER_HOST, address="10.0.0.1", labels={})
    try:
        agent.sample()
        time.sleep(2.5)  # the pings are done by then
        assert agent.sample() == 3
    finally:
        agent.stop()
    families = registry.families()
    tenant, app = burner.tenant.slug, replicas.app.name
    for row in (burner, pinger, idle):
        stat, sample = ContainerStat.objects.get(container=row), UsageSample.objects.filter(container_name=row.name)
        labels = {"tenant": tenant, "app": app, "replica": str(row.replica), "node": node.name}
        # What /metrics says is the agent's last pass, the same figures as the history's newest row.
        assert one(families, "hivemind_container_cpu_millicores", **labels) == stat.cpu_millis
        assert stat.cpu_millis == sample.latest("at").cpu_millis
        assert one(families, "hivemind_container_memory_bytes", **labels) == stat.memory_bytes > 0
        assert one(families, "hivemind_container_running", **labels) == 1
        assert one(families, "hivemind_container_restarts_total", **labels) == 0
    assert one(families, "hivemind_container_cpu_millicores", replica=str(burner.replica)) > 200
    pinged = {"replica": str(pinger.replica)}
    assert "5 packets received" in pinging.logs().decode(), pinging.logs().decode()
    assert one(families, "hivemind_container_network_transmit_bytes_total", **pinged) >= 5 * 98
    assert one(families, "hivemind_container_network_receive_bytes_total", **pinged) >= 5 * 98
    # The machine, as the agent read it; capacity as Docker reported it at registration.
    machine = NodeStat.objects.get(node=node)
    assert one(families, "hivemind_node_ready", node=node.name) == 1
    assert one(families, "hivemind_node_memory_total_bytes", node=node.name) == machine.memory_total_bytes > 0
    assert 0 <= one(families, "hivemind_node_cpu_used_ratio", node=node.name) <= 1
    assert one(families, "hivemind_node_load1", node=node.name) == machine.load1
    assert one(families, "hivemind_node_disk_total_bytes", node=node.name) > 0
    assert one(families, "hivemind_node_containers", node=node.name, state="running") == 3
    assert one(families, "hivemind_app_replicas_desired", tenant=tenant, app=app) == 1
    assert one(families, "hivemind_app_replicas_running", tenant=tenant, app=app) == 3
    staff = APIClient()
    staff.force_authenticate(user=get_user_model().objects.create_user("metrics-staff", is_staff=True))
    assert promtool_check(staff.get("/metrics").content.decode()) == ""  # every series, as served
    # A container that died: not running, its CPU and memory series gone, its restarts kept.
    idling.kill()
    Container.objects.filter(pk=idle.pk).update(state=Container.State.EXITED, restarts=2)
    families = registry.families()
    gone = {"replica": str(idle.replica)}
    assert one(families, "hivemind_container_running", **gone) == 0
    assert one(families, "hivemind_container_restarts_total", **gone) == 2
    assert not [k for k in series(families, "hivemind_container_memory_bytes") if ("replica", str(idle.replica)) in k]
    assert one(families, "hivemind_app_replicas_running", tenant=tenant, app=app) == 2


@pytest.mark.django_db
def test_one_series_per_replica_the_newest_container(world, node):
    app, _ = make_app(world.a, "web")
    old = make_container(world.a, node, app=app, replica=0, state=Container.State.EXITED, restarts=4)
    new = make_container(world.a, node, app=app, replica=0, state=Container.State.RUNNING)
    make_container(world.a, node, app=app, replica=0, state=Container.State.REMOVED)  # history, not a replica
    families = registry.families()
    assert series(families, "hivemind_container_restarts_total") == {
        (("app", "web"), ("node", node.name), ("replica", "0"), ("tenant", world.a.slug)): 0
    }
    assert old.pk < new.pk


@pytest.mark.django_db
def test_failed_workflows_per_tenant_and_kind(world):
    for tenant, kind, state in (
        (world.a, "app.deploy", WorkflowState.FAILED),
        (world.a, "app.deploy", WorkflowState.FAILED),
        (world.a, "app.deploy", WorkflowState.SUCCEEDED),
        (world.b, "volume.create", WorkflowState.FAILED),
    ):
        Workflow.objects.create(tenant=tenant, kind=kind, state=state)
    found = series(registry.families(), "hivemind_workflows_failed_total")
    assert found == {
        (("kind", "app.deploy"), ("tenant", world.a.slug)): 2,
        (("kind", "volume.create"), ("tenant", world.b.slug)): 1,
    }


@pytest.mark.django_db
def test_a_tenant_sees_only_its_own_series(world, node):
    make_container(world.a, node, app=make_app(world.a, "web")[0], replica=0, state=Container.State.RUNNING)
    make_container(world.b, node, app=make_app(world.b, "db")[0], replica=0, state=Container.State.RUNNING)
    mine = registry.families(tenant=world.a.slug)
    assert {s.labels["tenant"] for family in mine for s in family.samples} == {world.a.slug}
    assert "hivemind_node_ready" not in {family.name for family in mine}  # the platform's, not a tenant's

    answer = world.client(Role.VIEWER.value).get("/api/v1/metrics/")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain")
    text = answer.content.decode()
    parsed = list(text_string_to_metric_families(text))
    tenants = {s.labels.get("tenant") for family in parsed for s in family.samples}
    assert tenants == {world.a.slug}
    assert one(parsed, "hivemind_app_replicas_running", app="web") == 1
    assert "tenant-b" not in text and "hivemind_node_" not in text
    assert promtool_check(text) == ""
    # Another tenant's is a 404; anonymous a 401; staff (who see every tenant) must name one.
    assert world.client(Role.OWNER.value).get("/api/v1/metrics/?tenant=tenant-b").status_code == 404
    assert APIClient().get("/api/v1/metrics/").status_code == 401
    staff = world.client("staff")
    refused = staff.get("/api/v1/metrics/")
    assert refused.status_code == 400 and "tenant" in refused.json()
    theirs = staff.get("/api/v1/metrics/?tenant=tenant-b").content.decode()
    assert 'app="db"' in theirs and 'app="web"' not in theirs


@pytest.mark.django_db
def test_a_service_account_token_reads_its_tenant(world):
    account = tenant_services.service_account_create(
        tenant=world.a, name="prometheus", role=Role.VIEWER, actor=world.users["owner"]
    )
    _, token = tenant_services.api_token_create(user=account.user, name="scrape")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/metrics/").status_code == 200
    assert client.get("/api/v1/metrics/?tenant=tenant-b").status_code == 404
    assert account.tenant == world.a


def test_a_failing_collector_does_not_blank_the_scrape(db, caplog):
    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    registry.register(Broken(), name="broken-test")
    try:
        names = {family.name for family in registry.families()}
    finally:
        registry.unregister("broken-test")
    assert "hivemind_node_ready" in names
    assert "metrics collector broken-test failed" in caplog.text


@pytest.mark.django_db
def test_render_writes_what_prometheus_client_writes_byte_for_byte(world, node):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Odd:  # values a collector never has, to check the escaping too
        def collect(self):
            gauge = GaugeMetricFamily("hivemind_test_odd", 'Help with \\ and\na "newline".', labels=["b", "a"])
            gauge.add_metric(['quote " back \\ nl \n', "x"], 1.5)
            gauge.add_metric(["big", "y"], 1e21)
            counter = CounterMetricFamily("hivemind_test_count", "A counter.", labels=["a"])
            counter.add_metric(["z"], 3)
            return [gauge, counter, GaugeMetricFamily("hivemind_test_empty", "No series.")]

    app, _ = make_app(world.a, "web")
    make_container(world.a, node, app=app, replica=0, state=Container.State.RUNNING)
    registry.register(Odd(), name="odd-test")
    try:
        found = registry.families()
    finally:
        registry.unregister("odd-test")

    class Fixed:
        def collect(self):
            return found

    reference = CollectorRegistry(auto_describe=False)
    reference.register(Fixed())
    assert registry.render(found) == generate_latest(reference)
    assert b'hivemind_test_odd{a="x",b="quote \\" back \\\\ nl \\n"} 1.5' in registry.render(found)


@pytest.mark.django_db
def test_metrics_serves_the_engines_series_to_staff_only(world, node):
    make_container(world.a, node, app=make_app(world.a, "web")[0], replica=0, state=Container.State.RUNNING)
    for who in (None, Role.OWNER.value, "outsider"):
        client = world.client(who) if who else APIClient()
        answer = client.get("/metrics")
        text = answer.content.decode()
        assert answer.status_code == 200 and "process_cpu_seconds_total" in text, who
        assert "hivemind_http_requests_total" in text, who  # the processes' own: routes as templates
        assert "hivemind_app_replicas" not in text and "tenant-a" not in text and "hivemind_node_" not in text, who
    staff = world.client("staff").get("/metrics").content.decode()
    assert 'hivemind_app_replicas_running{app="web",tenant="tenant-a"} 1.0' in staff
    assert "process_cpu_seconds_total" in staff and promtool_check(staff) == ""
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    refused = bad.get("/metrics")
    assert refused.status_code == 401 and "invalid token" in refused.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_container_deleted_while_a_sampling_pass_is_stored_fails_neither(world, node):
    """Two real connections. A replica stopped between Django's cascade and the container's own
    DELETE: the pass's row goes with the container (the foreign key cascades in PostgreSQL). A
    pass stored while the container's DELETE is not yet committed: it waits, then stores again
    without that container."""
    import threading

    import psycopg
    from django.db import connection

    from observability.services import ContainerUsage, usage_samples_record

    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"])
    table = Container._meta.db_table
    try:
        # 1. What apps.stop does, in two statements: the cascade (no stat yet), then the DELETE
        # after a pass stored the container's figures.
        gone = make_container(world.a, node, state=Container.State.RUNNING)
        other.execute("DELETE FROM observability_containerstat WHERE container_id = %s", [gone.pk])
        assert usage_samples_record(node_name=node.name, at=timezone.now(), usages=[ContainerUsage(gone.name, 5, 1)])
        other.execute(f"DELETE FROM {table} WHERE id = %s", [gone.pk])  # noqa: S608
        other.commit()  # was: IntegrityError, the stat still pointing at the container
        assert not ContainerStat.objects.filter(container_id=gone.pk).exists()

        # 2. The DELETE first, not yet committed; the pass's foreign key check waits on it.
        going, kept = (make_container(world.a, node, state=Container.State.RUNNING) for _ in range(2))
        other.execute(f"DELETE FROM {table} WHERE id = %s", [going.pk])  # noqa: S608
        stored = []
        usages = [ContainerUsage(going.name, 5, 1), ContainerUsage(kept.name, 7, 2)]

        def sample():
            try:
                stored.append(usage_samples_record(node_name=node.name, at=timezone.now(), usages=usages))
            finally:
                connection.close()  # this thread's own

        thread = threading.Thread(target=sample)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the pass did not wait for the DELETE"
        other.commit()
        thread.join(30)
        assert stored == [1]
        assert list(ContainerStat.objects.values_list("container_id", flat=True)) == [kept.pk]
    finally:
        other.close()
