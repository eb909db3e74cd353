"""Apps on a real Docker daemon, driven by real worker processes (control + this node's agent)."""

from __future__ import annotations

from django.conf import settings

from hivemind.applications import services
from hivemind.applications.models import App, Container
from hivemind.nodes.models import Node
from hivemind.workflows.models import Workflow, WorkflowState
from networking import nft, rules
from networking.models import Address, Network
from networking.node import NodeNetworking, record_addresses
from tenants.models import TenantUsage
from tests.applications.conftest import HealthyProbe, docker_replicas, finished, healthy_replicas, spec


def test_deploy_scale_and_delete_on_docker(platform_processes, world, node, docker_client):
    platform_processes("worker")
    staff = world.users["staff"]
    app = services.app_deploy(tenant=world.a, name="web", spec=spec(), replicas=2, actor=staff)
    workflow = finished(app.workflow)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    app.refresh_from_db()
    assert app.status == App.Status.RUNNING
    running = docker_replicas(docker_client, app)
    assert len(running) == 2 and {c.status for c in running} == {"running"}
    rows = list(app.containers.order_by("replica"))
    assert [(r.replica, r.state, r.health) for r in rows] == [(0, "running", "healthy"), (1, "running", "healthy")]
    assert {c.attrs["State"]["Health"]["Status"] for c in running} == {"healthy"}
    network = running[0].attrs["NetworkSettings"]["Networks"]
    default = Network.objects.get(tenant=world.a, is_default=True)
    assert list(network) == [f"hm-net-{default.pk}"]
    assert {a.container_id: a.network_id for a in Address.objects.all()} == {r.pk: default.pk for r in rows}
    # The addresses are Docker's (from its listing, not an inspect each); recording them again,
    # as a retried step does, changes no row and adds none.
    endpoints = {c.name: c.attrs["NetworkSettings"]["Networks"] for c in running}
    ours = [e[f"hm-net-{default.pk}"] for e in endpoints.values()]
    given = {(endpoint["IPAddress"], endpoint["GlobalIPv6Address"]) for endpoint in ours}
    recorded = lambda: sorted(Address.objects.values_list("container_id", "ipv4", "ipv6"))  # noqa: E731
    before = recorded()
    assert {(ipv4, ipv6) for _, ipv4, ipv6 in before} == given and all(ipv4 and ipv6 for ipv4, ipv6 in given)
    record_addresses(rows, Node.objects.get(name=settings.NODE_NAME), endpoints)
    assert recorded() == before

    assert finished(services.app_scale(app=app, replicas=3, actor=staff)).state == WorkflowState.SUCCEEDED
    assert len(docker_replicas(docker_client, app)) == 3
    assert finished(services.app_scale(app=app, replicas=1, actor=staff)).state == WorkflowState.SUCCEEDED
    assert [c.replica for c in app.containers.all()] == [0]
    assert len(docker_replicas(docker_client, app)) == 1
    assert TenantUsage.objects.get(tenant=world.a).containers == 1

    assert finished(services.app_delete(app=app, actor=staff)).state == WorkflowState.SUCCEEDED
    assert not App.objects.filter(pk=app.pk).exists()
    assert docker_replicas(docker_client, app) == []
    usage = TenantUsage.objects.get(tenant=world.a)
    assert (usage.apps, usage.containers, usage.cpu_millis) == (0, 0, 0)


def test_a_deploy_that_cannot_be_placed_fails_with_the_reason_and_leaves_nothing(
    platform_processes, world, node, docker_client
):
    platform_processes("worker")
    app = services.app_deploy(
        tenant=world.a,
        name="picky",
        spec=spec(placement={"node_selector": {"disk": "nvme"}}),
        replicas=2,
        actor=world.users["staff"],
    )
    workflow = finished(app.workflow)
    assert workflow.state == WorkflowState.FAILED
    assert "cannot place 2 of 2 new replica(s) of picky: 0/1 nodes available" in workflow.error
    assert "node selector" in workflow.error
    app.refresh_from_db()
    assert app.status == App.Status.FAILED and "0/1 nodes available" in app.message
    assert not Container.objects.filter(app=app).exists()
    assert docker_replicas(docker_client, app) == []
    usage = TenantUsage.objects.get(tenant=world.a)
    assert (usage.apps, usage.containers, usage.cpu_millis) == (0, 0, 0)


