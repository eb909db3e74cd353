"""Making and removing an app's containers on this node's Docker (run by the node agent).

Every function is idempotent: a container is found by its name (and must carry our
labels), adopted when it exists, created otherwise; removing a container that is gone
is a success.
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import docker
from django.conf import settings
from docker.types import Healthcheck

from hivemind.applications.models import (
    LABEL_APP,
    LABEL_MANAGED,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_TENANT,
    Container,
)
from hivemind.workflows.registry import TransientError

NANO = 1_000_000_000


class Ready(NamedTuple):
    """A started replica as the node's `docker ps` shows it."""

    docker_id: str
    health: str  # "healthy", or "none" without a health check
    networks: dict  # Docker network name -> its endpoint (IPAddress, GlobalIPv6Address, ...)


class ContainerFailed(Exception):
    """The container exited or stayed unhealthy: a permanent failure of the step."""


def labels_for(container: Container) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_TENANT: str(container.tenant_id),
        LABEL_APP: str(container.app_id),
        LABEL_REVISION: str(container.revision.number),
        LABEL_REPLICA: str(container.replica),
    }


def _healthcheck(health: dict | None) -> Healthcheck | None:
    if not health:
        return None
    if health["type"] == "cmd":
        test = ["CMD", *health["command"]]
    elif health["type"] == "tcp":
        test = ["CMD-SHELL", f"nc -w 1 127.0.0.1 {health['port']} </dev/null || exit 1"]
    else:
        test = ["CMD-SHELL", f"wget -q -O /dev/null http://127.0.0.1:{health['port']}{health['path']} || exit 1"]
    return Healthcheck(
        test=test,
        interval=int(health["interval"] * NANO),
        timeout=int(health["timeout"] * NANO),
        retries=health["retries"],
        start_period=int(health["start_period"] * NANO),
    )


def _find(client: docker.DockerClient, name: str):
    try:
        found = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if found.labels.get(LABEL_MANAGED) != "true":
        raise ContainerFailed(f"a container named {name} exists that Hivemind did not make; it is left alone")
    return found


def dns_options(container: Container) -> dict:
    """The node's DNS server as the container's resolver (Docker's embedded one forwards to it),
    and its tenant's domain to search, so `<app>` resolves within the tenant."""
    address = settings.CONFIG.dns_address
    if not address:
        return {}
    return {"dns": [address], "dns_search": [f"{container.tenant.slug}.hivemind"]}


def volume_binds(container: Container) -> list[str]:
    """The replica's volumes, attached on this node (storage/mounts.py)."""
    from storage.mounts import binds

    try:
        return binds(container)
    except Exception as exc:  # a missing volume, a pool that cannot attach: the replica cannot start
        raise ContainerFailed(f"{container.name}: {exc}") from None


def ensure_running(client: docker.DockerClient, container: Container, networks: list[str]) -> str:
    """Create (or adopt) and start the container of this replica on its networks (the first
    one at creation, the others connected before it starts); returns its Docker id.

    Docker's low-level calls, two per new container (create, start): the SDK's high-level
    `containers.create` inspects each container it made as well, a third call we do not need.
    """
    spec = container.revision.spec
    resources = spec["resources"]
    api = client.api
    ports = {f"{p['container_port']}/{p['protocol']}": p["host_port"] for p in spec["ports"] if p.get("host_port")}
    host_config = api.create_host_config(
        port_bindings=ports or None,
        restart_policy={"Name": spec["restart"]} if spec["restart"] != "no" else None,
        nano_cpus=resources["cpu_limit"] * NANO // 1000 if resources["cpu_limit"] else None,
        mem_limit=resources["memory_limit"] or None,
        mem_reservation=resources["memory"] or None,
        network_mode=networks[0],
        binds=volume_binds(container) or None,
        **dns_options(container),
    )
    try:
        made = api.create_container(
            spec["image"],
            command=(spec["command"] + spec["args"]) or None,
            name=container.name,
            hostname=f"{container.app.name}-{container.replica}",
            labels=labels_for(container),
            environment=spec["env"],
            ports=[tuple(port.split("/", 1)) for port in ports] or None,
            healthcheck=_healthcheck(spec["health"]),
            host_config=host_config,
            networking_config=api.create_networking_config({networks[0]: api.create_endpoint_config()}),
            detach=True,
        )
        docker_id, running = made["Id"], False
    except docker.errors.ImageNotFound as exc:
        raise ContainerFailed(f"image {spec['image']} not found: {exc.explanation}") from None
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            if exc.status_code and exc.status_code >= 500:
                raise TransientError(f"Docker: {exc.explanation}") from None
            raise ContainerFailed(f"Docker refused the container: {exc.explanation}") from None
        found = _find(client, container.name)  # an earlier attempt made it: adopt it (if it is ours)
        if found is None:
            raise TransientError(f"{container.name} vanished while being adopted") from None
        docker_id, running = found.id, found.status == "running"
    if not running:  # a new container is "created"; an adopted one may be stopped
        _connect(api, docker_id, networks[1:])
        try:
            api.start(docker_id)
        except docker.errors.APIError as exc:
            raise ContainerFailed(f"cannot start {container.name}: {exc.explanation}") from None
    return docker_id


