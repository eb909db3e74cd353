"""Encrypted volumes on the node: gocryptfs over the volume's directory, any provider.

    <volume dir>/cipher/         gocryptfs.conf and the encrypted names and contents: all the
                                 pool, its snapshots, clones and streams ever hold
    <var dir>/run/crypt/<v>      the plaintext view, a FUSE mount, while a container uses it;
                                 the directory itself is immutable (chattr +i), so a container
                                 bound to it while nothing is mounted cannot write plaintext
                                 onto the node's disk (its writes fail instead)
    <var dir>/run/crypt/.<v>.lock  serialises mounts of one volume; its mtime is the last use
    <var dir>/log/crypt/<v>.log  what the volume's gocryptfs process says

The volume's data key (tenants/keys.py) is gocryptfs's password, in base64, written to its
standard input: never an argument, an environment variable or a file. gocryptfs runs as a
daemon of its own (it forks once mounted), so mounts outlive an agent restart; containers keep
theirs. `reconcile` (every agent beat) unmounts a view no container on the node binds any
more, and mounts again one a container binds whose gocryptfs died (a stale mount: ENOTCONN)
or that is missing (after a reboot). A container already running on a dead mount does not see
the new one (mounts made later do not propagate into a running container): it needs a restart.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from django.conf import settings

from storage.providers.base import NAME, StorageError, check_name

log = logging.getLogger(__name__)

CIPHER = "cipher"  # the ciphertext directory inside the volume's directory
CONFIG = "gocryptfs.conf"
FSTYPE = "fuse.gocryptfs"
TIMEOUT = 120  # seconds for init and mount (scrypt at the production cost takes about 0.5 s)
UNUSED_GRACE = 120  # seconds a view stays mounted after its last use with no container binding it
WRONG_PASSWORD = 12  # gocryptfs's exit code
# -noprealloc: gocryptfs preallocates before each write by default, which costs a lot on btrfs
# (copy-on-write) and gains nothing there; -allow_other: containers run as any uid.
MOUNT_OPTIONS = ("-q", "-nosyslog", "-allow_other", "-noprealloc")


def run_dir() -> Path:
    return Path(settings.VAR_DIR) / "run" / "crypt"


def log_dir() -> Path:
    return Path(settings.VAR_DIR) / "log" / "crypt"


def mountpoint(handle: str) -> Path:
    return run_dir() / check_name(handle)


def cipher_dir(volume_dir: Path) -> Path:
    return Path(volume_dir) / CIPHER


def _password(key: bytes) -> bytes:
    return base64.b64encode(key) + b"\n"


def _gocryptfs() -> str:
    binary = shutil.which("gocryptfs")
    if binary is None:
        raise StorageError("gocryptfs is not installed on this node (apt-get install gocryptfs fuse): "
                           "it cannot hold encrypted volumes")  # fmt: skip
    if not any(Path(d, "fusermount").exists() or Path(d, "fusermount3").exists() for d in ("/bin", "/usr/bin")):
        raise StorageError("fusermount is not installed on this node (apt-get install fuse): gocryptfs cannot mount")
    return binary


def _chattr(path: Path, flag: str) -> None:
    """Best effort: a file system without the immutable flag only loses the guard."""
    result = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.warning("chattr %s %s: %s", flag, path, result.stderr.strip() or result.returncode)


# --- the ciphertext ------------------------------------------------------------------------------


def is_initialised(volume_dir: Path) -> bool:
    return (cipher_dir(volume_dir) / CONFIG).is_file()


def initialise(volume_dir: Path, key: bytes, *, scryptn: int | None = None) -> None:
    """Make `<volume dir>/cipher` a gocryptfs directory whose password is the data key. Made
    under a temporary name and renamed into place, so a crash leaves either none or a whole one."""
    volume_dir = Path(volume_dir)
    if is_initialised(volume_dir):
        return
    binary = _gocryptfs()
    target = cipher_dir(volume_dir)
    if target.exists():  # a directory without a config is not ours to trust
        raise StorageError(f"{target} exists without a {CONFIG}: not an encrypted volume's ciphertext")
    fresh = volume_dir / f".{CIPHER}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(mode=0o700)
    scryptn = settings.CONFIG.crypt_scryptn if scryptn is None else scryptn
    result = subprocess.run(
        [binary, "-init", "-q", "-scryptn", str(scryptn), str(fresh)],
        input=_password(key), capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        raise StorageError(f"gocryptfs -init in {volume_dir.name} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()[:500]}")  # fmt: skip
    os.rename(fresh, target)


# --- the plaintext view --------------------------------------------------------------------------


def _mounts() -> dict[Path, str]:
    """Mount points under the run directory -> their file system type (from this process's view)."""
    root = str(run_dir()) + "/"
    found = {}
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            if point.startswith(root):
                found[Path(point)] = fields[fields.index("-") + 1]
    return found


def state(handle: str) -> str:
    """The view's state: "mounted" (live), "stale" (its gocryptfs died), or "absent"."""
    point = mountpoint(handle)
    if _mounts().get(point) is None:
        return "absent"
    try:
        os.stat(point)
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
            return "stale"
        raise
    return "mounted"


def mounted() -> dict[str, str]:
    """Handles with a view on this node -> "mounted" or "stale"."""
    return {point.name: state(point.name) for point, fstype in _mounts().items() if fstype == FSTYPE}


@contextlib.contextmanager
def _locked(handle: str):
    run_dir().mkdir(parents=True, exist_ok=True)
    lock = run_dir() / f".{handle}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _umount(point: Path, *, lazy: bool = False) -> None:
    result = subprocess.run(["umount", *(["-l"] if lazy else []), str(point)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0 and not lazy:
        log.warning("umount %s: %s; detaching it lazily", point, result.stderr.strip())
        _umount(point, lazy=True)
    elif result.returncode != 0:
        raise StorageError(f"cannot unmount {point}: {result.stderr.strip()}")


def mount(volume_dir: Path, handle: str, key: bytes) -> Path:
    """The volume's plaintext view, mounted now if it is not (a stale one mounted again);
    returns the directory to bind-mount. Marks the view as just used."""
    volume_dir = Path(volume_dir)
    point = mountpoint(handle)
    with _locked(handle) as lock:
        os.utime(lock)  # the last use: reconcile leaves a view alone for a while after it
        current = state(handle)
        if current == "mounted":
            return point
        if current == "stale":
            log.warning("volume %s: its gocryptfs process is gone; mounting its view again", handle)
            _umount(point, lazy=True)
        if not is_initialised(volume_dir):
            raise StorageError(f"volume {handle} has no ciphertext directory ({CIPHER}/{CONFIG}) in its pool")
        binary = _gocryptfs()
        if not point.is_dir():
            point.mkdir(mode=0o700)
        _chattr(point, "+i")
        log_dir().mkdir(parents=True, exist_ok=True)
        with open(log_dir() / f"{handle}.log", "ab") as out:
            # The daemon keeps stdout and stderr: a file, not a pipe this call would wait on.
            result = subprocess.run(
                [binary, *MOUNT_OPTIONS, str(cipher_dir(volume_dir)), str(point)],
                input=_password(key), stdout=out, stderr=out, timeout=TIMEOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            said = (log_dir() / f"{handle}.log").read_bytes()[-500:].decode(errors="replace").strip()
            why = "the key does not open it" if result.returncode == WRONG_PASSWORD else said
            raise StorageError(f"cannot mount encrypted volume {handle} (gocryptfs exit {result.returncode}): {why}")
        if state(handle) != "mounted":
            raise StorageError(f"gocryptfs said it mounted volume {handle}, but {point} is not a live mount")
        return point


def unmount(handle: str) -> None:
    """Unmount the volume's view (nothing there is fine) and remove its mount point."""
    point = mountpoint(handle)
    with _locked(handle) as lock:
        if state(handle) != "absent":
            _umount(point, lazy=state(handle) == "stale")
        if point.exists() and not os.path.ismount(point):
            _chattr(point, "-i")
            with contextlib.suppress(OSError):
                point.rmdir()
        lock.unlink(missing_ok=True)


def last_used(handle: str) -> float:
    try:
        return (run_dir() / f".{handle}.lock").stat().st_mtime
    except FileNotFoundError:
        return 0.0


def release_all() -> list[str]:
    """Unmount every view under this var dir (tests, benchmarks, a node being taken apart)."""
    handles = sorted(mounted())
    for handle in handles:
        unmount(handle)
    return handles


# --- volumes -------------------------------------------------------------------------------------


def volume_key(volume) -> bytes:
    from tenants import keys

    return keys.data_key(tenant=volume.tenant, purpose="volume", object_id=volume.pk)


def attach(volume, provider, **claim) -> Path:
    """The directory a container bind-mounts for an encrypted volume: its view, mounted (over
    the volume attached with `claim`, Provider.attach's holder and may_fence)."""
    return mount(provider.attach(volume.handle, **claim), volume.handle, volume_key(volume))


def _bound_handles(node_name: str) -> dict[str, list[str]]:
    """Handles whose view a container on this node binds (any state: a stopped one may start
    again, a restarting one will) -> those containers' names; and those a CO has staged through
    the CSI endpoint (storage/csi/node.py)."""
    from storage.csi import staging as csi_staging

    return {**csi_staging.staged(), **bound_under(run_dir())}


def bound_under(root: Path) -> dict[str, list[str]]:
    """The first path component under `root` of every directory a managed container of this
    node binds from there (any state) -> those containers' names."""
    from hivemind.applications.models import LABEL_MANAGED
    from hivemind.nodes.runtime import docker_client

    prefix = str(root) + "/"
    client = docker_client(timeout=30)
    try:
        containers = client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    finally:
        client.close()
    bound: dict[str, list[str]] = {}
    for container in containers:
        for mount_ in container.get("Mounts") or []:
            source = mount_.get("Source") or ""
            if mount_.get("Type") == "bind" and source.startswith(prefix):
                name = (container.get("Names") or ["?"])[0].lstrip("/")
                bound.setdefault(source[len(prefix) :].split("/")[0], []).append(name)
    return bound


def reconcile(node_name: str) -> dict[str, str]:
    """Keep this node's views as its containers need them: unmount those none binds (after
    UNUSED_GRACE since their last use: a replica being created binds its view just after
    mounting it), mount again those a container binds that are stale or missing. Returns
    {handle: what was done}."""
    from storage.models import Volume
    from storage.steps import provider_of

    done: dict[str, str] = {}
    views = mounted()
    if not views and not Volume.objects.filter(pool__node__name=node_name, encrypted=True).exists():
        return done  # nothing to keep: no need to ask Docker
    bound = _bound_handles(node_name)
    now = time.time()
    for handle in views:
        if handle not in bound and now - last_used(handle) > UNUSED_GRACE:
            unmount(handle)
            done[handle] = "unmounted"
    for handle, containers in bound.items():
        if not NAME.fullmatch(handle) or handle[0] != "v":
            continue
        current = state(handle)
        if current == "mounted":
            continue
        volume = Volume.objects.select_related("pool", "tenant").filter(pk=int(handle[1:]), encrypted=True).first()
        if volume is None or volume.status != Volume.Status.READY:
            continue  # a workflow works on it (a revert, a delete): it mounts what it needs
        try:
            attach(volume, provider_of(volume.pool))
        except Exception as exc:  # one volume's trouble must not stop the others
            log.warning("volume %s: cannot mount its view for %s: %s", handle, ", ".join(containers), exc)
            done[handle] = f"failed: {exc}"
            continue
        log.warning("volume %s: its view was %s and is mounted again; running container(s) %s see it after a "
                    "restart", handle, current, ", ".join(containers))  # fmt: skip
        done[handle] = "remounted"
    return done
