"""The interface every storage provider implements, on the node that holds the pool.

A provider instance is one pool on one node: a directory (`root`) it owns entirely, plus the
pool's options. Volumes and snapshots are named by the control plane (`v<pk>`, `s<pk>`:
`check_name` refuses anything else), never by users, so names are safe in paths and commands.

Every method is idempotent, because workflow steps run again after a crash or a retry:
creating what exists (with the same size) succeeds, deleting what is gone succeeds. A method
that cannot do what it is asked raises StorageError with a message that names the volume or
snapshot and says why; one the provider does not offer raises Unsupported (the API refuses
those earlier, from `capabilities`).

Bytes only ever leave a pool through `export` (a stream to a file object) and enter through
`receive`; the caller moves the stream (agent to agent, or to a backup repository).
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

NAME = re.compile(r"[vs][0-9]{1,18}")
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany")


class StorageError(RuntimeError):
    """The provider (or the tool behind it) refused: the message says what and why."""


class OptionError(ValueError):
    """A pool's option (field "options") or secret (field "secrets") the provider refuses."""

    def __init__(self, message: str, field: str = "options"):
        super().__init__(message)
        self.field = field


class Unsupported(StorageError):
    """The provider cannot do this at all (see its capabilities)."""


@dataclass(frozen=True)
class Capabilities:
    snapshot: bool = False
    clone: bool = False
    expand: bool = False
    expand_online: bool = False  # while a container uses the volume
    enforces_size: bool = False  # writes beyond the size fail (else the size is reported, not enforced)
    export: bool = False  # snapshots as streams
    incremental: bool = False  # export relative to a parent snapshot (only the changes)
    encryption: bool = True  # gocryptfs on top of the volume's directory: any file system
    shared: bool = False  # one pool reachable from several nodes (later providers)
    node_expansion: bool = False  # after an expand, the node attaching the volume grows its file system (CSI)
    access_modes: tuple[str, ...] = ("ReadWriteOnce", "ReadOnlyMany")

    def as_dict(self) -> dict:
        return {
            "snapshot": self.snapshot,
            "clone": self.clone,
            "expand": self.expand,
            "expand_online": self.expand_online,
            "enforces_size": self.enforces_size,
            "export": self.export,
            "incremental": self.incremental,
            "encryption": self.encryption,
            "shared": self.shared,
            "access_modes": list(self.access_modes),
        }


@dataclass(frozen=True)
class Capacity:
    total: int  # bytes
    free: int  # bytes


def check_name(name: str, kind: str = "volume") -> str:
    expected = "v" if kind == "volume" else "s"
    if not isinstance(name, str) or not NAME.fullmatch(name) or name[0] != expected:
        raise StorageError(f"{kind} name {name!r} is not {expected}<number>")
    return name


def check_size(size: int, volume: str) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise StorageError(f"volume {volume}: size {size!r} is not a positive number of bytes")
    return size


