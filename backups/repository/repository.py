"""A backup repository over a store: back up trees and documents, browse, restore, verify, prune.

The objects it keeps (docs/backup-format.md has the byte layouts):
  config                 the format version, repository id, chunker parameters, key check value
  data/<2 hex>/<pack id> packs of sealed chunks (packs.py)
  index/<id>             which pack holds each chunk, one per backup session (or per prune)
  snapshots/<id>         a snapshot manifest: time, the caller's metadata, the root tree or blob
  locks/<id>             locks (locks.py)

Content is cut into chunks with FastCDC; a chunk's id is a keyed hash of its plaintext, so a
chunk already stored is never uploaded again (incremental by content). Directories are JSON
tree blobs stored as chunks too, so an unchanged directory costs nothing in the next snapshot.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import zstandard
from pyfastcdc import FastCDC

from ..stores import NotFound, Store
from .format import (
    COMPRESSION_LEVEL,
    HEADER_SIZE,
    KIND_CONFIG,
    KIND_INDEX,
    KIND_SNAPSHOT,
    VERSION,
    DamagedObject,
    FormatError,
    Keys,
    RepositoryError,
    WrongKey,
    check_header,
    header,
)
from .locks import LOCK_TIMEOUT, Locks
from .packs import PACK_TARGET, TRAILER_LENGTH, PackWriter, check_pack_header, pack_key, read_trailer

# 512 KiB / 1 MiB / 8 MiB: big enough that a pack holds ~16 chunks and an index entry per MiB
# stays small, small enough that a 1 % change of a volume re-stores little more than itself.
DEFAULT_CHUNKER = {"min": 512 << 10, "avg": 1 << 20, "max": 8 << 20}
HEX_ID = 32  # snapshot, index and pack ids: 16 random bytes in hex


@dataclasses.dataclass
class SnapshotResult:
    id: str
    time: datetime
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    files_unchanged: int = 0  # not read again: unchanged since the parent snapshot
    bytes_read: int = 0
    bytes_new_stored: int = 0  # every byte this backup put into the store (packs, index, snapshot)
    chunks_new: int = 0
    chunks_total: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)  # devices, sockets, fifos
    vanished: list[str] = dataclasses.field(default_factory=list)  # removed while the backup ran
    seconds: float = 0.0


@dataclasses.dataclass
class SnapshotInfo:
    id: str
    time: datetime
    kind: str  # "tree" or "blob"
    meta: dict
    source: str  # the tree's path, or the blob's name
    stats: dict


@dataclasses.dataclass
class Entry:
    path: str
    type: str  # "file", "dir", "symlink"
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    target: str = ""
    chunks: list[str] = dataclasses.field(default_factory=list)  # a file's chunk ids, in order


@dataclasses.dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0


@dataclasses.dataclass
class VerifyReport:
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    chunks_read: int = 0
    damaged: dict[str, str] = dataclasses.field(default_factory=dict)  # object key -> what is wrong
    affected: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # snapshot id -> paths
    unindexed_packs: list[str] = dataclasses.field(default_factory=list)  # a running or crashed backup's

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.affected


@dataclasses.dataclass
class PruneResult:
    packs_deleted: int = 0
    bytes_freed: int = 0
    packs_kept: int = 0
    indexes_replaced: int = 0
    stale_locks_removed: int = 0


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or len(value) != HEX_ID or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{what}: expected {HEX_ID} lowercase hex digits, got {value!r}")
    return value


def check_meta(meta: dict | None) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ValueError("meta: expected a dict with string keys")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta: not representable as JSON: {exc}") from None
    return meta


class Repository:
    """One repository in one store, opened with its key. Thread-safe for one operation at a time."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        config: dict,
        *,
        workers: int | None = None,
        pack_size: int = PACK_TARGET,
        lock_timeout: float = LOCK_TIMEOUT,
    ):
        self.store, self.keys, self.config = store, keys, config
        self.id = config["id"]
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.pack_size = pack_size
        self.locks = Locks(store, keys, lock_timeout)
        chunker = config["chunker"]
        self.chunker = FastCDC(chunker["avg"], min_size=chunker["min"], max_size=chunker["max"], seed=keys.chunker_seed)
        self.index: dict[bytes, tuple[str, int, int]] = {}  # chunk id -> pack id, offset, length
        self.packs: dict[str, int] = {}  # pack id -> size, as the indexes say
        self.pack_entries: dict[str, list[tuple[bytes, int, int]]] = {}  # pack id -> its chunks
        self._indexes: set[str] = set()  # index objects loaded

    # opening ------------------------------------------------------------------------------

    @classmethod
    def init(cls, store: Store, key: bytes, *, chunker: dict | None = None, **options) -> Repository:
        """Make a new, empty repository in `store` (which must hold none) for `key`."""
        chunker = dict(chunker or DEFAULT_CHUNKER)
        if set(chunker) != {"min", "avg", "max"} or not all(isinstance(v, int) for v in chunker.values()):
            raise ValueError(f"chunker: expected integer min, avg and max sizes, got {chunker!r}")
        FastCDC(chunker["avg"], min_size=chunker["min"], max_size=chunker["max"])  # pyfastcdc's own range checks
        repository_id = secrets.token_bytes(16)
        keys = Keys(key, repository_id)
        body = {
            "version": VERSION,
            "id": repository_id.hex(),
            "created": datetime.now(UTC).isoformat(),
            "chunker": chunker,
        }
        document = {"config": body, "key_check": keys.check_value(canonical(body))}
        if store.exists("config"):
            raise RepositoryError(f"{store.describe()}: already holds a repository (a config object)")
        store.put("config", header(KIND_CONFIG) + json.dumps(document).encode(), create_only=True)
        return cls(store, keys, body, **options)

    @classmethod
    def open(cls, store: Store, key: bytes, **options) -> Repository:
        """Open the repository in `store`; WrongKey (and nothing written) when `key` is not its key."""
        try:
            data = store.get("config")
        except NotFound:
            raise RepositoryError(f"{store.describe()}: no repository there (no config object)") from None
        check_header(data, KIND_CONFIG, "config")
        try:
            document = json.loads(data[HEADER_SIZE:])
            body = document["config"]
            repository_id = bytes.fromhex(body["id"])
            check_value = document["key_check"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedObject(f"{store.describe()}: config is not readable: {exc}", key="config") from None
        keys = Keys(key, repository_id)
        if not isinstance(check_value, str) or not secrets.compare_digest(
            keys.check_value(canonical(body)), check_value
        ):
            raise WrongKey(
                f"{store.describe()}: the key given does not open repository {body['id']} "
                "(its key check value differs: another tenant's or another install's key, or a changed config)"
            )
        return cls(store, keys, body, **options)

    # index --------------------------------------------------------------------------------

    def load_index(self, *, full: bool = False, damaged: dict[str, str] | None = None) -> None:
        """Bring the in-memory index up to the store's index objects (all of them anew when some
        went, or with `full`). A damaged index object raises, or with `damaged` is recorded there
        and skipped."""
        present = {key for key, _ in self.store.list("index/")}
        if full or not self._indexes <= present:
            self.index.clear()
            self.packs.clear()
            self.pack_entries.clear()
            self._indexes.clear()
        for key in sorted(present - self._indexes):
            try:
                document = self.keys.open_object(KIND_INDEX, key, self.store.get(key))
            except DamagedObject as exc:
                if damaged is None:
                    raise
                damaged[key] = str(exc)
                continue
            self._merge(document)
            self._indexes.add(key)

    def _merge(self, document: dict) -> None:
        for pack_id, pack in document["packs"].items():
            self.packs[pack_id] = pack["size"]
            entries = self.pack_entries[pack_id] = []
            for chunk_hex, offset, length in pack["chunks"]:
                chunk_id = bytes.fromhex(chunk_hex)
                entries.append((chunk_id, offset, length))
                # two backups running at once may both store a chunk: either copy serves
                self.index[chunk_id] = (pack_id, offset, length)

    def _write_index(self, packs: dict) -> int:
        key = f"index/{secrets.token_hex(16)}"
        data = self.keys.seal_object(KIND_INDEX, key, {"packs": packs})
        self.store.put(key, data)
        self._indexes.add(key)
        return len(data)

    def rebuild_index(self) -> int:
        """Write one index from the packs' own trailers (after index objects were lost); packs read."""
        with self.locks.acquire(exclusive=True, purpose="rebuild-index"):
            packs = {}
            for key, size in self.store.list("data/"):
                (length,) = TRAILER_LENGTH.unpack(self.store.get_range(key, max(0, size - 4), 4).rjust(4, b"\0"))
                start = max(0, size - 4 - length)
                entries = read_trailer(self.keys, key, self.store.get_range(key, start, size - start), size)
                packs[key.rsplit("/", 1)[1]] = {
                    "size": size,
                    "chunks": [[c.hex(), offset, length] for c, offset, length in entries],
                }
            old = [key for key, _ in self.store.list("index/")]
            self._write_index(packs)
            for key in old:
                self.store.delete(key)
            self.load_index(full=True)
            return len(packs)

    # backup -------------------------------------------------------------------------------

    def backup_tree(
        self,
        path: str | os.PathLike,
        *,
        meta: dict | None = None,
        parent: str | None = None,
        progress: Callable[[str, int], None] | None = None,
    ) -> SnapshotResult:
        """Snapshot the directory `path`: files (streamed), directories and symlinks with their
        metadata. With `parent` (an earlier snapshot of the same tree), a file whose size,
        mtime, ctime and inode are those the parent recorded is not read again: its chunk list
        is reused. `progress(relative path, bytes read so far)` is called after each file."""
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"path: {root} is not a directory")
        meta = check_meta(meta)
        previous = None
        if parent is not None:
            document = self._snapshot(parent)
            if document["kind"] != "tree":
                raise ValueError(f"parent: snapshot {parent} is a document, not a tree")
            previous = document["tree"]
        with self.locks.acquire(exclusive=False, purpose="backup"):
            started = time.monotonic()
            self.load_index()
            session = _Session(self)
            result = SnapshotResult(id=secrets.token_hex(16), time=datetime.now(UTC))
            try:
                tree = self._backup_dir(session, root, "", result, progress, self._previous(previous, ""))
            finally:
                session.close()
            result.bytes_new_stored = session.finish()
            result.chunks_new, result.chunks_total = session.chunks_new, session.chunks_total
            result.seconds = time.monotonic() - started
            document = {
                "kind": "tree",
                "source": str(root),
                "tree": tree,
                "stats": {
                    "files": result.files,
                    "dirs": result.dirs,
                    "bytes_read": result.bytes_read,
                    "bytes_new_stored": result.bytes_new_stored,
                },
            }
            result.bytes_new_stored += self._write_snapshot(result.id, result.time, meta, document)
            return result

    def backup_blob(self, name: str, data: bytes, *, meta: dict | None = None) -> SnapshotResult:
        """Snapshot one document (the platform's state JSON, for one)."""
        if not isinstance(name, str) or not name:
            raise ValueError("name: expected a non-empty string")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValueError(f"data: expected bytes, got {type(data).__name__}")
        meta = check_meta(meta)
        with self.locks.acquire(exclusive=False, purpose="backup"):
            started = time.monotonic()
            self.load_index()
            session = _Session(self)
            result = SnapshotResult(id=secrets.token_hex(16), time=datetime.now(UTC), files=1)
            try:
                chunks = session.store_bytes(bytes(data))
            finally:
                session.close()
            result.bytes_read = len(data)
            result.bytes_new_stored = session.finish()
            result.chunks_new, result.chunks_total = session.chunks_new, session.chunks_total
            result.seconds = time.monotonic() - started
            document = {"kind": "blob", "source": name, "size": len(data), "chunks": chunks, "stats": {}}
            result.bytes_new_stored += self._write_snapshot(result.id, result.time, meta, document)
            return result

    def _write_snapshot(self, snapshot_id: str, when: datetime, meta: dict, document: dict) -> int:
        key = f"snapshots/{snapshot_id}"
        document = {"id": snapshot_id, "time": when.isoformat(), "meta": meta, **document}
        data = self.keys.seal_object(KIND_SNAPSHOT, key, document)
        self.store.put(key, data, create_only=True)
        return len(data)

    def _previous(self, tree: list[str] | None, path: str) -> dict[str, dict]:
        """The parent snapshot's entries of a directory, by name ({} when it has none or is unreadable:
        then everything is read again)."""
        if tree is None:
            return {}
        try:
            return {entry["name"]: entry for entry in self._tree(tree, path)}
        except RepositoryError:
            return {}

    def _unchanged(self, before: dict | None, info: os.stat_result) -> bool:
        return (
            before is not None
            and before.get("type") == "file"
            and (before.get("size"), before.get("mtime_ns"), before.get("ctime_ns"), before.get("ino"))
            == (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
            and all(bytes.fromhex(c) in self.index for c in before["chunks"])
        )

    def _backup_dir(
        self, session: _Session, directory: Path, relative: str, result: SnapshotResult, progress, previous: dict
    ):
        entries = []
        with os.scandir(directory) as scan:
            items = sorted(scan, key=lambda item: item.name)
        for item in items:
            path = f"{relative}{item.name}"
            try:
                entry = self._backup_item(session, item, path, result, progress, previous)
            except FileNotFoundError:
                result.vanished.append(path)  # removed since the directory was listed: not in the snapshot
                continue
            if entry is not None:
                entries.append(entry)
        return session.store_bytes(json.dumps({"entries": entries}, separators=(",", ":")).encode())

    def _backup_item(
        self, session: _Session, item: os.DirEntry, path: str, result: SnapshotResult, progress, previous
    ) -> dict | None:
        info = item.stat(follow_symlinks=False)
        entry = {
            "name": item.name,
            "mode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mtime_ns": info.st_mtime_ns,
        }
        if stat.S_ISLNK(info.st_mode):
            entry.update(type="symlink", target=os.readlink(item.path))
            result.symlinks += 1
        elif stat.S_ISDIR(info.st_mode):
            before = previous.get(item.name)
            inner = self._previous(before["tree"] if before and before.get("type") == "dir" else None, path)
            tree = self._backup_dir(session, Path(item.path), f"{path}/", result, progress, inner)
            entry.update(type="dir", tree=tree)
            result.dirs += 1
        elif stat.S_ISREG(info.st_mode):
            before = previous.get(item.name)
            if self._unchanged(before, info):
                size, chunks = before["size"], before["chunks"]
                result.files_unchanged += 1
            else:
                size, chunks = 0, []
                with open(item.path, "rb") as source:
                    for chunk in self.chunker.cut_stream(source):
                        data = bytes(chunk.data)  # the chunker reuses its buffer
                        size += len(data)
                        chunks.append(session.store_chunk(data))
                result.bytes_read += size
            # ctime and inode: an edit that puts the mtime back still changes the ctime
            entry.update(type="file", size=size, chunks=chunks, ctime_ns=info.st_ctime_ns, ino=info.st_ino)
            result.files += 1
            if progress:
                progress(path, result.bytes_read)
        else:
            result.skipped.append(path)  # devices, fifos, sockets: nothing to read
            return None
        return entry

    # reading ------------------------------------------------------------------------------

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        found = [self._info(self._snapshot(key.rsplit("/", 1)[1])) for key, _ in self.store.list("snapshots/")]
        return sorted(found, key=lambda info: info.time)

    def _snapshot(self, snapshot_id: str) -> dict:
        key = f"snapshots/{check_id(snapshot_id, 'snapshot id')}"
        try:
            data = self.store.get(key)
        except NotFound:
            raise RepositoryError(f"{self.store.describe()}: no snapshot {snapshot_id}") from None
        return self.keys.open_object(KIND_SNAPSHOT, key, data)

    @staticmethod
    def _info(document: dict) -> SnapshotInfo:
        return SnapshotInfo(
            id=document["id"],
            time=datetime.fromisoformat(document["time"]),
            kind=document["kind"],
            meta=document["meta"],
            source=document["source"],
            stats=document.get("stats", {}),
        )

    def read_chunk(self, chunk_hex: str, path: str = "") -> bytes:
        """A chunk's plaintext, checked (tag, then id) before it is returned."""
        chunk_id = bytes.fromhex(chunk_hex)
        where = f" of {path}" if path else ""
        if chunk_id not in self.index:
            raise DamagedObject(f"chunk {chunk_hex}{where} is in no index (missing)", chunk=chunk_hex, path=path)
        pack_id, offset, length = self.index[chunk_id]
        key = pack_key(pack_id)
        try:
            sealed = self.store.get_range(key, offset, length)
        except NotFound:
            raise DamagedObject(
                f"{key} (holding chunk {chunk_hex}{where}) is missing", key=key, chunk=chunk_hex, path=path
            ) from None
        if len(sealed) != length:
            raise DamagedObject(f"{key}: truncated at chunk {chunk_hex}{where}", key=key, chunk=chunk_hex, path=path)
        try:
            return self.keys.open_chunk(chunk_id, sealed, key)
        except DamagedObject as exc:
            raise DamagedObject(f"{path}: {exc}" if path else str(exc), key=key, chunk=chunk_hex, path=path) from None

    def _read_chunks(self, chunks: list[str], path: str, pool: ThreadPoolExecutor | None) -> Iterator[bytes]:
        """The chunks' plaintexts in order, fetched ahead in `pool`; each checked before it is yielded."""
        if pool is None or len(chunks) < 2:
            for chunk in chunks:
                yield self.read_chunk(chunk, path)
            return
        window: collections.deque = collections.deque()
        pending = iter(chunks)
        for chunk in pending:
            window.append(pool.submit(self.read_chunk, chunk, path))
            if len(window) >= self.workers * 2:
                break
        while window:
            data = window.popleft().result()
            following = next(pending, None)
            if following is not None:
                window.append(pool.submit(self.read_chunk, following, path))
            yield data

    def _tree(self, chunks: list[str], path: str) -> list[dict]:
        return json.loads(b"".join(self._read_chunks(chunks, f"{path or '/'} (directory listing)", None)))["entries"]

    def read_blob(self, snapshot_id: str) -> bytes:
        """The document a `backup_blob` snapshot holds."""
        document = self._snapshot(snapshot_id)
        if document["kind"] != "blob":
            raise RepositoryError(f"snapshot {snapshot_id} is a {document['kind']} snapshot, not a document")
        self.load_index()
        return b"".join(self._read_chunks(document["chunks"], document["source"], None))

    def _find(self, document: dict, path: str) -> dict:
        """The tree entry at `path` ("" is the root, as a directory entry)."""
        entry = {"type": "dir", "tree": document["tree"], "name": ""}
        parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
        if ".." in parts:
            raise ValueError(f"path: {path!r} may not contain '..'")
        walked = ""
        for part in parts:
            if entry["type"] != "dir":
                raise RepositoryError(f"snapshot {document['id']}: {walked} is not a directory")
            match = [e for e in self._tree(entry["tree"], walked) if e["name"] == part]
            walked = f"{walked}/{part}" if walked else part
            if not match:
                raise RepositoryError(f"snapshot {document['id']}: no {walked}")
            entry = match[0]
        return entry

    def list_files(self, snapshot_id: str, path: str = "") -> list[Entry]:
        """A directory's entries in a tree snapshot (or the one entry, for a file or symlink)."""
        document = self._snapshot(snapshot_id)
        if document["kind"] != "tree":
            raise RepositoryError(f"snapshot {snapshot_id} is a document, not a tree")
        self.load_index()
        entry = self._find(document, path)
        base = "/".join(p for p in PurePosixPath(path).parts if p not in ("/", "."))
        if entry["type"] != "dir":
            return [as_entry(entry, base)]
        prefix = f"{base}/" if base else ""
        return [as_entry(child, f"{prefix}{child['name']}") for child in self._tree(entry["tree"], base)]

    # restore ------------------------------------------------------------------------------

    def restore(self, snapshot_id: str, target_dir: str | os.PathLike, paths: list[str] | None = None) -> RestoreResult:
        """Write the snapshot's tree (or only `paths` in it, at their place) under `target_dir`.

        Every chunk is checked before its bytes are written; a file is written under a temporary
        name and renamed when whole, so a damaged chunk leaves nothing at the file's name and the
        DamagedObject raised names the pack, the chunk and the file."""
        document = self._snapshot(snapshot_id)
        if document["kind"] != "tree":
            raise RepositoryError(f"snapshot {snapshot_id} is a document: read it with read_blob")
        if paths is not None and (isinstance(paths, str) or not all(isinstance(p, str) for p in paths)):
            raise ValueError("paths: expected a list of paths in the snapshot")
        target = Path(target_dir)
        target.mkdir(parents=True, exist_ok=True)
        result = RestoreResult()
        with self.locks.acquire(exclusive=False, purpose="restore"):
            self.load_index()
            with ThreadPoolExecutor(self.workers, thread_name_prefix="restore") as pool:
                if paths is None:
                    for child in self._tree(document["tree"], ""):
                        self._restore_entry(child, target / child["name"], child["name"], pool, result)
                else:
                    for path in paths:
                        entry = self._find(document, path)
                        relative = "/".join(p for p in PurePosixPath(path).parts if p not in ("/", "."))
                        destination = target / relative if relative else target
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        if relative:
                            self._restore_entry(entry, destination, relative, pool, result)
                        else:
                            for child in self._tree(document["tree"], ""):
                                self._restore_entry(child, target / child["name"], child["name"], pool, result)
        return result

    def _restore_entry(self, entry: dict, destination: Path, path: str, pool, result: RestoreResult) -> None:
        kind = entry["type"]
        if kind == "dir":
            destination.mkdir(exist_ok=True)
            for child in self._tree(entry["tree"], path):
                self._restore_entry(child, destination / child["name"], f"{path}/{child['name']}", pool, result)
            apply_metadata(destination, entry)
            result.dirs += 1
            return
        temporary = destination.with_name(f".{destination.name}.restore-{secrets.token_hex(4)}")
        try:
            if kind == "symlink":
                os.symlink(entry["target"], temporary)
                result.symlinks += 1
            elif kind == "file":
                with open(temporary, "xb") as out:
                    for data in self._read_chunks(entry["chunks"], path, pool):
                        out.write(data)
                        result.bytes_written += len(data)
                result.files += 1
            else:
                raise FormatError(f"{path}: unknown entry type {kind!r}")
            apply_metadata(temporary, entry)
            os.replace(temporary, destination)
        except BaseException:
            if os.path.lexists(temporary):
                os.unlink(temporary)
            raise

    # verification -------------------------------------------------------------------------

    def verify(self, read_data: bool | int | float = False) -> VerifyReport:
        """Check the repository: every chunk a snapshot references is in an index, every indexed
        pack exists with its size; with read_data (True, or a percentage of the packs) the packs
        are downloaded and every chunk in them decrypted and its id recomputed. The report names
        the damaged objects and, per snapshot, the files and directories they affect."""
        if isinstance(read_data, bool):
            fraction = 1.0 if read_data else 0.0
        elif isinstance(read_data, int | float) and 0 < read_data <= 100:
            fraction = read_data / 100
        else:
            raise ValueError(f"read_data: expected True, False or a percentage in (0, 100], got {read_data!r}")
        report = VerifyReport()
        with self.locks.acquire(exclusive=False, purpose="verify"):
            self.load_index(full=True, damaged=report.damaged)
            stored = dict(self.store.list("data/"))
            by_pack = self.pack_entries
            report.packs = len(self.packs)
            bad: set[bytes] = set()
            for pack_id, size in self.packs.items():
                key = pack_key(pack_id)
                if key not in stored:
                    report.damaged[key] = "missing"
                    bad.update(c for c, _, _ in by_pack[pack_id])
                elif stored[key] != size:
                    report.damaged[key] = f"{stored[key]} bytes where its index says {size}"
                    bad.update(c for c, _, _ in by_pack[pack_id])
            indexed = {pack_key(p) for p in self.packs}
            report.unindexed_packs = sorted(key for key in stored if key not in indexed)
            if fraction:
                candidates = sorted(p for p in self.packs if pack_key(p) not in report.damaged)
                count = math.ceil(fraction * len(candidates))
                chosen = candidates if fraction >= 1 else secrets.SystemRandom().sample(candidates, count)
                with ThreadPoolExecutor(self.workers, thread_name_prefix="verify") as pool:
                    for pack_id, damaged, problem in pool.map(lambda p: self._read_pack(p, by_pack[p]), chosen):
                        report.packs_read += 1
                        report.chunks_read += len(by_pack[pack_id])
                        bad.update(damaged)
                        if problem:
                            report.damaged[pack_key(pack_id)] = problem
            self._affected(report, bad)
        return report

    def _read_pack(self, pack_id: str, chunks: list[tuple[bytes, int, int]]) -> tuple[str, set[bytes], str]:
        """(pack id, its damaged chunks, what is wrong with it or "") from reading the whole pack."""
        key = pack_key(pack_id)
        data = self.store.get(key)
        problems, damaged = [], set()
        try:
            check_pack_header(key, data)
        except RepositoryError as exc:
            problems.append(str(exc))
        try:
            trailer = {(c, o, n) for c, o, n in read_trailer(self.keys, key, data, len(data))}
            if trailer != set(chunks):
                problems.append("its trailer and the index disagree")
        except RepositoryError as exc:
            problems.append(str(exc))
        for chunk_id, offset, length in chunks:
            try:
                self.keys.open_chunk(chunk_id, data[offset : offset + length], key)
            except RepositoryError as exc:
                damaged.add(chunk_id)
                problems.append(str(exc).removeprefix(f"{key}: "))
        return pack_id, damaged, "; ".join(problems)

    def _affected(self, report: VerifyReport, bad: set[bytes]) -> None:
        """Walk every snapshot: record the paths whose chunks are bad or in no index."""
        trees: dict[tuple, list[dict] | Exception] = {}
        for key, _ in self.store.list("snapshots/"):
            report.snapshots += 1
            snapshot_id = key.rsplit("/", 1)[1]
            affected: list[str] = []
            try:
                document = self.keys.open_object(KIND_SNAPSHOT, key, self.store.get(key))
            except RepositoryError as exc:
                report.damaged[key] = str(exc)
                report.affected[snapshot_id] = ["(the whole snapshot: its manifest is damaged)"]
                continue

            def check(chunks: list[str], path: str, is_tree: bool = False, affected: list = affected) -> bool:
                for chunk in chunks:
                    chunk_id = bytes.fromhex(chunk)
                    if chunk_id not in self.index:
                        report.damaged.setdefault(f"chunk {chunk}", "in no index (missing)")
                    if chunk_id in bad or chunk_id not in self.index:
                        affected.append(f"{path}/ (directory listing)" if is_tree else path)
                        return False
                return True

            def walk(chunks: list[str], path: str, affected: list = affected) -> None:
                if not check(chunks, path, is_tree=True):
                    return
                cached = trees.get(tuple(chunks))
                if cached is None:
                    try:
                        cached = self._tree(chunks, path)
                    except RepositoryError as exc:
                        cached = exc
                    trees[tuple(chunks)] = cached
                if isinstance(cached, Exception):
                    damage = cached
                    report.damaged.setdefault(getattr(damage, "key", "") or f"tree of {path}", str(damage))
                    affected.append(f"{path}/ (directory listing)")
                    return
                for entry in cached:
                    child = f"{path}/{entry['name']}" if path else entry["name"]
                    if entry["type"] == "dir":
                        walk(entry["tree"], child)
                    elif entry["type"] == "file":
                        check(entry["chunks"], child)

            if document["kind"] == "tree":
                walk(document["tree"], "")
            else:
                check(document["chunks"], document["source"])
            if affected:
                report.affected[snapshot_id] = affected

    # forget and prune ---------------------------------------------------------------------

    def forget(self, snapshot_ids: list[str]) -> None:
        """Remove snapshots (their data goes at the next prune)."""
        if isinstance(snapshot_ids, str):
            raise ValueError("snapshot_ids: expected a list of snapshot ids")
        keys = [f"snapshots/{check_id(s, 'snapshot id')}" for s in snapshot_ids]
        with self.locks.acquire(exclusive=False, purpose="forget"):
            for key in keys:
                if not self.store.exists(key):
                    raise RepositoryError(f"{self.store.describe()}: no snapshot {key.rsplit('/', 1)[1]}")
            for key in keys:
                self.store.delete(key)

    def prune(self, *, wait: float = 0.0) -> PruneResult:
        """Delete the packs no snapshot references, under an exclusive lock (waiting up to `wait`
        seconds for running backups). A pack with any referenced chunk is kept whole: partly used
        packs are not repacked. Packs of no index are deleted too: with the exclusive lock held no
        backup is running, so they are what a crashed backup left."""
        result = PruneResult()
        with self.locks.acquire(exclusive=True, purpose="prune", wait=wait):
            result.stale_locks_removed = len(self.locks.remove_stale())
            self.load_index(full=True)
            referenced = self._referenced()
            missing = [c for c in referenced if c not in self.index]
            if missing:
                raise RepositoryError(
                    f"{self.store.describe()}: {len(missing)} referenced chunks are in no index "
                    f"(first {missing[0].hex()}): nothing pruned; run verify"
                )
            keep = {self.index[c][0] for c in referenced}
            by_pack = self.pack_entries
            old_indexes = [key for key, _ in self.store.list("index/")]
            packs = {
                pack_id: {"size": self.packs[pack_id], "chunks": [[c.hex(), o, n] for c, o, n in by_pack[pack_id]]}
                for pack_id in sorted(keep)
            }
            # new index first, old ones next, packs last: a prune stopped at any step leaves
            # every indexed pack in place
            self._write_index(packs)
            result.indexes_replaced = len(old_indexes)
            for key in old_indexes:
                self.store.delete(key)
            for key, size in self.store.list("data/"):
                if key.rsplit("/", 1)[1] not in keep:
                    self.store.delete(key)
                    result.packs_deleted += 1
                    result.bytes_freed += size
            result.packs_kept = len(keep)
            self.load_index(full=True)
        return result

    def _referenced(self) -> set[bytes]:
        """Every chunk id any snapshot references (trees read to find them); an unreadable
        snapshot or tree stops the prune, as what it references cannot be known."""
        referenced: set[bytes] = set()
        seen_trees: set[tuple] = set()

        def walk(chunks: list[str], path: str) -> None:
            referenced.update(bytes.fromhex(c) for c in chunks)
            if tuple(chunks) in seen_trees:
                return
            seen_trees.add(tuple(chunks))
            for entry in self._tree(chunks, path):
                child = f"{path}/{entry['name']}" if path else entry["name"]
                if entry["type"] == "dir":
                    walk(entry["tree"], child)
                elif entry["type"] == "file":
                    referenced.update(bytes.fromhex(c) for c in entry["chunks"])

        for key, _ in self.store.list("snapshots/"):
            document = self.keys.open_object(KIND_SNAPSHOT, key, self.store.get(key))
            if document["kind"] == "tree":
                walk(document["tree"], "")
            else:
                referenced.update(bytes.fromhex(c) for c in document["chunks"])
        return referenced


class _Session:
    """One backup's writing side: new chunks compressed, sealed and packed in a thread pool,
    full packs uploaded from the worker that filled them, one index object at the end."""

    def __init__(self, repository: Repository):
        self.repository = repository
        self.keys = repository.keys
        self.pool = ThreadPoolExecutor(repository.workers, thread_name_prefix="backup")
        self.slots = threading.Semaphore(repository.workers * 4)  # bounds the chunks held in memory
        self.lock = threading.Lock()
        self.local = threading.local()
        self.pending: set[bytes] = set()
        self.writer = PackWriter()
        self.new_packs: dict[str, dict] = {}
        self.errors: list[BaseException] = []
        self.bytes_stored = 0
        self.chunks_new = 0
        self.chunks_total = 0

    def store_chunk(self, data: bytes) -> str:
        """The chunk's id; the chunk queued for storing unless the repository has it."""
        if self.errors:
            raise self.errors[0]
        chunk_id = self.keys.id_of(data)
        self.chunks_total += 1
        if chunk_id in self.repository.index:
            return chunk_id.hex()
        with self.lock:
            if chunk_id in self.pending:
                return chunk_id.hex()
            self.pending.add(chunk_id)
            self.chunks_new += 1
        self.slots.acquire()
        self.pool.submit(self._seal, chunk_id, data).add_done_callback(self._done)
        return chunk_id.hex()

    def store_bytes(self, data: bytes) -> list[str]:
        return [self.store_chunk(bytes(chunk.data)) for chunk in self.repository.chunker.cut_buf(data)]

    def _done(self, future) -> None:
        self.slots.release()
        if future.exception() is not None:
            self.errors.append(future.exception())

    def _seal(self, chunk_id: bytes, data: bytes) -> None:
        compressor = getattr(self.local, "compressor", None)
        if compressor is None:
            compressor = self.local.compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
        sealed = self.keys.seal_chunk(chunk_id, data, compressor)
        with self.lock:
            self.writer.add(chunk_id, sealed)
            full = None
            if self.writer.size >= self.repository.pack_size:
                full, self.writer = self.writer, PackWriter()
        if full is not None:
            self._upload(full)

    def _upload(self, writer: PackWriter) -> None:
        data = writer.finish(self.keys)
        self.repository.store.put(pack_key(writer.pack_id), data)
        with self.lock:
            self.new_packs[writer.pack_id] = {
                "size": len(data),
                "chunks": [[c.hex(), offset, length] for c, offset, length in writer.entries],
            }
            self.bytes_stored += len(data)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def finish(self) -> int:
        """Upload the last pack and the session's index; the bytes stored."""
        if self.errors:
            raise self.errors[0]
        if self.writer.entries:
            self._upload(self.writer)
        if self.new_packs:
            self.bytes_stored += self.repository._write_index(self.new_packs)
            self.repository._merge({"packs": self.new_packs})
        return self.bytes_stored


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def as_entry(entry: dict, path: str) -> Entry:
    return Entry(
        path=path,
        type=entry["type"],
        mode=entry.get("mode", 0),
        uid=entry.get("uid", 0),
        gid=entry.get("gid", 0),
        mtime_ns=entry.get("mtime_ns", 0),
        size=entry.get("size", 0),
        target=entry.get("target", ""),
        chunks=list(entry.get("chunks", [])),
    )


def apply_metadata(path: Path, entry: dict) -> None:
    """Owner (when running as root), mode and mtime, as the snapshot recorded them."""
    symlink = entry["type"] == "symlink"
    if os.geteuid() == 0:
        os.chown(path, entry["uid"], entry["gid"], follow_symlinks=False)
    if not symlink:
        os.chmod(path, entry["mode"])
    os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)
