"""Helpers the benchmarks share (a package, so `make bench` does not run it as a benchmark)."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit, urlunsplit


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def fresh_database(suffix: str, script: str) -> str:
    """A new, empty PostgreSQL database `<configured name>_<suffix>` next to the configured one."""
    import psycopg

    parts = urlsplit(os.environ.get("HIVEMIND_DATABASE_URL", ""))
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"{script} needs HIVEMIND_DATABASE_URL to name a PostgreSQL server (make bench sets it)")
    name = f"{parts.path.strip('/')}_{suffix}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port nobody listens on now (for a server the benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
