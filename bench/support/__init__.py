"""Helpers the benchmarks share (a package, so `make bench` does not run it as a benchmark)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
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


class ServerCpu:
    """CPU seconds used by a process group (a server and its workers: kind "web") and by this
    database's PostgreSQL backends (kind "db") while a phase runs. Backends come and go (Django
    recycles a connection after CONN_MAX_AGE), so a thread samples them every 0.25 s and a
    closed one counts what it had used when last seen."""

    def __init__(self, web_pid: int, database: str):
        self.web_pid, self.title = web_pid, f" {database} "
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def _sample(self) -> dict[int, tuple[str, float]]:
        seen = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == self.web_pid:  # the server's process group
                    kind = "web"
                elif stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres" and self.title in (
                    proc / "cmdline"
                ).read_bytes().decode(errors="replace"):  # "postgres: user database host(port) state"
                    kind = "db"
                else:
                    continue
            except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
                continue
            seen[int(proc.name)] = (kind, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        return seen

    def _watch(self) -> None:
        while not self.done.wait(0.25):
            self.last.update(self._sample())

    def __enter__(self) -> ServerCpu:
        self.first = self._sample()
        self.last = dict(self.first)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.watcher.join()
        self.last.update(self._sample())

    def used(self, kind: str) -> float:
        return sum(cpu - self.first.get(pid, (kind, 0.0))[1] for pid, (k, cpu) in self.last.items() if k == kind)
