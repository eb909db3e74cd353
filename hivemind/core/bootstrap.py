"""Bring up what one machine needs before the platform's processes start.

Each function is safe to call again: it first looks whether the thing is already
there (a daemon answering, an image with the right label, an admin account) and
only makes it when it is not. `make run` calls them through `manage.py up`; the
test suite uses the same functions for its private Docker daemon.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import docker
import redis
from docker.errors import DockerException, ImageNotFound

from hivemind.core.supervisor import stop_group

BUSYBOX_BINARY = Path("/bin/busybox")
BUSYBOX_IMAGE = "hivemind/busybox"
BUSYBOX_LABEL = "org.hivemind.busybox.sha256"


class BootstrapError(RuntimeError):
    """Something the platform needs could not be found or started; the message says what."""


@dataclass
class LocalService:
    """A daemon the platform uses; `process` is set only when we started it ourselves."""

    name: str
    endpoint: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    extra_cleanup: list[Path] = field(default_factory=list)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self, timeout: float = 30) -> None:
        """Stop the daemon if we started it: SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        stop_group(self.process, timeout)


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(line.strip() for line in text)


def _wait_until(predicate, *, timeout: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.2)
    return predicate()


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def is_loopback(url: str) -> bool:
    """True when `url` names this machine only (127.0.0.0/8, ::1, localhost, a unix socket)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "unix" or host in ("localhost", "::1") or host.startswith("127.")


# --- Joining a machine to a platform that runs elsewhere ---------------------------------


def require_shared_database(database_url: str, *, from_env: str) -> None:
    """A joining machine must use the first machine's database, which SQLite cannot be."""
    if not database_url.startswith("sqlite:"):
        return
    where = (
        "is not set, so this machine would use a SQLite file of its own"
        if not from_env.strip()
        else f"points at SQLite ({database_url})"
    )
    raise BootstrapError(
        f"HIVEMIND_DATABASE_URL {where}. SQLite is one machine's file: a joining machine must use the "
        "first machine's database. Move the first machine to PostgreSQL (docs/operations.md, "
        '"SQLite or PostgreSQL"), then set HIVEMIND_DATABASE_URL here to the same '
        "postgres://USER:PASSWORD@HOST:5432/NAME it uses."
    )


def require_remote_broker(url: str) -> None:
    """A joining machine uses the first machine's Redis and never starts one of its own."""
    if redis_answers(url):
        return
    shown = redact(url)
    if is_loopback(url):
        raise BootstrapError(
            f"HIVEMIND_REDIS_URL: nothing answers at {shown}, an address of this machine only. A joining "
            "machine uses the first machine's Redis and never starts its own: set HIVEMIND_REDIS_URL to "
            "redis://FIRST-MACHINE:6379/DB, and make the first machine's Redis listen on an address this "
            "machine reaches (`make run` starts its private Redis on 127.0.0.1 only; use a redis-server "
            "with `bind` set to that address and a password, see docs/operations.md)."
        )
    from hivemind.core.health import check_broker

    error = check_broker(url).get("error", "no answer")
    raise BootstrapError(
        f"HIVEMIND_REDIS_URL: the first machine's broker at {shown} does not answer ({error}). Check that "
        "its Redis listens on that address (`bind` in redis.conf) and that this machine reaches it (firewall)."
    )


def require_migrated_schema(connection) -> None:
    """The database must hold the schema of this version; a joining machine never migrates."""
    from django.db.migrations.executor import MigrationExecutor

    first = "run `make run` (or `manage.py up --no-processes`) on the first machine first"
    name = connection.settings_dict.get("NAME")
    if "django_migrations" not in connection.introspection.table_names():
        raise BootstrapError(f"HIVEMIND_DATABASE_URL: the database {name!r} has no Hivemind schema; {first}.")
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        pending = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        shown = ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
        raise BootstrapError(
            f"HIVEMIND_DATABASE_URL: the database {name!r} has {len(pending)} unapplied migration"
            f"{'s' if len(pending) != 1 else ''} ({shown}); {first}, with the same Hivemind version as this "
            "machine. A joining machine never migrates."
        )


# --- Redis -------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(url: str, var_dir: Path) -> LocalService:
    """Use the Redis at `url`; if none answers and it is on this machine, start a private one."""
    if redis_answers(url):
        return LocalService("redis", url)
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BootstrapError(f"HIVEMIND_REDIS_URL: nothing answers at {url}, and it is not on this machine")
    binary = shutil.which("redis-server")
    if binary is None:
        raise BootstrapError("redis-server is not installed (apt-get install redis-server), and no Redis answers")
    data_dir = var_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis.log"
    port = str(parts.port or 6379)
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        port,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--logfile",
        str(log_path),
        "--daemonize",
        "no",
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    service = LocalService("redis", url, process, log_path)
    if not _wait_until(lambda: redis_answers(url), timeout=15, process=process):
        service.stop()
        raise BootstrapError(f"redis-server did not start on port {port}: {_tail(log_path)}")
    return service


# --- Docker ------------------------------------------------------------------------------


def docker_answers(base_url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=base_url, timeout=3)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()


