"""The local provider: a plain directory per volume, on any file system (the fallback when a
node cannot make btrfs pools, see storage/loopfs.btrfs_available).

Layout under `root`:

    volumes/<v>              the volume's directory (what a container bind-mounts)
    volumes/.<v>.new         a volume being made (create, clone, revert): renamed into place whole
    volumes/.<v>.old         the volume's previous directory during a revert
    sizes/<v>                the volume's size in bytes: recorded and reported, never enforced
    snapshots/<v>/<s>        snapshots: full copies (`cp -a --reflink=auto`, so a copy shares
                             extents where the file system can, e.g. xfs), made under a temporary
                             name and renamed into place

Snapshots, clones and reverts copy the data: they cost time and space in proportion to the
volume (btrfs does them in O(1)), and a snapshot of a volume being written is a copy made
over time, not one instant. They are offered so that every feature works on any node; pick
btrfs for large or busy volumes. Exports are tar streams of a snapshot, always full.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from storage.providers.base import (
    NAME,
    Capabilities,
    Capacity,
    DirectoryLayout,
    StorageError,
    Unsupported,
    check_name,
    check_size,
)
from storage.providers.commands import run, stream_in, stream_out
from storage.providers.registry import register

TAR_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _copy(source: Path, target: Path, what: str) -> None:
    """Copy the directory `source` as `target` (which must not exist), keeping everything."""
    run(["cp", "-a", "--reflink=auto", "--no-target-directory", str(source), str(target)], what)


def disk_usage(path: Path) -> int:
    """Bytes the files under `path` occupy (allocated blocks, each hard-linked inode once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return total


@register
class LocalProvider(DirectoryLayout):
    name = "local"
    capabilities = Capabilities(
        snapshot=True,
        clone=True,
        expand=True,
        expand_online=True,
        enforces_size=False,
        export=True,
        incremental=False,
    )

    @property
    def sizes_dir(self) -> Path:
        return self.root / "sizes"

    # -- the pool ------------------------------------------------------------------------------
    def prepare(self) -> None:
        try:
            for directory in (self.volumes_dir, self.snapshots_dir, self.sizes_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"pool directory {self.root}: {error.strerror} ({error.filename})") from None

    def capacity(self) -> Capacity:
        fs = os.statvfs(self.root)
        return Capacity(total=fs.f_blocks * fs.f_frsize, free=fs.f_bavail * fs.f_frsize)

    # -- volumes -------------------------------------------------------------------------------
    def _recover(self, volume: str) -> None:
        """Finish a revert interrupted by a crash (see BtrfsProvider._recover)."""
        target, new, old = self.path(volume), self._new(volume), self._old(volume)
        if not target.exists() and old.exists():
            os.rename(new if new.is_dir() else old, target)
        if old.exists() and target.is_dir():
            _remove(old)

    def size(self, volume: str) -> int | None:
        try:
            return int((self.sizes_dir / check_name(volume)).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _record_size(self, volume: str, size: int) -> None:
        self.sizes_dir.mkdir(parents=True, exist_ok=True)
        path = self.sizes_dir / volume
        temporary = path.with_name(f".{volume}.tmp")
        temporary.write_text(str(size))
        os.replace(temporary, path)

    def _make(self, volume: str, size: int, source: Path | None) -> None:
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        new = self._new(volume)
        _remove(new)  # left by a crash
        self._record_size(volume, size)
        if source is None:
            new.mkdir(mode=0o755)
        else:
            _copy(source, new, f"making volume {volume} from {source}")
        os.rename(new, self.path(volume))

    def create(self, volume: str, size: int) -> None:
        check_name(volume)
        check_size(size, volume)
        if self.exists(volume):
            current = self.size(volume)
            if current is None:
                self._record_size(volume, size)
            elif current != size:
                raise StorageError(f"volume {volume} already exists with size {current}, not {size}")
            return
        self._make(volume, size, None)

    def delete(self, volume: str) -> None:
        check_name(volume)
        _remove(self.snapshots_dir / volume)
        for path in (self._new(volume), self._old(volume), self.path(volume), self.sizes_dir / volume):
            _remove(path)

    def exists(self, volume: str) -> bool:
        self._recover(check_name(volume))
        return self.path(volume).is_dir()

    def path(self, volume: str) -> Path:
        return self.volumes_dir / check_name(volume)

    def usage(self, volume: str) -> int:
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        return disk_usage(self.path(volume))

    def expand(self, volume: str, size: int) -> None:
        check_size(size, volume)
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        current = self.size(volume)
        if current is not None and size < current:
            raise StorageError(f"volume {volume}: cannot shrink from {current} to {size} bytes")
        if size != current:
            self._record_size(volume, size)

    # -- snapshots -----------------------------------------------------------------------------
    def _existing_snapshot(self, volume: str, snapshot: str) -> Path:
        path = self._snapshot_path(volume, snapshot)
        if not path.is_dir():
            raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist in pool {self.root}")
        return path

    def _store_snapshot(self, path: Path, fill) -> None:
        """Make the snapshot directory `path` by `fill(temporary)`, then rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        _remove(temporary)
        try:
            fill(temporary)
            os.rename(temporary, path)
        except BaseException:
            _remove(temporary)
            raise

    def snapshot(self, volume: str, snapshot: str) -> None:
        path = self._snapshot_path(volume, snapshot)
        if path.is_dir():
            return
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        source = self.path(volume)
        self._store_snapshot(path, lambda tmp: _copy(source, tmp, f"snapshotting volume {volume} as {snapshot}"))

    def snapshots(self, volume: str) -> list[str]:
        directory = self.snapshots_dir / check_name(volume)
        if not directory.is_dir():
            return []
        names = [
            entry.name
            for entry in directory.iterdir()
            if entry.name.startswith("s") and NAME.fullmatch(entry.name) and entry.is_dir()
        ]
        return sorted(names, key=lambda name: int(name[1:]))

    def delete_snapshot(self, volume: str, snapshot: str) -> None:
        _remove(self._snapshot_path(volume, snapshot))

    def revert(self, volume: str, snapshot: str) -> None:
        source = self._existing_snapshot(volume, snapshot)
        if not self.exists(volume):  # finishes an interrupted revert first
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        target, new, old = self.path(volume), self._new(volume), self._old(volume)
        _remove(new)
        _copy(source, new, f"reverting volume {volume} to {snapshot}")
        os.rename(target, old)
        os.rename(new, target)
        _remove(old)

    def clone(self, volume: str, snapshot: str, new_volume: str, size: int) -> None:
        check_name(new_volume)
        check_size(size, new_volume)
        source = self._existing_snapshot(volume, snapshot)
        if self.exists(new_volume):
            current = self.size(new_volume)
            if current != size:
                raise StorageError(f"volume {new_volume} already exists with size {current}, not {size}")
            return
        self._make(new_volume, size, source)

    # -- streams -------------------------------------------------------------------------------
    def export(self, volume: str, snapshot: str, out: BinaryIO, *, parent: str | None = None) -> int:
        if parent is not None:
            raise Unsupported(f"the {self.name} provider exports whole snapshots only (no parent)")
        source = self._existing_snapshot(volume, snapshot)
        command = ["tar", *TAR_OPTIONS, "--sparse", "-C", str(source), "-cf", "-", "."]
        return stream_out(command, out, f"exporting snapshot {snapshot} of volume {volume}")

    def receive(self, volume: str, snapshot: str, stream: BinaryIO, *, parent: str | None = None) -> None:
        """Store a tar stream from `export` as snapshot `snapshot`; already there: the stream is
        not read."""
        if parent is not None:
            raise Unsupported(f"the {self.name} provider receives whole snapshots only (no parent)")
        path = self._snapshot_path(volume, snapshot)
        if path.is_dir():
            return

        def extract(temporary: Path) -> None:
            temporary.mkdir()
            command = ["tar", *TAR_OPTIONS, "--same-permissions", "-C", str(temporary), "-xf", "-"]
            stream_in(command, stream, f"receiving snapshot {snapshot} of volume {volume}")

        self._store_snapshot(path, extract)