def _connect(api, docker_id: str, networks: list[str]) -> None:
    """Join the further networks (idempotent: an adopted container may have joined them already)."""
    for network in networks:
        try:
            api.connect_container_to_network(docker_id, network)
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc.explanation or exc):
                raise ContainerFailed(f"cannot join network {network}: {exc.explanation}") from None


def wait_all_ready(client: docker.DockerClient, containers: list[Container]) -> dict[str, Ready]:
    """Wait until every container runs and, where it has a health check, is healthy; one
    `docker ps` per look. Returns name -> Ready, with the addresses Docker gave it (the same
    listing has them: no inspect per container). Raises ContainerFailed naming the first
    that exited or turned unhealthy, or that was not ready in time."""
    if not containers:
        return {}
    budgets = {c.name: _budget(c.revision.spec["health"]) for c in containers}
    checked = {c.name: bool(c.revision.spec["health"]) for c in containers}
    deadline = time.monotonic() + max(budgets.values())
    ready: dict[str, Ready] = {}
    while True:
        listed = {
            found.attrs["Names"][0].lstrip("/"): found
            for found in client.containers.list(
                all=True, sparse=True, filters={"label": f"{LABEL_APP}={containers[0].app_id}"}
            )
        }
        for name in budgets.keys() - ready.keys():
            found = listed.get(name)
            if found is None:
                raise ContainerFailed(f"{name} disappeared while starting")
            state, status = found.attrs.get("State", ""), found.attrs.get("Status", "")
            if state in ("exited", "dead"):
                raise ContainerFailed(f"{name} exited: {status}")
            if "(unhealthy)" in status:
                raise ContainerFailed(f"{name} is unhealthy: {_last_probe(client.containers.get(name).attrs['State'])}")
            if state == "running" and (not checked[name] or "(healthy)" in status):
                networks = (found.attrs.get("NetworkSettings") or {}).get("Networks") or {}
                ready[name] = Ready(found.id, "healthy" if checked[name] else "none", networks)
        if len(ready) == len(budgets):
            return ready
        if time.monotonic() > deadline:
            late = sorted(budgets.keys() - ready.keys())
            raise ContainerFailed(f"{', '.join(late[:3])} not ready after {max(budgets.values()):.0f} s")
        time.sleep(0.2)


def _budget(health: dict | None) -> float:
    if not health:
        return 30.0
    return health["start_period"] + (health["interval"] + health["timeout"]) * (health["retries"] + 1) + 10


def _last_probe(state: dict) -> str:
    log = (state.get("Health") or {}).get("Log") or []
    return (log[-1].get("Output") or "").strip()[:200] if log else "no probe output"


def remove(client: docker.DockerClient, name: str, *, timeout: int = 10) -> bool:
    """Stop and remove the container if it exists; True when one was removed."""
    found = _find(client, name)
    if found is None:
        return False
    with contextlib.suppress(docker.errors.APIError):  # already stopped: removal below forces it
        found.stop(timeout=timeout)
    try:
        found.remove(force=True)
    except docker.errors.NotFound:
        return False
    return True
