"""The NFS provider: a shared pool whose volumes every node mounts with the kernel's NFS client,
in one of two modes chosen by the pool's options.

**managed** (default): the pool's node serves the pool's directory with nfs-ganesha (FSAL VFS,
NFSv4 only, graceless), which its agent starts, configures and reloads. One export per volume:

    EXPORT { Export_Id = 7; Path = "<pool>/volumes/v7"; Pseudo = "/hivemind/v7"; Access_Type = None;
             Squash = Root_Squash; ...; CLIENT { Clients = <nodes running replicas that mount it>;
             Access_Type = RW; } }

The access list is what the database says (storage/node.py `keep_exports`, on every beat of the
pool node's agent): the addresses of the nodes that run replicas mounting the volume; no
replica, no client. Root squash is on (root on a client writes as 65534, which owns each new
volume's directory) unless the pool says `root_squash=false`. The configuration is generated
whole from `.ganesha/exports.json` and ganesha reloads it on SIGHUP (ganesha 4.x adds, changes
and removes exports then: measured with 4.3), so a volume's export appears with it, follows its
replicas, and goes when it is deleted.

Where the pool's directory is on btrfs, volumes are subvolumes handled by the btrfs provider
(storage/providers/btrfs.py: sizes enforced, snapshots, clones, streams); ganesha exports a
btrfs subvolume only when it is a mount point, so each is bind-mounted onto itself while it is
exported. Elsewhere volumes are plain directories (the local provider's layout, sizes recorded)
and snapshots and clones are refused, saying why.

**external**: an NFS server given by `server` + `export` (any implementation; v3, v4.0 or
v4.1). Each volume is a directory under that one export, made and removed through the NFS
protocol from Python (nfs-rs), with its size recorded in `.hivemind/sizes/` there. The
server's file system is not Hivemind's: no snapshots, no clones.

Layout under the pool's directory on its node (managed):

    volumes/<v>, snapshots/<v>/<s>, sizes/<v>   the volumes (btrfs or local provider layout)
    .ganesha/ganesha.conf, exports.json, ganesha.pid, ganesha.log, recovery/

and on every node that mounts them (its own directory, storage/steps.py `provider_of`):

    mounts/<v>            the kernel NFS mount of the volume (what a container bind-mounts)

On the pool's own node a managed volume is its local directory: nothing to mount.

Pool options:

    mode         managed | external (default managed)
    address      managed: the pool node's address ganesha binds to and clients mount from
    port         the NFS port (default 2049)
    root_squash  managed: true (default) | false
    server       external: the server's address or host name
    export       external: the export's path on the server (absolute)
    version      the NFS version to mount: 4.1 (default) | 4.0 | 3 (external only: v3 needs rpcbind)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from storage.providers.base import (
    NAME,
    Capabilities,
    Capacity,
    OptionError,
    Provider,
    StorageError,
    Unsupported,
    check_name,
    check_size,
)
from storage.providers.commands import is_mountpoint as _is_mountpoint
from storage.providers.commands import run
from storage.providers.registry import register

MODES = ("managed", "external")
VERSIONS = {"managed": ("4.1", "4.0"), "external": ("4.1", "4.0", "3")}
PSEUDO_ROOT = "/hivemind"
ANONYMOUS_ID = 65534  # root squashed to this uid/gid; it owns a new volume's directory then
START_TIMEOUT = 15  # seconds for ganesha to serve, or to say why not
RELOAD_TIMEOUT = 15  # seconds for ganesha to reread its exports after SIGHUP
STOP_TIMEOUT = 10
ATTACH_WAIT = 30  # seconds a mount is retried while the server's access list catches up (a beat)
CONNECT_TIMEOUT = 10
OPERATION_TIMEOUT = 60
MAX_EXPORT_ID = 65535  # ganesha's Export_Id is 16 bits (0 is the pseudo root)
GANESHA = "ganesha.nfsd"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/@+=:,-]*")  # what a ganesha config and a mount source can hold


# -- options ---------------------------------------------------------------------------------------


def _port(value) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise OptionError(f"port: expected a TCP port from 1 to 65535, got {str(value)[:20]!r}")
    return value


def _address(field: str, value, *, hostname: bool) -> str:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value.strip()))
        if hostname and HOSTNAME.fullmatch(value.strip()):
            return value.strip().lower()
    what = "an IP address or host name" if hostname else "an IP address (v4 or v6)"
    raise OptionError(f"{field}: expected {what}, got {str(value)[:80]!r}")


def _boolean(field: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise OptionError(f"{field}: expected true or false, got {str(value)[:20]!r}")


def options_valid(options: dict, secrets: dict) -> dict:
    """The pool options normalised, or OptionError naming the bad one (the API's 400)."""
    if secrets:
        raise OptionError("the nfs provider takes no secrets (AUTH_SYS: the server trusts node addresses)", "secrets")
    known = {"mode", "address", "port", "root_squash", "server", "export", "version"}
    unknown = set(options) - known
    if unknown:
        raise OptionError(f"unknown option {sorted(map(str, unknown))[0]!r}; known: {', '.join(sorted(known))}")
    mode = options.get("mode", "managed")
    if mode not in MODES:
        raise OptionError(f"mode: expected one of {', '.join(MODES)}, got {str(mode)[:20]!r}")
    version = options.get("version", "4.1")
    version = str(version) if isinstance(version, (int, float, str)) and not isinstance(version, bool) else version
    if version not in VERSIONS[mode]:
        why = " (a managed pool serves NFSv4 only)" if mode == "managed" and version == "3" else ""
        raise OptionError(f"version: expected one of {', '.join(VERSIONS[mode])}{why}, got {str(version)[:20]!r}")
    port = _port(options.get("port", 2049))
    if mode == "managed":
        for field in ("server", "export"):
            if field in options:
                raise OptionError(f"{field}: only for mode external (a managed pool serves its own directory)")
        if "address" not in options:
            raise OptionError("address: expected the pool node's IP address that ganesha binds to and nodes mount from")
        address = _address("address", options["address"], hostname=False)
        squash = _boolean("root_squash", options.get("root_squash", True))
        return {"mode": mode, "address": address, "port": port, "root_squash": squash, "version": version}
    for field in ("address", "root_squash"):
        if field in options:
            raise OptionError(f"{field}: only for mode managed (an external server has its own settings)")
    if "server" not in options:
        raise OptionError("server: expected the NFS server's IP address or host name")
    server = _address("server", options["server"], hostname=True)
    export = options.get("export")
    if (
        not isinstance(export, str)
        or len(export) > 1024
        or not SAFE_PATH.fullmatch(export)
        or ".." in PurePosixPath(export).parts
    ):
        raise OptionError(
            f"export: expected the export's absolute path on the server (letters, digits, ._/@+=:,- only, no '..'), "
            f"got {str(export)[:80]!r}"
        )
    return {"mode": mode, "server": server, "export": str(PurePosixPath(export)), "port": port, "version": version}


def kernel_client() -> str | None:
    """ "kernel" where this node's kernel has an NFS client and mount.nfs is installed, else None."""
    try:
        filesystems = Path("/proc/filesystems").read_text().split()
    except OSError:
        filesystems = []
    modules = Path("/lib/modules", os.uname().release, "kernel/fs/nfs")
    if "nfs4" not in filesystems and "nfs" not in filesystems and not modules.is_dir():
        return None
    return "kernel" if shutil.which("mount.nfs") else None


def _host(address: str) -> str:
    """An address as it goes before a colon (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


@register
class NfsProvider(Provider):
    name = "nfs"
    # What a managed pool on btrfs does; a pool that cannot (not btrfs, or external) refuses
    # those calls with Unsupported saying why.
    capabilities = Capabilities(
        snapshot=True,
        clone=True,
        expand=True,
        expand_online=True,
        enforces_size=False,  # only on btrfs
        export=True,
        incremental=True,
        encryption=True,
        shared=True,
        access_modes=("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"),
    )

    def __init__(self, root, options: dict | None = None) -> None:
        super().__init__(root, options)
        self.mode = self.options.get("mode", "managed")
        self.port = int(self.options.get("port", 2049))
        self.version = str(self.options.get("version", "4.1"))
        self.address = self.options.get("address", "")
        self.root_squash = bool(self.options.get("root_squash", True))
        self.server = self.options.get("server", "")
        self.export_path = self.options.get("export", "")
        # Put here by storage.steps.provider_of: this node, and the pool's name, node and directory.
        self.node = self.options.get("node", "")
        self.pool_name = self.options.get("pool_name", "")
        self.pool_node = self.options.get("pool_node", "")
        self.pool_dir = Path(self.options.get("pool_path") or self.root)
        self._store_cache = None

    @classmethod
    def validate_options(cls, options: dict, secrets: dict) -> dict:
        return options_valid(options, secrets)

    @classmethod
    def pool_capabilities(cls, options: dict) -> Capabilities:
        """An external pool: directories on someone else's server (no snapshots, clones or
        streams, sizes recorded). A managed one may (on btrfs: only its node knows)."""
        if options.get("mode") != "external":
            return cls.capabilities
        return dataclasses.replace(cls.capabilities, snapshot=False, clone=False, export=False, incremental=False)

    @classmethod
    def node_support(cls) -> str | None:
        """ "kernel" where the node can mount NFS (none of the build machines can)."""
        return kernel_client()

    def describe(self) -> str:
        name = f"NFS pool {self.pool_name}" if self.pool_name else "NFS pool"
        if self.mode == "external":
            return f"{name} on {_host(self.server)}:{self.port}{self.export_path}"
        return f"{name} ({self.pool_dir} served at {_host(self.address)}:{self.port})"

    @property
    def serves(self) -> bool:
        """This node holds the managed pool's directory (and runs its ganesha)."""
        return self.mode == "managed" and (not self.pool_node or self.pool_node == self.node)

    # -- the volumes' store on the pool's node (managed) -------------------------------------------
    @property
    def volumes_dir(self) -> Path:
        return self.pool_dir / "volumes"

    @property
    def snapshots_dir(self) -> Path:
        return self.pool_dir / "snapshots"

    @property
    def is_btrfs(self) -> bool:
        return self._store().name == "btrfs"

    def _store(self):
        """The btrfs provider where the pool's directory is on btrfs, else the local one (its
        snapshots are never used: they would be copies, `_snapshots` refuses first)."""
        if self._store_cache is None:
            from storage.providers.btrfs import BtrfsProvider, fs_type
            from storage.providers.local import LocalProvider

            self.pool_dir.mkdir(parents=True, exist_ok=True)
            kind = fs_type(self.pool_dir)
            self._store_cache = (BtrfsProvider if kind == "btrfs" else LocalProvider)(self.pool_dir)
            self._fs = kind
        return self._store_cache

    def _served(self, what: str):
        """The store, where this node serves the pool; else why it cannot do `what` here."""
        if self.mode == "external":
            raise StorageError(f"{self.describe()}: {what} is done through the NFS protocol, not here")
        if not self.serves:
            raise StorageError(f"{self.describe()}: {what} runs on the pool's node {self.pool_node}, not {self.node}")
        return self._store()

    def _snapshots(self, what: str):
        """The btrfs store, or Unsupported saying why this pool has no `what`."""
        if self.mode == "external":
            raise Unsupported(
                f"{self.describe()} has no {what}: the external server's file system is not Hivemind's to snapshot "
                "(use a managed NFS pool on btrfs)"
            )
        store = self._served(what)
        if store.name != "btrfs":
            raise Unsupported(
                f"{self.describe()} has no {what}: its directory {self.pool_dir} is on {self._fs}, not btrfs "
                "(snapshots and clones are btrfs subvolumes)"
            )
        return store

    # -- the pool ------------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.mode == "external":
            with self._client() as client:
                client.mkdir(".hivemind/sizes", parents=True, exist_ok=True)
            (self.root / "mounts").mkdir(parents=True, exist_ok=True)
            return
        if not self.serves:
            (self.root / "mounts").mkdir(parents=True, exist_ok=True)
            return
        if not SAFE_PATH.fullmatch(str(self.pool_dir.absolute())):
            raise StorageError(f"{self.describe()}: ganesha cannot export a directory named {str(self.pool_dir)!r}")
        try:  # checked when the pool was added; a row written otherwise is checked here
            _address("address", self.address, hostname=False)
            _port(self.port)
        except OptionError as exc:
            raise StorageError(f"{self.describe()}: {exc}") from None
        if shutil.which(GANESHA) is None:
            raise StorageError(
                f"{self.describe()}: nfs-ganesha is not installed on this node (apt-get install nfs-ganesha "
                "nfs-ganesha-vfs)"
            )
        self._store().prepare()
        (self.root / "mounts").mkdir(parents=True, exist_ok=True)
        with self._locked():
            exports = self._exports()
            found = {p.name for p in self.volumes_dir.iterdir() if NAME.fullmatch(p.name) and p.name[0] == "v"}
            for handle in sorted(found - set(exports)):  # made by a crashed create: exported, for nobody yet
                self._add_export(exports, handle)
            for handle in sorted(set(exports) - found):
                del exports[handle]
            remounted = any([self._bind(handle) for handle in sorted(exports)])
            self._apply(exports, force=remounted)

    def capacity(self) -> Capacity:
        if self.mode == "external":
            with self._client() as client:
                stat = client.fs_stat()
            return Capacity(total=stat.total_bytes, free=stat.available_bytes)
        return self._served("measuring the pool").capacity()

    # -- volumes -------------------------------------------------------------------------------
    def create(self, volume: str, size: int) -> None:
        check_name(volume)
        check_size(size, volume)
        if self.mode == "external":
            self._external_create(volume, size)
            return
        store = self._served(f"creating volume {volume}")
        fresh = not store.exists(volume)
        store.create(volume, size)
        if fresh and self.root_squash:
            os.chown(store.path(volume), ANONYMOUS_ID, ANONYMOUS_ID)  # squashed root writes as its owner
        self._publish(volume)

    def delete(self, volume: str) -> None:
        check_name(volume)
        if self.mode == "external":
            self._external_delete(volume)
            return
        with contextlib.suppress(StorageError):
            self.detach(volume)
        store = self._served(f"deleting volume {volume}")
        self._unpublish(volume)
        store.delete(volume)

    def exists(self, volume: str) -> bool:
        check_name(volume)
        if self.mode == "external":
            with self._client() as client:
                return self._is_dir(client, volume)
        if self.serves:
            return self._store().exists(volume)
        return self._exported_to_me(volume)

    def path(self, volume: str) -> Path:
        check_name(volume)
        if self.serves:
            return self._store().path(volume)
        return self._mount(volume)

    def size(self, volume: str) -> int | None:
        if self.mode == "external":
            with self._client() as client:
                return self._recorded_size(client, check_name(volume))
        return self._served(f"reading the size of volume {volume}").size(volume)

    def usage(self, volume: str) -> int:
        if self.mode == "external":
            with self._client() as client:
                if not self._is_dir(client, check_name(volume)):
                    raise StorageError(f"volume {volume} does not exist in {self.describe()}")
                return self._tree_size(client, volume)
        return self._served(f"measuring volume {volume}").usage(volume)

    def expand(self, volume: str, size: int) -> None:
        check_size(size, volume)
        if self.mode == "external":
            with self._client() as client:
                if not self._is_dir(client, check_name(volume)):
                    raise StorageError(f"volume {volume} does not exist in {self.describe()}")
                current = self._recorded_size(client, volume)
                if current is not None and size < current:
                    raise StorageError(f"volume {volume}: cannot shrink from {current} to {size} bytes")
                self._record_size(client, volume, size)
            return
        self._served(f"expanding volume {volume}").expand(volume, size)

    # -- snapshots (btrfs under a managed pool only) -------------------------------------------
    def snapshot(self, volume: str, snapshot: str) -> None:
        self._snapshots("snapshots").snapshot(volume, snapshot)

    def snapshots(self, volume: str) -> list[str]:
        if self.mode == "external" or not self.serves or not self.is_btrfs:
            return []
        return self._store().snapshots(volume)

    def delete_snapshot(self, volume: str, snapshot: str) -> None:
        self._snapshots("snapshots").delete_snapshot(volume, snapshot)

    def revert(self, volume: str, snapshot: str) -> None:
        """The volume's subvolume is replaced: its export and bind mount let go of it first."""
        store = self._snapshots("snapshots")
        store._existing_snapshot(volume, snapshot)  # refused before the export goes
        clients = self._unpublish(volume)
        try:
            store.revert(volume, snapshot)
        finally:
            if store.exists(volume):
                self._publish(volume, clients)

    def clone(self, volume: str, snapshot: str, new_volume: str, size: int) -> None:
        store = self._snapshots("clones")
        store.clone(volume, snapshot, new_volume, size)
        self._publish(new_volume)

    @contextlib.contextmanager
    def snapshot_files(self, volume: str, snapshot: str) -> Iterator[Path]:
        with self._snapshots("snapshots").snapshot_files(volume, snapshot) as path:
            yield path

    def export(self, volume: str, snapshot: str, out: BinaryIO, *, parent: str | None = None) -> int:
        return self._snapshots("snapshot streams").export(volume, snapshot, out, parent=parent)

    def receive(self, volume: str, snapshot: str, stream: BinaryIO, *, parent: str | None = None) -> None:
        self._snapshots("snapshot streams").receive(volume, snapshot, stream, parent=parent)

    # -- attaching on a node (the kernel NFS client) -------------------------------------------
    def _mount(self, volume: str) -> Path:
        return self.root / "mounts" / check_name(volume)

    def _source(self, volume: str) -> str:
        if self.mode == "external":
            return f"{_host(self.server)}:{self.export_path.rstrip('/')}/{volume}"
        return f"{_host(self.address)}:{PSEUDO_ROOT}/{volume}"

    def attach(self, volume: str, *, holder: str | None = None, may_fence=None) -> Path:
        """The volume's directory on this node: on the managed pool's own node its directory
        itself; elsewhere the kernel NFS mount of its export (retried for ATTACH_WAIT while the
        server's access list catches up with the replica placed here). NFS volumes are shared:
        no node holds one alone, nothing is fenced."""
        check_name(volume)
        if self.serves:
            if not self.exists(volume):
                raise StorageError(f"volume {volume} does not exist in {self.describe()}")
            self._bind(volume)
            return self.path(volume)
        mount = self._mount(volume)
        (self.root / "attached").mkdir(parents=True, exist_ok=True)
        (self.root / "attached" / volume).touch()  # when it was last asked for (storage/node.py)
        if _is_mountpoint(mount):
            return mount
        if kernel_client() is None:
            raise StorageError(
                f"volume {volume} of {self.describe()}: node {self.node or 'here'} has no kernel NFS client "
                "(no nfs4 in /proc/filesystems, or no mount.nfs: apt-get install nfs-common), so it cannot mount "
                "NFS volumes; replicas mounting them go only to nodes labelled storage.hivemind.io/nfs=yes"
            )
        mount.mkdir(parents=True, exist_ok=True)
        vers = "3" if self.version == "3" else self.version
        fstype = "nfs" if self.version == "3" else "nfs4"
        options = f"vers={vers},port={self.port},proto=tcp,hard,timeo=600,retrans=2"
        deadline = time.monotonic() + ATTACH_WAIT
        while True:
            try:
                run(["mount", "-t", fstype, "-o", options, self._source(volume), str(mount)],
                    f"mounting volume {volume} from {self._source(volume)}", timeout=OPERATION_TIMEOUT)  # fmt: skip
                return mount
            except StorageError:
                if time.monotonic() > deadline:
                    with contextlib.suppress(OSError):
                        mount.rmdir()
                    raise
                time.sleep(1)

    def detach(self, volume: str, *, fenced: bool = False) -> None:
        """Unmount the volume's NFS mount here (nothing to do on the managed pool's own node)."""
        mount = self._mount(volume)
        if _is_mountpoint(mount):
            run(["umount", *(["-l"] if fenced else []), str(mount)], f"detaching volume {volume} (unmount)",
                timeout=OPERATION_TIMEOUT)  # fmt: skip
        with contextlib.suppress(OSError):
            mount.rmdir()
        with contextlib.suppress(FileNotFoundError):
            (self.root / "attached" / volume).unlink()

    def attached_volumes(self) -> list[str]:
        directory = self.root / "mounts"
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if NAME.fullmatch(p.name) and _is_mountpoint(p))

    def attached(self, volume: str) -> bool:
        return _is_mountpoint(self._mount(volume))

    def attached_since(self, volume: str) -> float:
        try:
            return (self.root / "attached" / check_name(volume)).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def holders(self, volume: str) -> list[str]:
        """Nobody holds an NFS volume alone (storage/node.py `keep_attachments` asks)."""
        return []

    # -- exports (managed) ---------------------------------------------------------------------
    @property
    def ganesha_dir(self) -> Path:
        return self.pool_dir / ".ganesha"

    @contextlib.contextmanager
    def _locked(self):
        """One writer of the exports at a time (a node's worker runs steps side by side)."""
        self.ganesha_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.ganesha_dir / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _exports(self) -> dict[str, dict]:
        """{handle: {"id": export id, "clients": [addresses]}} as last configured."""
        try:
            data = json.loads((self.ganesha_dir / "exports.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: v for k, v in data.items() if NAME.fullmatch(k) and isinstance(v, dict) and "id" in v}

    def exports(self) -> dict[str, list[str]]:
        """Each exported volume's access list (the clients allowed to mount it)."""
        return {handle: list(entry.get("clients", [])) for handle, entry in self._exports().items()}

    def _add_export(self, exports: dict, volume: str) -> None:
        if volume in exports:
            return
        taken = {entry["id"] for entry in exports.values()}
        number = int(volume[1:])
        if 1 <= number <= MAX_EXPORT_ID and number not in taken:
            export_id = number  # the volume's number, where it fits
        else:
            export_id = next((i for i in range(1, MAX_EXPORT_ID + 1) if i not in taken), None)
            if export_id is None:
                raise StorageError(f"{self.describe()}: ganesha's {MAX_EXPORT_ID} export ids are all in use")
        exports[volume] = {"id": export_id, "clients": []}

    def _publish(self, volume: str, clients: list[str] | None = None) -> None:
        """Export the volume (to `clients`, else to whom it was exported: nobody when new)."""
        with self._locked():
            exports = self._exports()
            self._add_export(exports, volume)
            if clients is not None:
                exports[volume]["clients"] = clients
            self._bind(volume)
            self._apply(exports, force=True)  # a new subvolume under an old path needs a reload too

    def _unpublish(self, volume: str) -> list[str]:
        """Remove the volume's export (and bind mount); returns the clients it had."""
        with self._locked():
            exports = self._exports()
            had = exports.pop(volume, None)
            if had is not None:
                self._apply(exports)
            self._unbind(volume)
        return list((had or {}).get("clients", []))

    def export_to(self, access: dict[str, list[str]]) -> bool:
        """Set each exported volume's access list (volumes not named: nobody); reload ganesha
        when anything changed. Returns whether it did."""
        if not self.serves:
            return False  # an external server's exports are its own; other nodes only mount
        with self._locked():
            exports = self._exports()
            for handle, entry in exports.items():
                entry["clients"] = sorted({self._client_address(a) for a in access.get(handle, []) if a} - {""})
            return self._apply(exports)

    def _client_address(self, address: str) -> str:
        """A node's address as a CLIENT entry; "" (left out) when it is neither an IP nor a host name."""
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(address))
        return address.lower() if HOSTNAME.fullmatch(address) else ""

    def _bind(self, volume: str) -> bool:
        """ganesha exports a btrfs subvolume only as a mount point: the volume's subvolume is
        bind-mounted onto itself (again after a reboot). Returns whether it mounted now."""
        path = self.volumes_dir / volume
        if not self.is_btrfs or not path.is_dir() or _is_mountpoint(path):
            return False
        run(["mount", "--bind", str(path), str(path)], f"exporting volume {volume} (bind mount)")
        return True

    def _unbind(self, volume: str) -> None:
        path = self.volumes_dir / volume
        while _is_mountpoint(path):  # a stacked one too
            result = subprocess.run(["umount", str(path)], check=False, capture_output=True, text=True)
            if result.returncode != 0:  # ganesha may hold it a moment longer
                run(["umount", "-l", str(path)], f"unexporting volume {volume} (bind mount)")

    def config(self, exports: dict[str, dict]) -> str:
        """ganesha.conf for these exports (every value checked or generated here)."""
        squash = "Root_Squash" if self.root_squash else "No_Root_Squash"
        lines = [
            "# Generated by Hivemind (storage/providers/nfs.py): changes here are overwritten.",
            f"NFS_CORE_PARAM {{ Bind_Addr = {self.address}; NFS_Port = {self.port}; Protocols = 4;",
            "    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }",
            f'NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{self.ganesha_dir / "recovery"}";',
            "    Only_Numeric_Owners = true; Minor_Versions = 0, 1; }",
            "NFS_KRB5 { Active_krb5 = false; }",
            "LOG { Default_Log_Level = EVENT; }",
        ]
        for handle, entry in sorted(exports.items(), key=lambda item: item[1]["id"]):
            lines += [
                f"EXPORT {{ Export_Id = {int(entry['id'])};",
                f'    Path = "{self.volumes_dir / handle}"; Pseudo = "{PSEUDO_ROOT}/{handle}";',
                f"    Access_Type = None; Squash = {squash}; Anonymous_Uid = {ANONYMOUS_ID}; "
                f"Anonymous_Gid = {ANONYMOUS_ID};",
                "    SecType = sys; Protocols = 4; Transports = TCP; FSAL { Name = VFS; }",
            ]
            if entry.get("clients"):
                lines.append(f"    CLIENT {{ Clients = {', '.join(entry['clients'])}; Access_Type = RW; }}")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def _apply(self, exports: dict[str, dict], *, force: bool = False) -> bool:
        """Write the state and the configuration; start ganesha, or have it reread its exports
        when the configuration changed (or `force`). Returns whether ganesha was told."""
        directory = self.ganesha_dir
        (directory / "recovery").mkdir(parents=True, exist_ok=True)
        _write(directory / "exports.json", json.dumps(exports, indent=1, sort_keys=True))
        text = self.config(exports)
        conf = directory / "ganesha.conf"
        changed = not conf.exists() or conf.read_text() != text
        if changed:
            _write(conf, text)
        if self.server_pid() is None:
            self._start()
            return True
        if changed or force:
            self._reload()
            return True
        return False

    # -- the ganesha process (managed) ---------------------------------------------------------
    def server_pid(self) -> int | None:
        """The pool's running ganesha (checked by name and configuration: a reused pid is not it)."""
        try:
            pid = int((self.ganesha_dir / "ganesha.pid").read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
        except (OSError, ValueError):
            return None
        if comm != GANESHA or str(self.ganesha_dir / "ganesha.conf").encode() not in cmdline or state == "Z":
            return None
        return pid

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.ganesha_dir / "ganesha.log", "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_size(self) -> int:
        try:
            return (self.ganesha_dir / "ganesha.log").stat().st_size
        except FileNotFoundError:
            return 0

    def _wait_log(self, offset: int, done: str, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = self._log_since(offset)
            if done in text:
                return
            fatal = [line for line in text.splitlines() if ":FATAL :" in line or ":CRIT :Error" in line]
            if fatal or time.monotonic() > deadline:
                said = (fatal or text.splitlines() or ["(nothing in its log)"])[-1].rsplit(" :", 1)[-1].strip()
                if "binding" in said.lower():
                    said += f" (is {_host(self.address)}:{self.port} taken, or not an address of this node?)"
                raise StorageError(f"{self.describe()}: {what}: {said}")
            time.sleep(0.05)

    def _start(self) -> None:
        directory = self.ganesha_dir
        offset = self._log_size()
        command = [GANESHA, "-f", str(directory / "ganesha.conf"), "-L", str(directory / "ganesha.log"),
                   "-p", str(directory / "ganesha.pid")]  # fmt: skip
        # It forks into the background itself (a session of its own): it outlives this worker. Its
        # output goes to a file, not a pipe the daemon would keep open.
        with open(directory / "ganesha.out", "ab") as out:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, check=False, timeout=START_TIMEOUT)  # fmt: skip
        if result.returncode != 0:
            said = (directory / "ganesha.out").read_bytes()[-500:].decode(errors="replace").strip()
            raise StorageError(f"{self.describe()}: starting nfs-ganesha (exit {result.returncode}): {said}")
        self._wait_log(offset, "NFS SERVER INITIALIZED", "nfs-ganesha did not start", START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while self.server_pid() is None:
            if time.monotonic() > deadline:
                raise StorageError(f"{self.describe()}: nfs-ganesha started but wrote no pid file")
            time.sleep(0.05)

    def _reload(self) -> None:
        pid = self.server_pid()
        if pid is None:
            self._start()
            return
        offset = self._log_size()
        os.kill(pid, signal.SIGHUP)
        self._wait_log(offset, "Reread exports complete", "nfs-ganesha did not reload its exports", RELOAD_TIMEOUT)

    def stop_server(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the pool's ganesha (nothing running is fine; it takes about 2 s to shut down,
        killed after `timeout`) and let go of the bind mounts."""
        pid = self.server_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM if timeout > 0 else signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while self.server_pid() == pid and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.server_pid() == pid:
                os.kill(pid, signal.SIGKILL)
                while self.server_pid() == pid and time.monotonic() < deadline + STOP_TIMEOUT:
                    time.sleep(0.02)
        if self.volumes_dir.is_dir():
            for path in sorted(self.volumes_dir.iterdir()):
                if NAME.fullmatch(path.name):
                    self._unbind(path.name)

    def _exported_to_me(self, volume: str) -> bool:
        """On another node than the managed pool's: whether the volume's export answers this
        node (ganesha hides an export from a client not on its access list)."""
        import nfs_rs

        url = f"nfs://{_host(self.address)}:{self.port}{PSEUDO_ROOT}/{volume}?version={self.version}"
        try:
            nfs_rs.Client.connect(url, connect_timeout=CONNECT_TIMEOUT, operation_timeout=OPERATION_TIMEOUT).close()
        except nfs_rs.NfsNotFoundError:
            return False
        except (nfs_rs.NfsError, OSError) as exc:
            raise StorageError(f"{self.describe()}: {exc}") from None
        return True

    # -- external: directories under one export, through the NFS protocol (nfs-rs) ----------------
    @contextlib.contextmanager
    def _client(self):
        try:
            import nfs_rs
        except ImportError:
            raise StorageError("nfs-rs is missing from this node's virtualenv (make bootstrap)") from None
        url = f"nfs://{_host(self.server)}:{self.port}{self.export_path}?version={self.version}"
        try:
            client = nfs_rs.Client.connect(url, connect_timeout=CONNECT_TIMEOUT, operation_timeout=OPERATION_TIMEOUT)
        except (nfs_rs.NfsError, OSError) as exc:
            raise StorageError(f"{self.describe()}: cannot mount the export: {exc}") from None
        try:
            yield client
        except nfs_rs.NfsError as exc:
            raise StorageError(f"{self.describe()}: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                client.close()

    @staticmethod
    def _is_dir(client, name: str) -> bool:
        import nfs_rs

        try:
            return client.stat(name).type == nfs_rs.FileType.DIRECTORY
        except nfs_rs.NfsNotFoundError:
            return False

    @staticmethod
    def _recorded_size(client, volume: str) -> int | None:
        import nfs_rs

        try:
            with client.open(f".hivemind/sizes/{volume}", "rb") as file:
                text = file.read().decode()
        except nfs_rs.NfsNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    @staticmethod
    def _record_size(client, volume: str, size: int) -> None:
        client.mkdir(".hivemind/sizes", parents=True, exist_ok=True)
        temporary = f".hivemind/sizes/.{volume}.tmp"
        with client.open(temporary, "wb") as file:
            file.write(str(size).encode())
        client.rename(temporary, f".hivemind/sizes/{volume}")

    def _external_create(self, volume: str, size: int) -> None:
        with self._client() as client:
            if self._is_dir(client, volume):
                current = self._recorded_size(client, volume)
                if current is not None and current != size:
                    raise StorageError(f"volume {volume} already exists with size {current}, not {size}")
                if current is None:
                    self._record_size(client, volume, size)
                return
            self._record_size(client, volume, size)
            client.mkdir(volume, 0o755, exist_ok=True)

    def _external_delete(self, volume: str) -> None:
        import nfs_rs

        with self._client() as client:
            if self._is_dir(client, volume):
                self._remove_tree(client, volume)
            client.remove(f".hivemind/sizes/{volume}", missing_ok=True)
            with contextlib.suppress(nfs_rs.NfsNotFoundError):
                client.remove(f".hivemind/sizes/.{volume}.tmp", missing_ok=True)

    @staticmethod
    def _remove_tree(client, top: str) -> None:
        """Remove a directory and everything under it, never following a symbolic link."""
        import nfs_rs

        stack, directories = [top], []
        while stack:
            directory = stack.pop()
            directories.append(directory)
            for entry in list(client.scandir(directory)):
                path = f"{directory}/{entry.name}"
                if entry.info.type == nfs_rs.FileType.DIRECTORY:
                    stack.append(path)
                else:
                    client.unlink(path, missing_ok=True)
        for directory in reversed(directories):
            with contextlib.suppress(nfs_rs.NfsNotFoundError):
                client.rmdir(directory)

    @staticmethod
    def _tree_size(client, top: str) -> int:
        import nfs_rs

        total, stack = 0, [top]
        while stack:
            directory = stack.pop()
            for entry in client.scandir(directory):
                if entry.info.type == nfs_rs.FileType.DIRECTORY:
                    stack.append(f"{directory}/{entry.name}")
                elif entry.info.type == nfs_rs.FileType.FILE:
                    total += entry.info.size
        return total


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
