"""Several Hivemind nodes on this machine, with real networking between them, for tests.

Each simulated node is a network namespace of its own with its own Docker daemon in it
(bootstrap.ensure_dockerd(netns=...)), so that bridges, VXLAN devices and nftables rules
made for one node are really separate from the others' and from the host's. The nodes
reach each other over an underlay: one more namespace holding a bridge, with a veth into
each node (`eth0` there, addresses 10.241.0.1x and fd00:241::1x, no default route).
Nothing is ever added to or changed in the host's own network namespace.

Starting three nodes takes a few seconds, so the `sim_cluster` fixture does it once per
test session. A test module or a conftest imports it with

    from tests.netsim import sim_cluster_fixture  # noqa: F401 (the sim_cluster fixture)

and its tests ask for `sim_cluster` (the function is named otherwise so that the argument
does not shadow the import); or the whole suite gets it from `pytest_plugins =
["tests.netsim"]` in tests/conftest.py. However many modules import it, one cluster serves
the session and stops at its end. Tests remove the containers and networks they made.

Names carry a run id (`<pid of the test process in base 36>.<n>`): the namespaces are
`hmt-<run id>-<n>` and `hmt-<run id>-ul`, the scratch dirs `VAR_DIR/sim/<run id>`, so two
test runs on one machine never meet. The underlay addresses need no run id: they exist
only inside each run's own namespaces. A run killed hard leaves its namespaces, daemons
and dirs behind; the next start removes those whose owning process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import itertools
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from django.conf import settings
from pyroute2 import IPRoute, netns

from hivemind.core import bootstrap
from hivemind.core.supervisor import signal_group
from hivemind.nodes.runtime import docker_client as make_docker_client
from tests.e2e.platform import alive, descendants

log = logging.getLogger(__name__)

PREFIX = "hmt-"
NETNS_DIR = Path("/run/netns")
CGROUP_DIR = Path("/sys/fs/cgroup")
UNDERLAY4 = ipaddress.ip_network("10.241.0.0/24")
UNDERLAY6 = ipaddress.ip_network("fd00:241::/64")
UNDERLAY_BRIDGE = "ul"
IFA_F_NODAD = 0x02  # the address is usable at once instead of after 1-2 s of duplicate detection
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


# --- Run ids: which leftovers belong to a run that is gone -----------------------------------

_started_here: set[str] = set()  # live runs of this process: a pid reused from a dead run is told apart
_numbers = itertools.count(1)


def base36(number: int) -> str:
    """At most 5 characters for any Linux pid."""
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = DIGITS[digit] + text
        if not number:
            return text


def new_run() -> str:
    """`<pid in base 36>.<n>`: the pid says whose a leftover is, n tells clusters of one process apart."""
    run = f"{base36(os.getpid())}.{next(_numbers)}"
    _started_here.add(run)
    return run


def is_stale(run: str) -> bool:
    """A run whose process is gone, or that claims our pid without being ours (the pid was reused)."""
    try:
        pid = int(run.split(".")[0], 36)
    except ValueError:
        return False  # not a run id: not ours to remove
    if pid == os.getpid():
        return run not in _started_here
    return not alive(pid)


# --- Processes, mounts, namespaces ------------------------------------------------------------


def kill_trees(pids: Iterable[int], timeout: float = 10) -> None:
    """SIGKILL the processes and everything below them, and wait until they are gone."""
    victims = set()
    for pid in pids:
        victims |= {pid, *descendants(pid)}
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)


def netns_pids(names: Iterable[str]) -> list[int]:
    """Processes inside the given namespaces (a namespace lives on while any process is in it)."""
    found = netns.ns_pids(str(NETNS_DIR))
    return [pid for name in names for pid in found.get(name, [])]


def unmount_under(*paths: Path) -> None:
    """Lazily unmount everything mounted at or below `paths`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 stands for a space
        if any(point == str(path) or point.startswith(f"{path}/") for path in paths):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def exec_root(root: Path) -> Path:
    """The exec-root bootstrap.ensure_dockerd gives the daemon of `root` (kept short for containerd's socket)."""
    return Path("/run") / ("hm-" + hashlib.sha256(str(root).encode()).hexdigest()[:10])


