"""Shared fixtures: the suite's private Docker daemon and helpers for real processes.

The suite never mocks what runs on the machine: PostgreSQL, Redis and Docker are
real. `make test` points HIVEMIND_DOCKER_HOST at var/test/docker/docker.sock; the
first test that needs Docker starts that daemon (or adopts one already running)
and the session stops it at the end if it started it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from hivemind.core import bootstrap
from hivemind.nodes.runtime import docker_client as make_docker_client

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[bootstrap.LocalService]:
    # A further daemon beside a developer's own must not take the default bridge.
    service = bootstrap.ensure_dockerd(settings.DOCKER_HOST, settings.VAR_DIR / "docker", own_bridge=False)
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


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """The environment a child process of the platform would get under `make test`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
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
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/api/schema/", timeout=5)
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)
    try:
        yield base
    finally:
        bootstrap.LocalService("web", base, process).stop(timeout=10)
        # The server's connections must be gone before the test database is flushed or dropped.
        connection.close()
