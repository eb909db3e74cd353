"""The node side of tenant networks: what one node holds, kept as the database says.

A node holds a network (its Docker bridge network with the node's range and gateway, a VXLAN
device on that bridge, one forwarding entry per peer node) while a replica placed on the
node joins it. `join()` makes it so for a rollout's replicas before they start (on the
node, inside the `apps.start` step); `NodeNetworking.reconcile()`, run by the agent on
every beat and on demand (`networking.sync`, sent when a node takes a new slot of a
network to the network's peers and to every ready node holding a network, whose transit
routes to it), repairs drift: devices deleted by hand, peers that joined, left or changed
address, networks nobody on the node uses any more (removed, with their Docker network and
devices), the transit device and its routes to the other nodes' slots (networking/
transit.py: routing between networks across nodes) and the node's nftables table
(networking/nft.py).

Passes on one node never run at once (a lock file per node under the var dir): the agent's
thread and the worker's steps are different processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import timedelta

import docker
from django.conf import settings
from django.utils import timezone

from networking import ipam
from networking.models import Address, Network, NodeRange
from networking.overlay import (
    Segment,
    bridge_name,
    docker_network_name,
    ensure_segment,
    present_segments,
    remove_segment,
)

log = logging.getLogger(__name__)

REPORT_EVERY = 5  # seconds between two reports of the node's network figures
GRACE = timedelta(seconds=10)  # a slot just allocated is kept while its replicas are being created


def underlay_address(address: str) -> str:
    """A node's address as an IP (a host name is resolved); "" when it has none."""
    if not address:
        return ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(address, None)[0][4][0]
    except OSError:
        return ""


def networks_of(spec: dict, tenant_id: int) -> list[Network]:
    """The networks a revision's replicas join (none named: the tenant's default)."""
    names = spec.get("networks") or []
    if names:
        found = {n.name: n for n in Network.objects.filter(tenant_id=tenant_id, name__in=names)}
        return [found[name] for name in names if name in found]
    default = Network.objects.filter(tenant_id=tenant_id, is_default=True).first()
    return [default] if default is not None else []


def segment(row: NodeRange, local: str) -> Segment:
    """The Segment one node's slot describes: peers are the other nodes holding the network
    (of the underlay's family: a VXLAN device has one local address)."""
    network = row.network
    family = ipaddress.ip_address(local).version
    peers = []
    others = NodeRange.objects.filter(network=network).exclude(node_id=row.node_id).select_related("node")
    for other in others.order_by("node__name"):
        peer = underlay_address(other.node.address)
        if peer and ipaddress.ip_address(peer).version == family and peer != local:
            peers.append(peer)
    return Segment(
        network_id=network.pk,
        tenant_id=network.tenant_id,
        vni=network.vni,
        subnet4=network.subnet4 or None,
        subnet6=network.subnet6 or None,
        range4=row.range4 or None,
        range6=row.range6 or None,
        gateway4=row.gateway4 or None,
        gateway6=row.gateway6 or None,
        local=local,
        peers=tuple(peers),
    )


