"""Run the platform's processes in the foreground with prefixed output and keep them running.

Each child runs in its own session (process group), so a terminal's Ctrl-C reaches only
this supervisor. A child that exits unexpectedly is restarted on its own: first its whole
group is killed (the prefork pool of a killed Celery worker, the worker of a killed
gunicorn master must not linger as duplicates), then it starts again after a short delay
that doubles while it keeps dying soon after starting. After `crash_loop_exits` such quick
deaths in a row it is given up on, loudly; the others keep running. Nothing else is ever
stopped because one process died: not the other processes, not the Docker daemon, not a
container.

Only Ctrl-C or SIGTERM (or SIGHUP, the terminal closing) stops everything: the children in
reverse start order, each SIGTERM then SIGKILL after `stop_timeout` seconds. Nothing it
started outlives it.

While it runs, the supervisor keeps a state file (see hivemind.core.processes) that the
web process reads for /api/v1/health/ and /metrics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hivemind.core import processes

_COLOURS = ("36", "33", "35", "32", "34", "31")


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group `process` leads; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
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


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    state: str = processes.STOPPED
    restarts: int = 0
    quick_exits: int = 0  # exits in a row that came less than `stable_after` seconds after a start
    last_exit_code: int | None = None
    last_exit_at: str | None = None
    since: str | None = None  # when the current state began
    started: float = 0.0  # time.monotonic() of the current instance's start
    starttime: int | None = None  # the kernel's start time of the current instance (see processes.same_process)
    threads: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        *,
        env: dict[str, str],
        stop_timeout: float = 20,
        out=None,
        state_file: Path | None = None,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30,
        stable_after: float = 30,
        crash_loop_exits: int = 5,
    ):
        self.env = env
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.state_file = state_file
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.crash_loop_exits = crash_loop_exits
        self.children: list[Child] = []
        self._lock = threading.Lock()  # output lines
        self._state_lock = threading.RLock()  # starting processes, child state, the state file
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._width = 0
        self._colour = self.out.isatty() and os.environ.get("NO_COLOR") is None
        encoding = (getattr(self.out, "encoding", None) or "").lower().replace("-", "")
        self._restart_mark = "↻" if encoding == "utf8" else "+"

    def add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv))
        self._width = max(self._width, len(name))

    # --- output ------------------------------------------------------------------------

    def say(self, name: str, line: str, *, restarts: int = 0) -> None:
        label = f"{name}{self._restart_mark}{restarts}" if restarts else name
        prefix = label.ljust(self._width)
        if self._colour:
            names = [c.name for c in self.children]
            colour = _COLOURS[names.index(name) % len(_COLOURS)] if name in names else "1"
            prefix = f"\033[{colour}m{prefix}\033[0m"
        # A closed terminal or pipe must not stop the pumps: a child whose output pipe fills up
        # would hang. Its lines are lost, it keeps running.
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.out.write(f"{prefix} | {line}\n")
            self.out.flush()

    def _pump(self, child: Child, process: subprocess.Popen, restarts: int) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip(), restarts=restarts)
        process.stdout.close()

    # --- state -------------------------------------------------------------------------

    def _set_state(self, child: Child, state: str) -> None:
        with self._state_lock:
            child.state = state
            child.since = _now()
            self._write_state()

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        with self._state_lock:
            state = {
                "supervisor": {"pid": os.getpid(), "starttime": processes.process_starttime(os.getpid())},
                "updated": _now(),
                "processes": {
                    c.name: {
                        "state": c.state,
                        "pid": c.process.pid if c.process and c.state == processes.RUNNING else None,
                        "starttime": c.starttime if c.state == processes.RUNNING else None,
                        "restarts": c.restarts,
                        "last_exit_code": c.last_exit_code,
                        "last_exit_at": c.last_exit_at,
                        "since": c.since,
                    }
                    for c in self.children
                },
            }
            try:
                processes.write_state(self.state_file, state)
            except OSError as exc:
                self.say("hivemind", f"could not write {self.state_file}: {exc.strerror}")

    # --- running -----------------------------------------------------------------------

    def _spawn(self, child: Child) -> bool:
        """Start one instance of `child`; False when a stop began meanwhile or it cannot be started."""
        with self._state_lock:
            if self._stopping.is_set():
                return False
            try:
                child.process = subprocess.Popen(
                    child.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:  # a missing or unrunnable program: restarting it cannot help
                self._set_state(child, processes.CRASH_LOOPING)
                self.say("hivemind", f"cannot start {child.name} ({child.argv[0]}): {exc.strerror}; not retrying")
                self._wake.set()
                return False
            child.started = time.monotonic()
            child.starttime = processes.process_starttime(child.process.pid)
            pump = threading.Thread(
                target=self._pump, args=(child, child.process, child.restarts), daemon=True, name=f"pump-{child.name}"
            )
            pump.start()
            child.threads = [pump]
            self._set_state(child, processes.RUNNING)
            return True

    def _keep(self, child: Child) -> None:
        """Wait for `child` to exit; restart it unless we are stopping or it crash-loops."""
        while True:
            process = child.process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            # Whatever the dead process left in its group (pool children) goes with it.
            signal_group(process, signal.SIGKILL)
            for thread in child.threads:
                thread.join(timeout=1)  # its last lines first; a grandchild holding the pipe must not delay
            uptime = time.monotonic() - child.started
            with self._state_lock:
                child.last_exit_code = code
                child.last_exit_at = _now()
                child.quick_exits = child.quick_exits + 1 if uptime < self.stable_after else 0
            if child.quick_exits >= self.crash_loop_exits:
                self._set_state(child, processes.CRASH_LOOPING)
                self.say(
                    "hivemind",
                    f"{child.name} is crash-looping: it exited {child.quick_exits} times in a row within "
                    f"{self.stable_after:.0f}s of starting (last: {describe_exit(code)}); not restarting it. "
                    "The other processes keep running; fix what its last lines say, then restart.",
                )
                self._wake.set()
                return
            delay = min(self.restart_delay * 2 ** max(child.quick_exits - 1, 0), self.max_restart_delay)
            self._set_state(child, processes.RESTARTING)
            self.say(
                "hivemind",
                f"{child.name} {describe_exit(code)} after {uptime:.1f}s; restarting it in {delay:.1f}s "
                f"(restart {child.restarts + 1})",
            )
            if self._stopping.wait(delay):
                return
            with self._state_lock:
                child.restarts += 1
                if not self._spawn(child):
                    return

    def run(self) -> int:
        """Start every child and keep them running until Ctrl-C or SIGTERM; return an exit code.

        0 after Ctrl-C or SIGTERM; 1 when every process was given up on (nothing left to run).
        """
        # SIGHUP (the terminal went away) stops everything cleanly too, instead of killing only this process.
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        keepers: list[threading.Thread] = []
        try:
            self._stop_left_running()
            for child in self.children:
                if not self._spawn(child):
                    if self._stopping.is_set():
                        break
                    continue
                keeper = threading.Thread(target=self._keep, args=(child,), daemon=True, name=f"keep-{child.name}")
                keeper.start()
                keepers.append(keeper)
            while not self._stopping.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                if self.children and all(c.state == processes.CRASH_LOOPING for c in self.children):
                    self.say("hivemind", "every process was given up on; stopping")
                    break
        finally:
            clean = self._stopping.is_set()
            self.stop()
            for keeper in keepers:
                keeper.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.state_file is not None:
                with contextlib.suppress(OSError):
                    self.state_file.unlink()
        return 0 if clean else 1

    def _stop_left_running(self) -> None:
        """Stop what a supervisor killed hard left running with this state file: a second web
        process could not bind its port, a second agent would consume the node's queue twice."""
        if self.state_file is None:
            return
        for name, entry in processes.left_running(self.state_file).items():
            pid = entry["pid"]
            self.say("hivemind", f"stopping {name} (pid {pid}), left running by a supervisor that was killed")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while processes.same_process(pid, entry["starttime"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # it, if it did not stop, and whatever is left of its group

    def _on_signal(self, signum, _frame) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            self.say("hivemind", f"{signal.Signals(signum).name} received, stopping every process")
        self._wake.set()

    def stop(self) -> None:
        with self._state_lock:  # no process starts once this is set
            self._stopping.set()
        running = [c for c in reversed(self.children) if c.process and c.process.poll() is None]
        for child in running:
            signal_group(child.process, signal.SIGTERM)
        for child in running:
            if stop_group(child.process, self.stop_timeout):
                self.say("hivemind", f"{child.name} did not stop in {self.stop_timeout:.0f}s; killed it")
        for child in self.children:
            if child.process is not None:
                signal_group(child.process, signal.SIGKILL)  # what a stopped process left in its group
            for thread in child.threads:
                thread.join(timeout=5)
            child.state = processes.STOPPED
