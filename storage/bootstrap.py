"""The node's own default storage pool, set up with no questions asked (`make run`).

HIVEMIND_STORAGE_POOL says what: `auto` (what `make run` uses when it is not set) takes btrfs
on a sparse loop file under HIVEMIND_STORAGE_DIR (default <var dir>/storage) when the kernel
and tools can, else a plain `local` directory, and says which and why; `btrfs` and `local`
insist; `off` makes none. The agent owns the node side: it mounts the loop file again after
a reboot and registers the pool (named `<node>-default`, a default pool) once its node exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolPlan:
    provider: str  # "btrfs" | "local" | "" (none)
    path: Path
    reason: str


def storage_dir() -> Path:
    return Path(settings.CONFIG.storage_dir) if settings.CONFIG.storage_dir else settings.VAR_DIR / "storage"


def plan(mode: str | None = None) -> PoolPlan:
    """What the default pool will be, and why."""
    from storage.loopfs import btrfs_available

    mode = mode or settings.CONFIG.storage_pool
    root = storage_dir()
    if mode == "off":
        return PoolPlan("", root, "HIVEMIND_STORAGE_POOL=off")
    if mode == "local":
        return PoolPlan("local", root / "local", "HIVEMIND_STORAGE_POOL=local: sizes are reported, not enforced")
    missing = btrfs_available()
    if mode == "btrfs" and missing:
        raise RuntimeError(f"HIVEMIND_STORAGE_POOL=btrfs, but btrfs cannot be used here: {missing}")
    if missing:
        return PoolPlan("local", root / "local", f"btrfs cannot be used here ({missing}): sizes are not enforced")
    size = settings.CONFIG.storage_size
    return PoolPlan(
        "btrfs", root / "btrfs", f"btrfs on a {size // 2**30} GiB sparse loop file: sizes enforced, O(1) snapshots"
    )


def prepare(pool_plan: PoolPlan) -> None:
    """Make the pool's directory (mount the btrfs loop file, adopting one already mounted)."""
    from storage.loopfs import ensure_btrfs

    if pool_plan.provider == "btrfs":
        ensure_btrfs(storage_dir() / "pool.img", settings.CONFIG.storage_size, pool_plan.path)
    elif pool_plan.provider == "local":
        pool_plan.path.mkdir(parents=True, exist_ok=True)


def ensure_node_pool(node_name: str, mode: str | None = None):
    """The agent's part: the node's default pool mounted and registered (idempotent); None when off."""
    from django.db import IntegrityError

    from hivemind.nodes.models import Node
    from storage.models import StoragePool

    pool_plan = plan(mode)
    if not pool_plan.provider:
        return None
    node = Node.objects.filter(name=node_name).first()
    if node is None:
        return None
    prepare(pool_plan)
    existing = StoragePool.objects.filter(node=node, path=str(pool_plan.path)).first()
    if existing is not None:
        return existing
    try:
        pool = StoragePool.objects.create(
            name=f"{node_name}-default"[:63], provider=pool_plan.provider, node=node, path=str(pool_plan.path),
            is_default=True,
        )  # fmt: skip
    except IntegrityError:  # made meanwhile, or the name is taken by a pool elsewhere
        return StoragePool.objects.filter(node=node, path=str(pool_plan.path)).first()
    log.info("node %s: default storage pool %s: %s", node_name, pool.name, pool_plan.reason)
    return pool
