"""One btrfs file system on a sparse loop file for the whole session (the storage providers'
contract tests run on it), removed at the end: unmounted and its own loop device detached."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import loopfs

BTRFS_POOL_SIZE = 2 << 30  # sparse: takes only what the tests write

_pools = itertools.count(1)


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory) -> Iterator[Path]:
    reason = loopfs.btrfs_available()
    if reason is not None:
        pytest.skip(f"no btrfs on this node: {reason}")
    base = tmp_path_factory.mktemp("btrfs")
    image, mountpoint = base / "pool.img", base / "mnt"
    fs = loopfs.ensure_btrfs(image, BTRFS_POOL_SIZE, mountpoint)
    try:
        yield fs.mountpoint
    finally:
        loopfs.release(mountpoint, image)
        image.unlink(missing_ok=True)


@pytest.fixture
def btrfs_root(btrfs_mount) -> Path:
    """A fresh pool directory on the session's btrfs file system."""
    return btrfs_mount / f"pool{next(_pools)}"
