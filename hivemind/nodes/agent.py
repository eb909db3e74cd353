"""The node agent: registration and heartbeats of the Celery worker that consumes `node.<name>`.

When a worker whose queues include this node's queue is ready (Celery's `worker_ready`, in the
worker's main process), two daemon threads start there, each on HIVEMIND_NODE_HEARTBEAT:

- the heartbeat registers the node (Docker facts, address, HIVEMIND_NODE_LABELS), then stamps
  its heartbeat. It never waits on Docker: a heartbeat says "this node's queue is consumed",
  and a Docker daemon slowed down by a busy disk must not make a live node look dead.
- the report asks Docker for its facts and the containers it runs with the label
  `io.hivemind.managed=true`, so their Container rows follow what really happens (running,
  exited, restarted, gone), and removes the managed containers no replica owns. A node is not
  ready only after Docker failed to answer DOCKER_GRACE reports in a row (or at registration).

A third thread keeps the node's networks as the database says (networking/node.py): the
devices of the networks its replicas join, forwarding entries to peer nodes, its nftables
table; drift is repaired on every beat. Another refreshes the node's DNS server
(HIVEMIND_DNS_ADDRESS) and its load balancer from the apps' healthy replicas: at once when
news arrives (a replica on any node turned healthy or unhealthy, started or went away:
networking/node.py NodeServices follows Docker's events and the other nodes' announcements),
and at least every second. Docker's word that a replica here started or died also runs the
report at once, and a report that changed anything announces it.

Another, on every beat, prepares the node's storage pools and reports their capacity and
its volumes' usage (storage/node.py).

Another serves the node's data endpoint (HIVEMIND_DATA_PORT, none when 0): the HTTP channel
volume replication streams travel on between agents (storage/channel.py).

A fourth thread, every HIVEMIND_SAMPLE_INTERVAL seconds (none when 0), samples the CPU and memory
of the running managed containers into observability's UsageSample rows (observability/sampling.py).

The agent never starts or stops a replica's container, and never looks at one without the
managed label. `Agent.register()`, `Agent.inspect()`, `Agent.stamp()`, `Agent.beat()` and
`Agent.sample()` are single passes, usable without a worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime
from urllib.parse import urlsplit

import docker
import requests
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from hivemind.applications.containers import remove as remove_container
from hivemind.nodes import services
from hivemind.nodes.runtime import docker_client
from hivemind.nodes.services import ContainerReport, NodeFacts, Unreported
from networking import discovery
from observability.sampling import UsageSampler

log = logging.getLogger(__name__)

DOCKER_TIMEOUT = 10  # seconds: a hung Docker daemon must not stop the reports for long
DOCKER_GRACE = 3  # reports in a row without an answer from Docker before the node is not ready
FULL_REPORT_EVERY = 6  # every sixth report inspects every container (restart counts); else only changed ones
DOCKER_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# Docker's container states -> Container.State; paused and restarting containers still hold
# their replica, `dead` and `removing` ones will not run again.
DOCKER_STATES = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "exited": "exited",
    "dead": "exited",
    "removing": "exited",
}
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
NEVER = "0001-01-01"


def managed_filter() -> dict:
    from hivemind.applications.models import LABEL_MANAGED

    return {"label": f"{LABEL_MANAGED}=true"}


def is_managed(attrs: dict) -> bool:
    from hivemind.applications.models import LABEL_MANAGED

    return ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_MANAGED) == "true"


def parse_docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, `Z`); its zero time means never."""
    if not value or value.startswith(NEVER):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _health_in(status: str) -> str:
    """The health part of `docker ps`'s status text: "Up 3 minutes (healthy)" -> "healthy"."""
    for health in ("(healthy)", "(unhealthy)", "(health: starting)"):
        if health in status:
            return health
    return ""


def container_report(attrs: dict) -> ContainerReport:
    """What a Container row needs from `docker inspect`."""
    state = attrs.get("State") or {}
    status = DOCKER_STATES.get(state.get("Status", ""), "exited")
    return ContainerReport(
        name=attrs.get("Name", "").lstrip("/"),
        docker_id=attrs.get("Id", ""),
        state=status,
        health=(state.get("Health") or {}).get("Status") or "none",
        exit_code=state.get("ExitCode") if status == "exited" else None,
        restarts=int(attrs.get("RestartCount") or 0),
        started_at=parse_docker_time(state.get("StartedAt")),
    )