@contextmanager
def node_lock(node_name: str):
    path = settings.VAR_DIR / "run" / f"network-{node_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NodeNetworking:
    """One node's networks: its slots, devices and rules."""

    def __init__(self, *, node, client: docker.DockerClient | None, netns: str | None = None) -> None:
        self.node = node
        self.client = client
        self.netns = settings.CONFIG.node_netns if netns is None else netns
        self.local = underlay_address(node.address)
        if not self.local and node.name == settings.NODE_NAME:  # not registered yet: what it will register
            self.local = underlay_address(settings.CONFIG.node_address)

    def _segment(self, row: NodeRange) -> Segment:
        if not self.local:
            raise RuntimeError(
                f"node {self.node.name} has no underlay address (set HIVEMIND_NODE_ADDRESS): "
                f"its networks cannot reach other nodes"
            )
        return segment(row, self.local)

    # -- joining, from a rollout's step ----------------------------------------------------------
    def join(self, networks: Iterable[Network]) -> tuple[list[str], list[str]]:
        """Make every network exist here; returns (Docker network names, node names that should
        sync now because this node just took a slot: the network's peers, whose forwarding
        entries add it, and every ready node holding a network, whose transit routes to it)."""
        from hivemind.nodes.models import Node

        names, peers, new_slot = [], set(), False
        with node_lock(self.node.name):
            self._remove_strays()
            for network in networks:
                self._check_routes(network)
                existed = NodeRange.objects.filter(network=network, node=self.node).exists()
                row = ipam.node_range(network, self.node)
                names.append(ensure_segment(self.client, self._segment(row), node=self.node.name, netns=self.netns))
                if not existed:
                    new_slot = True
                    peers.update(
                        NodeRange.objects.filter(network=network)
                        .exclude(node=self.node)
                        .values_list("node__name", flat=True)
                    )
            self._sync_transit()
            self._apply_rules()
        if new_slot:  # every node with a transit routes to the new slot (and floods to this node, if new)
            peers.update(
                Node.objects.filter(status=Node.Status.READY, network_ranges__isnull=False)
                .exclude(pk=self.node.pk)
                .values_list("name", flat=True)
                .distinct()
            )
        return names, sorted(peers)

    # -- the reconcile pass ----------------------------------------------------------------------
    def wanted(self) -> set[int]:
        """Networks some replica on this node joins (by its revision's spec)."""
        from hivemind.applications.models import Container

        wanted: set[int] = set()
        cache: dict = {}
        live = Container.objects.filter(node=self.node).exclude(state=Container.State.REMOVED)
        for tenant_id, spec in live.values_list("tenant_id", "revision__spec").distinct():
            key = (tenant_id, tuple((spec or {}).get("networks") or []))
            if key not in cache:
                cache[key] = {n.pk for n in networks_of(spec or {}, tenant_id)}
            wanted |= cache[key]
        return wanted

    def reconcile(self) -> dict[str, list[int]]:
        """One pass; returns what it did, for logs and tests."""
        done: dict[str, list[int]] = {"ensured": [], "removed": []}
        with node_lock(self.node.name):
            wanted = self.wanted()
            fresh = timezone.now() - GRACE
            rows = list(NodeRange.objects.filter(node=self.node).select_related("network"))
            for row in rows:
                if row.network_id not in wanted and row.created_at < fresh:
                    self._leave(row.network_id)
                    row.delete()
                    done["removed"].append(row.network_id)
                    continue
                ensure_segment(self.client, self._segment(row), node=self.node.name, netns=self.netns)
                self.hairpin([row.network_id])  # ports of containers started since (a heal, say)
                done["ensured"].append(row.network_id)
            done["removed"] += self._remove_strays()  # a deleted network, or one left half-made
            self._sync_transit()
            self._apply_rules(force=True)
            self._remove_legacy()
        return done

    def _check_routes(self, network: Network) -> None:
        """Refuse a network whose prefix overlaps a route this node already has (its LAN, a VPN,
        another platform's bridge): its containers could not reach what that route leads to.
        The network's own bridge, the default routes and the transit's routes do not count."""
        from pyroute2 import IPRoute

        from networking.transit import ROUTE_PROTO

        own = bridge_name(network.pk, self.node.name)
        prefixes = [ipaddress.ip_network(p) for p in (network.subnet4, network.subnet6) if p]
        with IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for prefix in prefixes:
                for route in ipr.get_routes(family=socket.AF_INET if prefix.version == 4 else socket.AF_INET6):
                    if route.get_attr("RTA_TABLE") not in (254, 255) or not route["dst_len"]:  # main, local; no default
                        continue
                    if route["proto"] == ROUTE_PROTO:  # to another node's slot of a network (transit)
                        continue
                    device = names.get(route.get_attr("RTA_OIF"), "?")
                    dst = ipaddress.ip_network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}", strict=False)
                    if device != own and dst.overlaps(prefix) and not dst.is_link_local:
                        raise RuntimeError(
                            f"network {network.name}'s prefix {prefix} overlaps the route to {dst} via {device} "
                            f"on node {self.node.name}: give the network a prefix from another pool"
                        )

    def _sync_transit(self) -> None:
        """The transit device and its routes (networking/transit.py) as the database says: a
        route to every slot of every network on every other node, through that node; no device
        at all while this node holds no network."""
        from networking.transit import Route, Transit, ensure_transit, peer_addresses, remove_transit

        held = {row.network_id: row for row in NodeRange.objects.filter(node=self.node)}
        if not held or not self.local:
            remove_transit(netns=self.netns)
            return
        family = ipaddress.ip_address(self.local).version
        first4 = next((held[n].gateway4 for n in sorted(held) if held[n].gateway4), None)
        addresses: dict[int, str] = {}
        routes = []
        others = NodeRange.objects.exclude(node=self.node).select_related("node").order_by("network_id", "slot")
        for row in others:
            if row.node_id not in addresses:
                addresses[row.node_id] = underlay_address(row.node.address)
            address = addresses[row.node_id]
            if not address or ipaddress.ip_address(address).version != family or address == self.local:
                continue  # not reachable over this node's underlay
            own = held.get(row.network_id)
            if row.range4:
                routes.append(Route(row.range4, row.node_id, source=(own.gateway4 if own else None) or first4))
            if row.range6:
                routes.append(Route(row.range6, row.node_id))
        peers = peer_addresses(addresses.values(), self.local)
        wanted = Transit(node_id=self.node.pk, local=self.local, peers=peers, routes=tuple(routes))
        ensure_transit(wanted, netns=self.netns)

    def _remove_strays(self) -> list[int]:
        """Hivemind networks on this Docker that the node holds no slot of (a network deleted
        while the node was away, say) go before new ones are made: their prefixes may be
        handed out again, and Docker refuses a network whose prefix overlaps another's."""
        from networking.overlay import OverlayError

        held = set(NodeRange.objects.filter(node=self.node).values_list("network_id", flat=True))
        removed = []
        for network_id in sorted(present_segments(self.client) - held):
            try:
                self._leave(network_id)
                removed.append(network_id)
            except OverlayError as exc:  # containers still on it: the next pass tries again
                log.warning("node %s: stray network %s not removed yet: %s", self.node.name, network_id, exc)
        return removed

    def hairpin(self, network_ids: Iterable[int | str]) -> None:
        """Hairpin mode on the container ports of these networks' bridges here, so a replica's
        call to its own app's virtual address can come back to it (networking/nft.py)."""
        from networking import nft

        for network_id in network_ids:  # an id, or its Docker network's name hm-net-<id>
            network_id = int(str(network_id).removeprefix("hm-net-"))
            nft.set_hairpin(bridge_name(network_id, self.node.name), netns=self.netns)

    def _leave(self, network_id: int) -> None:
        Address.objects.filter(network_id=network_id, node=self.node).delete()
        remove_segment(self.client, network_id, node=self.node.name, netns=self.netns)
        log.info("node %s: left network %s (no replica here joins it)", self.node.name, network_id)

    def _apply_rules(self, *, force: bool = False) -> None:
        from networking import rules

        rules.apply_node_rules(self, force=force)

    def _remove_legacy(self) -> None:
        """The per-tenant bridges of earlier releases (`hivemind-t<id>`): removed once no container uses them."""
        from networking.tenant_networks import LABEL, remove_network

        for network in self.client.networks.list(filters={"label": LABEL}):
            attrs = network.attrs
            if (attrs.get("Labels") or {}).get("io.hivemind.network"):
                continue
            network.reload()
            if network.attrs.get("Containers"):
                continue
            try:
                remove_network(self.client, int(network.attrs["Labels"][LABEL]), self.node.name)
                log.info("node %s: removed the legacy network %s (no container uses it)", self.node.name, network.name)
            except (docker.errors.APIError, RuntimeError, ValueError) as exc:
                log.warning("node %s: legacy network %s not removed yet: %s", self.node.name, network.name, exc)

    def bridges(self) -> dict[int, str]:
        return {row.network_id: bridge_name(row.network_id, self.node.name) for row in self.node.network_ranges.all()}


