"""Making and removing an app's containers on this node's Docker (run by the node agent).

Every function is idempotent: a container is found by its name (and must carry our
labels), adopted when it exists, created otherwise; removing a container that is gone
is a success.
"""

from __future__ import annotations

import contextlib
import time

import docker
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


def ensure_running(client: docker.DockerClient, container: Container, network: str):
    """Create (or adopt) and start the container of this replica; returns the Docker object."""
    spec = container.revision.spec
    existing = _find(client, container.name)
    if existing is None:
        resources = spec["resources"]
        ports = {f"{p['container_port']}/{p['protocol']}": p["host_port"] for p in spec["ports"] if p.get("host_port")}
        try:
            existing = client.containers.create(
                spec["image"],
                command=(spec["command"] + spec["args"]) or None,
                name=container.name,
                hostname=f"{container.app.name}-{container.replica}",
                labels=labels_for(container),
                environment=spec["env"],
                network=network,
                ports=ports or None,
                healthcheck=_healthcheck(spec["health"]),
                restart_policy={"Name": spec["restart"]} if spec["restart"] != "no" else None,
                nano_cpus=resources["cpu_limit"] * NANO // 1000 if resources["cpu_limit"] else None,
                mem_limit=resources["memory_limit"] or None,
                mem_reservation=resources["memory"] or None,
                detach=True,
            )
        except docker.errors.ImageNotFound as exc:
            raise ContainerFailed(f"image {spec['image']} not found: {exc.explanation}") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent attempt created it: adopt it
                existing = _find(client, container.name)
            elif exc.status_code and exc.status_code >= 500:
                raise TransientError(f"Docker: {exc.explanation}") from None
            else:
                raise ContainerFailed(f"Docker refused the container: {exc.explanation}") from None
    existing.reload()
    if existing.status != "running":
        try:
            existing.start()
        except docker.errors.APIError as exc:
            raise ContainerFailed(f"cannot start {container.name}: {exc.explanation}") from None
    return existing


def wait_ready(client: docker.DockerClient, container: Container, *, settle: float = 0.0) -> dict:
    """Wait until the container runs and, if it has a health check, is healthy.

    Returns {"docker_id", "health"}. Raises ContainerFailed when it exits or turns unhealthy.
    """
    health = container.revision.spec["health"]
    if health:
        budget = health["start_period"] + (health["interval"] + health["timeout"]) * (health["retries"] + 1) + 10
    else:
        budget = settle + 30
    deadline = time.monotonic() + budget
    running_since = None
    while True:
        found = _find(client, container.name)
        if found is None:
            raise ContainerFailed(f"{container.name} disappeared while starting")
        state = found.attrs["State"]
        status = (state.get("Health") or {}).get("Status", "none")
        if state["Status"] in ("exited", "dead"):
            raise ContainerFailed(f"{container.name} exited with code {state.get('ExitCode')}")
        if status == "unhealthy":
            raise ContainerFailed(f"{container.name} is unhealthy: {_last_probe(state)}")
        if state["Status"] == "running":
            running_since = running_since or time.monotonic()
            if (health and status == "healthy") or (not health and time.monotonic() - running_since >= settle):
                return {"docker_id": found.id, "health": status}
        if time.monotonic() > deadline:
            raise ContainerFailed(f"{container.name} was not ready after {budget:.0f} s (status {state['Status']})")
        time.sleep(0.2)


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