def disk_free(root_dir: str, docker_host: str) -> int:
    """Free bytes on the filesystem of Docker's root directory, when Docker runs on this machine."""
    parts = urlsplit(docker_host)
    local = parts.scheme == "unix" or (parts.hostname or "") in LOOPBACK_HOSTS
    if not local or not root_dir:
        return 0
    try:
        stat = os.statvfs(root_dir)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def node_facts(client: docker.DockerClient, docker_host: str) -> NodeFacts:
    info = client.info()
    arch = info.get("Architecture") or ""
    return NodeFacts(
        docker_version=info.get("ServerVersion") or "",
        os=info.get("OperatingSystem") or info.get("OSType") or "",
        arch=ARCHES.get(arch, arch),
        cpu_millis=int(info.get("NCPU") or 0) * 1000,
        memory_bytes=int(info.get("MemTotal") or 0),
        disk_bytes=disk_free(info.get("DockerRootDir") or "", docker_host),
    )


def detect_address() -> str:
    """The address this machine reaches the broker from (others reach it there too); for a local
    broker, the address of the default route; else whatever the host name resolves to."""
    broker = urlsplit(settings.CELERY_BROKER_URL)
    targets = []
    if broker.scheme in ("redis", "rediss") and broker.hostname and broker.hostname not in LOOPBACK_HOSTS:
        targets.append(broker.hostname)
    targets.append("192.0.2.1")  # TEST-NET: connecting a UDP socket only picks a route, sends nothing
    for target in targets:
        try:
            family = socket.AF_INET6 if ":" in target else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((target, 9))
                address = sock.getsockname()[0]
            if address and not address.startswith("127."):
                return address
        except OSError:
            continue
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return ""


