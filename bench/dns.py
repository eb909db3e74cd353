"""The node DNS server under N concurrent UDP clients: queries per second, p50 and p99.

Starts `networking.dns.DnsServer` on 127.0.0.1 (a free port) in this process, as the agent
runs it, with a directory of BENCH_TENANTS x BENCH_APPS apps (3 replicas each, v4 and v6,
one named port) in which 127.0.0.1 is a container of the first tenant. The clients run in
another process (spawned, so they never share this one's interpreter lock), each client a
UDP socket in a closed loop: send, wait for the answer, send the next; one epoll loop drives
them all. Phases, each BENCH_SECONDS long:

- cached:   A queries of the tenant's apps, names in turn (answers come from the packed cache);
- uncached: the same names, each query in a letter case not used before (0x20), so every
            query is parsed, looked up and packed afresh: the cost of a first query after an update.

- paced:    uncached queries again, but open loop at BENCH_RATE (2,000) queries per second, the
            issue's target rate, spread over the same clients: the latency a first query
            after an update sees when the server is asked that often (the closed loops above
            measure it at saturation, where every answer waits behind the others).

Prints, per phase: qps, p50, p99 and the queries lost (no answer within 1 s); then how long
`update()` took to compile the directory (the interpreter lock is held meanwhile).

To measure another server with the same clients (e.g. Docker's embedded DNS, from inside a
container's namespace: `nsenter --net=/proc/<pid>/ns/net .venv/bin/python bench/dns.py`):
BENCH_DNS_TARGET=127.0.0.11:53 BENCH_DNS_NAME=<a name it knows> (no server is started then).

Then, side by side with Docker's embedded DNS (as root; BENCH_DNS_DOCKER=0 skips it): one
simulated node (tests/netsim.py: a network namespace of its own with a private dockerd; the
host's namespace is not touched), a user-defined bridge network with two busybox containers,
`web` and `client`, and Hivemind's server in the node's namespace on 169.254.20.53:53 (the
default HIVEMIND_DNS_ADDRESS, on the node's loopback, as the agent puts it) with the same
directory, in which `client`'s address belongs to the first tenant. The same clients, run in
`client`'s network namespace (nsenter, this script with BENCH_DNS_TARGET), ask each server in
turn, BENCH_ROUNDS (3) alternating rounds of both phases, medians:

- Docker:   127.0.0.11:53 for `web` (dockerd answers inside the container's namespace);
- Hivemind: 169.254.20.53:53 for app-000.tenant-000.hivemind. (across the bridge to the node).

Environment: BENCH_CLIENTS (20), BENCH_RATE (2000), BENCH_SECONDS (5), BENCH_TENANTS (100), BENCH_APPS (100),
BENCH_DNS_TARGET, BENCH_DNS_NAME, BENCH_DNS_DOCKER (1), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "20"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
TENANTS = int(os.environ.get("BENCH_TENANTS", "100"))
APPS = int(os.environ.get("BENCH_APPS", "100"))
TARGET = os.environ.get("BENCH_DNS_TARGET", "")
TARGET_NAME = os.environ.get("BENCH_DNS_NAME", "")
DOCKER = os.environ.get("BENCH_DNS_DOCKER", "1") != "0"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LOST_AFTER = 1.0  # seconds without an answer: the query counts as lost and the client goes on
NODE_DNS = "169.254.20.53"  # HIVEMIND_DNS_ADDRESS's default
PHASE_LINE = re.compile(r"^(\w+)\s+clients=\d+ answered=\d+ qps=\s*(\d+)\s+p50=\s*([\d.]+) ms\s+p99=\s*([\d.]+) ms")


def _directory():
    from networking.dns import Directory, app_records

    records: dict[str, dict] = {}
    for t in range(TENANTS):
        tenant = f"tenant-{t:03d}"
        view = records.setdefault(tenant, {})
        for a in range(APPS):
            n = t * APPS + a
            replicas = [(f"r{r}", f"10.{n >> 8 & 255}.{n & 255}.{10 + r}", f"fd00:{n:x}::{10 + r:x}") for r in range(3)]
            view.update(
                app_records(
                    tenant=tenant,
                    app=f"app-{a:03d}",
                    vip4=None,
                    vip6=None,
                    replicas=replicas,
                    ports=[("http", "tcp", 80)],
                )
            )
    return Directory(clients={"127.0.0.1": "tenant-000"}, records=records)


def _queries(names: list[str]) -> list[bytes]:
    """Packed A queries; the client sets the ID (and the letter case) at send time."""
    from dnslib import DNSRecord

    return [DNSRecord.question(name, "A").pack() for name in names]


def _spelling(query: bytes, number: int) -> bytes:
    """`query` with its name's letters in the case the bits of `number` say: a new query each time."""
    spelled = bytearray(query)
    for position in range(13, len(query) - 4):
        if 0x61 <= spelled[position] | 0x20 <= 0x7A:
            if number & 1:
                spelled[position] ^= 0x20
            number >>= 1
    return bytes(spelled)