def remove_netns(name: str) -> None:
    """Delete a namespace, and with it every device inside (once no process holds it)."""
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


def remove_cgroups(data_root: Path) -> None:
    """The (empty) cgroups of a killed daemon's containers: a clean stop removes them, a kill does not."""
    for container in (data_root / "containers").glob("*"):
        # cgroup v2: docker/<id>; v1: <controller>/docker/<id>
        for cgroup in (*CGROUP_DIR.glob(f"docker/{container.name}"), *CGROUP_DIR.glob(f"*/docker/{container.name}")):
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def clear_stale(sim_dir: Path) -> None:
    """Remove what runs killed hard left: their namespaces, daemons, containers, mounts, dirs."""
    stale_ns = [
        name for name in netns.listnetns(str(NETNS_DIR)) if name.startswith(PREFIX) and is_stale(name.split("-")[1])
    ]
    stale_dirs = [path for path in sim_dir.iterdir() if is_stale(path.name)] if sim_dir.is_dir() else []
    daemons = []
    for path in stale_dirs:
        for pidfile in path.glob("*/docker.pid"):
            with contextlib.suppress(OSError, ValueError):
                daemons.append(int(pidfile.read_text().strip()))
    kill_trees([*netns_pids(stale_ns), *daemons])
    for name in stale_ns:
        log.warning("removing network namespace %s left by an earlier run", name)
        remove_netns(name)
    for path in stale_dirs:
        roots = [node for node in path.iterdir() if node.is_dir()]
        unmount_under(path, *(exec_root(node) for node in roots))
        for node in roots:
            remove_cgroups(node / "data")
            shutil.rmtree(exec_root(node), ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)


# --- The cluster ------------------------------------------------------------------------------


@dataclass
class SimNode:
    """One simulated node: its namespace, underlay addresses and Docker daemon."""

    name: str  # a DNS label: the Hivemind node name
    netns: str  # its network namespace (a name under /run/netns)
    address4: str  # underlay addresses, reachable from the other nodes only
    address6: str
    docker_host: str  # unix:// socket of its own dockerd (which runs inside `netns`)
    client: docker.DockerClient
    root: Path = field(repr=False)  # the daemon's dir under VAR_DIR/sim/<run>

    def agent_env(self, *, underlay6: bool = False) -> dict[str, str]:
        """HIVEMIND_NODE_NAME, HIVEMIND_DOCKER_HOST, HIVEMIND_NODE_NETNS, HIVEMIND_NODE_ADDRESS
        for an agent process of this node (the agent runs in the host namespace)."""
        return {
            "HIVEMIND_NODE_NAME": self.name,
            "HIVEMIND_DOCKER_HOST": self.docker_host,
            "HIVEMIND_NODE_NETNS": self.netns,
            "HIVEMIND_NODE_ADDRESS": self.address6 if underlay6 else self.address4,
        }

    def clear_containers(self) -> None:
        """Remove every container on this node's daemon (what a test left)."""
        for container in self.client.containers.list(all=True, ignore_removed=True):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