def ensure_dockerd(
    base_url: str,
    root: Path,
    *,
    own_bridge: bool = True,
    address_pool: str | None = None,
    timeout: float = 60,
    netns: str = "",
) -> LocalService:
    """Use the Docker daemon at `base_url`; if none answers, start a private one under `root`.

    The private daemon keeps everything under `root` (data, pid file, socket, an empty
    config file: the machine's /etc/docker/daemon.json is never read) and uses the vfs
    storage driver, which works on every file system. It writes no iptables rule: the node's
    filter and NAT rules are Hivemind's (networking/nft.py). Only one daemon on a machine
    may own the default bridge: pass own_bridge=False for any further daemon.

    With `netns` (a name under /run/netns) the daemon runs inside that network namespace,
    as one simulated node of several on a machine: entered with `nsenter --net` (`ip netns
    exec` remounts /sys and dockerd then fails), with no default bridge (the namespace is
    the node's whole network) and a 2 s shutdown timeout so that a test's teardown does not
    wait 10 s per container.
    """
    if docker_answers(base_url):
        return LocalService("dockerd", base_url)
    parts = urlsplit(base_url)
    if parts.scheme != "unix":
        raise BootstrapError(f"HIVEMIND_DOCKER_HOST: nothing answers at {base_url}, and it is not a local socket")
    socket_path = Path(parts.path)
    binary = shutil.which("dockerd")
    if binary is None:
        raise BootstrapError("dockerd is not installed (apt-get install docker.io), and no Docker daemon answers")
    root.mkdir(parents=True, exist_ok=True)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    # exec-root holds containerd's socket, whose path must stay under 108 bytes: keep it short.
    exec_root = Path("/run") / ("hm-" + hashlib.sha256(str(root).encode()).hexdigest()[:10])
    pidfile = root / "docker.pid"
    _clear_stale_daemon(pidfile, socket_path)
    log_path = root / "dockerd.log"
    argv = [
        *_in_netns(netns, root),
        binary,
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(exec_root),
        "-H",
        f"unix://{socket_path}",
        "--pidfile",
        str(pidfile),
        "--storage-driver",
        "vfs",
    ]
    # Hivemind owns every packet filter and NAT rule of its nodes (networking/nft.py): Docker
    # writes none, so none of Docker's can override a network policy or the tenant isolation.
    argv += ["--iptables=false", "--ip6tables=false"]
    if not own_bridge or netns:
        argv += ["--bridge=none"]
    # Never the machine's /etc/docker/daemon.json: this daemon is Hivemind's private one.
    config_file = root / "daemon.json"
    config_file.write_text("{}")
    argv += ["--config-file", str(config_file)]
    if netns:
        argv += ["--shutdown-timeout", "2"]
    if address_pool:  # e.g. 10.213.0.0/16: networks of daemons sharing a host must not overlap
        argv += ["--default-address-pool", f"base={address_pool},size=24"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = LocalService("dockerd", base_url, process, log_path)
    if not _wait_until(lambda: docker_answers(base_url), timeout=timeout, process=process):
        service.stop()
        raise BootstrapError(f"dockerd did not start at {socket_path}: {_tail(log_path)}")
    return service


def _in_netns(netns: str, root: Path) -> list[str]:
    """The command prefix that runs a daemon in the network namespace `netns` ([] for this one)."""
    if not netns:
        return []
    path = Path("/run/netns") / netns
    if not path.exists():
        raise BootstrapError(f"no network namespace {netns!r} (no {path}) for the dockerd of {root}")
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise BootstrapError("nsenter is not installed (apt-get install util-linux)")
    return [nsenter, f"--net={path}"]


def _clear_stale_daemon(pidfile: Path, socket_path: Path) -> None:
    """A daemon killed hard leaves its pid file and socket; dockerd refuses to start over them."""
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and Path(f"/proc/{pid}").exists():
            raise BootstrapError(
                f"a dockerd (pid {pid}) owns {pidfile.parent} but does not answer at {socket_path}; stop it first"
            )
        pidfile.unlink(missing_ok=True)
    if socket_path.is_socket():
        socket_path.unlink()


# --- The local image ---------------------------------------------------------------------


def _busybox_rootfs(binary: Path) -> bytes:
    """A root file system with busybox and a symlink per applet, as a tar archive."""
    applets = subprocess.run([str(binary), "--list"], check=True, capture_output=True, text=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("proc", 0o755),
            ("sys", 0o755),
            ("dev", 0o755),
            ("root", 0o700),
            ("var", 0o755),
        ):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(str(binary), arcname="bin/busybox")
        for applet in sorted(set(applets) - {"busybox"}):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_busybox_image(client: docker.DockerClient, binary: Path = BUSYBOX_BINARY) -> tuple[str, bool]:
    """Make `hivemind/busybox:latest` from Debian's busybox-static; return (image id, built now?).

    No registry is reachable from the machines Hivemind targets first, so the image
    every test and example uses is imported from a local root file system. The image
    carries the binary's hash: an unchanged binary means nothing to do.
    """
    if not binary.exists():
        raise BootstrapError(f"{binary} is missing (apt-get install busybox-static)")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    try:
        image = client.images.get(f"{BUSYBOX_IMAGE}:latest")
        if (image.labels or {}).get(BUSYBOX_LABEL) == digest:
            return image.id, False
    except ImageNotFound:
        pass
    client.api.import_image_from_data(
        _busybox_rootfs(binary),
        repository=BUSYBOX_IMAGE,
        tag="latest",
        changes=[f"LABEL {BUSYBOX_LABEL}={digest}", 'CMD ["sh"]', "ENV PATH=/bin"],
    )
    return client.images.get(f"{BUSYBOX_IMAGE}:latest").id, True


# --- The first admin ---------------------------------------------------------------------


def ensure_admin(username: str = "admin") -> str | None:
    """Create the first superuser with a generated password and return it, once.

    Returns None when a superuser exists already: the password is never stored in
    clear, so it can only be shown at the moment it is made.
    """
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(18)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return password
