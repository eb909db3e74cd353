"""The node agent's usage sampling: CPU, memory, network and block I/O of the managed containers
its Docker runs, and the machine's own CPU, load, memory and disk (/proc, statvfs).

Docker's one-shot stats (`stream=False, one_shot=True`) answer at once but carry no previous
reading (`precpu_stats` is empty), so the CPU figure comes from the difference of the
cumulative `cpu_usage.total_usage` between this sampler's own two consecutive readings of the
same container, over the time between Docker's two `read` stamps. A container's first reading
is only that baseline: its first sample is stored one interval after the agent first sees it.
The same goes for the machine's CPU (the difference of /proc/stat's busy and total jiffies).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import NamedTuple
from urllib.parse import urlsplit

import docker
import requests
from django.utils import timezone

from hivemind.applications.models import LABEL_MANAGED
from hivemind.nodes.runtime import docker_client
from observability import services
from observability.services import ContainerUsage, NodeUsage

log = logging.getLogger(__name__)

# Stats calls in flight at once: Docker answers each at its next collection (every second), so a
# call is mostly waiting; at 8, a pass over 100 containers took 13 s (bench/agent_sampling.py).
SAMPLE_THREADS = 64
DOCKER_TIMEOUT = 10  # seconds; a hung Docker must not hold the sampling thread for long
DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


class Reading(NamedTuple):
    """One container's cumulative CPU time and current memory, as Docker read them at `read`."""

    docker_id: str
    name: str
    cpu_ns: int
    read: datetime
    memory_bytes: int
    network_rx_bytes: int = 0
    network_tx_bytes: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0


def memory_used(memory_stats: dict) -> int:
    """Memory in use without the reclaimable page cache, as `docker stats` computes it: usage minus
    total_inactive_file (cgroup v1) or inactive_file (cgroup v2), or minus cache (older Dockers)."""
    usage = int(memory_stats.get("usage") or 0)
    details = memory_stats.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file", "cache"):
        if key in details:
            cache = int(details[key] or 0)
            return usage - cache if cache < usage else usage
    return usage


def network_bytes(raw: dict) -> tuple[int, int]:
    """Bytes received and sent over every interface of the container (none without a network)."""
    interfaces = (raw.get("networks") or {}).values()
    return (
        sum(int(i.get("rx_bytes") or 0) for i in interfaces),
        sum(int(i.get("tx_bytes") or 0) for i in interfaces),
    )


