"""The btrfs provider: each volume a subvolume with a quota-group limit, snapshots and clones
in O(1) whatever the size, snapshots sent and received as btrfs streams (incremental with a
parent).

Layout under `root` (any directory on a btrfs file system, e.g. a loop file's, storage/loopfs.py):

    volumes/<v>          the volume's subvolume (what a container bind-mounts); its qgroup
                         0/<subvolume id> has `max referenced` = the volume's size
    volumes/.<v>.new     a volume being made (create, clone, revert): renamed into place whole
    volumes/.<v>.old     the volume's previous subvolume during a revert
    snapshots/<v>/<s>    read-only snapshots (also those received from another pool)

The size is enforced by the qgroup limit (writes beyond it fail with EDQUOT inside the
container) and stored nowhere else: `size` of a volume is its qgroup's limit.

Everything runs the `btrfs` command (btrfs-progs): Debian's python3-btrfsutil cannot be
imported from the project's virtualenv. Its messages are passed on in StorageError.

Known limit: a tenant can create a subvolume inside its volume (btrfs lets any user do that);
its data is outside the volume's qgroup, so it escapes the size limit. delete and revert remove
such nested subvolumes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from typing import BinaryIO

from storage.providers.base import (
    NAME,
    Capabilities,
    Capacity,
    DirectoryLayout,
    StorageError,
    check_name,
    check_size,
)
from storage.providers.commands import run, stream_in, stream_out
from storage.providers.registry import register

SUBVOLUME_ROOT_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: the inode number of every subvolume's root
IOC_SUBVOL_GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
SUBVOL_RDONLY = 1 << 1


def _btrfs(*args: str, what: str) -> str:
    return run(["btrfs", *args], what)


def fs_type(path: Path) -> str:
    """The type of the file system holding `path` (or its nearest existing parent)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return run(["stat", "-f", "-c", "%T", str(probe)], f"finding the file system of {path}").strip()


