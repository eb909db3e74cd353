"""Fixtures of the observability tests: this machine as a ready node on the suite's dockerd, and
managed busybox containers with their Container rows."""

from __future__ import annotations

import contextlib
import uuid

import docker
import pytest

from hivemind.applications.models import LABEL_APP, LABEL_MANAGED, LABEL_REPLICA, LABEL_TENANT, Container
from tests.applications.conftest import node  # noqa: F401 - this machine as a ready node, cleaned up after
from tests.nodes.conftest import make_app, make_container

BURN = ["sh", "-c", "while :; do :; done"]
IDLE = ["sleep", "600"]


@pytest.fixture
def replicas(world, node, docker_client, busybox_image):  # noqa: F811 - `node` is the imported fixture
    """`run(command, **docker_kwargs)` starts a managed busybox container and the Container row of
    a replica of one app of tenant A on `node`; returns (row, docker container)."""
    app, _ = make_app(world.a, f"usage-{uuid.uuid4().hex[:6]}")
    made = []

    def run(command: list[str], *, row: bool = True, **kwargs):
        replica = len(made)
        name = f"hm-usage-{uuid.uuid4().hex[:8]}-{replica}"
        labels = {LABEL_MANAGED: "true", LABEL_TENANT: str(world.a.pk), LABEL_APP: str(app.pk), LABEL_REPLICA: "0"}
        container = docker_client.containers.run(
            busybox_image, command, name=name, labels=labels, detach=True, stop_signal="SIGKILL", **kwargs
        )
        made.append(container)
        replica_row = None
        if row:
            replica_row = make_container(
                world.a, node, app=app, name=name, replica=replica, state=Container.State.RUNNING
            )
        return replica_row, container

    run.app = app
    yield run
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