def block_bytes(raw: dict) -> tuple[int, int]:
    """Bytes read from and written to block devices (`Read`/`Write` on cgroup v1, `read`/`write`
    on v2), summed over the devices."""
    read = write = 0
    for entry in (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op") or "").lower()
        if op == "read":
            read += int(entry.get("value") or 0)
        elif op == "write":
            write += int(entry.get("value") or 0)
    return read, write


def reading(docker_id: str, name: str, raw: dict) -> Reading | None:
    """A Reading from one-shot stats, or None when the container stopped (Docker then answers
    with a zero `read` time and no CPU figures)."""
    total = ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    stamp = raw.get("read") or ""
    if total is None or not stamp or stamp.startswith("0001-01-01"):
        return None
    try:
        read = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    rx, tx = network_bytes(raw)
    block_read, block_write = block_bytes(raw)
    return Reading(
        docker_id, name, int(total), read, memory_used(raw.get("memory_stats") or {}), rx, tx, block_read, block_write
    )


class CpuTimes(NamedTuple):
    busy: int
    total: int


def cpu_times(stat: str) -> CpuTimes:
    """Busy and total jiffies of all CPUs from /proc/stat's first line (idle and iowait are idle)."""
    fields = [int(v) for v in stat.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already in user and nice
    return CpuTimes(total - idle, total)


def meminfo(text: str) -> tuple[int, int]:
    """MemTotal and MemAvailable of /proc/meminfo, in bytes."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


class MachineReader:
    """The machine's figures for NodeStat: CPU busy share between two readings, load, memory, and
    the file system of Docker's data when Docker runs on this machine. `proc` is a parameter for
    the tests."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._previous: CpuTimes | None = None

    def _text(self, name: str) -> str:
        with open(os.path.join(self.proc, name)) as handle:
            return handle.read()

    def read(self, disk_dir: str | None) -> NodeUsage | None:
        """None on the first call (the CPU baseline) or when /proc cannot be read."""
        try:
            times = cpu_times(self._text("stat"))
            load = [float(v) for v in self._text("loadavg").split()[:3]]
            memory_total, memory_available = meminfo(self._text("meminfo"))
        except (OSError, ValueError, IndexError) as exc:
            log.warning("machine figures unreadable in %s: %s", self.proc, exc)
            return None
        previous, self._previous = self._previous, times
        if previous is None or times.total <= previous.total:
            return None
        ratio = max(0.0, min(1.0, (times.busy - previous.busy) / (times.total - previous.total)))
        disk_total = disk_free = 0
        if disk_dir:
            try:
                fs = os.statvfs(disk_dir)
                disk_total, disk_free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
            except OSError:
                pass
        return NodeUsage(ratio, *load, memory_total, memory_available, disk_total, disk_free)


def cpu_millis(before: Reading | None, after: Reading) -> int | None:
    """Millicores used on average between two readings of one container; None without a usable
    earlier reading (the first one, or the counter went back: the container restarted)."""
    if before is None or after.read <= before.read or after.cpu_ns < before.cpu_ns:
        return None
    elapsed_ns = (after.read - before.read).total_seconds() * 1e9
    return round((after.cpu_ns - before.cpu_ns) / elapsed_ns * 1000)


class UsageSampler:
    """Samples one node's running managed containers; `sample()` is one pass.

    It keeps each container's last reading (by Docker id, so a container re-created under the
    same name starts afresh) and has its own Docker client, so a slow stats call never delays
    the agent's reports.
    """

    def __init__(self, *, node_name: str, docker_host: str, threads: int = SAMPLE_THREADS) -> None:
        self.node_name = node_name
        self.docker_host = docker_host
        self.threads = threads
        self.failing = False  # the last pass met a Docker error (logged once per outage)
        self._client: docker.DockerClient | None = None
        self._previous: dict[str, Reading] = {}
        self.machine = MachineReader()
        self._disk_dir: str | None = None  # Docker's data directory, when Docker runs here

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(self.docker_host, timeout=DOCKER_TIMEOUT)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def running(self) -> list[tuple[str, str]]:
        """(Docker id, name) of the running containers with Hivemind's label, in one API call."""
        found = self.client().api.containers(filters={"label": f"{LABEL_MANAGED}=true", "status": "running"})
        return [(c["Id"], (c.get("Names") or ["/"])[0].lstrip("/")) for c in found]

    def read(self, containers: list[tuple[str, str]]) -> tuple[list[Reading], Exception | None]:
        """Readings of the containers, side by side; one that vanished or stopped meanwhile is left
        out. Also the first Docker error met (the other containers are still read)."""
        if not containers:
            return [], None

        def one(container: tuple[str, str]) -> Reading | Exception | None:
            docker_id, name = container
            try:
                return reading(docker_id, name, self.client().api.stats(docker_id, stream=False, one_shot=True))
            except docker.errors.NotFound:
                return None  # removed since it was listed
            except DOCKER_ERRORS as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(self.threads, len(containers))) as pool:
            answers = list(pool.map(one, containers))
        errors = [a for a in answers if isinstance(a, Exception)]
        return [a for a in answers if isinstance(a, Reading)], (errors[0] if errors else None)

    def usages(self, containers: list[tuple[str, str]], readings: list[Reading]) -> list[ContainerUsage]:
        """What each container used since its previous reading; remembers these readings (and the
        earlier ones of containers still listed but not read this time)."""
        listed = {docker_id for docker_id, _ in containers}
        previous = {docker_id: r for docker_id, r in self._previous.items() if docker_id in listed}
        usages = []
        for after in readings:
            cpu = cpu_millis(previous.get(after.docker_id), after)
            if cpu is not None:
                usages.append(
                    ContainerUsage(
                        after.name, cpu, after.memory_bytes, after.network_rx_bytes, after.network_tx_bytes,
                        after.block_read_bytes, after.block_write_bytes,
                    )
                )  # fmt: skip
            previous[after.docker_id] = after
        self._previous = previous
        return usages

    def sample(self) -> int:
        """One pass: list, read, store in one insert. Returns the number of samples stored; a
        Docker error is logged (once per outage) and the pass stores what it could read."""
        try:
            containers = self.running()
            readings, error = self.read(containers)
        except DOCKER_ERRORS as exc:
            self._docker_failed(exc)
            return 0
        if error is not None:
            self._docker_failed(error)
        elif self.failing:
            self.failing = False
            log.info("node %s: usage samples: Docker at %s answers again", self.node_name, self.docker_host)
        usages = self.usages(containers, readings)
        now = timezone.now()
        machine = self.machine.read(self.disk_dir())
        if machine is not None:
            services.node_usage_record(node_name=self.node_name, at=now, usage=machine)
        return services.usage_samples_record(node_name=self.node_name, at=now, usages=usages)

    def disk_dir(self) -> str | None:
        """Docker's root directory when Docker runs on this machine (asked once)."""
        if self._disk_dir is None:
            from hivemind.nodes.agent import LOOPBACK_HOSTS

            parts = urlsplit(self.docker_host)
            local = parts.scheme == "unix" or (parts.hostname or "") in LOOPBACK_HOSTS
            try:
                root = self.client().info().get("DockerRootDir") or "" if local else ""
            except DOCKER_ERRORS:
                return None
            self._disk_dir = root if root and os.path.isdir(root) else ""
        return self._disk_dir or None

    def _docker_failed(self, exc: Exception) -> None:
        if not self.failing:
            log.warning("node %s: usage samples: Docker at %s failed: %s", self.node_name, self.docker_host, exc)
        self.failing = True
