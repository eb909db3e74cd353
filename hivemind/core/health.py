"""Reachability of the parts the platform stands on: database, broker, Docker, supervised processes.

Each check returns a small dict (``{"status": "up", ...}`` or ``{"status": "down",
"error": "..."}``) and never raises, so the health endpoint and the start-up
preflight can report every part at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
import redis
from django.conf import settings
from django.db import connection

from hivemind.core.processes import CRASH_LOOPING, read_state, state_path

CHECK_TIMEOUT = 3  # seconds: a health probe must answer fast even when a part hangs


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    # docker and redis wrap the cause several times; the last line is the useful one.
    text = text.splitlines()[-1] if "\n" in text else text
    return text[:300]


def _timed(check: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        result = {"status": "up", **check()}
    except Exception as exc:  # a health check reports every failure, whatever its kind
        result = {"status": "down", "error": _describe(exc)}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return result


def check_database() -> dict:
    def probe() -> dict:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"vendor": connection.vendor}

    return _timed(probe)


def check_broker(url: str | None = None) -> dict:
    def probe() -> dict:
        client = redis.Redis.from_url(
            url or settings.CELERY_BROKER_URL, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
        )
        try:
            client.ping()
            return {"version": client.info("server").get("redis_version")}
        finally:
            client.close()

    return _timed(probe)


def check_docker(base_url: str | None = None) -> dict:
    def probe() -> dict:
        client = docker.DockerClient(base_url=base_url or settings.DOCKER_HOST, timeout=CHECK_TIMEOUT)
        try:
            version = client.version()
            return {"version": version.get("Version"), "api_version": version.get("ApiVersion")}
        finally:
            client.close()

    return _timed(probe)


def check_processes() -> dict | None:
    """The processes `manage.py up` supervises on this machine, or None when it does not run them.

    Read from the supervisor's state file: state, pid, restarts, last exit per process.
    """
    state = read_state(state_path(settings.VAR_DIR))
    if state is None:
        return None
    shown = ("state", "pid", "restarts", "last_exit_code", "last_exit_at", "since")
    return {name: {key: entry.get(key) for key in shown} for name, entry in state.get("processes", {}).items()}


def platform_health() -> dict:
    """The whole picture: healthy only when the database, the broker and every node's Docker are up,
    and, under `manage.py up`, no platform process was given up on as crash-looping."""
    docker_nodes = {settings.NODE_NAME: {"endpoint": settings.DOCKER_HOST, **check_docker()}}
    parts = {
        "database": check_database(),
        "broker": check_broker(),
        "docker": docker_nodes,
    }
    down = [name for name in ("database", "broker") if parts[name]["status"] != "up"]
    down += [f"docker:{node}" for node, state in docker_nodes.items() if state["status"] != "up"]
    supervised = check_processes()
    if supervised is not None:
        parts["processes"] = supervised
        down += [f"process:{name}" for name, process in supervised.items() if process.get("state") == CRASH_LOOPING]
    return {"status": "down" if down else "up", "down": down, **parts}
