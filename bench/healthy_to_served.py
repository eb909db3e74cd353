"""From a replica turning healthy to its being in DNS and behind its app's virtual address, on
its own node and on another node.

The path (networking/node.py `NodeServices`, run by each node's agent): Docker's event stream
on the replica's node says its health changed; that node's services loop wakes, lists its
replicas' health (`watch_health`), writes what changed and announces it on Redis
(networking/discovery.py); every node's listener wakes its own loop, which reads the apps'
healthy replicas from the database (`discovery.read()`), swaps the new directory into its DNS
server, and loads the virtual addresses' new backends into its nftables table in place (a few
lines: networking/rules.py, nft.update_script). Without news a loop still passes every second.

Setup: a fresh PostgreSQL database next to the configured one (`<name>_served`, dropped at the
end); two simulated nodes (tests/netsim.py: a network namespace each with a private dockerd;
nothing in the host's namespace is touched): `bench-served`, the replica's node, and
`bench-other`, each with its nftables table and its DNS server (169.254.20.53:53 on its
loopback, as the agent puts it) and its services loop in a thread of this process, as the
agent runs it; BENCH_SIZES apps (10, 100, 1000; 3 replicas each, running and healthy, v4 + v6
addresses, one named port, a virtual address each) over 10 tenants, each with a network
(/20 + /64) that both nodes hold. The replica's node's dockerd runs 10 of the replicas for
real, one of them, `t0-app-0000-0`, with a health check that passes while /healthy exists
(every 0.7 s, 1 retry).

Measured, per size, BENCH_ROUNDS (3) rounds, medians (end to end: BENCH_E2E_ROUNDS (6),
median and max):

- refresh, changed: a replica's health flipped in the database (one without a real
  container), then `NodeServices.refresh()`: the pass that takes a change to a node;
- refresh, unchanged: `refresh()` with nothing changed: what every node does every second;
- its parts: `watch_health()`, `discovery.read()`, `DnsServer.update()`, `rules.compile_for()`
  (the node's networks and policies from the database, the table compiled) and
  `rules.apply_node_rules()` on a change (compiled, loaded in place); the counters' report
  (every 5 s, a thread of its own that runs meanwhile, as on a node) is timed apart;
- end to end, with both loops running: /healthy created (removed) in `t0-app-0000-0`, then
  from Docker's `health_status: healthy` (`unhealthy`) event to the first DNS answer with
  (without) the replica's address from each node's server (a query every 10 ms from an address
  of the tenant's), and to the end of the pass that served it there (its virtual address's
  backends loaded).

Environment: BENCH_SIZES (10,100,1000), BENCH_ROUNDS (3), BENCH_E2E_ROUNDS (6).
Needs root, dockerd, nsenter, nft.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt, fresh_database  # noqa: E402 - after the path is set

SIZES = [int(size) for size in os.environ.get("BENCH_SIZES", "10,100,1000").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
E2E_ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", "6"))
TENANTS = 10
REPLICAS = 3
REAL = 10  # replicas the node's dockerd really runs
NODE = "bench-served"
OTHER = "bench-other"
NODE_DNS = "169.254.20.53"  # HIVEMIND_DNS_ADDRESS's default
INTERVAL = 1.0  # NodeServices' loop: a pass, then this wait unless news wakes it
TARGET = "t0-app-0000-0"  # the replica whose health the end-to-end rounds turn
TARGET_NAME = "app-0000-0.app-0000.t0.hivemind."
# The DNS prober asks from an address of tenant t0's (a row of its own, an exited replica's) outside
# every network's prefix: a query sent from this node's own stack with a container subnet's source
# address would leave through the node's masquerade rule, which a real container's query to the
# node's address never passes (it is delivered locally, not routed out).
PROBE_ADDRESS = "10.199.0.3"
IMAGE = "hivemind/busybox:latest"


class Fleet:
    """The tenants, their networks, this node and its slots; add() grows the apps to a size."""

    def __init__(self) -> None:
        from hivemind.nodes.models import Node
        from networking import ipam
        from networking.services import network_create
        from tenants.models import TenantQuota
        from tenants.services import tenant_create

        self.node, self.other = (
            Node.objects.create(
                name=name, address=address, cpu_millis=64000, memory_bytes=256 * 2**30, status=Node.Status.READY
            )
            for name, address in ((NODE, "10.241.0.11"), (OTHER, "10.241.0.12"))
        )
        self.tenants = [tenant_create(name=f"T{t}", slug=f"t{t}", created_by=None) for t in range(TENANTS)]
        TenantQuota.objects.filter(tenant__in=self.tenants).update(apps=None, containers=None, networks=None)
        self.networks = [network_create(tenant=t, name="net", actor=None, prefix4=20) for t in self.tenants]
        self.hosts = []
        for network in self.networks:
            row = ipam.node_range(network, self.node)
            ipam.node_range(network, self.other)  # the other node holds the networks too: it has the table
            hosts4 = ipaddress.ip_network(row.range4).hosts()
            next(hosts4)  # the node's gateway
            base6 = int(ipaddress.ip_network(row.range6).network_address) + 2
            self.hosts.append((hosts4, base6, 0))
        self.apps = 0

    def add(self, upto: int) -> None:
        from hivemind.applications.models import App, AppRevision, Container
        from networking.models import Address, ServiceAddress

        spec = {
            "image": "hivemind/busybox:latest",
            "ports": [{"name": "http", "protocol": "tcp", "container_port": 80}],
        }
        new = range(self.apps, upto)
        apps = App.objects.bulk_create(
            [App(tenant=self.tenants[i % TENANTS], name=f"app-{i:04d}", status=App.Status.RUNNING) for i in new]
        )
        revisions = AppRevision.objects.bulk_create([AppRevision(app=app, number=1, spec=spec) for app in apps])
        for app, revision in zip(apps, revisions, strict=True):
            app.revision = revision
        App.objects.bulk_update(apps, ["revision"])
        containers = Container.objects.bulk_create(
            [
                Container(
                    tenant=app.tenant,
                    app=app,
                    revision=app.revision,
                    replica=r,
                    node=self.node,
                    name=f"{app.tenant.slug}-{app.name}-{r}",
                    state=Container.State.RUNNING,
                    health=Container.Health.HEALTHY,
                )
                for app in apps
                for r in range(REPLICAS)
            ]
        )
        addresses = []
        for container in containers:
            t = self.tenants.index(container.tenant)
            hosts4, base6, used = self.hosts[t]
            self.hosts[t] = (hosts4, base6, used + 1)
            addresses.append(
                Address(
                    network=self.networks[t],
                    container=container,
                    node=self.node,
                    ipv4=str(next(hosts4)),
                    ipv6=str(ipaddress.IPv6Address(base6 + used)),
                )
            )
        Address.objects.bulk_create(addresses)
        ServiceAddress.objects.bulk_create(
            [
                ServiceAddress(app=app, ipv4=str(ipaddress.IPv4Address("10.96.0.1") + i), ipv6=f"fd00:96::{i + 1:x}")
                for app, i in zip(apps, new, strict=True)
            ]
        )
        self.apps = upto

    def probe_row(self) -> None:
        """The DNS prober's address, as an exited replica of app-0000 (tenant t0): a known client."""
        from hivemind.applications.models import App, Container
        from networking.models import Address

        app = App.objects.get(tenant=self.tenants[0], name="app-0000")
        row = Container.objects.create(
            tenant=app.tenant, app=app, revision=app.revision, replica=99, node=self.node, name="t0-probe",
            state=Container.State.EXITED,
        )  # fmt: skip
        Address.objects.create(network=self.networks[0], container=row, node=self.node, ipv4=PROBE_ADDRESS)

    def flip(self) -> None:
        """One replica's health, healthy <-> unhealthy, as a report would write it."""
        from hivemind.applications.models import Container

        running = Container.objects.filter(node=self.node, state=Container.State.RUNNING)
        container = running.order_by("-pk").first()  # one without a real container
        healthy = container.health == Container.Health.HEALTHY
        container.health = Container.Health.UNHEALTHY if healthy else Container.Health.HEALTHY
        container.save(update_fields=["health"])


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def measure(fleet: Fleet, services, netns: str) -> dict[str, list[float]]:
    """The refresh and its parts, ROUNDS times (no loop running meanwhile)."""
    from networking import discovery, rules
    from networking.node import NodeNetworking

    parts = ("changed", "unchanged", "health", "read", "dns", "compile", "rules", "report")
    figures: dict[str, list[float]] = {key: [] for key in parts}
    networking = NodeNetworking(node=fleet.node, client=None, netns=netns)
    for _ in range(ROUNDS):
        fleet.flip()
        figures["changed"].append(timed(services.refresh))
        figures["unchanged"].append(timed(services.refresh))
        fleet.flip()  # the parts, on a change again
        figures["health"].append(timed(services.watch_health))
        started = time.perf_counter()
        found = discovery.read()
        figures["read"].append((time.perf_counter() - started) * 1000)
        directory, lb = found.directory, found.services
        figures["dns"].append(timed(lambda: services.server.update(directory)))  # noqa: B023 - called at once
        figures["compile"].append(timed(lambda: rules.compile_for(fleet.node, lb)))  # noqa: B023
        figures["rules"].append(timed(lambda: rules.apply_node_rules(networking, services=lb)))  # noqa: B023
        figures["report"].append(timed(lambda: services.report(fleet.node)))
        services._directory = found.directory  # what the server answers now, as refresh() would have noted
    return figures


