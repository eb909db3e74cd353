"""Volumes in apps: the spec's `volumes` (checked here), where replicas must go, and the
bind mounts a node gives a replica's container.

    volumes: [{volume: data, path: /var/lib/data}, {volume: config, path: /etc/app, read_only: true}]

    volume_templates: [{name: data, size: 1Gi, path: /var/lib/data}]

A template gives every replica index its own volume, `<app>-<template>-<index>` (like a
StatefulSet's claim templates): made in a default pool of the node the replica is first placed
on, found again by name when the replica is replaced or rescheduled, and kept when the app
scales down or goes (delete it with `hivemind volume rm`). A volume of that name that exists
already is adopted.

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


MAX_TEMPLATES = 8
STORAGE_LABEL = "hivemind.io/storage"  # "ready" on nodes with a ready default pool (the scheduler adds it)


def clean_volume_templates(value, mounts: list[dict]) -> list[dict]:
    """The spec's `volume_templates`: [{name, size, path, read_only, pool}], paths unique with the mounts'."""
    from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
    from storage.services import parse_size

    if value in (None, []):
        return []
    if not isinstance(value, list):
        _fail("volume_templates", "expected a list of {name, size, path, read_only, pool}")
    if len(value) > MAX_TEMPLATES:
        _fail("volume_templates", f"at most {MAX_TEMPLATES} templates, got {len(value)}")
    templates, names, paths = [], set(), {m["path"] for m in mounts}
    for index, item in enumerate(value):
        field = f"volume_templates[{index}]"
        if not isinstance(item, dict):
            _fail(field, "expected an object {name, size, path, read_only, pool}")
        unknown = set(item) - {"name", "size", "path", "read_only", "pool"}
        if unknown:
            _fail(field, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        name = item.get("name")
        if not isinstance(name, str) or not is_dns_label(name) or name in names:
            _fail(f"{field}.name", f"expected a unique template name ({DNS_LABEL_RULE})")
        names.add(name)
        try:
            size = parse_size(item.get("size"), field=f"{field}.size")
        except ValidationError as exc:
            raise ValidationError({f"{field}.size": exc.message_dict[f"{field}.size"]}) from None
        path = clean_mount_path(f"{field}.path", item.get("path"))
        if path in paths:
            _fail(f"{field}.path", f"{path} is mounted twice")
        paths.add(path)
        read_only = item.get("read_only", False)
        if not isinstance(read_only, bool):
            _fail(f"{field}.read_only", "expected true or false")
        pool = item.get("pool")
        if pool is not None and (not isinstance(pool, str) or not is_dns_label(pool)):
            _fail(f"{field}.pool", "expected a storage pool's name")
        templates.append({"name": name, "size": size, "path": path, "read_only": read_only, "pool": pool})
    return templates


def claim_name(app_name: str, template: str, replica: int) -> str:
    return f"{app_name}-{template}-{replica}"


def check_templates(tenant, app_name: str, spec: dict, replicas: int) -> None:
    """Claim names fit in a DNS label for every replica index; named pools exist."""
    from storage.models import StoragePool

    for index, template in enumerate(spec.get("volume_templates") or []):
        longest = claim_name(app_name, template["name"], max(replicas - 1, 0))
        if len(longest) > 63:
            _fail(f"volume_templates[{index}].name", f"the replicas' volumes ({longest}) would be longer than 63")
        if template["pool"] and not StoragePool.objects.filter(name=template["pool"]).exists():
            _fail(f"volume_templates[{index}].pool", f"no storage pool named {template['pool']!r}")


def slot_placement(app, spec: dict, slot: int) -> dict:
    """The node selector a replica index needs for its template volumes: the node of those it
    has already, else (a template naming a pool) that pool's node, else a node with a ready
    default pool. {} without templates."""
    from hivemind.applications.spec import NODE_NAME_LABEL
    from storage.models import StoragePool, Volume

    templates = spec.get("volume_templates") or []
    if not templates:
        return {}
    names = [claim_name(app.name, t["name"], slot) for t in templates]
    volumes = Volume.objects.filter(tenant_id=app.tenant_id, name__in=names).select_related("pool__node")
    nodes = {v.pool.node.name for v in volumes if not v.pool.capabilities.shared}
    for template in templates:
        if template["pool"]:
            pool = StoragePool.objects.select_related("node").filter(name=template["pool"]).first()
            if pool is not None and not pool.capabilities.shared:  # a shared pool's: any node (labels)
                nodes.add(pool.node.name)
    if len(nodes) > 1:
        raise ValueError(f"replica {slot}'s volumes are on different nodes ({', '.join(sorted(nodes))})")
    if nodes:
        return {NODE_NAME_LABEL: nodes.pop()}
    if all(t["pool"] for t in templates):
        return {}  # every template names a shared pool: the labels of required_labels say where
    return {STORAGE_LABEL: "ready"}


def claim_volumes(app, spec: dict, slot: int, node, actor=None) -> list:
    """The template volumes of replica index `slot`, made (rows, quota) in a pool of `node` when
    missing: the node's start step creates them on disk before the replica starts."""
    from storage.models import StoragePool, Volume
    from storage.services import volume_claim

    made = []
    for template in spec.get("volume_templates") or []:
        name = claim_name(app.name, template["name"], slot)
        found = Volume.objects.filter(tenant_id=app.tenant_id, name=name).first()
        if found is not None:
            made.append(found)
            continue
        ready = StoragePool.objects.filter(status=StoragePool.Status.READY)
        pool = ready.filter(name=template["pool"]).first() if template["pool"] else None
        if pool is not None and not pool.capabilities.shared:
            pool = pool if pool.node_id == node.pk else None  # a node-local pool only on its node
        if not template["pool"]:
            pool = ready.filter(node=node, is_default=True).first()
        if pool is None:
            what = f"pool {template['pool']}" if template["pool"] else "default pool"
            raise ValueError(f"node {node.name} has no ready {what} for {name}")
        made.append(volume_claim(app=app, name=name, template=template, pool=pool, actor=actor))
    return made