def is_subvolume(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return info.st_ino == SUBVOLUME_ROOT_INODE and stat.S_ISDIR(info.st_mode)


def is_readonly(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, b"\0" * 8)
    finally:
        os.close(fd)
    return bool(struct.unpack("=Q", flags)[0] & SUBVOL_RDONLY)


def subvolume_info(path: Path) -> dict:
    """{"id", "limit" (bytes or None), "referenced" (bytes)} from `btrfs subvolume show --raw`."""
    output = _btrfs("subvolume", "show", "--raw", str(path), what=f"reading subvolume {path}")
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        subvolume_id = int(fields["Subvolume ID"])
    except (KeyError, ValueError):
        raise StorageError(f"cannot find the subvolume id of {path} in `btrfs subvolume show`: {output!r}") from None
    limit = fields.get("Limit referenced", "-")
    referenced = fields.get("Usage referenced", "")
    if not referenced.isdigit():
        raise StorageError(f"no quota-group usage for {path} (are quotas enabled on its file system?): {output!r}")
    return {
        "id": subvolume_id,
        "limit": int(limit) if limit.isdigit() else None,
        "referenced": int(referenced),
    }


def _nested_subvolumes(path: Path) -> list[Path]:
    """Subvolumes below `path` (not itself), deepest first."""
    found: list[Path] = []
    stack = [path]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    child = Path(entry.path)
                    # lstat, not entry.inode(): a directory entry names a subvolume by its id
                    if entry.stat(follow_symlinks=False).st_ino == SUBVOLUME_ROOT_INODE:
                        found.append(child)
                    stack.append(child)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def delete_subvolume(path: Path) -> None:
    """Delete the subvolume at `path` (and any nested in it); nothing there is fine."""
    if not os.path.lexists(path):
        return
    if not is_subvolume(path):
        # Not a subvolume (a plain directory left by hand, or the empty stub a snapshot keeps
        # for a nested subvolume): ours to remove all the same.
        if os.path.isdir(path) and not os.path.islink(path):
            for nested in _nested_subvolumes(path):
                delete_subvolume(nested)
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return
    result = subprocess.run(["btrfs", "subvolume", "delete", str(path)], check=False, capture_output=True, text=True)
    if result.returncode == 0:
        return
    nested = _nested_subvolumes(path)
    if not nested:
        raise StorageError(f"deleting subvolume {path}: {result.stderr.strip() or result.stdout.strip()}")
    for child in nested:  # deepest first
        delete_subvolume(child)
    _btrfs("subvolume", "delete", str(path), what=f"deleting subvolume {path}")


@register
class BtrfsProvider(DirectoryLayout):
    name = "btrfs"
    capabilities = Capabilities(
        snapshot=True,
        clone=True,
        expand=True,
        expand_online=True,
        enforces_size=True,
        export=True,
        incremental=True,
    )

    # -- the pool ------------------------------------------------------------------------------
    def prepare(self) -> None:
        kind = fs_type(self.root)
        if kind != "btrfs":
            raise StorageError(f"pool directory {self.root} is on a {kind} file system, not btrfs")
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["btrfs", "qgroup", "show", "--raw", str(self.root)], check=False, capture_output=True, text=True
        )
        if result.returncode != 0:
            if "not enabled" not in result.stderr:
                raise StorageError(f"reading the quota groups of {self.root}: {result.stderr.strip()}")
            _btrfs("quota", "enable", str(self.root), what=f"enabling quota groups on {self.root}")
        self._clear_stale_qgroups()

    def _clear_stale_qgroups(self) -> None:
        # Recent kernels drop the qgroup of a deleted subvolume on their own once it is cleaned
        # up; older ones keep it (with its limit): clear those, best effort.
        subprocess.run(["btrfs", "qgroup", "clear-stale", str(self.root)], check=False, capture_output=True)

    def capacity(self) -> Capacity:
        fs = os.statvfs(self.root)
        return Capacity(total=fs.f_blocks * fs.f_frsize, free=fs.f_bavail * fs.f_frsize)

    # -- volumes -------------------------------------------------------------------------------
    def _recover(self, volume: str) -> None:
        """Finish a revert interrupted by a crash: the volume is in place again and its
        previous subvolume gone."""
        target, new, old = self.path(volume), self._new(volume), self._old(volume)
        if not os.path.lexists(target) and os.path.lexists(old):
            os.rename(new if is_subvolume(new) else old, target)
        if os.path.lexists(old) and is_subvolume(target):
            delete_subvolume(old)

    def _make(self, volume: str, size: int, source: Path | None) -> None:
        """Make volume `volume` as an empty subvolume or a writable snapshot of `source`, its
        limit set, then renamed into place: a volume that exists is whole."""
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        new = self._new(volume)
        delete_subvolume(new)  # left by a crash
        if source is None:
            _btrfs("subvolume", "create", str(new), what=f"creating volume {volume}")
        else:
            _btrfs("subvolume", "snapshot", str(source), str(new), what=f"making volume {volume} from {source}")
        try:
            self._limit(volume, new, size)
            os.rename(new, self.path(volume))
        except BaseException:
            delete_subvolume(new)
            raise

    def _limit(self, volume: str, path: Path, size: int) -> None:
        _btrfs("qgroup", "limit", str(size), str(path), what=f"setting the size of volume {volume} to {size}")

    def size(self, volume: str) -> int | None:
        """The volume's size (its qgroup limit), None when it has none."""
        return subvolume_info(self.path(volume))["limit"]

    def create(self, volume: str, size: int) -> None:
        check_name(volume)
        check_size(size, volume)
        if self.exists(volume):
            current = self.size(volume)
            if current is None:
                self._limit(volume, self.path(volume), size)
            elif current != size:
                raise StorageError(f"volume {volume} already exists with size {current}, not {size}")
            return
        self._make(volume, size, None)

    def delete(self, volume: str) -> None:
        check_name(volume)
        snapshots = self.snapshots_dir / volume
        if snapshots.exists():
            for entry in sorted(snapshots.iterdir()):
                delete_subvolume(entry)
            snapshots.rmdir()
        for path in (self._new(volume), self._old(volume), self.path(volume)):
            delete_subvolume(path)
        self._clear_stale_qgroups()

    def exists(self, volume: str) -> bool:
        self._recover(check_name(volume))
        return is_subvolume(self.path(volume))

    def path(self, volume: str) -> Path:
        return self.volumes_dir / check_name(volume)

    def usage(self, volume: str) -> int:
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        path = self.path(volume)
        # Quota groups are accounted when a transaction commits: commit first, or the figure
        # lags by up to the commit interval (30 s).
        _btrfs("filesystem", "sync", str(path), what=f"syncing volume {volume}")
        return subvolume_info(path)["referenced"]

    def expand(self, volume: str, size: int) -> None:
        check_size(size, volume)
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        current = self.size(volume)
        if current is not None and size < current:
            raise StorageError(f"volume {volume}: cannot shrink from {current} to {size} bytes")
        if size != current:
            self._limit(volume, self.path(volume), size)

    # -- snapshots -----------------------------------------------------------------------------
    def _existing_snapshot(self, volume: str, snapshot: str) -> Path:
        path = self._snapshot_path(volume, snapshot)
        if not is_subvolume(path) or not is_readonly(path):
            raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist in pool {self.root}")
        return path

    def snapshot(self, volume: str, snapshot: str) -> None:
        path = self._snapshot_path(volume, snapshot)
        if is_subvolume(path) and is_readonly(path):
            return
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        delete_subvolume(path)  # an unfinished receive under that name
        path.parent.mkdir(parents=True, exist_ok=True)
        _btrfs(
            "subvolume",
            "snapshot",
            "-r",
            str(self.path(volume)),
            str(path),
            what=f"snapshotting volume {volume} as {snapshot}",
        )

    def snapshots(self, volume: str) -> list[str]:
        directory = self.snapshots_dir / check_name(volume)
        if not directory.is_dir():
            return []
        names = [
            entry.name
            for entry in directory.iterdir()
            if entry.name.startswith("s") and NAME.fullmatch(entry.name) and is_subvolume(entry) and is_readonly(entry)
        ]
        return sorted(names, key=lambda name: int(name[1:]))

    def delete_snapshot(self, volume: str, snapshot: str) -> None:
        delete_subvolume(self._snapshot_path(volume, snapshot))

    def revert(self, volume: str, snapshot: str) -> None:
        source = self._existing_snapshot(volume, snapshot)
        if not self.exists(volume):  # finishes an interrupted revert first
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        target, new, old = self.path(volume), self._new(volume), self._old(volume)
        size = self.size(volume)
        delete_subvolume(new)
        _btrfs("subvolume", "snapshot", str(source), str(new), what=f"reverting volume {volume} to {snapshot}")
        if size is not None:
            self._limit(volume, new, size)
        # A crash from here on is finished by _recover: with the volume moved away, the new
        # subvolume is renamed into place; with the volume in place, the old one is deleted.
        os.rename(target, old)
        os.rename(new, target)
        delete_subvolume(old)

    def clone(self, volume: str, snapshot: str, new_volume: str, size: int) -> None:
        check_name(new_volume)
        check_size(size, new_volume)
        source = self._existing_snapshot(volume, snapshot)
        if self.exists(new_volume):
            current = self.size(new_volume)
            if current != size:
                raise StorageError(f"volume {new_volume} already exists with size {current}, not {size}")
            return
        data = subvolume_info(source)["referenced"]
        if size < data:
            raise StorageError(
                f"volume {new_volume}: size {size} is smaller than the {data} bytes of snapshot {snapshot}"
            )
        self._make(new_volume, size, source)

    # -- streams -------------------------------------------------------------------------------
    def export(self, volume: str, snapshot: str, out: BinaryIO, *, parent: str | None = None) -> int:
        source = self._existing_snapshot(volume, snapshot)
        command = ["btrfs", "send", "-q"]
        if parent is not None:
            command += ["-p", str(self._existing_snapshot(volume, parent))]
        return stream_out([*command, str(source)], out, f"sending snapshot {snapshot} of volume {volume}")

    def receive(self, volume: str, snapshot: str, stream: BinaryIO, *, parent: str | None = None) -> None:
        """Store the stream as snapshots/<volume>/<snapshot> (read-only, as `snapshot` makes);
        then `clone` (or `promote`) makes a volume of it. Already received: the stream is not
        read. Not for two receives into one volume's snapshots at once."""
        target = self._snapshot_path(volume, snapshot)
        if is_subvolume(target) and is_readonly(target):
            return
        if parent is not None:
            self._existing_snapshot(volume, parent)
        directory = target.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A writable subvolume among the snapshots is an unfinished receive (btrfs receive
        # makes the subvolume read-only last): a crash left it, so it goes.
        for entry in directory.iterdir():
            if is_subvolume(entry) and not is_readonly(entry):
                delete_subvolume(entry)
        before = set(os.listdir(directory))
        what = f"receiving snapshot {snapshot} of volume {volume}"
        try:
            # -e: stop at the stream's end marker (the stream may be a socket that stays open).
            stream_in(["btrfs", "receive", "-e", str(directory)], stream, what)
        except BaseException:
            for name in set(os.listdir(directory)) - before:
                with contextlib.suppress(StorageError, OSError):
                    delete_subvolume(directory / name)
            raise
        received = sorted(set(os.listdir(directory)) - before)
        if len(received) != 1:
            raise StorageError(f"{what}: expected one new subvolume in {directory}, found {received}")
        # The stream names the subvolume after the sender's snapshot; a read-only subvolume
        # can be renamed within its directory (not moved to another).
        if received[0] != snapshot:
            try:
                os.rename(directory / received[0], target)
            except OSError as error:
                delete_subvolume(directory / received[0])
                raise StorageError(f"{what}: renaming {received[0]}: {os.strerror(error.errno or errno.EIO)}") from None