class Loop:
    """A node's services loop as the agent runs it (networking/node.py NodeServices, the agent's
    `_loop`: wait until woken or INTERVAL, clear, a pass); notes when each pass ended."""

    def __init__(self, services) -> None:
        self.services = services
        self.ends: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stop.is_set():
                self.services.refresh()
                self.ends.append(time.time())
                self.services.wake.wait(INTERVAL)
                self.services.wake.clear()
        finally:
            connection.close()

    def pass_end_after(self, moment: float, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [end for end in self.ends if end >= moment]
            if later:
                return later[0]
            time.sleep(0.005)
        raise SystemExit("no refresh pass ended")

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.services.wake.set()
        self.thread.join(timeout=60)


class Probe:
    """DNS queries for the target replica's A record, from inside the node's namespace."""

    def __init__(self, netns: str, source: str, expected: str) -> None:
        import socket

        from dnslib import DNSRecord

        from networking.dns import in_netns

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.connect((NODE_DNS, 53))
            sock.settimeout(0.5)
            return sock

        self.sock = in_netns(netns, make)
        self.query = DNSRecord.question(TARGET_NAME, "A")
        self.expected = expected

    def serves(self) -> bool:
        from dnslib import DNSRecord

        self.sock.send(self.query.pack())
        try:
            reply = DNSRecord.parse(self.sock.recv(4096))
        except TimeoutError:
            return False
        return any(str(rr.rdata) == self.expected for rr in reply.rr)


def answered_all(probes: dict, served: bool, timeout: float = 30) -> dict[str, float]:
    """When each probe's server first answered as `served` (all polled every 10 ms)."""
    deadline, seen = time.monotonic() + timeout, {}
    while len(seen) < len(probes):
        if time.monotonic() > deadline:
            raise SystemExit(f"{TARGET_NAME} still {'not ' if served else ''}answered after {timeout} s on {probes}")
        for where, probe in probes.items():
            if where not in seen and probe.serves() == served:
                seen[where] = time.time()
        time.sleep(0.01)
    return seen


def end_to_end(nodes: dict, container, events: queue.Queue) -> dict[str, list[float]]:
    """E2E_ROUNDS times: the replica turned unhealthy, then healthy; seconds from Docker's event
    to each node's DNS answer and to the end of the pass that served it there.
    `nodes`: {"own" | "other": (NodeServices, Probe)}."""
    figures: dict[str, list[float]] = {
        f"{where}_{step}_{what}": [] for where in nodes for step in ("up", "down") for what in ("dns", "vip")
    }
    jitter = random.Random(13)
    loops = {where: Loop(services) for where, (services, _probe) in nodes.items()}
    for loop in loops.values():
        loop.__enter__()
    try:
        for _ in range(E2E_ROUNDS):
            for step, command, status, served in (
                ("down", "rm -f /healthy", "unhealthy", False),
                ("up", "touch /healthy", "healthy", True),
            ):
                time.sleep(jitter.uniform(0, INTERVAL + 0.5))  # no lockstep with the loops or the health checks
                container.exec_run(["sh", "-c", command])
                while True:
                    action, moment = events.get(timeout=60)
                    if action == f"health_status: {status}":
                        break
                answers = answered_all({where: probe for where, (_services, probe) in nodes.items()}, served)
                for where, answered in answers.items():
                    applied = loops[where].pass_end_after(answered)
                    figures[f"{where}_{step}_dns"].append(answered - moment)
                    figures[f"{where}_{step}_vip"].append(applied - moment)
    finally:
        for loop in loops.values():
            loop.__exit__()
    return figures


def _drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.strip("/")}"')


