"""The Ceph RBD provider: each volume an RBD image in a Ceph pool, reachable from every node
that can reach the cluster (a shared pool), with snapshots, copy-on-write clones, online
expansion and incremental streams in RBD's own `export-diff` format.

The control plane talks to Ceph through librados/librbd (Debian's python3-rados and
python3-rbd, which scripts/bootstrap.sh links into the virtualenv), never by parsing the
output of the `ceph` or `rbd` commands.

Pool options (StoragePool.options; the key is a sealed secret, storage/sealing.py):

    monitors   the cluster's monitor addresses, as ceph.conf's mon_host takes them
    user       the cephx user without "client." (default "admin")
    pool       the RBD pool in the cluster (default "rbd")
    fs         the file system made on an image's first attach: "xfs" (default: it grows
               online without CAP_SYS_RESOURCE) or "ext4" (grown while detached)
    prefix     the images' name prefix (default "hivemind-"): the image of volume v7 is
               "hivemind-v7", so a pool can hold other images too

The data path on a node (`attach`): the kernel's rbd and nbd drivers are used where the node
has them; otherwise (and on every node measured so far) `rbd-fuse` exposes the image as a file,
a loop device makes it a block device, and the file system on it is mounted. Layout under the
pool's directory on the node:

    .ceph/ceph.conf, .ceph/keyring   what rbd-fuse reads (mode 0600 in a 0700 directory)
    fuse/<v>/                        rbd-fuse's view of the one image
    mounts/<v>/                      the image's file system
    mounts/<v>/data/                 the volume: what a container bind-mounts (`path`)

Clones are copy-on-write children of a protected snapshot (ready in O(1) whatever the size).
Deleting a snapshot that clones depend on (or the volume holding it) first flattens those
clones, which copies the parent's data into each of them: slower, but nothing is lost and no
user-visible dependency remains.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import threading
import time
from pathlib import Path
from typing import BinaryIO

from storage.providers.base import (
    NAME,
    Capabilities,
    Capacity,
    OptionError,
    Provider,
    StorageError,
    check_name,
    check_size,
)
from storage.providers.commands import is_mountpoint as _is_mountpoint
from storage.providers.commands import loop_devices_of, processes_of, run
from storage.providers.registry import register

MiB = 1 << 20
CONNECT_TIMEOUT = 10  # seconds: a cluster that does not answer fails the step, not hangs it
OP_TIMEOUT = 60
RELEASE_TIMEOUT = 10  # seconds for a detached loop device to let go of rbd-fuse's file
FILESYSTEMS = ("xfs", "ext4")
MIN_SIZE = {"xfs": 300 * MiB, "ext4": MiB}  # mkfs.xfs refuses smaller file systems
# Not exclusive-lock (nor object-map and fast-diff, which need it): librbd's managed lock and
# the advisory lock that says which node holds an image are one lock ("rbd_lock" on the image's
# header), so with it an attach would wait forever. One writer at a time is what the advisory
# lock and fencing give (`_claim`).
FEATURES = ("layering", "deep-flatten")
DIFF_HEADER = b"rbd diff v1\n"
LOCK_PREFIX = "hivemind-node:"  # an image's advisory lock cookie: the node holding it
DIFF_BLOCK = 4 * MiB  # data records are split to this size: memory stays bounded

TOOL_TIMEOUT = 300  # seconds for a tool on the data path: a FUSE server that hangs fails the step


def _run(command: list[str], what: str, **kwargs) -> str:
    return run(command, what, timeout=TOOL_TIMEOUT, **kwargs)


_connections: dict[tuple, object] = {}
_connections_lock = threading.Lock()


def options_valid(options: dict, secrets: dict) -> dict:
    """The pool options normalised, or OptionError naming the bad one (the API's 400)."""
    known = {"monitors", "user", "pool", "fs", "prefix"}
    unknown = set(options) - known
    if unknown:
        raise OptionError(f"unknown option {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
    monitors = options.get("monitors")
    if not isinstance(monitors, str) or not monitors.strip() or len(monitors) > 1000 or "\n" in monitors:
        raise OptionError("monitors: expected the cluster's monitor addresses, e.g. 10.0.0.1:6789,10.0.0.2:6789")
    user = options.get("user", "admin")
    if not isinstance(user, str) or not user or not all(c.isalnum() or c in "._-" for c in user):
        raise OptionError(f"user: expected a cephx user name without 'client.', got {str(user)[:60]!r}")
    pool = options.get("pool", "rbd")
    if not isinstance(pool, str) or not pool or len(pool) > 100 or not all(c.isalnum() or c in "._-" for c in pool):
        raise OptionError(f"pool: expected an RBD pool name, got {str(pool)[:60]!r}")
    fs = options.get("fs", "xfs")
    if fs not in FILESYSTEMS:
        raise OptionError(f"fs: expected one of {', '.join(FILESYSTEMS)}, got {str(fs)[:20]!r}")
    prefix = options.get("prefix", "hivemind-")
    if not isinstance(prefix, str) or len(prefix) > 40 or not all(c.isalnum() or c in "._-" for c in prefix):
        raise OptionError(f"prefix: expected up to 40 letters, digits, '.', '_' or '-', got {str(prefix)[:60]!r}")
    key = secrets.get("key")
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise OptionError("key: expected the cephx user's secret (base64, as `ceph auth get-key` prints it)", "secrets")
    extra = set(secrets) - {"key"}
    if extra:
        raise OptionError(f"unknown secret {sorted(extra)[0]!r}; an RBD pool takes only 'key'", "secrets")
    return {"monitors": monitors.strip(), "user": user, "pool": pool, "fs": fs, "prefix": prefix}


def _librados():
    try:
        import rados
        import rbd
    except ImportError:
        raise StorageError(
            "Ceph's Python bindings are missing on this node (apt-get install python3-rados python3-rbd, "
            "then make bootstrap, which links them into the virtualenv)"
        ) from None
    return rados, rbd


@register
class RbdProvider(Provider):
    name = "rbd"
    capabilities = Capabilities(
        snapshot=True,
        clone=True,
        expand=True,
        expand_online=True,
        enforces_size=True,
        export=True,
        incremental=True,
        encryption=True,
        shared=True,
        node_expansion=True,
        access_modes=("ReadWriteOnce", "ReadOnlyMany"),
    )

    def __init__(self, root, options: dict | None = None) -> None:
        super().__init__(root, options)
        self.monitors = self.options.get("monitors", "")
        self.user = self.options.get("user", "admin")
        self.pool = self.options.get("pool", "rbd")
        self.fs = self.options.get("fs", "xfs")
        self.prefix = self.options.get("prefix", "hivemind-")
        self.key = self.options.get("key", "")  # the unsealed secret, put here by storage.steps.provider_of
        self.node = self.options.get("node", "")  # the node this instance acts on (storage.steps.provider_of)

    @classmethod
    def min_size(cls, options: dict) -> int:
        return MIN_SIZE.get(options.get("fs", "xfs"), MiB)

    @classmethod
    def validate_options(cls, options: dict, secrets: dict) -> dict:
        return options_valid(options, secrets)

    @classmethod
    def node_support(cls) -> str | None:
        """ "fuse" where rbd-fuse, FUSE, loop devices and mkfs are there (the data path this
        provider drives; krbd and rbd-nbd are not needed), else None."""
        try:
            _librados()
        except StorageError:
            return None
        tools = ("rbd-fuse", "fusermount", "losetup", "mkfs.xfs", "mkfs.ext4", "mount")
        if not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
            return None
        return "fuse" if all(shutil.which(tool) for tool in tools) else None

    def describe(self) -> str:
        return f"RBD pool {self.pool} at {self.monitors}"

    # -- the cluster ---------------------------------------------------------------------------
    def _cluster(self):
        """One connection per process and cluster identity (a forked worker makes its own)."""
        rados, _ = _librados()
        if not self.monitors or not self.key:
            raise StorageError(f"{self.describe()}: the pool has no monitors or key configured")
        identity = (os.getpid(), self.monitors, self.user, self.key)
        with _connections_lock:
            cluster = _connections.get(identity)
            if cluster is not None and cluster.state == "connected":
                return cluster
            conf = {
                "mon_host": self.monitors,
                "key": self.key,
                "rados_mon_op_timeout": str(OP_TIMEOUT),
                "rados_osd_op_timeout": str(OP_TIMEOUT),
                "client_mount_timeout": str(CONNECT_TIMEOUT),
                "log_to_stderr": "false",
                "err_to_stderr": "false",
                # Breaking a lock must not blocklist its taker (the worker that attached, maybe
                # this very process): `_claim` fences the clients that use the image instead.
                "rbd_blocklist_on_break_lock": "false",
            }
            cluster = rados.Rados(rados_id=self.user, conf=conf)
            try:
                cluster.connect(timeout=CONNECT_TIMEOUT)
            except rados.Error as exc:
                cluster.shutdown()
                raise StorageError(f"{self.describe()}: cannot connect as client.{self.user}: {exc}") from None
            _connections[identity] = cluster
            return cluster

    @contextlib.contextmanager
    def _ioctx(self):
        rados, _ = _librados()
        try:
            ioctx = self._cluster().open_ioctx(self.pool)
        except rados.ObjectNotFound:
            raise StorageError(f"{self.describe()}: the cluster has no pool {self.pool}") from None
        except rados.Error as exc:
            raise StorageError(f"{self.describe()}: {exc}") from None
        try:
            yield ioctx
        finally:
            ioctx.close()

    @contextlib.contextmanager
    def _image(self, volume: str, *, snapshot: str | None = None, read_only: bool = False):
        _, rbd = _librados()
        with self._ioctx() as ioctx:
            try:
                image = rbd.Image(ioctx, self._image_name(volume), snapshot=snapshot, read_only=read_only)
            except rbd.ImageNotFound:
                if snapshot is not None and self.exists(volume):
                    raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist") from None
                raise StorageError(f"volume {volume} does not exist in {self.describe()}") from None
            try:
                yield image
            finally:
                image.close()

    def _image_name(self, volume: str) -> str:
        return f"{self.prefix}{check_name(volume)}"

    def _fail(self, what: str, exc: Exception) -> StorageError:
        return StorageError(f"{what}: {exc}")

    # -- the pool ------------------------------------------------------------------------------
    def prepare(self) -> None:
        with self._ioctx():
            pass
        for sub in ("fuse", "mounts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def capacity(self) -> Capacity:
        stats = self._cluster().get_cluster_stats()
        return Capacity(total=stats["kb"] * 1024, free=stats["kb_avail"] * 1024)

    # -- volumes -------------------------------------------------------------------------------
    def exists(self, volume: str) -> bool:
        _, rbd = _librados()
        name = self._image_name(volume)
        with self._ioctx() as ioctx:
            try:
                rbd.Image(ioctx, name, read_only=True).close()
            except rbd.ImageNotFound:
                return False
        return True

    def create(self, volume: str, size: int) -> None:
        check_size(size, volume)
        if size < self.min_size({"fs": self.fs}):
            raise StorageError(
                f"volume {volume}: an {self.fs} volume needs at least {self.min_size({'fs': self.fs})} bytes"
            )
        _, rbd = _librados()
        with self._ioctx() as ioctx:
            try:
                rbd.RBD().create(ioctx, self._image_name(volume), size, old_format=False, features=_features(rbd))
            except rbd.ImageExists:
                existing = self.size(volume)
                if existing != size:
                    raise StorageError(f"volume {volume} already exists with size {existing}") from None

    def delete(self, volume: str) -> None:
        _, rbd = _librados()
        if not self.exists(volume):
            self._forget_attachment(volume)
            return
        self.detach(volume)
        for snapshot in self.snapshots(volume):
            self.delete_snapshot(volume, snapshot)
        with self._ioctx() as ioctx:
            try:
                rbd.RBD().remove(ioctx, self._image_name(volume))
            except rbd.ImageNotFound:
                pass
            except rbd.ImageBusy:
                raise StorageError(
                    f"volume {volume} is in use on another node (its image has watchers): detach it there first"
                ) from None
            except rbd.Error as exc:
                raise self._fail(f"deleting volume {volume}", exc) from None

    def size(self, volume: str) -> int | None:
        if not self.exists(volume):
            return None
        with self._image(volume, read_only=True) as image:
            return image.size()

    def usage(self, volume: str) -> int:
        """What the volume's files use when it is attached here (the file system's count);
        otherwise the bytes the image has allocated in the cluster."""
        mount = self._mount(volume)
        if _is_mountpoint(mount):
            info = os.statvfs(mount)
            return (info.f_blocks - info.f_bfree) * info.f_frsize
        allocated = 0

        def count(offset, length, exists):
            nonlocal allocated
            if exists:
                allocated += length
            return 0

        with self._image(volume, read_only=True) as image:
            image.diff_iterate(0, image.size(), None, count, include_parent=False, whole_object=False)
        return allocated

    def expand(self, volume: str, size: int) -> None:
        check_size(size, volume)
        _, rbd = _librados()
        with self._image(volume) as image:
            current = image.size()
            if size < current:
                raise StorageError(f"volume {volume}: cannot shrink from {current} to {size} bytes")
            if size > current:
                try:
                    image.resize(size, allow_shrink=False)
                except rbd.Error as exc:
                    raise self._fail(f"expanding volume {volume}", exc) from None
        if _is_mountpoint(self._mount(volume)):
            self._grow_online(volume)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self, volume: str, snapshot: str) -> None:
        check_name(snapshot, "snapshot")
        _, rbd = _librados()
        mount = self._mount(volume)
        frozen = _is_mountpoint(mount)
        with self._image(volume) as image:
            if snapshot in {s["name"] for s in image.list_snaps()}:
                return
            if frozen:  # the file system's dirty data written and held still for the instant
                _run(["fsfreeze", "--freeze", str(mount)], f"freezing volume {volume} for snapshot {snapshot}")
            try:
                image.create_snap(snapshot)
            except rbd.ImageExists:
                pass
            except rbd.Error as exc:
                raise self._fail(f"snapshot {snapshot} of volume {volume}", exc) from None
            finally:
                if frozen:
                    _run(["fsfreeze", "--unfreeze", str(mount)], f"thawing volume {volume}")

    def snapshots(self, volume: str) -> list[str]:
        if not self.exists(volume):
            return []
        with self._image(volume, read_only=True) as image:
            listed = [(s["id"], s["name"]) for s in image.list_snaps() if NAME.fullmatch(s["name"])]
        return [name for _, name in sorted(listed)]

    def _snapshot_exists(self, image, snapshot: str) -> bool:
        return snapshot in {s["name"] for s in image.list_snaps()}

    def delete_snapshot(self, volume: str, snapshot: str) -> None:
        check_name(snapshot, "snapshot")
        _, rbd = _librados()
        if not self.exists(volume):
            return
        with self._image(volume) as image:
            if not self._snapshot_exists(image, snapshot):
                return
            image.set_snap(snapshot)
            children = image.list_children2()
            image.set_snap(None)
            for child in children:  # clones made from it stand alone first
                self._flatten_image(child["pool"], child["image"])
            try:
                if image.is_protected_snap(snapshot):
                    image.unprotect_snap(snapshot)
                image.remove_snap(snapshot)
            except rbd.ImageNotFound:
                pass
            except rbd.Error as exc:
                raise self._fail(f"deleting snapshot {snapshot} of volume {volume}", exc) from None

    def _protect(self, volume: str, snapshot: str) -> None:
        """The snapshot made a possible parent of clones (protected), or StorageError when it does not exist."""
        if not self.exists(volume):
            raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist")
        with self._image(volume) as image:
            if not self._snapshot_exists(image, snapshot):
                raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist")
            if not image.is_protected_snap(snapshot):
                image.protect_snap(snapshot)

    def _flatten_image(self, pool: str, name: str) -> None:
        _, rbd = _librados()
        ioctx = self._cluster().open_ioctx(pool)
        try:
            with rbd.Image(ioctx, name) as child:
                child.flatten()
        except rbd.ImageNotFound:
            pass
        finally:
            ioctx.close()

    def flatten(self, volume: str) -> None:
        """Copy the parent's data into a clone so it depends on nothing (idempotent)."""
        _, rbd = _librados()
        with self._image(volume) as image, contextlib.suppress(rbd.InvalidArgument):  # not a clone (any more)
            image.flatten()

    def parent(self, volume: str) -> str | None:
        """The snapshot `v<..>@s<..>` a clone still depends on, None when it stands alone."""
        _, rbd = _librados()
        with self._image(volume, read_only=True) as image:
            try:
                info = image.get_parent_image_spec()
            except rbd.ImageNotFound:
                return None
        name = info["image_name"]
        return f"{name.removeprefix(self.prefix)}@{info['snap_name']}"

    def revert(self, volume: str, snapshot: str) -> None:
        check_name(snapshot, "snapshot")
        _, rbd = _librados()
        attached = _is_mountpoint(self._mount(volume))
        with self._image(volume) as image:
            if not self._snapshot_exists(image, snapshot):
                raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist")
        if attached:  # the file system lets go of the image before it changes under it
            self.detach(volume)
        with self._image(volume) as image:
            try:
                image.rollback_to_snap(snapshot)
            except rbd.Error as exc:
                raise self._fail(f"reverting volume {volume} to snapshot {snapshot}", exc) from None
        if attached:
            self.attach(volume)

    def clone(self, volume: str, snapshot: str, new_volume: str, size: int) -> None:
        check_name(snapshot, "snapshot")
        check_size(size, new_volume)
        _, rbd = _librados()
        if self.exists(new_volume):
            existing = self.size(new_volume)
            if existing != size:
                raise StorageError(f"volume {new_volume} already exists with size {existing}")
            return
        self._protect(volume, snapshot)
        with self._ioctx() as ioctx:
            try:
                rbd.RBD().clone(ioctx, self._image_name(volume), snapshot, ioctx, self._image_name(new_volume),
                                features=_features(rbd))  # fmt: skip
            except rbd.ImageExists:
                pass
            except rbd.Error as exc:
                raise self._fail(f"cloning volume {new_volume} from {volume}@{snapshot}", exc) from None
        with self._image(new_volume) as image:
            if image.size() < size:
                image.resize(size)

    # -- streams (RBD's export-diff format, v1) ------------------------------------------------
    def export(self, volume: str, snapshot: str, out: BinaryIO, *, parent: str | None = None) -> int:
        """The snapshot as `rbd export-diff` writes it (only what changed since `parent`): a
        stream `rbd import-diff` reads too."""
        check_name(snapshot, "snapshot")
        if parent is not None:
            check_name(parent, "snapshot")
        with self._image(volume, snapshot=snapshot, read_only=True) as image:
            if parent is not None and not self._snapshot_exists(image, parent):
                raise StorageError(f"snapshot {parent} of volume {volume} does not exist")
            writer = _DiffWriter(out)
            writer.header(parent, snapshot, image.size())
            extents = []
            image.diff_iterate(0, image.size(), parent, lambda o, n, e: extents.append((o, n, e)) or 0)
            for offset, length, exists in extents:
                if not exists:
                    writer.zero(offset, length)
                    continue
                done = 0
                while done < length:
                    part = min(DIFF_BLOCK, length - done)
                    writer.data(offset + done, image.read(offset + done, part))
                    done += part
            writer.end()
        return writer.written

    def receive(self, volume: str, snapshot: str, stream: BinaryIO, *, parent: str | None = None) -> None:
        check_name(snapshot, "snapshot")
        if parent is not None:
            check_name(parent, "snapshot")
        _, rbd = _librados()
        if snapshot in self.snapshots(volume):
            return
        if parent is not None and parent not in self.snapshots(volume):
            raise StorageError(f"snapshot {parent} of volume {volume} does not exist")
        what = f"receiving snapshot {snapshot} of volume {volume}"
        reader = _DiffReader(stream, what)
        from_snap, _to_snap, size = reader.header()
        if (from_snap is None) != (parent is None):
            raise StorageError(f"{what}: the stream is {'incremental' if from_snap else 'full'}, expected otherwise")
        if parent is None and self.exists(volume):
            if self.snapshots(volume):  # a volume with a history: a full stream must not replace it
                raise StorageError(f"{what}: the volume exists here already; a full stream would replace it")
            self.delete(volume)  # the empty image an interrupted receive left
        if parent is None:
            with self._ioctx() as ioctx:
                rbd.RBD().create(ioctx, self._image_name(volume), size, old_format=False, features=_features(rbd))
        attached = parent is not None and self.attached(volume)
        if attached:  # the image's head changes for a moment: no file system may hold it
            self.detach(volume)
        try:
            with self._image(volume) as image:
                held = f"held-for-{snapshot}"  # the head as it was, put back after (not s<n>: never listed)
                if parent is not None:
                    if self._snapshot_exists(image, held):  # an interrupted receive: its head first
                        image.rollback_to_snap(held)
                    else:
                        image.create_snap(held)
                    image.rollback_to_snap(parent)  # the stream's writes land on exactly the parent
                if image.size() != size:
                    image.resize(size)
                for kind, offset, payload in reader.records():
                    if kind == "w":
                        image.write(payload, offset)
                    else:
                        image.discard(offset, payload)
                image.create_snap(snapshot)
                if parent is not None:
                    image.rollback_to_snap(held)
                    image.remove_snap(held)
        except rbd.Error as exc:
            if parent is None:
                self.delete(volume)
            raise self._fail(what, exc) from None
        except StorageError:
            if parent is None:
                self.delete(volume)
            raise
        finally:
            if attached:
                self.attach(volume)

    # -- the data path on this node ------------------------------------------------------------
    def _fuse(self, volume: str) -> Path:
        return self.root / "fuse" / check_name(volume)

    def _mount(self, volume: str) -> Path:
        return self.root / "mounts" / check_name(volume)

    def path(self, volume: str) -> Path:
        return self._mount(volume) / "data"

    def _write_conf(self) -> Path:
        directory = self.root / ".ceph"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        keyring = directory / "keyring"
        _write_private(keyring, f"[client.{self.user}]\n\tkey = {self.key}\n")
        conf = directory / "ceph.conf"
        _write_private(
            conf,
            f"[global]\nmon_host = {self.monitors}\nkeyring = {keyring}\nlog_to_stderr = false\n"
            f"client_mount_timeout = {CONNECT_TIMEOUT}\n",
        )
        return conf

    # -- who holds an image: an advisory lock per node, and fencing ------------------------------
    def holders(self, volume: str) -> list[str]:
        """The nodes holding the volume (the cookies of its advisory lock)."""
        with self._image(volume, read_only=True) as image:
            lockers = image.list_lockers() or {}
        return [cookie.removeprefix(LOCK_PREFIX) for _, cookie, _ in lockers.get("lockers", [])]

    def _claim(self, volume: str, holder: str, may_fence) -> None:
        """Take the volume for `holder`: an exclusive advisory lock whose cookie names the node.
        Held by another node: refused, unless `may_fence(node)` (it is lost); then every client
        that has the image open (that node's rbd-fuse) is blocklisted in the cluster, so it can
        never write again, and its lock is broken before ours is taken."""
        _, rbd = _librados()
        cluster = self._cluster()
        with self._image(volume) as image:
            lockers = (image.list_lockers() or {}).get("lockers", [])
            mine = f"{LOCK_PREFIX}{holder}"
            if any(cookie == mine for _, cookie, _ in lockers):
                return
            for client, cookie, _address in lockers:
                other = cookie.removeprefix(LOCK_PREFIX)
                if may_fence is None or not may_fence(other):
                    raise StorageError(f"volume {volume} is attached on node {other}: it can be attached on one node")
                ours = cluster.get_instance_id()
                for watcher in image.watchers_list():
                    if watcher["id"] != ours:
                        self._blocklist(watcher["addr"])
                with contextlib.suppress(rbd.ImageNotFound):
                    image.break_lock(client, cookie)
            try:
                image.lock_exclusive(mine)
            except (rbd.ImageBusy, rbd.ImageExists):
                raise StorageError(f"volume {volume} was attached on another node meanwhile") from None

    def _blocklist(self, address: str) -> None:
        command = json.dumps({"prefix": "osd blocklist", "blocklistop": "add", "addr": address})
        code, _, err = self._cluster().mon_command(command, b"", timeout=OP_TIMEOUT)
        if code != 0:
            raise StorageError(f"fencing client {address} of {self.describe()}: {err or code}")

    def _release(self, volume: str) -> None:
        """Give up this node's hold of the volume (others' holds stay)."""
        _, rbd = _librados()
        mine = f"{LOCK_PREFIX}{self.node}"
        with self._image(volume) as image:
            for client, cookie, _ in (image.list_lockers() or {}).get("lockers", []):
                if cookie == mine:
                    with contextlib.suppress(rbd.ImageNotFound):
                        image.break_lock(client, cookie)

    def attach(self, volume: str, *, holder: str | None = None, may_fence=None) -> Path:
        """The image as a mounted file system on this node (made on the first attach); returns
        the volume's directory in it. With `holder`, the volume is first taken for that node
        (`_claim`): one node at a time."""
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in {self.describe()}")
        if holder is not None:
            self._claim(volume, holder, may_fence)
        (self.root / "attached").mkdir(parents=True, exist_ok=True)
        (self.root / "attached" / volume).touch()  # when it was last asked for (storage/node.py)
        mount, fuse = self._mount(volume), self._fuse(volume)
        if not _is_mountpoint(mount):
            try:
                self._attach(volume, mount, fuse)
            except BaseException:
                with contextlib.suppress(StorageError):
                    self.detach(volume)  # no rbd-fuse or loop device left behind
                raise
        self.path(volume).mkdir(exist_ok=True)
        return self.path(volume)

    def _attach(self, volume: str, mount: Path, fuse: Path, *, image: str | None = None, grow: bool = True) -> None:
        """rbd-fuse + loop + mount of `image` (the volume's, or a snapshot's view) at `mount`."""
        image = image or self._image_name(volume)
        conf = self._write_conf()
        fuse.mkdir(parents=True, exist_ok=True)
        image_file = fuse / image
        if not _is_mountpoint(fuse):
            _run(["rbd-fuse", "-c", str(conf), "--id", self.user, "-p", self.pool, "-r", image, str(fuse)],
                 f"attaching volume {volume} (rbd-fuse)")  # fmt: skip
        if not image_file.exists():
            raise StorageError(f"attaching volume {volume}: rbd-fuse shows no image {image_file.name}")
        device = (
            _loop_of(image_file)
            or _run(["losetup", "-f", "--show", str(image_file)], f"attaching volume {volume} (loop device)").strip()
        )
        fs = _fs_type(device)  # what the image holds wins over the pool's choice for new ones
        if not fs:
            fs = self.fs
            make = ["mkfs.xfs", "-q", "-K", device] if fs == "xfs" else ["mkfs.ext4", "-q", "-E", "nodiscard", device]
            _run(make, f"making the {fs} file system of volume {volume}")
        elif fs == "ext4" and grow:
            self._grow_offline(volume, device)
        mount.mkdir(parents=True, exist_ok=True)
        # A clone's xfs has its origin's UUID, which xfs refuses to mount twice on a node.
        options = ["-o", "nouuid"] if fs == "xfs" else []
        _run(["mount", *options, device, str(mount)], f"mounting volume {volume}")
        if fs == "xfs" and grow:
            self._grow_online(volume)

    def detach(self, volume: str, *, fenced: bool = False) -> None:
        """Unmount the file system, free the loop device, stop rbd-fuse and give up this node's
        hold (idempotent). `fenced`: this node was cut off (its writes fail), so the file system
        is let go of lazily rather than flushed."""
        self._detach(volume, self._mount(volume), self._fuse(volume), self._image_name(volume), fenced=fenced)
        self._forget_attachment(volume)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "attached" / volume).unlink()
        if self.node and not fenced and self.exists(volume):
            self._release(volume)

    def _detach(self, volume: str, mount: Path, fuse: Path, image: str, *, fenced: bool = False) -> None:
        if _is_mountpoint(mount):
            _run(["umount", *(["-l"] if fenced else []), str(mount)], f"detaching volume {volume} (unmount)")
        if _is_mountpoint(fuse):
            device = _loop_of(fuse / image)
            if device:
                _run(["losetup", "-d", device], f"detaching volume {volume} (loop device {device})")
            # The kernel lets go of a loop device's file a moment after `losetup -d` returns.
            deadline = time.monotonic() + RELEASE_TIMEOUT
            while True:
                try:
                    _run(["fusermount", "-u", *(["-z"] if fenced else []), str(fuse)],
                         f"detaching volume {volume} (rbd-fuse)")  # fmt: skip
                    break
                except StorageError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            if fenced:
                _kill_fuse_daemon(fuse)

    # -- files of a snapshot, a volume to write into (backups and restores) --------------------
    @contextlib.contextmanager
    def snapshot_files(self, volume: str, snapshot: str):
        """The snapshot's files: a copy-on-write clone of it (O(1), removed after) attached on
        this node under `views/`; the snapshot itself stays untouched."""
        _, rbd = _librados()
        check_name(snapshot, "snapshot")
        view = f"{self._image_name(volume)}.view-{snapshot}"
        key = f"{volume}@{snapshot}"
        mount, fuse = self.root / "views" / key, self.root / "views-fuse" / key
        self._protect(volume, snapshot)
        # An interrupted attempt may have left the view: the same one.
        with self._ioctx() as ioctx, contextlib.suppress(rbd.ImageExists):
            rbd.RBD().clone(ioctx, self._image_name(volume), snapshot, ioctx, view, features=_features(rbd))
        try:
            if not _is_mountpoint(mount):
                self._attach(volume, mount, fuse, image=view, grow=False)
            yield mount / "data"
        finally:
            self._detach(volume, mount, fuse, view)
            for directory in (mount, fuse):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with self._ioctx() as ioctx, contextlib.suppress(rbd.ImageNotFound):
                rbd.RBD().remove(ioctx, view)

    @contextlib.contextmanager
    def writable(self, volume: str):
        """The volume attached here for a step that writes into it (a restore), in this node's
        name (refused while another node holds it); detached after unless it was attached
        before. Marked busy meanwhile, so that the node's pass leaves it alone."""
        was = self.attached(volume)
        path = self.attach(volume, holder=self.node or None)
        busy = self.root / "busy" / volume
        busy.parent.mkdir(parents=True, exist_ok=True)
        busy.touch()
        try:
            yield path
        finally:
            busy.unlink(missing_ok=True)
            if not was:
                self.detach(volume)

    def busy(self, volume: str) -> bool:
        """A workflow step has the volume attached for itself (`writable`)."""
        return (self.root / "busy" / check_name(volume)).exists()

    def attached_since(self, volume: str) -> float:
        """When this node last asked for the volume (seconds since the epoch; 0: never)."""
        try:
            return (self.root / "attached" / check_name(volume)).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def attached_volumes(self) -> list[str]:
        found = set()
        for sub in ("mounts", "fuse"):
            directory = self.root / sub
            if directory.is_dir():
                found.update(p.name for p in directory.iterdir() if NAME.fullmatch(p.name) and _is_mountpoint(p))
        return sorted(found)

    def attached(self, volume: str) -> bool:
        return _is_mountpoint(self._mount(volume))

    def _forget_attachment(self, volume: str) -> None:
        for directory in (self._mount(volume), self._fuse(volume)):
            if directory.is_dir() and not _is_mountpoint(directory):
                with contextlib.suppress(OSError):
                    if (directory / "data").is_dir() and not any((directory / "data").iterdir()):
                        (directory / "data").rmdir()
                    directory.rmdir()

    def _grow_online(self, volume: str) -> None:
        mount = self._mount(volume)
        image_file = self._fuse(volume) / self._image_name(volume)
        device = _loop_of(image_file)
        # rbd-fuse shows the new size once the kernel's cached attributes of the file expire.
        size, deadline = self.size(volume) or 0, time.monotonic() + RELEASE_TIMEOUT
        while os.stat(image_file).st_size < size:
            if time.monotonic() > deadline:
                raise StorageError(f"expanding volume {volume}: rbd-fuse still shows the old size")
            time.sleep(0.1)
        if device:
            _run(["losetup", "-c", device], f"expanding volume {volume} (loop device)")
        if (_fs_type(device) if device else self.fs) == "xfs":
            _run(["xfs_growfs", str(mount)], f"expanding the file system of volume {volume}")
        else:
            _run(["resize2fs", device or str(mount)], f"expanding the file system of volume {volume}")

    def _grow_offline(self, volume: str, device: str) -> None:
        _run(["resize2fs", "-f", device], f"expanding the file system of volume {volume}")


def _features(rbd) -> int:
    names = {"layering": rbd.RBD_FEATURE_LAYERING, "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN}
    value = 0
    for feature in FEATURES:
        value |= names[feature]
    return value


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)


def _loop_of(backing: Path) -> str | None:
    """The loop device backed by `backing`, if one is (nothing touches the file: on an rbd-fuse
    whose cluster is gone, that would hang)."""
    devices = loop_devices_of(Path(backing).absolute())
    return devices[0] if devices else None


def _fs_type(device: str) -> str:
    return _run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], f"probing {device}", ok_codes=(0, 2)).strip()