def ensure_claims_here(containers) -> list[str]:
    """On the node, before its replicas start: their template volumes that are still being
    made exist in their pool (idempotent) and are ready."""
    from storage.models import Volume
    from storage.steps import provider_of

    done = []
    for container in containers:
        for template in container.revision.spec.get("volume_templates") or []:
            name = claim_name(container.app.name, template["name"], container.replica)
            volume = Volume.objects.select_related("pool").filter(tenant_id=container.tenant_id, name=name).first()
            if volume is None or volume.status != Volume.Status.CREATING:
                continue
            provider = provider_of(volume.pool)
            provider.prepare()
            provider.create(volume.handle, volume.size_bytes)
            Volume.objects.filter(pk=volume.pk, status=Volume.Status.CREATING).update(status=Volume.Status.READY)
            done.append(name)
    return done


def mounts_of(container) -> list[dict]:
    """Every mount of a replica: the spec's volumes and its own template volumes."""
    spec = container.revision.spec
    mounts = list(spec.get("volumes") or [])
    for template in spec.get("volume_templates") or []:
        name = claim_name(container.app.name, template["name"], container.replica)
        mounts.append({"volume": name, "path": template["path"], "read_only": template["read_only"]})
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


def required_labels(tenant_id: int, spec: dict) -> dict[str, str]:
    """The node labels a replica of this spec needs to attach its shared pools' volumes
    (storage/capabilities.py): {} when it mounts none."""
    from storage import capabilities
    from storage.models import StoragePool

    names = [m["volume"] for m in spec.get("volumes") or []]
    pool_names = [t["pool"] for t in spec.get("volume_templates") or [] if t.get("pool")]
    if not names and not pool_names:
        return {}
    pools = list(StoragePool.objects.filter(volumes__tenant_id=tenant_id, volumes__name__in=names).distinct())
    pools += list(StoragePool.objects.filter(name__in=pool_names))
    return capabilities.required(pools)