def test_tenants_cannot_reach_each_other(platform_processes, world, node, docker_client):
    """Over IPv4 and IPv6: the same tenant's replicas reach each other, another tenant's do not;
    the isolation is Hivemind's nftables table and nothing else (without it the stranger gets
    through), and a reconcile pass of the node puts it back."""
    platform_processes("worker")
    staff = world.users["staff"]
    server = services.app_deploy(tenant=world.a, name="server", spec=spec(), replicas=1, actor=staff)
    neighbour = services.app_deploy(tenant=world.a, name="neighbour", spec=spec(), replicas=1, actor=staff)
    stranger = services.app_deploy(tenant=world.b, name="stranger", spec=spec(), replicas=1, actor=staff)
    for app in (server, neighbour, stranger):
        assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error
    target = Address.objects.get(container__app=server)
    assert target.ipv4 and target.ipv6 and target.network.is_default

    def reaches(app: App, address: str) -> bool:
        client = docker_replicas(docker_client, app)[0]
        return client.exec_run(["nc", "-w", "3", address, "8080"], stdin=False).exit_code == 0

    for address in (target.ipv4, target.ipv6):
        assert reaches(neighbour, address), f"same tenant cannot reach {address}"
        assert not reaches(stranger, address), f"another tenant reached {address}"
    netns = settings.CONFIG.node_netns
    nft.remove(netns=netns)
    rules.forget(node.name)
    assert reaches(stranger, target.ipv4) and reaches(stranger, target.ipv6)
    NodeNetworking(node=Node.objects.get(pk=node.pk), client=docker_client).reconcile()
    assert not reaches(stranger, target.ipv4) and not reaches(stranger, target.ipv6)


def test_rolling_update_keeps_enough_replicas_healthy_and_rollback_restores(
    platform_processes, world, node, docker_client
):
    platform_processes("worker", concurrency=4)
    staff = world.users["staff"]
    first = spec(env={"VERSION": "1"}, update={"max_surge": 1, "max_unavailable": 1})
    app = services.app_deploy(tenant=world.a, name="rolling", spec=first, replicas=3, actor=staff)
    assert finished(app.workflow).state == WorkflowState.SUCCEEDED, app.workflow.error
    assert healthy_replicas(docker_client, app) == 3

    with HealthyProbe(docker_client, app) as probe:
        second = {**first, "env": {"VERSION": "2"}}
        workflow = finished(services.app_update(app=app, spec=second, actor=staff), 180)
    assert workflow.state == WorkflowState.SUCCEEDED, workflow.error
    assert probe.lowest >= 3 - 1, f"only {probe.lowest} healthy replicas during the update (max_unavailable 1)"
    replicas = docker_replicas(docker_client, app)
    assert len(replicas) == 3
    assert {c.labels["io.hivemind.revision"] for c in replicas} == {"2"}
    assert {"VERSION=2" in c.attrs["Config"]["Env"] for c in replicas} == {True}

    rolled = finished(services.app_rollback(app=app, actor=staff), 180)
    assert rolled.state == WorkflowState.SUCCEEDED, rolled.error
    app.refresh_from_db()
    assert app.revision.number == 1 and app.status == App.Status.RUNNING
    replicas = docker_replicas(docker_client, app)
    assert {c.labels["io.hivemind.revision"] for c in replicas} == {"1"} and len(replicas) == 3


def test_fifty_concurrent_deploys_against_room_for_ten(platform_processes, world, node, docker_client, web_server):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tenants import services as tenant_services

    tenant_services.quota_set(tenant=world.a, limits={"containers": 10}, actor=world.users["staff"])
    _, token = tenant_services.api_token_create(user=world.users["operator"], name="race")
    platform_processes("worker", concurrency=4)
    start = threading.Barrier(50)

    def deploy(number: int) -> requests.Response:
        start.wait(timeout=30)
        return requests.post(
            f"{web_server}/api/v1/apps/",
            json={"tenant": world.a.slug, "name": f"race-{number}", "spec": spec(health=None), "replicas": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(deploy, range(50)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] * 10 + [409] * 40, codes
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"quota_exceeded"}
    for app in App.objects.filter(tenant=world.a):
        workflow = Workflow.objects.get(subject=f"app:{app.pk}")
        assert finished(workflow, 120).state == WorkflowState.SUCCEEDED, workflow.error
    replicas = docker_client.containers.list(filters={"label": f"io.hivemind.tenant={world.a.pk}"})
    assert len(replicas) == 10
    assert TenantUsage.objects.get(tenant=world.a).containers == 10