class Agent:
    """Registration and heartbeats of one node, from the process that consumes its queue."""

    def __init__(
        self,
        *,
        node_name: str | None = None,
        docker_host: str | None = None,
        interval: int | None = None,
        labels: dict[str, str] | None = None,
        address: str | None = None,
        sample_interval: int | None = None,
    ) -> None:
        config = settings.CONFIG
        self.node_name = node_name or settings.NODE_NAME
        self.docker_host = docker_host or settings.DOCKER_HOST
        self.interval = interval or config.node_heartbeat
        self.labels = dict(config.node_labels) if labels is None else labels
        self.address = address if address is not None else (config.node_address or detect_address())
        self.sample_interval = config.sample_interval if sample_interval is None else sample_interval
        self.sampler = UsageSampler(node_name=self.node_name, docker_host=self.docker_host)
        self._client: docker.DockerClient | None = None
        self._network_client: docker.DockerClient | None = None
        self.services = None  # the node's DNS server and load balancer (networking.node.NodeServices)
        self.data_server = None  # the node's data endpoint (storage.channel.DataServer)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Set to run a loop's next pass now: the report when Docker says a replica started or
        # died, the services when news about what the nodes serve arrives (NodeServices).
        self._report_wake = threading.Event()
        self._reported_states: set[tuple[str, str, str]] = set()
        self._services_wake = threading.Event()
        self.registered = False
        self.docker_failures = 0  # reports in a row Docker did not answer
        self._known: dict[str, tuple[tuple, ContainerReport]] = {}  # Docker id -> (state and health, report)
        self._reports_made = 0
        self.ready = False  # what the heartbeat says of the node

    # Docker ------------------------------------------------------------------------------------
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(self.docker_host, timeout=DOCKER_TIMEOUT)
        return self._client

    def facts(self) -> NodeFacts | None:
        """Docker's facts, or None (logged) when it does not answer."""
        try:
            facts = node_facts(self.client(), self.docker_host)
        except DOCKER_ERRORS as exc:
            self.docker_failures += 1
            if self.docker_failures == 1:  # once per outage, not once per report
                log.warning("node %s: Docker at %s does not answer: %s", self.node_name, self.docker_host, exc)
            return None
        if self.docker_failures:
            log.info("node %s: Docker at %s answers again", self.node_name, self.docker_host)
        self.docker_failures = 0
        return facts

    def managed_containers(self) -> list[ContainerReport]:
        """Docker's managed containers, from one listing. A container is inspected only when it
        is new, its state or health changed since the last report, or every FULL_REPORT_EVERY
        reports (restart counts): a busy daemon is not asked about every container every beat."""
        from hivemind.applications.models import LABEL_MANAGED

        self._reports_made += 1
        full = self._reports_made % FULL_REPORT_EVERY == 1
        known, self._known = self._known, {}
        reports = []
        for item in self.client().api.containers(all=True, filters=managed_filter()):
            if (item.get("Labels") or {}).get(LABEL_MANAGED) != "true":
                continue
            key = (item.get("State"), _health_in(item.get("Status") or ""))
            cached = known.get(item["Id"])
            if cached is not None and cached[0] == key and not full:
                report = cached[1]
            else:
                try:
                    report = container_report(self.client().api.inspect_container(item["Id"]))
                except docker.errors.NotFound:  # removed since the listing
                    continue
            self._known[item["Id"]] = (key, report)
            reports.append(report)
        return reports

    def absent(self, row: Unreported) -> bool:
        """Docker has no managed container of that name (an unmanaged one of the same name is not ours)."""
        try:
            found = self.client().api.inspect_container(row.name)
        except docker.errors.NotFound:
            return True
        return not is_managed(found)

    # One pass each ------------------------------------------------------------------------------
    def register(self) -> None:
        from storage import capabilities

        facts = self.facts()
        self.ready = facts is not None
        # What the node can attach (storage/capabilities.py), under the operator's own labels.
        labels = {**capabilities.node_labels(), **self.labels}
        node = services.node_register(
            name=self.node_name, address=self.address, docker_host=self.docker_host, facts=facts, labels=labels
        )
        self.registered = True
        log.info(
            "node %s registered (%s): %s, Docker %s, %d CPU, %d MiB",
            node.name,
            node.status,
            node.address or "no address",
            node.docker_version or "unreachable",
            node.cpu_millis // 1000,
            node.memory_bytes // 2**20,
        )
        # Its containers are the report thread's to look at (removing an orphan can take a
        # while): registering runs on the heartbeat thread, which must never wait on Docker.

    def stamp(self) -> bool:
        """The heartbeat: this node's queue is consumed. False when the node was removed while
        this agent ran."""
        return services.node_heartbeat(name=self.node_name, ready=self.ready)

    def inspect(self) -> bool:
        """One report: Docker's facts and the managed containers. False when the node was removed."""
        facts = self.facts()
        if facts is not None:
            self.ready = True
            if not services.node_facts_update(name=self.node_name, facts=facts):
                return False
            self.report_containers()
        elif self.ready and self.docker_failures >= DOCKER_GRACE:
            log.warning(
                "node %s: Docker did not answer %d reports in a row: the node is not ready",
                self.node_name,
                self.docker_failures,
            )
            self.ready = False
            return self.stamp()
        return True

    def beat(self) -> bool:
        """A report and a heartbeat, as the two threads make them."""
        return self.inspect() and self.stamp()

    def sample(self) -> int:
        """One usage sample of the running managed containers; returns the number of rows stored."""
        return self.sampler.sample()

    def networks(self) -> dict | None:
        """One pass over the node's networks (its own Docker client: this runs on its own thread)."""
        from hivemind.nodes.models import Node
        from networking.node import NodeNetworking

        node = Node.objects.filter(name=self.node_name).first()
        if node is None:
            return None
        if self._network_client is None:
            self._network_client = docker_client(self.docker_host, timeout=DOCKER_TIMEOUT)
        return NodeNetworking(node=node, client=self._network_client).reconcile()

    def report_containers(self) -> None:
        try:
            seen_at = timezone.now()
            reports = self.managed_containers()
            unreported = services.node_containers_report(node_name=self.node_name, reports=reports, seen_at=seen_at)
            states = {(report.name, report.state, report.health) for report in reports}
            if states != self._reported_states:  # a replica started, stopped or changed health
                self._reported_states = states
                discovery.changed()  # the nodes' DNS and load balancers follow at once
            gone = [row for row in unreported if self.absent(row)]
            for name in services.node_orphans(node_name=self.node_name, reports=reports):
                # Only containers with Hivemind's label are ever listed here, so only ours go.
                self.remove_orphan(name)
        except DOCKER_ERRORS as exc:
            log.warning("node %s: could not list its containers: %s", self.node_name, exc)
            return
        if gone and services.node_containers_mark_missing(node_name=self.node_name, containers=gone):
            discovery.changed()

    def remove_orphan(self, name: str) -> None:
        """Remove one container no replica owns. Docker refusing (a removal already under way
        answers 409) is logged and tried again next report; it does not stop this report."""
        try:
            if remove_container(self.client(), name):
                log.warning("node %s: removed orphan container %s (no replica owns it)", self.node_name, name)
        except docker.errors.APIError as exc:
            log.info("node %s: orphan container %s not removed yet: %s", self.node_name, name, exc.explanation)

    # The threads --------------------------------------------------------------------------------
    def start(self) -> None:
        loops = [
            ("heartbeat", self._heartbeats),
            ("report", self._reports),
            ("network", self._networks),
            ("services", self._services),
            ("storage", self._storage),
        ]
        if settings.CONFIG.data_port:
            loops.append(("data", self._data))
        if self.sample_interval > 0:
            loops.append(("sample", self._samples))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"node-{name}-{self.node_name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._report_wake.set()
        self._services_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=DOCKER_TIMEOUT + 5)
        if self.services is not None:
            self.services.stop()
        if self.data_server is not None:
            self.data_server.stop()
        for client in (self._client, self._network_client):
            if client is not None:
                client.close()
        self.sampler.close()

    def _heartbeats(self) -> None:
        def once() -> bool:
            if not self.registered:
                self.register()
                return True
            if self.stamp():
                return True
            log.error(
                "node %s was removed while its agent runs: heartbeats stop; restart the agent to register it again",
                self.node_name,
            )
            self._stop.set()
            return False

        self._loop("record its heartbeat", once)

    def _reports(self) -> None:
        self._loop("report its containers", lambda: not self.registered or self.inspect(), wake=self._report_wake)

    def _networks(self) -> None:
        def once() -> bool:
            if self.registered:
                self.networks()
            return True

        self._loop("keep its networks", once)

    def _services(self) -> None:
        def once() -> bool:
            from networking.node import NodeServices

            if not self.registered:
                return True
            if self.services is None:
                services = NodeServices(
                    node_name=self.node_name, wake=self._services_wake, on_container_event=self._report_wake.set
                )
                services.start()  # a failure is logged by _loop and tried again next second
                self.services = services
            self.services.refresh()
            return True

        self._loop("serve its DNS and load balancer", once, interval=1, wake=self._services_wake)

    def _storage(self) -> None:
        def once() -> bool:
            from storage.bootstrap import ensure_node_pool
            from storage.node import report_pools

            if self.registered:
                ensure_node_pool(self.node_name)  # HIVEMIND_STORAGE_POOL (off unless `make run` says otherwise)
                report_pools(self.node_name)
            return True

        self._loop("report its storage pools", once)

    def _data(self) -> None:
        """The node's data endpoint (volume replication streams, storage/channel.py): listening
        and registered; a port taken or an address missing is logged and tried again."""
        from storage import channel

        refused: list[str] = []  # the last bind error, said once rather than with a traceback every beat

        def once() -> bool:
            if not self.registered:
                return True
            if self.data_server is None:
                address = settings.CONFIG.data_address or self.address
                try:
                    self.data_server = channel.DataServer(self.node_name, address, settings.CONFIG.data_port)
                except OSError as exc:
                    reason = f"cannot listen on {address}:{settings.CONFIG.data_port}: {exc.strerror or exc}"
                    if refused != [reason]:
                        log.warning(
                            "node %s: no data endpoint (volume replication to and from it waits): %s; "
                            "set HIVEMIND_DATA_ADDRESS to an address of this machine, or HIVEMIND_DATA_PORT=0",
                            self.node_name, reason,
                        )  # fmt: skip
                        refused[:] = [reason]
                    return True
                refused.clear()
                log.info("node %s: data endpoint listening at %s", self.node_name, self.data_server.url)
            channel.register(self.node_name, self.data_server.url)
            return True

        self._loop("serve its data endpoint", once)

    def _samples(self) -> None:
        def once() -> bool:
            if self.registered:  # before, the node's row may not exist: samples would have no node
                self.sample()
            return True

        self._loop("sample its containers' usage", once, interval=self.sample_interval)

    def _loop(self, what: str, once, *, interval: int | None = None, wake: threading.Event | None = None) -> None:
        """Call `once` every interval (sooner when `wake` is set) until the agent stops or `once`
        says False; a failure (the database went away, say) is logged once per outage and tried
        again."""
        interval = interval or self.interval
        failing = False
        while not self._stop.is_set():
            try:
                if not once():
                    return
                if failing:
                    log.info("node %s: could %s again", self.node_name, what)
                failing = False
            except Exception:
                if not failing:
                    log.exception("node %s: could not %s; retrying every %ss", self.node_name, what, interval)
                failing = True
            finally:
                close_old_connections()
            if wake is None:
                self._stop.wait(interval)
            else:
                wake.wait(interval)
                wake.clear()  # before the pass: news arriving during it wakes the next one


_agent: Agent | None = None
_lock = threading.Lock()


def on_worker_ready(sender=None, **kwargs) -> None:
    """`worker_ready`: start the agent when this worker consumes this node's queue."""
    global _agent
    consumer = getattr(sender, "task_consumer", None)
    queues = {queue.name for queue in getattr(consumer, "queues", None) or []}
    queue = f"node.{settings.NODE_NAME}"
    if queue not in queues:
        return
    with _lock:
        if _agent is None:
            _agent = Agent()
            _agent.start()
            log.info(
                "node agent started for %s (heartbeat every %ss, usage samples %s)",
                queue,
                _agent.interval,
                f"every {_agent.sample_interval}s" if _agent.sample_interval else "off",
            )


def on_worker_shutdown(sender=None, **kwargs) -> None:
    """`worker_shutdown`: a clean stop makes the node not ready at once instead of after three beats."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
    if agent is None:
        return
    agent.stop()
    if agent.registered:
        try:
            services.node_agent_stopped(name=agent.node_name)
            log.info("node %s: agent stopped, node marked not-ready", agent.node_name)
        except Exception:
            log.exception("node %s: could not mark the node not-ready on shutdown", agent.node_name)
        finally:
            close_old_connections()
