"""The node side of storage: each agent prepares the pools its node holds and reports their
capacity and free space, and its volumes' usage, on every beat (hivemind/nodes/agent.py); then
it keeps the plaintext views of its encrypted volumes as its containers need them
(storage/crypt.py `reconcile`).

It also removes what no volume owns any more: a volume directory (or a volume's snapshots)
whose handle has no Volume row at all, left when the node went away in the middle of a create
(the workflow failed and dropped the row, but could not undo its node step) or was off while
its volume was deleted. Only after STRAY_GRACE since it last changed, so that nothing being
made or received right now is touched; a volume whose row lives in another pool (promoted
elsewhere after this node was lost) is kept: its data is the user's to remove."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from storage.models import StoragePool, Volume
from storage.providers.base import StorageError

log = logging.getLogger(__name__)
STRAY_GRACE = 600  # seconds
ATTACH_GRACE = 60  # seconds an attachment may wait for the container it was made for
_HANDLE = re.compile(r"v([0-9]{1,18})")


def report_pools(node_name: str) -> dict[str, str]:
    """Prepare and measure every pool of the node; returns {pool: "ready" | the error}."""
    from storage import services
    from storage.steps import provider_of

    done = {}
    for pool in StoragePool.objects.filter(node__name=node_name):
        try:
            provider = provider_of(pool)
            provider.prepare()
            capacity = provider.capacity()
        except (StorageError, OSError, LookupError) as exc:
            if pool.status != StoragePool.Status.UNAVAILABLE or pool.message != str(exc)[:2000]:
                log.warning("node %s: storage pool %s is unavailable: %s", node_name, pool.name, exc)
            services.pool_report(pool=pool, capacity=0, free=0, error=str(exc) or type(exc).__name__)
            done[pool.name] = str(exc)
            continue
        services.pool_report(pool=pool, capacity=capacity.total, free=capacity.free)
        keep_exports(pool, provider)
        for volume in Volume.objects.filter(pool=pool, status__in=[Volume.Status.READY, Volume.Status.BUSY]):
            try:
                used = provider.usage(volume.handle)
            except (StorageError, OSError) as exc:
                log.debug("node %s: usage of volume %s: %s", node_name, volume, exc)
                continue
            if used != volume.used_bytes:
                Volume.objects.filter(pk=volume.pk).update(used_bytes=used)
        remove_strays(pool, provider)
        done[pool.name] = "ready"
    keep_views(node_name)
    keep_attachments(node_name)
    return done


def keep_exports(pool: StoragePool, provider) -> None:
    """A pool that serves its volumes itself (a managed NFS pool's ganesha) lets in exactly the
    nodes whose replicas mount each volume; a failure is logged and tried again next beat."""
    export_to = getattr(provider, "export_to", None)
    if export_to is None:
        return
    from storage.mounts import clients_of_pool

    try:
        export_to(clients_of_pool(pool))
    except (StorageError, OSError) as exc:
        log.warning("node %s: could not update the exports of pool %s: %s", pool.node.name, pool.name, exc)


def keep_attachments(node_name: str) -> dict[str, str]:
    """This node's attachments of shared pools' volumes (e.g. RBD images through rbd-fuse):
    detach those no container here binds any more (after ATTACH_GRACE since they were last
    asked for: a replica being created binds its volume just after attaching it), and at once
    those another node holds now (this node was fenced while it was lost: its writes fail).
    Returns {pool/volume: what was done}."""
    from storage import crypt
    from storage.csi import staging as csi_staging
    from storage.providers import registry
    from storage.steps import provider_of

    done: dict[str, str] = {}
    shared = [p for p in StoragePool.objects.all() if _is_shared(p.provider, registry)]
    if not shared:
        return done
    now = time.time()
    for pool in shared:
        try:
            provider = provider_of(pool)
            attached = provider.attached_volumes()
            if not attached:
                continue  # the usual case: no need to ask Docker
            bound = set(crypt.bound_under(provider.root / "mounts")) | set(crypt.bound_under(crypt.run_dir()))
            bound |= set(csi_staging.staged())  # held by a CO through the CSI endpoint
            for handle in attached:
                if not provider.exists(handle):  # deleted meanwhile (its workflow ran on another node)
                    provider.detach(handle, fenced=True)
                    done[f"{pool.name}/{handle}"] = "detached (deleted)"
                    continue
                holders = provider.holders(handle)
                if holders and node_name not in holders:
                    provider.detach(handle, fenced=True)
                    log.warning("node %s: volume %s of pool %s is held by another node now: detached", node_name,
                                handle, pool.name)  # fmt: skip
                    done[f"{pool.name}/{handle}"] = "detached (held elsewhere)"
                elif handle not in bound and not provider.busy(handle) and idle(provider, handle, now):
                    provider.detach(handle)
                    done[f"{pool.name}/{handle}"] = "detached (unused)"
        except Exception as exc:  # one pool's trouble (a cluster not answering) must not stop the others
            log.warning("node %s: could not keep the attachments of pool %s: %s", node_name, pool.name, exc)
            done[pool.name] = f"failed: {exc}"
    return done


def idle(provider, handle: str, now: float) -> bool:
    """Attached for a container longer ago than ATTACH_GRACE (it has had time to bind it)."""
    return now - provider.attached_since(handle) > ATTACH_GRACE


def _is_shared(provider: str, registry) -> bool:
    try:
        return registry.get(provider).capabilities.shared
    except LookupError:
        return False


def keep_views(node_name: str) -> None:
    """Encrypted volumes' views: a failure is logged and tried again on the next beat."""
    from storage import crypt

    try:
        crypt.reconcile(node_name)
    except Exception as exc:  # Docker not answering, a mount refused: the pools' report stands
        log.warning("node %s: could not reconcile the encrypted volumes' views: %s", node_name, exc)


def _strays(directory: Path, now: float) -> dict[str, Path]:
    """Handles (v<pk>) of the entries under `directory` untouched for STRAY_GRACE."""
    found = {}
    if not directory.is_dir():
        return found
    for entry in directory.iterdir():
        if _HANDLE.fullmatch(entry.name) and now - entry.lstat().st_mtime >= STRAY_GRACE:
            found[entry.name] = entry
    return found


def remove_strays(pool: StoragePool, provider, *, now: float | None = None) -> list[str]:
    """Delete the pool's volumes and snapshot directories whose handle no Volume row has (see
    the module docstring); returns their handles."""
    now = time.time() if now is None else now
    layout = [getattr(provider, name, None) for name in ("volumes_dir", "snapshots_dir")]
    candidates: dict[str, Path] = {}
    for directory in layout:
        if directory is not None:
            candidates.update(_strays(directory, now))
    if not candidates:
        return []
    pks = {int(handle[1:]) for handle in candidates}
    owned = {f"v{pk}" for pk in Volume.objects.filter(pk__in=pks).values_list("pk", flat=True)}
    removed, node = [], pool.node.name
    for handle in sorted(set(candidates) - owned):
        try:
            provider.delete(handle)  # the volume and its snapshots, whichever are there
        except (StorageError, OSError) as exc:
            log.warning("node %s: stray volume %s in pool %s not removed yet: %s", node, handle, pool.name, exc)
            continue
        log.warning("node %s: removed %s from pool %s: no volume owns it any more", node, handle, pool.name)
        removed.append(handle)
    return removed