class _DiffWriter:
    """`rbd export-diff` format v1: a header line, then tagged records (little-endian):
    f <len32><from snap>, t <len32><to snap>, s <size64>, w <offset64><length64><data>,
    z <offset64><length64>, e (end)."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.written = 0

    def _put(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def header(self, parent: str | None, snapshot: str, size: int) -> None:
        self._put(DIFF_HEADER)
        if parent is not None:
            self._put(b"f" + struct.pack("<I", len(parent)) + parent.encode())
        self._put(b"t" + struct.pack("<I", len(snapshot)) + snapshot.encode())
        self._put(b"s" + struct.pack("<Q", size))

    def data(self, offset: int, data: bytes) -> None:
        self._put(b"w" + struct.pack("<QQ", offset, len(data)))
        self._put(data)

    def zero(self, offset: int, length: int) -> None:
        self._put(b"z" + struct.pack("<QQ", offset, length))

    def end(self) -> None:
        self._put(b"e")


class _DiffReader:
    def __init__(self, stream: BinaryIO, what: str):
        self.stream = stream
        self.what = what
        self.pending: bytes | None = None

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.stream.read(size - len(data))
            if not chunk:
                raise StorageError(f"{self.what}: the stream ends early (truncated or not an RBD diff)")
            data += chunk
        return data

    def header(self) -> tuple[str | None, str | None, int]:
        if self._read(len(DIFF_HEADER)) != DIFF_HEADER:
            raise StorageError(f"{self.what}: not an RBD diff stream (v1)")
        from_snap = to_snap = None
        size = None
        while True:
            tag = self._read(1)
            if tag in (b"f", b"t"):
                (length,) = struct.unpack("<I", self._read(4))
                if length > 1024:
                    raise StorageError(f"{self.what}: a snapshot name of {length} bytes in the stream")
                name = self._read(length).decode(errors="replace")
                if tag == b"f":
                    from_snap = name
                else:
                    to_snap = name
            elif tag == b"s":
                (size,) = struct.unpack("<Q", self._read(8))
            else:
                if size is None:
                    raise StorageError(f"{self.what}: the stream names no image size")
                self.pending = tag
                return from_snap, to_snap, size

    def records(self):
        """(kind, offset, data or length) for each w or z record until e."""
        while True:
            tag = self.pending if self.pending is not None else self._read(1)
            self.pending = None
            if tag == b"e":
                return
            if tag not in (b"w", b"z"):
                raise StorageError(f"{self.what}: unknown record {tag!r} in the stream")
            offset, length = struct.unpack("<QQ", self._read(16))
            if tag == b"w":
                if length > 64 * MiB:
                    raise StorageError(f"{self.what}: a data record of {length} bytes in the stream")
                yield "w", offset, self._read(length)
            else:
                yield "z", offset, length


def _kill_fuse_daemon(mountpoint: Path) -> None:
    """SIGKILL the rbd-fuse serving `mountpoint` (found by its command line). After a fenced
    node's lazy unmount the daemon would stay, blocklisted and never answering, and whatever
    still resolved a path under the detached mount would wait on it for good in D state
    (another pool's mkfs.btrfs, which walks the loop devices' backing files, hung for 50
    minutes). Killed, such requests fail at once."""
    for pid, argv in processes_of("rbd-fuse"):
        if str(mountpoint) in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