class SimCluster:
    """`size` nodes, sim-1 .. sim-<size>, and the underlay namespace joining them; start() / stop()."""

    def __init__(self, size: int = 3, *, sim_dir: Path | None = None):
        self.size = size
        self.sim_dir = sim_dir or settings.VAR_DIR / "sim"
        self.run = new_run()
        self.root = self.sim_dir / self.run
        self.underlay = f"{PREFIX}{self.run}-ul"
        self.nodes: list[SimNode] = []  # filled by start(), in number order
        self._services: list[bootstrap.LocalService] = []

    def netns_of(self, number: int) -> str:
        return f"{PREFIX}{self.run}-{number}"

    def root_of(self, number: int) -> Path:
        return self.root / f"sim-{number}"

    def namespaces(self) -> list[str]:
        return [self.underlay, *(self.netns_of(number) for number in range(1, self.size + 1))]

    @staticmethod
    def address4(number: int) -> str:
        return str(UNDERLAY4.network_address + 10 + number)

    @staticmethod
    def address6(number: int) -> str:
        return str(UNDERLAY6.network_address + 0x10 + number)

    def start(self) -> SimCluster:
        """Make the namespaces and the underlay, then start the daemons side by side (about 1 s each)."""
        clear_stale(self.sim_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_underlay()
        with ThreadPoolExecutor(self.size) as pool:
            self.nodes = list(pool.map(self._start_node, range(1, self.size + 1)))
        return self

    def _make_underlay(self) -> None:
        netns.create(self.underlay)
        with IPRoute(netns=self.underlay, flags=0) as ipr:
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
            bridge = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.link("set", index=bridge, state="up")
            for number in range(1, self.size + 1):
                netns.create(self.netns_of(number))
                port = f"{UNDERLAY_BRIDGE}{number}"
                ipr.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": self.netns_of(number)})
                ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge, state="up")
                self._address_node(number)

    def _address_node(self, number: int) -> None:
        with IPRoute(netns=self.netns_of(number), flags=0) as ipr:
            for name in ("lo", "eth0"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=self.address4(number), prefixlen=UNDERLAY4.prefixlen)
            ipr.addr("add", index=eth0, address=self.address6(number), prefixlen=UNDERLAY6.prefixlen, flags=IFA_F_NODAD)

    def _start_node(self, number: int) -> SimNode:
        root = self.root_of(number)
        docker_host = f"unix://{root / 'docker.sock'}"
        service = bootstrap.ensure_dockerd(docker_host, root, netns=self.netns_of(number))
        if not service.started_here:  # never adopt a daemon that is not ours
            raise RuntimeError(f"a Docker daemon answers at {docker_host} already")
        self._services.append(service)
        client = make_docker_client(docker_host)
        bootstrap.ensure_busybox_image(client)
        return SimNode(
            name=f"sim-{number}",
            netns=self.netns_of(number),
            address4=self.address4(number),
            address6=self.address6(number),
            docker_host=docker_host,
            client=client,
            root=root,
        )

    def clear_containers(self) -> None:
        for node in self.nodes:
            node.clear_containers()

    def stop(self) -> None:
        """Remove everything start() made, also after a start that failed halfway."""
        for node in self.nodes:
            with contextlib.suppress(docker.errors.DockerException, OSError):
                node.clear_containers()
            node.client.close()
        for service in self._services:  # SIGTERM them all first: they shut down side by side
            signal_group(service.process, signal.SIGTERM)
        for service in self._services:
            service.stop(timeout=15)  # and wait, so that each daemon is reaped
        kill_trees(netns_pids(self.namespaces()))  # normally none: a namespace must not outlive the run
        for name in self.namespaces():
            remove_netns(name)
        roots = [self.root_of(number) for number in range(1, self.size + 1)]
        unmount_under(self.root, *(exec_root(root) for root in roots))
        for root in roots:
            shutil.rmtree(exec_root(root), ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
        _started_here.discard(self.run)


def unavailable() -> str | None:
    """Why nodes cannot be simulated here (None: they can)."""
    if os.geteuid() != 0:
        return "simulated nodes need root (network namespaces, dockerd)"
    missing = [tool for tool in ("dockerd", "nsenter", "umount") if shutil.which(tool) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


class _Shared:
    """The one cluster of a session, however many modules import the fixture (each import is a
    fixture definition of its own, which pytest would set up once per module otherwise)."""

    cluster: SimCluster | None = None
    users = 0


@pytest.fixture(scope="session", name="sim_cluster")
def sim_cluster_fixture() -> Iterator[SimCluster]:
    """Three simulated nodes (sim-1..sim-3) for the session; each test removes its own containers."""
    if reason := unavailable():
        pytest.skip(reason)
    if _Shared.cluster is None:
        cluster = SimCluster(3)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _Shared.cluster = cluster
    _Shared.users += 1
    try:
        yield _Shared.cluster
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.cluster.stop()
            _Shared.cluster = None
