"""Run the platform's processes in the foreground with prefixed output; stop them all on Ctrl-C.

Each child runs in its own session (process group), so a terminal's Ctrl-C reaches
only this supervisor, which then stops the children in reverse start order and
waits for them: nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

_COLOURS = ("36", "33", "35", "32", "34", "31")


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group `process` leads; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen, timeout: float) -> bool:
    """SIGTERM the group, SIGKILL it after `timeout` seconds; True if it had to be killed."""
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait()
        return True


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


class Supervisor:
    def __init__(self, *, env: dict[str, str], stop_timeout: float = 20, out=None):
        self.env = env
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self._width = 0
        self._colour = self.out.isatty() and os.environ.get("NO_COLOR") is None

    def add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv))
        self._width = max(self._width, len(name))

    def say(self, name: str, line: str) -> None:
        prefix = name.ljust(self._width)
        if self._colour:
            index = [c.name for c in self.children].index(name) if name in [c.name for c in self.children] else -1
            prefix = f"\033[{_COLOURS[index % len(_COLOURS)] if index >= 0 else '1'}m{prefix}\033[0m"
        with self._lock:
            self.out.write(f"{prefix} | {line}\n")
            self.out.flush()

    def _pump(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for raw in child.process.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip())
        code = child.process.wait()
        if not self._stopping.is_set():
            self.say(child.name, f"exited with code {code}; stopping the others")
        self._exited.set()

    def run(self) -> int:
        """Start every child and block until Ctrl-C, SIGTERM or one child's exit; return an exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                child.process = subprocess.Popen(
                    child.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                threading.Thread(target=self._pump, args=(child,), daemon=True).start()
            while not self._exited.wait(0.5):
                pass
        finally:
            clean = self._stopping.is_set()
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if clean else 1

    def _on_signal(self, signum, _frame) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            self.say("hivemind", f"{signal.Signals(signum).name} received, stopping every process")
        self._exited.set()

    def stop(self) -> None:
        self._stopping.set()
        running = [c for c in reversed(self.children) if c.process and c.process.poll() is None]
        for child in running:
            signal_group(child.process, signal.SIGTERM)
        for child in running:
            if stop_group(child.process, self.stop_timeout):
                self.say("hivemind", f"{child.name} did not stop in {self.stop_timeout:.0f}s; killed it")
