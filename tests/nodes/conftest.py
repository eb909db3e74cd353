"""Rows the node tests need: nodes, and Container rows placed on them (made directly)."""

from __future__ import annotations

import itertools

import pytest

from hivemind.applications.models import App, AppRevision, Container
from hivemind.nodes.models import Node
from tests.cli.conftest import cli  # noqa: F401 - the `hivemind` subprocess fixture, for test_cli.py

_numbers = itertools.count(1)


def make_node(name: str, **fields) -> Node:
    defaults = {
        "status": Node.Status.READY,
        "cpu_millis": 4000,
        "memory_bytes": 8 * 2**30,
        "disk_bytes": 100 * 2**30,
        "address": "10.0.0.1",
        "docker_host": "tcp://10.0.0.1:2375",
        "docker_version": "27.0.0",
    }
    return Node.objects.create(name=name, **{**defaults, **fields})


def make_app(tenant, name: str | None = None) -> tuple[App, AppRevision]:
    app = App.objects.create(tenant=tenant, name=name or f"app-{next(_numbers)}", replicas=1)
    revision = AppRevision.objects.create(app=app, number=1, spec={"image": "hivemind/busybox"})
    app.revision = revision
    app.save(update_fields=["revision"])
    return app, revision


def make_container(tenant, node: Node | None, *, name: str | None = None, app=None, **fields) -> Container:
    if app is None:
        app, revision = make_app(tenant)
    else:
        revision = app.revision
    number = next(_numbers)
    return Container.objects.create(
        tenant=tenant,
        app=app,
        revision=revision,
        replica=fields.pop("replica", number),
        node=node,
        name=name or f"{app.name}-{number}",
        **fields,
    )


@pytest.fixture
def node_factory(db):
    return make_node
