"""Shared fixtures: the suite's private Docker daemon and helpers for real processes.

The suite never mocks what runs on the machine: PostgreSQL, Redis and Docker are
real. `make test` points HIVEMIND_DOCKER_HOST at var/test/docker/docker.sock; the
first test that needs Docker starts that daemon (or adopts one already running)
and the session stops it at the end if it started it.

The suite's node lives in a network namespace of its own (`node_namespace`): its daemon
runs there, and its agents (HIVEMIND_NODE_NETNS) make the node's bridges, VXLAN devices
and nftables table there, so neither the host's network nor a `make run` beside the suite
is ever touched. Its underlay address is on that namespace's loopback device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from hivemind.core import bootstrap
from hivemind.nodes.runtime import docker_client as make_docker_client

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """A suite started in the background of a shell without job control inherits SIGINT ignored,
    and so would every CLI the tests start and then interrupt: give Ctrl-C back its meaning."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SUITE_ADDRESS = "10.240.255.1"  # the suite's node's underlay address, inside its namespace only


@contextlib.contextmanager
def node_namespace(tag: str, address: str) -> Iterator[str]:
    """A network namespace for one of the suite's nodes (named after the var dir, so two
    suites on one machine never share one), its loopback up and holding `address`; removed
    at the end. One left by a run killed hard is adopted."""
    from pyroute2 import IPRoute, netns

    name = f"hms{tag}-" + hashlib.sha256(str(settings.VAR_DIR).encode()).hexdigest()[:8]
    if not Path("/run/netns", name).exists():
        netns.create(name)
    with IPRoute(netns=name) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        if not ipr.get_addr(index=lo, address=address):
            ipr.addr("add", index=lo, address=address, prefixlen=32)
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            netns.remove(name)


