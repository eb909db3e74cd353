"""TCP throughput across two nodes over the VXLAN overlay against the same traffic on one node's bridge.

Starts two simulated nodes (tests/netsim.py's SimCluster: each a network namespace of its own
with its own dockerd, joined by an underlay bridge in one more namespace; nothing in the
host's namespace is touched) and makes one network on both with networking/overlay.py's
`ensure_segment`, as the agent does: the same v4 + v6 subnets, each node its own range and
gateway, a VXLAN device (VNI, UDP 4789) on the network's bridge with the other node as peer,
the overlay MTU (1450) on the bridge and the devices.

Three containers from `hivemind/busybox:latest` join it: the client and server `local` on
node 1, server `remote` on node 2. Per round and path, the client sends BENCH_MB MB of
zeros over one TCP connection with busybox tools only (no iperf in the image); nc hands the
connected socket to dd on both ends (`-e`), so dd writes and reads the socket itself:

    server:  nc -l -p 5001 -e sh -c 'dd bs=1 count=1; time -f "seconds %e" dd bs=64k of=/dev/null'
    client:  nc <server address> 5001 -e dd if=/dev/zero bs=64k count=N

The server's second dd starts once the first byte arrived and ends at the connection's end:
its time (busybox `time`, 10 ms steps: hence transfers of seconds) is the transfer's own,
without connection setup or waiting; the client's dd must report all N blocks written. Both
paths carry the same container programs, MTU and packet sizes; the bridge path's packets go
container -> bridge -> container, the overlay's container -> bridge -> VXLAN -> underlay veth
-> underlay bridge -> veth -> VXLAN -> bridge -> container. Both nodes share this machine's
cores, as do client and server.

BENCH_ROUNDS (3) alternating rounds (bridge, overlay, bridge, ...), medians; MB = 10^6 bytes.
Target: overlay >= 0.6x bridge. Needs root, dockerd, nsenter. Everything it made (containers,
daemons, namespaces, mounts, scratch dirs under VAR_DIR/sim) is gone when it ends.

Environment: BENCH_MB (3000), BENCH_ROUNDS (3).
"""

from __future__ import annotations

import ipaddress
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from support import fmt  # noqa: E402 - after the path is set

