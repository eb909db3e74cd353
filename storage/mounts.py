"""Volumes in apps: the spec's `volumes` (checked here), where replicas must go, and the
bind mounts a node gives a replica's container.

    volumes: [{volume: data, path: /var/lib/data}, {volume: config, path: /etc/app, read_only: true}]

A tenant mounts only its own volumes, by name; the host directory behind a volume is the
node's business and never appears in a spec or in the API. A replica mounting a volume of a
node-local pool can only run on that pool's node: the scheduler is told so (a node selector),
and a replaced or rescheduled replica mounts the same volume again, with its data.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

MAX_MOUNTS = 16
# Mounting over these would break the container or expose the node: refused at and under them.
FORBIDDEN_UNDER = ("/proc", "/sys", "/dev")
# Refused exactly (a volume over /etc itself hides the image's configuration; /etc/app is fine).
FORBIDDEN_AT = ("/", "/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64", "/boot", "/run", "/var")


def _fail(field: str, message: str):
    raise ValidationError({field: message})


def clean_mount_path(field: str, value) -> str:
    if not isinstance(value, str) or not value:
        _fail(field, "expected an absolute path such as /data")
    if "\x00" in value or len(value) > 4096:
        _fail(field, "not a usable path")
    path = PurePosixPath(value)
    if not path.is_absolute():
        _fail(field, f"expected an absolute path, got {value!r}")
    if ".." in path.parts:
        _fail(field, f"'..' is not allowed in a mount path: {value!r}")
    text = str(path)
    if text in FORBIDDEN_AT or any(text == p or text.startswith(p + "/") for p in FORBIDDEN_UNDER):
        _fail(field, f"cannot mount a volume over the system path {text}")
    return text


def clean_volumes(value) -> list[dict]:
    """The spec's `volumes`: [{volume, path, read_only}] with unique paths."""
    from hivemind.core.names import DNS_LABEL_RULE, is_dns_label

    if value in (None, []):
        return []
    if not isinstance(value, list):
        _fail("volumes", "expected a list of {volume, path, read_only}")
    if len(value) > MAX_MOUNTS:
        _fail("volumes", f"at most {MAX_MOUNTS} mounts, got {len(value)}")
    mounts, paths = [], set()
    for index, item in enumerate(value):
        field = f"volumes[{index}]"
        if not isinstance(item, dict):
            _fail(field, "expected an object {volume, path, read_only}")
        unknown = set(item) - {"volume", "path", "read_only"}
        if unknown:
            _fail(field, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        name = item.get("volume")
        if not isinstance(name, str) or not is_dns_label(name):
            _fail(f"{field}.volume", f"expected a volume name ({DNS_LABEL_RULE})")
        path = clean_mount_path(f"{field}.path", item.get("path"))
        if path in paths:
            _fail(f"{field}.path", f"{path} is mounted twice")
        paths.add(path)
        read_only = item.get("read_only", False)
        if not isinstance(read_only, bool):
            _fail(f"{field}.read_only", "expected true or false")
        mounts.append({"volume": name, "path": path, "read_only": read_only})
    return mounts


def check_tenant_volumes(tenant, spec: dict) -> None:
    """Every mounted volume exists in the tenant and is usable (400 naming the first that is not)."""
    from storage.models import Volume

    names = [m["volume"] for m in spec.get("volumes") or []]
    if not names:
        return
    found = {v.name: v for v in Volume.objects.filter(tenant=tenant, name__in=names).select_related("pool__node")}
    for index, name in enumerate(names):
        volume = found.get(name)
        if volume is None:
            _fail(f"volumes[{index}].volume", f"tenant {tenant.slug} has no volume named {name!r}")
        if volume.status in (Volume.Status.DELETING, Volume.Status.FAILED):
            _fail(f"volumes[{index}].volume", f"volume {name} is {volume.status}")
    nodes = {found[name].pool.node.name for name in names}
    if len(nodes) > 1 and not all(found[name].pool.capabilities.shared for name in names):
        where = ", ".join(f"{n} on {found[n].pool.node.name}" for n in names)
        _fail("volumes", f"the volumes are on different nodes ({where}): a replica can only run where all of them are")


def required_node(tenant_id: int, spec: dict) -> str | None:
    """The node a replica of this spec must run on (its node-local volumes' pool node), or None."""
    from storage.models import Volume

    names = [m["volume"] for m in spec.get("volumes") or []]
    if not names:
        return None
    volumes = Volume.objects.filter(tenant_id=tenant_id, name__in=names).select_related("pool__node")
    nodes = {v.pool.node.name for v in volumes if not v.pool.capabilities.shared}
    return nodes.pop() if len(nodes) == 1 else None


def binds(container) -> list[str]:
    """Docker bind mounts (`host:path:rw|ro`) for a replica's volumes, attached on this node:
    an encrypted volume's plaintext view is mounted here first (storage/crypt.py), before the
    container exists (a mount made later would not be visible in it)."""
    from storage.models import Volume
    from storage.steps import provider_of

    mounts = container.revision.spec.get("volumes") or []
    if not mounts:
        return []
    volumes = {
        v.name: v
        for v in Volume.objects.filter(tenant_id=container.tenant_id, name__in=[m["volume"] for m in mounts])
        .select_related("pool__node")
    }  # fmt: skip
    out = []
    for mount in mounts:
        volume = volumes.get(mount["volume"])
        if volume is None:
            raise RuntimeError(f"volume {mount['volume']} does not exist (deleted after the app was deployed?)")
        if volume.status not in (Volume.Status.READY, Volume.Status.BUSY):
            raise RuntimeError(f"volume {volume.name} is {volume.status}")
        provider = provider_of(volume.pool)
        if volume.encrypted:
            from storage import crypt

            host = crypt.attach(volume, provider)
        else:
            host = provider.attach(volume.handle)
        out.append(f"{host}:{mount['path']}:{'ro' if mount['read_only'] else 'rw'}")
    return out


def _users_here(volume) -> list:
    """This node's live Container rows whose revision mounts the volume."""
    from django.conf import settings

    from hivemind.applications.models import Container

    rows = Container.objects.filter(
        tenant_id=volume.tenant_id, node__name=settings.NODE_NAME, state=Container.State.RUNNING
    ).select_related("revision")
    return [row for row in rows if any(m["volume"] == volume.name for m in row.revision.spec.get("volumes") or [])]


def stop_users(volume) -> list[str]:
    """Stop this node's running replicas that mount the volume (kept, to start again); their names."""
    import docker

    from hivemind.nodes.runtime import docker_client

    client = docker_client(timeout=60)
    stopped = []
    try:
        for row in _users_here(volume):
            try:
                client.api.stop(row.name, timeout=10)
                stopped.append(row.name)
            except docker.errors.NotFound:
                continue
    finally:
        client.close()
    return stopped


def start_containers(names: list[str]) -> list[str]:
    """Start these containers again (those that are gone are left to the app's self-healing)."""
    import docker

    from hivemind.nodes.runtime import docker_client

    client = docker_client(timeout=60)
    started = []
    try:
        for name in names:
            try:
                client.api.start(name)
                started.append(name)
            except docker.errors.NotFound:
                continue
    finally:
        client.close()
    return started


def app_locks(volume) -> list[str]:
    """Lock keys of the apps mounting the volume (a revert keeps their self-healing waiting)."""
    from hivemind.applications.models import App

    apps = App.objects.filter(tenant_id=volume.tenant_id).exclude(status=App.Status.DELETING)
    return [
        f"app:{pk}"
        for pk, spec in apps.values_list("pk", "revision__spec")
        if any(m.get("volume") == volume.name for m in (spec or {}).get("volumes") or [])
    ]