def record_addresses(containers, node, networks: dict[str, dict]) -> None:
    """Each container's addresses on each Hivemind network, as Docker gave them (from the
    node's range): `networks` maps a container's name to its endpoints by Docker network
    name, as `docker ps` lists them. One statement for all (insert, or update the row of a
    container and network already recorded: a step's retry)."""
    rows = []
    for container in containers:
        for name, endpoint in (networks.get(container.name) or {}).items():
            if not name.startswith("hm-net-"):
                continue
            network_id = name.removeprefix("hm-net-")
            if not network_id.isdigit() or docker_network_name(int(network_id)) != name:
                continue
            rows.append(
                Address(
                    network_id=int(network_id),
                    container=container,
                    node=node,
                    ipv4=(endpoint or {}).get("IPAddress") or None,
                    ipv6=(endpoint or {}).get("GlobalIPv6Address") or None,
                )
            )
    Address.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["network", "container"], update_fields=["node", "ipv4", "ipv6"]
    )


def clear_node(client: docker.DockerClient, *, node: str, netns: str = "", attempts: int = 5) -> None:
    """Remove everything Hivemind made on a node: its managed containers, its networks with
    their devices, the legacy per-tenant networks and the nftables table. For a node leaving
    the platform for good (and for tests between cases). A container started meanwhile (a
    worker still healing, say) is removed on the next attempt."""

    from networking import nft, rules, transit
    from networking.overlay import OverlayError
    from networking.tenant_networks import LABEL, remove_network

    for attempt in range(attempts):
        for container in client.containers.list(all=True, filters={"label": "io.hivemind.managed=true"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        try:
            for network_id in present_segments(client):
                remove_segment(client, network_id, node=node, netns=netns)
            for network in client.networks.list(filters={"label": LABEL}):
                remove_network(client, int(network.attrs["Labels"][LABEL]), node)
            break
        except (OverlayError, docker.errors.APIError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    transit.remove_transit(netns=netns)
    nft.remove(table=rules.TABLE, netns=netns)
    rules.forget(node)


class NodeServices:
    """The node's DNS server and load balancer, kept as the database says.

    The agent's services loop calls `refresh()` whenever `wake` is set, and at least every
    second. `wake` is set by (threads of this object, started by `start()`):
    - an announcement on Redis (networking/discovery.py): another node's replica turned
      healthy or unhealthy, a replica started or went away, an app got its virtual address;
    - Docker's event stream on this node: one of its replicas changed health (the pass then
      reads the new health, writes it and announces it to the other nodes). A replica that
      died or started calls `on_container_event` instead (the agent wakes its report, whose
      writes are announced in turn).
    A third thread reports the node's counters every REPORT_EVERY seconds (report()).
    So a change reaches every node's DNS and virtual addresses in about one pass, not in a
    second or two of polling (bench/healthy_to_served.py).
    """

    def __init__(
        self,
        *,
        node_name: str,
        netns: str | None = None,
        address: str | None = None,
        port: int = 53,
        wake: threading.Event | None = None,
        on_container_event=None,
        docker_host: str | None = None,
    ):
        self.node_name = node_name
        self.docker_host = docker_host  # None: this node's (HIVEMIND_DOCKER_HOST)
        self.netns = settings.CONFIG.node_netns if netns is None else netns
        self.address = settings.CONFIG.dns_address if address is None else address
        self.port = port
        self.server = None
        self.wake = wake or threading.Event()
        self.on_container_event = on_container_event
        self._directory = None
        self._client = None  # this node's Docker, for the replicas' health
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events = None  # Docker's event stream, closed by stop()

    def start(self) -> None:
        """Serve DNS (when an address is configured) and follow the news (both idempotent)."""
        if self.address and self.server is None:
            self._serve_dns()
        if not self._threads:
            threads = (
                ("announcements", self._announcements),
                ("docker-events", self._docker_events),
                ("counters", self._reports),
            )
            for name, target in threads:
                thread = threading.Thread(target=target, name=f"node-{name}-{self.node_name}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve_dns(self) -> None:
        """Put the DNS address on the node's loopback (idempotent) and serve it."""
        from pyroute2 import IPRoute

        from networking.dns import DnsServer

        family = ipaddress.ip_address(self.address).version
        with IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            if not ipr.get_addr(index=lo, address=self.address):
                ipr.addr("add", index=lo, address=self.address, prefixlen=32 if family == 4 else 128)
        self.server = DnsServer(self.address, self.port, netns=self.netns)
        self.server.start()
        log.info("node %s: DNS for *.hivemind. on %s:%s", self.node_name, self.address, self.server.port)

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _announcements(self) -> None:
        from django.db import connection

        from networking import discovery

        try:
            discovery.listen(self.wake, self._stopping)
        finally:
            connection.close()

    def _reports(self) -> None:
        """report() every REPORT_EVERY seconds, on a thread of its own: reading the counters of a
        big table takes a few hundred milliseconds, which news must not wait for."""
        from django.db import close_old_connections, connection

        from hivemind.nodes.models import Node

        failing = False
        try:
            while not self._stopping.wait(REPORT_EVERY):
                try:
                    node = Node.objects.filter(name=self.node_name).first()
                    if node is not None:
                        self.report(node)
                    failing = False
                except Exception:
                    if not failing:
                        log.exception("node %s: could not report its network counters; retrying", self.node_name)
                    failing = True
                finally:
                    close_old_connections()
        finally:
            connection.close()

    def _docker_events(self) -> None:
        """Docker's events about this node's replicas, until stop(); after a failure (Docker
        restarting, say) again a second later."""
        from hivemind.nodes.agent import managed_filter
        from hivemind.nodes.runtime import docker_client

        while not self._stopping.is_set():
            client = None
            try:
                client = docker_client(self.docker_host, timeout=10)
                self._events = client.events(decode=True, filters={"type": "container", **managed_filter()})
                self.wake.set()  # what happened while not following
                for event in self._events:
                    action = event.get("Action") or event.get("status") or ""
                    if action.startswith("health_status"):
                        self.wake.set()
                    elif action in ("start", "die", "destroy", "oom") and self.on_container_event is not None:
                        self.on_container_event()
            except Exception as exc:  # Docker away or restarting: follow again
                if not self._stopping.is_set():
                    log.debug("node %s: Docker's events: %s; following again in 1 s", self.node_name, exc)
            finally:
                self._events = None
                if client is not None:
                    client.close()
            self._stopping.wait(1)

    def watch_health(self) -> int:
        """The health of this node's replicas as Docker shows it now (one listing), written to
        their rows where it changed: every node's next refresh then takes a replica that turned
        unhealthy out of DNS and its app's virtual address, without waiting for this node's
        next full report (HIVEMIND_NODE_HEARTBEAT). Returns the rows changed."""
        from hivemind.applications.models import Container
        from hivemind.nodes.agent import _health_in, managed_filter
        from hivemind.nodes.runtime import docker_client
        from networking import discovery

        if self._client is None:
            self._client = docker_client(self.docker_host, timeout=10)
        seen = {}
        for item in self._client.api.containers(filters=managed_filter()):
            health = _health_in(item.get("Status") or "").strip("()").removeprefix("health: ")
            seen[(item.get("Names") or ["/"])[0].lstrip("/")] = health or "none"
        changed = 0
        rows = Container.objects.filter(node__name=self.node_name, name__in=seen, state=Container.State.RUNNING)
        for name, health in rows.values_list("name", "health"):
            if seen[name] != health:
                changed += Container.objects.filter(node__name=self.node_name, name=name).update(health=seen[name])
        if changed:
            discovery.changed()  # the other nodes serve it at once
        return changed

    def refresh(self) -> None:
        from hivemind.nodes.models import Node
        from networking import discovery, rules

        try:
            self.watch_health()
        except Exception as exc:  # Docker slow or away: the agent's report says so; DNS goes on
            log.debug("node %s: could not read its replicas' health: %s", self.node_name, exc)
        found = discovery.read()
        if self.server is not None and found.directory != self._directory:
            self.server.update(found.directory)
            self._directory = found.directory
        node = Node.objects.filter(name=self.node_name).first()
        if node is None:
            return
        with node_lock(self.node_name):
            # The rules alone: Docker is the network pass's business, not this one's.
            rules.apply_node_rules(NodeNetworking(node=node, client=None, netns=self.netns), services=found.services)

    def report(self, node) -> None:
        """The node's nftables counters and DNS stats, for /metrics (networking/metrics.py)."""
        from networking import nft
        from networking.models import NodeTraffic

        dns = {}
        if self.server is not None:
            stats = self.server.stats
            dns = {"queries": stats.queries, "nxdomain": stats.nxdomain, "forwarded": stats.forwarded}
        counters = {name: list(value) for name, value in nft.counters(netns=self.netns).items()}
        NodeTraffic.objects.update_or_create(node=node, defaults={"counters": counters, "dns": dns})