def _real_containers(node, fleet: Fleet):
    """The first REAL replicas run for real on the node's dockerd (managed label, the rows' names);
    TARGET with its health check. Returns TARGET's container."""
    from hivemind.applications.models import LABEL_MANAGED, Container

    names = Container.objects.filter(node=fleet.node).order_by("pk").values_list("name", flat=True)[:REAL]
    for name in names:
        health = None
        if name == TARGET:
            # Every 0.7 s: a period of its own, so that where a change lands in the loop's 1 s wait varies.
            every, second = 700_000_000, 1_000_000_000
            health = {"test": ["CMD", "test", "-f", "/healthy"], "interval": every, "timeout": second, "retries": 1}
        node.client.containers.run(
            IMAGE, "sleep 3600", name=name, labels={LABEL_MANAGED: "true"}, network_mode="none", init=True,
            healthcheck=health, detach=True,
        )  # fmt: skip
    target = node.client.containers.get(TARGET)
    target.exec_run(["touch", "/healthy"])
    return target


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("healthy_to_served.py needs root (a network namespace and a dockerd of its own)")
    url = fresh_database("served", "bench/healthy_to_served.py")
    os.environ["HIVEMIND_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections
    from pyroute2 import IPRoute

    from networking import nft
    from networking.models import Address
    from networking.node import NodeServices
    from tests.netsim import SimCluster

    cluster, running, stream = SimCluster(2), [], None
    try:
        own, other = cluster.start().nodes
        call_command("migrate", verbosity=0)
        fleet = Fleet()
        nodes = {}
        for where, name, sim in (("own", NODE, own), ("other", OTHER, other)):
            services = NodeServices(
                node_name=name, netns=sim.netns, address=NODE_DNS, port=53, docker_host=sim.docker_host
            )
            services.start()
            running.append(services)
            nodes[where] = services
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {ROUNDS} rounds per size, medians")
        rows = []
        for size in SIZES:
            fleet.add(size)
            if stream is None:  # the real containers, once the rows exist
                settings.DOCKER_HOST = own.docker_host
                target = _real_containers(own, fleet)
                fleet.probe_row()
                expected = Address.objects.get(container__name=TARGET).ipv4
                probes = {}
                for where, sim in (("own", own), ("other", other)):
                    with IPRoute(netns=sim.netns, flags=0) as ipr:
                        ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=PROBE_ADDRESS, prefixlen=32)
                    probes[where] = Probe(sim.netns, PROBE_ADDRESS, expected)
                events: queue.Queue = queue.Queue()
                stream = own.client.events(decode=True, filters={"type": "container", "container": target.id})

                def pump(stream=stream, events=events) -> None:
                    for event in stream:
                        events.put((event.get("Action", ""), event["timeNano"] / 1e9))

                threading.Thread(target=pump, daemon=True).start()
            for services in running:  # warm: the first pass applies the whole table and fills the directory
                services.refresh()
            figures = measure(fleet, nodes["own"], own.netns)
            nodes["other"].refresh()  # what measure() changed, before the loops start
            figures.update(end_to_end({w: (nodes[w], probes[w]) for w in nodes}, target, events))
            median = {key: statistics.median(values) for key, values in figures.items()}
            median.update({f"{key}_max": max(values) for key, values in figures.items()})
            rows.append((size, median))
            lines = nft.listing(table="hivemind", netns=own.netns).count("\n")
            print(
                f"{size} apps ({size * REPLICAS} replicas, table {lines} lines): refresh changed "
                f"[{fmt(figures['changed'])}] unchanged [{fmt(figures['unchanged'])}] ms; healthy -> DNS, other "
                f"node [{fmt(figures['other_up_dns'])}] -> VIP [{fmt(figures['other_up_vip'])}] s",
                flush=True,
            )
        print("one refresh, ms (changed: a replica's health flipped in the database; unchanged: nothing changed):")
        columns = ("changed", "unchanged", "health", "read", "dns", "compile", "rules", "report")
        print(f"{'apps':>5} " + " ".join(f"{c:>9}" for c in columns))
        for size, m in rows:
            print(f"{size:>5} " + " ".join(f"{m[c]:>9.1f}" for c in columns))
        print(f"end to end, s from Docker's health event, median (max) of {E2E_ROUNDS}:")
        heads = ("healthy->DNS", "healthy->VIP", "unhealthy->out of DNS", "->out of VIP")
        print(f"{'apps':>5} {'node':>6} " + " ".join(f"{h:>22}" for h in heads))
        for size, m in rows:
            for where in ("own", "other"):
                keys = [f"{where}_{k}" for k in ("up_dns", "up_vip", "down_dns", "down_vip")]
                cells = [f"{m[k]:.2f} ({m[k + '_max']:.2f})" for k in keys]
                print(f"{size:>5} {where:>6} " + " ".join(f"{c:>22}" for c in cells))
        for size, m in rows:
            idle = m["unchanged"] / (INTERVAL * 1000 + m["unchanged"]) * 100
            print(f"  {size:>5} apps: a pass with nothing changed every second takes {idle:.0f} % of a core per node")
    finally:
        if stream is not None:
            stream.close()
        for services in running:
            services.stop()
        cluster.stop()
        connections.close_all()
        _drop(url)
        for name in (NODE, OTHER):
            (settings.VAR_DIR / "run" / f"network-{name}.lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
