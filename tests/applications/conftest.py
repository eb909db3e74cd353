"""Fixtures for apps on the suite's real Docker daemon: this machine as a ready node, and helpers."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.utils import timezone

from hivemind.applications.models import LABEL_APP, App
from hivemind.nodes.models import Node
from hivemind.workflows.models import Workflow
from networking.node import clear_node
from tests.conftest import stop_running, wait_for

GiB = 2**30


@pytest.fixture
def node(docker_daemon, docker_client, busybox_image, transactional_db):
    """This machine as a ready node (its agent would register it the same way). Afterwards,
    whatever the test's apps left on the daemon goes: containers, tenant networks, rules."""
    yield _register()
    stop_running()  # the test's agent and controller first: nothing makes containers again behind the clearing
    clear_node(docker_client, node=settings.NODE_NAME, netns=settings.CONFIG.node_netns)


def _register() -> Node:
    node, _ = Node.objects.update_or_create(
        name=settings.NODE_NAME,
        defaults={
            "address": settings.CONFIG.node_address,
            "cpu_millis": 4000,
            "memory_bytes": 8 * GiB,
            "status": Node.Status.READY,
            "last_heartbeat": timezone.now(),
        },
    )
    return node


def spec(**extra) -> dict:
    return {
        "image": "hivemind/busybox:latest",
        "command": "httpd -f -p 8080",
        "resources": {"cpu": "100m", "memory": "16Mi"},
        "health": {"type": "tcp", "port": 8080, "interval": 0.5, "timeout": 1, "retries": 3},
        **extra,
    }


def finished(workflow: Workflow, timeout: float = 90) -> Workflow:
    def done():
        workflow.refresh_from_db()
        return workflow.is_terminal

    wait_for(done, timeout, f"workflow {workflow.pk} ({workflow.kind}) to finish")
    return workflow


def docker_replicas(docker_client, app: App) -> list:
    # ignore_removed: a rollout removes containers between Docker's listing and the inspections.
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_APP}={app.pk}"}, ignore_removed=True)


def healthy_replicas(docker_client, app: App) -> int:
    """Containers of the app that Docker shows running and healthy."""
    count = 0
    for container in docker_replicas(docker_client, app):
        state = container.attrs["State"]
        if state["Status"] == "running" and (state.get("Health") or {}).get("Status") == "healthy":
            count += 1
    return count


class HealthyProbe:
    """Counts the app's healthy replicas every 0.1 s while the block runs; `lowest` is the least seen."""

    def __init__(self, docker_client, app: App):
        self.docker_client, self.app = docker_client, app
        self.lowest = healthy_replicas(docker_client, app)
        self.looks, self.error = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.lowest = min(self.lowest, healthy_replicas(self.docker_client, self.app))
                self.looks += 1
                self._stop.wait(0.1)
        except Exception as exc:  # a probe that stopped looking must fail the test, not pass it
            self.error = exc

    def __enter__(self) -> HealthyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise AssertionError(f"the probe stopped after {self.looks} looks: {self.error!r}") from self.error
        assert self.looks > 0, "the probe never looked"
