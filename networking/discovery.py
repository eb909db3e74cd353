"""What the nodes' DNS servers answer and their load balancers spread, read from the database.

One read serves every node (the same answers everywhere): each app's healthy replicas and
their addresses, its virtual addresses, and who is asking (every container address belongs
to one tenant). A replica is in DNS and behind its app's virtual address while it runs and
its health check passes (or it has none).
"""

from __future__ import annotations

from dataclasses import dataclass

from networking import dns, nft
from networking.models import Address, ServiceAddress

DOMAIN = "hivemind."


@dataclass(frozen=True)
class Discovery:
    directory: dns.Directory
    services: tuple[nft.Service, ...]


def serving(health: str) -> bool:
    return health in ("healthy", "none")


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
    apps = App.objects.exclude(status=App.Status.DELETING).values_list(
        "pk", "tenant__slug", "service_name", "name", "revision__spec"
    )
    for app_id, tenant, service_name, name, spec in apps:
        ports = (spec or {}).get("ports") or []
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
