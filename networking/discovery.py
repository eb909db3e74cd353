"""What the nodes' DNS servers answer and their load balancers spread, read from the database.

One read serves every node (the same answers everywhere): each app's healthy replicas and
their addresses, its virtual addresses, and who is asking (every container address belongs
to one tenant). A replica is in DNS and behind its app's virtual address while it runs and
its health check passes (or it has none).

News travels by Redis publish/subscribe: whatever changes what the nodes serve (a replica's
state, health or addresses, an app's virtual address) calls `changed()` once it is committed,
and every node's services loop (networking/node.py NodeServices) wakes up and serves the new
state at once instead of at its next once-a-second pass. A lost message costs at most that
second: the pass runs anyway.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import transaction

from networking import dns, nft
from networking.models import Address, ServiceAddress

DOMAIN = "hivemind."
log = logging.getLogger(__name__)
_clients: dict[str, redis.Redis] = {}


def channel(url: str | None = None) -> str:
    """The channel of one platform: Redis channels ignore database numbers, two platforms
    (a `make run` and the test suite) on one Redis must not wake each other."""
    url = url or settings.CELERY_BROKER_URL
    return f"hivemind:{urlsplit(url).path.strip('/') or '0'}:discovery"


def changed() -> None:
    """Wake every node's services loop once the current transaction commits (at once outside
    one). Several calls in one transaction send one message; a failure to send is logged and
    forgotten (the loops' every-second pass is the fallback)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(entry[1] is _publish for entry in connection.run_on_commit):
        return
    transaction.on_commit(_publish)


def _publish() -> None:
    url = settings.CELERY_BROKER_URL
    try:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        client.publish(channel(url), b"1")
    except redis.RedisError as exc:
        log.debug("could not announce a discovery change: %s", exc)


def listen(wake: threading.Event, stop: threading.Event) -> None:
    """Set `wake` on every announcement until `stop` is set (reconnecting after a failure)."""
    url = settings.CELERY_BROKER_URL
    while not stop.is_set():
        client = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(url))
            wake.set()  # what was announced while not listening
            while not stop.is_set():
                if pubsub.get_message(timeout=1.0) is not None:
                    wake.set()
        except redis.RedisError as exc:
            log.debug("discovery announcements: %s; listening again in 1 s", exc)
            stop.wait(1)
        finally:
            client.close()


@dataclass(frozen=True)
class Discovery:
    directory: dns.Directory
    services: tuple[nft.Service, ...]


def serving(health: str) -> bool:
    return health in ("healthy", "none")


_ports: dict[int, tuple[dict, ...]] = {}  # revision id -> its spec's ports (revisions never change)


def _revision_ports(revisions: set) -> dict[int, tuple[dict, ...]]:
    """The ports of these revisions' specs; a spec is read and decoded once per process."""
    from hivemind.applications.models import AppRevision

    missing = [pk for pk in revisions if pk is not None and pk not in _ports]
    if missing:
        for pk, spec in AppRevision.objects.filter(pk__in=missing).values_list("pk", "spec"):
            _ports[pk] = tuple((spec or {}).get("ports") or ())
    return {pk: _ports[pk] for pk in revisions if pk in _ports}


def read() -> Discovery:
    from hivemind.applications.models import App, Container

    clients: dict[str, str] = {}
    replicas: dict[int, list[tuple[str, str | None, str | None]]] = {}
    rows = Address.objects.values_list(
        "ipv4", "ipv6", "container__tenant__slug", "container__app_id", "container__app__name", "container__replica",
        "container__state", "container__health",
    )  # fmt: skip
    for ipv4, ipv6, tenant, app_id, app_name, replica, state, health in rows:
        for address in (ipv4, ipv6):
            if address:
                clients[address] = tenant
        if state == Container.State.RUNNING and serving(health):
            # `<app>-<replica>`, the container's host name: web-0.web.<tenant>.hivemind.
            replicas.setdefault(app_id, []).append((f"{app_name}-{replica}", ipv4, ipv6))
    vips = {row.app_id: row for row in ServiceAddress.objects.all()}
    records: dict[str, dict] = {}
    services = []
    apps = list(
        App.objects.exclude(status=App.Status.DELETING).values_list(
            "pk", "tenant__slug", "service_name", "name", "revision_id"
        )
    )
    ports_of = _revision_ports({revision for *_, revision in apps})
    for app_id, tenant, service_name, name, revision in apps:
        ports = ports_of.get(revision, ())
        vip = vips.get(app_id)
        members = sorted(replicas.get(app_id, []))
        view = records.setdefault(tenant, {})
        view.update(
            dns.app_records(
                tenant=tenant,
                app=service_name or name,
                vip4=vip.ipv4 if vip else None,
                vip6=vip.ipv6 if vip else None,
                replicas=members,
                ports=[(p["name"], p["protocol"], p["container_port"]) for p in ports if p.get("name")],
                domain=DOMAIN,
            )
        )
        if vip is not None and ports:
            services.append(
                nft.Service(
                    service_id=app_id,
                    vip4=vip.ipv4,
                    vip6=vip.ipv6,
                    ports=tuple((p["protocol"], p["container_port"], p["container_port"]) for p in ports),
                    backends4=tuple(m[1] for m in members if m[1]),
                    backends6=tuple(m[2] for m in members if m[2]),
                )
            )
    return Discovery(directory=dns.Directory(clients=clients, records=records), services=tuple(services))
