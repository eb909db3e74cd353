"""The node side of storage: each agent prepares the pools its node holds and reports their
capacity and free space, and its volumes' usage, on every beat (hivemind/nodes/agent.py); then
it keeps the plaintext views of its encrypted volumes as its containers need them
(storage/crypt.py `reconcile`)."""

from __future__ import annotations

import logging

from storage.models import StoragePool, Volume
from storage.providers.base import StorageError

log = logging.getLogger(__name__)


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
        for volume in Volume.objects.filter(pool=pool, status__in=[Volume.Status.READY, Volume.Status.BUSY]):
            try:
                used = provider.usage(volume.handle)
            except (StorageError, OSError) as exc:
                log.debug("node %s: usage of volume %s: %s", node_name, volume, exc)
                continue
            if used != volume.used_bytes:
                Volume.objects.filter(pk=volume.pk).update(used_bytes=used)
        done[pool.name] = "ready"
    keep_views(node_name)
    return done


def keep_views(node_name: str) -> None:
    """Encrypted volumes' views: a failure is logged and tried again on the next beat."""
    from storage import crypt

    try:
        crypt.reconcile(node_name)
    except Exception as exc:  # Docker not answering, a mount refused: the pools' report stands
        log.warning("node %s: could not reconcile the encrypted volumes' views: %s", node_name, exc)