def clients_of_pool(pool) -> dict[str, list[str]]:
    """For each volume of a shared pool that replicas mount: the addresses of the nodes they are
    placed on (removed and missing ones left out), e.g. a managed NFS pool's access lists
    (storage/providers/nfs.py `export_to`)."""
    from hivemind.applications.models import Container
    from storage.models import Volume

    handles = {(tenant_id, name): f"v{pk}" for pk, tenant_id, name in
               Volume.objects.filter(pool=pool).values_list("pk", "tenant_id", "name")}  # fmt: skip
    if not handles:
        return {}
    placed = (
        Container.objects.filter(tenant_id__in={tenant for tenant, _ in handles}, node__isnull=False)
        .exclude(state__in=[Container.State.REMOVED, Container.State.MISSING])
        .select_related("revision", "app", "node")
    )
    clients: dict[str, set[str]] = {}
    for container in placed:
        for mount in mounts_of(container):
            handle = handles.get((container.tenant_id, mount["volume"]))
            if handle is not None and container.node.address:
                clients.setdefault(handle, set()).add(container.node.address)
    return {handle: sorted(addresses) for handle, addresses in clients.items()}


def binds(container) -> list[str]:
    """Docker bind mounts (`host:path:rw|ro`) for a replica's volumes, attached on this node:
    an encrypted volume's plaintext view is mounted here first (storage/crypt.py), before the
    container exists (a mount made later would not be visible in it)."""
    from storage.models import Volume
    from storage.steps import provider_of

    mounts = mounts_of(container)
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
        claim = _claim(volume.pool)
        if volume.encrypted:
            from storage import crypt

            host = crypt.attach(volume, provider, **claim)
        else:
            host = provider.attach(volume.handle, **claim)
        out.append(f"{host}:{mount['path']}:{'ro' if mount['read_only'] else 'rw'}")
    return out


def _claim(pool) -> dict:
    """How a replica's node attaches a volume of `pool`: a shared pool's in this node's name,
    taking it from a lost node (fenced first), never from a ready one."""
    if not pool.capabilities.shared:
        return {}
    from django.conf import settings

    return {"holder": settings.NODE_NAME, "may_fence": node_is_lost}


def node_is_lost(name: str) -> bool:
    """Whether a shared volume's holder may be fenced: the node is lost (its replicas are being
    rescheduled, hivemind/nodes/selectors.py) or no longer exists."""
    from hivemind.nodes.models import Node
    from hivemind.nodes.selectors import node_lost

    node = Node.objects.filter(name=name).first()
    return node is None or node_lost(node)


def _users_here(volume) -> list:
    """This node's live Container rows whose revision mounts the volume."""
    from django.conf import settings

    from hivemind.applications.models import Container

    rows = Container.objects.filter(
        tenant_id=volume.tenant_id, node__name=settings.NODE_NAME, state=Container.State.RUNNING
    ).select_related("revision", "app")
    return [row for row in rows if any(m["volume"] == volume.name for m in mounts_of(row))]


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
        f"app:{pk}" for pk, name, spec in apps.values_list("pk", "name", "revision__spec") if mounts(name, spec, volume)
    ]


def mounts(app_name: str, spec: dict | None, volume) -> bool:
    """Whether an app with this spec mounts the volume (by name, or as one of its template volumes)."""
    spec = spec or {}
    if any(m.get("volume") == volume.name for m in spec.get("volumes") or []):
        return True
    for template in spec.get("volume_templates") or []:
        prefix = f"{app_name}-{template['name']}-"
        if volume.name.startswith(prefix) and volume.name[len(prefix) :].isdigit():
            return True
    return False
