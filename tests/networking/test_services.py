"""Service discovery and load balancing on three simulated nodes, through the whole platform:
names resolve inside the tenant (short and full, per replica) and nowhere else; an app's
virtual address spreads connections over its replicas on all three nodes, a replica calling
its own app is answered, and a replica that turns unhealthy stops getting connections."""

from __future__ import annotations

import re
import time

from hivemind.applications import services as app_services
from hivemind.applications.models import App
from networking.models import Address, ServiceAddress
from tests.applications.test_multinode import finished
from tests.conftest import wait_for

SERVE = "mkdir -p /www; hostname > /www/index.html; touch /www/ok; exec httpd -f -p 8080 -h /www"
WEB = {
    "image": "hivemind/busybox:latest",
    "command": ["sh", "-c", SERVE],
    "resources": {"cpu": "100m", "memory": "16Mi"},
    "ports": [{"container_port": 8080, "name": "http"}],
    "health": {"type": "cmd", "command": ["test", "-f", "/www/ok"], "interval": 0.5, "timeout": 1, "retries": 2},
}
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 8080 | tail -n 1"


def container(cluster, row):
    client = next(node.client for node in cluster.nodes if node.name == row.node.name)
    return client.containers.get(row.name)


def run(cluster, row, script: str) -> str:
    result = container(cluster, row).exec_run(["sh", "-c", script])
    return result.output.decode(errors="replace")


def lookup(cluster, row, name: str, record: str = "") -> tuple[bool, set[str]]:
    """busybox nslookup through the container's resolver: (found, addresses answered)."""
    out = run(cluster, row, f"nslookup {'-type=' + record + ' ' if record else ''}{name}")
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    found = set(re.findall(r"Address:\s*(\S+)", answers))
    return bool(found) and "NXDOMAIN" not in out, found


def spread(cluster, row, address: str, count: int) -> list[str]:
    script = f"for i in $(seq {count}); do {GET.format(address=address)}; done"
    return [line.strip() for line in run(cluster, row, script).splitlines() if line.strip()]


def test_names_and_the_virtual_address_across_three_nodes(platform3v4, world):
    cluster, _agents = platform3v4
    staff = world.users["staff"]
    web = app_services.app_deploy(tenant=world.a, name="web", spec=WEB, replicas=3, actor=staff)
    stranger = app_services.app_deploy(tenant=world.b, name="stranger", spec=WEB, replicas=1, actor=staff)
    finished(web.workflow)
    finished(stranger.workflow)
    vip = ServiceAddress.objects.get(app=web)
    rows = list(web.containers.select_related("node").order_by("replica"))
    assert len({row.node_id for row in rows}) == 3
    caller = rows[0]
    tenant = world.a.slug

    # Names: the app's (its virtual addresses), short within the tenant, and each replica's own.
    # (Nodes refresh DNS every second: the rollout has just recorded the caller's addresses.)
    vips = (True, {vip.ipv4, vip.ipv6})
    wait_for(lambda: lookup(cluster, caller, f"web.{tenant}.hivemind") == vips, 5, "the app's name in DNS")
    assert lookup(cluster, caller, "web") == (True, {vip.ipv4, vip.ipv6})
    replica = Address.objects.get(container=rows[2])
    name = f"web-{rows[2].replica}.web.{tenant}.hivemind"
    # A replica is named once its node's DNS has refreshed after the rollout recorded its addresses.
    wait_for(lambda: lookup(cluster, caller, name) == (True, {replica.ipv4, replica.ipv6}), 5, f"{name} in DNS")
    # By name across nodes: the caller (node 1) reaches the third replica (node 3) by its name.
    assert run(cluster, caller, GET.format(address=name)).strip() == f"web-{rows[2].replica}"
    # Another tenant does not find them, nor by the short name.
    outsider = stranger.containers.select_related("node").get()
    wait_for(lambda: lookup(cluster, outsider, f"stranger.{world.b.slug}.hivemind")[0], 5, "the stranger's own name")
    assert lookup(cluster, outsider, f"web.{tenant}.hivemind")[0] is False
    assert lookup(cluster, outsider, "web")[0] is False

    # The virtual address spreads 100 connections over the three replicas, on all three nodes;
    # the caller is one of them (a replica calling its own app is answered).
    for address in (vip.ipv4, vip.ipv6):
        answers = spread(cluster, caller, address, 100)
        assert len(answers) == 100, answers[-5:]
        hosts = {f"web-{row.replica}" for row in rows}
        counts = {host: answers.count(host) for host in hosts}
        assert set(answers) == hosts and min(counts.values()) > 0, counts

    # The figures reach /metrics: traffic per network and node, DNS queries, backends per app.
    def metric(pattern: str) -> float:
        text = world.client("staff").get("/metrics").content.decode()  # the engine's series: staff's
        found = re.findall(rf"^{pattern} (\S+)$", text, re.MULTILINE)
        return sum(float(value) for value in found)

    caller_node = caller.node.name
    labels = f'hivemind_network_bytes_total{{direction="in",network="default",node="{caller_node}",tenant="{tenant}"}}'
    wait_for(lambda: metric(re.escape(labels)) > 0, 20, "the caller's node to report its traffic")
    wait_for(lambda: metric(rf'hivemind_dns_queries_total\{{node="{caller_node}"\}}') > 0, 20, "DNS queries")
    assert metric(rf'hivemind_service_backends\{{app="web",tenant="{tenant}"\}}') == 3

    # A replica that turns unhealthy stops getting connections.
    sick = rows[1]
    container(cluster, sick).exec_run(["rm", "/www/ok"])
    wait_for(
        lambda: (
            container(cluster, sick).attrs["State"].get("Health", {}).get("Status") == "unhealthy"
            or (container(cluster, sick).reload() or False)
        ),
        30,
        "Docker to see the replica unhealthy",
    )
    since = time.monotonic()
    wait_for(lambda: f"web-{sick.replica}" not in spread(cluster, caller, vip.ipv4, 12), 15, "the VIP to drop it")
    out_after = time.monotonic() - since
    # Docker's health event wakes the replica's node, whose announcement wakes every node: about
    # one refresh pass (bench/healthy_to_served.py); the bound leaves room for a loaded CI machine.
    print(f"out of the virtual address {out_after:.2f} s after Docker saw it unhealthy")
    assert out_after < 5, f"still served {out_after:.1f} s after Docker saw it unhealthy"
    assert App.objects.filter(pk=web.pk).exists()