MEGABYTES = int(os.environ.get("BENCH_MB", "3000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
IMAGE = "hivemind/busybox:latest"
PORT = 5001
BLOCK = 64 * 1024
SUBNET4, SUBNET6 = "10.250.0.0/24", "fd00:250::/64"
NETWORK_ID, VNI = 990001, 4990001  # no database: ids of the bench's own
TARGET = 0.6
SECONDS = re.compile(r"^seconds ([\d.]+)$", re.MULTILINE)


def _slot(number: int) -> dict[str, str]:
    """Node `number`'s range and gateway of the network (networking/ipam.py's slots: 8 per v4 prefix)."""
    subnet4 = ipaddress.IPv4Network(SUBNET4)
    part4 = list(subnet4.subnets(prefixlen_diff=3))[number - 1]
    subnet6 = ipaddress.IPv6Network(SUBNET6)
    part6 = ipaddress.IPv6Network((int(subnet6.network_address) + (number << 32), 96))
    return {
        "range4": str(part4),
        "gateway4": str(part4.network_address + 1),
        "range6": str(part6),
        "gateway6": str(part6.network_address + 1),
    }


def _segments(cluster) -> list:
    from networking.overlay import Segment

    return [
        Segment(
            network_id=NETWORK_ID,
            tenant_id=1,
            vni=VNI,
            subnet4=SUBNET4,
            subnet6=SUBNET6,
            local=node.address4,
            peers=tuple(other.address4 for other in cluster.nodes if other is not node),
            **_slot(number),
        )
        for number, node in enumerate(cluster.nodes, start=1)
    ]


def _address(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _transfer(client_container, server_container, address: str) -> float:
    """One transfer of about MEGABYTES MB; returns the MB/s the server saw."""
    count = MEGABYTES * 10**6 // BLOCK
    result: dict[str, tuple] = {}
    server = ["nc", "-l", "-p", str(PORT), "-e", "sh", "-c"]
    server.append(f"dd bs=1 count=1 of=/dev/null 2>/dev/null; time -f 'seconds %e' dd bs={BLOCK} of=/dev/null")

    def serve() -> None:
        result["server"] = server_container.exec_run(server, demux=True)

    thread = threading.Thread(target=serve)
    thread.start()
    # The listener is up a moment after its exec starts: retry while the connection is refused.
    client_cmd = (
        f"for i in $(seq 100); do nc {address} {PORT} -e dd if=/dev/zero bs={BLOCK} count={count} && exit 0;"
        f" sleep 0.05; done; exit 1"
    )
    code, (_, err) = client_container.exec_run(["sh", "-c", client_cmd], demux=True)
    thread.join(timeout=300)
    err = (err or b"").decode()
    if code != 0 or thread.is_alive() or f"{count}+0 records out" not in err:
        raise SystemExit(f"transfer to {address} failed: exit {code}: {err}")
    server_code, (_, server_err) = result["server"]
    server_err = (server_err or b"").decode()
    match = SECONDS.search(server_err)
    if server_code != 0 or match is None:
        raise SystemExit(f"server at {address}: exit {server_code}: {server_err}")
    return (count * BLOCK - 1) / float(match.group(1)) / 10**6


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("overlay.py needs root (network namespaces, dockerd)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")
    import django

    django.setup()
    from networking.overlay import ensure_segment, remove_segment
    from tests.netsim import SimCluster, unavailable

    if reason := unavailable():
        raise SystemExit(f"overlay.py: {reason}")
    started = time.perf_counter()
    cluster = SimCluster(2)
    try:
        cluster.start()
        print(f"2 simulated nodes up in {time.perf_counter() - started:.1f} s", flush=True)
        one, two = cluster.nodes
        names = [
            ensure_segment(node.client, segment, node=node.name, netns=node.netns)
            for node, segment in zip(cluster.nodes, _segments(cluster), strict=True)
        ]
        network = names[0]

        def run(node, name):
            return node.client.containers.run(
                IMAGE, "sleep 3600", name=name, network=network, init=True, detach=True, labels={"bench": "overlay"}
            )

        client = run(one, "bench-client")
        local = run(one, "bench-local")
        remote = run(two, "bench-remote")
        paths = {"bridge": (local, _address(local, network)), "overlay": (remote, _address(remote, network))}
        print(
            f"network {network}: MTU {_segments(cluster)[0].overlay_mtu}, VNI {VNI}; client {_address(client, network)}"
            f" on {one.name}, bridge server {paths['bridge'][1]} on {one.name},"
            f" overlay server {paths['overlay'][1]} on {two.name}",
            flush=True,
        )
        _transfer(client, local, paths["bridge"][1])  # warm-up: first packets, ARP, conntrack
        _transfer(client, remote, paths["overlay"][1])
        rates: dict[str, list[float]] = {"bridge": [], "overlay": []}
        for _ in range(ROUNDS):
            for path, (server, address) in paths.items():
                rates[path].append(_transfer(client, server, address))
        bridge, overlay = statistics.median(rates["bridge"]), statistics.median(rates["overlay"])
        print(f"{MEGABYTES} MB per transfer, {ROUNDS} rounds, medians (MB = 10^6 bytes)")
        print(f"bridge  (one node)      {bridge:8.1f} MB/s   [{fmt(rates['bridge'])}]")
        print(f"overlay (two nodes)     {overlay:8.1f} MB/s   [{fmt(rates['overlay'])}]")
        ratio = overlay / bridge
        print(f"overlay / bridge: {ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")
        for container in (client, local, remote):
            container.remove(force=True)
        for node in cluster.nodes:
            remove_segment(node.client, NETWORK_ID, node=node.name, netns=node.netns)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
