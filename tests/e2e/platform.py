"""`make run` and `make agent` in a test, as a user runs them: started in a session of their own,
their lines read as they come, stopped with Ctrl-C, and nothing they started left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from tests.conftest import REPO


def descendants(root: int) -> set[int]:
    """Every process below `root` now (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output:
    """Collects the lines of a running process so the test can wait for one."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matched {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))
                self._changed.wait(remaining)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])


class MakeTarget:
    """`make <target>` in the foreground of a terminal of its own (its own process group)."""

    def __init__(self, target: str, env: dict[str, str]):
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", target],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = Output(self.process.stdout)
        self.pids: set[int] = set()
        self.code: int | None = None

    def note_processes(self) -> set[int]:
        """What runs below make now: checked to be gone after Ctrl-C."""
        self.pids = descendants(self.process.pid)
        return self.pids

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a terminal sends it to the whole foreground process group; then wait."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        return self.code

    def assert_stopped_cleanly(self) -> None:
        # make waits for its recipe to finish, then dies of the same SIGINT, as make does.
        assert self.code in (0, -signal.SIGINT), self.output.tail()
        time.sleep(0.5)
        left = [pid for pid in self.pids if alive(pid)]
        assert left == [], f"processes left running after Ctrl-C: {left}"


def wait_healthy(base: str, timeout: float = 60) -> requests.Response:
    """The platform's health answer once it is 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = requests.get(f"{base}/api/v1/health/", timeout=10)
            if health.status_code == 200:
                return health
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the health endpoint never turned green"
        time.sleep(0.5)
