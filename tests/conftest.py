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