class Provider(ABC):
    """One pool on one node. Subclasses set `name` and `capabilities` and register in
    storage/providers/registry.py."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, root: Path | str, options: dict | None = None) -> None:
        self.root = Path(root)
        self.options = dict(options or {})

    @classmethod
    def validate_options(cls, options: dict, secrets: dict) -> dict:
        """The pool's options as stored (normalised), or OptionError naming the bad one. The
        secrets are sealed apart (storage/sealing.py) and reach the provider merged into
        `options`. A node-local provider takes neither."""
        if options:
            raise OptionError(f"the {cls.name} provider takes no options, got {', '.join(sorted(options))}")
        if secrets:
            raise OptionError(f"the {cls.name} provider takes no secrets", "secrets")
        return {}

    @classmethod
    def min_size(cls, options: dict) -> int:
        """The smallest volume the pool can hold (bytes)."""
        return 0

    @classmethod
    def pool_capabilities(cls, options: dict) -> Capabilities:
        """What a pool with these options can do (StoragePool.capabilities: what the API allows);
        the provider's `capabilities` unless its options take some away (an external NFS server
        has no snapshots)."""
        return cls.capabilities

    @classmethod
    def node_support(cls) -> str | None:
        """For a shared provider: how this node would attach its volumes (e.g. "fuse"), or None
        when it cannot. Each agent reports it as the node label
        storage.hivemind.io/<provider> (storage/capabilities.py), and replicas mounting such a
        volume are placed only on nodes that can. Node-local providers need nothing."""
        return "local"

    # -- the pool ------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self) -> None:
        """Make the pool usable under `root` (directories, quota groups); raise StorageError
        when `root` cannot hold this provider's pool (e.g. not a btrfs file system)."""

    @abstractmethod
    def capacity(self) -> Capacity:
        """The file system's size and free space under `root`."""

    # -- volumes -------------------------------------------------------------------------------
    @abstractmethod
    def create(self, volume: str, size: int) -> None:
        """An empty volume of `size` bytes."""

    @abstractmethod
    def delete(self, volume: str) -> None:
        """The volume and every snapshot of it."""

    @abstractmethod
    def exists(self, volume: str) -> bool: ...

    @abstractmethod
    def path(self, volume: str) -> Path:
        """The directory holding the volume's files on this node (what a container mounts)."""

    def attach(self, volume: str, *, holder: str | None = None, may_fence=None) -> Path:
        """Make the volume mountable on this node; returns the directory to bind-mount.

        A shared provider attaches for `holder` (this node's name) only: a volume another node
        holds is refused unless `may_fence(that node)` says it is lost, and then that node is
        fenced (cut off from the volume) first. Node-local volumes are on one node anyway."""
        if not self.exists(volume):
            raise StorageError(f"volume {volume} does not exist in pool {self.root}")
        return self.path(volume)

    def detach(self, volume: str) -> None:  # noqa: B027 - node-local providers have nothing to undo
        """Undo attach, and give up this node's hold (nothing to do for node-local directories)."""

    def attached_volumes(self) -> list[str]:
        """Volumes attached on this node (node-local providers: none, they need no attaching)."""
        return []

    def busy(self, volume: str) -> bool:
        """Whether a workflow step has the volume attached for itself (`writable`)."""
        return False

    def size(self, volume: str) -> int | None:
        """The volume's size as this pool holds it (the limit, or the size recorded), None when
        it holds none."""
        return None

    @abstractmethod
    def usage(self, volume: str) -> int:
        """Bytes the volume's files use."""

    def expand(self, volume: str, size: int) -> None:
        raise Unsupported(f"the {self.name} provider cannot expand volumes")

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self, volume: str, snapshot: str) -> None:
        """A read-only, file-system-consistent copy of the volume as it is now."""
        raise Unsupported(f"the {self.name} provider has no snapshots")

    def snapshots(self, volume: str) -> list[str]:
        """Names of the volume's snapshots."""
        return []

    def delete_snapshot(self, volume: str, snapshot: str) -> None:
        raise Unsupported(f"the {self.name} provider has no snapshots")

    def revert(self, volume: str, snapshot: str) -> None:
        """The volume's contents become exactly the snapshot's (no container may use it meanwhile)."""
        raise Unsupported(f"the {self.name} provider has no snapshots")

    def clone(self, volume: str, snapshot: str, new_volume: str, size: int) -> None:
        """A new, independent volume with the snapshot's contents."""
        raise Unsupported(f"the {self.name} provider cannot clone")

    def promote(self, volume: str, snapshot: str, size: int) -> None:
        """Make `volume` hold exactly `snapshot` of it (e.g. one `receive` brought from another
        pool): a revert when the volume exists here, else a clone under the volume's own name."""
        if self.exists(volume):
            self.revert(volume, snapshot)
        else:
            self.clone(volume, snapshot, volume, size)

    # -- files of a snapshot, a volume to write into (backups and restores) --------------------
    @contextlib.contextmanager
    def snapshot_files(self, volume: str, snapshot: str) -> Iterator[Path]:
        """A directory holding the snapshot's files, readable on this node while the context lasts."""
        raise Unsupported(f"the {self.name} provider's snapshots cannot be read as files")
        yield Path()  # pragma: no cover - a generator for contextmanager

    @contextlib.contextmanager
    def writable(self, volume: str) -> Iterator[Path]:
        """The volume's directory, to write into on this node while the context lasts (a restore:
        no container may use it meanwhile)."""
        yield self.attach(volume)

    # -- streams -------------------------------------------------------------------------------
    def export(self, volume: str, snapshot: str, out: BinaryIO, *, parent: str | None = None) -> int:
        """Write the snapshot as a stream (only what changed since `parent`, a snapshot of the
        same volume the receiver holds); returns the bytes written."""
        raise Unsupported(f"the {self.name} provider cannot export snapshots")

    def receive(self, volume: str, snapshot: str, stream: BinaryIO, *, parent: str | None = None) -> None:
        """Store a stream from `export` as snapshot `snapshot` of `volume` in this pool."""
        raise Unsupported(f"the {self.name} provider cannot receive snapshots")


class DirectoryLayout(Provider):
    """The layout both node-local providers share under the pool's directory: `volumes/<v>`,
    `snapshots/<v>/<s>`, and `volumes/.<v>.new` / `.<v>.old` for replacing a volume in steps
    a retry can finish (create, clone, revert)."""

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def _snapshot_path(self, volume: str, snapshot: str) -> Path:
        return self.snapshots_dir / check_name(volume) / check_name(snapshot, "snapshot")

    @contextlib.contextmanager
    def snapshot_files(self, volume: str, snapshot: str) -> Iterator[Path]:
        path = self._snapshot_path(volume, snapshot)
        if not path.is_dir():
            raise StorageError(f"snapshot {snapshot} of volume {volume} does not exist")
        yield path

    def _new(self, volume: str) -> Path:
        return self.volumes_dir / f".{volume}.new"

    def _old(self, volume: str) -> Path:
        return self.volumes_dir / f".{volume}.old"