def _clients(target: tuple[str, int], queries: list[bytes], mixcase: bool, clients: int, seconds: float, out) -> None:
    """Closed-loop clients on one epoll: (answered, lost, elapsed, latencies in ms) into `out`."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    selector = selectors.DefaultSelector()
    sent_at: dict[socket.socket, float] = {}
    latencies: list[float] = []
    lost = 0
    order = iter(range(1 << 62))

    def send(sock: socket.socket) -> None:
        i = next(order)
        query = queries[i % len(queries)]
        if mixcase:
            query = _spelling(query, i // len(queries) + 1)
        sock.send((i & 0xFFFF).to_bytes(2, "big") + query[2:])
        sent_at[sock] = time.perf_counter()

    socks = []
    for _ in range(clients):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.connect(target)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    start = time.perf_counter()
    end = start + seconds
    for sock in socks:
        send(sock)
    while (now := time.perf_counter()) < end:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            try:
                sock.recv(65535)
            except OSError:
                continue
            latencies.append((time.perf_counter() - sent_at[sock]) * 1000)
            send(sock)
        now = time.perf_counter()
        for sock in socks:
            if now - sent_at[sock] > LOST_AFTER:
                lost += 1
                send(sock)
    elapsed = time.perf_counter() - start
    for sock in socks:
        sock.close()
    out.put((len(latencies), lost, elapsed, latencies))


def _paced(target: tuple[str, int], queries: list[bytes], rate: int, clients: int, seconds: float, out) -> None:
    """Open loop: a query every 1/rate s, in a letter case not used before, round robin over the
    clients' sockets whatever the answers; (answered, lost, elapsed, latencies in ms) into `out`."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    selector = selectors.DefaultSelector()
    socks = []
    for number in range(clients):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.connect(target)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, number)
        socks.append(sock)
    pending: dict[tuple[int, int], float] = {}  # (client, query id) -> when sent
    latencies: list[float] = []
    start = time.perf_counter()
    end, due, i = start + seconds, start, 0
    while (now := time.perf_counter()) < end + LOST_AFTER and (now < end or pending):
        while now >= due and now < end:
            client, qid = i % clients, (i // clients) & 0xFFFF
            query = _spelling(queries[i % len(queries)], i // len(queries) + 1)
            socks[client].send(qid.to_bytes(2, "big") + query[2:])
            pending[(client, qid)] = time.perf_counter()
            i, due = i + 1, due + 1 / rate
        for key, _ in selector.select(timeout=max(0.0, min(due - time.perf_counter(), 0.05))):
            try:
                answer = key.fileobj.recv(65535)
            except OSError:
                continue
            sent = pending.pop((key.data, int.from_bytes(answer[:2], "big")), None)
            if sent is not None:
                latencies.append((time.perf_counter() - sent) * 1000)
    for sock in socks:
        sock.close()
    out.put((len(latencies), len(pending), seconds, latencies))


def _phase(label: str, target: tuple[str, int], queries: list[bytes], *, mixcase: bool, rate: int = 0) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    if rate:
        process = ctx.Process(target=_paced, args=(target, queries, rate, CLIENTS, SECONDS, out))
    else:
        process = ctx.Process(target=_clients, args=(target, queries, mixcase, CLIENTS, SECONDS, out))
    process.start()
    answered, lost, elapsed, latencies = out.get()
    process.join()
    latencies.sort()
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else float("nan")
    print(
        f"{label:<9} clients={CLIENTS} answered={answered} qps={answered / elapsed:8.0f}"
        f"  p50={p50:6.2f} ms  p99={p99:6.2f} ms  lost={lost}",
        flush=True,
    )


def _side_by_side(directory) -> None:
    """Docker's embedded DNS and Hivemind's server, asked by the same clients from inside one container."""
    missing = [tool for tool in ("dockerd", "nsenter") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print(f"side by side with Docker's DNS: skipped (needs root and {', '.join(missing) or 'dockerd, nsenter'})")
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from pyroute2 import IPRoute

    from networking.dns import Directory, DnsServer
    from tests.netsim import SimCluster

    cluster, server = SimCluster(1), None
    try:
        node = cluster.start().nodes[0]
        node.client.networks.create("bench-dns", driver="bridge")
        for name in ("web", "client"):
            node.client.containers.run(
                "hivemind/busybox:latest", "sleep 3600", name=name, network="bench-dns", init=True, detach=True
            )
        client = node.client.containers.get("client")
        address = client.attrs["NetworkSettings"]["Networks"]["bench-dns"]["IPAddress"]
        with IPRoute(netns=node.netns, flags=0) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=NODE_DNS, prefixlen=32)
        server = DnsServer(NODE_DNS, 53, netns=node.netns, upstreams=["127.0.0.1:9"])
        server.start()
        server.update(Directory(clients={**directory.clients, address: "tenant-000"}, records=directory.records))
        targets = {
            "docker 127.0.0.11": ("127.0.0.11:53", "web"),
            f"hivemind {NODE_DNS}": (f"{NODE_DNS}:53", "app-000.tenant-000.hivemind."),
        }
        print(
            f"side by side, from inside container `client` ({address}) on a private dockerd "
            f"{node.client.version()['Version']}, {ROUNDS} rounds:"
        )
        figures: dict[tuple[str, str], list[tuple[float, ...]]] = {}
        for number in range(1, ROUNDS + 1):
            for label, (target, name) in targets.items():
                run = subprocess.run(
                    ["nsenter", f"--net=/proc/{client.attrs['State']['Pid']}/ns/net", sys.executable, __file__],
                    env={**os.environ, "BENCH_DNS_TARGET": target, "BENCH_DNS_NAME": name},
                    capture_output=True, text=True, check=True, timeout=SECONDS * 4 + 60,
                )  # fmt: skip
                for line in run.stdout.splitlines():
                    if match := PHASE_LINE.match(line):
                        figures.setdefault((label, match[1]), []).append(tuple(map(float, match.groups()[1:])))
                        print(f"  round {number} {label:<22} {line}", flush=True)
        print(f"medians of {ROUNDS} rounds ({CLIENTS} clients, {SECONDS:g} s per phase):")
        for (label, phase), rows in figures.items():
            qps, p50, p99 = (statistics.median(column) for column in zip(*rows, strict=True))
            print(f"  {label:<22} {phase:<9} qps={qps:8.0f}  p50={p50:6.2f} ms  p99={p99:6.2f} ms")
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


def main() -> None:
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {SECONDS:g} s per phase", flush=True)
    if TARGET:
        from networking.dns import _parse_upstream

        if not TARGET_NAME:
            raise SystemExit("BENCH_DNS_TARGET needs BENCH_DNS_NAME: a name that server answers")
        target = _parse_upstream(TARGET)
        _phase("cached", target, _queries([TARGET_NAME]), mixcase=False)
        _phase("uncached", target, _queries([TARGET_NAME]), mixcase=True)
        _phase("paced", target, _queries([TARGET_NAME]), mixcase=True, rate=RATE)
        return

    from networking.dns import DnsServer

    directory = _directory()
    names = [f"app-{a:03d}.tenant-000.hivemind." for a in range(APPS)]
    server = DnsServer("127.0.0.1", 0, upstreams=["127.0.0.1:9"])
    server.start()
    try:
        started = time.perf_counter()
        server.update(directory)
        compiled = (time.perf_counter() - started) * 1000
        records = sum(len(view) for view in directory.records.values())
        print(f"server: 127.0.0.1 port {server.port}; directory of {TENANTS * APPS} apps, {records} record sets")
        _phase("cached", ("127.0.0.1", server.port), _queries(names), mixcase=False)
        _phase("uncached", ("127.0.0.1", server.port), _queries(names), mixcase=True)
        _phase("paced", ("127.0.0.1", server.port), _queries(names), mixcase=True, rate=RATE)
        stats = server.stats
        print(f"server stats: queries={stats.queries} cache_hits={stats.cache_hits} nxdomain={stats.nxdomain}")
        print(f"update(): {compiled:.0f} ms to compile {records} record sets (interpreter lock held meanwhile)")
    finally:
        server.stop()
    if DOCKER:
        _side_by_side(directory)


if __name__ == "__main__":
    main()