@pytest.fixture(scope="session")
def suite_netns() -> Iterator[str]:
    """The suite's node's namespace; the platform's processes the tests start act in it."""
    with node_namespace("", SUITE_ADDRESS) as name:
        saved = {key: os.environ.get(key) for key in ("HIVEMIND_NODE_NETNS", "HIVEMIND_NODE_ADDRESS")}
        os.environ.update(HIVEMIND_NODE_NETNS=name, HIVEMIND_NODE_ADDRESS=SUITE_ADDRESS)
        config = settings.CONFIG
        settings.CONFIG = dataclasses.replace(config, node_netns=name, node_address=SUITE_ADDRESS)
        try:
            yield name
        finally:
            settings.CONFIG = config
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def docker_daemon(suite_netns) -> Iterator[bootstrap.LocalService]:
    from networking.node import clear_node

    service = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", netns=suite_netns)
    # The session's database is new, so whatever Hivemind made on this daemon before is stale:
    # a run killed hard, or a benchmark on the same var dir, leaves networks that Docker
    # restores at start, with their bridges' routes (a new network's prefix is refused over them).
    client = make_docker_client(service.endpoint)
    try:
        clear_node(client, node=settings.NODE_NAME, netns=suite_netns)
    finally:
        client.close()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def docker_client(docker_daemon):
    client = make_docker_client(docker_daemon.endpoint)
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    image_id, _built = bootstrap.ensure_busybox_image(docker_client)
    return image_id


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory):
    """A throwaway Ceph cluster (monitor, memstore OSD, radosgw) for the session, started on
    first use (tests/ceph.py) and stopped at the end."""
    from tests import ceph

    cluster = ceph.start(tmp_path_factory.mktemp("ceph"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def subprocess_env(suite_netns) -> dict[str, str]:
    """The environment a child process of the platform would get under `make test`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # `make run` sets up a btrfs loop file for its default pool unless told: tests that want one say so.
    env.setdefault("HIVEMIND_STORAGE_POOL", "off")
    return env


@pytest.fixture
def world(db):
    """Tenants A and B, one user per role in A, B's owner, a staff user (tests/api_suite.py)."""
    from tests.api_suite import make_world

    return make_world()


@pytest.fixture
def web_server(transactional_db, subprocess_env, tmp_path) -> Iterator[str]:
    """The real web process (gunicorn, 50 threads) on the test database; yields its base URL.

    Use with transactional tests: what the test writes is committed, so the server sees it.
    """
    import subprocess
    import sys
    import time

    import requests
    from django.db import connection

    port = free_port()
    db = connection.settings_dict
    subprocess_env.update(
        HIVEMIND_DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        HIVEMIND_VAR_DIR=str(tmp_path / "web"),
        HIVEMIND_SECRET_KEY=settings.SECRET_KEY,
    )
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    log = tmp_path / "web.log"
    process = subprocess.Popen(
        [
            gunicorn,
            "hivemind.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "50",
            "--no-control-socket",
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe
        # would block every request thread that logs (Django logs each 4xx).
        stderr=log.open("ab"),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:  # a cheap page: the OpenAPI schema took longer than a probe's timeout on a busy machine
            requests.get(f"{base}/admin/login/", timeout=10)
            break
        except (requests.ConnectionError, requests.Timeout):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.2)
    try:
        yield base
    finally:
        bootstrap.LocalService("web", base, process).stop(timeout=10)
        # The server's connections must be gone before the test database is flushed or dropped.
        connection.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class PlatformProcess:
    """A real Celery worker or beat started by `platform_processes`; its output goes to `log`."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        import subprocess

        self.name, self.log = name, log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig=None) -> None:
        """SIGKILL the whole process group (the worker and its pool children) by default."""
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig or signal.SIGKILL)
        if sig in (None, signal.SIGKILL):
            self.process.wait(timeout=30)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # pool children left behind, if any
        self._out.close()


RUNNING: list[PlatformProcess] = []  # what platform_processes started in the current test


def stop_running() -> None:
    """Stop every platform process the current test started (idempotent): fixtures that clear
    a node call it first, so that no agent or controller still running (a heal set off by the
    clearing itself) makes containers or devices again behind the clearing."""
    while RUNNING:
        RUNNING.pop().stop()


@pytest.fixture
def platform_processes(transactional_db, subprocess_env, tmp_path):
    """Start real Celery workers and beat on the test database and the suite's Redis database.

    `start("worker", queues=[...])` / `start("beat")` return a PlatformProcess. The broker's
    database is emptied first, heartbeats are 1 s and the reconciler runs every second.
    Everything started is stopped (and its pool children killed) at the end of the test.
    """
    import sys

    import redis
    from django.db import connection

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    db = connection.settings_dict
    env = {
        **subprocess_env,
        "HIVEMIND_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "HIVEMIND_VAR_DIR": str(settings.VAR_DIR),
        "HIVEMIND_SECRET_KEY": settings.SECRET_KEY,
        "HIVEMIND_STEP_HEARTBEAT": "1",
        "HIVEMIND_RECONCILE_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    celery = str(Path(sys.executable).parent / "celery")
    started: list[PlatformProcess] = []
    counter = iter(range(1, 1000))

    def start(role: str = "worker", *, queues=None, concurrency: int = 2, extra_env: dict | None = None):
        number = next(counter)
        if role == "beat":
            argv = [celery, "-A", "hivemind", "beat", "-l", "INFO", "--pidfile=", "-s", str(tmp_path / "beat-schedule")]
        else:
            queues = queues or [settings.CONTROL_QUEUE, settings.NODE_QUEUE]
            argv = [
                celery, "-A", "hivemind", "worker", "-Q", ",".join(queues), "-c", str(concurrency),
                "-n", f"test{number}@%h", "-l", "INFO", "--without-mingle", "--without-gossip",
            ]  # fmt: skip
        process = PlatformProcess(
            f"{role}{number}", argv, {**env, **(extra_env or {})}, tmp_path / f"{role}{number}.log"
        )
        started.append(process)
        RUNNING.append(process)
        if role != "beat":
            wait_for(lambda: "ready." in process.output() or process.process.poll() is not None, 60, f"{role} to start")
            assert process.process.poll() is None, process.output()[-3000:]
        return process

    yield start
    RUNNING.clear()
    for process in reversed(started):
        process.stop()
    connection.close()
