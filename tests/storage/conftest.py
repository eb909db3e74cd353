"""One btrfs file system on a sparse loop file for the whole session (the storage providers'
contract tests run on it), removed at the end: unmounted and its own loop device detached; and
the session's NFS servers (tests/nfs.py), started on first use and stopped at the end."""

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


@pytest.fixture(scope="session")
def nfs_server(tmp_path_factory):
    """A throwaway NFS server (nfs-ganesha on 127.0.0.1, tests/nfs.py) for the session, started
    on first use: what external NFS pools point at."""
    from tests import nfs

    server = nfs.start(tmp_path_factory.mktemp("nfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nfs_managed(btrfs_mount) -> Iterator[dict]:
    """A managed NFS pool's directory on the session's btrfs file system and its options: the
    ganesha its provider starts on the first `prepare` serves it for the whole session (as a
    node's agent keeps it), and is stopped (its bind mounts released) at the end."""
    from storage.providers import registry
    from tests import nfs
    from tests.conftest import free_port

    options = {"mode": "managed", "address": "127.0.0.1", "port": free_port()}
    path = btrfs_mount / "nfs-managed"
    try:
        yield {"path": path, "options": options}
    finally:
        nfs.stop_managed(registry.instance("nfs", path, registry.get("nfs").validate_options(options, {})))
