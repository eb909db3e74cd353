"""The container runtime of a node: the Docker Engine, reached with the docker SDK."""

from __future__ import annotations

import docker
from django.conf import settings


def docker_client(base_url: str | None = None, *, timeout: int = 30) -> docker.DockerClient:
    """A client for this node's Docker endpoint (HIVEMIND_DOCKER_HOST) or the one given."""
    return docker.DockerClient(base_url=base_url or settings.DOCKER_HOST, timeout=timeout)
